//! `restore --start`: the port the started server will listen on must be free, checked before
//! anything starts (otherwise PostgreSQL fails with "could not bind" and the restore looks like
//! a failed recovery).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::start::StartError;

/// PostgreSQL's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// Where a server started on a data directory will listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The port.
    pub port: u16,
    /// Whether it was given with `-p` (else it comes from the configuration).
    pub given: bool,
    /// Whether it listens on TCP (`listen_addresses` not empty).
    pub tcp: bool,
    /// Its Unix socket directories.
    pub socket_dirs: Vec<PathBuf>,
}

/// The listening settings of `pgdata`'s configuration (`postgresql.auto.conf` over
/// `postgresql.conf`, the last setting winning), with `given` (`-p`) over its port.
pub fn listen_settings(pgdata: &Path, given: Option<u16>) -> Listen {
    let files = [
        pgdata.join("postgresql.conf"),
        pgdata.join("postgresql.auto.conf"),
    ];
    let texts: Vec<String> = files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .collect();
    let setting = |name: &str| texts.iter().filter_map(|t| conf_value(t, name)).next_back();
    let socket_dirs = match setting("unix_socket_directories") {
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && !d.starts_with('@'))
            .map(|d| pgdata.join(d))
            .collect(),
        // Compiled-in defaults differ: Debian's, and upstream's.
        None => vec![PathBuf::from("/var/run/postgresql"), PathBuf::from("/tmp")],
    };
    Listen {
        port: given
            .or_else(|| setting("port").and_then(|p| p.parse().ok()))
            .unwrap_or(DEFAULT_PORT),
        given: given.is_some(),
        tcp: setting("listen_addresses").is_none_or(|v| !v.trim().is_empty()),
        socket_dirs,
    }
}

/// The port a server started on `pgdata` listens on: `given` (`-p`), else the configuration's,
/// else 5432.
pub fn effective_port(pgdata: &Path, given: Option<u16>) -> u16 {
    listen_settings(pgdata, given).port
}

/// The last `name = value` in a configuration file's text, unquoted.
fn conf_value(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (k, v) = l
                .split_once('=')
                .or_else(|| l.split_once(char::is_whitespace))?;
            (k.trim() == name).then(|| v.trim().trim_matches('\'').to_string())
        })
        .next_back()
}

/// Refuses to start where a server already listens: the TCP port (on the loopback address,
/// which a server on localhost or on every address also holds), or a live socket
/// `.s.PGSQL.<port>` in one of the socket directories.
pub fn ensure_free(l: &Listen) -> Result<(), StartError> {
    let in_use = (l.tcp && tcp_taken(l.port))
        || l.socket_dirs
            .iter()
            .any(|d| UnixStream::connect(d.join(format!(".s.PGSQL.{}", l.port))).is_ok());
    if in_use {
        return Err(StartError::PortInUse {
            port: l.port,
            given: l.given,
        });
    }
    Ok(())
}

/// Refuses a port something already listens on, before anything is restored (the restored
/// configuration is not known yet: TCP on the loopback and the usual socket directories).
pub fn ensure_port_free(port: u16, given: bool) -> Result<(), StartError> {
    ensure_free(&Listen {
        port,
        given,
        tcp: true,
        socket_dirs: vec![PathBuf::from("/var/run/postgresql"), PathBuf::from("/tmp")],
    })
}

fn tcp_taken(port: u16) -> bool {
    // Anything but "in use" (no IPv4 loopback, permissions) is for PostgreSQL to report.
    matches!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_port_setting_wins_and_auto_conf_overrides() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = |n: &str, t: &str| fs::write(d.path().join(n), t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(effective_port(d.path(), None), 5432);
        w(
            "postgresql.conf",
            "#port = 1\nport = 5433 # here\nport=5434\n",
        );
        assert_eq!(effective_port(d.path(), None), 5434);
        w("postgresql.auto.conf", "port = '6000'\n");
        assert_eq!(effective_port(d.path(), None), 6000);
        assert_eq!(effective_port(d.path(), Some(7000)), 7000);
    }

    #[test]
    fn a_port_in_use_is_refused_with_the_hint() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("{e}"));
        let port = l
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let e = ensure_port_free(port, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(&port.to_string()) && e.contains("-p"), "{e}");
        drop(l);
        assert!(ensure_port_free(port, false).is_ok());
    }

    #[test]
    fn a_live_socket_is_in_use_and_tcp_only_counts_when_listened_on() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = 6543\n",
            d.path().display()
        );
        fs::write(d.path().join("postgresql.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        let l = listen_settings(d.path(), None);
        assert!(
            !l.tcp && l.port == 6543 && l.socket_dirs == vec![d.path().to_path_buf()],
            "{l:?}"
        );
        assert!(ensure_free(&l).is_ok());
        let sock = std::os::unix::net::UnixListener::bind(d.path().join(".s.PGSQL.6543"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ensure_free(&l).is_err());
        drop(sock);
    }
}
