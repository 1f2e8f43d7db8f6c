//! Which archived segments a scan decodes: the timeline, the file of each segment number
//! along its history, the range, the first gap.

use std::collections::BTreeMap;

use pitr_pg::{Lsn, SegNo, TimelineHistory, TimelineId, WalFileName, WalSegSize};
use pitr_repo::ClusterRepo;

use super::{Bound, ScanOptions, WalScanError};

/// The segments of one scan, in order.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Timeline followed.
    pub timeline: TimelineId,
    /// Its history.
    pub history: TimelineHistory,
    /// True when `timeline` is the newest archived one.
    pub latest: bool,
    /// Segment size.
    pub seg_size: WalSegSize,
    /// Files to decode, in order.
    pub files: Vec<WalFileName>,
    /// The first missing segment, when the run stops before the range ends.
    pub gap: Option<WalFileName>,
    /// LSN range for records (`--from`/`--to` given as LSN or segment).
    pub lsn_range: (Lsn, Lsn),
}

/// The segment a bound names (none for a time).
fn seg_of(b: &Bound, seg_size: WalSegSize) -> Option<SegNo> {
    match b {
        Bound::Lsn(l) => Some(seg_size.segno_of(*l)),
        Bound::Segment(n) => n.segno(seg_size),
        Bound::Time(_) => None,
    }
}

/// Archived segment files by timeline and segment number.
type ByTimeline = BTreeMap<TimelineId, BTreeMap<SegNo, WalFileName>>;

