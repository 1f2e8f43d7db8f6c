//! Progress of a long step (restore, backup, verify, expire), reported to whoever renders it
//! (the CLI: a bar on a terminal, log lines elsewhere). Engines call it; it never changes what
//! they do.

/// Receives progress while a step runs (e.g. a progress bar). Called from the working tasks and
/// threads, concurrently.
pub trait Progress: Send + Sync {
    /// Called once, first, with the totals (0 when unknown).
    fn start(&self, files: u64, bytes: u64);
    /// Called as bytes are done: each piece written, or a whole file kept by `--delta`.
    /// The calls of a complete step add up to the `bytes` given to [`Progress::start`] (when
    /// known).
    fn advance(&self, bytes: u64);
    /// Called when one more file (or object) is done.
    fn file_done(&self);
    /// Called when all files are done.
    fn finish(&self);
}
