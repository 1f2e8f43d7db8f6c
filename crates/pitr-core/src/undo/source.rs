//! The scratch cluster's side of an undo: find each table as it was just before the transaction,
//! shape what is copied (a dropped table renamed for `--as`, the rows of an updated or deleted
//! table copied into `NAME_before_XID`), dump it with PostgreSQL's own `pg_dump`, and learn what
//! the suggestions and checks need (columns, primary key, foreign keys pointing at the table,
//! row count and checksum).

use std::path::Path;
use std::process::Command;

use pitr_proto::PgClient;

use super::names::{ident, literal, QualName};
use super::{Mode, UndoError};
use crate::restore::start::as_owner;
use crate::restore::OsUser;

/// Runs a query whose columns are all text.
pub(super) async fn rows(
    c: &PgClient,
    what: &'static str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, UndoError> {
    c.query_text(what, sql).await.map_err(UndoError::from)
}

/// The first column of the first row.
pub(super) async fn one(
    c: &PgClient,
    what: &'static str,
    sql: &str,
) -> Result<Option<String>, UndoError> {
    Ok(rows(c, what, sql)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// Runs statements (no result).
pub(super) async fn exec(c: &PgClient, what: &str, sql: &str) -> Result<(), UndoError> {
    c.inner()
        .batch_execute(sql)
        .await
        .map_err(|e| UndoError::Failed(format!("{what}: {e}")))
}

/// The OID of table `t` (ordinary or partitioned), if there is one.
pub(super) async fn table_oid(c: &PgClient, t: &QualName) -> Result<Option<u32>, UndoError> {
    let sql = format!(
        "SELECT c.oid::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
         ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {} AND c.relkind IN ('r', 'p')",
        literal(&t.schema),
        literal(&t.name)
    );
    Ok(one(c, "find the table", &sql)
        .await?
        .and_then(|s| s.parse().ok()))
}

/// Settings that make a row's text the same on both servers, for the checksum.
pub(super) const STABLE_TEXT: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// Row count and checksum (md5 of the rows' text, ordered) of table `t`.
pub(super) async fn checksum(c: &PgClient, t: &QualName) -> Result<(u64, String), UndoError> {
    let sql = format!(
        "SELECT count(*)::text, md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text COLLATE \"C\"), '')) \
         FROM {} AS r",
        t.sql()
    );
    let r = rows(c, "checksum the rows", &sql).await?;
    let row = r.into_iter().next().unwrap_or_default();
    let count = row
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let sum = row.get(1).cloned().flatten().unwrap_or_default();
    Ok((count, sum))
}

/// Shapes the scratch copy so that the dump creates `dest`: for a dropped table under another
/// name, the table, its indexes and owned sequences are renamed (index and sequence names are
/// unique in a schema; constraint names only per table); for rows, a plain copy of the rows.
pub(super) async fn shape(
    c: &PgClient,
    src: &QualName,
    oid: u32,
    mode: Mode,
    dest: &QualName,
) -> Result<(), UndoError> {
    if mode == Mode::Rows {
        if dest.schema != src.schema {
            exec(
                c,
                "create the schema",
                &format!("CREATE SCHEMA IF NOT EXISTS {}", ident(&dest.schema)),
            )
            .await?;
        }
        let sql = format!("CREATE TABLE {} AS SELECT * FROM {}", dest.sql(), src.sql());
        return exec(c, "copy the rows in the scratch cluster", &sql).await;
    }
    if dest == src {
        return Ok(());
    }
    let related = format!(
        "SELECT i.relname::text, 'INDEX' FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = {oid} \
         UNION ALL SELECT s.relname::text, 'SEQUENCE' FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid \
         WHERE d.refobjid = {oid} AND d.classid = 'pg_catalog.pg_class'::regclass AND s.relkind = 'S' AND d.deptype IN ('a', 'i')"
    );
    let mut script = Vec::new();
    for r in rows(c, "list indexes and sequences", &related).await? {
        let (Some(name), Some(kind)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten())
        else {
            continue;
        };
        let new = match name.strip_prefix(&src.name) {
            Some(rest) => format!("{}{rest}", dest.name),
            None => format!("{}_{name}", dest.name),
        };
        let new: String = new.chars().take(63).collect();
        script.push(format!(
            "ALTER {kind} {}.{} RENAME TO {}",
            ident(&src.schema),
            ident(&name),
            ident(&new)
        ));
    }
    script.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        src.sql(),
        ident(&dest.name)
    ));
    if dest.schema != src.schema {
        script.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            ident(&dest.schema)
        ));
        script.push(format!(
            "ALTER TABLE {}.{} SET SCHEMA {}",
            ident(&src.schema),
            ident(&dest.name),
            ident(&dest.schema)
        ));
    }
    exec(c, "rename in the scratch cluster", &script.join(";\n")).await
}

