//! `pitr pin LABEL` / `pitr unpin LABEL`.

use pitr_core::pin::{self, PinReport};

use super::{open_cluster, print_json};
use crate::cli::{GlobalArgs, PinArgs};
use crate::error::CliError;

pub async fn pin(g: &GlobalArgs, a: PinArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let report = pin::pin(&cluster, &a.label, "pin").await?;
    render(g, &report);
    Ok(0)
}

pub async fn unpin(g: &GlobalArgs, a: PinArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let report = pin::unpin(&cluster, &a.label).await?;
    render(g, &report);
    Ok(0)
}

fn render(g: &GlobalArgs, r: &PinReport) {
    if g.json {
        print_json(r);
    } else if !g.quiet {
        outln!("{}", line(r));
    }
}

/// One line saying what the command did.
pub fn line(r: &PinReport) -> String {
    match (r.pinned, r.unchanged, &r.pin) {
        (true, true, Some(p)) => format!(
            "backup {} of cluster {} was already pinned (since {}, by {}): expire keeps it",
            r.label, r.cluster, p.pinned_at, p.by
        ),
        (true, _, _) => format!(
            "pinned backup {} of cluster {}: expire keeps it, its parents and the WAL from its start on, until `pitr unpin {}`",
            r.label, r.cluster, r.label
        ),
        (false, true, _) => format!(
            "backup {} of cluster {} was not pinned: nothing changed",
            r.label, r.cluster
        ),
        (false, false, _) => format!(
            "unpinned backup {} of cluster {}: the next expire applies the retention policy to it",
            r.label, r.cluster
        ),
    }
}
