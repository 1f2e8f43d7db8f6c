//! OS users: who we run as, and whom restored files belong to.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

/// The effective uid of this process.
pub fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// True when running as root.
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

fn passwd() -> Vec<OsUser> {
    let Ok(text) = fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(OsUser {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Looks up a user by name, or by numeric uid.
pub fn lookup_user(name_or_uid: &str) -> Option<OsUser> {
    let users = passwd();
    if let Some(u) = users.iter().find(|u| u.name == name_or_uid) {
        return Some(u.clone());
    }
    let uid: u32 = name_or_uid.parse().ok()?;
    Some(user_by_uid(uid, None))
}

/// The user with `uid` (a nameless stand-in when /etc/passwd does not list it).
pub fn user_by_uid(uid: u32, gid: Option<u32>) -> OsUser {
    passwd()
        .into_iter()
        .find(|u| u.uid == uid)
        .unwrap_or_else(|| OsUser {
            name: uid.to_string(),
            uid,
            gid: gid.unwrap_or(uid),
            home: "/".into(),
        })
}

/// The owner of `path`, or of its nearest existing ancestor.
pub fn owner_of_nearest(path: &Path) -> Option<OsUser> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if let Ok(m) = fs::metadata(cur) {
            return Some(user_by_uid(m.uid(), Some(m.gid())));
        }
        p = cur.parent();
    }
    None
}
