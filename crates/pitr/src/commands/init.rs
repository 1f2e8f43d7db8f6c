//! `pitr init`: create a repository.

use super::{print_json, repo_at, repo_location};
use crate::cli::{GlobalArgs, InitArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, _a: InitArgs) -> Result<u8, CliError> {
    let location = repo_location(g)?;
    let repo = repo_at(g, location, true).await?;
    let marker = repo.ensure_marker().await?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": repo.location(),
            "repo_format": marker.repo_format,
            "created_at": marker.created_at.to_string(),
            "encrypted": repo.encrypted(),
        }));
    } else if !g.quiet {
        println!(
            "repository {} is ready (format {}{})",
            repo.location(),
            marker.repo_format,
            if repo.encrypted() { ", encrypted" } else { "" }
        );
    }
    Ok(0)
}
