//! The end of WAL versus corruption: after an invalid record or page, the following pages of
//! the segment (and the first page of the next one) decide. A valid page at its expected
//! address means WAL went on after the bad spot (corruption); none means the WAL ends there.

use crate::Lsn;

use super::super::error::{EndOfWal, EndReason, WalError};
use super::{Core, State, Window};

impl Core {
    /// Marks the spot at `self.next` invalid with `err`; pages from `scan_from` on (rounded
    /// up to a page boundary) will decide between the end of WAL and corruption.
    pub(super) fn suspect(&mut self, err: WalError, scan_from: u64) {
        let Some(s) = self.stream else {
            self.state = State::Failed(err);
            return;
        };
        let at = self.next;
        let seg_end = (at / s.seg_size)
            .saturating_add(1)
            .saturating_mul(s.seg_size);
        // Round the scan start up to a page boundary.
        let scan = scan_from.div_ceil(s.blcksz).saturating_mul(s.blcksz);
        self.state = State::Suspect {
            err,
            at,
            scan,
            scan_end: seg_end.saturating_add(s.blcksz),
        };
        self.need = 0;
    }

    /// Examines pages after an invalid spot. Returns true once decided (state changed).
    pub(super) fn scan(&mut self, w: Window<'_>) -> bool {
        let State::Suspect {
            err,
            at,
            scan,
            scan_end,
        } = self.state.clone()
        else {
            return true;
        };
        let Some(s) = self.stream else {
            self.state = State::Failed(err);
            return true;
        };
        let mut page = scan;
        let end_here = |st: &mut State| {
            *st = State::Ended(EndOfWal {
                lsn: Lsn(at),
                reason: EndReason::Invalid(err.clone()),
            });
        };
        loop {
            if page >= scan_end {
                end_here(&mut self.state);
                return true;
            }
            self.discard_to(page, w);
            let found = if self.pos == page {
                self.check_page(&s, page, w.from(page))
            } else {
                Ok(None)
            };
            match found {
                // A valid page after the bad spot: WAL went on, so this is corruption.
                Ok(Some(_)) => {
                    self.state = State::Failed(err);
                    return true;
                }
                Ok(None) if self.finished => {
                    end_here(&mut self.state);
                    return true;
                }
                Ok(None) => {
                    self.state = State::Suspect {
                        err,
                        at,
                        scan: page,
                        scan_end,
                    };
                    return false;
                }
                Err(_) => page += s.blcksz,
            }
        }
    }

    /// The input ended where more was needed: the end of WAL, at a segment boundary or not.
    pub(super) fn end_of_input(&mut self, w: Window<'_>) {
        let Some(s) = self.stream else {
            self.state = State::Ended(EndOfWal {
                lsn: Lsn::INVALID,
                reason: EndReason::InputEnded,
            });
            return;
        };
        let input_end = w.end().max(self.pos);
        let reason = if input_end % s.seg_size == 0 {
            EndReason::InputEnded
        } else {
            EndReason::Truncated {
                input_end: Lsn(input_end),
            }
        };
        self.state = State::Ended(EndOfWal {
            lsn: Lsn(self.next),
            reason,
        });
    }
}
