//! The second half of a restore: carry out a [`RestorePlan`], in the order a reader finds here
//! (each step in its own module):
//!
//! 1. check again what may have changed since the plan (a server started, a tablespace taken);
//! 2. [`prepare`] the directories, the data directory first made unstartable ([`seal`]);
//! 3. restore the [`files`] (each written by [`write`](mod@write)), in parallel, verified,
//!    `global/pg_control` under a temporary name;
//! 4. write the [`recovery`] settings, the signal file last;
//! 5. [`finish`]: ownership, then durability;
//! 6. [`seal`]: the control file renamed into place, durably, before success is reported.
//!
//! Interrupted anywhere, the data directory has no control file (PostgreSQL refuses to start)
//! and holds a marker with which the next run of the same restore resumes it.

pub mod files;
pub mod finish;
pub mod prepare;
pub mod rebuild;
pub mod recovery;
pub mod seal;
pub mod sparse;
pub mod write;

use std::sync::Arc;
use std::time::Instant;

use pitr_repo::ClusterRepo;
use serde::Serialize;

use super::plan::dirs::check_tablespace_free;
use super::{Progress, RestoreError, RestorePlan};

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The plan carried out.
    pub plan: RestorePlan,
    /// Files written from the repository (or created empty).
    pub files_restored: u64,
    /// Files already present with the right content (`--delta`).
    pub files_reused: u64,
    /// Entries removed (`--force` contents, or `--delta` extras).
    pub entries_removed: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes reused.
    pub bytes_reused: u64,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
    /// Wall-clock duration.
    pub seconds: f64,
    /// Earlier configuration lines commented out, as `file: line`.
    pub commented_out: Vec<String>,
    /// Recovery files written.
    pub written: Vec<String>,
}

/// Carries out a plan: prepares the directories, restores every file verified (in parallel),
/// writes `backup_label`, `tablespace_map`, the signal file and the recovery settings, and
/// gives everything to the owner, durably.
pub async fn execute(
    cluster: &ClusterRepo,
    plan: RestorePlan,
    progress: Option<Arc<dyn Progress>>,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let layout = plan.layout();
    recheck(&plan)?;
    let lease = take_lease(cluster, &plan).await?;
    let prepared = prepare::directories(&plan, &layout).await?;
    let tally = files::restore_files(
        cluster,
        plan.manifest(),
        &layout,
        plan.delta,
        plan.jobs,
        progress,
    )
    .await?;
    if let Some(left) = plan.left_out.clone() {
        let layout2 = layout.clone();
        blocking(move || sparse::create(&left, &layout2)).await?;
    }
    let (plan2, layout2) = (plan.clone(), layout.clone());
    let (written, commented) =
        blocking(move || recovery::write_recovery_files(&plan2, &layout2)).await?;
    finish::own_and_sync(&plan, &layout, prepared.dirs, prepared.created_roots).await?;
    let pgdata = plan.pgdata.clone();
    blocking(move || seal::seal(&pgdata)).await?;
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!("cannot remove the restore's lease (it lapses by itself): {e}");
        }
    }
    Ok(RestoreReport {
        plan,
        files_restored: tally.files_restored,
        files_reused: tally.files_reused,
        entries_removed: prepared.removed,
        bytes_written: tally.bytes_written,
        bytes_reused: tally.bytes_reused,
        bytes_fetched: tally.bytes_fetched,
        seconds: started.elapsed().as_secs_f64(),
        commented_out: commented,
        written,
    })
}

/// The directories may have changed since the plan: refuses a server started on the data
/// directory or on a tablespace directory since.
fn recheck(plan: &RestorePlan) -> Result<(), RestoreError> {
    if let Some(pid) = pitr_os::running_postmaster(&plan.pgdata) {
        return Err(RestoreError::ServerRunning {
            path: plan.pgdata.clone(),
            pid,
        });
    }
    for t in &plan.tablespaces {
        check_tablespace_free(t.oid, &t.restore_to)?;
    }
    Ok(())
}

/// The lease a restore holds (see [`pitr_repo::lease`]): the backup, every backup holding some
/// of its files, and the WAL from its start on; then the backup's manifest is checked again, so
/// that an `expire` running meanwhile either sees the lease or has removed the manifest (and the
/// restore stops before touching anything). A repository this user may only read gets no
/// lease (a warning), the restore goes on.
pub async fn take_lease(
    cluster: &ClusterRepo,
    plan: &RestorePlan,
) -> Result<Option<pitr_repo::Lease>, RestoreError> {
    let m = plan.manifest();
    let mut held = vec![m.label.clone()];
    for h in m.files.iter().flat_map(|f| f.holders(&m.label)) {
        if !held.iter().any(|x| x == h) {
            held.push(h.to_string());
        }
    }
    let lease = match cluster
        .take_lease(
            "restore",
            held,
            Some(m.start_lsn.clone()),
            pitr_repo::lease::DEFAULT_TTL,
        )
        .await
    {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("restoring without a lease (an expire running meanwhile could remove backup {}): {e}", m.label);
            None
        }
    };
    if cluster.manifest(&m.label).await?.is_none() {
        if let Some(l) = lease {
            let _ = l.release().await;
        }
        return Err(RestoreError::ExpiredMeanwhile(m.label.clone()));
    }
    Ok(lease)
}

/// Runs file-system work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?
}
