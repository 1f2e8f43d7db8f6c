//! Nothing left running: an undo's scratch server is stopped by a guard process when `pitr`
//! dies (kill -9 included) and, failing that, by the next `pitr undo`, which also removes the
//! scratch directories of runs that died.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::restore::start::as_owner;
use crate::restore::OsUser;

/// Scratch directories of `pitr undo` are `<parent>/pitr-undo-<time>-<pid>`.
pub const PREFIX: &str = "pitr-undo";

/// Starts a guard: a shell, detached from pitr's output, that waits for this process to end and
/// then stops the scratch server (immediate mode). When pitr ends normally the server is already
/// stopped and the guard's `pg_ctl` finds nothing to do.
pub fn spawn(pg_ctl: &Path, pgdata: &Path, owner: Option<&OsUser>) -> Result<(), String> {
    let script = "while [ -d \"/proc/$1\" ]; do sleep 1; done; \
                  [ -f \"$3/postmaster.pid\" ] && exec \"$2\" -D \"$3\" -m immediate -w stop";
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script, "pitr-undo-guard"])
        .arg(std::process::id().to_string())
        .arg(pg_ctl)
        .arg(pgdata)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_owner(&mut cmd, owner);
    cmd.spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the guard of the scratch server: {e}"))
}

/// Scratch directories under `parent` left by `pitr undo` runs that are gone: their server is
/// stopped (immediate) and the directory removed. Returns the directories removed.
pub fn clean_stale(parent: &Path, pg_bin: Option<&Path>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = stale_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let pgdata = dir.join("pgdata");
        if pitr_os::running_postmaster(&pgdata).is_some() {
            stop_immediate(&pgdata, pg_bin);
        }
        if pitr_os::running_postmaster(&pgdata).is_some() {
            tracing::warn!(
                "the scratch server in {} still runs; left in place",
                pgdata.display()
            );
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
        }
    }
    removed
}

/// The pid in `pitr-undo-<time>-<pid>`.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let (_, pid) = rest.split_once('-')?;
    pid.parse().ok()
}

/// `pg_ctl stop -m immediate` as the data directory's owner, with the version it holds.
fn stop_immediate(pgdata: &Path, pg_bin: Option<&Path>) {
    use std::os::unix::fs::MetadataExt as _;
    let major = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let Ok(bindir) = crate::pgbin::find_pg_bin(pg_bin, major, &["pg_ctl"]) else {
        return;
    };
    let owner: Option<OsUser> = if pitr_os::is_root() {
        std::fs::metadata(pgdata)
            .ok()
            .and_then(|m| pitr_os::user_by_uid(m.uid()).ok().flatten())
            .map(OsUser::from)
    } else {
        None
    };
    let mut cmd = Command::new(bindir.join("pg_ctl"));
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-m", "immediate", "-w", "stop"])
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_owner(&mut cmd, owner.as_ref());
    let _ = cmd.status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_directories_are_named_with_their_pid() {
        assert_eq!(stale_pid("pitr-undo-1764000000-4242"), Some(4242));
        assert_eq!(stale_pid("pitr-drill-1764000000-4242"), None);
        assert_eq!(stale_pid("pitr-undo-x"), None);
    }
}
