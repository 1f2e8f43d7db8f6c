//! The control file `global/pg_control` (`ControlFileData` in `src/include/catalog/pg_control.h`).
//!
//! pitr reads it to learn, without a running server, what a data directory is: which cluster
//! (system identifier), which layout (pg_control and catalog versions), where the last
//! checkpoint and its REDO point are, whether the cluster was shut down cleanly, and the sizes
//! fixed at initdb (WAL segment, block).
//!
//! The struct's layout is chosen from `pg_control_version` through [`LAYOUTS`], one row per
//! format; the offsets were checked against real files of PostgreSQL 14 to 18 (see
//! `scripts/gen-format-fixtures.sh`). Only the 64-bit little-endian layout (MAXALIGN 8) of
//! the platforms pitr supports is read; anything else is refused, never guessed.

use std::fmt;

use crate::{Lsn, PgMajor, TimelineId, WalSegSize};

/// Size of the `pg_control` file on disk (`PG_CONTROL_FILE_SIZE`); the struct fills only its
/// first few hundred bytes, the rest is zeros.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// `FLOATFORMAT_VALUE`, stored to detect an incompatible floating-point format.
const FLOAT_FORMAT: f64 = 1_234_567.0;

/// Byte offsets of the fields pitr reads in one `pg_control` format (x86-64/arm64 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLayout {
    /// `PG_CONTROL_VERSION` of this format.
    pub pg_control_version: u32,
    /// First and last PostgreSQL major version (supported by pitr) that write this format.
    pub majors: (u32, u32),
    /// `state` (DBState, 4 bytes).
    pub state: usize,
    /// `time` (pg_time_t) of the last update.
    pub time: usize,
    /// `checkPoint`: LSN of the last checkpoint record.
    pub checkpoint: usize,
    /// `checkPointCopy.redo`.
    pub checkpoint_redo: usize,
    /// `checkPointCopy.ThisTimeLineID`.
    pub checkpoint_tli: usize,
    /// `checkPointCopy.PrevTimeLineID`.
    pub checkpoint_prev_tli: usize,
    /// `checkPointCopy.fullPageWrites`.
    pub checkpoint_full_page_writes: usize,
    /// `checkPointCopy.wal_level` (PG17+; before that the bytes are padding).
    pub checkpoint_wal_level: Option<usize>,
    /// `checkPointCopy.nextXid` (FullTransactionId).
    pub checkpoint_next_xid: usize,
    /// `checkPointCopy.nextOid`.
    pub checkpoint_next_oid: usize,
    /// `checkPointCopy.time`.
    pub checkpoint_time: usize,
    /// `minRecoveryPoint`.
    pub min_recovery_point: usize,
    /// `minRecoveryPointTLI`.
    pub min_recovery_point_tli: usize,
    /// `backupStartPoint`.
    pub backup_start_point: usize,
    /// `backupEndPoint`.
    pub backup_end_point: usize,
    /// `backupEndRequired` (bool).
    pub backup_end_required: usize,
    /// `wal_level` (int).
    pub wal_level: usize,
    /// `wal_log_hints` (bool).
    pub wal_log_hints: usize,
    /// `maxAlign`.
    pub max_align: usize,
    /// `floatFormat` (double, 1234567.0).
    pub float_format: usize,
    /// `blcksz`.
    pub blcksz: usize,
    /// `relseg_size`.
    pub relseg_size: usize,
    /// `xlog_blcksz`.
    pub xlog_blcksz: usize,
    /// `xlog_seg_size`.
    pub xlog_seg_size: usize,
    /// `data_checksum_version`.
    pub data_checksum_version: usize,
    /// `crc`: CRC-32C of every byte before it (so also `offsetof(ControlFileData, crc)`).
    pub crc: usize,
}

