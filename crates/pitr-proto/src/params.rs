//! Connection parameters with psql's semantics: flags, then `PG*` environment variables, then
//! libpq's defaults; passwords from the flag, `PGPASSWORD`, or the password file.
//!
//! Resolution is pure ([`ConnParams::resolve`] takes the environment as a [`ConnEnv`] value,
//! [`pgpass_lookup`] takes the file's text); only [`ConnEnv::from_process`] and
//! [`read_pgpass`] touch the process and the file system.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tls::{SslMode, TlsSettings};
use crate::ProtoError;

/// PostgreSQL's default port.
pub const DEFAULT_PORT: u16 = 5432;
/// Socket directories tried, in order, when no host is given: Debian's packages use the
/// first, upstream builds (and the PyPI wheels) the second.
pub const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];
/// `application_name` pitr reports, visible in `pg_stat_activity`.
pub const DEFAULT_APPLICATION_NAME: &str = "pitr";
/// How long one connection attempt may take when neither a flag nor `PGCONNECT_TIMEOUT` says
/// otherwise (libpq would wait forever; a backup tool run by cron should not).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A Unix-domain socket directory (a host starting with `/`).
    Socket(PathBuf),
    /// A TCP host name or address.
    Tcp(String),
}

/// One address to try: a host and a port (for sockets, the port names the socket file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host or socket directory.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// The host as the password file matches it: `localhost` for the default socket
    /// directories (as libpq does), the directory for other sockets, else the host name.
    pub fn pgpass_host(&self) -> String {
        match &self.host {
            Host::Socket(dir) if DEFAULT_SOCKET_DIRS.iter().any(|d| Path::new(d) == dir) => {
                "localhost".to_string()
            }
            Host::Socket(dir) => dir.display().to_string(),
            Host::Tcp(h) => h.clone(),
        }
    }
}

impl fmt::Display for Endpoint {
    /// `socket /tmp/.s.PGSQL.5432` or `db1.example.com:5432` (`[::1]:5432` for IPv6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Socket(dir) => write!(
                f,
                "socket \"{}\"",
                dir.join(format!(".s.PGSQL.{}", self.port)).display()
            ),
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Host::Tcp(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

/// What the user asked for (`-h`, `-p`, `-U`, `-d`, ...); `None` falls back to the
/// environment and then to libpq's defaults.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnParams {
    /// `-h/--host`: host name, or a socket directory when it starts with `/`.
    pub host: Option<String>,
    /// `-p/--port`.
    pub port: Option<u16>,
    /// `-U/--user`.
    pub user: Option<String>,
    /// `-d/--dbname`.
    pub dbname: Option<String>,
    /// A password given explicitly (otherwise `PGPASSWORD`, then the password file).
    pub password: Option<String>,
    /// Overrides `application_name` (default `pitr`).
    pub application_name: Option<String>,
    /// Overrides the connect timeout (otherwise `PGCONNECT_TIMEOUT`, then 30 s).
    pub connect_timeout: Option<Duration>,
    /// Overrides `sslmode` (otherwise `PGSSLMODE`, then `prefer`).
    pub sslmode: Option<SslMode>,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

/// The environment connection parameters are resolved against, passed in as a value so that
/// resolution stays pure and testable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnEnv {
    /// Environment variables (only `PG*` ones are read).
    pub vars: HashMap<String, String>,
    /// The OS user name: the default database user.
    pub os_user: Option<String>,
    /// The home directory: where `.pgpass` is looked for.
    pub home: Option<PathBuf>,
}

impl fmt::Debug for ConnEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.vars.keys().collect();
        keys.sort();
        f.debug_struct("ConnEnv")
            .field("vars", &keys)
            .field("os_user", &self.os_user)
            .field("home", &self.home)
            .finish()
    }
}

