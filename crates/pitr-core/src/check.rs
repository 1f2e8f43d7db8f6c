//! `pitr check`: is this server set up so that its WAL reaches this repository?
//!
//! Reads the server's settings and `pg_stat_archiver`, compares its identity with the one the
//! repository recorded, then proves the whole path end to end: it writes a small WAL record
//! (`pg_logical_emit_message`, which touches no table), switches WAL and waits until the
//! segment it closed is in the repository.

mod access;

use std::time::{Duration, Instant, SystemTime};

use pitr_pg::WalFileName;
use pitr_pg::WalLevel;
use pitr_proto::{ArchiveMode, ArchiverStatus, PgClient, ServerInfo};
use pitr_repo::{ClusterRepo, RepoError};
use serde::Serialize;

/// Options of a check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How long to wait for the switched segment to reach the repository.
    pub archive_timeout: Duration,
    /// The archive_command that archives into this repository (for hints).
    pub archive_command_hint: String,
    /// Skip the WAL switch (read-only check).
    pub no_switch: bool,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but worth a look.
    Warning,
    /// Archiving into this repository does not work.
    Failed,
    /// Not checked (an earlier failure makes it pointless, or not applicable).
    Skipped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    /// What was checked.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl CheckItem {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> CheckItem {
        CheckItem {
            name,
            status,
            detail: detail.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> CheckItem {
        self.hint = Some(hint.into());
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Cluster name in the repository.
    pub cluster: String,
    /// Repository location.
    pub repo: String,
    /// The checks, in order.
    pub checks: Vec<CheckItem>,
    /// The segment switched and archived by the round trip, if it succeeded.
    pub archived_segment: Option<String>,
    /// How long it took to reach the repository, in seconds.
    pub archive_seconds: Option<f64>,
    /// True when no check failed.
    pub ok: bool,
}

/// Runs the checks. Only a failure to talk to the server or the repository is an error; what
/// is wrong with the setup is in the report.
pub async fn check(
    cluster: &ClusterRepo,
    client: &PgClient,
    opts: &CheckOptions,
) -> Result<CheckReport, pitr_proto::ProtoError> {
    let info = client.server_info().await?;
    let mut checks = vec![server_item(&info), wal_level_item(&info)];
    let (archive_mode, archiving_on) = archive_mode_item(&info, opts);
    checks.push(archive_mode);
    checks.push(archive_command_item(&info, cluster, opts));
    checks.push(identity_item(cluster, &info).await);
    let archiver = client.archiver_status().await?;
    checks.push(archiver_item(&archiver, opts));

    let mut archived = None;
    // Access does not stop the round trip, which is the proof either way.
    let blocked = checks.iter().any(|c| c.status == Status::Failed);
    let access_at = checks.len();
    let (access, by_mode_bits) = access::access_item(cluster, &info);
    checks.push(access);
    let round_trip = if opts.no_switch {
        CheckItem::new("archive round trip", Status::Skipped, "--no-switch given")
    } else if info.in_recovery {
        CheckItem::new(
            "archive round trip",
            Status::Skipped,
            "a standby cannot switch WAL",
        )
    } else if blocked || !archiving_on {
        CheckItem::new(
            "archive round trip",
            Status::Skipped,
            "not attempted: fix the failures above first",
        )
    } else {
        let (item, segment) = round_trip_item(cluster, client, opts).await;
        if segment.is_some() && by_mode_bits {
            if let Some(a) = checks
                .get_mut(access_at)
                .filter(|a| a.status == Status::Failed)
            {
                a.status = Status::Warning;
                a.detail
                    .push_str("; yet the round trip worked (an ACL grants more?)");
            }
        }
        archived = segment;
        item
    };
    checks.push(round_trip);
    let ok = checks.iter().all(|c| c.status != Status::Failed);
    let (archived_segment, archive_seconds) = archived.unzip();
    Ok(CheckReport {
        cluster: cluster.name().to_string(),
        repo: cluster.repo().location(),
        checks,
        archived_segment,
        archive_seconds,
        ok,
    })
}

fn wal_level_item(info: &ServerInfo) -> CheckItem {
    match info.wal_level {
        WalLevel::Minimal => CheckItem::new(
            "wal_level",
            Status::Failed,
            "minimal: WAL cannot be archived for recovery",
        )
        .hint("set wal_level = replica in postgresql.conf and restart PostgreSQL"),
        level => CheckItem::new("wal_level", Status::Ok, level.to_string()),
    }
}

/// The `archive_mode` line, and whether this server archives now.
fn archive_mode_item(info: &ServerInfo, opts: &CheckOptions) -> (CheckItem, bool) {
    match info.archive_mode {
        ArchiveMode::Off => (
            CheckItem::new("archive_mode", Status::Failed, "off: no WAL is archived").hint(
                format!(
                    "set archive_mode = on and archive_command = '{}' in postgresql.conf and restart PostgreSQL",
                    opts.archive_command_hint
                ),
            ),
            false,
        ),
        ArchiveMode::Always => (CheckItem::new("archive_mode", Status::Ok, "always"), true),
        ArchiveMode::On if info.in_recovery => (
            CheckItem::new(
                "archive_mode",
                Status::Warning,
                "on, but this server is a standby: it archives nothing until promoted",
            )
            .hint("run pitr check against the primary, or set archive_mode = always here"),
            false,
        ),
        ArchiveMode::On => (CheckItem::new("archive_mode", Status::Ok, "on"), true),
    }
}

/// The `archive round trip` line after trying one, and the segment that reached the repository
/// with how many seconds it took.
async fn round_trip_item(
    cluster: &ClusterRepo,
    client: &PgClient,
    opts: &CheckOptions,
) -> (CheckItem, Option<(String, f64)>) {
    match round_trip(cluster, client, opts).await {
        Ok((name, secs)) => (
            CheckItem::new(
                "archive round trip",
                Status::Ok,
                format!("{name} reached the repository {secs:.1} s after pg_switch_wal()"),
            ),
            Some((name.to_string(), secs)),
        ),
        Err(RoundTrip::Timeout(name)) => {
            let why = timeout_reason(client).await;
            let log = server_log(client).await;
            let item = CheckItem::new(
                "archive round trip",
                Status::Failed,
                format!(
                    "{name} did not reach the repository within {:?} after pg_switch_wal(); {why}",
                    opts.archive_timeout
                ),
            )
            .hint(format!(
                "{log} has archive_command's error (\"archive command failed\"); archive_command should be '{}'; a larger --archive-timeout helps when the archiver is only behind",
                opts.archive_command_hint
            ));
            (item, None)
        }
        Err(RoundTrip::Server(e)) => (
            CheckItem::new(
                "archive round trip",
                Status::Failed,
                format!("cannot switch WAL: {e}"),
            )
            .hint("pg_switch_wal() and pg_logical_emit_message() need a superuser, or: GRANT EXECUTE ON FUNCTION pg_switch_wal(), pg_logical_emit_message(boolean, text, text) TO <user>"),
            None,
        ),
        Err(RoundTrip::Repo(e)) => (
            CheckItem::new(
                "archive round trip",
                Status::Failed,
                format!("cannot read the repository: {e}"),
            ),
            None,
        ),
    }
}

/// Why a switched segment did not arrive, from `pg_stat_archiver` (the last failure and when)
/// and the segments waiting in `pg_wal/archive_status`.
async fn timeout_reason(client: &PgClient) -> String {
    let waiting = client
        .query_text(
            "pg_ls_archive_statusdir",
            "SELECT count(*)::text FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .await
        .ok()
        .and_then(|rows| rows.first()?.first()?.clone())
        .map(|n| format!("; {n} segments wait in pg_wal/archive_status"))
        .unwrap_or_default();
    match client.archiver_status().await {
        Ok(a) if failing_now(&a) => format!(
            "pg_stat_archiver: archive_command failed on {} {} ({} failures in all; last success: {}){waiting}",
            a.last_failed_wal.as_deref().unwrap_or("?"),
            a.last_failed_time.map(ago).unwrap_or_default(),
            a.failed_count,
            match (&a.last_archived_wal, a.last_archived_time) {
                (Some(w), Some(t)) => format!("{w} {}", ago(t)),
                _ => "none".to_string(),
            }
        ),
        Ok(a) => format!(
            "pg_stat_archiver reports no failure since the last success ({}): archive_command exits 0 without storing the segment here, or the archiver is behind{waiting}",
            match (&a.last_archived_wal, a.last_archived_time) {
                (Some(w), Some(t)) => format!("{w} {}", ago(t)),
                _ => "none yet".to_string(),
            }
        ),
        Err(e) => format!("pg_stat_archiver cannot be read: {e}"),
    }
}

/// Where the server's log is: `pg_current_logfile()` with the logging collector, else its
/// standard error.
async fn server_log(client: &PgClient) -> String {
    let rows = client
        .query_text(
            "pg_current_logfile",
            "SELECT pg_current_logfile()::text, current_setting('data_directory')",
        )
        .await
        .ok();
    match rows.as_ref().and_then(|r| r.first()) {
        Some(row) => match (row.first().cloned().flatten(), row.get(1).cloned().flatten()) {
            (Some(file), Some(dir)) if !file.starts_with('/') => {
                format!("the server log {dir}/{file}")
            }
            (Some(file), _) => format!("the server log {file}"),
            _ => "the server log (its standard error: the logging collector is off; with systemd, journalctl -u postgresql*)".to_string(),
        },
        None => "the server log".to_string(),
    }
}

fn server_item(info: &ServerInfo) -> CheckItem {
    let role = if info.in_recovery {
        "standby"
    } else {
        "primary"
    };
    CheckItem::new(
        "server",
        Status::Ok,
        format!(
            "PostgreSQL {} ({role}), system identifier {}, timeline {}, data directory {}",
            info.major.number(),
            info.system_id,
            info.timeline.0,
            info.data_directory.display()
        ),
    )
}

/// The value of `--repo` (or `--repo=`) in a command line, if any.
fn repo_arg(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--repo" {
            return words
                .next()
                .map(|v| v.trim_matches(['\'', '"']).to_string());
        }
        if let Some(v) = w.strip_prefix("--repo=") {
            return Some(v.trim_matches(['\'', '"']).to_string());
        }
    }
    None
}

