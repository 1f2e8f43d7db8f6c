//! `pitr check`.

use std::time::Duration;

use pitr_core::check::{self, CheckOptions, Status};

use super::{archive_command_for, conn_params, open_cluster, print_json};
use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::{CliError, EXIT_ERROR};

pub async fn run(g: &GlobalArgs, a: CheckArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let client = pitr_proto::connect(&conn_params(g)).await?;
    let opts = CheckOptions {
        archive_timeout: Duration::from_secs(a.archive_timeout),
        archive_command_hint: archive_command_for(g),
        no_switch: a.no_switch,
    };
    let report = check::check(&cluster, &client, &opts).await?;
    if g.json {
        print_json(&report);
    } else {
        println!("cluster {} in repository {}", report.cluster, report.repo);
        let width = report
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &report.checks {
            if g.quiet && c.status == Status::Ok {
                continue;
            }
            println!(
                "  {:width$}  {:7}  {}",
                c.name,
                c.status.to_string(),
                c.detail
            );
            if let Some(h) = &c.hint {
                println!("  {:width$}  {:7}  hint: {h}", "", "");
            }
        }
        if !g.quiet {
            println!("{}", verdict(&report));
        }
    }
    Ok(if report.ok { 0 } else { EXIT_ERROR })
}

/// The last line: what was proven, and what was not.
fn verdict(report: &check::CheckReport) -> String {
    if !report.ok {
        return "archiving into this repository does NOT work: see the FAILED lines".into();
    }
    if report.archived_segment.is_some() {
        return "archiving into this repository works".into();
    }
    let access = report
        .checks
        .iter()
        .find(|c| c.name == "repository access")
        .map_or(Status::Skipped, |c| c.status);
    format!(
        "the settings look right, but archiving into this repository was not proven: no WAL was switched{}",
        if access == Status::Ok {
            " (the OS user of archive_command may write into the repository)"
        } else {
            ", and whether archive_command's OS user may write into the repository was not checked"
        }
    )
}