impl ConnEnv {
    /// The current process's `PG*` variables, effective user name and home directory (from
    /// `HOME`, else the password database).
    pub fn from_process() -> ConnEnv {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PG"))
            .collect();
        let passwd = current_passwd_entry();
        let os_user = passwd
            .as_ref()
            .map(|(name, _)| name.clone())
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .filter(|s| !s.is_empty());
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| passwd.map(|(_, home)| home));
        ConnEnv {
            vars,
            os_user,
            home,
        }
    }

    /// A variable's value; empty counts as unset, as in libpq.
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The effective user's name and home from the password database (NSS).
fn current_passwd_entry() -> Option<(String, PathBuf)> {
    pitr_os::effective_user()
        .ok()
        .flatten()
        .map(|u| (u.name, u.home))
}

/// Connection settings after flags, environment and defaults were applied.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedConn {
    /// Addresses to try, in order (two socket directories when no host was given).
    pub endpoints: Vec<Endpoint>,
    /// Database user.
    pub user: String,
    /// Database.
    pub dbname: String,
    /// Password from the flag or `PGPASSWORD`; else the password file is consulted.
    pub password: Option<String>,
    /// The password file: `PGPASSFILE`, else `~/.pgpass`.
    pub passfile: Option<PathBuf>,
    /// `application_name`.
    pub application_name: String,
    /// Timeout per connection attempt; `None` waits forever (`PGCONNECT_TIMEOUT=0`).
    pub connect_timeout: Option<Duration>,
    /// `sslmode` and the root certificate (used over TCP only).
    pub tls: TlsSettings,
}

impl fmt::Debug for ResolvedConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedConn")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("passfile", &self.passfile)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnParams {
    /// Applies the environment and libpq's defaults: host `PGHOST` (default: the sockets in
    /// [`DEFAULT_SOCKET_DIRS`]), port `PGPORT` (5432), user `PGUSER` (the OS user),
    /// database `PGDATABASE` (the user name), password `PGPASSWORD` (else the password file,
    /// `PGPASSFILE` or `~/.pgpass`), timeout `PGCONNECT_TIMEOUT` (30 s).
    pub fn resolve(&self, env: &ConnEnv) -> Result<ResolvedConn, ProtoError> {
        let port = match (self.port, env.var("PGPORT")) {
            (Some(0), _) => {
                return Err(ProtoError::InvalidPort {
                    value: "0".into(),
                    origin: "-p/--port",
                })
            }
            (Some(p), _) => p,
            (None, Some(v)) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(ProtoError::InvalidPort {
                        value: v.to_string(),
                        origin: "PGPORT",
                    })
                }
            },
            (None, None) => DEFAULT_PORT,
        };
        let host = self
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .or_else(|| env.var("PGHOST"));
        let endpoints = match host {
            Some(h) if h.starts_with('/') => vec![Endpoint {
                host: Host::Socket(PathBuf::from(h)),
                port,
            }],
            Some(h) => vec![Endpoint {
                host: Host::Tcp(h.to_string()),
                port,
            }],
            None => DEFAULT_SOCKET_DIRS
                .iter()
                .map(|d| Endpoint {
                    host: Host::Socket(PathBuf::from(d)),
                    port,
                })
                .collect(),
        };
        let user = self
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| env.var("PGUSER").map(str::to_string))
            .or_else(|| env.os_user.clone())
            .ok_or(ProtoError::NoUser)?;
        let dbname = self
            .dbname
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| env.var("PGDATABASE").map(str::to_string))
            .unwrap_or_else(|| user.clone());
        let password = self
            .password
            .clone()
            .or_else(|| env.var("PGPASSWORD").map(str::to_string));
        let passfile = env
            .var("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")));
        let connect_timeout = match (self.connect_timeout, env.var("PGCONNECT_TIMEOUT")) {
            (Some(t), _) => Some(t),
            (None, Some(v)) => match v.trim().parse::<i64>() {
                // As libpq: zero or negative waits forever, and less than 2 s counts as 2 s.
                Ok(s) if s <= 0 => None,
                Ok(s) => Some(Duration::from_secs(s.max(2) as u64)),
                Err(_) => {
                    return Err(ProtoError::InvalidConnectTimeout {
                        value: v.to_string(),
                    })
                }
            },
            (None, None) => Some(DEFAULT_CONNECT_TIMEOUT),
        };
        Ok(ResolvedConn {
            endpoints,
            user,
            dbname,
            password,
            passfile,
            application_name: self
                .application_name
                .clone()
                .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string()),
            connect_timeout,
            tls: TlsSettings::resolve(self.sslmode, env)?,
        })
    }
}

