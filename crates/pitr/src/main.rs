//! The `pitr` binary: parses arguments, calls the engines in `pitr-core`, renders reports.

mod cli;
#[macro_use]
mod out;
mod commands;
mod config;
mod error;
mod progress;
mod s3;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Decided before parsing: even a malformed restore_command must not exit 2, which
    // PostgreSQL would read as "file absent" and end recovery early.
    let is_get = std::env::args_os().skip(1).any(|a| a == "archive-get");
    if is_get {
        fatal_panics();
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match (e.use_stderr(), is_get) {
                (false, _) => 0,
                (true, true) => error::EXIT_GET_FATAL,
                (true, false) => error::EXIT_USAGE,
            });
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let is_get = matches!(cli.command, cli::Command::ArchiveGet(_));
    // archive_command / restore_command run once per WAL file: a single-threaded runtime starts
    // faster, and their CPU work runs on threads of its own (frame::encode_file, spool-fill).
    let mut builder = if matches!(
        cli.command,
        cli::Command::ArchiveGet(_) | cli::Command::ArchivePush(_)
    ) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pitr: error: cannot start the async runtime: {e}\nhint: check the limits on open files and threads (ulimit -n, ulimit -u) of the user running pitr");
            return ExitCode::from(if is_get {
                error::EXIT_GET_FATAL
            } else {
                error::EXIT_ERROR
            });
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pitr: error: {e}");
            ExitCode::from(if is_get {
                error::EXIT_GET_FATAL
            } else {
                e.exit_code()
            })
        }
    }
}

/// archive-get: a panic (exit 101 by default, "file absent" to PostgreSQL) exits 255 instead,
/// after the usual panic message.
fn fatal_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::exit(i32::from(error::EXIT_GET_FATAL));
    }));
}

fn init_logging(verbose: u8, quiet: bool) {
    let terminal = std::io::stderr().is_terminal();
    let _ = log_subscriber(verbose, quiet, terminal, std::io::stderr).try_init();
}

/// pitr's log set-up: level from `-v`/`-q` (or `PITR_LOG`), no module names, and colours only
/// on a terminal (never when `NO_COLOR` is set), so logs and pipes get plain text.
fn log_subscriber<W>(
    verbose: u8,
    quiet: bool,
    terminal: bool,
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    EnvFilter,
    W,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("PITR_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            // Progress lines of long steps are logged without -v (see progress.rs), not with -q.
            let progress = if quiet { "" } else { ",progress=info" };
            EnvFilter::new(format!("{level}{progress},tokio_postgres=warn"))
        });
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(terminal && !no_color)
}
