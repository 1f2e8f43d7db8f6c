//! The physical replication protocol (`replication=true` connections): what `pg_basebackup`
//! and `pg_receivewal` speak.
//!
//! - [`connect_replication`] opens a [`ReplConnection`] with psql's connection settings
//!   (`ConnParams`: `-h -p -U`, `PG*`, `.pgpass` lines for database `replication`), over a
//!   Unix socket or TCP with `sslmode` (see [`crate::tls`]), authenticating with password,
//!   MD5 or SCRAM-SHA-256.
//! - Commands: [`ReplConnection::identify_system`], [`ReplConnection::timeline_history`],
//!   [`ReplConnection::create_physical_slot`], [`ReplConnection::drop_slot`],
//!   [`ReplConnection::read_slot`] (15+).
//! - [`ReplConnection::start_replication`] returns a [`WalStream`] of WAL, keepalives and the
//!   end of a timeline; positions are reported with [`WalStream::send_status`].
//! - [`ReplConnection::base_backup`] returns a [`BaseBackupStream`] of tar archives, manifest
//!   and progress, the same events on 14 (one COPY per tablespace) and 15+ (one COPY with
//!   typed messages); [`crate::tar`] reads the archives as they stream.
//!
//! Every per-version difference is in [`version`] (one row per major, chosen from
//! `server_version_num`; an unknown major is refused at connect).
//!
//! Why not an existing crate: `tokio-postgres` has no replication support, and
//! `pg_walstream` is built around logical replication on libpq (or aws-lc-rs TLS) with its own
//! connection settings; pitr needs physical streaming and `BASE_BACKUP` on 14 as well as
//! 15+, with psql's settings resolution ([`crate::params`]), so the client is written here on
//! `postgres-protocol`'s message builders and authentication (MD5, SCRAM).

mod base_backup;
mod commands;
mod conn;
mod stream;
pub mod version;
mod wire;

pub use base_backup::{
    BackupArchive, BackupEvent, BackupTablespace, BaseBackupOptions, BaseBackupStream,
    ManifestChecksums,
};
pub use commands::{
    validate_slot_name, CreatedSlot, SlotInfo, SlotOptions, SystemIdentity, TimelineHistoryFile,
};
pub(crate) use conn::pgpass_contents;
pub use conn::{
    connect_replication, connect_replication_resolved, connect_replication_with_env, AuthMethod,
    ReplConnection, PGPASS_REPLICATION_DBNAME,
};
pub use stream::{
    Keepalive, StandbyStatus, StartReplication, StreamEnd, WalEvent, WalStream, XLogData,
    DEFAULT_STATUS_INTERVAL,
};
pub use version::{BaseBackupDialect, ReplFeatures, SlotOptionSyntax, REPL_FEATURES};
