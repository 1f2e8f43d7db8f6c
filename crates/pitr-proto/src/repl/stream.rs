//! `START_REPLICATION … PHYSICAL`: WAL as `XLogData` messages, keepalives, standby status
//! updates, and the end of a timeline.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use pitr_pg::wal::PgTimestamp;
use pitr_pg::{Lsn, TimelineId};
use postgres_protocol::message::frontend;
use tokio::time::Instant;

use super::commands::validate_slot_name;
use super::conn::{ReplConnection, ResultSets};
use super::wire::{be_u64, Backend};
use crate::ProtoError;

/// How often a status update is sent when nothing else triggers one: PostgreSQL's
/// `wal_receiver_status_interval` default. The server drops a receiver silent for
/// `wal_sender_timeout` (60 s by default).
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// What to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReplication {
    /// A physical slot to stream from (it then retains WAL until confirmed flushed).
    pub slot: Option<String>,
    /// First WAL position wanted (PostgreSQL streams from there; pg_receivewal starts at a
    /// segment boundary).
    pub start: Lsn,
    /// Timeline to stream; `None` means the server's current one.
    pub timeline: Option<TimelineId>,
}

/// A chunk of WAL (`XLogData`, `w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Position of the first byte of `data`.
    pub start: Lsn,
    /// The server's current end of WAL when it sent this.
    pub wal_end: Lsn,
    /// The server's clock when it sent this.
    pub server_time: PgTimestamp,
    /// The WAL bytes, `start` to [`XLogData::end`].
    pub data: Bytes,
}

impl XLogData {
    /// Position just after the last byte of `data`.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0.saturating_add(self.data.len() as u64))
    }
}

/// A primary keepalive (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The server's clock.
    pub server_time: PgTimestamp,
    /// The server asked for an immediate status update (already sent by the stream, with the
    /// positions last given to [`WalStream::send_status`]).
    pub reply_requested: bool,
}

/// Positions reported to the server in standby status updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandbyStatus {
    /// Received and written (not necessarily durable).
    pub write: Lsn,
    /// Durable: a slot's `restart_lsn` follows this, and synchronous replication waits on it.
    pub flush: Lsn,
    /// Applied (pitr applies nothing: report 0/0 or the flush position).
    pub apply: Lsn,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The timeline streamed is not the server's current one and all of it was sent:
    /// continue with `next_timeline` from `next_start`.
    TimelineEnd {
        /// The timeline that follows.
        next_timeline: TimelineId,
        /// Where it branches off (the end of the streamed timeline).
        next_start: Lsn,
    },
    /// The stream ended on the current timeline (stopped by us or by the server).
    Stopped,
}

/// One thing received from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEvent {
    /// WAL bytes.
    Data(XLogData),
    /// A keepalive.
    Keepalive(Keepalive),
    /// The end; the connection accepts commands again.
    End(StreamEnd),
}

/// A running `START_REPLICATION`: call [`WalStream::next_event`] in a loop and report
/// progress with [`WalStream::send_status`]. Status updates are also sent on their own when
/// the server asks for one and every [`DEFAULT_STATUS_INTERVAL`], always with the positions
/// last reported (never more than the caller confirmed).
#[derive(Debug)]
pub struct WalStream<'c> {
    conn: &'c mut ReplConnection,
    status: StandbyStatus,
    status_interval: Option<Duration>,
    last_sent: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// The end is known and not yet returned.
    EndPending(StreamEnd),
    Done,
}

/// The local clock as PostgreSQL counts time (sent in status updates).
fn pg_now() -> PgTimestamp {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    PgTimestamp::from_unix_micros(i64::try_from(now.as_micros()).unwrap_or(i64::MAX))
}

