//! Recovery settings: what tells PostgreSQL to recover, from where, and up to where.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::finish::fsync_dir;
use super::write::tmp_path;
use crate::restore::choose::show_time;
use crate::restore::conf::{comment_out_targets, rewrite_auto_conf};
use crate::restore::layout::Layout;
use crate::restore::{RestoreError, RestorePlan};

/// Writes `backup_label`, `tablespace_map`, the recovery settings (earlier recovery targets in
/// `postgresql.conf` commented out), then the signal file; returns (files written, lines
/// commented out).
pub fn write_recovery_files(
    plan: &RestorePlan,
    layout: &Layout,
) -> Result<(Vec<String>, Vec<String>), RestoreError> {
    let m = plan.manifest();
    let dir = &plan.pgdata;
    let mut written = Vec::new();
    let remove_if_present = |name: &str| -> Result<(), RestoreError> {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RestoreError::io("remove", &p)(e)),
        }
    };
    for name in [
        "recovery.signal",
        "standby.signal",
        "backup_label",
        "tablespace_map",
    ] {
        remove_if_present(name)?;
    }
    let write = |name: &str, content: &[u8]| -> Result<(), RestoreError> {
        let p = dir.join(name);
        write_small(&p, content, 0o600).map_err(RestoreError::io("write", &p))
    };
    if plan.writes_backup_label {
        write("backup_label", m.backup_label.as_bytes())?;
        written.push("backup_label".to_string());
    }
    if plan.writes_tablespace_map {
        let map = rewrite_tablespace_map(
            m.tablespace_map.as_deref().unwrap_or(""),
            &layout.tablespaces,
        );
        write("tablespace_map", map.as_bytes())?;
        written.push("tablespace_map".to_string());
    }
    let mut commented = Vec::new();
    let auto = dir.join("postgresql.auto.conf");
    let original = match std::fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RestoreError::io("read", &auto)(e)),
    };
    let settings: Vec<(&str, String)> = plan
        .settings
        .iter()
        .map(|s| (s.name.as_str(), s.value.clone()))
        .collect();
    let header = format!(
        "backup {}, {}, written by pitr {} at {}",
        m.label,
        plan.target,
        env!("CARGO_PKG_VERSION"),
        show_time(Timestamp::now())
    );
    let edit = rewrite_auto_conf(&original, &settings, &header);
    commented.extend(
        edit.commented
            .iter()
            .map(|l| format!("postgresql.auto.conf: {}", l.trim())),
    );
    write("postgresql.auto.conf", edit.text.as_bytes())?;
    written.push("postgresql.auto.conf".to_string());

    let main_conf = dir.join("postgresql.conf");
    if let Ok(text) = std::fs::read_to_string(&main_conf) {
        let edit = comment_out_targets(&text);
        if edit.changed {
            let mode = std::fs::metadata(&main_conf)
                .map(|md| std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777)
                .unwrap_or(0o600);
            write_small(&main_conf, edit.text.as_bytes(), mode)
                .map_err(RestoreError::io("write", &main_conf))?;
            commented.extend(
                edit.commented
                    .iter()
                    .map(|l| format!("postgresql.conf: {}", l.trim())),
            );
            written.push("postgresql.conf (recovery targets commented out)".to_string());
        }
    }
    // The signal file last: it only takes effect with the settings above in place.
    fsync_dir(dir).map_err(RestoreError::io("fsync", dir))?;
    write(&plan.signal_file, b"")?;
    written.push(plan.signal_file.clone());
    fsync_dir(dir).map_err(RestoreError::io("fsync", dir))?;
    Ok((written, commented))
}

/// Writes a small file atomically (temp, fsync, rename) with `mode`.
pub fn write_small(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Escapes a path for `tablespace_map` as PostgreSQL does (`\` before `\n`, `\r` and `\`).
pub fn escape_map_path(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\n' | '\r' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Rewrites `tablespace_map` (lines `<oid> <escaped path>`) with the restored locations, keeping
/// lines of unmapped OIDs and adding missing ones.
pub fn rewrite_tablespace_map(original: &str, locations: &BTreeMap<u32, PathBuf>) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    // Escaped newlines are part of a path: join physical lines that end with a backslash-escape.
    let mut logical: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = original.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\n' => logical.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        logical.push(cur);
    }
    for line in logical {
        let oid = line
            .split_once(' ')
            .and_then(|(o, _)| o.parse::<u32>().ok());
        match oid.and_then(|o| locations.get(&o).map(|p| (o, p))) {
            Some((o, p)) => {
                seen.insert(o);
                out.push_str(&format!("{o} {}\n", escape_map_path(&p.to_string_lossy())));
            }
            None if line.trim().is_empty() => {}
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    for (o, p) in locations {
        if !seen.contains(o) {
            out.push_str(&format!("{o} {}\n", escape_map_path(&p.to_string_lossy())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tablespace_map_paths() {
        let orig = "16390 /srv/ts/fast\n16391 /srv/ts/we\\\\ird\\\nname\n";
        let map = BTreeMap::from([(16390, PathBuf::from("/restore/fast"))]);
        assert_eq!(
            rewrite_tablespace_map(orig, &map),
            "16390 /restore/fast\n16391 /srv/ts/we\\\\ird\\\nname\n"
        );
        let map = BTreeMap::from([
            (16390, PathBuf::from("/r/a")),
            (16391, PathBuf::from("/r/new\nline")),
            (16392, PathBuf::from("/r/c")),
        ]);
        assert_eq!(
            rewrite_tablespace_map(orig, &map),
            "16390 /r/a\n16391 /r/new\\\nline\n16392 /r/c\n"
        );
    }
}