fn archive_command_item(
    info: &ServerInfo,
    cluster: &ClusterRepo,
    opts: &CheckOptions,
) -> CheckItem {
    let name = "archive_command";
    if let Some(lib) = info.archive_library.as_deref().filter(|l| !l.is_empty()) {
        return CheckItem::new(
            name,
            Status::Failed,
            format!("archive_library = '{lib}' is set, so archive_command is not used"),
        )
        .hint(format!(
            "set archive_library = '' and archive_command = '{}', then reload PostgreSQL",
            opts.archive_command_hint
        ));
    }
    let cmd = info.archive_command.trim();
    if cmd.is_empty() || cmd == "(disabled)" {
        return CheckItem::new(
            name,
            Status::Failed,
            "not set: WAL segments pile up in pg_wal",
        )
        .hint(format!(
            "set archive_command = '{}' and reload PostgreSQL",
            opts.archive_command_hint
        ));
    }
    if !cmd.contains("archive-push") {
        return CheckItem::new(
            name,
            Status::Warning,
            format!("'{cmd}' does not call pitr archive-push"),
        )
        .hint(format!(
            "to archive into this repository: archive_command = '{}'",
            opts.archive_command_hint
        ));
    }
    let here = cluster.repo().location();
    match repo_arg(cmd) {
        Some(repo) if !same_location(&repo, &here) => CheckItem::new(
            name,
            Status::Warning,
            format!("'{cmd}' archives into {repo}, not into {here}"),
        )
        .hint(format!(
            "check the repository you meant; to archive here: archive_command = '{}'",
            opts.archive_command_hint
        )),
        _ => CheckItem::new(name, Status::Ok, cmd.to_string()),
    }
}