impl ReplConnection {
    /// `START_REPLICATION [SLOT s] PHYSICAL lsn [TIMELINE t]`. When the timeline asked for
    /// ends exactly at `start`, the stream is already at its end and yields only
    /// [`WalEvent::End`].
    pub async fn start_replication(
        &mut self,
        req: &StartReplication,
    ) -> Result<WalStream<'_>, ProtoError> {
        let what = "START_REPLICATION";
        let mut sql = String::from("START_REPLICATION");
        if let Some(slot) = &req.slot {
            validate_slot_name(slot)?;
            sql.push_str(" SLOT ");
            sql.push_str(slot);
        }
        sql.push_str(&format!(" PHYSICAL {}", req.start));
        if let Some(tli) = req.timeline {
            sql.push_str(&format!(" TIMELINE {}", tli.0));
        }
        self.send_query(what, &sql).await?;
        let mut stream = WalStream {
            conn: self,
            status: StandbyStatus::default(),
            status_interval: Some(DEFAULT_STATUS_INTERVAL),
            last_sent: Instant::now(),
            state: State::Streaming,
        };
        match stream.conn.recv(what).await? {
            Backend::CopyBothResponse => {
                stream.conn.in_copy = true;
                Ok(stream)
            }
            // A historic timeline that ends at `start`: no COPY, just the next timeline.
            Backend::RowDescription => {
                let mut sets = ResultSets::default();
                sets.push_set();
                let sets = stream.conn.read_results_into(what, sets).await?;
                let end = stream.conn.stream_end(&sets)?;
                stream.state = State::EndPending(end);
                Ok(stream)
            }
            Backend::Error(server) => {
                stream.conn.read_results(what).await?;
                Err(ProtoError::Query {
                    endpoint: stream.conn.endpoint().clone(),
                    what,
                    server,
                })
            }
            other => Err(stream.conn.unexpected(what, &other)),
        }
    }

    /// Interprets the result set that follows a stream: the next timeline when there is one.
    fn stream_end(&self, sets: &ResultSets) -> Result<StreamEnd, ProtoError> {
        let what = "START_REPLICATION";
        if sets.0.is_empty() {
            return Ok(StreamEnd::Stopped);
        }
        let row = self.one_row(sets, what)?;
        Ok(StreamEnd::TimelineEnd {
            next_timeline: TimelineId(self.parse_req(row, 0, what)?),
            next_start: self.parse_req(row, 1, what)?,
        })
    }
}

