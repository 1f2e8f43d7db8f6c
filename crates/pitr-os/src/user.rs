//! OS users, looked up through the C library (`getpwnam_r`/`getpwuid_r`), hence through NSS.

use std::io;
use std::path::PathBuf;

use nix::unistd::{Uid, User as NixUser};

/// An OS user as the password database (NSS) knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

impl From<NixUser> for User {
    fn from(u: NixUser) -> User {
        User {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    }
}

/// The user called `name`; `Ok(None)` when there is none. An error means the lookup itself
/// failed (e.g. an NSS service is unreachable).
pub fn user_by_name(name: &str) -> io::Result<Option<User>> {
    Ok(NixUser::from_name(name)?.map(User::from))
}

/// The user with `uid`; `Ok(None)` when no user has it.
pub fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    Ok(NixUser::from_uid(Uid::from_raw(uid))?.map(User::from))
}

/// The effective user ID of this process.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// True when this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The effective user of this process; `Ok(None)` when its uid has no user.
pub fn effective_user() -> io::Result<Option<User>> {
    user_by_uid(effective_uid())
}

/// The effective user's name, or `uid N` when it has none (for messages: "cannot write X as
/// postgres").
pub fn effective_user_name() -> String {
    match effective_user() {
        Ok(Some(u)) => u.name,
        _ => format!("uid {}", effective_uid()),
    }
}

/// Whether `user` may create files in the existing directory `dir`, by the mode bits: every
/// ancestor searchable and `dir` writable and searchable, through the owner, a group (primary or
/// supplementary) or other. Root may always. ACLs and mount options are not read, so `true` is
/// "the mode bits allow it", and `false` is a refusal unless an ACL grants more.
pub fn may_create_in(dir: &std::path::Path, user: &User) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return Ok(true);
    }
    let groups: Vec<u32> = match std::ffi::CString::new(user.name.clone()) {
        Ok(name) => nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![user.gid]),
        Err(_) => vec![user.gid],
    };
    let allows = |path: &std::path::Path, want: u32| -> io::Result<bool> {
        let md = std::fs::metadata(path)?;
        let mode = md.mode();
        let bits = if md.uid() == user.uid {
            mode >> 6
        } else if groups.contains(&md.gid()) {
            mode >> 3
        } else {
            mode
        };
        Ok(bits & want == want)
    };
    for ancestor in dir.ancestors().skip(1) {
        if !allows(ancestor, 0o1)? {
            return Ok(false);
        }
    }
    allows(dir, 0o3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_uid() {
        let by_name = user_by_name("root").unwrap().expect("root exists");
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.home, PathBuf::from("/root"));
        assert_eq!(user_by_uid(0).unwrap(), Some(by_name));
    }

    #[test]
    fn postgres_is_found_by_name_and_by_uid() {
        // The test machines run PostgreSQL as the `postgres` OS user (see TEST-INFRA).
        let pg = user_by_name("postgres")
            .unwrap()
            .expect("the postgres OS user exists on test machines");
        assert_eq!(pg.name, "postgres");
        assert_ne!(pg.uid, 0);
        let again = user_by_uid(pg.uid).unwrap().expect("found by its uid");
        assert_eq!(again, pg);
    }

    #[test]
    fn unknown_users_are_none_not_errors() {
        assert_eq!(user_by_name("pitr-no-such-user-x7").unwrap(), None);
        assert_eq!(user_by_name("bad\0name").unwrap(), None);
        // A uid no test machine gives out (nobody is 65534; 4294967294 is (uid_t)-2).
        assert_eq!(user_by_uid(4_000_000_123).unwrap(), None);
    }

    #[test]
    fn the_effective_user_is_this_process() {
        let uid = effective_uid();
        assert_eq!(is_root(), uid == 0);
        // /proc/self belongs to the effective user.
        let proc_uid =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(uid, proc_uid);
        let name = effective_user_name();
        match effective_user().unwrap() {
            Some(u) => assert_eq!(u.name, name),
            None => assert_eq!(name, format!("uid {uid}")),
        }
    }
}
