//! `pitr info`: what a repository holds, per cluster: identity and archived WAL per timeline,
//! with gaps.

use pitr_pg::{SegNo, TimelineId, WalFileName, WalSegSize};
use pitr_repo::{ClusterIdentity, Repo, RepoResult};
use serde::Serialize;

/// The whole repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    /// Repository location.
    pub repository: String,
    /// Repository format (absent for an uninitialised directory).
    pub repo_format: Option<u32>,
    /// Whether everything stored is encrypted (the key was needed to read this report).
    pub encrypted: bool,
    /// The cipher and how the key file becomes the key, when encrypted.
    pub encryption: Option<pitr_repo::crypt::EncryptionInfo>,
    /// Clusters, by name.
    pub clusters: Vec<ClusterInfo>,
}

/// One cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// Recorded identity (in JSON the system identifier is a string: it exceeds 2^53).
    #[serde(serialize_with = "ser_identity")]
    pub identity: Option<ClusterIdentity>,
    /// Archived WAL, per timeline.
    pub timelines: Vec<TimelineWal>,
    /// Complete base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// What recovery can reach: from the oldest usable backup to the end of archived WAL.
    pub window: Option<crate::restore::choose::Window>,
    /// What keeps part of that window out of reach (holes, missing history files, broken
    /// incremental chains), as `pitr verify` reports it.
    pub window_problems: Vec<crate::verify::Problem>,
    /// The timeline `latest` follows branched off one that went on: both reaches, and the
    /// option that follows the other.
    pub timeline_warnings: Vec<crate::restore::choose::BranchWarning>,
    /// Where WAL received by `pitr stream` ends: its newest `.partial` (absent when the
    /// repository holds none).
    pub streamed: Option<StreamedEnd>,
}

/// The segment `pitr stream` is receiving, as kept in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct StreamedEnd {
    /// Timeline.
    pub timeline: u32,
    /// The segment (served by `archive-get` under this name until it is stored complete).
    pub segment: String,
    /// Where the streamed WAL ends.
    pub end_lsn: String,
    /// Bytes of the segment received.
    pub bytes: u64,
    /// When the `.partial` was last written (RFC 3339), when the storage tells.
    pub written_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
}

/// The newest streamed `.partial` of `cluster`, read from its trailer.
pub async fn streamed_end(
    cluster: &pitr_repo::ClusterRepo,
    seg_size: Option<WalSegSize>,
) -> RepoResult<Option<StreamedEnd>> {
    let (Some(size), Some(newest)) = (seg_size, cluster.stream_partials().await?.pop()) else {
        return Ok(None);
    };
    let Some(summary) = cluster.stream_partial_summary(&newest.segment).await? else {
        return Ok(None);
    };
    let start = newest
        .segment
        .segno(size)
        .and_then(|n| size.start_of(n))
        .unwrap_or_default();
    let written = cluster.stream_partial_modified(&newest.segment).await?;
    let ts = written.and_then(|t| jiff::Timestamp::try_from(t).ok());
    Ok(Some(StreamedEnd {
        timeline: newest.segment.timeline().0,
        segment: newest.segment.to_string(),
        end_lsn: pitr_pg::Lsn(start.0 + summary.len).to_string(),
        bytes: summary.len,
        written_at: ts.map(|t| t.to_string()),
        age_seconds: written
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs_f64()),
    }))
}

/// One base backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    /// Label.
    pub label: String,
    /// `full` or `incr`.
    pub kind: String,
    /// Timeline it was taken on.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Consistency (stop) LSN.
    pub stop_lsn: String,
    /// Start time.
    pub start_time: String,
    /// Stop time: the earliest time this backup can recover to.
    pub stop_time: String,
    /// Original bytes.
    pub size: u64,
    /// Bytes in the repository.
    pub stored_size: u64,
    /// Files.
    pub files: usize,
    /// Blocks that failed data page checksum verification.
    pub checksum_failures: usize,
    /// Pinned (`pitr pin`, `backup --keep`): expire never removes it.
    pub pinned: bool,
}

/// Archived WAL of one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineWal {
    /// Timeline.
    pub timeline: u32,
    /// Whether its `.history` file is archived (timeline 1 has none).
    pub history_archived: bool,
    /// Complete segments archived.
    pub segments: u64,
    /// First segment archived.
    pub first: Option<String>,
    /// Last segment archived.
    pub last: Option<String>,
    /// `.partial` segments archived.
    pub partials: Vec<String>,
    /// Missing runs of segments between `first` and `last`, as `[first missing, last missing]`.
    pub gaps: Vec<[String; 2]>,
    /// Bytes used in the repository.
    pub stored_bytes: u64,
}

