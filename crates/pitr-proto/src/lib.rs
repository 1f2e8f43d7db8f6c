//! pitr's PostgreSQL clients: SQL sessions through tokio-postgres, and the physical
//! replication protocol ([`repl`]: `IDENTIFY_SYSTEM`, slots, `START_REPLICATION`,
//! `BASE_BACKUP`) with a streaming tar reader ([`tar`]) for base backups.
//!
//! - [`ConnParams`] resolves connection settings like psql does (flags, then `PGHOST`,
//!   `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, the password file, then libpq's
//!   defaults); the resolution is pure and takes the environment as a value.
//! - [`connect`] opens a [`PgClient`] (over TLS per `sslmode`, as the replication client) and
//!   refuses servers outside 14–18; failures are typed
//!   ([`ProtoError`]) and name the server (`host:port` or the socket path).
//! - [`PgClient`] runs the queries the engines need, choosing function names by version
//!   (`pg_start_backup`/`pg_stop_backup` on 14, `pg_backup_start`/`pg_backup_stop` on 15+);
//!   [`BackupSession`] keeps a non-exclusive backup on the one session it must live on.

mod client;
mod error;
pub mod params;
pub mod repl;
mod sql_tls;
pub mod tar;
pub mod tls;

pub use client::{
    connect, connect_resolved, connect_with_env, ArchiveMode, ArchiverStatus, BackupSession,
    BackupStopInfo, PgClient, ServerInfo, Tablespace,
};
pub use error::{Endpoints, ProtoError, ServerMessage};
pub use params::{ConnEnv, ConnParams, Endpoint, Host, ResolvedConn};
pub use repl::{connect_replication, connect_replication_with_env, ReplConnection};
pub use tls::{SslMode, TlsSettings};
