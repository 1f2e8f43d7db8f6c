//! `pitr generate-assets --out DIR`: the man pages and shell completions, generated from the
//! same clap definitions as `--help` so that they can never disagree with the binary
//! (scripts/build-deb.sh packages them).

use std::fs;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateAssetsArgs};
use crate::error::CliError;

/// Writes `DIR/man/pitr.1`, one `DIR/man/pitr-COMMAND.1` per visible command, and
/// `DIR/completions/{pitr.bash,_pitr,pitr.fish}`.
pub fn run(a: GenerateAssetsArgs) -> Result<u8, CliError> {
    let man = a.out.join("man");
    let completions = a.out.join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let mut cmd = Cli::command();
    // Built, each command carries the global options and is named `pitr COMMAND`.
    cmd.build();
    write_man(&man.join("pitr.1"), cmd.clone())?;
    let documented = |s: &&clap::Command| !s.is_hide_set() && s.get_name() != "help";
    for sub in cmd.get_subcommands().filter(documented) {
        let name = format!("pitr-{}", sub.get_name());
        let page = sub.clone().display_name(name.clone());
        write_man(&man.join(format!("{name}.1")), page)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "pitr", &completions)
            .map_err(|e| io_error(&completions, e))?;
    }
    Ok(0)
}

fn write_man(path: &Path, cmd: clap::Command) -> Result<(), CliError> {
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("pitr manual")
        .render(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    fs::write(path, bytes).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Write {
        path: path.to_path_buf(),
        source: e,
    }
}