/// PG14–16: `PG_CONTROL_VERSION` 1300.
const LAYOUT_1300: ControlLayout = ControlLayout {
    pg_control_version: 1300,
    majors: (14, 16),
    state: 16,
    time: 24,
    checkpoint: 32,
    checkpoint_redo: 40,
    checkpoint_tli: 48,
    checkpoint_prev_tli: 52,
    checkpoint_full_page_writes: 56,
    checkpoint_wal_level: None,
    checkpoint_next_xid: 64,
    checkpoint_next_oid: 72,
    checkpoint_time: 104,
    min_recovery_point: 136,
    min_recovery_point_tli: 144,
    backup_start_point: 152,
    backup_end_point: 160,
    backup_end_required: 168,
    wal_level: 172,
    wal_log_hints: 176,
    max_align: 204,
    float_format: 208,
    blcksz: 216,
    relseg_size: 220,
    xlog_blcksz: 224,
    xlog_seg_size: 228,
    data_checksum_version: 252,
    crc: 288,
};

/// The table of `pg_control` formats pitr reads, keyed by `pg_control_version`.
///
/// - 1300 (PG14–16): the base layout.
/// - 1700 (PG17): `CheckPoint` gains `wal_level` in what was padding after `fullPageWrites`;
///   no other offset moves.
/// - 1800 (PG18): `default_char_signedness` (bool) is added before the 32-byte
///   `mock_authentication_nonce`, which pushes `crc` from 288 to 292.
pub const LAYOUTS: &[ControlLayout] = &[
    LAYOUT_1300,
    ControlLayout {
        pg_control_version: 1700,
        majors: (17, 17),
        checkpoint_wal_level: Some(60),
        ..LAYOUT_1300
    },
    ControlLayout {
        pg_control_version: 1800,
        majors: (18, 18),
        checkpoint_wal_level: Some(60),
        crc: 292,
        ..LAYOUT_1300
    },
];

/// `catalog_version_no` of each supported major's release (`catversion.h`); a development or
/// beta version of major N has a number above N-1's and at most N's.
const RELEASE_CATALOG_VERSIONS: &[(u32, u32)] = &[
    (13, 202_007_201),
    (14, 202_107_181),
    (15, 202_209_061),
    (16, 202_307_071),
    (17, 202_406_281),
    (18, 202_506_291),
];

impl ControlLayout {
    /// The layout of files with this `pg_control_version`, if pitr knows it.
    pub fn for_version(pg_control_version: u32) -> Option<&'static ControlLayout> {
        LAYOUTS
            .iter()
            .find(|l| l.pg_control_version == pg_control_version)
    }
}

/// The cluster state recorded in pg_control (`DBState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbState {
    /// `DB_STARTUP`.
    StartingUp,
    /// `DB_SHUTDOWNED`: cleanly shut down.
    ShutDown,
    /// `DB_SHUTDOWNED_IN_RECOVERY`: a standby or recovering server, cleanly shut down.
    ShutDownInRecovery,
    /// `DB_SHUTDOWNING`.
    ShuttingDown,
    /// `DB_IN_CRASH_RECOVERY`.
    InCrashRecovery,
    /// `DB_IN_ARCHIVE_RECOVERY`: archive recovery or standby.
    InArchiveRecovery,
    /// `DB_IN_PRODUCTION`: running (or crashed while running).
    InProduction,
}

impl DbState {
    fn from_raw(v: u32) -> Option<DbState> {
        Some(match v {
            0 => DbState::StartingUp,
            1 => DbState::ShutDown,
            2 => DbState::ShutDownInRecovery,
            3 => DbState::ShuttingDown,
            4 => DbState::InCrashRecovery,
            5 => DbState::InArchiveRecovery,
            6 => DbState::InProduction,
            _ => return None,
        })
    }

    /// True for the two cleanly-shut-down states: the data directory is consistent on disk.
    pub fn is_clean_shutdown(self) -> bool {
        matches!(self, DbState::ShutDown | DbState::ShutDownInRecovery)
    }
}

impl fmt::Display for DbState {
    /// The wording of `pg_controldata`'s "Database cluster state".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbState::StartingUp => "starting up",
            DbState::ShutDown => "shut down",
            DbState::ShutDownInRecovery => "shut down in recovery",
            DbState::ShuttingDown => "shutting down",
            DbState::InCrashRecovery => "in crash recovery",
            DbState::InArchiveRecovery => "in archive recovery",
            DbState::InProduction => "in production",
        })
    }
}

/// The `wal_level` setting (`WalLevel` in `xlog.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalLevel {
    /// `minimal`: not enough WAL for archiving or replication.
    Minimal,
    /// `replica`: what archiving and standbys need.
    Replica,
    /// `logical`.
    Logical,
}

