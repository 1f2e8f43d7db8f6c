//! The steps of an undo, in order: [`plan`] (read-only), then [`run`]: restore, start, copy,
//! load, check, clean up, record.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use pitr_repo::ClusterRepo;

use super::live::{self, Expected};
use super::names::{ident, QualName};
use super::source::{self, DumpSource};
use super::{guard, Mode, TablePlan, TableResult, UndoError, UndoOptions, UndoPlan, UndoReport};
use crate::drill::scratch::{free_port, Scratch};
use crate::history::{self, HistoryRecord};
use crate::restore::start::{self, RecoveryOutcome, StartOptions};
use crate::restore::{
    self, ArchiveMode, RecoveryTarget, RestoreOptions, RestorePlan, TargetAction, TargetSpec,
};

/// Room the scratch directory needs beyond the restored files: the WAL replayed into
/// `pg_wal`, the end-of-recovery checkpoint, the dump.
const DISK_MARGIN: u64 = 256 << 20;

/// The plan, with what the run needs besides.
struct Prepared {
    undo: UndoPlan,
    restore: RestorePlan,
    /// Each table's OID in the live cluster now.
    live_oids: Vec<Option<u32>>,
    /// The bootstrap superuser (OID 10), whom the scratch cluster is connected to as.
    superuser: String,
}

/// Decides the undo without changing anything: refuses unusable options, a destination name
/// that is taken, a backup of another major, and a scratch disk too small.
pub async fn plan(cluster: &ClusterRepo, opts: &UndoOptions) -> Result<UndoPlan, UndoError> {
    Ok(prepare(cluster, opts).await?.undo)
}

async fn prepare(cluster: &ClusterRepo, opts: &UndoOptions) -> Result<Prepared, UndoError> {
    if opts.tables.is_empty() {
        return Err(UndoError::Usage(
            "name the damaged table with --table SCHEMA.NAME (pitr wal incidents lists them)"
                .into(),
        ));
    }
    if opts.as_name.is_some() && opts.tables.len() > 1 {
        return Err(UndoError::Usage(
            "--as names one table: give a single --table with it".into(),
        ));
    }
    let c = live::connect(&opts.live).await?;
    let database = live::database(&c).await?;
    let superuser = source::one(
        &c,
        "find the bootstrap superuser",
        "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10",
    )
    .await?
    .unwrap_or_else(|| "postgres".into());
    let mut tables = Vec::new();
    let mut live_oids = Vec::new();
    for t in &opts.tables {
        let oid = live::oid_of(&c, t).await?;
        let mode = if oid.is_some() {
            Mode::Rows
        } else {
            Mode::Dropped
        };
        let destination = match (&opts.as_name, mode) {
            (Some(a), _) => a.clone(),
            (None, Mode::Dropped) => t.clone(),
            (None, Mode::Rows) => t.with_name(&format!("{}_before_{}", t.name, opts.xid)),
        };
        if (mode == Mode::Rows || &destination != t) && live::name_taken(&c, &destination).await? {
            return Err(UndoError::Refused(format!(
                "{destination} already exists in database {:?}: an undo never overwrites live data\nhint: pass --as NEW_NAME, or drop {destination} if an earlier undo left it",
                database.name
            )));
        }
        tables.push(TablePlan {
            table: t.clone(),
            exists_now: oid.is_some(),
            mode,
            destination,
        });
        live_oids.push(oid);
    }
    let scratch = Scratch::fresh_path(&opts.scratch_parent, guard::PREFIX);
    let restore = restore_plan(cluster, opts, &scratch).await?;
    let live_major = c.major().number();
    if restore.backup.pg_major != live_major {
        return Err(UndoError::Refused(format!(
            "backup {} is of PostgreSQL {}, the live cluster runs PostgreSQL {live_major}\nhint: -h/-p must name the cluster this repository backs up",
            restore.backup.label, restore.backup.pg_major
        )));
    }
    let mut restore = restore;
    let db_dir = format!("base/{}", database.oid);
    if !restore.manifest().dirs.iter().any(|d| d.path == db_dir) {
        return Err(UndoError::Refused(format!(
            "database {:?} (OID {}) is not in backup {}: it was created after the backup\nhint: the transaction must come after a backup of the database; pass --backup LABEL",
            database.name, database.oid, restore.backup.label
        )));
    }
    let full_restore_bytes = restore.manifest().total_size();
    let restore_bytes = restore.restore_only_database(database.oid);
    let left_out_databases = restore
        .left_out
        .as_ref()
        .map(|l| l.databases.clone())
        .unwrap_or_default();
    let disk_needed = restore_bytes + restore_bytes / 10 + DISK_MARGIN;
    let disk_free = pitr_os::free_space(&opts.scratch_parent).map_err(|e| {
        UndoError::Refused(format!(
            "cannot read the free space of {}: {e}\nhint: --scratch DIR must be an existing directory",
            opts.scratch_parent.display()
        ))
    })?;
    if disk_free < disk_needed {
        return Err(UndoError::Refused(format!(
            "the scratch disk is too small: {} needs {} bytes ({} restored + margin), {} bytes are free\nhint: pass --scratch DIR on a larger disk",
            opts.scratch_parent.display(),
            disk_needed,
            restore_bytes,
            disk_free
        )));
    }
    Ok(Prepared {
        undo: UndoPlan {
            xid: opts.xid,
            target: format!("{} (exclusive), promoted", restore.target),
            backup: restore.backup.label.clone(),
            pg_major: restore.backup.pg_major,
            database,
            tables,
            restore_bytes,
            full_restore_bytes,
            left_out_databases,
            disk_needed,
            disk_free,
            scratch,
        },
        restore,
        live_oids,
        superuser,
    })
}