fn same_location(a: &str, b: &str) -> bool {
    let canon = |s: &str| {
        std::fs::canonicalize(s)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| s.trim_end_matches('/').to_string())
    };
    canon(a) == canon(b)
}

async fn identity_item(cluster: &ClusterRepo, info: &ServerInfo) -> CheckItem {
    let name = "repository";
    match cluster.identity().await {
        Ok(Some(id)) if id.system_id != info.system_id || id.pg_major != info.major.number() => {
            CheckItem::new(
                name,
                Status::Failed,
                format!(
                    "cluster {:?} of {} belongs to another server (system identifier {}, PostgreSQL {}); this one is {}, PostgreSQL {}",
                    cluster.name(),
                    cluster.repo().location(),
                    id.system_id,
                    id.pg_major,
                    info.system_id,
                    info.major.number()
                ),
            )
            .hint("use another --cluster name for this server, or another repository")
        }
        Ok(Some(_)) => CheckItem::new(
            name,
            Status::Ok,
            format!(
                "cluster {:?} of {} is this server",
                cluster.name(),
                cluster.repo().location()
            ),
        ),
        Ok(None) => CheckItem::new(
            name,
            Status::Ok,
            format!(
                "cluster {:?} of {} is new: the first archived segment or backup records this server",
                cluster.name(),
                cluster.repo().location()
            ),
        ),
        Err(e) => CheckItem::new(name, Status::Failed, format!("cannot read it: {e}"))
            .hint("check --repo and the repository's permissions"),
    }
}

