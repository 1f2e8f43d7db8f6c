//! Running things as the `postgres` OS user and giving it directories it can use.
//!
//! initdb, pg_ctl and postgres refuse to run as root, and CI runs the tests as root: so when we
//! are root, every server-side command runs as `postgres`, and every directory a server or an
//! `archive_command` touches is owned by `postgres`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Where scratch directories are created unless `$PITR_TEST_TMPDIR` says otherwise: short (Unix
/// socket paths are limited to ~100 bytes) and traversable by every user.
pub const DEFAULT_TMP_BASE: &str = "/tmp/pitr-tests";

/// The `postgres` OS user, as the password database (NSS) reports it.
#[derive(Debug, Clone)]
struct PgUser {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// The `postgres` user when we run as root; `None` when we are not root (then nothing changes
/// user). Panics when we are root and there is no `postgres` user, with a hint.
fn pg_user() -> Option<&'static PgUser> {
    static USER: OnceLock<Option<PgUser>> = OnceLock::new();
    USER.get_or_init(|| {
        if !pitr_os::is_root() {
            return None;
        }
        match pitr_os::user_by_name("postgres") {
            Ok(Some(u)) => Some(PgUser {
                uid: u.uid,
                gid: u.gid,
                home: u.home,
            }),
            found => panic!(
                "running as root but there is no usable \"postgres\" OS user \
                 (initdb and postgres refuse to run as root; lookup: {found:?})\n{}",
                crate::INSTALL_HINT
            ),
        }
    })
    .as_ref()
}

/// uid and gid of the `postgres` OS user when the current process is root, else `None`.
pub fn postgres_uid_gid() -> Option<(u32, u32)> {
    pg_user().map(|u| (u.uid, u.gid))
}

/// Makes `cmd` run as the `postgres` OS user when the current process is root (no-op otherwise).
///
/// Besides uid and gid (supplementary groups are dropped), this sets `HOME`, `USER` and `LOGNAME`
/// to postgres's, and, if `cmd` has no working directory yet, runs it in `/`: the caller's
/// working directory (often under `/root`) may not be reachable by postgres, and initdb and
/// pg_ctl fail when they cannot resolve it. Give absolute paths to such commands.
pub fn as_postgres(cmd: &mut Command) -> &mut Command {
    if let Some(u) = pg_user() {
        cmd.uid(u.uid).gid(u.gid);
        cmd.env("HOME", &u.home)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
        if cmd.get_current_dir().is_none() {
            cmd.current_dir("/");
        }
    }
    cmd
}

/// A directory removed on drop, owned by the `postgres` OS user when we run as root, so
/// PostgreSQL and commands run as postgres can read and write it (root still can too).
///
/// Created under `$PITR_TEST_TMPDIR` (default `/tmp/pitr-tests`, made mode 1777), whose parents
/// must be traversable by postgres; keep it short, Unix socket paths live below it.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = tmp_base();
    if let Err(e) = fs::create_dir_all(&base) {
        panic!(
            "cannot create scratch base directory {}: {e}",
            base.display()
        );
    }
    if pg_user().is_some() {
        // Sticky and world-writable like /tmp, so both root and postgres can create in it; only
        // its owner may chmod it, so ignore failure when someone else created it.
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o1777));
    }
    let dir = tempfile::Builder::new()
        .prefix("pitr-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a scratch directory in {}: {e}",
                base.display()
            )
        });
    chown_to_postgres(dir.path());
    dir
}

/// Creates directory `path` (and missing parents) and gives the new leaf to the postgres user.
///
/// Use it for anything a server writes to, e.g. an archive directory inside a scratch dir.
pub fn create_postgres_dir(path: &Path) -> PathBuf {
    if let Err(e) = fs::create_dir_all(path) {
        panic!("cannot create directory {}: {e}", path.display());
    }
    chown_to_postgres(path);
    path.to_path_buf()
}

/// Gives `path`, and everything below it if it is a directory, to the postgres OS user when we
/// run as root (no-op otherwise); symlinks are changed themselves, never followed.
///
/// For files written as root that a server must own, e.g. a data directory restored by a
/// command run as root.
pub fn chown_to_postgres(path: &Path) {
    let Some((uid, gid)) = postgres_uid_gid() else {
        return;
    };
    if let Err(e) = pitr_os::chown_tree(path, uid, gid) {
        panic!("cannot give {} to postgres: {e}", path.display());
    }
}

fn tmp_base() -> PathBuf {
    std::env::var_os("PITR_TEST_TMPDIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TMP_BASE), PathBuf::from)
}

/// Removes libpq's `PG*` variables (PGHOST, PGPORT, PGDATA, ...) that the test runner's
/// environment may carry, so every harness command talks to the cluster it names.
pub(crate) fn clean_pg_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    // English, unlocalised messages and output, whatever the runner's locale.
    cmd.env("LC_ALL", "C").env("LANG", "C")
}

/// Runs `cmd` and returns its trimmed stdout; panics with the command, exit status, stdout and
/// stderr when it cannot start or exits non-zero.
pub fn run_ok(cmd: &mut Command) -> String {
    match run(cmd) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(msg) => panic!("{msg}"),
    }
}

/// Runs `cmd` to completion; `Err` is a ready-to-print report of the command and its output when
/// it cannot start or exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", show(cmd)))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            show(cmd),
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end(),
        ))
    }
}

/// A command line as a shell would show it (program and arguments, no environment).
pub(crate) fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