impl WalLevel {
    fn from_raw(v: u32) -> Option<WalLevel> {
        Some(match v {
            0 => WalLevel::Minimal,
            1 => WalLevel::Replica,
            2 => WalLevel::Logical,
            _ => return None,
        })
    }

    /// Parses the setting's name as `SHOW wal_level` prints it.
    pub fn from_setting(s: &str) -> Option<WalLevel> {
        match s.trim() {
            "minimal" => Some(WalLevel::Minimal),
            "replica" | "archive" | "hot_standby" => Some(WalLevel::Replica),
            "logical" => Some(WalLevel::Logical),
            _ => None,
        }
    }
}

impl fmt::Display for WalLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WalLevel::Minimal => "minimal",
            WalLevel::Replica => "replica",
            WalLevel::Logical => "logical",
        })
    }
}

/// The copy of the last checkpoint record kept in pg_control (`CheckPoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointCopy {
    /// REDO point: where replay must start to use this checkpoint.
    pub redo: Lsn,
    /// The timeline the checkpoint was written on.
    pub timeline: TimelineId,
    /// The previous timeline (equals `timeline` unless this checkpoint began a new one).
    pub prev_timeline: TimelineId,
    /// `full_page_writes` at the checkpoint.
    pub full_page_writes: bool,
    /// `wal_level` at the checkpoint (recorded from PG17 on).
    pub wal_level: Option<WalLevel>,
    /// Next transaction ID, with its epoch in the high 32 bits (`FullTransactionId`).
    pub next_full_xid: u64,
    /// Next OID.
    pub next_oid: u32,
    /// Time of the checkpoint, seconds since the Unix epoch.
    pub time: i64,
}

/// The fields of `pg_control` pitr uses, checked against the file's CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFile {
    /// The format's row of [`LAYOUTS`].
    pub layout: &'static ControlLayout,
    /// Unique identifier of the cluster, also in every WAL segment's long page header.
    pub system_id: u64,
    /// `PG_CONTROL_VERSION` of the file (1300, 1700, 1800).
    pub pg_control_version: u32,
    /// `CATALOG_VERSION_NO` (`catversion.h`), e.g. 202406281 for PostgreSQL 17.
    pub catalog_version_no: u32,
    /// Cluster state.
    pub state: DbState,
    /// Time of the last update of pg_control, seconds since the Unix epoch.
    pub time: i64,
    /// LSN of the last checkpoint record.
    pub checkpoint: Lsn,
    /// That checkpoint's contents (REDO point, timeline, ...).
    pub checkpoint_copy: CheckpointCopy,
    /// Recovery must replay up to here before the cluster is consistent (0/0: none).
    pub min_recovery_point: Lsn,
    /// Timeline of `min_recovery_point` (`None` when zero).
    pub min_recovery_point_tli: Option<TimelineId>,
    /// REDO point of the base backup being recovered, until its end is reached (0/0: none).
    pub backup_start_point: Lsn,
    /// End of a backup taken from a standby, until reached (0/0: none).
    pub backup_end_point: Lsn,
    /// Recovery must see an end-of-backup record before the cluster is consistent.
    pub backup_end_required: bool,
    /// `wal_level` the server last ran with.
    pub wal_level: WalLevel,
    /// `wal_log_hints` the server last ran with.
    pub wal_log_hints: bool,
    /// Data block size (`BLCKSZ`), normally 8192.
    pub block_size: u32,
    /// Blocks per relation segment file (`RELSEG_SIZE`), normally 131072 (1 GB).
    pub relseg_size: u32,
    /// WAL block size (`XLOG_BLCKSZ`), normally 8192.
    pub wal_block_size: u32,
    /// WAL segment size chosen at initdb.
    pub wal_seg_size: WalSegSize,
    /// Data page checksum version: 0 when checksums are off, 1 when on.
    pub data_checksum_version: u32,
}