/// The restore's plan: into `<scratch>/pgdata`, tablespaces inside the scratch directory too,
/// archiving off, to just before the transaction, promoted there.
async fn restore_plan(
    cluster: &ClusterRepo,
    opts: &UndoOptions,
    scratch: &Path,
) -> Result<RestorePlan, UndoError> {
    let mut ropts = RestoreOptions {
        pgdata: scratch.join("pgdata"),
        spec: TargetSpec {
            target: RecoveryTarget::Xid(opts.xid),
            exclusive: true,
            timeline: opts.timeline,
            action: Some(TargetAction::Promote),
        },
        backup: opts.backup.clone(),
        delta: false,
        force: false,
        standby: false,
        tablespace_map: Vec::new(),
        owner: opts.owner.clone(),
        jobs: opts.jobs,
        restore_command: opts.restore_command.clone(),
        archive_mode: ArchiveMode::Off,
    };
    let first = restore::plan(cluster, &ropts).await?;
    if first.tablespaces.is_empty() {
        return Ok(first);
    }
    ropts.tablespace_map = first
        .tablespaces
        .iter()
        .map(|t| (t.oid, scratch.join("tblspc").join(t.oid.to_string())))
        .collect();
    Ok(restore::plan(cluster, &ropts).await?)
}

/// Runs the undo (or, with `dry_run`, only plans it). A refusal before anything changed is an
/// error; a failure once the scratch directory exists is reported (outcome `failed`) and
/// recorded, after the scratch server is stopped and the directory removed.
pub async fn run(cluster: &ClusterRepo, opts: &UndoOptions) -> Result<UndoReport, UndoError> {
    let stale_removed = if opts.dry_run {
        Vec::new()
    } else {
        guard::clean_stale(&opts.scratch_parent, opts.pg_bin.as_deref())
    };
    let prepared = prepare(cluster, opts).await?;
    let mut report = UndoReport {
        outcome: "planned".into(),
        failure: None,
        plan: prepared.undo.clone(),
        tables: Vec::new(),
        suggestions: Vec::new(),
        scratch_bytes: None,
        port: None,
        server_log_tail: Vec::new(),
        stale_removed,
        record: None,
        history_key: None,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let started = Instant::now();
    let mut record = HistoryRecord {
        kind: "undo".into(),
        at: history::now(),
        by: pitr_os::effective_user_name(),
        backup: prepared.undo.backup.clone(),
        target: prepared.undo.target.clone(),
        directory: prepared.undo.scratch.display().to_string(),
        outcome: "failed".into(),
        stopped_at: None,
        timeline: None,
        restore_seconds: 0.0,
        replay_seconds: None,
        total_seconds: 0.0,
        wal_replayed_bytes: None,
        detail: None,
        archive_mode: Some(ArchiveMode::Off.to_string()),
    };
    let scratch = Scratch::create_at(prepared.undo.scratch.clone()).map_err(UndoError::Refused)?;
    let result = execute(cluster, opts, prepared, &scratch, &mut report, &mut record).await;
    let refused = matches!(result, Err(UndoError::Refused(_)));
    if let Err(e) = result {
        report.failure = Some(e.to_string());
    }
    if let Err(e) = scratch.stop_server(opts.pg_bin.as_deref()) {
        report.failure.get_or_insert(e);
    }
    if report.failure.is_some() {
        let log = std::fs::read_to_string(scratch.dir().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(12);
        report.server_log_tail = lines[from..].iter().map(|l| l.to_string()).collect();
    }
    if let Err(e) = scratch.remove() {
        report.failure.get_or_insert(e);
    }
    record.total_seconds = started.elapsed().as_secs_f64();
    match &report.failure {
        None => {
            report.outcome = "undone".into();
            record.outcome = "undone".into();
            record.detail = Some(summary(&report));
        }
        Some(f) => {
            report.outcome = if refused { "refused" } else { "failed" }.into();
            record.outcome = report.outcome.clone();
            record.detail = Some(f.clone());
        }
    }
    match cluster.record_history(&record.at, "undo", &record).await {
        Ok(key) => report.history_key = Some(key),
        Err(e) => tracing::warn!("cannot record the undo in the repository's history: {e}"),
    }
    report.record = Some(record);
    Ok(report)
}

/// One line for the history: what came back where.
fn summary(r: &UndoReport) -> String {
    let parts: Vec<String> = r
        .tables
        .iter()
        .map(|t| format!("{} -> {} ({} rows)", t.table, t.destination, t.rows))
        .collect();
    format!("transaction {}: {}", r.plan.xid, parts.join(", "))
}

/// Restore, start, shape and dump, load and check.
async fn execute(
    cluster: &ClusterRepo,
    opts: &UndoOptions,
    prepared: Prepared,
    scratch: &Scratch,
    report: &mut UndoReport,
    record: &mut HistoryRecord,
) -> Result<(), UndoError> {
    let Prepared {
        undo,
        restore: rplan,
        live_oids,
        superuser,
    } = prepared;
    let major = rplan.backup.pg_major;
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: String| UndoError::Failed(format!("{what}: {e}"))
    };
    let _lease = restore::execute::take_lease(cluster, &rplan).await?;
    let restored = restore::execute(cluster, rplan, None)
        .await
        .map_err(|e| UndoError::Failed(format!("restore failed: {e}")))?;
    record.restore_seconds = restored.seconds;
    report.scratch_bytes = Some(pitr_os::allocated_bytes(scratch.dir()));
    let owner = restored.plan.owner.clone();
    let port = free_port().map_err(UndoError::Failed)?;
    report.port = Some(port);
    scratch
        .isolate(owner.as_ref(), major)
        .map_err(failed("cannot set the scratch cluster apart"))?;
    no_autovacuum(scratch.pgdata())?;
    let bindir = crate::pgbin::find_pg_bin(
        opts.pg_bin.as_deref(),
        Some(major),
        &["pg_ctl", "postgres", "pg_dump"],
    )
    .map_err(|e| UndoError::Failed(e.to_string()))?;
    guard::spawn(&bindir.join("pg_ctl"), scratch.pgdata(), owner.as_ref())
        .map_err(UndoError::Failed)?;
    let sopts = StartOptions {
        pgdata: scratch.pgdata().to_path_buf(),
        pg_major: major,
        pg_bin: Some(bindir.clone()),
        owner: owner.clone(),
        port: Some(port),
        log_file: Some(scratch.dir().join("server.log")),
        timeout: Some(opts.timeout),
        standby: false,
    };
    let server = start::start_and_wait(&sopts)
        .await
        .map_err(|e| UndoError::Failed(format!("recovery failed: {e}")))?;
    record.replay_seconds = Some(server.seconds);
    record.timeline = server.timeline;
    record.stopped_at = server.stop_lsn.clone().or(server.redo_done_at.clone());
    if server.outcome != RecoveryOutcome::Promoted {
        return Err(UndoError::Failed(format!(
            "recovery ended {:?}, not promoted at transaction {}: {}",
            server.outcome,
            opts.xid,
            server.stopped.unwrap_or_default()
        )));
    }
    // The scratch cluster lets local socket connections in without a password: as the
    // bootstrap superuser, who exists there (roles are cluster-wide) and may rename and dump.
    let src = DumpSource {
        bindir: &bindir,
        socket: &scratch.socket_dir(),
        port,
        user: &superuser,
        dbname: &undo.database.name,
        owner: owner.as_ref(),
    };
    copy(opts, &undo, &live_oids, &src, scratch.dir(), report).await
}

/// Autovacuum would connect to the databases left out (zeroed): off in the scratch cluster.
fn no_autovacuum(pgdata: &Path) -> Result<(), UndoError> {
    let auto = pgdata.join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&auto)
        .and_then(|mut f| {
            f.write_all(
                b"# pitr undo: the databases left out are never connected to\nautovacuum = off\n",
            )?;
            f.sync_all()
        })
        .map_err(|e| UndoError::Failed(format!("cannot write {}: {e}", auto.display())))
}

