//! `pitr undo XID --table SCHEMA.NAME`: options → [`pitr_core::undo`], rendered.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pitr_core::restore;
use pitr_core::undo::{self, Mode, QualName, UndoError, UndoOptions, UndoPlan, UndoReport};

use super::info::human_bytes;
use super::restore::{jobs, restore_command_for};
use super::{conn_params, open_cluster, print_json};
use crate::cli::GlobalArgs;
use crate::error::{CliError, EXIT_ERROR, EXIT_REFUSED};

/// `pitr undo`.
#[derive(Debug, Args)]
#[command(
    after_help = "The live cluster changes only by the tables added, in one transaction committed \
once the row counts and checksums match the scratch cluster's. Exit status: 0 undone (--dry-run: \
planned); 2 bad options (no --table and none found in the archived WAL, --as with several \
--table); 3 failed (a connection, the restore, the recovery, the dump or the check; the live \
cluster unchanged, the scratch cluster stopped and removed); 4 refused, nothing changed (a \
destination name taken; a dropped table's name reused since the DROP, without --as; a scratch \
disk too small, with or without --dry-run; a backup of another major or without the database; a \
target the repository cannot reach); 5 damaged repository metadata."
)]
pub struct UndoArgs {
    /// The transaction to undo (as `pitr wal incidents` reports it)
    #[arg(value_name = "XID")]
    pub xid: u64,
    /// A table the transaction dropped, or whose rows it updated or deleted (repeatable)
    /// [default: the tables the archived WAL shows the transaction damaged]
    #[arg(long = "table", value_name = "SCHEMA.NAME")]
    pub tables: Vec<String>,
    /// Bring the table (or the rows as they were) back under this name instead of its own (or
    /// NAME_before_XID) [one --table only]
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    /// Print the plan (backup, database, size to restore, disk needed and free, target) and
    /// change nothing; a scratch disk too small is refused (exit 4) as without it
    #[arg(long)]
    pub dry_run: bool,
    /// Directory in which the scratch directory is made [default: the system's temporary
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Restore this backup (checked against the target) instead of choosing one
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
    /// Timeline to recover along: latest, current or a number [default: latest]
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
    /// OS user that owns the scratch cluster when run as root [default: owner of the scratch
    /// directory's parent, else postgres]
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Files restored in parallel [default: number of CPUs]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Directory with pg_ctl, postgres and pg_dump of the backup's major [default: pg_config
    /// --bindir, /usr/lib/postgresql/<major>/bin, PATH]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Give up waiting for recovery after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub wait_timeout: u64,
}

pub async fn run(g: &GlobalArgs, a: UndoArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let named = if a.tables.is_empty() {
        tables_of(g, &cluster, a.xid).await?
    } else {
        a.tables.clone()
    };
    let tables = named
        .iter()
        .map(|t| QualName::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Usage)?;
    let as_name = match &a.as_name {
        // An unqualified --as keeps the table's schema.
        Some(n) if !n.contains('.') => Some(
            QualName::parse(n)
                .map_err(CliError::Usage)?
                .with_schema(&tables[0].schema),
        ),
        Some(n) => Some(QualName::parse(n).map_err(CliError::Usage)?),
        None => None,
    };
    let opts = UndoOptions {
        xid: a.xid,
        tables,
        as_name,
        dry_run: a.dry_run,
        live: conn_params(g),
        scratch_parent: a.scratch.clone().unwrap_or_else(std::env::temp_dir),
        backup: a.backup.clone(),
        timeline: match &a.target_timeline {
            Some(t) => t.parse().map_err(restore::RestoreError::from)?,
            None => Default::default(),
        },
        pg_bin: a.pg_bin.clone(),
        owner: a.owner.clone(),
        jobs: jobs(a.jobs)?,
        restore_command: restore_command_for(g)?,
        timeout: Duration::from_secs(a.wait_timeout),
    };
    if !g.quiet && !g.json && !a.dry_run {
        eprintln!(
            "pitr: undo: restoring database {} just before transaction {} into a scratch directory under {}",
            opts.live.dbname.as_deref().unwrap_or("(default)"),
            a.xid,
            opts.scratch_parent.display()
        );
    }
    let report = undo::run(&cluster, &opts).await?;
    if g.json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(match report.outcome.as_str() {
        "failed" => EXIT_ERROR,
        "refused" => EXIT_REFUSED,
        _ => 0,
    })
}