/// True when the archiver's last failure is more recent than its last success.
fn failing_now(a: &ArchiverStatus) -> bool {
    match (a.last_failed_time, a.last_archived_time) {
        (Some(f), Some(s)) => f > s,
        (Some(_), None) => true,
        _ => false,
    }
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if d.as_secs() < 120 => format!("{} s ago", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!("{} min ago", d.as_secs() / 60),
        Ok(d) => format!("{} h ago", d.as_secs() / 3600),
        Err(_) => "just now".to_string(),
    }
}

fn archiver_item(a: &ArchiverStatus, opts: &CheckOptions) -> CheckItem {
    let name = "archiver";
    let last = match (&a.last_archived_wal, a.last_archived_time) {
        (Some(w), Some(t)) => format!("last archived {w} {}", ago(t)),
        _ => "nothing archived yet".to_string(),
    };
    if failing_now(a) {
        let failed = a.last_failed_wal.as_deref().unwrap_or("?");
        let when = a.last_failed_time.map(ago).unwrap_or_default();
        return CheckItem::new(
            name,
            Status::Failed,
            format!(
                "archive_command is failing: {failed} failed {when} ({} failures in all); {last}",
                a.failed_count
            ),
        )
        .hint(format!(
            "the server log says why; archive_command should be '{}'",
            opts.archive_command_hint
        ));
    }
    CheckItem::new(
        name,
        Status::Ok,
        format!(
            "{} archived, {} failed; {last}",
            a.archived_count, a.failed_count
        ),
    )
}

enum RoundTrip {
    Timeout(WalFileName),
    Server(pitr_proto::ProtoError),
    Repo(RepoError),
}

/// Writes a WAL record, switches WAL and waits until the closed segment is in the repository.
async fn round_trip(
    cluster: &ClusterRepo,
    client: &PgClient,
    opts: &CheckOptions,
) -> Result<(WalFileName, f64), RoundTrip> {
    client
        .emit_wal_message("pitr check")
        .await
        .map_err(RoundTrip::Server)?;
    let started = Instant::now();
    let (_, name) = client.switch_wal().await.map_err(RoundTrip::Server)?;
    let key = cluster.wal_key(&name);
    let storage = cluster.repo().storage().clone();
    let deadline = started + opts.archive_timeout;
    loop {
        if storage
            .head(&key)
            .await
            .map_err(|e| RoundTrip::Repo(e.into()))?
            .is_some()
        {
            return Ok((name, started.elapsed().as_secs_f64()));
        }
        if Instant::now() >= deadline {
            return Err(RoundTrip::Timeout(name));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_repository_of_an_archive_command() {
        assert_eq!(
            repo_arg("/usr/bin/pitr --repo /var/lib/pitr archive-push %p").as_deref(),
            Some("/var/lib/pitr")
        );
        assert_eq!(
            repo_arg("pitr --repo '/r' archive-push %p").as_deref(),
            Some("/r")
        );
        assert_eq!(
            repo_arg("pitr --repo=/r archive-push %p").as_deref(),
            Some("/r")
        );
        assert_eq!(repo_arg("pitr archive-push %p"), None);
    }

    #[test]
    fn a_failure_counts_only_when_newer_than_the_last_success() {
        let t = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let status = |failed, archived| ArchiverStatus {
            archived_count: 1,
            last_archived_wal: None,
            last_archived_time: archived,
            failed_count: 1,
            last_failed_wal: Some("000000010000000000000003".into()),
            last_failed_time: failed,
            stats_reset: None,
        };
        assert!(failing_now(&status(t(20), t(10))));
        assert!(!failing_now(&status(t(10), t(20))));
        assert!(failing_now(&status(t(10), None)));
        assert!(!failing_now(&status(None, t(10))));
    }
}
