//! The OS user this process runs as, for permission messages.

use std::os::unix::fs::MetadataExt;

/// The effective OS user's name (or `uid N` when it has no name), e.g. `postgres`.
pub fn current_os_user() -> String {
    let uid = match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid(),
        Err(_) => return std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}
