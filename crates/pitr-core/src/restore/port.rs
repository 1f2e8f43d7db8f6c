//! `restore --start`: the port the started server will listen on must be free, checked before
//! anything starts (otherwise PostgreSQL fails with "could not bind" and the restore looks like
//! a failed recovery).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use super::start::StartError;

/// PostgreSQL's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// The port a server started on `pgdata` listens on: `given` (`-p`), else the last `port`
/// setting of `postgresql.auto.conf`, then `postgresql.conf`, else 5432.
pub fn effective_port(pgdata: &Path, given: Option<u16>) -> u16 {
    given
        .or_else(|| conf_port(&pgdata.join("postgresql.auto.conf")))
        .or_else(|| conf_port(&pgdata.join("postgresql.conf")))
        .unwrap_or(DEFAULT_PORT)
}

/// The last `port = N` in a configuration file.
fn conf_port(path: &Path) -> Option<u16> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (k, v) = l
                .split_once('=')
                .or_else(|| l.split_once(char::is_whitespace))?;
            (k.trim() == "port").then(|| v.trim().trim_matches('\'').parse().ok())?
        })
        .last()
}

/// Refuses a port something already listens on (on the loopback address, where a server
/// listening on localhost or on every address also holds it).
pub fn ensure_port_free(port: u16, given: bool) -> Result<(), StartError> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(StartError::PortInUse { port, given })
        }
        // Anything else (no IPv4 loopback, permissions) is for PostgreSQL to report.
        Err(_) => Ok(()),
    }
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
}
