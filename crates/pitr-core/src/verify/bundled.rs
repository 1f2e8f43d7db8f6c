//! Checks of bundled files: each bundle read once, in ranged reads that cover whole members,
//! every member decoded and compared with its manifest entry.

use pitr_repo::frame;
use pitr_repo::ClusterRepo;

use super::Problem;

/// Largest read of a bundle at once.
const SPAN: u64 = 8 << 20;

/// A bundled file as the manifests record it.
#[derive(Debug, Clone)]
pub(super) struct Member {
    /// The file's path (named in problems).
    pub path: String,
    /// Offset of its frame in the bundle.
    pub offset: u64,
    /// Length of its frame.
    pub stored_size: u64,
    /// Original length.
    pub size: u64,
    /// BLAKE3 of the content (hex).
    pub blake3: String,
}

impl Member {
    fn end(&self) -> u64 {
        self.offset.saturating_add(self.stored_size)
    }
}

/// Checks every member of bundle `key` (`members` in offset order); returns the bytes checked
/// and the problems, each naming the bundle and the file.
pub(super) async fn check_bundle(
    cluster: &ClusterRepo,
    key: &str,
    members: Vec<Member>,
) -> (u64, Vec<Problem>) {
    let problem = |m: &Member, p: String| Problem {
        object: format!("{key} (bytes {}..{}: {})", m.offset, m.end(), m.path),
        problem: p,
    };
    let storage = cluster.repo().storage();
    let (mut bytes, mut problems) = (0, Vec::new());
    let mut rest = members.into_iter().peekable();
    while let Some(first) = rest.next() {
        let start = first.offset;
        let mut span = vec![first];
        while let Some(next) = rest.next_if(|m| m.end().saturating_sub(start) <= SPAN) {
            span.push(next);
        }
        let end = span.iter().map(Member::end).max().unwrap_or(start);
        let got = match storage.get_range(key, start..end).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                problems.extend(span.iter().map(|m| problem(m, "missing".into())));
                continue;
            }
            Err(e) => {
                problems.extend(span.iter().map(|m| problem(m, format!("cannot read: {e}"))));
                continue;
            }
        };
        for m in &span {
            let range = usize::try_from(m.offset - start)
                .ok()
                .zip(usize::try_from(m.end() - start).ok());
            let Some(obj) = range.and_then(|(a, b)| got.get(a..b)) else {
                problems.push(problem(
                    m,
                    format!(
                        "the bundle ends at {} bytes, before this file's end",
                        start + got.len() as u64
                    ),
                ));
                continue;
            };
            match frame::decode_into(obj, &mut std::io::sink()) {
                Ok(s) if s.len != m.size || s.checksum.to_string() != m.blake3 => {
                    bytes += s.len;
                    problems.push(problem(m, format!("content differs from the backup manifest (manifest: {} bytes, blake3 {}; object: {} bytes, blake3 {})", m.size, m.blake3, s.len, s.checksum)));
                }
                Ok(s) => bytes += s.len,
                Err(e) => problems.push(problem(m, e.to_string())),
            }
        }
    }
    (bytes, problems)
}
