//! Is a PostgreSQL server running on a data directory? Read `postmaster.pid`, check its
//! process through `/proc`.
//!
//! A `postmaster.pid` left behind by a crashed server names a process that is gone: that is
//! not a running server (PostgreSQL itself removes such a stale file at the next start).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What `postmaster.pid` says (the lines pitr needs: 1 pid, 4 port, 5 first socket directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// The postmaster's process ID.
    pub pid: u32,
    /// The port it listens on.
    pub port: Option<u16>,
    /// Its first Unix socket directory (absent when it listens on TCP only).
    pub socket_dir: Option<PathBuf>,
}

impl PidFile {
    /// Parses the text of a `postmaster.pid`; `None` when its first line is not a pid.
    pub fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = lines.first()?.trim().parse().ok()?;
        Some(PidFile {
            pid,
            port: lines.get(3).and_then(|p| p.trim().parse().ok()),
            socket_dir: lines
                .get(4)
                .map(|d| d.trim())
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from),
        })
    }

    /// Reads `<pgdata>/postmaster.pid`; an `InvalidData` error when it names no pid.
    pub fn read(pgdata: &Path) -> io::Result<PidFile> {
        let path = pgdata.join("postmaster.pid");
        let text = fs::read_to_string(&path)?;
        PidFile::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not start with a process ID", path.display()),
            )
        })
    }

    /// Whether the process it names exists.
    pub fn is_alive(&self) -> bool {
        Path::new("/proc").join(self.pid.to_string()).exists()
    }
}

/// The postmaster's pid when a server runs on `pgdata`: its `postmaster.pid` names a process
/// that exists. `None` without a pid file, with an unreadable one, or with a stale one.
pub fn running_postmaster(pgdata: &Path) -> Option<u32> {
    let pf = PidFile::read(pgdata).ok()?;
    pf.is_alive().then_some(pf.pid)
}

/// The running server whose data directory links `dir` as a tablespace (`pg_tblspc/<oid>`), as
/// (postmaster pid, data directory).
///
/// Servers are found through `/proc`: a postmaster works in its data directory, whose
/// `postmaster.pid` names it. Only processes this user may inspect are seen (all of them as
/// root, the user's own otherwise, which covers the usual `postgres` user).
pub fn server_using_tablespace(dir: &Path) -> Option<(u32, PathBuf)> {
    let dir = dir.canonicalize().ok()?;
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        if running_postmaster(&cwd) != Some(pid) {
            continue;
        }
        let Ok(links) = fs::read_dir(cwd.join("pg_tblspc")) else {
            continue;
        };
        for l in links.flatten() {
            if l.path().canonicalize().is_ok_and(|t| t == dir) {
                return Some((pid, cwd));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn pid_file(dir: &Path, text: &str) {
        fs::write(dir.join("postmaster.pid"), text).unwrap();
    }

    #[test]
    fn parses_the_lines_pitr_reads() {
        let pf = PidFile::parse(
            "4242\n/srv/pg/data\n1752160612\n5433\n/var/run/postgresql\n*\n  5432001  32768\nready   \n",
        )
        .unwrap();
        assert_eq!(
            pf,
            PidFile {
                pid: 4242,
                port: Some(5433),
                socket_dir: Some(PathBuf::from("/var/run/postgresql")),
            }
        );
        // TCP only: the socket line is empty.
        let tcp = PidFile::parse("4242\n/d\n1\n5432\n\n").unwrap();
        assert_eq!(tcp.socket_dir, None);
        assert_eq!(PidFile::parse(""), None);
        assert_eq!(PidFile::parse("not a pid\n"), None);
    }

    #[test]
    fn a_live_postmaster_pid_is_a_running_server() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(running_postmaster(d.path()), None, "no pid file");
        // A process that is alive for the whole test.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        pid_file(
            d.path(),
            &format!("{}\n{}\n", child.id(), d.path().display()),
        );
        let seen = running_postmaster(d.path());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen, Some(child.id()));
    }

    #[test]
    fn a_pid_file_left_by_a_crash_is_not_a_running_server() {
        let d = tempfile::tempdir().unwrap();
        // A process that existed and is gone (reaped), as a crashed postmaster is.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid_file(d.path(), &format!("{pid}\n{}\n", d.path().display()));
        assert!(!PidFile::read(d.path()).unwrap().is_alive());
        assert_eq!(running_postmaster(d.path()), None);
        pid_file(d.path(), "garbage\n");
        assert_eq!(running_postmaster(d.path()), None);
        assert_eq!(
            PidFile::read(d.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_directory_no_server_links_is_not_in_use() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(server_using_tablespace(d.path()), None);
        assert_eq!(server_using_tablespace(&d.path().join("missing")), None);
    }
}
