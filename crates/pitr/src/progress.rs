//! Progress of a long step (restore, `--start` replay, backup, verify, expire), rendered one way
//! for all: an indicatif bar on a terminal (bytes and files done, rate, ETA), else plain
//! `tracing` info lines, for logs and `journalctl`: one about every [`log_every`] while it runs
//! (files and bytes done of the total, rate, ETA) and one at the end. Those are logged under the
//! target [`TARGET`], which pitr's log set-up enables without `-v` (but not with `-q`), so a
//! step that lasts gets its lines in a timer's journal while a short one stays quiet; `-v` adds
//! a line when each step starts and the end line of short steps. A step whose totals are
//! unknown (a backup over the replication protocol) shows what is done and the rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use pitr_core::progress::Progress;

/// The `tracing` target of the periodic lines (enabled at the default log level).
pub const TARGET: &str = "progress";

/// How often the plain reporter writes a line by default.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the plain reporter writes a line: `PITR_PROGRESS_SECONDS` (a number of seconds,
/// fractions allowed), else [`LOG_EVERY`].
pub fn log_every() -> Duration {
    std::env::var("PITR_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(LOG_EVERY)
}

/// A bar when `show_bar` (stderr is a terminal and output is wanted), else log lines.
pub fn for_step(step: &'static str, noun: &'static str, show_bar: bool) -> StepProgress {
    if show_bar {
        StepProgress::bar(step, noun)
    } else {
        StepProgress::log(step, noun, log_every())
    }
}

/// One step's progress reporter.
#[derive(Debug)]
pub struct StepProgress {
    step: &'static str,
    noun: &'static str,
    files: AtomicU64,
    bytes: AtomicU64,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    started: Mutex<Option<Instant>>,
    /// Whether a periodic line was logged (then the end line is logged at the same level).
    periodic: AtomicBool,
    out: Output,
}

#[derive(Debug)]
enum Output {
    /// On a terminal.
    Bar(ProgressBar),
    /// Log lines, at most one every `every` (but the first and the last).
    Log {
        every: Duration,
        last: Mutex<Option<Instant>>,
    },
}

impl StepProgress {
    /// A bar on a terminal, for `step` (`restore`) counting `noun`s (`files`).
    pub fn bar(step: &'static str, noun: &'static str) -> StepProgress {
        StepProgress::with(step, noun, Output::Bar(ProgressBar::new(0)))
    }

    /// Log lines, at most one every `every` while the step runs.
    pub fn log(step: &'static str, noun: &'static str, every: Duration) -> StepProgress {
        StepProgress::with(
            step,
            noun,
            Output::Log {
                every,
                last: Mutex::new(None),
            },
        )
    }

    fn with(step: &'static str, noun: &'static str, out: Output) -> StepProgress {
        StepProgress {
            step,
            noun,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Mutex::new(None),
            periodic: AtomicBool::new(false),
            out,
        }
    }

    fn files_message(&self) -> String {
        let done = self.files_done.load(Ordering::Relaxed);
        match self.files.load(Ordering::Relaxed) {
            0 => format!("{done} {}", self.noun),
            total => format!("{done}/{total} {}", self.noun),
        }
    }

    /// Logs a line when the last one is `every` old (one thread at a time; the others skip).
    fn tick(&self) {
        let Output::Log { every, last } = &self.out else {
            return;
        };
        let Ok(mut last) = last.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < *every) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.periodic.store(true, Ordering::Relaxed);
        tracing::info!(target: TARGET, "{}", self.line(false));
    }

    /// `restore: 120/1200 files, 1.20 GiB/8.00 GiB (15%), 95.30 MiB/s, ETA 72s`, or at the end
    /// `restore: 1200/1200 files, 8.00 GiB in 86.0s (95.30 MiB/s)`; without a known total
    /// `backup: 120 files, 1.20 GiB, 95.30 MiB/s`.
    fn line(&self, end: bool) -> String {
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = lock(&self.started).map_or(0.0, |t| t.elapsed().as_secs_f64());
        let per_sec = if secs > 0.0 {
            bytes_done as f64 / secs
        } else {
            0.0
        };
        let rate = if secs > 0.0 {
            HumanBytes(per_sec as u64).to_string()
        } else {
            "-".to_string()
        };
        let step = self.step;
        if end {
            format!(
                "{step}: {}, {} in {secs:.1}s ({rate}/s)",
                self.files_message(),
                HumanBytes(bytes_done)
            )
        } else if bytes == 0 {
            format!(
                "{step}: {}, {}, {rate}/s",
                self.files_message(),
                HumanBytes(bytes_done)
            )
        } else {
            let pct = (bytes_done.saturating_mul(100))
                .checked_div(bytes)
                .unwrap_or(100)
                .min(100);
            let eta = if per_sec > 0.0 {
                format!(
                    ", ETA {:.0}s",
                    bytes.saturating_sub(bytes_done) as f64 / per_sec
                )
            } else {
                String::new()
            };
            format!(
                "{step}: {}, {}/{} ({pct}%), {rate}/s{eta}",
                self.files_message(),
                HumanBytes(bytes_done),
                HumanBytes(bytes)
            )
        }
    }
}