impl ResolvedConn {
    /// The tokio-postgres configuration for one endpoint, with `password` if one is known.
    pub fn config(&self, endpoint: &Endpoint, password: Option<&str>) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        match &endpoint.host {
            Host::Socket(dir) => c.host_path(dir),
            Host::Tcp(h) => c.host(h),
        };
        c.port(endpoint.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name);
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if let Some(p) = password {
            c.password(p);
        }
        // As libpq: no TLS on Unix sockets. tokio-postgres has no `allow` (plain first, TLS
        // on refusal): it stays plain.
        c.ssl_mode(match (&endpoint.host, self.tls.mode) {
            (Host::Socket(_), _) | (_, SslMode::Disable | SslMode::Allow) => {
                tokio_postgres::config::SslMode::Disable
            }
            (_, SslMode::Prefer) => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        c
    }
}

/// Matches one colon-terminated password-file field against `token` (libpq's
/// `pwdfMatchesString`): `*` alone matches anything, `\` makes the next character literal.
/// Returns the rest of the line after the field's `:` on a match.
fn match_field<'a>(field: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = field.strip_prefix("*:") {
        return Some(rest);
    }
    let mut want = token.chars().peekable();
    let mut it = field.char_indices();
    while let Some((i, c)) = it.next() {
        let (c, escaped) = if c == '\\' {
            match it.next() {
                Some((_, n)) => (n, true),
                None => return None,
            }
        } else {
            (c, false)
        };
        // An unescaped ':' ends the field once the token is used up (elsewhere it still
        // matches a ':' in the token, as in libpq).
        if c == ':' && !escaped && want.peek().is_none() {
            return field.get(i + 1..);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
    None
}

/// Finds the password for `endpoint`, `dbname` and `user` in the contents of a password
/// file, with libpq's rules: lines `host:port:database:user:password`, `#` comments, `*`
/// wildcards, `\:` and `\\` escapes, first match wins; sockets in the default directories
/// match `localhost`.
pub fn pgpass_lookup(
    contents: &str,
    endpoint: &Endpoint,
    dbname: &str,
    user: &str,
) -> Option<String> {
    if dbname.is_empty() || user.is_empty() {
        return None;
    }
    let host = endpoint.pgpass_host();
    let port = endpoint.port.to_string();
    for line in contents.split('\n') {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = match_field(line, &host)
            .and_then(|r| match_field(r, &port))
            .and_then(|r| match_field(r, dbname))
            .and_then(|r| match_field(r, user))
        else {
            continue;
        };
        // The password runs to the end of the line or an unescaped ':'.
        let mut password = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                ':' => break,
                '\\' => match chars.next() {
                    Some(n) => password.push(n),
                    None => password.push('\\'),
                },
                c => password.push(c),
            }
        }
        return Some(password);
    }
    None
}

/// What was found at the password file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pgpass {
    /// No file there.
    Missing,
    /// The file exists but libpq would not use it (the reason says why).
    Ignored(String),
    /// The file's contents.
    Contents(String),
}

