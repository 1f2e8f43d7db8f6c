//! Catalog rows read from heap files copied out of real PostgreSQL 14–18 servers, compared
//! with what SQL said on the same server (fixtures by `scripts/gen-catalog-fixtures.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use pitr_pg::catalog::{named_rows, pg_class_rows, ClassLayout, RelMap};
use pitr_pg::wal::Oid;
use pitr_pg::PgMajor;

const VERSIONS: [u32; 5] = [14, 15, 16, 17, 18];

fn dir(major: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/catalog/pg{major}"))
}

fn unzstd(major: u32, name: &str) -> Vec<u8> {
    zstd::decode_all(std::fs::read(dir(major).join(name)).unwrap().as_slice()).unwrap()
}

/// `|`-separated lines of an oracle file.
fn oracle(major: u32, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir(major).join(name))
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[test]
fn pg_class_rows_match_sql_on_every_version() {
    for major in VERSIONS {
        let rows =
            pg_class_rows(&unzstd(major, "pg_class.zst"), PgMajor::new(major).unwrap()).unwrap();
        let live: BTreeMap<u32, _> = rows
            .iter()
            .filter(|r| r.live)
            .map(|r| (r.oid.0, r))
            .collect();
        let expected = oracle(major, "pg_class.txt");
        assert!(expected.len() > 400, "pg{major}: {} rows", expected.len());
        for e in &expected {
            let oid: u32 = e[0].parse().unwrap();
            let r = live
                .get(&oid)
                .unwrap_or_else(|| panic!("pg{major}: live row of oid {oid} ({}) not found", e[1]));
            assert_eq!(r.name, e[1], "pg{major} oid {oid}");
            assert_eq!(r.namespace.0.to_string(), e[2], "pg{major} {}", e[1]);
            assert_eq!(r.filenode.to_string(), e[3], "pg{major} {}", e[1]);
            assert_eq!(r.kind.to_string(), e[4], "pg{major} {}", e[1]);
            assert_eq!(r.tablespace.0.to_string(), e[5], "pg{major} {}", e[1]);
        }
        assert_eq!(live.len(), expected.len(), "pg{major}: no extra live rows");
        // A 62-character name is read whole.
        assert!(live
            .values()
            .any(|r| r.name.len() == 62 && r.name.starts_with("a_table_with")));
        let unlogged = live.values().find(|r| r.name == "unlogged_t").unwrap();
        assert_eq!(unlogged.persistence, 'u');
        // Dead row versions keep the old name and the old file number.
        assert!(
            rows.iter().any(|r| !r.live && r.name == "renamed_from"),
            "pg{major}"
        );
        let truncated: Vec<_> = rows.iter().filter(|r| r.name == "truncated").collect();
        assert!(truncated.len() >= 2, "pg{major}: {truncated:?}");
        assert!(truncated.iter().any(|r| !r.live && r.filenode == r.oid.0));
        assert!(truncated.iter().any(|r| r.live && r.filenode != r.oid.0));
    }
}

#[test]
fn pg_class_layout_matches_pg_attribute() {
    for major in VERSIONS {
        // Offsets from attlen/attalign, as heap_form_tuple lays out NOT NULL fixed-width columns.
        let mut off = 0usize;
        let mut at = BTreeMap::new();
        for a in oracle(major, "pg_class.attrs.txt") {
            let len: i32 = a[2].parse().unwrap();
            if len < 0 {
                break;
            }
            assert_eq!(a[4], "t", "pg{major}: {} is nullable", a[1]);
            let align = match a[3].as_str() {
                "c" => 1,
                "s" => 2,
                "i" => 4,
                "d" => 8,
                x => panic!("{x}"),
            };
            off = off.div_ceil(align) * align;
            at.insert(a[1].clone(), off);
            off += len as usize;
        }
        let layout = ClassLayout::of(PgMajor::new(major).unwrap()).unwrap();
        assert_eq!(at["relkind"], layout.relkind, "pg{major}");
        assert_eq!(at["relpersistence"], layout.relpersistence, "pg{major}");
        assert_eq!(
            (
                at["oid"],
                at["relname"],
                at["relnamespace"],
                at["relfilenode"],
                at["reltablespace"]
            ),
            (0, 4, 68, 88, 92),
            "pg{major}"
        );
    }
}

#[test]
fn namespace_and_database_rows_match_sql() {
    for major in VERSIONS {
        for (file, txt) in [
            ("pg_namespace.zst", "pg_namespace.txt"),
            ("pg_database.zst", "pg_database.txt"),
        ] {
            let rows = named_rows(&unzstd(major, file)).unwrap();
            let live: BTreeMap<u32, String> = rows
                .iter()
                .filter(|r| r.live)
                .map(|r| (r.oid.0, r.name.clone()))
                .collect();
            let expected: BTreeMap<u32, String> = oracle(major, txt)
                .into_iter()
                .map(|e| (e[0].parse().unwrap(), e[1].clone()))
                .collect();
            assert_eq!(live, expected, "pg{major} {file}");
        }
        let dbs = named_rows(&unzstd(major, "pg_database.zst")).unwrap();
        assert!(dbs.iter().any(|r| r.name == "appdb" && r.live));
    }
}

#[test]
fn relation_maps_match_pg_relation_filenode() {
    for major in VERSIONS {
        for (file, txt) in [
            ("pg_filenode.map", "relmap.txt"),
            ("global.pg_filenode.map", "global.relmap.txt"),
        ] {
            let map = RelMap::parse(&std::fs::read(dir(major).join(file)).unwrap()).unwrap();
            let got: BTreeMap<Oid, u32> = map.mappings.into_iter().collect();
            let expected: BTreeMap<Oid, u32> = oracle(major, txt)
                .into_iter()
                .map(|e| (Oid(e[0].parse().unwrap()), e[1].parse().unwrap()))
                .collect();
            assert!(!expected.is_empty());
            for (oid, node) in &expected {
                assert_eq!(got.get(oid), Some(node), "pg{major} {file} oid {oid}");
            }
            let mut flipped = std::fs::read(dir(major).join(file)).unwrap();
            flipped[12] ^= 1;
            assert!(
                RelMap::parse(&flipped).is_err(),
                "CRC catches a flipped bit"
            );
        }
    }
}
