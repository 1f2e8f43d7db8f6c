//! `pitr stream`: a WAL receiver over the replication protocol (as `pg_receivewal`) that
//! stores WAL into the repository as it arrives.
//!
//! Receiving (this module), framing (`writer.rs`, a task of its own, compressing on threads of
//! its frame) and storing (`store.rs`, another task) are apart, so that the connection is read
//! while WAL is compressed and the repository written. The segment in progress is kept durable
//! as a streamed `.partial` (`<cluster>/stream/<TLI>/<segment>.partial`, an ordinary
//! checksummed, compressed, possibly encrypted frame of the bytes received so far), written as
//! WAL arrives or at most every `--partial-interval`; once complete, the segment is stored
//! under its own name (checked against the repository's cluster as `archive-push` checks it,
//! the same content, length and checksum as the object `archive-push` makes, so a segment both
//! streamed and archived by the server's `archive_command` is one object: the second is a
//! duplicate, never a conflict) and its `.partial` deleted. `archive-get` serves a `.partial`
//! under the segment's name when the complete segment is not there.
//!
//! Positions reported to the server: `write` is what was received. With `--synchronous`,
//! `flush` is always where WAL is durable in the repository (the end of the last stored
//! segment or `.partial`), so a primary naming the stream's `application_name` in
//! `synchronous_standby_names` acknowledges a commit only once it is in the repository: RPO 0.
//! Without it, the durable position is sent each time it moves, and the automatic updates in
//! between carry an invalid flush position, so that a server shutting down (which waits until
//! its last WAL is confirmed) is not held up by a `.partial` interval; a slot's restart
//! position follows what is durable either way.
//!
//! Started, it begins at its slot's restart position (PostgreSQL 15+ reads it over the
//! replication connection), else where the repository's WAL on the server's timeline ends (as
//! `pg_receivewal` starts from what its directory holds), else at the server's position.
//! After a lost connection (a server restart), it reconnects with backoff (1 s doubling to
//! 30 s) and resumes where it stopped receiving. When the timeline it streams ends (the
//! server, a standby, was promoted), it stores the new timeline's history file and goes on
//! from the first segment of the new timeline that holds its start; the old timeline's
//! `.partial` stays (it is that timeline's end).

mod store;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use pitr_pg::{Lsn, TimelineId, WalSegSize};
use pitr_proto::repl::{SlotOptions, StandbyStatus, StartReplication, StreamEnd, WalEvent};
use pitr_proto::{ConnParams, ProtoError, ReplConnection};
use pitr_repo::{ClusterRepo, Compression};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::archive::ArchiveError;
use writer::{Durable, ToWriter, Writer, WriterOptions, WriterReport};

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// WAL messages queued for the writer before receiving waits (up to 128 KiB each).
const WRITER_QUEUE: usize = 512;

/// A failed stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Talking to the server failed.
    #[error(transparent)]
    Server(#[from] ProtoError),
    /// Storing a segment failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The spool directory failed.
    #[error(
        "cannot write spool file {path:?}: {source}\nhint: give a writable directory with --spool"
    )]
    Spool {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The server answered something pitr does not understand.
    #[error("{0}")]
    Unexpected(String),
    /// The server is on an older timeline than the stream already reached.
    #[error("the server is on timeline {server}, but this stream already reached timeline {reached} at {at}\nhint: connect to the server that was promoted (-h/-p), or restart pitr stream to start over on this server's timeline")]
    TimelineBehind {
        /// The server's timeline.
        server: u32,
        /// The stream's.
        reached: u32,
        /// Where the stream resumes.
        at: Lsn,
    },
    /// The stream's timeline is not on the server's history (another cluster's promotion).
    #[error("this stream is on timeline {reached} at {at}, which is not in the history of the server's timeline {server}\nhint: connect to the server that was promoted from this stream's timeline (-h/-p), or restart pitr stream to start over on this server's timeline")]
    NotOnHistory {
        /// The server's timeline.
        server: u32,
        /// The stream's.
        reached: u32,
        /// Where the stream resumes.
        at: Lsn,
    },
    /// Compressing WAL failed.
    #[error("cannot compress WAL for the repository: {0}")]
    Encode(std::io::Error),
    /// The repository writer ended (its own error is reported instead).
    #[error("the repository writer stopped")]
    WriterStopped,
}

