//! The OS user who will own the restored files: `--owner`, else the owner of the data directory
//! (or of its nearest existing parent). Only root can give files away, and root itself is
//! refused: PostgreSQL does not run as root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::restore::RestoreError;

/// An OS user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OsUser {
    /// Name (or the uid as text when it has none).
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

impl From<pitr_os::User> for OsUser {
    fn from(u: pitr_os::User) -> OsUser {
        OsUser {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
            home: u.home.to_string_lossy().into_owned(),
        }
    }
}

/// Looks up a user by name, or by numeric uid (through NSS).
pub fn lookup_user(name_or_uid: &str) -> Option<OsUser> {
    if let Ok(Some(u)) = pitr_os::user_by_name(name_or_uid) {
        return Some(u.into());
    }
    let uid: u32 = name_or_uid.parse().ok()?;
    Some(user_by_uid(uid, None))
}

/// The user with `uid` (a nameless stand-in, with `gid` or the uid as its group, when the
/// password database does not know it).
pub fn user_by_uid(uid: u32, gid: Option<u32>) -> OsUser {
    match pitr_os::user_by_uid(uid) {
        Ok(Some(u)) => u.into(),
        _ => OsUser {
            name: uid.to_string(),
            uid,
            gid: gid.unwrap_or(uid),
            home: "/".into(),
        },
    }
}

/// The owner of `path`, or of its nearest existing ancestor.
pub fn owner_of_nearest(path: &Path) -> Option<OsUser> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if let Ok(m) = std::fs::metadata(cur) {
            return Some(user_by_uid(m.uid(), Some(m.gid())));
        }
        p = cur.parent();
    }
    None
}

/// Whom the restored files will belong to: `None` when not running as root (they are ours);
/// refused when `--owner` names no user, names another user without root, or the owner would be
/// root.
pub fn resolve_owner(pgdata: &Path, asked: Option<&str>) -> Result<Option<OsUser>, RestoreError> {
    let asked_user = match asked {
        Some(name) => {
            Some(lookup_user(name).ok_or_else(|| RestoreError::UnknownUser(name.into()))?)
        }
        None => None,
    };
    if !pitr_os::is_root() {
        if let Some(u) = asked_user {
            if u.uid != pitr_os::effective_uid() {
                return Err(RestoreError::NotRoot { user: u.name });
            }
        }
        return Ok(None);
    }
    let (user, reason) = match asked_user {
        Some(u) => (u, "--owner".to_string()),
        None => {
            let u = owner_of_nearest(pgdata).ok_or_else(|| RestoreError::OwnerIsRoot {
                reason: format!("no existing directory above {}", pgdata.display()),
            })?;
            let why = if pgdata.exists() {
                format!("{} belongs to {}", pgdata.display(), u.name)
            } else {
                format!(
                    "{} does not exist and its parent belongs to {}",
                    pgdata.display(),
                    u.name
                )
            };
            (u, why)
        }
    };
    if user.uid == 0 {
        return Err(RestoreError::OwnerIsRoot { reason });
    }
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name_or_uid_and_unknown_uids_get_a_stand_in() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(lookup_user("0"), Some(root));
        assert_eq!(lookup_user("pitr-no-such-user-x7"), None);
        let ghost = lookup_user("4000000123").unwrap();
        assert_eq!(ghost.name, "4000000123");
        assert_eq!((ghost.uid, ghost.gid), (4_000_000_123, 4_000_000_123));
        assert_eq!(user_by_uid(4_000_000_123, Some(7)).gid, 7);
    }

    #[test]
    fn the_owner_of_a_missing_directory_is_the_owner_of_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let me = pitr_os::effective_uid();
        let u = owner_of_nearest(&d.path().join("not/yet")).unwrap();
        assert_eq!(u.uid, me);
    }
}
