//! Changed blocks from PostgreSQL 17+'s WAL summaries (`summarize_wal = on`): which blocks of
//! which relations WAL touched between the parent backup's start and this backup's start, so
//! that a block-level incremental reads those pages only instead of every page of every file.
//!
//! The summaries are read over the backup's own connection with `pg_available_wal_summaries()`
//! and `pg_wal_summary_contents()` (the server parses its own files, whatever their format in
//! a given major). They are trusted only when, on the backup's timeline (the parent's too), they
//! cover the whole range from the parent's start LSN to this backup's start LSN without a gap;
//! otherwise the backup scans every page's LSN as before and says why.
//!
//! For one relation segment file with a parent copy (see [`FilePages`]): a file the summaries
//! do not name is unchanged when its size is unchanged (else its pages are scanned); a file
//! they name stores the blocks they list, every block at or beyond the relation's *limit block*
//! (a truncation in the range: what lies beyond it was written again since), and every block
//! beyond the parent's copy of the file.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pitr_pg::Lsn;
use pitr_proto::{PgClient, ProtoError};

/// `DEFAULTTABLESPACE_OID` (`base/`).
const DEFAULT_TABLESPACE: u32 = 1663;
/// `GLOBALTABLESPACE_OID` (`global/`).
const GLOBAL_TABLESPACE: u32 = 1664;
/// How long the backup waits for the summarizer to reach its start LSN.
const SUMMARIZER_WAIT: Duration = Duration::from_secs(30);

/// A relation: tablespace, database and relfilenumber.
type RelKey = (u32, u32, u32);

/// What the summaries say about one relation's main fork.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RelChanges {
    /// Changed blocks of the relation, as sorted inclusive ranges.
    ranges: Vec<(u32, u32)>,
    /// The smallest limit block (the relation was truncated to it in the range).
    limit: Option<u32>,
}

/// The changed blocks of every relation the summaries name.
#[derive(Debug, Default)]
pub struct Summarized {
    rels: HashMap<RelKey, RelChanges>,
    /// Which summaries were used, for the report.
    pub description: String,
}

/// What a relation segment file needs, according to the summaries.
#[derive(Debug, PartialEq, Eq)]
pub enum FilePages {
    /// Not named and the same size as the parent's copy: unchanged.
    Unchanged,
    /// Not named, but its size changed (or the file cannot be numbered): scan its pages.
    Scan,
    /// These blocks of the file (sorted inclusive ranges, within its size).
    Blocks(Vec<(u32, u32)>),
}

impl Summarized {
    /// The blocks of the file `rel` (`size` bytes now, `parent_size` in the parent) to store.
    pub fn file_pages(
        &self,
        rel: &str,
        size: u64,
        parent_size: u64,
        block_size: u32,
        relseg_size: u32,
    ) -> FilePages {
        let bs = u64::from(block_size);
        let Some((key, segno)) = rel_key(rel) else {
            return FilePages::Scan;
        };
        if bs == 0 || !size.is_multiple_of(bs) {
            return FilePages::Scan;
        }
        let Some(changes) = self.rels.get(&key) else {
            return if size == parent_size {
                FilePages::Unchanged
            } else {
                FilePages::Scan
            };
        };
        let nblocks = u32::try_from(size / bs).unwrap_or(u32::MAX);
        let parent_blocks = u32::try_from(parent_size / bs).unwrap_or(u32::MAX);
        let first = u64::from(segno) * u64::from(relseg_size);
        let end = first + u64::from(nblocks); // exclusive, relation block numbers
        let mut out: Vec<(u32, u32)> = Vec::new();
        let mut add = |a: u64, b: u64| {
            // Relation blocks a..=b, clipped to this file, as file blocks.
            let (a, b) = (a.max(first), b.min(end.saturating_sub(1)));
            if a > b || end == first {
                return;
            }
            let (a, b) = ((a - first) as u32, (b - first) as u32);
            match out.last_mut() {
                Some((_, e)) if e.saturating_add(1) >= a => *e = (*e).max(b),
                _ => out.push((a, b)),
            }
        };
        // Everything from the first block that must be stored whatever the ranges say.
        let tail_from = changes
            .limit
            .map(u64::from)
            .unwrap_or(u64::MAX)
            .min(first + u64::from(parent_blocks));
        for &(a, b) in &changes.ranges {
            if u64::from(a) < tail_from {
                add(u64::from(a), u64::from(b).min(tail_from - 1));
            }
        }
        if tail_from < end {
            add(tail_from, end - 1);
        }
        FilePages::Blocks(out)
    }
}

/// The relation of a main-fork relation file under `base/`, `global/` or `pg_tblspc/`, and its
/// segment number.
fn rel_key(rel: &str) -> Option<(RelKey, u32)> {
    let parts: Vec<&str> = rel.split('/').collect();
    let (key_of, name) = match parts.as_slice() {
        ["global", name] => ((GLOBAL_TABLESPACE, 0), *name),
        ["base", db, name] => ((DEFAULT_TABLESPACE, db.parse().ok()?), *name),
        ["pg_tblspc", spc, _version, db, name] => ((spc.parse().ok()?, db.parse().ok()?), *name),
        _ => return None,
    };
    let (num, seg) = match name.split_once('.') {
        Some((n, s)) => (n, s.parse().ok()?),
        None => (name, 0),
    };
    Some(((key_of.0, key_of.1, num.parse().ok()?), seg))
}

