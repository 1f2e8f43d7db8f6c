//! `pitr stream`: a WAL receiver over the replication protocol (as `pg_receivewal`) that
//! stores every completed segment into the repository.
//!
//! Each completed segment is written to a spool file under its own name and stored by the
//! very function `archive-push` runs ([`crate::archive::push`]), so a segment both streamed and
//! archived by the server's `archive_command` is one identical object (the second push finds
//! the same content and does nothing). Only then is the segment's end reported to the server
//! as flushed, so a slot keeps every byte not yet in the repository; in between, status
//! updates carry only the write position (an invalid flush position), so that a server
//! shutting down, which waits until its last WAL is confirmed, is not held up by a segment
//! that is not complete (`pg_stat_replication.flush_lsn` is then NULL).
//!
//! After a lost connection (a server restart), it reconnects with backoff (1 s doubling to
//! 30 s) and resumes at the first segment not yet stored. When the timeline it streams ends
//! (the server, a standby, was promoted), it stores the new timeline's history file and goes on
//! from the first segment of the new timeline that holds its start. Not done yet: keeping the
//! segment in progress as a `.partial` object, and `--synchronous` (RPO 0).

use std::path::PathBuf;
use std::time::Duration;

use pitr_pg::{Lsn, TimelineId, WalFileName, WalSegSize};
use pitr_proto::repl::{SlotOptions, StandbyStatus, StartReplication, StreamEnd, WalEvent};
use pitr_proto::{ConnParams, ProtoError, ReplConnection};
use pitr_repo::{ClusterRepo, Compression};
use serde::Serialize;
use tokio::sync::watch;

use crate::archive::{self, ArchiveError};

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    /// Where completed segments are written before they are stored.
    pub spool: PathBuf,
}

/// What a stream did until it was stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Segments stored (or found already archived).
    pub segments: u64,
    /// The last one.
    pub last_segment: Option<String>,
    /// WAL received, in bytes.
    pub received_bytes: u64,
    /// Connections made (more than 1 after reconnections).
    pub connections: u32,
    /// Timeline switches followed.
    pub timeline_switches: u32,
    /// End of the last stored segment: where streaming resumes.
    pub flushed: Option<String>,
}

/// Where the stream is: the next segment to receive.
#[derive(Debug, Default)]
struct Position {
    resume: Option<(TimelineId, Lsn)>,
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
    loop {
        let connections = pos.report.connections;
        match session(cluster, opts, &mut pos, &mut stop).await {
            Ok(SessionEnd::Stopped) => return Ok(pos.report),
            // A new timeline: reconnect at once, from its first segment.
            Ok(SessionEnd::NextTimeline) => continue,
            Err(StreamError::Server(e)) if pos.report.connections > 0 => {
                if pos.report.connections > connections {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!("stream interrupted: {e}; reconnecting in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(pos.report),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
        if *stop.borrow() {
            return Ok(pos.report);
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
    /// The timeline ended; the resume point is on the next one.
    NextTimeline,
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
            let (tli, lsn) = slot_start.unwrap_or((ident.timeline, ident.xlogpos));
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
    tracing::info!("streaming timeline {tli} from {start}");
    let req = StartReplication {
        slot: opts.slot.clone(),
        start,
        timeline: Some(tli),
    };
    let endpoint = conn.endpoint().clone();
    let mut stream = conn.start_replication(&req).await?;
    pos.report.connections += 1;
    let seg_bytes = seg.bytes() as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(seg_bytes);
    let mut seg_start = start;
    loop {
        let event = tokio::select! {
            ev = stream.next_event() => ev?,
            _ = stop.changed() => return Ok(SessionEnd::Stopped),
        };
        match event {
            Some(WalEvent::Data(x)) => {
                let expected = Lsn(seg_start.0 + buf.len() as u64);
                if x.start != expected {
                    return Err(StreamError::Unexpected(format!(
                        "the server sent WAL at {} where {expected} was expected",
                        x.start
                    )));
                }
                pos.report.received_bytes += x.data.len() as u64;
                // Between stored segments only the write position is reported (flush invalid):
                // a shutting-down server waits until its last WAL is confirmed, and the segment
                // in progress is not in the repository. The slot keeps its restart position.
                stream.set_status(StandbyStatus {
                    write: x.end(),
                    flush: Lsn(0),
                    apply: Lsn(0),
                });
                let mut data = &x.data[..];
                while !data.is_empty() {
                    let take = (seg_bytes - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() == seg_bytes {
                        store(cluster, opts, tli, seg, seg_start, &buf, &mut pos.report).await?;
                        seg_start = Lsn(seg_start.0 + seg.bytes());
                        buf.clear();
                        pos.resume = Some((tli, seg_start));
                        pos.report.flushed = Some(seg_start.to_string());
                        let status = StandbyStatus {
                            write: x.end(),
                            flush: seg_start,
                            apply: Lsn(0),
                        };
                        stream.send_status(status, false).await?;
                        stream.set_status(StandbyStatus {
                            flush: Lsn(0),
                            ..status
                        });
                    }
                }
            }
            Some(WalEvent::Keepalive(_)) => {}
            Some(WalEvent::End(StreamEnd::TimelineEnd {
                next_timeline,
                next_start,
            })) => {
                // The old timeline's last segment is incomplete: the server archives it as
                // `.partial`; the new timeline's copy of that segment is streamed from its start.
                let history = conn.timeline_history(next_timeline).await?;
                store_file(cluster, opts, &history.file_name, &history.content).await?;
                let next_seg = seg.start_of(seg.segno_of(next_start)).unwrap_or(next_start);
                tracing::info!(
                    "timeline {tli} ends at {next_start}; following timeline {next_timeline}"
                );
                pos.resume = Some((next_timeline, next_seg));
                pos.report.timeline_switches += 1;
                return Ok(SessionEnd::NextTimeline);
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

/// Stores one completed segment exactly as `archive-push` would.
async fn store(
    cluster: &ClusterRepo,
    opts: &StreamOptions,
    tli: TimelineId,
    seg: WalSegSize,
    start: Lsn,
    data: &[u8],
    report: &mut StreamReport,
) -> Result<(), StreamError> {
    let name = WalFileName::segment(tli, seg.segno_of(start), seg).to_string();
    store_file(cluster, opts, &name, data).await?;
    report.segments += 1;
    report.last_segment = Some(name);
    Ok(())
}

/// Writes `data` to the spool as `name` and stores it with `archive-push`'s function.
async fn store_file(
    cluster: &ClusterRepo,
    opts: &StreamOptions,
    name: &str,
    data: &[u8],
) -> Result<(), StreamError> {
    let path = opts.spool.join(name);
    let spool_err = |source| StreamError::Spool {
        path: path.clone(),
        source,
    };
    tokio::fs::create_dir_all(&opts.spool)
        .await
        .map_err(spool_err)?;
    tokio::fs::write(&path, data).await.map_err(spool_err)?;
    let pushed = archive::push(cluster, &path, opts.compression).await;
    if let Err(e) = tokio::fs::remove_file(&path).await {
        tracing::debug!("removing spool file {}: {e}", path.display());
    }
    let pushed = pushed?;
    tracing::info!("stored {} ({:?})", pushed.name, pushed.outcome);
    Ok(())
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
