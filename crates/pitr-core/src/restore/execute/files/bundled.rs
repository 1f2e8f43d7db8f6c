//! Bundled files: the members of one bundle restored in bundle order, the bundle read in
//! ranged reads of up to [`SPAN`] bytes that each cover whole members (never one request per
//! small file). With `--delta`, members found intact are kept first and only the spans of the
//! others are read.

use pitr_repo::stored::StoredError;

use super::write::FileAction;
use super::{decide, restore_one, retrying, FileJob, Outcome};
use crate::restore::RestoreError;

/// Largest read of a bundle at once (members are smaller than [`pitr_repo::BUNDLE_LIMIT`]).
const SPAN: u64 = 8 << 20;

/// Where a member's frame lies in its bundle.
fn at(j: &FileJob) -> (u64, u64) {
    let offset = j.file.bundle.map_or(0, |b| b.offset);
    (offset, offset.saturating_add(j.file.stored_size))
}

/// Restores the bundled files `members` of bundle `key`.
pub(super) async fn restore_bundle(
    key: &str,
    members: Vec<FileJob>,
) -> Result<Vec<Outcome>, RestoreError> {
    let mut outcomes = Vec::with_capacity(members.len());
    let mut to_fetch = Vec::new();
    for job in members {
        match decide(&job).await? {
            FileAction::Fetch => to_fetch.push(job),
            other => outcomes.push(restore_one(job, Some(other), None).await?),
        }
    }
    to_fetch.sort_by_key(|j| at(j).0);
    let mut rest = to_fetch.into_iter().peekable();
    while let Some(first) = rest.next() {
        let (start, mut end) = at(&first);
        let mut span = vec![first];
        while let Some(next) = rest.next_if(|j| at(j).1.saturating_sub(start) <= SPAN) {
            end = end.max(at(&next).1);
            span.push(next);
        }
        let storage = span[0].storage.clone();
        let bytes = retrying(&span[0], key, || async {
            storage
                .get_range(key, start..end)
                .await
                .map_err(StoredError::Storage)
        })
        .await?;
        for mut job in span {
            let (from, to) = at(&job);
            let member = usize::try_from(from - start)
                .ok()
                .zip(usize::try_from(to - start).ok())
                .and_then(|(a, b)| bytes.get(a..b).map(|_| bytes.slice(a..b)));
            let Some(member) = member else {
                // Shorter than the manifest says (the plan checked its size: changed since).
                return Err(RestoreError::MissingObject {
                    repo: job.repo.clone(),
                    key: key.to_string(),
                    path: job.file.path.clone(),
                    label: job.label.clone(),
                });
            };
            // Errors name the bundle and where the file lies in it.
            job.key = format!("{key} (bytes {from}..{to}: {})", job.file.path);
            outcomes.push(restore_one(job, Some(FileAction::Fetch), Some(member)).await?);
        }
    }
    Ok(outcomes)
}