/// The summaries (start, end) on one timeline that cover `from..to` without a gap, or `None`.
fn cover(mut summaries: Vec<(Lsn, Lsn)>, from: Lsn, to: Lsn) -> Option<Vec<(Lsn, Lsn)>> {
    summaries.sort();
    let mut cur = from;
    let mut used = Vec::new();
    while cur < to {
        // Of the summaries starting at or before `cur`, the one reaching furthest.
        let next = summaries
            .iter()
            .filter(|(s, e)| *s <= cur && *e > cur)
            .max_by_key(|(_, e)| *e)?;
        used.push(*next);
        cur = next.1;
    }
    Some(used)
}

/// The changed blocks between `parent_start` (on `parent_tli`) and `start` (on `tli`) from the
/// server's WAL summaries, or why they cannot be used.
pub async fn changed_blocks(
    client: &PgClient,
    (parent_tli, parent_start): (u32, Lsn),
    (tli, start): (u32, Lsn),
) -> Result<Result<Summarized, String>, ProtoError> {
    let major = client.major().number();
    if major < 17 {
        return Ok(Err(format!("PostgreSQL {major} has no WAL summaries")));
    }
    let on = client
        .query_text("summarize_wal", "SELECT current_setting('summarize_wal')")
        .await?;
    if first_value(&on).as_deref() != Some("on") {
        return Ok(Err(
            "summarize_wal is off (hint: set summarize_wal = on to read changed pages only)".into(),
        ));
    }
    if parent_tli != tli {
        return Ok(Err(format!(
            "the parent backup started on timeline {parent_tli}, this one on timeline {tli}"
        )));
    }
    if let Err(why) = wait_for_summarizer(client, tli, start).await? {
        return Ok(Err(why));
    }
    let rows = client
        .query_text(
            "available WAL summaries",
            &format!(
                "SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() WHERE tli = {tli}"
            ),
        )
        .await?;
    let summaries: Vec<(Lsn, Lsn)> = rows
        .iter()
        .filter_map(|r| Some((lsn_at(r, 0)?, lsn_at(r, 1)?)))
        .collect();
    let Some(used) = cover(summaries, parent_start, start) else {
        return Ok(Err(format!(
            "the WAL summaries of timeline {tli} do not cover {parent_start} to {start} (removed after wal_summary_keep_time, or summarize_wal was off for a while)"
        )));
    };
    let rels = if used.is_empty() {
        HashMap::new()
    } else {
        contents(client, tli, &used).await?
    };
    Ok(Ok(Summarized {
        rels,
        description: format!(
            "{} WAL summaries of timeline {tli} covering {parent_start} to {start}",
            used.len()
        ),
    }))
}