/// Why bytes are not a usable pg_control file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlFileError {
    /// Fewer bytes than the struct needs.
    #[error("pg_control too short: {len} bytes, the format needs at least {need}")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A `pg_control_version` that is not one of PostgreSQL 14–18's.
    #[error("unknown pg_control version {0}: pitr reads PostgreSQL 14 to 18 (pg_control versions 1300, 1700, 1800)")]
    UnknownVersion(u32),
    /// The version is a known one byte-swapped: the file comes from a big-endian machine.
    #[error("pg_control version {0} looks byte-swapped: the file comes from a machine of different byte order")]
    ByteOrder(u32),
    /// The stored CRC does not match the contents.
    #[error("pg_control checksum mismatch: stored 0x{stored:08X}, computed 0x{computed:08X}; hint: the file is corrupt or was copied while being written")]
    CrcMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// A field holds a value PostgreSQL never writes (or one of another platform's layout).
    #[error("pg_control field {field} has an invalid value {value}")]
    InvalidField {
        /// Name of the field in `ControlFileData`.
        field: &'static str,
        /// The value found (floats are given as their bit pattern).
        value: u64,
    },
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    off.checked_add(4)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    off.checked_add(8)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn bool_at(b: &[u8], off: usize) -> bool {
    b.get(off).is_some_and(|&v| v != 0)
}

/// Offset of `pg_control_version`, the same in every format.
const VERSION_OFFSET: usize = 8;

impl ControlFile {
    /// Parses and CRC-checks the contents of `global/pg_control` (normally 8192 bytes; any
    /// buffer holding at least the struct is accepted).
    pub fn parse(bytes: &[u8]) -> Result<ControlFile, ControlFileError> {
        if bytes.len() < VERSION_OFFSET + 4 {
            return Err(ControlFileError::TooShort {
                len: bytes.len(),
                need: VERSION_OFFSET + 4,
            });
        }
        let version = u32_at(bytes, VERSION_OFFSET);
        let layout = match ControlLayout::for_version(version) {
            Some(l) => l,
            None if ControlLayout::for_version(version.swap_bytes()).is_some() => {
                return Err(ControlFileError::ByteOrder(version.swap_bytes()))
            }
            None => return Err(ControlFileError::UnknownVersion(version)),
        };
        let need = layout.crc + 4;
        let Some(body) = bytes.get(..layout.crc) else {
            return Err(ControlFileError::TooShort {
                len: bytes.len(),
                need,
            });
        };
        if bytes.len() < need {
            return Err(ControlFileError::TooShort {
                len: bytes.len(),
                need,
            });
        }
        let stored = u32_at(bytes, layout.crc);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(ControlFileError::CrcMismatch { stored, computed });
        }
        Self::decode(bytes, layout)
    }

    fn decode(b: &[u8], l: &'static ControlLayout) -> Result<ControlFile, ControlFileError> {
        let invalid =
            |field: &'static str, value: u64| ControlFileError::InvalidField { field, value };

        // The offsets assume MAXALIGN 8 and IEEE doubles; check before trusting them.
        let max_align = u32_at(b, l.max_align);
        if max_align != 8 {
            return Err(invalid("maxAlign", max_align.into()));
        }
        let float_bits = u64_at(b, l.float_format);
        if f64::from_bits(float_bits) != FLOAT_FORMAT {
            return Err(invalid("floatFormat", float_bits));
        }

        let raw_state = u32_at(b, l.state);
        let state = DbState::from_raw(raw_state).ok_or(invalid("state", raw_state.into()))?;
        let raw_level = u32_at(b, l.wal_level);
        let wal_level =
            WalLevel::from_raw(raw_level).ok_or(invalid("wal_level", raw_level.into()))?;
        let checkpoint_wal_level = match l.checkpoint_wal_level {
            None => None,
            Some(off) => {
                let raw = u32_at(b, off);
                Some(
                    WalLevel::from_raw(raw)
                        .ok_or(invalid("checkPointCopy.wal_level", raw.into()))?,
                )
            }
        };
        let tli = |field: &'static str, off: usize| {
            let v = u32_at(b, off);
            if v == 0 {
                Err(invalid(field, 0))
            } else {
                Ok(TimelineId(v))
            }
        };
        let seg = u32_at(b, l.xlog_seg_size);
        let wal_seg_size =
            WalSegSize::new(seg.into()).map_err(|_| invalid("xlog_seg_size", seg.into()))?;
        let block_size = u32_at(b, l.blcksz);
        if !valid_block_size(block_size) {
            return Err(invalid("blcksz", block_size.into()));
        }
        let wal_block_size = u32_at(b, l.xlog_blcksz);
        if !valid_block_size(wal_block_size) {
            return Err(invalid("xlog_blcksz", wal_block_size.into()));
        }
        let relseg_size = u32_at(b, l.relseg_size);
        if relseg_size == 0 {
            return Err(invalid("relseg_size", 0));
        }
        let min_tli = u32_at(b, l.min_recovery_point_tli);

        Ok(ControlFile {
            layout: l,
            system_id: u64_at(b, 0),
            pg_control_version: l.pg_control_version,
            catalog_version_no: u32_at(b, VERSION_OFFSET + 4),
            state,
            time: u64_at(b, l.time) as i64,
            checkpoint: Lsn(u64_at(b, l.checkpoint)),
            checkpoint_copy: CheckpointCopy {
                redo: Lsn(u64_at(b, l.checkpoint_redo)),
                timeline: tli("checkPointCopy.ThisTimeLineID", l.checkpoint_tli)?,
                prev_timeline: tli("checkPointCopy.PrevTimeLineID", l.checkpoint_prev_tli)?,
                full_page_writes: bool_at(b, l.checkpoint_full_page_writes),
                wal_level: checkpoint_wal_level,
                next_full_xid: u64_at(b, l.checkpoint_next_xid),
                next_oid: u32_at(b, l.checkpoint_next_oid),
                time: u64_at(b, l.checkpoint_time) as i64,
            },
            min_recovery_point: Lsn(u64_at(b, l.min_recovery_point)),
            min_recovery_point_tli: (min_tli != 0).then_some(TimelineId(min_tli)),
            backup_start_point: Lsn(u64_at(b, l.backup_start_point)),
            backup_end_point: Lsn(u64_at(b, l.backup_end_point)),
            backup_end_required: bool_at(b, l.backup_end_required),
            wal_level,
            wal_log_hints: bool_at(b, l.wal_log_hints),
            block_size,
            relseg_size,
            wal_block_size,
            wal_seg_size,
            data_checksum_version: u32_at(b, l.data_checksum_version),
        })
    }

    /// True when data pages carry checksums (`initdb -k` or `pg_checksums --enable`).
    pub fn data_checksums(&self) -> bool {
        self.data_checksum_version != 0
    }

    /// The timeline of the last checkpoint: the cluster's current timeline when it was last
    /// shut down.
    pub fn timeline(&self) -> TimelineId {
        self.checkpoint_copy.timeline
    }

    /// The PostgreSQL major version that wrote the file, from its format and catalog version;
    /// `None` for a version pitr does not support (e.g. PostgreSQL 13, which also writes
    /// format 1300, or a development version newer than 18).
    pub fn major(&self) -> Option<PgMajor> {
        let mut prev_release = 0;
        for &(major, release) in RELEASE_CATALOG_VERSIONS {
            if self.catalog_version_no > prev_release && self.catalog_version_no <= release {
                let (lo, hi) = self.layout.majors;
                return if (lo..=hi).contains(&major) {
                    PgMajor::new(major).ok()
                } else {
                    None
                };
            }
            prev_release = release;
        }
        None
    }
}