/// One table as found in the scratch cluster.
struct Found {
    plan: TablePlan,
    mode: Mode,
    oid: u32,
    rows: u64,
    checksum: String,
    fks: Vec<(String, String, String)>,
}

/// Finds each table in the scratch cluster, shapes and dumps it, loads it into the live cluster
/// (checked, in one transaction), and writes the results and suggestions.
async fn copy(
    opts: &UndoOptions,
    undo: &UndoPlan,
    live_oids: &[Option<u32>],
    src: &DumpSource<'_>,
    dir: &Path,
    report: &mut UndoReport,
) -> Result<(), UndoError> {
    let params = pitr_proto::ConnParams {
        host: Some(src.socket.display().to_string()),
        port: Some(src.port),
        user: Some(src.user.to_string()),
        dbname: Some(src.dbname.to_string()),
        application_name: Some("pitr undo".into()),
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let c = pitr_proto::connect(&params).await?;
    source::exec(
        &c,
        "settings",
        &format!("SET search_path = ''; {}", source::STABLE_TEXT),
    )
    .await?;
    let mut found = Vec::new();
    for (tp, live_oid) in undo.tables.iter().zip(live_oids) {
        let Some(oid) = source::table_oid(&c, &tp.table).await? else {
            return Err(UndoError::Failed(format!(
                "{} did not exist in database {:?} just before transaction {}: nothing to bring back\nhint: pitr wal incidents names the tables a transaction touched",
                tp.table, undo.database.name, undo.xid
            )));
        };
        let mode = match live_oid {
            None => Mode::Dropped,
            Some(l) if *l == oid => Mode::Rows,
            Some(l) => {
                if opts.as_name.is_none() {
                    return Err(UndoError::Refused(format!(
                        "{} was dropped (OID {oid}) and a new table by that name exists now (OID {l}): an undo never overwrites live data; nothing was changed\nhint: pass --as NEW_NAME to bring the dropped table back under another name",
                        tp.table
                    )));
                }
                Mode::Dropped
            }
        };
        let fks = if mode == Mode::Dropped {
            source::referencing_fks(&c, oid).await?
        } else {
            Vec::new()
        };
        if mode == Mode::Rows {
            let (cols, pk) = source::columns(&c, oid).await?;
            report
                .suggestions
                .extend(row_suggestions(&tp.table, &tp.destination, &cols, &pk));
        }
        source::shape(&c, &tp.table, oid, mode, &tp.destination).await?;
        // Constraint definitions name the table as it is now called.
        let fks = if mode == Mode::Dropped && !fks.is_empty() {
            source::referencing_fks(&c, oid).await?
        } else {
            fks
        };
        let (rows, checksum) = source::checksum(&c, &tp.destination).await?;
        found.push(Found {
            plan: tp.clone(),
            mode,
            oid,
            rows,
            checksum,
            fks,
        });
    }
    drop(c);
    let sql = dumps(src, &found, dir)?;
    let expected: Vec<Expected> = found
        .iter()
        .map(|f| Expected {
            dest: f.plan.destination.clone(),
            rows: f.rows,
            checksum: f.checksum.clone(),
        })
        .collect();
    let fk_pairs: Vec<(String, String)> = found
        .iter()
        .flat_map(|f| f.fks.iter().map(|(t, n, _)| (t.clone(), n.clone())))
        .collect();
    let present = live::load(&opts.live, &sql, &expected, &fk_pairs).await?;
    let mut present = present.into_iter();
    for f in found {
        let mut missing = Vec::new();
        for (table, name, def) in &f.fks {
            if present.next() == Some(false) {
                missing.push(format!("{table}.{name}"));
                report.suggestions.push(format!(
                    "-- {table} lost its foreign key {name} to {} with the DROP; re-add it (NOT VALID: rows written since are not checked until VALIDATE):\nALTER TABLE {table} ADD CONSTRAINT {} {def} NOT VALID;\nALTER TABLE {table} VALIDATE CONSTRAINT {};",
                    f.plan.destination,
                    ident(name),
                    ident(name)
                ));
            }
        }
        tracing::debug!("{} (scratch OID {}) loaded", f.plan.table, f.oid);
        report.tables.push(TableResult {
            table: f.plan.table,
            mode: f.mode,
            destination: f.plan.destination,
            rows: f.rows,
            checksum: f.checksum,
            missing_foreign_keys: missing,
        });
    }
    Ok(())
}

/// Dumps the tables from the scratch cluster (whole tables with owner and grants; `_before`
/// copies without) and returns the SQL to load.
fn dumps(src: &DumpSource<'_>, found: &[Found], dir: &Path) -> Result<String, UndoError> {
    let mut sql = String::new();
    for (mode, file) in [(Mode::Dropped, "dropped.sql"), (Mode::Rows, "rows.sql")] {
        let dests: Vec<QualName> = found
            .iter()
            .filter(|f| f.mode == mode)
            .map(|f| f.plan.destination.clone())
            .collect();
        if dests.is_empty() {
            continue;
        }
        let out = dir.join(file);
        if let Some(u) = src.owner {
            // pg_dump runs as the scratch cluster's owner and writes here.
            std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))
                .map_err(|e| UndoError::Failed(format!("cannot chown {}: {e}", dir.display())))?;
        }
        source::dump(src, &dests, mode == Mode::Rows, &out)?;
        let text = std::fs::read_to_string(&out)
            .map_err(|e| UndoError::Failed(format!("cannot read {}: {e}", out.display())))?;
        sql.push_str(&source::dump_sql(&text));
        sql.push('\n');
    }
    Ok(sql)
}

