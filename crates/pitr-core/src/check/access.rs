//! The `repository access` line: can the OS user that runs `archive_command` (the server's, the
//! owner of its data directory) create files where archive-push puts them? Read from the mode
//! bits of the repository's directories on this host; said plainly when it cannot be checked
//! (a server on another host, an S3 repository).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pitr_proto::ServerInfo;
use pitr_repo::ClusterRepo;

use super::{CheckItem, Status};

const NAME: &str = "repository access";

/// The line for `cluster`'s repository and the server `info` describes, and whether it was
/// read from the mode bits only (a refusal then may be wrong: an ACL may grant more).
pub fn access_item(cluster: &ClusterRepo, info: &ServerInfo) -> (CheckItem, bool) {
    match access(cluster, info) {
        Access::Item(item) => (item, false),
        Access::ByModeBits(item) => (item, true),
    }
}

enum Access {
    Item(CheckItem),
    ByModeBits(CheckItem),
}

fn access(cluster: &ClusterRepo, info: &ServerInfo) -> Access {
    let location = cluster.repo().location();
    if location.contains("://") {
        return Access::Item(CheckItem::new(
            NAME,
            Status::Skipped,
            format!("not checked: {location} is object storage; archive_command uses its own credentials (the round trip proves them)"),
        ));
    }
    let owner = match std::fs::metadata(&info.data_directory) {
        Ok(md) => md.uid(),
        Err(e) => {
            return Access::Item(CheckItem::new(
                NAME,
                Status::Skipped,
                format!(
                    "not checked: the data directory {} cannot be read here ({e}), so the OS user running archive_command is unknown",
                    info.data_directory.display()
                ),
            ))
        }
    };
    let user = match pitr_os::user_by_uid(owner) {
        Ok(Some(u)) => u,
        _ => {
            return Access::Item(CheckItem::new(
                NAME,
                Status::Skipped,
                format!("not checked: uid {owner} (owner of the data directory) has no user name"),
            ))
        }
    };
    let dir = deepest_existing(
        &PathBuf::from(&location),
        &[
            cluster.name().to_string(),
            "wal".to_string(),
            format!("{:08X}", info.timeline.0),
        ],
    );
    let hint = format!(
        "chown -R {} {location} (or create the repository as that user: sudo -u {} pitr init --repo {location})",
        user.name, user.name
    );
    let why_not = match pitr_os::probe_create_as(&dir, &user) {
        pitr_os::Probe::Created => {
            return Access::Item(CheckItem::new(
                NAME,
                Status::Ok,
                format!(
                    "OS user {} (runs archive_command) created and removed a file in {}",
                    user.name,
                    dir.display()
                ),
            ))
        }
        pitr_os::Probe::Refused(reason) => {
            return Access::Item(
                CheckItem::new(
                    NAME,
                    Status::Failed,
                    format!(
                        "OS user {} (runs archive_command: it owns the data directory) cannot write in {}: {reason}",
                        user.name,
                        dir.display()
                    ),
                )
                .hint(format!("{hint}; or grant it with setfacl -R -m u:{}:rwX {location}", user.name)),
            )
        }
        pitr_os::Probe::CannotActAs(why) => why,
    };
    Access::ByModeBits(match pitr_os::may_create_in(&dir, &user) {
        Ok(true) => CheckItem::new(
            NAME,
            Status::Ok,
            format!(
                "OS user {} (runs archive_command) may write in {}, by the mode bits (no real write: {why_not})",
                user.name,
                dir.display()
            ),
        ),
        Ok(false) => CheckItem::new(
            NAME,
            Status::Failed,
            format!(
                "OS user {} (runs archive_command: it owns the data directory) cannot write in {}, by the mode bits (no real write: {why_not})",
                user.name,
                dir.display()
            ),
        )
        .hint(hint),
        Err(e) => CheckItem::new(
            NAME,
            Status::Skipped,
            format!("not checked: cannot read {}: {e}", dir.display()),
        ),
    })
}

/// The deepest of `root`, `root/a`, `root/a/b`, … that exists.
fn deepest_existing(root: &Path, parts: &[String]) -> PathBuf {
    let mut dir = root.to_path_buf();
    for p in parts {
        let next = dir.join(p);
        if !next.is_dir() {
            break;
        }
        dir = next;
    }
    dir
}