fn valid_block_size(v: u32) -> bool {
    v.is_power_of_two() && (1024..=32768).contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid PG17-format file, built from the layout table.
    fn synthetic(version: u32) -> Vec<u8> {
        let l = ControlLayout::for_version(version).unwrap();
        let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
        let put32 = |b: &mut Vec<u8>, off: usize, v: u32| {
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        };
        let put64 = |b: &mut Vec<u8>, off: usize, v: u64| {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        };
        put64(&mut b, 0, 7_000_000_000_000_000_001);
        put32(&mut b, 8, version);
        put32(&mut b, 12, 202_406_281);
        put32(&mut b, l.state, 6);
        put64(&mut b, l.checkpoint, 0x0300_0080);
        put64(&mut b, l.checkpoint_redo, 0x0300_0028);
        put32(&mut b, l.checkpoint_tli, 3);
        put32(&mut b, l.checkpoint_prev_tli, 2);
        if let Some(off) = l.checkpoint_wal_level {
            put32(&mut b, off, 1);
        }
        put64(&mut b, l.backup_start_point, 0x0200_0028);
        b[l.backup_end_required] = 1;
        put32(&mut b, l.wal_level, 2);
        put32(&mut b, l.max_align, 8);
        put64(&mut b, l.float_format, FLOAT_FORMAT.to_bits());
        put32(&mut b, l.blcksz, 8192);
        put32(&mut b, l.relseg_size, 131_072);
        put32(&mut b, l.xlog_blcksz, 8192);
        put32(&mut b, l.xlog_seg_size, 64 << 20);
        put32(&mut b, l.data_checksum_version, 1);
        let crc = crc32c::crc32c(&b[..l.crc]);
        put32(&mut b, l.crc, crc);
        b
    }

    #[test]
    fn reads_every_field_of_a_file_built_from_the_layout() {
        let c = ControlFile::parse(&synthetic(1700)).unwrap();
        assert_eq!(c.system_id, 7_000_000_000_000_000_001);
        assert_eq!(c.state, DbState::InProduction);
        assert_eq!(c.checkpoint, Lsn(0x0300_0080));
        assert_eq!(c.checkpoint_copy.redo, Lsn(0x0300_0028));
        assert_eq!(c.timeline(), TimelineId(3));
        assert_eq!(c.checkpoint_copy.prev_timeline, TimelineId(2));
        assert_eq!(c.checkpoint_copy.wal_level, Some(WalLevel::Replica));
        assert_eq!(c.backup_start_point, Lsn(0x0200_0028));
        assert!(c.backup_end_required);
        assert_eq!(c.min_recovery_point_tli, None);
        assert_eq!(c.wal_level, WalLevel::Logical);
        assert_eq!(c.wal_seg_size.bytes(), 64 << 20);
        assert!(c.data_checksums());
        assert_eq!(c.major().map(PgMajor::number), Some(17));
    }

    #[test]
    fn refuses_unknown_and_byte_swapped_versions() {
        let mut b = synthetic(1300);
        b[8..12].copy_from_slice(&1201u32.to_le_bytes());
        assert_eq!(
            ControlFile::parse(&b),
            Err(ControlFileError::UnknownVersion(1201))
        );
        b[8..12].copy_from_slice(&1800u32.to_be_bytes());
        assert_eq!(
            ControlFile::parse(&b),
            Err(ControlFileError::ByteOrder(1800))
        );
    }

    #[test]
    fn refuses_truncated_files_without_panicking() {
        let b = synthetic(1800);
        for len in [0, 5, 11, 12, 100, 291, 295] {
            assert!(
                matches!(
                    ControlFile::parse(&b[..len]),
                    Err(ControlFileError::TooShort { .. })
                ),
                "length {len}"
            );
        }
        assert!(ControlFile::parse(&b[..296]).is_ok());
    }

    #[test]
    fn refuses_values_postgres_never_writes_even_with_a_valid_crc() {
        let l = ControlLayout::for_version(1300).unwrap();
        for (off, value) in [
            (l.state, 7u32),
            (l.wal_level, 3),
            (l.xlog_seg_size, 3 << 20),
        ] {
            let mut b = synthetic(1300);
            b[off..off + 4].copy_from_slice(&value.to_le_bytes());
            let crc = crc32c::crc32c(&b[..l.crc]);
            b[l.crc..l.crc + 4].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(
                    ControlFile::parse(&b),
                    Err(ControlFileError::InvalidField { .. })
                ),
                "offset {off}"
            );
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every version header followed by noise.
        let mut x: u32 = 0x1234_5678;
        for round in 0..2000 {
            let len = (round * 7) % 400;
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if b.len() >= 12 {
                let v = LAYOUTS[round % LAYOUTS.len()].pg_control_version;
                b[8..12].copy_from_slice(&v.to_le_bytes());
            }
            let _ = ControlFile::parse(&b);
        }
    }

    #[test]
    fn maps_catalog_versions_to_majors() {
        let mut c = ControlFile::parse(&synthetic(1300)).unwrap();
        for (cat, major) in [
            (202_107_181, Some(14)),
            (202_108_000, Some(15)),
            (202_307_071, Some(16)),
            (202_007_201, None),
            (202_406_281, None),
        ] {
            c.catalog_version_no = cat;
            assert_eq!(c.major().map(PgMajor::number), major, "catalog {cat}");
        }
    }
}
