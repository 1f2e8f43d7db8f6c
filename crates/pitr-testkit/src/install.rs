//! Finding the PostgreSQL installations the tests run against.

use std::env;
use std::path::{Path, PathBuf};

/// The majors pitr supports and tests: every one must be covered unless a run narrows it.
pub const SUPPORTED_MAJORS: std::ops::RangeInclusive<u32> = 14..=18;

/// Where `scripts/install-test-deps.sh` records each major's bin directory unless
/// `$PITR_PG_ROOT` says otherwise.
pub const DEFAULT_PG_ROOT: &str = "/opt/pitr-pg";

/// What to tell someone whose machine lacks PostgreSQL.
pub const INSTALL_HINT: &str = "hint: run `scripts/install-test-deps.sh` as root (it installs \
PostgreSQL 14-18 and records their bin directories under /opt/pitr-pg/<major>/bindir), \
narrow the run with PITR_TEST_PG=15 (a comma-separated list of majors), \
or set PITR_TEST_ALLOW_NO_PG=1 to skip PostgreSQL tests";

/// One installed PostgreSQL major version: where its binaries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    /// Major version, e.g. 17.
    pub major: u32,
    /// Directory holding `postgres`, `initdb`, `pg_ctl`, `psql`, ...
    pub bindir: PathBuf,
}

impl PgInstall {
    /// Path of one of this installation's programs, e.g. `bin("pg_waldump")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Whether this installation ships the program `name`.
    pub fn has(&self, name: &str) -> bool {
        self.bin(name).is_file()
    }

    /// Full version line of the server binary, e.g. `postgres (PostgreSQL) 17.10`.
    pub fn version(&self) -> String {
        let mut cmd = std::process::Command::new(self.bin("postgres"));
        cmd.arg("--version");
        crate::run_ok(&mut cmd)
    }
}

/// Every installed major among 14..=18, sorted by major.
///
/// For each major this reads `$PITR_PG_ROOT/<major>/bindir` (default root `/opt/pitr-pg`), then
/// falls back to Debian's `/usr/lib/postgresql/<major>/bin`. A bin directory counts only if it
/// holds a `postgres` binary. When `$PITR_TEST_PG` is set (e.g. `14,17`), only those majors are
/// returned.
pub fn installs() -> Vec<PgInstall> {
    let wanted = wanted_majors();
    SUPPORTED_MAJORS
        .filter(|m| match &wanted {
            Some(w) => w.contains(m),
            None => true,
        })
        .filter_map(find_install)
        .collect()
}

/// The installation of one major, if it is installed and not filtered out by `$PITR_TEST_PG`.
pub fn install(major: u32) -> Option<PgInstall> {
    installs().into_iter().find(|i| i.major == major)
}

/// The installations a test must run against: the majors named by `$PITR_TEST_PG`, or all of
/// 14..=18.
///
/// Panics (with a hint at `scripts/install-test-deps.sh`) when one of them is missing, so a
/// machine without PostgreSQL fails its tests instead of passing them vacuously, unless
/// `PITR_TEST_ALLOW_NO_PG=1`, which returns whatever is installed (possibly nothing).
pub fn test_installs() -> Vec<PgInstall> {
    let requested: Vec<u32> = wanted_majors().unwrap_or_else(|| SUPPORTED_MAJORS.collect());
    let found: Vec<PgInstall> = requested.iter().copied().filter_map(find_install).collect();
    let missing: Vec<u32> = requested
        .iter()
        .copied()
        .filter(|m| !found.iter().any(|i| i.major == *m))
        .collect();
    if !missing.is_empty() && !allow_no_pg() {
        panic!(
            "PostgreSQL {} not installed (looked in {}/<major>/bindir and \
             /usr/lib/postgresql/<major>/bin; found: {})\n{INSTALL_HINT}",
            join_majors(&missing),
            pg_root().display(),
            if found.is_empty() {
                "none".to_string()
            } else {
                join_majors(&found.iter().map(|i| i.major).collect::<Vec<_>>())
            },
        );
    }
    found
}

/// The installation a per-major test runs against, or `None` when the test should be skipped.
///
/// `None` when `$PITR_TEST_PG` excludes `major`, or when it is missing and
/// `PITR_TEST_ALLOW_NO_PG=1`. Panics with an install hint when a requested major is missing.
pub fn test_install(major: u32) -> Option<PgInstall> {
    if let Some(wanted) = wanted_majors() {
        if !wanted.contains(&major) {
            eprintln!("pitr-testkit: skipping PostgreSQL {major}: not in PITR_TEST_PG");
            return None;
        }
    }
    match find_install(major) {
        Some(i) => Some(i),
        None if allow_no_pg() => {
            eprintln!(
                "pitr-testkit: skipping PostgreSQL {major}: not installed \
                 (PITR_TEST_ALLOW_NO_PG=1)"
            );
            None
        }
        None => panic!(
            "PostgreSQL {major} not installed (looked in {}/{major}/bindir and \
             /usr/lib/postgresql/{major}/bin)\n{INSTALL_HINT}",
            pg_root().display()
        ),
    }
}