/// Gathers the report.
pub async fn info(repo: &Repo) -> RepoResult<RepoInfo> {
    let marker = repo.marker().await?;
    let mut clusters = Vec::new();
    for name in repo.clusters().await? {
        let cluster = repo.cluster(&name)?;
        let identity = cluster.identity().await?;
        let seg_size = identity
            .as_ref()
            .and_then(|i| WalSegSize::new(i.wal_seg_size).ok());
        let entries = cluster.list_wal().await?;
        let mut tlis: Vec<TimelineId> = entries.iter().map(|e| e.name.timeline()).collect();
        tlis.dedup();
        let timelines = tlis
            .into_iter()
            .map(|tli| {
                let mine: Vec<_> = entries
                    .iter()
                    .filter(|e| e.name.timeline() == tli)
                    .collect();
                let mut segs: Vec<SegNo> = Vec::new();
                let mut t = TimelineWal {
                    timeline: tli.0,
                    history_archived: false,
                    segments: 0,
                    first: None,
                    last: None,
                    partials: Vec::new(),
                    gaps: Vec::new(),
                    stored_bytes: mine.iter().map(|e| e.stored_len).sum(),
                };
                for e in &mine {
                    match e.name {
                        WalFileName::History { .. } => t.history_archived = true,
                        WalFileName::Partial { .. } => t.partials.push(e.name.to_string()),
                        WalFileName::Segment { .. } => {
                            t.segments += 1;
                            if let Some(n) = seg_size.and_then(|s| e.name.segno(s)) {
                                segs.push(n);
                            }
                        }
                        WalFileName::Backup { .. } => {}
                    }
                }
                segs.sort();
                if let Some(size) = seg_size {
                    t.first = segs.first().map(|s| s.file_name(tli, size));
                    t.last = segs.last().map(|s| s.file_name(tli, size));
                    t.gaps = gaps(&segs)
                        .into_iter()
                        .map(|(a, b)| [a.file_name(tli, size), b.file_name(tli, size)])
                        .collect();
                }
                t
            })
            .collect();
        let manifests = cluster.backups().await?;
        // A damaged history file must not hide the rest of the report (`verify` names it).
        let (window, timeline_warnings) =
            match crate::restore::recovery_window(&cluster, &manifests).await {
                Ok(Some((w, b))) => (Some(w), b),
                _ => (None, Vec::new()),
            };
        let window_problems = crate::verify::window_problems(&entries, &manifests);
        let streamed = streamed_end(&cluster, seg_size).await?;
        let pins: Vec<String> = cluster.pins().await?.into_iter().map(|p| p.label).collect();
        let backups = manifests
            .into_iter()
            .map(|m| BackupInfo {
                kind: m.kind.to_string(),
                timeline: m.timeline,
                size: m.total_size(),
                stored_size: m.stored_size(),
                files: m.files.len(),
                checksum_failures: m.files.iter().map(|f| f.checksum_failures.len()).sum(),
                start_time: m.start_time.to_string(),
                stop_time: m.stop_time.to_string(),
                start_lsn: m.start_lsn,
                stop_lsn: m.stop_lsn,
                pinned: pins.contains(&m.label),
                label: m.label,
            })
            .collect();
        clusters.push(ClusterInfo {
            name,
            identity,
            timelines,
            backups,
            window,
            window_problems,
            timeline_warnings,
            streamed,
        });
    }
    Ok(RepoInfo {
        repository: repo.location(),
        repo_format: marker.map(|m| m.repo_format),
        encrypted: repo.encrypted(),
        encryption: repo.encryption().cloned(),
        clusters,
    })
}

fn ser_identity<S: serde::Serializer>(
    id: &Option<ClusterIdentity>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    match id {
        None => s.serialize_none(),
        Some(i) => {
            let mut m = s.serialize_struct("ClusterIdentity", 3)?;
            m.serialize_field("system_id", &i.system_id.to_string())?;
            m.serialize_field("pg_major", &i.pg_major)?;
            m.serialize_field("wal_seg_size", &i.wal_seg_size)?;
            m.end()
        }
    }
}

/// Missing runs in a sorted list of segment numbers.
pub fn gaps(sorted: &[SegNo]) -> Vec<(SegNo, SegNo)> {
    sorted
        .windows(2)
        .filter(|w| w[1].0 > w[0].0 + 1)
        .map(|w| (SegNo(w[0].0 + 1), SegNo(w[1].0 - 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_runs() {
        let s: Vec<SegNo> = [1, 2, 3, 5, 9, 10].into_iter().map(SegNo).collect();
        assert_eq!(gaps(&s), vec![(SegNo(4), SegNo(4)), (SegNo(6), SegNo(8))]);
        assert!(gaps(&[]).is_empty());
    }
}
