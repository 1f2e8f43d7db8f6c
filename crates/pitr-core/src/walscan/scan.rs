//! Decoding the planned segments: fetched ahead, decoded in order, the events handed over
//! named and classified as each segment is done.

use pitr_pg::wal::{EndReason, WalDecoder};
use pitr_pg::{Lsn, WalFileName};
use pitr_repo::{ClusterRepo, RepoError};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

use super::classify::classify;
use super::collect::Acc;
use super::{names, Event, ScanInfo, ScanOptions, SegmentPlan, WalLog, WalScanError};

/// Segments fetched ahead of the decoder.
const PREFETCH: usize = 4;

/// Hands the events decoded so far to `emit`, named and classified, after teaching `namer` the
/// catalog rows they wrote; returns how many relations stayed unnamed.
async fn hand_over<F: FnMut(Event)>(
    acc: &mut Acc,
    namer: &mut names::Namer<'_>,
    emit: &mut F,
) -> usize {
    for (lsn, rows) in acc.catalog_learnt.drain(..) {
        namer.wal.learn(lsn, &rows);
    }
    let mut unnamed = 0;
    for mut e in acc.events.drain(..) {
        namer.name_event(&mut e).await;
        if let Event::Transaction(t) = &mut e {
            classify(t);
            unnamed += t
                .relations
                .iter()
                .filter(|r| r.name.is_none() && r.db_oid != 0)
                .count();
        }
        emit(e);
    }
    unnamed
}

/// Decodes the planned segments and collects the report (see [`scan`]).
pub async fn log(
    cluster: &ClusterRepo,
    plan: &SegmentPlan,
    opts: &ScanOptions,
    namer: &mut names::Namer<'_>,
) -> Result<WalLog, WalScanError> {
    let mut events = Vec::new();
    let scan = scan(cluster, plan, opts, namer, |e| events.push(e)).await?;
    Ok(WalLog { scan, events })
}

/// Decodes the planned segments and hands each transaction, restore point and checkpoint to
/// `emit` in WAL order, named by `namer`, as the segments are decoded (memory stays bounded
/// however long the range).
pub async fn scan<F: FnMut(Event)>(
    cluster: &ClusterRepo,
    plan: &SegmentPlan,
    opts: &ScanOptions,
    namer: &mut names::Namer<'_>,
    mut emit: F,
) -> Result<ScanInfo, WalScanError> {
    let (fetcher, mut rx) = fetch_ahead(cluster, &plan.files);
    let mut acc = Acc::new(plan, opts);
    let scan_start = plan
        .files
        .first()
        .and_then(|f| f.segno(plan.seg_size))
        .and_then(|n| plan.seg_size.start_of(n))
        .unwrap_or(Lsn::INVALID);
    for (db, node) in namer.class_filenodes(scan_start).await {
        acc.catalog.set_class_filenode(db, node);
    }
    let mut dec = WalDecoder::new();
    let mut read = Read::default();
    let mut fetch_error = None;
    // Relations left unnamed in the report (a catalog row that could not be read may be why).
    let mut unnamed = 0usize;
    while let Some(got) = rx.recv().await {
        let (name, data) = match got {
            Ok(x) => x,
            Err(e) => {
                fetch_error = Some(e);
                break;
            }
        };
        read.add(&name, &data);
        if let Err(e) = dec.decode_slice(&data, |r| acc.record(r)) {
            acc.failure.get_or_insert(e);
        }
        unnamed += hand_over(&mut acc, namer, &mut emit).await;
        if acc.failure.is_some() || dec.end().is_some() {
            break;
        }
    }
    fetcher.abort();
    if let Some(e) = fetch_error {
        return Err(e);
    }
    if dec.end().is_none() && acc.failure.is_none() {
        dec.finish();
        if let Err(e) = dec.decode_slice(&[], |r| acc.record(r)) {
            acc.failure.get_or_insert(e);
        }
        unnamed += hand_over(&mut acc, namer, &mut emit).await;
    }
    if let Some(e) = acc.failure {
        return Err(WalScanError::Damaged {
            lsn: e.lsn(),
            segment: read.last,
            source: e,
        });
    }
    let (end, end_lsn) = end_of(&dec, plan);
    Ok(ScanInfo {
        cluster: cluster.name().to_string(),
        timeline: plan.timeline.0,
        latest_timeline: plan.latest,
        segments: read.segments,
        first_segment: read.first,
        last_segment: read.last,
        bytes: read.bytes,
        records: dec.records_decoded(),
        end,
        end_lsn,
        gap: plan.gap.as_ref().map(|g| g.to_string()),
        open_transactions: acc.tracker.open_transactions().count(),
        warnings: warnings(
            std::mem::take(&mut namer.warnings),
            &acc.catalog_unreadable,
            unnamed,
        ),
    })
}

/// A fetched segment, or why it could not be fetched.
type Fetched = Result<(WalFileName, Vec<u8>), WalScanError>;

/// Fetches (and verifies) `files` in order on a task of its own, up to [`PREFETCH`] ahead of
/// the receiver; stops after the first failure.
fn fetch_ahead(
    cluster: &ClusterRepo,
    files: &[WalFileName],
) -> (JoinHandle<()>, Receiver<Fetched>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Fetched>(PREFETCH);
    let cluster = cluster.clone();
    let files = files.to_vec();
    let fetcher = tokio::spawn(async move {
        for f in files {
            let got = match cluster.get_wal(&f).await {
                Ok(Some(b)) => Ok((f, b)),
                Ok(None) => Err(WalScanError::Repo(RepoError::Corrupt {
                    repo: cluster.repo().location(),
                    key: cluster.wal_key(&f),
                    source: pitr_repo::frame::FrameError::Truncated(0),
                })),
                Err(e) => Err(e.into()),
            };
            let stop = got.is_err();
            if tx.send(got).await.is_err() || stop {
                return;
            }
        }
    });
    (fetcher, rx)
}

/// The segments decoded so far.
#[derive(Debug, Default)]
struct Read {
    segments: u64,
    bytes: u64,
    first: String,
    last: String,
}

impl Read {
    fn add(&mut self, name: &WalFileName, data: &[u8]) {
        if self.first.is_empty() {
            self.first = name.to_string();
        }
        self.last = name.to_string();
        self.segments += 1;
        self.bytes += data.len() as u64;
    }
}

/// Where decoding stopped and why, for people.
fn end_of(dec: &WalDecoder, plan: &SegmentPlan) -> (String, Lsn) {
    match dec.end() {
        Some(e) => {
            let why = match &e.reason {
                EndReason::InputEnded => match &plan.gap {
                    Some(g) => format!("segment {g} is not archived"),
                    None => "end of the archived WAL in the range".to_string(),
                },
                _ => e.to_string(),
            };
            (why, e.lsn)
        }
        None => ("decoding stopped".into(), dec.next_lsn()),
    }
}

/// The namer's warnings, and one about unreadable catalog rows when relations stayed unnamed.
fn warnings(
    mut w: Vec<String>,
    catalog_unreadable: &(u64, Option<String>),
    unnamed: usize,
) -> Vec<String> {
    if let (n, Some(first)) = catalog_unreadable {
        if unnamed > 0 {
            w.push(format!(
                "{unnamed} relation file(s) left unnamed; {n} pg_class/pg_namespace \
                 row(s) written to the WAL could not be read (first {first})"
            ));
        }
    }
    w
}
