//! Errors of pitr's PostgreSQL clients, each naming the server it concerns.

use std::fmt;

use crate::Endpoint;

/// The addresses a connection attempt tried, printed as `A or B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<Endpoint>);

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A server-side error: SQLSTATE, message and the server's own detail and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    /// Five-character SQLSTATE, e.g. `42501`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// `DETAIL`, if any.
    pub detail: Option<String>,
    /// `HINT`, if any.
    pub hint: Option<String>,
}

impl fmt::Display for ServerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

impl ServerMessage {
    pub(crate) fn from_db(e: &tokio_postgres::error::DbError) -> Box<ServerMessage> {
        Box::new(ServerMessage {
            code: e.code().code().to_string(),
            message: e.message().to_string(),
            detail: e.detail().map(str::to_string),
            hint: e.hint().map(str::to_string),
        })
    }
}

/// Why talking to PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port {value:?} (from {origin}): expected a number from 1 to 65535")]
    InvalidPort {
        /// The rejected value.
        value: String,
        /// Where it came from (`PGPORT`, `-p/--port`).
        origin: &'static str,
    },
    /// `PGCONNECT_TIMEOUT` is not a number of seconds.
    #[error("invalid PGCONNECT_TIMEOUT {value:?}: expected a whole number of seconds")]
    InvalidConnectTimeout {
        /// The rejected value.
        value: String,
    },
    /// No database user given and the OS user is unknown.
    #[error("no database user: the OS user name is unknown; hint: pass -U/--user or set PGUSER")]
    NoUser,
    /// Nothing accepted a connection at the address(es).
    #[error("could not connect to the server at {targets}: {detail}; hint: check that PostgreSQL is running there, or pass the right -h/--host and -p/--port (PGHOST, PGPORT)")]
    Unreachable {
        /// Every address tried.
        targets: Endpoints,
        /// What the last attempt reported (e.g. connection refused, no such file).
        detail: String,
    },
    /// The server refused the credentials (or has no pg_hba.conf entry for them).
    #[error("authentication failed for user {user:?} at {endpoint}: {server}; hint: check the password (PGPASSWORD, ~/.pgpass) and pg_hba.conf")]
    AuthFailed {
        /// The server.
        endpoint: Endpoint,
        /// The database user.
        user: String,
        /// The server's message.
        server: Box<ServerMessage>,
    },
    /// The server asks for a password and none was found.
    #[error("the server at {endpoint} asks for a password for user {user:?} and none was given; hint: set PGPASSWORD or add a line to ~/.pgpass (mode 0600)")]
    PasswordRequired {
        /// The server.
        endpoint: Endpoint,
        /// The database user.
        user: String,
    },
    /// The database does not exist.
    #[error("database {dbname:?} does not exist at {endpoint}; hint: pass an existing database with -d/--dbname or PGDATABASE (e.g. postgres)")]
    NoDatabase {
        /// The server.
        endpoint: Endpoint,
        /// The missing database.
        dbname: String,
    },
    /// The server refused the connection for another reason (starting up, too many
    /// connections, ...).
    #[error("the server at {endpoint} refused the connection: {server}")]
    Refused {
        /// The server.
        endpoint: Endpoint,
        /// The server's message.
        server: Box<ServerMessage>,
    },
    /// A server older or newer than pitr supports.
    #[error("the server at {endpoint} runs PostgreSQL {version}: pitr supports 14 to 18")]
    UnsupportedServer {
        /// The server.
        endpoint: Endpoint,
        /// `server_version_num` or `server_version`.
        version: String,
    },
    /// A statement failed on the server.
    #[error("{what} failed at {endpoint}: {server}")]
    Query {
        /// The server.
        endpoint: Endpoint,
        /// What pitr was doing (usually the function called, e.g. `pg_backup_start`).
        what: &'static str,
        /// The server's message.
        server: Box<ServerMessage>,
    },
    /// The connection broke or a client-side protocol error occurred.
    #[error("{what} failed at {endpoint}: {detail}")]
    Connection {
        /// The server.
        endpoint: Endpoint,
        /// What pitr was doing.
        what: &'static str,
        /// The client library's description.
        detail: String,
    },
    /// The server answered something pitr cannot interpret.
    #[error("unexpected result from {what} at {endpoint}: {value:?}")]
    UnexpectedResult {
        /// The server.
        endpoint: Endpoint,
        /// The query or column.
        what: &'static str,
        /// The value received.
        value: String,
    },
    /// `sslmode` / `PGSSLMODE` is not a mode libpq knows.
    #[error("invalid sslmode {value:?} (from {origin}): expected one of disable, allow, prefer, require, verify-ca, verify-full")]
    InvalidSslMode {
        /// The rejected value.
        value: String,
        /// Where it came from (`PGSSLMODE`, `--sslmode`).
        origin: &'static str,
    },
    /// The TLS handshake or the certificate check failed, or TLS cannot be set up.
    #[error("TLS with the server at {endpoint} failed: {detail}")]
    Tls {
        /// The server.
        endpoint: Endpoint,
        /// What went wrong (rustls' description, or the setting that is missing).
        detail: String,
    },
    /// `sslmode` requires TLS and the server does not offer it.
    #[error("the server at {endpoint} does not accept TLS connections and sslmode is {mode}; hint: enable ssl on the server, or use sslmode=prefer (PGSSLMODE)")]
    TlsUnavailable {
        /// The server.
        endpoint: Endpoint,
        /// The mode asked for.
        mode: crate::SslMode,
    },
    /// The server asks for an authentication method pitr does not implement.
    #[error("the server at {endpoint} asks for {method} authentication, which pitr does not support; hint: use password, md5 or scram-sha-256 in pg_hba.conf for this connection")]
    AuthMethod {
        /// The server.
        endpoint: Endpoint,
        /// The method's name (e.g. `GSSAPI`).
        method: String,
    },
    /// The server sent something the replication protocol does not allow at that point.
    #[error("protocol error during {what} with the server at {endpoint}: {detail}")]
    Protocol {
        /// The server.
        endpoint: Endpoint,
        /// The command or phase.
        what: &'static str,
        /// What was received instead of what was expected.
        detail: String,
    },
    /// The server's major version lacks a replication command or option.
    #[error("{what} needs PostgreSQL {needs} or later; the server at {endpoint} runs {major}")]
    NotSupported {
        /// The server.
        endpoint: Endpoint,
        /// The command or option.
        what: &'static str,
        /// The first major that has it.
        needs: u32,
        /// The server's major.
        major: u32,
    },
    /// A replication slot name PostgreSQL would refuse.
    #[error("invalid replication slot name {name:?}: use 1 to 63 lower-case letters, digits and underscores")]
    InvalidSlotName {
        /// The rejected name.
        name: String,
    },
    /// A value that cannot be sent in a replication command (e.g. a NUL byte in a label).
    #[error("invalid {what} {value:?}: {why}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        why: &'static str,
    },
}

/// The client library's error and its causes, as one line.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// Maps an error from running a statement.
pub(crate) fn query_error(
    endpoint: &Endpoint,
    what: &'static str,
    e: tokio_postgres::Error,
) -> ProtoError {
    match e.as_db_error() {
        Some(db) => ProtoError::Query {
            endpoint: endpoint.clone(),
            what,
            server: ServerMessage::from_db(db),
        },
        None => ProtoError::Connection {
            endpoint: endpoint.clone(),
            what,
            detail: describe(&e),
        },
    }
}
