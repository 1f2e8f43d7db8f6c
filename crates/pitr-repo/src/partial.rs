//! The segment `pitr stream` is receiving, kept as `<cluster>/stream/<TLI>/<segment>.partial`:
//! an ordinary frame (checksummed, compressed, sealed in an encrypted repository) of the
//! segment's first bytes as received so far, republished as it grows and deleted once the
//! complete segment is stored under `wal/`.
//!
//! Why not `wal/<TLI>/<segment>.partial`: that is the name PostgreSQL itself gives the last
//! segment of a timeline when a standby is promoted, which its `archive_command` pushes
//! create-only; a streamed copy there, different from the server's, would make the promoted
//! server's archiving fail. A separate prefix keeps the two apart.

use bytes::Bytes;
use pitr_pg::WalFileName;
use pitr_storage::PutMode;

use crate::frame::{self, FrameSummary};
use crate::{ClusterRepo, RepoError, RepoResult};

/// A streamed `.partial` as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPartial {
    /// The segment it is the beginning of (a [`WalFileName::Segment`]).
    pub segment: WalFileName,
    /// Its key.
    pub key: String,
    /// Size in the repository.
    pub stored_len: u64,
}

impl ClusterRepo {
    /// Key of the streamed `.partial` of `segment`.
    pub fn stream_partial_key(&self, segment: &WalFileName) -> String {
        format!(
            "{}/stream/{}/{segment}.partial",
            self.name,
            segment.timeline().hex8()
        )
    }

    /// Publishes a frame of the beginning of `segment` (replacing the previous one), durably.
    pub async fn put_stream_partial(&self, segment: &WalFileName, obj: Vec<u8>) -> RepoResult<()> {
        let key = self.stream_partial_key(segment);
        self.repo
            .storage
            .put(&key, Bytes::from(obj), PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Removes the streamed `.partial` of `segment`, if any.
    pub async fn delete_stream_partial(&self, segment: &WalFileName) -> RepoResult<()> {
        Ok(self
            .repo
            .storage
            .delete(&self.stream_partial_key(segment))
            .await?)
    }

    /// Decodes the streamed `.partial` of `segment` into `out`, verified; `None` when there is
    /// none. On error `out` may have received bytes.
    pub async fn get_stream_partial_into<W: std::io::Write>(
        &self,
        segment: &WalFileName,
        out: &mut W,
    ) -> RepoResult<Option<FrameSummary>> {
        self.get_frame_into(self.stream_partial_key(segment), out)
            .await
    }

    /// Length and checksum of the bytes a streamed `.partial` holds (its trailer, not
    /// decompressed); `None` when there is none.
    pub async fn stream_partial_summary(
        &self,
        segment: &WalFileName,
    ) -> RepoResult<Option<FrameSummary>> {
        let key = self.stream_partial_key(segment);
        let Some(obj) = self.repo.storage.get(&key).await? else {
            return Ok(None);
        };
        frame::summary(&obj)
            .map(Some)
            .map_err(|source| RepoError::Corrupt {
                repo: self.repo.location(),
                key,
                source,
            })
    }

    /// When the streamed `.partial` of `segment` was last written, when the storage tells.
    pub async fn stream_partial_modified(
        &self,
        segment: &WalFileName,
    ) -> RepoResult<Option<std::time::SystemTime>> {
        Ok(self
            .repo
            .storage
            .modified(&self.stream_partial_key(segment))
            .await?)
    }

    /// Every streamed `.partial`, sorted by timeline then segment.
    pub async fn stream_partials(&self) -> RepoResult<Vec<StreamPartial>> {
        let prefix = format!("{}/stream/", self.name);
        let mut out: Vec<StreamPartial> = self
            .repo
            .storage
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let file = o.key.rsplit('/').next()?;
                let segment = WalFileName::parse(file.strip_suffix(".partial")?).ok()?;
                matches!(segment, WalFileName::Segment { .. }).then(|| StreamPartial {
                    segment,
                    key: o.key.clone(),
                    stored_len: o.size,
                })
            })
            .collect();
        out.sort_by_key(|p| (p.segment.timeline(), p.segment.to_string()));
        Ok(out)
    }
}
