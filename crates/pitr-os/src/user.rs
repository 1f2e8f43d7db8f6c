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

/// What a real write as another user found (see [`probe_create_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A file was created (exclusively) and removed in the directory, as that user.
    Created,
    /// Creating it failed; the reason, as the OS gave it.
    Refused(String),
    /// This process cannot act as that user (neither that user nor root, or `setpriv` is
    /// missing): nothing was tried.
    CannotActAs(String),
}

/// Creates and removes an empty file in `dir` as `user`, the way a process of that user would
/// (so ACLs, read-only mounts and supplementary groups count, unlike [`may_create_in`]): directly
/// when this process is that user; as root through util-linux's `setpriv` (`--reuid --regid
/// --init-groups`, the user's groups as a login would set them).
pub fn probe_create_as(dir: &std::path::Path, user: &User) -> Probe {
    let name = format!(".pitr-check-{}", std::process::id());
    if effective_uid() == user.uid {
        let path = dir.join(&name);
        return match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
                Probe::Created
            }
            Err(e) => Probe::Refused(e.to_string()),
        };
    }
    if !is_root() {
        return Probe::CannotActAs(format!(
            "this process runs as {}, not as {} or root",
            effective_user_name(),
            user.name
        ));
    }
    // `set -C`: the redirection creates the file exclusively, as create_new above.
    let script = r#"set -C; f="$1/$2"; : > "$f" && rm -f "$f""#;
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .args(["--", "/bin/sh", "-c", script, "sh"])
        .arg(dir)
        .arg(&name)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Err(e) => Probe::CannotActAs(format!("cannot run setpriv (util-linux): {e}")),
        Ok(o) if o.status.success() => Probe::Created,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            // sh says "sh: 1: cannot create DIR/NAME: Permission denied".
            let reason = err
                .lines()
                .last()
                .map(|l| l.rsplit(": ").next().unwrap_or(l).trim().to_string())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("exit status {}", o.status));
            if err.trim_start().starts_with("setpriv") {
                Probe::CannotActAs(reason)
            } else {
                Probe::Refused(reason)
            }
        }
    }
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

    #[test]
    fn a_real_write_as_another_user_sees_what_the_mode_bits_say_and_more() {
        let dir = tempfile::tempdir().unwrap();
        let me = effective_user().unwrap().unwrap();
        assert_eq!(probe_create_as(dir.path(), &me), Probe::Created);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file stays"
        );
        if !is_root() {
            return;
        }
        let pg = user_by_name("postgres").unwrap().unwrap();
        // Root's 0755 directory: postgres may not create in it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        match probe_create_as(dir.path(), &pg) {
            Probe::Refused(why) => assert!(why.contains("Permission denied"), "{why}"),
            other => panic!("postgres wrote in root's 0755 directory: {other:?}"),
        }
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        assert_eq!(probe_create_as(dir.path(), &pg), Probe::Created);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file stays"
        );
    }
}
