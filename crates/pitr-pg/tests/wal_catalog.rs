//! `pg_class` / `pg_namespace` rows read back from real WAL of PostgreSQL 14–18, written after
//! a base backup (fixtures by `scripts/gen-walnames-fixtures.sh`): a schema and a table created,
//! the table renamed and truncated (new file number), a table created and dropped in one
//! transaction. Full-page images are plain (16, 18), pglz (14), LZ4 (15) and zstd (17).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pitr_pg::wal::{
    CatalogChange, CatalogEvent, CatalogRow, CatalogTracker, ImageCompression, Oid, WalDecoder,
};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn meta(d: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(d.join("meta.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What pitr-core gives the tracker for LZ4 and zstd images.
fn decompress(c: ImageCompression, data: &[u8], len: usize) -> Option<Vec<u8>> {
    match c {
        ImageCompression::Lz4 => lz4_flex::block::decompress(data, len).ok(),
        ImageCompression::Zstd => zstd::bulk::decompress(data, len).ok(),
        _ => None,
    }
}

/// Every catalog event of the fixture's segments, in order.
fn events(d: &Path, tracker: CatalogTracker) -> Vec<CatalogEvent> {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 28 && n.ends_with(".zst"))
        .collect();
    names.sort();
    let mut dec = WalDecoder::new();
    let mut tracker = tracker;
    let mut out = Vec::new();
    for n in names {
        let bytes = zstd::decode_all(std::fs::File::open(d.join(n)).unwrap()).unwrap();
        dec.decode_slice(&bytes, |r| tracker.record(&r, &mut out))
            .unwrap();
    }
    out
}

fn class_rows(ev: &[CatalogEvent]) -> Vec<&CatalogChange> {
    ev.iter()
        .filter_map(|e| match e {
            CatalogEvent::Row(c) if matches!(c.row, CatalogRow::Class(_)) => Some(c),
            _ => None,
        })
        .collect()
}

fn class(c: &CatalogChange) -> &pitr_pg::catalog::ClassRow {
    match &c.row {
        CatalogRow::Class(r) => r,
        CatalogRow::Namespace(_) => unreachable!(),
    }
}

#[test]
fn tables_created_after_a_backup_are_named_from_the_wal_on_every_version() {
    for major in [14, 15, 16, 17, 18] {
        let d = dir(&format!("walnames/pg{major}"));
        let m = meta(&d);
        let n = |k: &str| -> u32 { m[k].parse().unwrap() };
        let ev = events(&d, CatalogTracker::new().with_decompressor(decompress));
        let unreadable: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, CatalogEvent::Unreadable { .. }))
            .collect();
        assert!(unreadable.is_empty(), "pg{major}: {unreadable:#?}");
        let db = Oid(n("db_oid"));
        // The schema, from its pg_namespace insert (a full-page image on every version).
        assert!(
            ev.iter()
                .any(|e| matches!(e, CatalogEvent::Row(CatalogChange {
                inserted: true,
                row: CatalogRow::Namespace(ns),
                db: d,
                ..
            }) if ns.oid.0 == n("ventas_oid") && ns.name == "ventas" && *d == db)),
            "pg{major}: no pg_namespace row for ventas"
        );
        let rows = class_rows(&ev);
        let of = |oid: u32| -> Vec<&CatalogChange> {
            rows.iter()
                .copied()
                .filter(|c| class(c).oid.0 == oid)
                .collect()
        };
        // Created (the first row on a page after the backup's checkpoint: from the image),
        // then updated in the same transaction, renamed (an update logging only the changed
        // bytes), truncated (a new file number).
        let nueva = of(n("nueva_oid"));
        let first = class(nueva[0]);
        assert!(nueva[0].inserted, "pg{major}");
        assert_eq!(first.name, "nueva", "pg{major}");
        assert_eq!(first.namespace.0, n("ventas_oid"), "pg{major}");
        assert_eq!(first.filenode, n("nueva_filenode"), "pg{major}");
        assert_eq!(first.kind, 'r', "pg{major}");
        assert_eq!(first.persistence, 'p', "pg{major}");
        let renamed: Vec<_> = nueva
            .iter()
            .filter(|c| class(c).name == "renombrada")
            .collect();
        assert!(
            renamed
                .iter()
                .any(|c| !c.inserted && class(c).filenode == n("nueva_filenode")),
            "pg{major}: rename not seen: {nueva:#?}"
        );
        let last = class(nueva.last().unwrap());
        assert_eq!(
            (last.name.as_str(), last.filenode),
            ("renombrada", n("renombrada_truncated_filenode")),
            "pg{major}"
        );
        let toast = class(of(n("nueva_toast_oid"))[0]);
        assert_eq!(toast.kind, 't', "pg{major}");
        assert_eq!(
            toast.name,
            format!("pg_toast_{}", n("nueva_oid")),
            "pg{major}"
        );
        assert_eq!(toast.filenode, n("nueva_toast_filenode"), "pg{major}");
        // Created and dropped in one transaction: the insert carries that transaction's xid.
        let efimera = of(n("efimera_oid"));
        assert!(efimera[0].inserted, "pg{major}");
        assert_eq!(efimera[0].xid.0, n("efimera_xid"), "pg{major}");
        assert_eq!(class(efimera[0]).name, "efimera", "pg{major}");
        assert_eq!(class(efimera[0]).namespace.0, 2200, "pg{major}");
        assert_eq!(
            class(efimera[0]).filenode,
            n("efimera_filenode"),
            "pg{major}"
        );
        assert!(rows.iter().all(|c| c.db == db), "pg{major}");
    }
}

#[test]
fn compressed_images_without_a_decompressor_are_reported_not_guessed() {
    // LZ4 (15) and zstd (17) images need the caller's decompressor; pglz (14) does not.
    for (major, compressed) in [(14, false), (15, true), (17, true), (18, false)] {
        let d = dir(&format!("walnames/pg{major}"));
        let ev = events(&d, CatalogTracker::new());
        let unreadable = ev
            .iter()
            .filter(|e| matches!(e, CatalogEvent::Unreadable { .. }))
            .count();
        assert_eq!(unreadable > 0, compressed, "pg{major}");
        // Nothing wrong is made up: every row read names a relation that SQL also knew.
        let m = meta(&d);
        let nueva: u32 = m["nueva_oid"].parse().unwrap();
        for c in class_rows(&ev) {
            if class(c).oid.0 == nueva {
                assert!(["nueva", "renombrada"].contains(&class(c).name.as_str()));
            }
        }
    }
}

#[test]
fn tables_of_the_decoder_fixtures_are_named_from_the_wal() {
    // The decoder fixtures create table t after initdb (14: pglz images, 18: plain).
    for name in ["pg14", "pg15", "pg16", "pg17", "pg18"] {
        let d = dir(name);
        let m = meta(&d);
        let ev = events(&d, CatalogTracker::new().with_decompressor(decompress));
        let t_node: u32 = m["t_filenode"].parse().unwrap();
        assert!(
            class_rows(&ev)
                .iter()
                .any(|c| class(c).name == "t" && class(c).filenode == t_node && c.inserted),
            "{name}"
        );
    }
}
