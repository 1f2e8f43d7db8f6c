//! Where PostgreSQL's programs are: `--pg-bin`, else searched (`pg_config --bindir`, the Debian
//! layout, `PATH`), optionally of one major version. Used by `pitr restore --start` (the
//! backup's version) and `pitr demo` (any version).

use std::path::{Path, PathBuf};
use std::process::Command;

/// No usable bin directory.
#[derive(Debug, thiserror::Error)]
pub enum PgBinError {
    /// Nothing found (or `--pg-bin` lacks a program or is not PostgreSQL).
    #[error("cannot find PostgreSQL{} binaries ({}); looked in: {tried}", .major.map(|m| format!(" {m}")).unwrap_or_default(), .programs.join(", "))]
    NotFound {
        /// The major wanted, if one.
        major: Option<u32>,
        /// The programs wanted.
        programs: Vec<String>,
        /// Places tried.
        tried: String,
        /// Whether `--pg-bin` was given (and is what was tried).
        explicit: bool,
    },
    /// `--pg-bin` holds another version.
    #[error("{bindir:?} holds {found}, but PostgreSQL {expected} is needed")]
    WrongVersion {
        /// Directory.
        bindir: PathBuf,
        /// `postgres --version`'s answer.
        found: String,
        /// Major expected.
        expected: u32,
    },
}

/// The major version `bindir/postgres --version` reports, with that answer.
pub fn bin_major(bindir: &Path) -> Option<(u32, String)> {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = text.rsplit(' ').next()?.to_string();
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, text))
}

/// Finds the bin directory holding every one of `programs` (and, when `major` is given, whose
/// `postgres` is that major): `explicit` (`--pg-bin`), else `pg_config --bindir` on PATH, else
/// `/usr/lib/postgresql/<major>/bin`, else the directories on PATH (through symbolic links,
/// as Debian links `pg_ctl` into a version's bin directory), else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_pg_bin(
    explicit: Option<&Path>,
    major: Option<u32>,
    programs: &[&str],
) -> Result<PathBuf, PgBinError> {
    let has_all = |d: &Path| programs.iter().all(|p| d.join(p).is_file());
    let not_found = |tried: String, explicit: bool| PgBinError::NotFound {
        major,
        programs: programs.iter().map(|p| p.to_string()).collect(),
        tried,
        explicit,
    };
    if let Some(dir) = explicit {
        let found = bin_major(dir).filter(|_| has_all(dir));
        return match (found, major) {
            (Some(_), None) => Ok(dir.to_path_buf()),
            (Some((m, _)), Some(want)) if m == want => Ok(dir.to_path_buf()),
            (Some((_, text)), Some(want)) => Err(PgBinError::WrongVersion {
                bindir: dir.to_path_buf(),
                found: text,
                expected: want,
            }),
            (None, _) => Err(not_found(dir.display().to_string(), true)),
        };
    }
    let mut tried = Vec::new();
    for dir in candidates(major) {
        if !has_all(&dir) {
            continue;
        }
        match (bin_major(&dir), major) {
            (Some(_), None) => return Ok(dir),
            (Some((m, _)), Some(want)) if m == want => return Ok(dir),
            (Some((_, text)), _) => tried.push(format!("{} ({text})", dir.display())),
            (None, _) => {}
        }
    }
    if tried.is_empty() {
        tried.push("pg_config --bindir, /usr/lib/postgresql/<major>/bin, PATH".to_string());
    }
    Err(not_found(tried.join(", "), false))
}

/// Where to look, in order (duplicates removed).
fn candidates(major: Option<u32>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        if o.status.success() {
            out.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    if let Some(m) = major {
        out.push(PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            out.push(dir.clone());
            if let Some(real) = std::fs::canonicalize(dir.join("pg_ctl"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            {
                out.push(real);
            }
        }
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    installed.sort();
    out.extend(installed.into_iter().rev().map(|(_, d)| d));
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL 15 is Debian's (`/usr/lib/postgresql/15/bin`) on every test machine.
    const DEBIAN_15: &str = "/usr/lib/postgresql/15/bin";

    #[test]
    fn an_explicit_directory_is_checked_for_programs_and_version() {
        let dir = Path::new(DEBIAN_15);
        assert_eq!(bin_major(dir).map(|(m, _)| m), Some(15));
        let progs = ["pg_ctl", "postgres"];
        assert_eq!(find_pg_bin(Some(dir), Some(15), &progs).unwrap(), dir);
        assert_eq!(find_pg_bin(Some(dir), None, &progs).unwrap(), dir);
        match find_pg_bin(Some(dir), Some(17), &progs) {
            Err(PgBinError::WrongVersion {
                found, expected, ..
            }) => {
                assert!(found.contains("15."), "{found}");
                assert_eq!(expected, 17);
            }
            other => panic!("{other:?}"),
        }
        match find_pg_bin(Some(dir), None, &["pg_ctl", "no_such_program"]) {
            Err(PgBinError::NotFound {
                explicit, tried, ..
            }) => {
                assert!(explicit);
                assert_eq!(tried, DEBIAN_15);
            }
            other => panic!("{other:?}"),
        }
        let e = find_pg_bin(Some(Path::new("/nonexistent/bin")), Some(15), &progs).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/bin"), "{e}");
    }

    #[test]
    fn a_version_is_found_without_help_and_a_missing_one_is_named() {
        let found = find_pg_bin(None, Some(15), &["pg_ctl", "postgres"]).unwrap();
        assert_eq!(bin_major(&found).map(|(m, _)| m), Some(15));
        let e = find_pg_bin(None, Some(99), &["pg_ctl", "postgres"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot find PostgreSQL 99 binaries (pg_ctl, postgres)"),
            "{e}"
        );
    }
}
