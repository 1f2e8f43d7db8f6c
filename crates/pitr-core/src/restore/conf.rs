//! Recovery configuration: `restore_command` and the `recovery_target*` settings written into
//! `postgresql.auto.conf`, with earlier ones commented out so that exactly one target is set.
//!
//! PostgreSQL reads `postgresql.conf` and then `postgresql.auto.conf`; the last occurrence of a
//! setting wins. Recovery targets are different: setting two *different* `recovery_target*`
//! parameters anywhere is an error ("multiple recovery targets specified"), so stale ones are
//! commented out in both files.

use std::path::Path;

/// First line of the block pitr appends (a previous block is replaced, not commented out).
pub const BLOCK_BEGIN: &str = "# pitr restore: begin";
/// Last line of the block.
pub const BLOCK_END: &str = "# pitr restore: end";
/// Prefix of a line pitr commented out.
pub const COMMENTED: &str = "# disabled by pitr restore: ";

/// Settings replaced in `postgresql.auto.conf`.
const REPLACED_IN_AUTO_CONF: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// The result of editing a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfEdit {
    /// The new content.
    pub text: String,
    /// Lines that were commented out (as they were).
    pub commented: Vec<String>,
    /// Whether anything changed.
    pub changed: bool,
}

/// Quotes a value for PostgreSQL's configuration files: single quotes, with `'` doubled and
/// `\` doubled (the file lexer processes backslash escapes inside quotes).
pub fn quote_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// The setting a configuration line assigns, lower-cased (`None` for comments, blank lines and
/// `include` directives).
pub fn setting_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let name = t[..end].to_ascii_lowercase();
    let rest = t[end..].trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    if name.starts_with("include") {
        return None;
    }
    Some(name)
}

