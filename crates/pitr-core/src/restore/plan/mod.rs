//! The first half of a restore: decide everything without changing anything.
//!
//! [`plan`] reads the repository and the target directories, in this order: the options
//! (`check_options`), the backup that reaches the target ([`backup`]), that the backup's
//! manifest and objects are usable ([`objects`]), the directories it will be written to
//! ([`dirs`]) and the OS user who will own them ([`owner`]). Anything refused is refused here,
//! before a single file is touched; `--dry-run` prints the resulting [`RestorePlan`].

pub mod backup;
pub mod dirs;
pub mod objects;
pub mod owner;

use std::path::PathBuf;

use jiff::Timestamp;
use pitr_repo::{BackupKind, BackupManifest, ClusterRepo};
use serde::Serialize;

use super::choose::{BranchWarning, Choice, LocatedTarget};
use super::layout::Layout;
use super::{ArchiveMode, RestoreError, RestoreOptions};
use dirs::DirState;
use owner::OsUser;

/// What a directory will go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirAction {
    /// Created.
    Create,
    /// Exists and is empty: filled.
    Fill,
    /// Matching files reused, others fetched, extra files removed.
    Delta,
    /// Contents deleted, then filled.
    Wipe,
}

/// The backup being restored, in short.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// Label.
    pub label: String,
    /// `full` or `incr`.
    pub kind: BackupKind,
    /// Parent of an incremental backup.
    pub parent: Option<String>,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// Timeline.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Consistency LSN.
    pub stop_lsn: String,
    /// Wall-clock start.
    pub start_time: Timestamp,
    /// Wall-clock stop.
    pub stop_time: Timestamp,
    /// Files.
    pub files: usize,
    /// Original bytes.
    pub bytes: u64,
    /// Bytes in the repository.
    pub stored_bytes: u64,
}

/// One tablespace in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct TablespacePlan {
    /// OID.
    pub oid: u32,
    /// Name.
    pub name: String,
    /// Location at backup time.
    pub original: String,
    /// Where it is restored.
    pub restore_to: PathBuf,
    /// What is there now.
    pub state: DirState,
    /// What will happen to it.
    pub action: DirAction,
}

/// One recovery setting written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Name.
    pub name: String,
    /// Unquoted value.
    pub value: String,
}

/// Everything a restore will do, decided before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// Repository.
    pub repository: String,
    /// Cluster name.
    pub cluster: String,
    /// Data directory.
    pub pgdata: PathBuf,
    /// What is there now.
    pub pgdata_state: DirState,
    /// What will happen to it.
    pub pgdata_action: DirAction,
    /// The backup restored.
    pub backup: BackupSummary,
    /// Why it was chosen, the timeline path and the WAL range recovery needs.
    pub choice: Choice,
    /// The target, described.
    pub target: String,
    /// Where a name/xid target is, found by decoding the archived WAL after the backup.
    pub located: Option<LocatedTarget>,
    /// `latest` follows a timeline that branched off one that went on (following the other
    /// needs `--target-timeline N`).
    pub timeline_warnings: Vec<BranchWarning>,
    /// `recovery.signal` or `standby.signal`.
    pub signal_file: String,
    /// Settings written to `postgresql.auto.conf`.
    pub settings: Vec<Setting>,
    /// `--archive-mode`: whether the restored server archives into the repository.
    pub archive_mode: ArchiveMode,
    /// Whether `backup_label` is written (empty for a cold copy).
    pub writes_backup_label: bool,
    /// Whether `tablespace_map` is written.
    pub writes_tablespace_map: bool,
    /// Tablespaces.
    pub tablespaces: Vec<TablespacePlan>,
    /// Owner given to the files (when running as root).
    pub owner: Option<OsUser>,
    /// Parallel file restores.
    pub jobs: usize,
    /// Options that shape the execution.
    pub delta: bool,
    /// Contents deleted first.
    pub force: bool,
    /// Databases left out of a partial restore (`pitr undo`), as sparse zeroed files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<super::execute::sparse::LeftOut>,
    #[serde(skip)]
    manifest: BackupManifest,
}

impl RestorePlan {
    /// The manifest of the backup being restored.
    pub fn manifest(&self) -> &BackupManifest {
        &self.manifest
    }

    /// Restores only database `keep` (with the cluster-wide files and the system databases):
    /// the relation files of every other database become sparse zeroed files (see [`super::execute::sparse`]); the databases
    /// left out must never be connected to. Returns the bytes still restored.
    pub fn restore_only_database(&mut self, keep: u32) -> u64 {
        let left = super::execute::sparse::split_off(&mut self.manifest.files, keep);
        self.left_out = Some(left);
        self.manifest.total_size()
    }

