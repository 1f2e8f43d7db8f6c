//! The state machine that drives the stages: page headers, records, the end-of-WAL decision.

use crate::{Lsn, TimelineId};

use super::super::error::{EndOfWal, EndReason, WalError};
use super::super::record::Record;
use super::{Core, Decoded, RawLoc, State, Step, Window};

impl Core {
    /// A state machine for a stream that starts at the beginning of a segment.
    pub(super) fn new() -> Core {
        Core {
            pos: 0,
            finished: false,
            stream: None,
            next: 0,
            prev_rec: None,
            last_tli: 0,
            skip_cont: true,
            need: 0,
            resume: None,
            state: State::Running,
            rec_buf: Vec::new(),
            frags: Vec::new(),
            blocks: Vec::new(),
            records: 0,
        }
    }

    /// True once decoding has ended or failed.
    pub(super) fn stopped(&self) -> bool {
        matches!(self.state, State::Ended(_) | State::Failed(_))
    }

    /// The record `d`, borrowing its bytes from `w` or from the reassembly buffer.
    pub(super) fn record<'a>(&'a self, w: Window<'a>, d: Decoded) -> Record<'a> {
        let raw: &[u8] = match d.loc {
            RawLoc::Input { len } => w.from(d.lsn).get(..len).unwrap_or(&[]),
            RawLoc::Assembled => &self.rec_buf,
        };
        Record::from_parts(
            Lsn(d.lsn),
            Lsn(d.end),
            d.header,
            d.version,
            TimelineId(d.tli),
            raw,
            &self.blocks,
            d.body,
            d.fmt,
        )
    }

    /// Runs the state machine on `w` until a record, the need for more input, or the end.
    pub(super) fn run(&mut self, w: Window<'_>) -> Result<Option<Decoded>, WalError> {
        let mut w = w;
        loop {
            match &self.state {
                State::Running => {}
                State::Ended(_) => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
                State::Suspect { .. } => {
                    if self.scan(w) {
                        continue;
                    }
                    return Ok(None);
                }
            }
            if self.stream.is_none() {
                match self.start(w.bytes) {
                    Ok(Some(start)) => w.base = start,
                    Ok(None) => {
                        if self.finished {
                            self.state = State::Ended(EndOfWal {
                                lsn: Lsn::INVALID,
                                reason: EndReason::InputEnded,
                            });
                            continue;
                        }
                        return Ok(None);
                    }
                    Err(e) => {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
            match self.step(w) {
                Step::Continue => {}
                Step::NeedData => {
                    if !self.finished {
                        return Ok(None);
                    }
                    self.end_of_input(w);
                }
                Step::Invalid(err, scan_from) => {
                    let first_page = self.stream.is_some_and(|s| err.lsn().0 == s.start);
                    if err.is_hard() || (first_page && self.records == 0) {
                        self.state = State::Failed(err.clone());
                        return Err(err);
                    }
                    self.suspect(err, scan_from);
                }
                Step::Record(d) => {
                    self.records += 1;
                    return Ok(Some(d));
                }
            }
        }
    }

    /// One move forward from `self.next`: past a page header, or over one record.
    fn step(&mut self, w: Window<'_>) -> Step {
        let Some(s) = self.stream else {
            return Step::NeedData;
        };
        self.discard_to(self.next, w);
        if self.pos < self.next {
            return Step::NeedData;
        }
        if self.need > 0 && (w.from(self.next).len() as u64) < self.need {
            return Step::NeedData;
        }
        if self.next % s.blcksz == 0 {
            self.at_page_start(&s, w)
        } else {
            self.at_record(&s, w)
        }
    }
}
