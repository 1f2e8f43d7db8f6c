//! S3 repositories: the driver's settings from the options, and the flags that commands pitr
//! writes for others (archive_command, restore_command, read-ahead) must repeat.

use std::path::Path;
use std::time::Duration;

use pitr_storage::S3Config;

use crate::cli::GlobalArgs;
use crate::error::CliError;

/// Whether `location` names an S3 repository.
pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// The S3 driver's settings for `url` from the options (flags, then environment, then config
/// file); what is still unset falls back to the environment and the driver's defaults.
pub fn config(g: &GlobalArgs, url: &str) -> Result<S3Config, CliError> {
    let mut cfg = S3Config::from_url(url)?;
    cfg.endpoint = g.s3_endpoint.clone().filter(|e| !e.is_empty());
    cfg.region = g.s3_region.clone().filter(|r| !r.is_empty());
    cfg.ca_file = g.s3_ca_file.clone();
    if let Some(secs) = g.s3_retry_timeout {
        cfg.retry_timeout = Duration::from_secs(secs);
    }
    // Credentials in the environment win over the config file's.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none_or(|v| v.is_empty()) {
        cfg.credentials = g.s3_credentials.clone();
    }
    Ok(cfg)
}

/// The options a pitr command written for another process must carry so that it reaches the
/// same repository the same way: `--config` when one was named, and for an S3 repository the
/// settings that are not secrets (endpoint, region, CA file, retry budget) as resolved now.
/// Credentials are never written: they come from that process's environment (PostgreSQL's, for
/// archive_command and restore_command) or from the config file.
pub fn command_args(g: &GlobalArgs) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = &g.config {
        args.push("--config".to_string());
        args.push(absolute(c));
    }
    let Some(url) = g.repo.as_deref().filter(|r| is_s3(r)) else {
        return args;
    };
    let Ok(cfg) = config(g, url) else {
        return args;
    };
    if let Some(ep) = cfg.effective_endpoint() {
        args.push("--s3-endpoint".into());
        args.push(ep);
    }
    args.push("--s3-region".into());
    args.push(cfg.effective_region());
    if let Some(ca) = &cfg.ca_file {
        args.push("--s3-ca-file".into());
        args.push(absolute(ca));
    }
    if let Some(secs) = g.s3_retry_timeout {
        args.push("--s3-retry-timeout".into());
        args.push(secs.to_string());
    }
    args
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_args(repo: &str) -> GlobalArgs {
        GlobalArgs {
            repo: Some(repo.into()),
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_region: Some("eu-west-3".into()),
            s3_ca_file: Some("/etc/pitr/ca.pem".into()),
            s3_retry_timeout: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn commands_for_an_s3_repository_carry_its_settings_but_no_secret() {
        let mut g = s3_args("s3://bkt/prefix");
        g.s3_credentials = Some(pitr_storage::S3Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: None,
        });
        let args = command_args(&g);
        assert_eq!(
            args,
            [
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-region",
                "eu-west-3",
                "--s3-ca-file",
                "/etc/pitr/ca.pem",
                "--s3-retry-timeout",
                "5"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("secret") || a == "AKID"));
    }

    #[test]
    fn commands_for_a_local_repository_carry_no_s3_flag() {
        let g = s3_args("/var/lib/pitr");
        assert!(command_args(&g).is_empty());
        let g = GlobalArgs {
            config: Some("/etc/pitr/other.toml".into()),
            ..s3_args("/var/lib/pitr")
        };
        assert_eq!(command_args(&g), ["--config", "/etc/pitr/other.toml"]);
    }

    #[test]
    fn options_fill_the_driver_settings() {
        let cfg = config(&s3_args("s3://bkt/a/b/"), "s3://bkt/a/b/").unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(cfg.bucket, "bkt");
        assert_eq!(cfg.prefix, "a/b");
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(cfg.region.as_deref(), Some("eu-west-3"));
        assert_eq!(cfg.retry_timeout, Duration::from_secs(5));
    }
}
