//! Small domain numbers that appear in WAL records.

use std::fmt;

/// A transaction id (`TransactionId`, 32 bits, wraps around). A newtype so that xids and
/// object ids cannot be mixed up; `Display` prints the plain number as PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Xid(pub u32);

impl Xid {
    /// `InvalidTransactionId`.
    pub const INVALID: Xid = Xid(0);

    /// True unless this is `InvalidTransactionId` (0).
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An object id (`Oid`): databases, tablespaces, relations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u32);

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Tablespace OID of `pg_default` (relations stored under `base/`).
pub const DEFAULTTABLESPACE_OID: Oid = Oid(1663);
/// Tablespace OID of `pg_global` (shared relations stored under `global/`).
pub const GLOBALTABLESPACE_OID: Oid = Oid(1664);

/// The physical identity of a relation file (`RelFileLocator`, called `RelFileNode` before
/// PG16; same 12-byte layout): tablespace, database and relfilenumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFileLocator {
    /// Tablespace OID.
    pub spc_oid: Oid,
    /// Database OID (0 for shared relations).
    pub db_oid: Oid,
    /// Relfilenumber (the file name, not the relation OID).
    pub rel_number: u32,
}

impl RelFileLocator {
    /// Size on disk and in WAL.
    pub const LEN: usize = 12;

    /// Parses the 12-byte layout.
    pub fn parse(b: &[u8]) -> Option<RelFileLocator> {
        let mut c = crate::wal::bytes::Cursor::new(b);
        Some(RelFileLocator {
            spc_oid: Oid(c.u32()?),
            db_oid: Oid(c.u32()?),
            rel_number: c.u32()?,
        })
    }

    /// The main fork's path relative to the data directory for the default and global
    /// tablespaces (`base/5/16384`, `global/1262`), as `pg_waldump` prints dropped relations;
    /// `None` for other tablespaces, whose path needs the catalog version.
    pub fn default_path(&self) -> Option<String> {
        match self.spc_oid {
            DEFAULTTABLESPACE_OID => Some(format!("base/{}/{}", self.db_oid, self.rel_number)),
            GLOBALTABLESPACE_OID => Some(format!("global/{}", self.rel_number)),
            _ => None,
        }
    }
}

impl fmt::Display for RelFileLocator {
    /// `spc/db/rel`, as in `pg_waldump`'s block references.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spc_oid, self.db_oid, self.rel_number)
    }
}

/// A relation fork (`ForkNumber`): 0 main, 1 free space map, 2 visibility map, 3 init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForkNumber(pub u8);

impl ForkNumber {
    /// `MAIN_FORKNUM`.
    pub const MAIN: ForkNumber = ForkNumber(0);
    /// `FSM_FORKNUM`.
    pub const FSM: ForkNumber = ForkNumber(1);
    /// `VISIBILITYMAP_FORKNUM`.
    pub const VISIBILITY_MAP: ForkNumber = ForkNumber(2);
    /// `INIT_FORKNUM`.
    pub const INIT: ForkNumber = ForkNumber(3);

    /// PostgreSQL's name (`main`, `fsm`, `vm`, `init`), `None` for unknown numbers.
    pub fn name(self) -> Option<&'static str> {
        ["main", "fsm", "vm", "init"]
            .get(usize::from(self.0))
            .copied()
    }
}

impl fmt::Display for ForkNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "fork{}", self.0),
        }
    }
}

/// A resource manager id (`RmgrId`): which subsystem wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RmgrId(pub u8);

/// Built-in resource manager names as `pg_waldump` prints them, indexed by id
/// (`src/include/access/rmgrlist.h`, identical in 14–18).
const RMGR_NAMES: [&str; 22] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

impl RmgrId {
    /// `RM_XLOG_ID`.
    pub const XLOG: RmgrId = RmgrId(0);
    /// `RM_XACT_ID`.
    pub const XACT: RmgrId = RmgrId(1);
    /// `RM_SMGR_ID`.
    pub const SMGR: RmgrId = RmgrId(2);
    /// `RM_CLOG_ID`.
    pub const CLOG: RmgrId = RmgrId(3);
    /// `RM_DBASE_ID`.
    pub const DBASE: RmgrId = RmgrId(4);
    /// `RM_TBLSPC_ID`.
    pub const TBLSPC: RmgrId = RmgrId(5);
    /// `RM_MULTIXACT_ID`.
    pub const MULTIXACT: RmgrId = RmgrId(6);
    /// `RM_RELMAP_ID`.
    pub const RELMAP: RmgrId = RmgrId(7);
    /// `RM_STANDBY_ID`.
    pub const STANDBY: RmgrId = RmgrId(8);
    /// `RM_HEAP2_ID`.
    pub const HEAP2: RmgrId = RmgrId(9);
    /// `RM_HEAP_ID`.
    pub const HEAP: RmgrId = RmgrId(10);
    /// `RM_BTREE_ID`.
    pub const BTREE: RmgrId = RmgrId(11);
    /// `RM_HASH_ID`.
    pub const HASH: RmgrId = RmgrId(12);
    /// `RM_GIN_ID`.
    pub const GIN: RmgrId = RmgrId(13);
    /// `RM_GIST_ID`.
    pub const GIST: RmgrId = RmgrId(14);
    /// `RM_SEQ_ID`.
    pub const SEQ: RmgrId = RmgrId(15);
    /// `RM_SPGIST_ID`.
    pub const SPGIST: RmgrId = RmgrId(16);
    /// `RM_BRIN_ID`.
    pub const BRIN: RmgrId = RmgrId(17);
    /// `RM_COMMIT_TS_ID`.
    pub const COMMIT_TS: RmgrId = RmgrId(18);
    /// `RM_REPLORIGIN_ID`.
    pub const REPLORIGIN: RmgrId = RmgrId(19);
    /// `RM_GENERIC_ID`.
    pub const GENERIC: RmgrId = RmgrId(20);
    /// `RM_LOGICALMSG_ID`.
    pub const LOGICALMSG: RmgrId = RmgrId(21);

    /// The built-in resource manager's name (`Heap`, `Transaction`, …), `None` for custom or
    /// unknown ids.
    pub fn builtin_name(self) -> Option<&'static str> {
        RMGR_NAMES.get(usize::from(self.0)).copied()
    }

    /// True for ids reserved for extensions (128–255, PG15+).
    pub fn is_custom(self) -> bool {
        self.0 >= 128
    }
}

impl fmt::Display for RmgrId {
    /// The built-in name, or `custom###` as `pg_waldump` prints unknown custom managers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.builtin_name() {
            Some(n) => f.write_str(n),
            None => write!(f, "custom{:03}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_pg_waldump() {
        assert_eq!(RmgrId::HEAP.to_string(), "Heap");
        assert_eq!(RmgrId::XACT.to_string(), "Transaction");
        assert_eq!(RmgrId::LOGICALMSG.to_string(), "LogicalMessage");
        assert_eq!(RmgrId(130).to_string(), "custom130");
        assert_eq!(ForkNumber::VISIBILITY_MAP.to_string(), "vm");
        assert_eq!(ForkNumber(9).to_string(), "fork9");
        let r = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: 16384,
        };
        assert_eq!(r.to_string(), "1663/5/16384");
        assert_eq!(r.default_path().as_deref(), Some("base/5/16384"));
        assert_eq!(RelFileLocator::parse(&[0; 11]), None);
    }
}