/// Options of `pitr stream`.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Connection settings (a replication connection is made from them).
    pub conn: ConnParams,
    /// Physical slot to stream from.
    pub slot: Option<String>,
    /// Create the slot (with reserved WAL) unless it exists.
    pub create_slot: bool,
    /// Compression of stored segments.
    pub compression: Compression,
    /// Where a timeline history file is written before it is stored.
    pub spool: PathBuf,
    /// Report as flushed only WAL durable in the repository (RPO 0 with a synchronous
    /// primary); the `.partial` is then written as soon as WAL arrives.
    pub synchronous: bool,
    /// Least time between two writes of the `.partial` (zero: as WAL arrives).
    pub partial_interval: Duration,
}

/// What a stream did until it was stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Segments stored (or found already archived).
    pub segments: u64,
    /// The last one.
    pub last_segment: Option<String>,
    /// Writes of the segment in progress as a `.partial`.
    pub partial_writes: u64,
    /// WAL received, in bytes.
    pub received_bytes: u64,
    /// Connections made (more than 1 after reconnections).
    pub connections: u32,
    /// Timeline switches followed.
    pub timeline_switches: u32,
    /// Where WAL is durable in the repository (end of the last stored segment or `.partial`).
    pub flushed: Option<String>,
    /// Its timeline.
    pub flushed_timeline: Option<u32>,
}

/// The writer task and its channels.
struct WriterHandle {
    seg: WalSegSize,
    tx: mpsc::Sender<ToWriter>,
    durable: watch::Receiver<Option<Durable>>,
    join: tokio::task::JoinHandle<Result<WriterReport, StreamError>>,
}

/// Where the stream is.
#[derive(Default)]
struct Position {
    /// Where the next connection starts: the end of what was received.
    resume: Option<(TimelineId, Lsn)>,
    writer: Option<WriterHandle>,
    report: StreamReport,
}

