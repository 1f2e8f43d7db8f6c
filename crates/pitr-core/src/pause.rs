//! A pause point for tests that need another command to run at an exact step of this one
//! (e.g. `expire` while a backup is between its copy and its manifest).
//!
//! Only when the environment says so: with `PITR_PAUSE_AT=<point>` and `PITR_PAUSE_FILE=<path>`,
//! the command reaching `<point>` creates `<path>.reached` and waits while `<path>` exists. The
//! test creates `<path>`, waits for `<path>.reached`, does its work, removes `<path>`. Points:
//! `backup-before-manifest` (files copied, lease held, WAL not yet waited for) and
//! `expire-before-removal` (plan made, leases read once, nothing removed yet).

use std::path::PathBuf;
use std::time::Duration;

/// Pauses at `point` when `PITR_PAUSE_AT` names it (see the module docs); otherwise returns at once.
pub async fn point(point: &str) {
    if std::env::var("PITR_PAUSE_AT").ok().as_deref() != Some(point) {
        return;
    }
    let Some(file) = std::env::var_os("PITR_PAUSE_FILE").map(PathBuf::from) else {
        return;
    };
    let mut reached = file.clone().into_os_string();
    reached.push(".reached");
    if let Err(e) = std::fs::write(&reached, point) {
        tracing::warn!("pause point {point}: cannot write {reached:?}: {e}");
        return;
    }
    tracing::info!("paused at {point} while {} exists", file.display());
    while file.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