/// Chooses the segments to decode.
pub async fn plan(cluster: &ClusterRepo, opts: &ScanOptions) -> Result<SegmentPlan, WalScanError> {
    let no_wal = || WalScanError::NoWal {
        cluster: cluster.name().to_string(),
        repo: cluster.repo().location(),
    };
    let identity = cluster.identity().await?.ok_or_else(no_wal)?;
    let seg_size = WalSegSize::new(identity.wal_seg_size).map_err(|_| no_wal())?;
    let mut by_tli: ByTimeline = BTreeMap::new();
    for e in &cluster.list_wal().await? {
        if let (WalFileName::Segment { .. }, Some(n)) = (&e.name, e.name.segno(seg_size)) {
            by_tli
                .entry(e.name.timeline())
                .or_default()
                .insert(n, e.name);
        }
    }
    let newest = *by_tli.keys().next_back().ok_or_else(no_wal)?;
    let tli = opts.timeline.unwrap_or(newest);
    if !by_tli.contains_key(&tli) {
        return Err(WalScanError::NoTimeline {
            tli: tli.0,
            available: by_tli
                .keys()
                .map(|t| t.0.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let history = history_of(cluster, tli).await?;
    let chosen = along_history(&history, &by_tli, seg_size);
    let first_archived = *chosen.keys().next().ok_or_else(no_wal)?;
    let last_archived = *chosen.keys().next_back().ok_or_else(no_wal)?;
    let range = Range::of(opts, seg_size, first_archived, last_archived)?;
    let (files, gap) = run(&chosen, &history, seg_size, &range);
    if files.is_empty() {
        return Err(WalScanError::NothingInRange {
            tli: tli.0,
            from: opts
                .from
                .as_ref()
                .map_or("the start".into(), |b| b.to_string()),
            to: opts.to.as_ref().map_or("the end".into(), |b| b.to_string()),
        });
    }
    Ok(SegmentPlan {
        timeline: tli,
        history,
        latest: tli == newest,
        seg_size,
        files,
        gap,
        lsn_range: (range.lsn_from, range.lsn_to),
    })
}

/// The history of timeline `tli` (its history file; none for timeline 1 or when it is not
/// archived).
async fn history_of(
    cluster: &ClusterRepo,
    tli: TimelineId,
) -> Result<TimelineHistory, WalScanError> {
    if tli.0 <= 1 {
        return Ok(TimelineHistory::root(tli));
    }
    let name = WalFileName::History { tli };
    match cluster.get_wal(&name).await? {
        Some(bytes) => TimelineHistory::parse(tli, &bytes).map_err(|e| WalScanError::History {
            name: name.to_string(),
            reason: e.to_string(),
        }),
        None => Ok(TimelineHistory::root(tli)),
    }
}

/// For each segment number, the newest timeline of the history that covers it and whose file
/// is archived.
fn along_history(
    history: &TimelineHistory,
    by_tli: &ByTimeline,
    seg_size: WalSegSize,
) -> BTreeMap<SegNo, WalFileName> {
    let mut tlis: Vec<TimelineId> = history.entries.iter().map(|e| e.parent).collect();
    tlis.push(history.timeline);
    let mut chosen: BTreeMap<SegNo, WalFileName> = BTreeMap::new();
    for t in tlis.iter().rev() {
        let Some(files) = by_tli.get(t) else { continue };
        let begin = history
            .begin_of(*t)
            .map_or(SegNo(0), |l| seg_size.segno_of(l));
        let end = match history.end_of(*t) {
            Ok(Some(l)) => Some(seg_size.segno_of(l)),
            _ => None,
        };
        for (n, f) in files {
            if *n >= begin && end.is_none_or(|e| *n <= e) {
                chosen.entry(*n).or_insert(*f);
            }
        }
    }
    chosen
}

/// The range of a scan, from `--from` / `--to` and what is archived.
#[derive(Debug, Clone, Copy)]
struct Range {
    from_seg: SegNo,
    to_seg: SegNo,
    lsn_from: Lsn,
    lsn_to: Lsn,
}

impl Range {
    /// The segments and LSNs `opts` asks for within the archived `first..=last`; an error
    /// when `--from` is after `--to`.
    fn of(
        opts: &ScanOptions,
        seg_size: WalSegSize,
        first: SegNo,
        last: SegNo,
    ) -> Result<Range, WalScanError> {
        let from_seg = opts
            .from
            .as_ref()
            .and_then(|b| seg_of(b, seg_size))
            .unwrap_or(first)
            .max(first);
        let to_seg = opts
            .to
            .as_ref()
            .and_then(|b| seg_of(b, seg_size))
            .unwrap_or(last)
            .min(last);
        let lsn_from = match &opts.from {
            Some(Bound::Lsn(l)) => *l,
            _ => Lsn::INVALID,
        };
        let lsn_to = match &opts.to {
            Some(Bound::Lsn(l)) => *l,
            _ => Lsn(u64::MAX),
        };
        if let (Some(f), Some(t)) = (&opts.from, &opts.to) {
            let inverted = match (f, t) {
                (Bound::Time(a), Bound::Time(b)) => a > b,
                (Bound::Time(_), _) | (_, Bound::Time(_)) => false,
                _ => seg_of(f, seg_size) > seg_of(t, seg_size) || lsn_from > lsn_to,
            };
            if inverted {
                return Err(WalScanError::EmptyRange {
                    from: f.to_string(),
                    to: t.to_string(),
                });
            }
        }
        Ok(Range {
            from_seg,
            to_seg,
            lsn_from,
            lsn_to,
        })
    }
}

/// The files of the range, from the first archived segment at or after its start up to the
/// first missing one (returned as the gap, named on the timeline of the history there).
fn run(
    chosen: &BTreeMap<SegNo, WalFileName>,
    history: &TimelineHistory,
    seg_size: WalSegSize,
    range: &Range,
) -> (Vec<WalFileName>, Option<WalFileName>) {
    let mut files = Vec::new();
    let mut n = range.from_seg;
    // Start at the first archived segment at or after `from`.
    if !chosen.contains_key(&n) {
        n = chosen
            .range(n..)
            .next()
            .map_or(SegNo(u64::MAX), |(k, _)| *k);
    }
    while n <= range.to_seg {
        match chosen.get(&n) {
            Some(f) => files.push(*f),
            None => {
                let gap = WalFileName::segment(
                    history.timeline_at(seg_size.start_of(n).unwrap_or(Lsn::INVALID)),
                    n,
                    seg_size,
                );
                return (files, Some(gap));
            }
        }
        n = n.next();
    }
    (files, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository whose WAL listing holds `names` (contents are never read by `plan`), and
    /// `history` as timeline 2's history file; 1 MB segments.
    async fn repo_with(
        dir: &std::path::Path,
        names: &[&str],
        history: Option<&str>,
    ) -> ClusterRepo {
        use pitr_storage::{LocalFs, PutMode, Storage};
        let storage: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(LocalFs::create(dir).unwrap());
        let cluster = pitr_repo::Repo::new(storage.clone())
            .cluster("main")
            .unwrap();
        cluster
            .register(&pitr_repo::ClusterIdentity {
                system_id: 1,
                pg_major: 16,
                wal_seg_size: 1 << 20,
            })
            .await
            .unwrap();
        for n in names {
            let name = WalFileName::parse(n).unwrap();
            storage
                .put(
                    &cluster.wal_key(&name),
                    vec![0u8; 8].into(),
                    PutMode::Create,
                )
                .await
                .unwrap();
        }
        if let Some(h) = history {
            let (obj, _) =
                pitr_repo::frame::encode(h.as_bytes(), pitr_repo::Compression::None).unwrap();
            let name = WalFileName::History { tli: TimelineId(2) };
            storage
                .put(&cluster.wal_key(&name), obj.into(), PutMode::Create)
                .await
                .unwrap();
        }
        cluster
    }

    fn names(p: &SegmentPlan) -> Vec<String> {
        p.files.iter().map(|f| f.to_string()).collect()
    }

    #[tokio::test]
    async fn plan_follows_the_history_and_prefers_the_newest_timeline_per_segment() {
        let d = tempfile::tempdir().unwrap();
        // Timeline 2 forked from 1 at 0/320000 (in segment 3); 1 went on to segment 5.
        let c = repo_with(
            d.path(),
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000020000000000000003",
                "000000020000000000000004",
            ],
            Some("1\t0/320000\tno recovery target specified\n"),
        )
        .await;
        let p = plan(&c, &ScanOptions::default()).await.unwrap();
        assert_eq!(p.timeline, TimelineId(2));
        assert!(p.latest && p.gap.is_none());
        assert_eq!(
            names(&p),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000020000000000000003",
                "000000020000000000000004"
            ]
        );
        // Timeline 1 alone: its own segments to the end.
        let opts = ScanOptions {
            timeline: Some(TimelineId(1)),
            ..Default::default()
        };
        let p = plan(&c, &opts).await.unwrap();
        assert!(!p.latest);
        assert_eq!(p.files.len(), 5);
        // A range by LSN and by segment name.
        let opts = ScanOptions {
            from: Some(Bound::Lsn(Lsn(0x0021_0000))),
            to: Some(Bound::parse("--to", "000000020000000000000003").unwrap()),
            ..Default::default()
        };
        let p = plan(&c, &opts).await.unwrap();
        assert_eq!(
            names(&p),
            ["000000010000000000000002", "000000020000000000000003"]
        );
        assert_eq!(p.lsn_range.0, Lsn(0x0021_0000));
        // Unknown timeline, inverted range.
        let bad = ScanOptions {
            timeline: Some(TimelineId(3)),
            ..Default::default()
        };
        assert!(plan(&c, &bad).await.unwrap_err().is_usage());
        let inverted = ScanOptions {
            from: Some(Bound::Lsn(Lsn(0x0040_0000))),
            to: Some(Bound::Lsn(Lsn(0x0020_0000))),
            ..Default::default()
        };
        assert!(plan(&c, &inverted).await.unwrap_err().is_usage());
    }

    #[tokio::test]
    async fn plan_stops_at_the_first_missing_segment() {
        let d = tempfile::tempdir().unwrap();
        let c = repo_with(
            d.path(),
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000004",
            ],
            None,
        )
        .await;
        let p = plan(&c, &ScanOptions::default()).await.unwrap();
        assert_eq!(p.files.len(), 2);
        assert_eq!(
            p.gap.map(|g| g.to_string()).as_deref(),
            Some("000000010000000000000003")
        );
        // Starting after the gap reads what is there.
        let opts = ScanOptions {
            from: Some(Bound::parse("--from", "000000010000000000000003").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            names(&plan(&c, &opts).await.unwrap()),
            ["000000010000000000000004"]
        );
        let empty = tempfile::tempdir().unwrap();
        let none = repo_with(empty.path(), &[], None).await;
        assert!(matches!(
            plan(&none, &ScanOptions::default()).await,
            Err(WalScanError::NoWal { .. })
        ));
    }
}