impl WalStream<'_> {
    /// The next event; `Ok(None)` after [`WalEvent::End`] was returned. Sends status updates
    /// on a keepalive that asks for one and when the status interval has passed.
    pub async fn next_event(&mut self) -> Result<Option<WalEvent>, ProtoError> {
        let what = "START_REPLICATION";
        loop {
            match self.state {
                State::Streaming => {}
                State::EndPending(end) => {
                    self.state = State::Done;
                    return Ok(Some(WalEvent::End(end)));
                }
                State::Done => return Ok(None),
            }
            let msg = match self.status_interval {
                Some(interval) => {
                    let due = self.last_sent + interval;
                    match tokio::time::timeout_at(due, self.conn.recv(what)).await {
                        Ok(m) => m?,
                        Err(_) => {
                            self.send_current(false).await?;
                            continue;
                        }
                    }
                }
                None => self.conn.recv(what).await?,
            };
            match msg {
                Backend::CopyData(payload) => return self.copy_data(payload).await.map(Some),
                Backend::CopyDone => {
                    // The server is done sending (end of a historic timeline, or shutdown):
                    // acknowledge, then read what follows.
                    frontend::copy_done(self.conn.wbuf());
                    self.conn.flush().await?;
                    let end = self.finish().await?;
                    self.state = State::Done;
                    return Ok(Some(WalEvent::End(end)));
                }
                Backend::Error(server) => {
                    self.state = State::Done;
                    return Err(ProtoError::Query {
                        endpoint: self.conn.endpoint().clone(),
                        what,
                        server,
                    });
                }
                other => return Err(self.conn.unexpected(what, &other)),
            }
        }
    }

    async fn copy_data(&mut self, payload: Bytes) -> Result<WalEvent, ProtoError> {
        let what = "START_REPLICATION";
        let bad = |conn: &ReplConnection, kind: &str| {
            conn.protocol(
                what,
                &format!("truncated {kind} message ({} bytes)", payload.len()),
            )
        };
        match payload.first() {
            Some(b'w') => {
                let (Some(start), Some(end), Some(time)) = (
                    be_u64(&payload, 1),
                    be_u64(&payload, 9),
                    be_u64(&payload, 17),
                ) else {
                    return Err(bad(self.conn, "XLogData"));
                };
                Ok(WalEvent::Data(XLogData {
                    start: Lsn(start),
                    wal_end: Lsn(end),
                    server_time: PgTimestamp(time as i64),
                    data: payload.slice(25..),
                }))
            }
            Some(b'k') => {
                let (Some(end), Some(time), Some(&reply)) =
                    (be_u64(&payload, 1), be_u64(&payload, 9), payload.get(17))
                else {
                    return Err(bad(self.conn, "keepalive"));
                };
                let reply_requested = reply != 0;
                if reply_requested {
                    self.send_current(false).await?;
                }
                Ok(WalEvent::Keepalive(Keepalive {
                    wal_end: Lsn(end),
                    server_time: PgTimestamp(time as i64),
                    reply_requested,
                }))
            }
            other => Err(self.conn.protocol(
                what,
                &format!(
                    "unknown streaming message type {:?}",
                    other.map(|&b| b as char)
                ),
            )),
        }
    }

    /// Reports positions to the server now (and remembers them for automatic updates). With
    /// `reply_requested`, the server answers with a keepalive.
    pub async fn send_status(
        &mut self,
        status: StandbyStatus,
        reply_requested: bool,
    ) -> Result<(), ProtoError> {
        self.status = status;
        self.send_current(reply_requested).await
    }

    /// Changes the positions the next automatic status update (on the server's request or
    /// the interval) reports, without sending one now.
    pub fn set_status(&mut self, status: StandbyStatus) {
        self.status = status;
    }

    /// The positions last reported.
    pub fn status(&self) -> StandbyStatus {
        self.status
    }

    /// How often positions are re-sent when nothing else triggers an update (`None`: never).
    pub fn set_status_interval(&mut self, interval: Option<Duration>) {
        self.status_interval = interval;
    }

    async fn send_current(&mut self, reply_requested: bool) -> Result<(), ProtoError> {
        if self.state != State::Streaming {
            return Ok(());
        }
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(self.status.write.0);
        msg.put_u64(self.status.flush.0);
        msg.put_u64(self.status.apply.0);
        msg.put_i64(pg_now().0);
        msg.put_u8(u8::from(reply_requested));
        let copy = frontend::CopyData::new(&msg[..])
            .map_err(|e| self.conn.connection_error("standby status update", &e))?;
        copy.write(self.conn.wbuf());
        self.conn.flush().await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Ends the stream from our side: sends `CopyDone`, discards WAL still in flight, and
    /// returns how the stream ended (a timeline end may have crossed our request).
    pub async fn stop(mut self) -> Result<StreamEnd, ProtoError> {
        let what = "START_REPLICATION";
        match self.state {
            State::EndPending(end) => return Ok(end),
            State::Done => return Ok(StreamEnd::Stopped),
            State::Streaming => {}
        }
        frontend::copy_done(self.conn.wbuf());
        self.conn.flush().await?;
        loop {
            match self.conn.recv(what).await? {
                Backend::CopyData(_) => {}
                Backend::CopyDone => break,
                Backend::Error(server) => {
                    return Err(ProtoError::Query {
                        endpoint: self.conn.endpoint().clone(),
                        what,
                        server,
                    })
                }
                other => return Err(self.conn.unexpected(what, &other)),
            }
        }
        let end = self.finish().await?;
        self.state = State::Done;
        Ok(end)
    }

    /// After both sides sent `CopyDone`: the optional next-timeline row, `CommandComplete`,
    /// `ReadyForQuery`.
    async fn finish(&mut self) -> Result<StreamEnd, ProtoError> {
        let sets = self.conn.read_results("START_REPLICATION").await?;
        self.conn.in_copy = false;
        self.conn.stream_end(&sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_carry_the_local_clock_in_postgres_time() {
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let now = pg_now().to_unix_micros();
        assert!((now - before).abs() < 5_000_000, "{now} vs {before}");
        // 2000-01-01 is PostgreSQL's zero.
        assert_eq!(PgTimestamp(0).to_unix_micros(), 946_684_800_000_000);
    }
}