/// True when a password file with these permission bits may be used: no group or other
/// access, like libpq requires (`0600` or stricter).
pub fn pgpass_mode_ok(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// Reads the password file at `path`, ignoring it (as libpq does) when it is not a regular
/// file or is accessible by group or others.
pub fn read_pgpass(path: &Path) -> Pgpass {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Pgpass::Missing,
    };
    if !meta.is_file() {
        return Pgpass::Ignored(format!(
            "password file \"{}\" is not a plain file",
            path.display()
        ));
    }
    if !pgpass_mode_ok(meta.permissions().mode()) {
        return Pgpass::Ignored(format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ));
    }
    match std::fs::read_to_string(path) {
        Ok(s) => Pgpass::Contents(s),
        Err(e) => Pgpass::Ignored(format!(
            "could not read password file \"{}\": {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ConnEnv {
        ConnEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            os_user: Some("alice".into()),
            home: Some("/home/alice".into()),
        }
    }

    fn socket(dir: &str, port: u16) -> Endpoint {
        Endpoint {
            host: Host::Socket(dir.into()),
            port,
        }
    }

    fn tcp(h: &str, port: u16) -> Endpoint {
        Endpoint {
            host: Host::Tcp(h.into()),
            port,
        }
    }

    #[test]
    fn defaults_follow_libpq() {
        let r = ConnParams::default().resolve(&env(&[])).unwrap();
        assert_eq!(
            r.endpoints,
            vec![socket("/var/run/postgresql", 5432), socket("/tmp", 5432)]
        );
        assert_eq!(r.user, "alice");
        assert_eq!(r.dbname, "alice");
        assert_eq!(r.password, None);
        assert_eq!(r.passfile, Some(PathBuf::from("/home/alice/.pgpass")));
        assert_eq!(r.application_name, "pitr");
        assert_eq!(r.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn environment_fills_what_flags_leave_out() {
        let e = env(&[
            ("PGHOST", "db1"),
            ("PGPORT", "5433"),
            ("PGUSER", "bob"),
            ("PGPASSWORD", "s3cret"),
            ("PGPASSFILE", "/etc/pitr/pgpass"),
            ("PGCONNECT_TIMEOUT", "1"),
        ]);
        let r = ConnParams::default().resolve(&e).unwrap();
        assert_eq!(r.endpoints, vec![tcp("db1", 5433)]);
        assert_eq!(r.user, "bob");
        assert_eq!(r.dbname, "bob", "the database defaults to the user");
        assert_eq!(r.password.as_deref(), Some("s3cret"));
        assert_eq!(r.passfile, Some(PathBuf::from("/etc/pitr/pgpass")));
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(2)));

        let flags = ConnParams {
            host: Some("/run/pg".into()),
            port: Some(6000),
            user: Some("carol".into()),
            dbname: Some("app".into()),
            ..ConnParams::default()
        };
        let r = flags.resolve(&e).unwrap();
        assert_eq!(r.endpoints, vec![socket("/run/pg", 6000)]);
        assert_eq!((r.user.as_str(), r.dbname.as_str()), ("carol", "app"));
        assert_eq!(
            r.endpoints[0].to_string(),
            "socket \"/run/pg/.s.PGSQL.6000\""
        );
    }

    #[test]
    fn empty_variables_count_as_unset_and_zero_timeout_waits_forever() {
        let e = env(&[("PGHOST", ""), ("PGUSER", ""), ("PGCONNECT_TIMEOUT", "0")]);
        let r = ConnParams::default().resolve(&e).unwrap();
        assert_eq!(r.endpoints.len(), 2);
        assert_eq!(r.user, "alice");
        assert_eq!(r.connect_timeout, None);
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let err = ConnParams::default()
            .resolve(&env(&[("PGPORT", "54x")]))
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::InvalidPort { ref value, origin: "PGPORT" } if value == "54x")
        );
        assert!(err.to_string().contains("\"54x\""));
        let err = ConnParams::default()
            .resolve(&env(&[("PGCONNECT_TIMEOUT", "soon")]))
            .unwrap_err();
        assert!(matches!(err, ProtoError::InvalidConnectTimeout { .. }));
        let nobody = ConnEnv::default();
        assert!(matches!(
            ConnParams::default().resolve(&nobody),
            Err(ProtoError::NoUser)
        ));
    }

    #[test]
    fn endpoints_print_for_messages() {
        assert_eq!(tcp("db1", 5432).to_string(), "db1:5432");
        assert_eq!(tcp("::1", 5432).to_string(), "[::1]:5432");
        assert_eq!(socket("/tmp", 5432).pgpass_host(), "localhost");
        assert_eq!(socket("/run/x", 5432).pgpass_host(), "/run/x");
    }

    #[test]
    fn pgpass_matches_like_libpq() {
        let file = "\
# comment: *:*:*:*:nope
db1:5432:app:bob:first
db1:*:*:bob:second
*:5433:*:*:any\\:thing\\\\
localhost:5432:*:alice:local
/run/pg:5432:*:alice:sock
db\\:odd:5432:*:*:escaped
db2:5432:app:bob:trailing:ignored\r
";
        let look = |e: &Endpoint, db: &str, user: &str| pgpass_lookup(file, e, db, user);
        assert_eq!(
            look(&tcp("db1", 5432), "app", "bob").as_deref(),
            Some("first")
        );
        assert_eq!(
            look(&tcp("db1", 5432), "other", "bob").as_deref(),
            Some("second")
        );
        assert_eq!(
            look(&tcp("db1", 6000), "app", "bob").as_deref(),
            Some("second")
        );
        assert_eq!(
            look(&tcp("x", 5433), "a", "z").as_deref(),
            Some("any:thing\\")
        );
        assert_eq!(
            look(&socket("/tmp", 5432), "postgres", "alice").as_deref(),
            Some("local")
        );
        assert_eq!(
            look(&socket("/var/run/postgresql", 5432), "d", "alice").as_deref(),
            Some("local")
        );
        assert_eq!(
            look(&socket("/run/pg", 5432), "d", "alice").as_deref(),
            Some("sock")
        );
        assert_eq!(
            look(&tcp("db:odd", 5432), "d", "u").as_deref(),
            Some("escaped")
        );
        assert_eq!(
            look(&tcp("db2", 5432), "app", "bob").as_deref(),
            Some("trailing")
        );
        assert_eq!(look(&tcp("db3", 5432), "app", "bob"), None);
        assert_eq!(look(&tcp("db1", 5432), "", "bob"), None);
        // A prefix of a field is not a match, and a '*' inside a field is literal.
        assert_eq!(
            pgpass_lookup("db:5432:*:*:p\n", &tcp("db1", 5432), "d", "u"),
            None
        );
        assert_eq!(
            pgpass_lookup("d*:5432:*:*:p\n", &tcp("db1", 5432), "d", "u"),
            None
        );
        assert_eq!(
            pgpass_lookup("db1:5432:*:*\n", &tcp("db1", 5432), "d", "u"),
            None
        );
    }

    #[test]
    fn pgpass_permissions_must_exclude_group_and_others() {
        assert!(pgpass_mode_ok(0o100600));
        assert!(pgpass_mode_ok(0o100400));
        assert!(!pgpass_mode_ok(0o100640));
        assert!(!pgpass_mode_ok(0o100604));
    }

    #[test]
    fn pgpass_file_with_loose_permissions_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        assert_eq!(read_pgpass(&path), Pgpass::Missing);
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_pgpass(&path), Pgpass::Ignored(m) if m.contains("0600")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_pgpass(&path), Pgpass::Contents("*:*:*:*:pw\n".into()));
        assert!(matches!(read_pgpass(dir.path()), Pgpass::Ignored(_)));
    }

    #[test]
    fn debug_output_hides_passwords() {
        let p = ConnParams {
            password: Some("hunter2".into()),
            ..ConnParams::default()
        };
        assert!(!format!("{p:?}").contains("hunter2"));
        let r = p.resolve(&env(&[])).unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