/// This major's share of `items` when one test's cases are spread over the majors under test.
///
/// Some cases (kill points in pitr's own code, say) do not depend on the server's major, and
/// repeating all of them on every major only costs CI time. With the majors under test in order
/// (`$PITR_TEST_PG`, or all of 14..=18), the major at position `p` of `n` gets the items whose
/// index `i` has `(i + p) % 2 == 0`: about half of them, and every item still runs on at least
/// one major (on two or three of 14..=18); with one major under test it gets every item.
pub fn share_of<T: Clone>(pg: &PgInstall, items: &[T]) -> Vec<T> {
    let majors: Vec<u32> = wanted_majors().unwrap_or_else(|| SUPPORTED_MAJORS.collect());
    let pos = majors.iter().position(|m| *m == pg.major);
    match pos {
        Some(p) if majors.len() > 1 => items
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + p) % 2 == 0)
            .map(|(_, t)| t.clone())
            .collect(),
        _ => items.to_vec(),
    }
}

/// Parses a `$PITR_TEST_PG` value: a comma-separated list of supported majors, e.g. `15,18`
/// (blanks around a major are ignored), returned sorted and without duplicates.
///
/// Anything else is an error naming the bad part: an empty part (`15,,18`, `15,`), a major
/// outside 14..=18 (`19`), a prefix (`pg17`) or another separator (`"14 17"`). A typo must fail
/// the run, never narrow it to nothing so that every test passes having run no server.
pub fn parse_majors(value: &str) -> Result<Vec<u32>, String> {
    let mut majors = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        match part.parse::<u32>() {
            Ok(m) if SUPPORTED_MAJORS.contains(&m) => majors.push(m),
            _ => {
                let what = if part.is_empty() {
                    "an empty entry".to_string()
                } else {
                    format!("{part:?} is not a PostgreSQL major among 14..=18")
                };
                return Err(format!(
                    "PITR_TEST_PG={value:?}: {what} (hint: a comma-separated list of majors, \
                     e.g. PITR_TEST_PG=15,18; unset it to test every major)"
                ));
            }
        }
    }
    majors.sort_unstable();
    majors.dedup();
    Ok(majors)
}

/// The majors `$PITR_TEST_PG` asks for; `None` when it is unset or blank (every major).
///
/// Panics with [`parse_majors`]'s message on a bad value: every test asking fails with it.
fn wanted_majors() -> Option<Vec<u32>> {
    match env::var("PITR_TEST_PG") {
        Ok(v) if !v.trim().is_empty() => match parse_majors(&v) {
            Ok(majors) => Some(majors),
            Err(msg) => panic!("{msg}"),
        },
        Ok(_) => None,
        Err(env::VarError::NotPresent) => None,
        Err(env::VarError::NotUnicode(v)) => {
            panic!("PITR_TEST_PG={v:?} is not UTF-8 (hint: e.g. PITR_TEST_PG=15,18)")
        }
    }
}

fn allow_no_pg() -> bool {
    env::var("PITR_TEST_ALLOW_NO_PG").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn pg_root() -> PathBuf {
    env::var_os("PITR_PG_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PG_ROOT), PathBuf::from)
}

fn find_install(major: u32) -> Option<PgInstall> {
    let recorded = std::fs::read_to_string(pg_root().join(major.to_string()).join("bindir"))
        .ok()
        .map(|s| PathBuf::from(s.trim()));
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    recorded
        .into_iter()
        .chain(std::iter::once(debian))
        .find(|dir| has_server(dir))
        .map(|bindir| PgInstall { major, bindir })
}

fn has_server(dir: &Path) -> bool {
    !dir.as_os_str().is_empty() && dir.join("postgres").is_file()
}

fn join_majors(majors: &[u32]) -> String {
    majors
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_majors_accepts_a_comma_separated_list_sorted_and_deduplicated() {
        assert_eq!(parse_majors("17,14"), Ok(vec![14, 17]));
        assert_eq!(parse_majors("15,18"), Ok(vec![15, 18]));
        assert_eq!(parse_majors(" 16, 15 ,15"), Ok(vec![15, 16]));
        assert_eq!(parse_majors("14"), Ok(vec![14]));
    }

    /// Each of these would run no server at all: the error names the bad part.
    #[test]
    fn parse_majors_rejects_what_is_not_a_supported_major() {
        for value in ["14 17", "pg17", "19", "13", "-15", "15;18", "15,pg18"] {
            let bad = value.rsplit(',').next().unwrap_or(value);
            expect_rejected(
                value,
                &format!("{bad:?} is not a PostgreSQL major among 14..=18"),
            );
        }
    }

    #[test]
    fn parse_majors_rejects_empty_entries() {
        for value in ["15,,18", "15,", ",15", "", " , "] {
            expect_rejected(value, "an empty entry");
        }
    }

    fn expect_rejected(value: &str, names: &str) {
        let err = parse_majors(value).expect_err(value);
        assert!(err.contains(names), "{value:?}: {err}");
        assert!(err.starts_with("PITR_TEST_PG="), "{value:?}: {err}");
        assert!(err.contains("hint: "), "{value:?}: {err}");
    }
}