/// Waits until the summarizer has summarized `tli` up to `start`.
async fn wait_for_summarizer(
    client: &PgClient,
    tli: u32,
    start: Lsn,
) -> Result<Result<(), String>, ProtoError> {
    let deadline = Instant::now() + SUMMARIZER_WAIT;
    loop {
        let rows = client
            .query_text(
                "WAL summarizer state",
                "SELECT summarized_tli::text, summarized_lsn::text FROM pg_get_wal_summarizer_state()",
            )
            .await?;
        let row = rows.first();
        let at_tli = row
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse::<u32>().ok());
        let at = row.and_then(|r| lsn_at(r, 1));
        match (at_tli, at) {
            (Some(t), Some(l)) if (t == tli && l >= start) || t > tli => return Ok(Ok(())),
            _ if Instant::now() >= deadline => {
                return Ok(Err(format!(
                    "the WAL summarizer had not reached {start} on timeline {tli} after {}s",
                    SUMMARIZER_WAIT.as_secs()
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The main-fork blocks the summaries `used` name, per relation (consecutive blocks grouped
/// into ranges by the server), ranges sorted.
async fn contents(
    client: &PgClient,
    tli: u32,
    used: &[(Lsn, Lsn)],
) -> Result<HashMap<RelKey, RelChanges>, ProtoError> {
    let values: Vec<String> = used
        .iter()
        .map(|(s, e)| format!("({tli}, '{s}'::pg_lsn, '{e}'::pg_lsn)"))
        .collect();
    let sql = format!(
        "WITH c AS (SELECT DISTINCT reltablespace, reldatabase, relfilenode, relblocknumber, is_limit_block \
           FROM (VALUES {}) s(tli, a, b), LATERAL pg_wal_summary_contents(s.tli, s.a, s.b) \
           WHERE relforknumber = 0) \
         SELECT reltablespace::text, reldatabase::text, relfilenode::text, is_limit_block::text, \
                min(relblocknumber)::text, max(relblocknumber)::text \
           FROM (SELECT *, relblocknumber - row_number() OVER \
                   (PARTITION BY reltablespace, reldatabase, relfilenode, is_limit_block ORDER BY relblocknumber) AS g \
                 FROM c) x \
          GROUP BY reltablespace, reldatabase, relfilenode, is_limit_block, g",
        values.join(", ")
    );
    let rows = client.query_text("WAL summary contents", &sql).await?;
    let mut rels: HashMap<RelKey, RelChanges> = HashMap::new();
    for r in &rows {
        let num = |i: usize| {
            r.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let (Some(spc), Some(db), Some(rel), Some(a), Some(b)) =
            (num(0), num(1), num(2), num(4), num(5))
        else {
            continue;
        };
        let limit = r.get(3).and_then(|v| v.as_deref()) == Some("true");
        let e = rels.entry((spc, db, rel)).or_default();
        if limit {
            e.limit = Some(e.limit.map_or(a, |l| l.min(a)));
        } else {
            e.ranges.push((a, b));
        }
    }
    // (The values come as text: sorted here, as numbers.)
    for e in rels.values_mut() {
        e.ranges.sort_unstable();
    }
    Ok(rels)
}

fn first_value(rows: &[Vec<Option<String>>]) -> Option<String> {
    rows.first()?.first()?.clone()
}

fn lsn_at(row: &[Option<String>], i: usize) -> Option<Lsn> {
    row.get(i)?.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn relation_files_are_numbered_by_tablespace_database_and_segment() {
        assert_eq!(rel_key("base/5/16384"), Some(((1663, 5, 16384), 0)));
        assert_eq!(rel_key("base/5/16384.3"), Some(((1663, 5, 16384), 3)));
        assert_eq!(rel_key("global/1262"), Some(((1664, 0, 1262), 0)));
        assert_eq!(
            rel_key("pg_tblspc/16390/PG_17_202406281/5/16391.1"),
            Some(((16390, 5, 16391), 1))
        );
        assert_eq!(rel_key("base/5/16384_fsm"), None);
        assert_eq!(rel_key("pg_wal/000000010000000000000001"), None);
    }

    #[test]
    fn summaries_are_used_only_when_they_cover_the_range_without_a_gap() {
        let l = Lsn;
        let s = vec![(l(100), l(200)), (l(200), l(300)), (l(300), l(400))];
        assert_eq!(
            cover(s.clone(), l(150), l(300)),
            Some(vec![(l(100), l(200)), (l(200), l(300))])
        );
        assert_eq!(cover(s.clone(), l(100), l(100)), Some(vec![]));
        assert_eq!(cover(s.clone(), l(50), l(300)), None);
        assert_eq!(cover(s.clone(), l(150), l(450)), None);
        let gap = vec![(l(100), l(200)), (l(250), l(400))];
        assert_eq!(cover(gap, l(150), l(300)), None);
    }

    #[test]
    fn a_file_stores_named_blocks_the_tail_after_a_truncation_and_its_growth() {
        let mut rels = HashMap::new();
        // Relation 16384: blocks 2-3 and 10 changed, truncated to 20 then written again.
        rels.insert(
            (1663, 5, 16384),
            RelChanges {
                ranges: vec![(2, 3), (10, 10), (25, 25)],
                limit: Some(20),
            },
        );
        // Relation 16385: segment files of 8 blocks; blocks 7-9 changed.
        rels.insert(
            (1663, 5, 16385),
            RelChanges {
                ranges: vec![(7, 9)],
                limit: None,
            },
        );
        let s = Summarized {
            rels,
            description: String::new(),
        };
        let bs = 8192u64;
        let p = |rel: &str, now: u64, before: u64, seg: u32| {
            s.file_pages(rel, now * bs, before * bs, 8192, seg)
        };
        assert_eq!(
            p("base/5/16384", 30, 30, 1000),
            FilePages::Blocks(vec![(2, 3), (10, 10), (20, 29)])
        );
        // Grown since the parent: the new blocks too.
        assert_eq!(
            p("base/5/16384", 18, 12, 1000),
            FilePages::Blocks(vec![(2, 3), (10, 10), (12, 17)])
        );
        assert_eq!(p("base/5/16385", 8, 8, 8), FilePages::Blocks(vec![(7, 7)]));
        assert_eq!(
            p("base/5/16385.1", 8, 8, 8),
            FilePages::Blocks(vec![(0, 1)])
        );
        assert_eq!(p("base/5/16385.2", 8, 8, 8), FilePages::Blocks(vec![]));
        // Not named: unchanged if the same size, else scanned.
        assert_eq!(p("base/5/16386", 8, 8, 8), FilePages::Unchanged);
        assert_eq!(p("base/5/16386", 9, 8, 8), FilePages::Scan);
        assert_eq!(
            s.file_pages("base/5/16384", 8193, 8192, 8192, 8),
            FilePages::Scan
        );
    }
}