/// The tables transaction `xid` damaged, from the archived WAL (as `pitr wal incidents` finds
/// them, any row count), named by the live server when it can.
async fn tables_of(
    g: &GlobalArgs,
    cluster: &pitr_repo::ClusterRepo,
    xid: u64,
) -> Result<Vec<String>, CliError> {
    use pitr_core::walscan::{self, names::Namer, Event, ScanOptions};
    if !g.quiet && !g.json {
        eprintln!("pitr: undo: no --table given: reading the archived WAL for transaction {xid}");
    }
    let opts = ScanOptions {
        incidents_only: Some(0),
        ..Default::default()
    };
    let plan = walscan::plan(cluster, &opts).await?;
    let mut namer = Namer::new(cluster, &plan, Some(conn_params(g))).await;
    let log = walscan::log(cluster, &plan, &opts, &mut namer).await?;
    let found = log.events.iter().find_map(|e| match e {
        Event::Transaction(t) if u64::from(t.xid) == xid & 0xffff_ffff => Some(t),
        _ => None,
    });
    let Some(t) = found else {
        return Err(CliError::Usage(format!(
            "transaction {xid} is not in the archived WAL\nhint: pitr wal incidents lists the transactions that destroyed data; or name the table with --table SCHEMA.NAME"
        )));
    };
    let tables = walscan::damaged_tables(t, 0);
    if tables.is_empty() {
        return Err(CliError::Usage(format!(
            "transaction {xid} dropped, truncated, updated or deleted in no named table\nhint: name the table with --table SCHEMA.NAME"
        )));
    }
    Ok(tables)
}

fn print_plan(p: &UndoPlan) {
    println!("  transaction:    {}", p.xid);
    println!("  target:         {}", p.target);
    println!("  backup:         {} (PostgreSQL {})", p.backup, p.pg_major);
    println!(
        "  database:       {} (OID {}, {} now)",
        p.database.name,
        p.database.oid,
        human_bytes(p.database.size)
    );
    for t in &p.tables {
        let default_rows = t.destination
            == t.table
                .with_name(&format!("{}_before_{}", t.table.name, p.xid));
        let what = match (t.mode, default_rows) {
            (Mode::Dropped, _) => format!("dropped: comes back whole as {}", t.destination),
            (Mode::Rows, true) => format!("exists now: its rows as they were go into {}", t.destination),
            (Mode::Rows, false) => format!(
                "exists now: its rows as they were go into {}, or the dropped table comes back whole under that name",
                t.destination
            ),
        };
        println!("  table:          {} ({what})", t.table);
    }
    println!(
        "  restore:        {} of {} (other databases left out: {})",
        human_bytes(p.restore_bytes),
        human_bytes(p.full_restore_bytes),
        if p.left_out_databases.is_empty() {
            "none".to_string()
        } else {
            p.left_out_databases
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "  scratch disk:   {} needed, {} free ({})",
        human_bytes(p.disk_needed),
        human_bytes(p.disk_free),
        p.scratch.display()
    );
}

fn print_report(r: &UndoReport) {
    println!("undo {}", r.outcome.to_uppercase());
    print_plan(&r.plan);
    for d in &r.stale_removed {
        println!(
            "  removed an interrupted undo's scratch directory {}",
            d.display()
        );
    }
    if let Some(b) = r.scratch_bytes {
        println!("  scratch used:   {} on disk once restored", human_bytes(b));
    }
    if let Some(rec) = &r.record {
        if let Some(at) = &rec.stopped_at {
            println!("  stopped at:     {at}");
        }
        println!(
            "  took:           {:.1} s (restore {:.1} s, replay {:.1} s)",
            rec.total_seconds,
            rec.restore_seconds,
            rec.replay_seconds.unwrap_or(0.0)
        );
    }
    for t in &r.tables {
        let what = match t.mode {
            Mode::Dropped => "brought back as",
            Mode::Rows => "rows as they were copied into",
        };
        println!(
            "  {} {what} {}: {} rows, checksum {} equal in the scratch and the live cluster",
            t.table, t.destination, t.rows, t.checksum
        );
    }
    if let Some(f) = &r.failure {
        println!("  failure:        {f}");
        println!("  the live cluster is unchanged (the load commits only once checked)");
        if !r.server_log_tail.is_empty() {
            println!("  the scratch server's last log lines:");
            for l in &r.server_log_tail {
                println!("    {l}");
            }
        }
    }
    if r.outcome != "planned" {
        println!("  scratch cluster stopped and removed");
        match &r.history_key {
            Some(_) => println!("  recorded in the repository's history (pitr history)"),
            None => println!("  NOT recorded in the repository's history"),
        }
    }
    if !r.suggestions.is_empty() {
        println!();
        println!("Review, then run in the live database if right (pitr ran none of this):");
        for s in &r.suggestions {
            println!("{s}");
        }
    }
}

impl From<UndoError> for CliError {
    fn from(e: UndoError) -> CliError {
        match e {
            UndoError::Usage(m) => CliError::Usage(m),
            UndoError::Restore(r) => CliError::Restore(r),
            UndoError::Proto(p) => CliError::Proto(p),
            UndoError::Refused(m) => CliError::Refused(m),
            UndoError::Failed(m) => CliError::Failed(m),
        }
    }
}
