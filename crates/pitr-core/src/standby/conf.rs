//! The standby settings pitr writes: one block in `postgresql.auto.conf` (replaced as a whole
//! when written again; earlier assignments of the same settings outside pitr's blocks are
//! commented out) and `standby.signal`.

use std::fs;
use std::path::Path;

use pitr_proto::{Endpoint, Host};

use super::StandbyError;
use crate::restore::conf::{quote_value, setting_name, BLOCK_BEGIN, BLOCK_END};
use crate::restore::execute::recovery::write_small;
use crate::restore::OsUser;

/// First line of pitr's standby block.
pub const STANDBY_BEGIN: &str = "# pitr standby: begin";
/// Last line of pitr's standby block.
pub const STANDBY_END: &str = "# pitr standby: end";
/// Prefix of a line the standby block replaces.
pub const DISABLED: &str = "# disabled by pitr standby: ";

/// What makes a data directory a streaming standby.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StandbySettings {
    /// `primary_conninfo`: how the WAL receiver reaches the primary (no password: the
    /// standby's OS user finds it in its `.pgpass`).
    pub primary_conninfo: String,
    /// `primary_slot_name`.
    pub slot: Option<String>,
    /// `restore_command` (`pitr archive-get` from the repository), so the standby catches up
    /// from the repository when the primary no longer has the WAL.
    pub restore_command: Option<String>,
    /// Further settings (`--set NAME=VALUE`), e.g. `port` for a standby on the primary's host.
    pub extra: Vec<(String, String)>,
}

impl StandbySettings {
    /// The settings as (name, unquoted value), in the order written.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "primary_conninfo".to_string(),
            self.primary_conninfo.clone(),
        )];
        if let Some(s) = &self.slot {
            out.push(("primary_slot_name".into(), s.clone()));
        }
        if let Some(r) = &self.restore_command {
            out.push(("restore_command".into(), r.clone()));
        }
        out.push(("recovery_target_timeline".into(), "latest".into()));
        out.extend(self.extra.iter().cloned());
        out
    }
}

/// Quotes a value for a libpq connection string (single quotes, `\` before `'` and `\`).
pub fn conninfo_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A connection string for the server at `endpoint` as `user` (plus `extra` keywords).
pub fn conninfo(endpoint: &Endpoint, user: &str, extra: &[(&str, &str)]) -> String {
    let host = match &endpoint.host {
        Host::Socket(d) => d.display().to_string(),
        Host::Tcp(h) => h.clone(),
    };
    let mut parts = vec![
        format!("host={}", conninfo_value(&host)),
        format!("port={}", endpoint.port),
        format!("user={}", conninfo_value(user)),
    ];
    for (k, v) in extra {
        parts.push(format!("{k}={}", conninfo_value(v)));
    }
    parts.join(" ")
}

/// The new text of `postgresql.auto.conf`: a previous standby block dropped, assignments of
/// the same settings outside pitr's blocks commented out, the new block appended.
pub fn rewrite(original: &str, settings: &[(String, String)]) -> String {
    let names: Vec<String> = settings.iter().map(|(n, _)| n.to_lowercase()).collect();
    let mut text = String::with_capacity(original.len() + 512);
    let mut in_standby = false;
    let mut in_restore = false;
    for line in original.lines() {
        let t = line.trim_start();
        if t.starts_with(STANDBY_BEGIN) {
            in_standby = true;
            continue;
        }
        if in_standby {
            in_standby = !t.starts_with(STANDBY_END);
            continue;
        }
        if t.starts_with(BLOCK_BEGIN) {
            in_restore = true;
        } else if t.starts_with(BLOCK_END) {
            in_restore = false;
        }
        match setting_name(line) {
            Some(n) if !in_restore && names.contains(&n) => {
                text.push_str(DISABLED);
                text.push_str(line);
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(STANDBY_BEGIN);
    text.push('\n');
    for (name, value) in settings {
        text.push_str(&format!("{name} = {}\n", quote_value(value)));
    }
    text.push_str(STANDBY_END);
    text.push('\n');
    text
}

/// Writes the standby block into `pgdata/postgresql.auto.conf`, then `standby.signal` (last:
/// it only takes effect with the settings in place), owned by `owner` when given. Returns the
/// files written.
pub fn write(
    pgdata: &Path,
    settings: &StandbySettings,
    owner: Option<&OsUser>,
) -> Result<Vec<String>, StandbyError> {
    let auto = pgdata.join("postgresql.auto.conf");
    let original = match fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(StandbyError::io("read", &auto)(e)),
    };
    let text = rewrite(&original, &settings.pairs());
    write_small(&auto, text.as_bytes(), 0o600).map_err(StandbyError::io("write", &auto))?;
    chown(&auto, owner)?;
    let signal = pgdata.join("standby.signal");
    write_small(&signal, b"", 0o600).map_err(StandbyError::io("write", &signal))?;
    chown(&signal, owner)?;
    crate::restore::execute::finish::fsync_dir(pgdata)
        .map_err(StandbyError::io("fsync", pgdata))?;
    Ok(vec!["postgresql.auto.conf".into(), "standby.signal".into()])
}

/// Gives `path` to `owner` (running as root).
pub fn chown(path: &Path, owner: Option<&OsUser>) -> Result<(), StandbyError> {
    if let Some(u) = owner {
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid))
            .map_err(StandbyError::io("chown", path))?;
    }
    Ok(())
}

/// Parses `--set NAME=VALUE`.
pub fn parse_setting(item: &str) -> Result<(String, String), StandbyError> {
    let bad = || {
        StandbyError::Usage(format!(
            "invalid --set {item:?}\nhint: use NAME=VALUE, e.g. --set port=5433"
        ))
    };
    let (n, v) = item.split_once('=').ok_or_else(bad)?;
    let n = n.trim();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(bad());
    }
    Ok((n.to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_replaces_an_earlier_one_and_disables_earlier_settings() {
        let s = StandbySettings {
            primary_conninfo: "host=/tmp port=5432 user=postgres".into(),
            slot: Some("s1".into()),
            restore_command: None,
            extra: vec![("port".into(), "5433".into())],
        };
        let original = "work_mem = '4MB'\nprimary_conninfo = 'host=old'\nport=5432\n";
        let once = rewrite(original, &s.pairs());
        assert!(once.contains("# disabled by pitr standby: primary_conninfo = 'host=old'"));
        assert!(once.contains("# disabled by pitr standby: port=5432"));
        assert!(once.contains("primary_slot_name = 's1'\n"));
        let twice = rewrite(&once, &s.pairs());
        assert_eq!(twice.matches(STANDBY_BEGIN).count(), 1, "{twice}");
        assert_eq!(twice.matches("primary_slot_name").count(), 1, "{twice}");
        assert!(twice.starts_with("work_mem = '4MB'\n"));
    }

    #[test]
    fn conninfo_values_are_quoted_only_when_needed() {
        let e = Endpoint {
            host: Host::Socket("/run/my pg".into()),
            port: 5433,
        };
        assert_eq!(
            conninfo(&e, "o'neil", &[("application_name", "s1")]),
            "host='/run/my pg' port=5433 user='o\\'neil' application_name=s1"
        );
        assert!(parse_setting("port=5433").is_ok());
        assert!(parse_setting("=1").is_err());
        assert!(parse_setting("nope").is_err());
    }
}