/// Streams until `stop` turns true (then returns the report), or a failure that reconnecting
/// cannot fix (a repository error, a refused slot, a timeline switch, or a first connection
/// that fails).
pub async fn stream(
    cluster: &ClusterRepo,
    opts: &StreamOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<StreamReport, StreamError> {
    let mut pos = Position::default();
    let mut backoff = Duration::from_secs(1);
    let result = loop {
        let connections = pos.report.connections;
        match session(cluster, opts, &mut pos, &mut stop).await {
            Ok(SessionEnd::Stopped) => break Ok(()),
            // A new timeline, or a start the server cannot serve: reconnect at once from the
            // new resume point.
            Ok(SessionEnd::Moved) => continue,
            Err(StreamError::Server(e)) if pos.report.connections > 0 => {
                if pos.report.connections > connections {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!("stream interrupted: {e}; reconnecting in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => break Err(e),
        }
        if *stop.borrow() {
            break Ok(());
        }
    };
    // The writer stores what it was given, the `.partial` last, then reports.
    let written = match pos.writer.take() {
        Some(w) => {
            drop(w.tx);
            Some(w.join.await.map_err(|e| {
                StreamError::Unexpected(format!("the repository writer failed: {e}"))
            })?)
        }
        None => None,
    };
    match (result, written) {
        (Err(StreamError::WriterStopped), Some(Err(e))) | (Ok(()), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), w) => {
            if let Some(Ok(w)) = w {
                pos.report.segments = w.segments;
                pos.report.last_segment = w.last_segment;
                pos.report.partial_writes = w.partial_writes;
                pos.report.flushed = w.durable.map(|d| d.lsn.to_string());
                pos.report.flushed_timeline = w.durable.map(|d| d.tli.0);
            }
            Ok(pos.report)
        }
    }
}

/// `16MB`, `1GB`, `64MB` as `SHOW wal_segment_size` prints it.
fn parse_seg_size(v: &str) -> Option<WalSegSize> {
    let v = v.trim();
    let (n, mult) = if let Some(n) = v.strip_suffix("GB") {
        (n, 1u64 << 30)
    } else if let Some(n) = v.strip_suffix("MB") {
        (n, 1 << 20)
    } else if let Some(n) = v.strip_suffix("kB") {
        (n, 1 << 10)
    } else {
        (v, 1)
    };
    WalSegSize::new(n.trim().parse::<u64>().ok()?.checked_mul(mult)?).ok()
}

/// Creates the slot unless it exists.
async fn ensure_slot(conn: &mut ReplConnection, name: &str) -> Result<(), ProtoError> {
    let opts = SlotOptions {
        reserve_wal: true,
        ..Default::default()
    };
    match conn.create_physical_slot(name, opts).await {
        Ok(_) => {
            tracing::info!("created physical replication slot {name:?}");
            Ok(())
        }
        // duplicate_object: it exists already.
        Err(ProtoError::Query { server, .. }) if server.code == "42710" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    /// `stop` turned true.
    Stopped,
    /// The resume point moved: the timeline ended (it is on the next one), or the server no
    /// longer has the WAL where the repository ends (it is the server's position).
    Moved,
}

/// Starts the writer on the first connection (the segment size comes from the server); a
/// later server must have the same segment size.
fn writer_for<'p>(
    pos: &'p mut Position,
    cluster: &ClusterRepo,
    opts: &StreamOptions,
    seg: WalSegSize,
) -> Result<&'p mut WriterHandle, StreamError> {
    if let Some(w) = &pos.writer {
        if w.seg != seg {
            return Err(StreamError::Unexpected(format!(
                "the server's WAL segment size is now {} bytes, it was {} bytes\nhint: a stream follows one cluster; restart pitr stream for another",
                seg.bytes(),
                w.seg.bytes()
            )));
        }
    }
    let w = pos.writer.get_or_insert_with(|| {
        let (dtx, drx) = watch::channel(None);
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let wopts = WriterOptions {
            compression: opts.compression,
            spool: opts.spool.clone(),
            partial_interval: opts.partial_interval,
            synchronous: opts.synchronous,
            seg,
        };
        let writer = Writer::new(cluster.clone(), wopts, dtx);
        WriterHandle {
            seg,
            tx,
            durable: drx,
            join: tokio::spawn(writer.run(rx)),
        }
    });
    Ok(w)
}

/// The positions to report: `received` as written; with `synchronous` the durable position
/// as flushed, else an invalid one (see the module documentation).
fn status_for(received: Lsn, durable: Option<Durable>, synchronous: bool) -> StandbyStatus {
    let flush = match (synchronous, durable) {
        (true, Some(d)) => d.lsn,
        _ => Lsn(0),
    };
    StandbyStatus {
        write: received.max(flush),
        flush,
        apply: Lsn(0),
    }
}

/// One connection: from the resume point (or the slot's, or the server's position) until
/// stopped or broken.
async fn session(
    cluster: &ClusterRepo,
    opts: &StreamOptions,
    pos: &mut Position,
    stop: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, StreamError> {
    let mut conn = pitr_proto::connect_replication(&opts.conn).await?;
    let ident = conn.identify_system().await?;
    let seg_text = conn.show("wal_segment_size").await?;
    let seg = parse_seg_size(&seg_text).ok_or_else(|| {
        StreamError::Unexpected(format!("the server's wal_segment_size is {seg_text:?}"))
    })?;
    if let (Some(slot), true) = (&opts.slot, opts.create_slot) {
        ensure_slot(&mut conn, slot).await?;
    }
    let (tli, start) = match pos.resume {
        Some(r) => r,
        None => {
            let slot_start = match (&opts.slot, conn.features().read_replication_slot) {
                (Some(slot), true) => conn
                    .read_slot(slot)
                    .await?
                    .and_then(|s| s.restart_tli.zip(s.restart_lsn)),
                _ => None,
            };
            // Without a slot position (no slot, or PostgreSQL 14 which cannot read one over a
            // replication connection), go on from what the repository holds on the server's
            // timeline, as pg_receivewal does from its directory; else from the server's
            // position.
            let held = match slot_start {
                Some(_) => None,
                None => repository_end(cluster, ident.timeline, seg).await?,
            };
            let (tli, lsn) = slot_start
                .or(held
                    .filter(|l| *l <= ident.xlogpos)
                    .map(|l| (ident.timeline, l)))
                .unwrap_or((ident.timeline, ident.xlogpos));
            (tli, seg.start_of(seg.segno_of(lsn)).unwrap_or(lsn))
        }
    };
    if tli > ident.timeline {
        return Err(StreamError::TimelineBehind {
            server: ident.timeline.0,
            reached: tli.0,
            at: start,
        });
    }
    let sync = opts.synchronous;
    let w = writer_for(pos, cluster, opts, seg)?;
    let (tx, mut durable) = (w.tx.clone(), w.durable.clone());
    if tli < ident.timeline {
        if let Some((end, next)) = fork_point(&mut conn, ident.timeline, tli, start).await? {
            // The stream got further on `tli` than the promoted server ever had (WAL of the old
            // primary that no standby received): that WAL stays stored as `tli`'s end, and the
            // stream goes on along the server's history, as at the end of a timeline.
            tracing::warn!(
                "this stream received timeline {tli} up to {start}, past {end} where the server's timeline {} forked from it: the WAL from {end} to {start} on timeline {tli} never reached this server (it stays in the repository as the end of timeline {tli}); following timeline {next} from {end}",
                ident.timeline
            );
            let history = conn.timeline_history(next).await?;
            tx.send(ToWriter::History {
                name: history.file_name.clone(),
                content: history.content.to_vec(),
            })
            .await
            .map_err(|_| StreamError::WriterStopped)?;
            pos.resume = Some((next, seg.start_of(seg.segno_of(end)).unwrap_or(end)));
            pos.report.timeline_switches += 1;
            return Ok(SessionEnd::Moved);
        }
    }
    tracing::info!("streaming timeline {tli} from {start}");
    let req = StartReplication {
        slot: opts.slot.clone(),
        start,
        timeline: Some(tli),
    };
    let endpoint = conn.endpoint().clone();
    let mut stream = match conn.start_replication(&req).await {
        Ok(st) => st,
        // The server no longer has the WAL after the repository's end (58P01): that gap cannot
        // be streamed; start again from the server's position.
        Err(ProtoError::Query { server, .. })
            if server.code == "58P01" && pos.resume.is_none() && opts.slot.is_none() =>
        {
            let from = seg
                .start_of(seg.segno_of(ident.xlogpos))
                .unwrap_or(ident.xlogpos);
            tracing::warn!(
                "the server no longer has the WAL from {start} on timeline {tli}, where the repository's WAL ends ({}): streaming from {from}; the WAL in between is missing from the repository unless the server's archive_command stored it",
                server.message
            );
            pos.resume = Some((ident.timeline, from));
            return Ok(SessionEnd::Moved);
        }
        Err(e) => return Err(e.into()),
    };
    pos.report.connections += 1;
    let mut received = start;
    stream.set_status(status_for(received, *durable.borrow(), sync));
    loop {
        let event = tokio::select! {
            ev = stream.next_event() => ev?,
            changed = durable.changed() => {
                if changed.is_err() {
                    return Err(StreamError::WriterStopped);
                }
                let d = *durable.borrow_and_update();
                if let Some(d) = d {
                    // Report the durable position now (the slot and a waiting commit follow it).
                    let now = StandbyStatus { flush: d.lsn, ..status_for(received, Some(d), true) };
                    stream.send_status(now, false).await?;
                    stream.set_status(status_for(received, Some(d), sync));
                }
                continue;
            }
            _ = stop.changed() => return Ok(SessionEnd::Stopped),
        };
        match event {
            Some(WalEvent::Data(x)) => {
                if x.start != received {
                    return Err(StreamError::Unexpected(format!(
                        "the server sent WAL at {} where {received} was expected",
                        x.start
                    )));
                }
                pos.report.received_bytes += x.data.len() as u64;
                let mut data = x.data.clone();
                let mut at = x.start;
                while !data.is_empty() {
                    let seg_end = seg
                        .start_of(seg.segno_of(at).next())
                        .unwrap_or(Lsn(u64::MAX));
                    let take = usize::try_from(seg_end.0 - at.0)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    let bytes = data.split_to(take);
                    tx.send(ToWriter::Wal {
                        tli,
                        start: at,
                        bytes,
                    })
                    .await
                    .map_err(|_| StreamError::WriterStopped)?;
                    at = Lsn(at.0 + take as u64);
                }
                received = x.end();
                pos.resume = Some((tli, received));
                stream.set_status(status_for(received, *durable.borrow(), sync));
            }
            Some(WalEvent::Keepalive(_)) => {}
            Some(WalEvent::End(StreamEnd::TimelineEnd {
                next_timeline,
                next_start,
            })) => {
                // The old timeline's last segment is incomplete: its `.partial` stays; the new
                // timeline's copy of that segment is streamed from its start.
                let history = conn.timeline_history(next_timeline).await?;
                tx.send(ToWriter::History {
                    name: history.file_name.clone(),
                    content: history.content.to_vec(),
                })
                .await
                .map_err(|_| StreamError::WriterStopped)?;
                let next_seg = seg.start_of(seg.segno_of(next_start)).unwrap_or(next_start);
                tracing::info!(
                    "timeline {tli} ends at {next_start}; following timeline {next_timeline}"
                );
                pos.resume = Some((next_timeline, next_seg));
                pos.report.timeline_switches += 1;
                return Ok(SessionEnd::Moved);
            }
            Some(WalEvent::End(StreamEnd::Stopped)) | None => {
                return Err(StreamError::Server(ProtoError::Connection {
                    endpoint,
                    what: "START_REPLICATION",
                    detail: "the server ended the stream".into(),
                }))
            }
        }
    }
}

/// Where the WAL the repository holds on timeline `tli` ends: the start of the segment after
/// the newest complete one, or of the newest streamed `.partial`'s segment when that is later
/// (its segment is streamed again whole); `None` when it holds none.
async fn repository_end(
    cluster: &ClusterRepo,
    tli: TimelineId,
    seg: WalSegSize,
) -> Result<Option<Lsn>, StreamError> {
    let repo_err = |e: pitr_repo::RepoError| StreamError::Archive(ArchiveError::from(e));
    let complete = cluster
        .list_wal()
        .await
        .map_err(repo_err)?
        .into_iter()
        .filter(|e| {
            e.name.timeline() == tli && matches!(e.name, pitr_pg::WalFileName::Segment { .. })
        })
        .filter_map(|e| e.name.segno(seg))
        .max()
        .and_then(|n| seg.start_of(n.next()));
    let partial = cluster
        .stream_partials()
        .await
        .map_err(repo_err)?
        .into_iter()
        .filter(|p| p.segment.timeline() == tli)
        .filter_map(|p| p.segment.segno(seg))
        .max()
        .and_then(|n| seg.start_of(n));
    Ok(complete.max(partial))
}

/// Where `tli` ends on the history of the server's timeline `server` and the timeline that
/// follows there, when the stream's position `start` on `tli` lies past that end (the server
/// cannot stream from there); `None` when the server can stream `tli` from `start` (it then
/// ends the timeline itself).
async fn fork_point(
    conn: &mut ReplConnection,
    server: TimelineId,
    tli: TimelineId,
    start: Lsn,
) -> Result<Option<(Lsn, TimelineId)>, StreamError> {
    let file = conn.timeline_history(server).await?;
    let history = file
        .history()
        .map_err(|e| StreamError::Unexpected(format!("the server's {}: {e}", file.file_name)))?;
    match history.end_of(tli) {
        Err(()) => Err(StreamError::NotOnHistory {
            server: server.0,
            reached: tli.0,
            at: start,
        }),
        Ok(Some(end)) if start > end => Ok(Some((end, history.timeline_at(end)))),
        Ok(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_as_show_prints_them() {
        assert_eq!(parse_seg_size("16MB").map(|s| s.bytes()), Some(16 << 20));
        assert_eq!(parse_seg_size("1GB").map(|s| s.bytes()), Some(1 << 30));
        assert_eq!(parse_seg_size("1MB").map(|s| s.bytes()), Some(1 << 20));
        assert!(parse_seg_size("3MB").is_none());
        assert!(parse_seg_size("lots").is_none());
    }
}