/// `INSERT … SELECT` and `UPDATE … FROM` for the DBA, matching rows on the primary key.
fn row_suggestions(t: &QualName, before: &QualName, cols: &[String], pk: &[String]) -> Vec<String> {
    if pk.is_empty() {
        return vec![format!(
            "-- {t} has no primary key: match the rows of {before} to it by hand; rows of {before} not in {t}:\nSELECT * FROM {} EXCEPT ALL SELECT * FROM {};",
            before.sql(),
            t.sql()
        )];
    }
    let on = pk
        .iter()
        .map(|c| format!("l.{c} = b.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let list = cols.join(", ");
    let b_list = cols
        .iter()
        .map(|c| format!("b.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = vec![format!(
        "-- put back the rows the transaction deleted (review first):\nINSERT INTO {} ({list}) SELECT {b_list} FROM {} b WHERE NOT EXISTS (SELECT 1 FROM {} l WHERE {on});",
        t.sql(),
        before.sql(),
        t.sql()
    )];
    let rest: Vec<&String> = cols.iter().filter(|c| !pk.contains(c)).collect();
    if !rest.is_empty() {
        let set = rest
            .iter()
            .map(|c| format!("{c} = b.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let l_row = rest
            .iter()
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let b_row = rest
            .iter()
            .map(|c| format!("b.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "-- put back the values the transaction changed (this also reverts later changes to those rows; review first):\nUPDATE {} l SET {set} FROM {} b WHERE {on} AND ROW({l_row}) IS DISTINCT FROM ROW({b_row});",
            t.sql(),
            before.sql()
        ));
    }
    out
}
