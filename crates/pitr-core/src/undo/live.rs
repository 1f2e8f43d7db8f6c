//! The live cluster's side of an undo: what is there now (the database, whether each table and
//! each destination name exists), and the load: the dump run in one transaction of pitr's own
//! session, checked (row count and checksum equal to the scratch cluster's, foreign keys
//! looked up) before COMMIT. Interrupted at any instant before COMMIT (kill -9 included), the
//! session ends and PostgreSQL rolls the transaction back: the live cluster is untouched.

use pitr_proto::{ConnParams, PgClient};
use serde::Serialize;

use super::names::{literal, QualName};
use super::source::{checksum, exec, one, table_oid, STABLE_TEXT};
use super::UndoError;

/// The live database, as found.
#[derive(Debug, Clone, Serialize)]
pub struct LiveDatabase {
    /// Name.
    pub name: String,
    /// OID (the directory under `base/`).
    pub oid: u32,
    /// Size now (`pg_database_size`).
    pub size: u64,
}

/// Connects to the live cluster.
pub(super) async fn connect(params: &ConnParams) -> Result<PgClient, UndoError> {
    let mut p = params.clone();
    p.application_name = Some("pitr undo".into());
    pitr_proto::connect(&p).await.map_err(UndoError::from)
}

/// The database the session is connected to.
pub(super) async fn database(c: &PgClient) -> Result<LiveDatabase, UndoError> {
    let r = super::source::rows(
        c,
        "find the database",
        "SELECT current_database()::text, oid::text, pg_catalog.pg_database_size(oid)::text \
         FROM pg_catalog.pg_database WHERE datname = current_database()",
    )
    .await?;
    let row = r.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(LiveDatabase {
        name: get(0),
        oid: get(1).parse().unwrap_or(0),
        size: get(2).parse().unwrap_or(0),
    })
}

/// The OID of table `t` in the live cluster now, if it exists.
pub(super) async fn oid_of(c: &PgClient, t: &QualName) -> Result<Option<u32>, UndoError> {
    table_oid(c, t).await
}

/// Whether any relation (table, view, sequence, index…) is named `t`.
pub(super) async fn name_taken(c: &PgClient, t: &QualName) -> Result<bool, UndoError> {
    let sql = format!(
        "SELECT 'x' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = {} AND c.relname = {}",
        literal(&t.schema),
        literal(&t.name)
    );
    Ok(one(c, "look the name up", &sql).await?.is_some())
}

/// One table's expected rows, as the scratch cluster has them.
#[derive(Debug, Clone)]
pub(super) struct Expected {
    pub dest: QualName,
    pub rows: u64,
    pub checksum: String,
}

/// Runs `sql` (the dump) in one transaction, checks every table against `expected`, and commits
/// only if all match; otherwise rolls back. `fks` are (table, constraint) pairs whose presence is
/// looked up in the same transaction: the answer says which are missing.
pub(super) async fn load(
    params: &ConnParams,
    sql: &str,
    expected: &[Expected],
    fks: &[(String, String)],
) -> Result<Vec<bool>, UndoError> {
    let c = connect(params).await?;
    exec(&c, "begin", "BEGIN").await?;
    let result = load_in(&c, sql, expected, fks).await;
    match result {
        Ok(present) => {
            exec(&c, "commit", "COMMIT").await?;
            Ok(present)
        }
        Err(e) => {
            let _ = exec(&c, "rollback", "ROLLBACK").await;
            Err(e)
        }
    }
}

async fn load_in(
    c: &PgClient,
    sql: &str,
    expected: &[Expected],
    fks: &[(String, String)],
) -> Result<Vec<bool>, UndoError> {
    exec(c, "load the dump into the live cluster (rolled back)", sql).await?;
    exec(c, "settings", STABLE_TEXT).await?;
    for e in expected {
        let (rows, sum) = checksum(c, &e.dest).await?;
        if rows != e.rows || sum != e.checksum {
            return Err(UndoError::Failed(format!(
                "check failed for {}: {rows} rows (md5 {sum}) loaded, {} rows (md5 {}) in the scratch cluster; rolled back, the live cluster is unchanged",
                e.dest, e.rows, e.checksum
            )));
        }
    }
    let mut present = Vec::new();
    for (table, name) in fks {
        let sql = format!(
            "SELECT 'x' FROM pg_catalog.pg_constraint WHERE conname = {} AND conrelid = pg_catalog.to_regclass({})",
            literal(name),
            literal(table)
        );
        present.push(one(c, "look a foreign key up", &sql).await?.is_some());
    }
    Ok(present)
}