    /// Where the manifest's paths land.
    pub(super) fn layout(&self) -> Layout {
        Layout {
            pgdata: self.pgdata.clone(),
            tablespaces: self
                .tablespaces
                .iter()
                .map(|t| (t.oid, t.restore_to.clone()))
                .collect(),
        }
    }
}

/// Decides the whole restore without changing anything: validates the options, chooses the
/// backup (refusing an unreachable target with the reachable window), checks its objects, the
/// target directories and the owner.
pub async fn plan(
    cluster: &ClusterRepo,
    opts: &RestoreOptions,
) -> Result<RestorePlan, RestoreError> {
    check_options(opts)?;
    let pgdata = dirs::absolute(&opts.pgdata);
    let repository = cluster.repo().location();
    let chosen = backup::choose(cluster, opts).await?;
    let manifest = chosen.manifest;
    objects::validate_manifest(&manifest)?;
    objects::check_objects(cluster, &manifest, &chosen.labels).await?;
    let dirs = dirs::check(&pgdata, &repository, &manifest, opts)?;
    let owner = owner::resolve_owner(&pgdata, opts.owner.as_deref())?;
    let delta = opts.delta || dirs.resume;
    let mut choice = chosen.choice;
    if dirs.resume {
        choice.notes.push(format!(
            "{} holds an interrupted restore ({}): it is resumed, files already restored are kept once verified",
            pgdata.display(),
            crate::restore::layout::RESTORE_MARKER
        ));
    }
    let writes_backup_label = !manifest.backup_label.trim().is_empty();
    let writes_tablespace_map = writes_backup_label
        && (manifest.tablespace_map.is_some() || !manifest.tablespaces.is_empty());
    Ok(RestorePlan {
        repository,
        cluster: cluster.name().to_string(),
        pgdata_action: dirs::dir_action(&dirs.pgdata_state, delta),
        pgdata,
        pgdata_state: dirs.pgdata_state,
        backup: BackupSummary::of(&manifest),
        choice,
        target: opts.spec.target.to_string(),
        located: chosen.located,
        timeline_warnings: chosen.branches,
        signal_file: if opts.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        }
        .to_string(),
        settings: settings(opts, manifest.pg_major),
        archive_mode: opts.archive_mode,
        writes_backup_label,
        writes_tablespace_map,
        tablespaces: dirs.tablespaces,
        owner,
        jobs: opts.jobs,
        delta,
        force: opts.force,
        left_out: None,
        manifest,
    })
}

/// Options that cannot work together, refused before the repository is read.
fn check_options(opts: &RestoreOptions) -> Result<(), RestoreError> {
    opts.spec.validate()?;
    if opts.jobs == 0 {
        return Err(RestoreError::Usage("--jobs must be at least 1".to_string()));
    }
    if opts.delta && opts.force {
        return Err(RestoreError::Usage(
            "--delta and --force exclude each other: --delta keeps matching files, --force deletes everything first".to_string(),
        ));
    }
    Ok(())
}

/// The settings written to `postgresql.auto.conf`: `restore_command`, the target, then
/// archiving off with `--archive-mode off`.
fn settings(opts: &RestoreOptions, major: u32) -> Vec<Setting> {
    let mut settings = vec![Setting {
        name: "restore_command".into(),
        value: opts.restore_command.clone(),
    }];
    settings.extend(opts.spec.settings().into_iter().map(|(n, v)| Setting {
        name: n.to_string(),
        value: v,
    }));
    settings.extend(
        opts.archive_mode
            .settings(major)
            .into_iter()
            .map(|(n, v)| Setting {
                name: n.to_string(),
                value: v,
            }),
    );
    settings
}

impl BackupSummary {
    fn of(manifest: &BackupManifest) -> BackupSummary {
        BackupSummary {
            label: manifest.label.clone(),
            kind: manifest.kind,
            parent: manifest.parent.clone(),
            pg_major: manifest.pg_major,
            timeline: manifest.timeline,
            start_lsn: manifest.start_lsn.clone(),
            stop_lsn: manifest.stop_lsn.clone(),
            start_time: manifest.start_time,
            stop_time: manifest.stop_time,
            files: manifest.files.len(),
            bytes: manifest.total_size(),
            stored_bytes: manifest.stored_size(),
        }
    }
}