/// Foreign keys of other tables pointing at table `oid`: (table, constraint name, definition).
pub(super) async fn referencing_fks(
    c: &PgClient,
    oid: u32,
) -> Result<Vec<(String, String, String)>, UndoError> {
    let sql = format!(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(r.relname), c.conname::text, \
         pg_catalog.pg_get_constraintdef(c.oid, true) FROM pg_catalog.pg_constraint c \
         JOIN pg_catalog.pg_class r ON r.oid = c.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
         WHERE c.contype = 'f' AND c.confrelid = {oid} AND c.conrelid <> {oid} ORDER BY 1, 2"
    );
    Ok(rows(c, "list foreign keys", &sql)
        .await?
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect())
}

/// The table's columns (not generated ones) and primary key columns, quoted, in order.
pub(super) async fn columns(
    c: &PgClient,
    oid: u32,
) -> Result<(Vec<String>, Vec<String>), UndoError> {
    let cols = format!(
        "SELECT quote_ident(attname) FROM pg_catalog.pg_attribute WHERE attrelid = {oid} \
         AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    );
    let pk = format!(
        "SELECT quote_ident(a.attname) FROM pg_catalog.pg_index x \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey) \
         WHERE x.indrelid = {oid} AND x.indisprimary ORDER BY array_position(x.indkey::int2[], a.attnum)"
    );
    let flat = |r: Vec<Vec<Option<String>>>| -> Vec<String> {
        r.into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()
    };
    Ok((
        flat(rows(c, "list columns", &cols).await?),
        flat(rows(c, "find the primary key", &pk).await?),
    ))
}

/// How `pg_dump` reaches the scratch server.
pub(super) struct DumpSource<'a> {
    pub bindir: &'a Path,
    pub socket: &'a Path,
    pub port: u16,
    pub user: &'a str,
    pub dbname: &'a str,
    pub owner: Option<&'a OsUser>,
}

/// `pg_dump` of the tables `dests` from the scratch server into `out` (plain SQL, rows as
/// multi-row INSERTs so that pitr runs the whole load in one transaction of its own).
/// `plain` leaves out ownership and privileges (for the `_before_XID` copies).
pub(super) fn dump(
    src: &DumpSource<'_>,
    dests: &[QualName],
    plain: bool,
    out: &Path,
) -> Result<(), UndoError> {
    let mut cmd = Command::new(src.bindir.join("pg_dump"));
    cmd.arg("-h")
        .arg(src.socket)
        .args([
            "-p",
            &src.port.to_string(),
            "-U",
            src.user,
            "-d",
            src.dbname,
        ])
        .args([
            "--format=plain",
            "--inserts",
            "--rows-per-insert=1000",
            "--no-tablespaces",
        ])
        .arg("-f")
        .arg(out)
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .current_dir(src.socket);
    if plain {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    for d in dests {
        // Quoted, so that the name is no pattern.
        cmd.arg("-t").arg(d.sql());
    }
    as_owner(&mut cmd, src.owner);
    let o = cmd.output().map_err(|e| {
        UndoError::Failed(format!(
            "cannot run {}: {e}",
            src.bindir.join("pg_dump").display()
        ))
    })?;
    if !o.status.success() {
        return Err(UndoError::Failed(format!(
            "pg_dump of {} from the scratch cluster failed: {}",
            dests
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// The dump as one SQL batch: psql's `\restrict`/`\unrestrict` lines (pg_dump from the
/// August 2025 minor releases on) are psql commands, not SQL; they are the first and last
/// such lines, outside any data.
pub(super) fn dump_sql(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let other = |l: &&str| !l.trim().is_empty() && !l.starts_with("--");
    let first = lines
        .iter()
        .position(&other)
        .filter(|i| psql_key_line(lines[*i], "\\restrict "));
    let last = lines
        .iter()
        .rposition(&other)
        .filter(|i| psql_key_line(lines[*i], "\\unrestrict "));
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != first && Some(*i) != last)
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `\restrict KEY` / `\unrestrict KEY` exactly (the key is alphanumeric).
fn psql_key_line(line: &str, command: &str) -> bool {
    line.strip_prefix(command)
        .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_restrict_lines_are_dropped_and_nothing_else() {
        let d = "\\restrict abc\nSET x = 1;\nINSERT INTO t VALUES ('a\n\\restrict q');\n\\unrestrict abc\n";
        assert_eq!(
            dump_sql(d),
            "SET x = 1;\nINSERT INTO t VALUES ('a\n\\restrict q');"
        );
        assert_eq!(dump_sql("SELECT 1;"), "SELECT 1;");
        let no_header = "SET x = 1;\nINSERT INTO t VALUES ('a\n\\unrestrict q');";
        assert_eq!(dump_sql(no_header), no_header);
    }
}