fn edit(original: &str, drop: impl Fn(&str) -> bool) -> ConfEdit {
    let mut text = String::with_capacity(original.len() + 512);
    let mut commented = Vec::new();
    let mut in_block = false;
    let mut changed = false;
    for line in original.lines() {
        if line.trim_start().starts_with(BLOCK_BEGIN) {
            in_block = true;
            changed = true;
            continue;
        }
        if in_block {
            if line.trim_start().starts_with(BLOCK_END) {
                in_block = false;
            }
            continue;
        }
        match setting_name(line) {
            Some(name) if drop(&name) => {
                text.push_str(COMMENTED);
                text.push_str(line);
                text.push('\n');
                commented.push(line.to_string());
                changed = true;
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    ConfEdit {
        text,
        commented,
        changed,
    }
}

/// Rewrites `postgresql.auto.conf`: comments out earlier recovery settings (and earlier lines
/// of any setting written), removes a previous pitr block and appends a new one with
/// `settings` (name, unquoted value) under `header`.
pub fn rewrite_auto_conf(original: &str, settings: &[(&str, String)], header: &str) -> ConfEdit {
    let mut e = edit(original, |n| {
        REPLACED_IN_AUTO_CONF.contains(&n) || settings.iter().any(|(s, _)| *s == n)
    });
    if !e.text.is_empty() && !e.text.ends_with("\n\n") {
        e.text.push('\n');
    }
    e.text.push_str(BLOCK_BEGIN);
    if !header.is_empty() {
        e.text.push_str(" (");
        e.text.push_str(header);
        e.text.push(')');
    }
    e.text.push('\n');
    for (name, value) in settings {
        e.text.push_str(name);
        e.text.push_str(" = ");
        e.text.push_str(&quote_value(value));
        e.text.push('\n');
    }
    e.text.push_str(BLOCK_END);
    e.text.push('\n');
    e.changed = true;
    e
}

/// Comments out `recovery_target*` settings in `postgresql.conf` (a second target there would
/// make PostgreSQL refuse to start); everything else is left as it is.
pub fn comment_out_targets(original: &str) -> ConfEdit {
    let mut e = edit(original, |n| n.starts_with("recovery_target"));
    if !e.changed {
        e.text = original.to_string();
    }
    e
}

/// Quotes a word for `/bin/sh` (PostgreSQL runs restore_command through it), only if needed.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `restore_command` that fetches WAL from this repository: `pitr archive-get %f "%p"`
/// with the running binary's absolute path, the repository and the cluster. `%` in the words is
/// doubled (PostgreSQL expands `%f`, `%p`, `%r`, `%%` in the command).
pub fn restore_command(exe: &Path, repo: &str, cluster: &str, extra: &[String]) -> String {
    let word = |s: &str| shell_quote(s).replace('%', "%%");
    let mut cmd = format!(
        "{} --repo {} --cluster {}",
        word(&exe.to_string_lossy()),
        word(repo),
        word(cluster)
    );
    for e in extra {
        cmd.push(' ');
        cmd.push_str(&word(e));
    }
    cmd.push_str(" archive-get %f \"%p\"");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: &str = concat!(
        "# Do not edit this file manually!\n",
        "# It will be overwritten by the ALTER SYSTEM command.\n",
        "work_mem = '64MB'\n",
        "restore_command = 'cp /wals/%f %p'\n",
        "recovery_target_name='punto_laboratorio'\n",
        "  Recovery_Target_Action = 'promote'   # old\n",
        "# recovery_target_time = 'commented already'\n",
        "primary_conninfo = 'host=primary'\n",
    );

    #[test]
    fn comments_out_old_recovery_settings_and_appends_a_block() {
        let settings = vec![
            (
                "restore_command",
                "/usr/bin/pitr archive-get %f \"%p\"".to_string(),
            ),
            ("recovery_target_lsn", "0/4031F10".to_string()),
            ("recovery_target_timeline", "latest".to_string()),
        ];
        let e = rewrite_auto_conf(AUTO, &settings, "backup 20250710T120000F");
        assert_eq!(
            e.commented,
            vec![
                "restore_command = 'cp /wals/%f %p'",
                "recovery_target_name='punto_laboratorio'",
                "  Recovery_Target_Action = 'promote'   # old",
            ]
        );
        let expected = concat!(
            "# Do not edit this file manually!\n",
            "# It will be overwritten by the ALTER SYSTEM command.\n",
            "work_mem = '64MB'\n",
            "# disabled by pitr restore: restore_command = 'cp /wals/%f %p'\n",
            "# disabled by pitr restore: recovery_target_name='punto_laboratorio'\n",
            "# disabled by pitr restore:   Recovery_Target_Action = 'promote'   # old\n",
            "# recovery_target_time = 'commented already'\n",
            "primary_conninfo = 'host=primary'\n",
            "\n",
            "# pitr restore: begin (backup 20250710T120000F)\n",
            "restore_command = '/usr/bin/pitr archive-get %f \"%p\"'\n",
            "recovery_target_lsn = '0/4031F10'\n",
            "recovery_target_timeline = 'latest'\n",
            "# pitr restore: end\n",
        );
        assert_eq!(e.text, expected);
    }

    #[test]
    fn archive_mode_off_comments_out_earlier_archiving_lines() {
        let auto =
            "archive_mode = on\narchive_command = 'pitr archive-push %p'\nwork_mem = '4MB'\n";
        let settings = crate::restore::ArchiveMode::Off.settings(16);
        let e = rewrite_auto_conf(auto, &settings, "");
        assert_eq!(
            e.commented,
            vec![
                "archive_mode = on",
                "archive_command = 'pitr archive-push %p'"
            ]
        );
        assert!(e.text.ends_with(
            "# pitr restore: begin\narchive_mode = 'off'\narchive_command = ''\narchive_library = ''\n# pitr restore: end\n"
        ));
        // PostgreSQL 14 has no archive_library: naming it would stop the server from starting.
        let old = crate::restore::ArchiveMode::Off.settings(14);
        assert!(old.iter().all(|(n, _)| *n != "archive_library"));
        assert!(crate::restore::ArchiveMode::Preserve
            .settings(16)
            .is_empty());
    }

    #[test]
    fn a_second_restore_replaces_the_previous_block() {
        let first = rewrite_auto_conf(AUTO, &[("recovery_target_xid", "700".to_string())], "first");
        let second = rewrite_auto_conf(
            &first.text,
            &[("recovery_target_xid", "800".to_string())],
            "second",
        );
        assert!(!second.text.contains("'700'"));
        assert!(!second.text.contains("first"));
        assert_eq!(second.text.matches(BLOCK_BEGIN).count(), 1);
        assert_eq!(second.text.matches(COMMENTED).count(), 3);
        assert!(second.text.ends_with(
            "# pitr restore: begin (second)\nrecovery_target_xid = '800'\n# pitr restore: end\n"
        ));
    }

    #[test]
    fn an_empty_auto_conf_gets_just_the_block() {
        let e = rewrite_auto_conf("", &[("recovery_target", "immediate".to_string())], "");
        assert_eq!(
            e.text,
            "# pitr restore: begin\nrecovery_target = 'immediate'\n# pitr restore: end\n"
        );
    }

    #[test]
    fn postgresql_conf_loses_only_recovery_targets() {
        let conf = "shared_buffers = 128MB\nrecovery_target_time = '2025-01-01'\nrestore_command = 'cp %p'\n#recovery_target_lsn = '0/1'\ninclude_dir 'conf.d'\n";
        let e = comment_out_targets(conf);
        assert!(e.changed);
        assert_eq!(
            e.text,
            "shared_buffers = 128MB\n# disabled by pitr restore: recovery_target_time = '2025-01-01'\nrestore_command = 'cp %p'\n#recovery_target_lsn = '0/1'\ninclude_dir 'conf.d'\n"
        );
        let untouched = "port = 5433\nlisten_addresses = ''"; // no final newline
        let e = comment_out_targets(untouched);
        assert!(!e.changed);
        assert_eq!(e.text, untouched);
    }

    #[test]
    fn quotes_values_for_the_config_lexer() {
        assert_eq!(quote_value("it's"), "'it''s'");
        assert_eq!(quote_value(r"C:\wal"), r"'C:\\wal'");
        assert_eq!(setting_name("  port=5432"), Some("port".into()));
        assert_eq!(setting_name("port 5432"), Some("port".into()));
        assert_eq!(setting_name("# port = 1"), None);
        assert_eq!(setting_name("include 'x.conf'"), None);
        assert_eq!(setting_name(""), None);
        assert_eq!(setting_name("junk"), None);
    }

    #[test]
    fn builds_a_restore_command_postgres_and_the_shell_read_back_exactly() {
        let c = restore_command(
            Path::new("/usr/local/bin/pitr"),
            "/var/lib/pitr/repo",
            "main",
            &[],
        );
        assert_eq!(
            c,
            "/usr/local/bin/pitr --repo /var/lib/pitr/repo --cluster main archive-get %f \"%p\""
        );
        let odd = restore_command(
            Path::new("/opt/my tools/pitr"),
            "/srv/o'brien/100%repo",
            "main",
            &["--config".into(), "/etc/pitr/pitr.toml".into()],
        );
        assert_eq!(
            odd,
            "'/opt/my tools/pitr' --repo '/srv/o'\\''brien/100%%repo' --cluster main --config /etc/pitr/pitr.toml archive-get %f \"%p\""
        );
        // And as it lands in postgresql.auto.conf:
        assert_eq!(
            quote_value(&odd),
            "'''/opt/my tools/pitr'' --repo ''/srv/o''\\\\''''brien/100%%repo'' --cluster main --config /etc/pitr/pitr.toml archive-get %f \"%p\"'"
        );
    }
}
