//! Restore progress, rendered: an indicatif bar on a terminal (bytes and files done, rate,
//! ETA), else plain `tracing` info lines, for logs and `journalctl`: one when the restore starts,
//! one about every [`LOG_EVERY`] while it runs (files and bytes done of the total, rate), one at
//! the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use pitr_core::restore::Progress;

/// How often the plain reporter writes a line.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// `pitr restore`'s progress reporter.
#[derive(Debug)]
pub struct RestoreProgress {
    files: AtomicU64,
    bytes: AtomicU64,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    started: Mutex<Option<Instant>>,
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

impl RestoreProgress {
    /// A bar on a terminal.
    pub fn bar() -> RestoreProgress {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} restore [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes}, {msg} ({binary_bytes_per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        RestoreProgress::with(Output::Bar(pb))
    }

    /// Log lines, at most one every `every` while files are restored.
    pub fn log(every: Duration) -> RestoreProgress {
        RestoreProgress::with(Output::Log {
            every,
            last: Mutex::new(None),
        })
    }

    fn with(out: Output) -> RestoreProgress {
        RestoreProgress {
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Mutex::new(None),
            out,
        }
    }

    fn files_message(&self) -> String {
        format!(
            "{}/{} files",
            self.files_done.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed)
        )
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
        tracing::info!("{}", self.line(false));
    }

    /// `restore: 120/1200 files, 1.20 GiB/8.00 GiB (15%), 95.30 MiB/s`, or at the end
    /// `restore: 1200/1200 files, 8.00 GiB in 86.0s (95.30 MiB/s)`.
    fn line(&self, end: bool) -> String {
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = lock(&self.started).map_or(0.0, |t| t.elapsed().as_secs_f64());
        let rate = if secs > 0.0 {
            HumanBytes((bytes_done as f64 / secs) as u64).to_string()
        } else {
            "-".to_string()
        };
        if end {
            format!(
                "restore: {}, {} in {secs:.1}s ({rate}/s)",
                self.files_message(),
                HumanBytes(bytes_done)
            )
        } else {
            let pct = (bytes_done.saturating_mul(100))
                .checked_div(bytes)
                .unwrap_or(100);
            format!(
                "restore: {}, {}/{} ({pct}%), {rate}/s",
                self.files_message(),
                HumanBytes(bytes_done),
                HumanBytes(bytes)
            )
        }
    }
}

impl Progress for RestoreProgress {
    fn start(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        *lock(&self.started) = Some(Instant::now());
        match &self.out {
            Output::Bar(pb) => {
                pb.set_message(self.files_message());
                pb.set_length(bytes);
                pb.enable_steady_tick(Duration::from_millis(120));
            }
            Output::Log { last, .. } => {
                *lock(last) = Some(Instant::now());
                tracing::info!("restore: {files} files, {} to restore", HumanBytes(bytes));
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
            Output::Log { .. } => tracing::info!("{}", self.line(true)),
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
        let buf = Buf::default();
        let w = buf.clone();
        let sub = crate::log_subscriber(1, false, false, move || w.clone()).finish();
        tracing::subscriber::with_default(sub, f);
        let out = lock(&buf.0).clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn log_lines_tell_files_and_bytes_without_terminal_codes() {
        let p = RestoreProgress::log(Duration::ZERO);
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
        let p = RestoreProgress::log(Duration::from_secs(3600));
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
}
