//! Bundles: files smaller than [`BUNDLE_LIMIT`] are not stored as objects of their own but
//! appended, each as a complete frame (exactly what its own object would hold), to the bundle
//! objects of the backup (`bundle/<id>`), each up to [`BUNDLE_TARGET`] bytes, streamed to
//! storage as it fills (a multipart upload on S3).
//!
//! Why: a data directory of many small relation files (databases with many tables) costs one
//! zstd context, one upload (a temporary file, two fsyncs and a rename locally; a PUT on S3) and
//! one HEAD per 8 KB file otherwise. A bundler keeps one compression context and one read
//! buffer for all its files, and several bundlers (one per copy job) pull files from one queue.
//!
//! A member's manifest entry is handed back only once its bundle is durable (finished); the
//! manifest, written after every copy, stays what makes a backup exist.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pitr_repo::frame::MemberEncoder;
use pitr_repo::{BundleRef, ClusterRepo, Compression, ManifestFile, BUNDLE_LIMIT};
use pitr_storage::{PutMode, Upload};
use tokio::runtime::Handle;

use super::copy::{first_block, is_checksummed, CopyError, PageVerifier, Progress};
use super::walk::SourceFile;

/// Size at which a bundle is finished and the next one started: large enough that the
/// per-object costs vanish, small enough that restore reads a bundle in a few ranged reads.
pub(super) const BUNDLE_TARGET: u64 = 32 << 20;

/// Encoded bytes gathered before they are written to the bundle's upload.
const FLUSH: usize = 1 << 20;

/// What became of a file offered to a bundler.
pub(super) enum Added {
    /// Bundled (or empty): its entry comes back with the bundle's.
    Taken,
    /// It disappeared before it could be opened (a dropped relation).
    Vanished,
    /// It grew to [`BUNDLE_LIMIT`] or more since it was listed: copy it as its own object.
    TooLarge,
}

/// A bundle being written.
struct OpenBundle {
    id: u64,
    upload: Box<dyn Upload>,
    /// Bytes already handed to `upload`.
    written: u64,
    /// Entries of the files in it.
    members: Vec<ManifestFile>,
}

/// Appends small files to bundles of one backup, one bundle at a time.
pub(super) struct Bundler<'a> {
    rt: &'a Handle,
    cluster: &'a ClusterRepo,
    label: &'a str,
    /// Next bundle id, shared by the backup's bundlers.
    ids: &'a AtomicU64,
    enc: MemberEncoder,
    read_buf: Vec<u8>,
    out: Vec<u8>,
    open: Option<OpenBundle>,
    /// Entries of files in finished (durable) bundles, and of empty files.
    done: Vec<ManifestFile>,
}

impl<'a> Bundler<'a> {
    /// A bundler for backup `label`, numbering its bundles from `ids`.
    pub(super) fn new(
        rt: &'a Handle,
        cluster: &'a ClusterRepo,
        label: &'a str,
        ids: &'a AtomicU64,
        compression: Compression,
    ) -> io::Result<Bundler<'a>> {
        Ok(Bundler {
            rt,
            cluster,
            label,
            ids,
            enc: MemberEncoder::new(compression)?,
            read_buf: Vec::new(),
            out: Vec::with_capacity(FLUSH + (64 << 10)),
            open: None,
            done: Vec::new(),
        })
    }

    /// Reads `file` and appends its frame to the open bundle,
    /// starting one when none is open and finishing it when it reaches [`BUNDLE_TARGET`].
    pub(super) fn add(
        &mut self,
        file: &SourceFile,
        verifier: Option<&dyn PageVerifier>,
        progress: &Progress,
    ) -> Result<Added, CopyError> {
        let read_err = |source| CopyError::Read {
            path: file.abs.clone(),
            source,
        };
        let f = match File::open(&file.abs) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Added::Vanished),
            Err(e) => return Err(read_err(e)),
        };
        self.read_buf.clear();
        f.take(BUNDLE_LIMIT)
            .read_to_end(&mut self.read_buf)
            .map_err(read_err)?;
        if self.read_buf.len() as u64 >= BUNDLE_LIMIT {
            return Ok(Added::TooLarge);
        }
        let mut entry = ManifestFile::new(file.rel.clone(), file.mode, file.mtime);
        entry.size = self.read_buf.len() as u64;
        progress
            .bytes
            .fetch_add(self.read_buf.len() as u64, Ordering::Relaxed);
        if self.read_buf.is_empty() {
            // Empty files have no object, bundled or not.
            self.done.push(entry);
            progress.files.fetch_add(1, Ordering::Relaxed);
            return Ok(Added::Taken);
        }
        if let Some(v) = verifier.filter(|_| is_checksummed(&file.rel)) {
            let first = first_block(v, &file.rel);
            entry.checksum_failures = v.bad_blocks(&file.abs, 0, first, &self.read_buf);
        }
        let open = match self.open.take() {
            Some(o) => o,
            None => self.start()?,
        };
        let offset = open.written + self.out.len() as u64;
        let summary = self
            .enc
            .encode_into(&self.read_buf, &mut self.out)
            .map_err(read_err)?;
        entry.blake3 = summary.checksum.to_string();
        entry.stored_size = open.written + self.out.len() as u64 - offset;
        entry.bundle = Some(BundleRef {
            id: open.id,
            offset,
        });
        let mut open = open;
        open.members.push(entry);
        if self.out.len() >= FLUSH {
            self.flush(&mut open)?;
        }
        if open.written + self.out.len() as u64 >= BUNDLE_TARGET {
            self.finish_bundle(open)?;
        } else {
            self.open = Some(open);
        }
        progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(Added::Taken)
    }

    /// Finishes the open bundle; returns the entries of every file taken.
    pub(super) fn finish(mut self) -> Result<Vec<ManifestFile>, CopyError> {
        if let Some(open) = self.open.take() {
            self.finish_bundle(open)?;
        }
        Ok(self.done)
    }

    fn start(&mut self) -> Result<OpenBundle, CopyError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let key = self.cluster.bundle_key(self.label, id);
        let upload = self
            .rt
            .block_on(self.cluster.repo().storage().upload(&key))?;
        Ok(OpenBundle {
            id,
            upload,
            written: 0,
            members: Vec::new(),
        })
    }

    fn flush(&mut self, open: &mut OpenBundle) -> Result<(), CopyError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.out, Vec::with_capacity(FLUSH + (64 << 10)));
        open.written += chunk.len() as u64;
        self.rt.block_on(open.upload.write(Bytes::from(chunk)))?;
        Ok(())
    }

    /// Writes the rest of `open` and publishes it durably; its members are then done.
    fn finish_bundle(&mut self, mut open: OpenBundle) -> Result<(), CopyError> {
        self.flush(&mut open)?;
        let OpenBundle {
            upload, members, ..
        } = open;
        self.rt.block_on(upload.finish(PutMode::Overwrite))?;
        self.done.extend(members);
        Ok(())
    }
}
