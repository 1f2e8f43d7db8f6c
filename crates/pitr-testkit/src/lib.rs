//! A synchronous harness that drives real PostgreSQL 14–18 servers for pitr's integration tests.
//!
//! pitr's claims (archive, back up, restore to a point in time) only mean something against the
//! real thing, so tests create throwaway clusters with the installed `initdb`/`pg_ctl`, talk to
//! them with the installed `psql`, and use PostgreSQL's own tools (`pg_controldata`,
//! `pg_waldump`, `pg_verifybackup`) as oracles.
//!
//! - [`installs`] / [`test_installs`] find the PostgreSQL versions on this machine (see the
//!   crate README for where they are looked up); [`pg_test_matrix!`] makes one test per major.
//! - [`Cluster`] is one server in its own scratch directory, listening only on its own Unix
//!   socket directory so tests run in parallel without port clashes; dropped means stopped and
//!   deleted.
//! - When the tests run as root (CI does), server-side commands run as the `postgres` OS user
//!   ([`as_postgres`]) and scratch directories belong to it ([`scratch_dir`]).
//!
//! Everything panics with a message meant for a CI log (the command, its stderr, the server log
//! tail) instead of returning errors: this is test code.

mod cluster;
mod install;
pub mod leak;
mod os;
mod seaweed;

pub use cluster::{ArchiverStats, Cluster, ClusterOptions, DEFAULT_PORT};
pub use install::{
    install, installs, parse_majors, share_of, test_install, test_installs, PgInstall,
    DEFAULT_PG_ROOT, INSTALL_HINT, SUPPORTED_MAJORS,
};
pub use os::{
    as_postgres, chown_to_postgres, create_postgres_dir, postgres_uid_gid, run_ok, scratch_dir,
    DEFAULT_TMP_BASE,
};
pub use seaweed::{
    weed_binary, SeaweedFs, SeaweedOptions, DEFAULT_SEAWEEDFS_ROOT, SEAWEEDFS_INSTALL_HINT,
};

/// Defines a module of tests, one per supported major (`pg14` … `pg18`), each calling
/// `$body(&PgInstall)` with that major's installation: the one way pitr's integration tests run
/// something on every PostgreSQL version.
///
/// A major excluded by `$PITR_TEST_PG` is skipped; a requested major that is not installed fails
/// with an install hint (or is skipped with `PITR_TEST_ALLOW_NO_PG=1`), and a `$PITR_TEST_PG`
/// that is not a list of supported majors fails every test; see [`test_install`].
///
/// Attributes written before a body are put on each of its tests, after `#[test]`. An `async`
/// body is awaited by tests that carry the attributes given instead of `#[test]`, so it needs a
/// runtime's test attribute such as `#[tokio::test]` (at least one attribute is required).
///
/// ```ignore
/// fn archive_round_trip(pg: &pitr_testkit::PgInstall) { /* ... */ }
/// async fn sql_client(pg: &pitr_testkit::PgInstall) { /* ... */ }
/// pitr_testkit::pg_test_matrix!(
///     archive_round_trip,
///     #[tokio::test] async sql_client,
/// );
/// // => tests archive_round_trip::pg14, ..., archive_round_trip::pg18, sql_client::pg14, ...
/// ```
#[macro_export]
macro_rules! pg_test_matrix {
    () => {};
    (@majors $kind:ident $body:ident $attrs:tt) => {
        $crate::pg_test_matrix!(@$kind $body $attrs pg14 14);
        $crate::pg_test_matrix!(@$kind $body $attrs pg15 15);
        $crate::pg_test_matrix!(@$kind $body $attrs pg16 16);
        $crate::pg_test_matrix!(@$kind $body $attrs pg17 17);
        $crate::pg_test_matrix!(@$kind $body $attrs pg18 18);
    };
    (@sync $body:ident [$(#[$attr:meta])*] $name:ident $major:literal) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            if let Some(pg) = $crate::test_install($major) {
                super::$body(&pg);
            }
        }
    };
    (@async $body:ident [$(#[$attr:meta])*] $name:ident $major:literal) => {
        $(#[$attr])*
        async fn $name() {
            if let Some(pg) = $crate::test_install($major) {
                super::$body(&pg).await;
            }
        }
    };
    ($(#[$attr:meta])+ async $body:ident $(, $($rest:tt)*)?) => {
        mod $body {
            $crate::pg_test_matrix!(@majors async $body [$(#[$attr])+]);
        }
        $($crate::pg_test_matrix!($($rest)*);)?
    };
    ($(#[$attr:meta])* $body:ident $(, $($rest:tt)*)?) => {
        mod $body {
            $crate::pg_test_matrix!(@majors sync $body [$(#[$attr])*]);
        }
        $($crate::pg_test_matrix!($($rest)*);)?
    };
}