impl Progress for StepProgress {
    fn start(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        *lock(&self.started) = Some(Instant::now());
        let step = self.step;
        match &self.out {
            Output::Bar(pb) => {
                let template = if bytes == 0 {
                    format!("{{spinner}} {step} [{{elapsed_precise}}] {{bytes}}, {{msg}} ({{binary_bytes_per_sec}})")
                } else {
                    format!("{{spinner}} {step} [{{elapsed_precise}}] [{{bar:30}}] {{bytes}}/{{total_bytes}}, {{msg}} ({{binary_bytes_per_sec}}, ETA {{eta}})")
                };
                pb.set_style(
                    ProgressStyle::with_template(&template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                pb.set_message(self.files_message());
                pb.set_length(bytes);
                pb.enable_steady_tick(Duration::from_millis(120));
            }
            Output::Log { last, .. } => {
                *lock(last) = Some(Instant::now());
                match (files, bytes) {
                    (0, 0) => tracing::info!("{step}: started"),
                    (_, 0) => tracing::info!("{step}: {files} {}", self.noun),
                    _ => tracing::info!(
                        "{step}: {files} {}, {} to {}",
                        self.noun,
                        HumanBytes(bytes),
                        if step == "backup" { "back up" } else { step }
                    ),
                }
            }
        }
    }

    fn advance(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        match &self.out {
            Output::Bar(pb) => pb.inc(bytes),
            Output::Log { .. } => self.tick(),
        }
    }

    fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        match &self.out {
            Output::Bar(pb) => pb.set_message(self.files_message()),
            Output::Log { .. } => self.tick(),
        }
    }

    fn finish(&self) {
        match &self.out {
            Output::Bar(pb) => pb.finish_and_clear(),
            Output::Log { .. } if self.periodic.load(Ordering::Relaxed) => {
                tracing::info!(target: TARGET, "{}", self.line(true));
            }
            Output::Log { .. } => tracing::info!("{}", self.line(true)),
        }
    }
}

/// Reports a backup's progress from its shared counters (`pitr_core::backup::Progress`, which
/// the copying threads update) every 200 ms until aborted.
pub async fn follow_backup(
    counters: std::sync::Arc<pitr_core::backup::Progress>,
    to: std::sync::Arc<StepProgress>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        to.sync_backup(&counters);
    }
}

impl StepProgress {
    /// Brings the reporter up to a backup's counters: starts it once the totals are known (or
    /// bytes flow without them), then passes on what was done since the last call.
    pub fn sync_backup(&self, c: &pitr_core::backup::Progress) {
        let total_files = c.total_files.load(Ordering::Relaxed);
        let (files, bytes) = (
            c.files.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        );
        if lock(&self.started).is_none() {
            if total_files == 0 && bytes == 0 {
                return;
            }
            self.start(total_files, c.total_bytes.load(Ordering::Relaxed));
        }
        let before = self.bytes_done.load(Ordering::Relaxed);
        self.advance(bytes.saturating_sub(before));
        for _ in self.files_done.load(Ordering::Relaxed)..files {
            self.file_done();
        }
    }

    /// The step failed: clear the bar, write no end line (the error says what happened).
    pub fn abandon(&self) {
        if let Output::Bar(pb) = &self.out {
            pb.finish_and_clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    /// A `tracing` writer into memory.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under pitr's own log set-up (`-v`, stderr not a terminal), writing into memory.
    fn logged(f: impl FnOnce()) -> String {
        logged_at(1, f)
    }

    /// Runs `f` under pitr's own log set-up with `verbose` times `-v` (stderr not a terminal).
    fn logged_at(verbose: u8, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = crate::log_subscriber(verbose, false, false, move || w.clone()).finish();
        tracing::subscriber::with_default(sub, f);
        let out = lock(&buf.0).clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn log_lines_tell_files_and_bytes_without_terminal_codes() {
        let p = StepProgress::log("restore", "files", Duration::ZERO);
        let out = logged(|| {
            p.start(3, 3 << 20);
            p.advance(1 << 20);
            p.file_done();
            p.advance(2 << 20);
            p.file_done();
            p.file_done();
            p.finish();
        });
        assert!(!out.contains('\x1b'), "ANSI codes in log output:\n{out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("restore: 3 files, 3.00 MiB to restore"),
            "{out}"
        );
        assert!(
            out.contains("restore: 1/3 files, 1.00 MiB/3.00 MiB (33%)"),
            "{out}"
        );
        let last = lines.last().unwrap();
        assert!(last.contains("restore: 3/3 files, 3.00 MiB in "), "{last}");
        assert!(lines.iter().all(|l| l.contains(" INFO ")), "{out}");
    }

    #[test]
    fn log_lines_are_spaced_out() {
        let p = StepProgress::log("restore", "files", Duration::from_secs(3600));
        let out = logged(|| {
            p.start(1000, 1000);
            for _ in 0..1000 {
                p.advance(1);
                p.file_done();
            }
            p.finish();
        });
        // The first and the last only: nothing in between within the hour.
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            out.contains("restore: 1000/1000 files, 1000 B in "),
            "{out}"
        );
    }

    #[test]
    fn without_v_a_long_step_logs_its_progress_and_a_short_one_stays_quiet() {
        let run = |every| {
            let p = StepProgress::log("verify", "objects", every);
            logged_at(0, || {
                p.start(2, 2 << 20);
                p.advance(1 << 20);
                p.file_done();
                p.advance(1 << 20);
                p.file_done();
                p.finish();
            })
        };
        let long = run(Duration::ZERO);
        assert!(
            !long.contains("to verify"),
            "no start line without -v:\n{long}"
        );
        assert!(
            long.contains("verify: 1/2 objects, 1.00 MiB/2.00 MiB (50%)"),
            "{long}"
        );
        let last = long.lines().last().unwrap();
        assert!(last.contains("verify: 2/2 objects, 2.00 MiB in "), "{long}");
        let short = run(Duration::from_secs(3600));
        assert_eq!(
            short, "",
            "a step shorter than the period logs nothing without -v"
        );
    }
}
