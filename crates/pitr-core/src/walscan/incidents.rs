//! `pitr wal incidents`: the transactions that destroyed data, and the restores that undo
//! them.

use serde::Serialize;

use super::shell::shell_quote;
use super::{Event, ScanInfo, TxnReport, WalLog};

/// Why a transaction is an incident.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// The transaction.
    pub transaction: TxnReport,
    /// What it did, for people: "DROP public.t", "deleted 5000 rows from public.x", …
    pub reasons: Vec<String>,
    /// `pitr undo` of the transaction's tables into the live cluster (the first suggestion),
    /// when the tables are named; the caller adds the live cluster's `-h -p -U`.
    pub undo: Option<String>,
    /// `pitr restore` to just before the transaction, by xid, promoting there: the
    /// alternative, a whole copy of the cluster.
    pub restore_by_xid: String,
    /// The same by LSN (the commit record's LSN, exclusive).
    pub restore_by_lsn: String,
}

/// `pitr wal incidents`.
#[derive(Debug, Clone, Serialize)]
pub struct Incidents {
    /// What was read.
    pub scan: ScanInfo,
    /// Rows deleted or updated in one transaction above which it is an incident.
    pub threshold: u64,
    /// The incidents, in WAL order.
    pub incidents: Vec<Incident>,
}

/// How to spell the repository and cluster in suggested commands.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Program name.
    pub program: String,
    /// `--repo` value.
    pub repo: String,
    /// `--cluster` value, when not the default.
    pub cluster: Option<String>,
    /// Extra global options (e.g. `--config FILE`).
    pub extra: Vec<String>,
}

/// The tables transaction `t` dropped, truncated, or deleted or updated more than `threshold`
/// rows of, by name (indexes and TOAST tables go with their table; unnamed files are left out).
pub fn damaged_tables(t: &TxnReport, threshold: u64) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    for r in &t.relations {
        let table = matches!(r.kind.as_deref(), None | Some("r" | "p"));
        let damaged = r.dropped || r.truncated || r.deletes > threshold || r.updates > threshold;
        if let (true, true, Some(name)) = (table, damaged, r.name.as_deref()) {
            if !tables.iter().any(|t| t == name) {
                tables.push(name.to_string());
            }
        }
    }
    tables
}

/// `pitr undo XID --table T… -d DB` for the tables of [`damaged_tables`]; `None` when no table
/// is named (or the database is not known).
fn undo_command(base: &[String], t: &TxnReport, threshold: u64) -> Option<String> {
    let tables = damaged_tables(t, threshold);
    let db = t.database.as_ref()?.name.as_ref()?;
    if tables.is_empty() {
        return None;
    }
    let mut cmd = base.to_vec();
    cmd.push("undo".into());
    cmd.push(t.xid.to_string());
    for name in &tables {
        cmd.push("--table".into());
        cmd.push(shell_quote(name));
    }
    cmd.push("-d".into());
    cmd.push(shell_quote(db));
    Some(cmd.join(" "))
}

/// Picks the transactions that destroyed data and suggests the restores that undo them.
pub fn incidents(log: WalLog, threshold: u64, ctx: &CommandContext) -> Incidents {
    let mut out = Vec::new();
    for e in log.events {
        let Event::Transaction(t) = e else { continue };
        if !t.outcome.starts_with("commit") {
            continue;
        }
        let mut reasons = Vec::new();
        for r in &t.relations {
            // Indexes and TOAST tables go with their table: not reported on their own.
            let companion = matches!(r.kind.as_deref(), Some("i" | "I" | "t"));
            if r.dropped && !companion {
                reasons.push(format!("DROP {}", r.label()));
            }
            if r.truncated && !companion {
                reasons.push(format!("TRUNCATE {}", r.label()));
            }
            if r.deletes > threshold {
                reasons.push(format!("deleted {} rows from {}", r.deletes, r.label()));
            }
            if r.updates > threshold {
                reasons.push(format!("updated {} rows of {}", r.updates, r.label()));
            }
        }
        for o in &t.truncated_oids {
            reasons.push(format!("TRUNCATE relation oid {o}"));
        }
        if reasons.is_empty() {
            continue;
        }
        let mut base = vec![ctx.program.clone()];
        base.extend(ctx.extra.iter().map(|s| shell_quote(s)));
        base.push("--repo".into());
        base.push(shell_quote(&ctx.repo));
        if let Some(c) = &ctx.cluster {
            base.push("--cluster".into());
            base.push(shell_quote(c));
        }
        let undo = undo_command(&base, &t, threshold);
        base.extend(["restore", "--pgdata", "NEWDIR"].map(String::from));
        // Promote at the target: a paused recovery stops just before the commit, so the
        // transaction is still in progress and its locks (DROP and TRUNCATE take an ACCESS
        // EXCLUSIVE lock) keep the table unreadable until recovery ends.
        // Archiving off: the promoted copy must never archive a new timeline into the
        // production repository (which `latest` would then follow).
        let mut tail = vec![
            "--target-exclusive".to_string(),
            "--target-action".into(),
            "promote".into(),
            "--archive-mode".into(),
            "off".into(),
        ];
        if !log.scan.latest_timeline {
            tail.push("--target-timeline".into());
            tail.push(log.scan.timeline.to_string());
        }
        let by_xid = [
            base.clone(),
            vec!["--target-xid".into(), t.xid.to_string()],
            tail.clone(),
        ]
        .concat()
        .join(" ");
        let by_lsn = [base, vec!["--target-lsn".into(), t.lsn.to_string()], tail]
            .concat()
            .join(" ");
        out.push(Incident {
            transaction: t,
            reasons,
            undo,
            restore_by_xid: by_xid,
            restore_by_lsn: by_lsn,
        });
    }
    Incidents {
        scan: log.scan,
        threshold,
        incidents: out,
    }
}
