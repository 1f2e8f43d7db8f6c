//! Sessions: a detached helper process leaves its parent's session.

use std::io;

/// Makes this process the leader of a new session (and process group) with no controlling
/// terminal: a detached helper (pitr's push-ahead worker) then gets neither the signals sent to
/// the group of the process that started it (PostgreSQL's archiver) nor a share of that
/// session's CPU under the kernel's autogroup scheduling (it gets a share of its own, as
/// pgBackRest's detached async process does). Fails (`EPERM`) when this process already leads
/// a process group.
pub fn new_session() -> io::Result<()> {
    nix::unistd::setsid()
        .map(|_| ())
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}
