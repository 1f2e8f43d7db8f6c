//! What differs between PostgreSQL majors on a replication connection: one row per major,
//! chosen from the server's `server_version_num`. An unknown major is an error.
//!
//! Sources: each major's `src/backend/replication/repl_gram.y` and
//! `src/backend/backup/basebackup_copy.c` (`replication/basebackup.c` on 14), and the
//! "Streaming Replication Protocol" chapter of its documentation; checked by
//! `tests/replication.rs` on 14–18.

/// How `BASE_BACKUP` is spelled and how its data comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseBackupDialect {
    /// 14: `BASE_BACKUP LABEL '…' FAST NOWAIT MANIFEST 'yes' …` (bare keywords); one
    /// `CopyOutResponse` of plain tar data per tablespace, then one for the manifest.
    Keywords,
    /// 15+: `BASE_BACKUP (LABEL '…', CHECKPOINT 'fast', WAIT false, …)`; a single
    /// `CopyOutResponse` whose `CopyData` messages carry a type byte: `n` new archive,
    /// `d` data, `p` progress, `m` manifest follows.
    OptionList,
}

/// How `CREATE_REPLICATION_SLOT … PHYSICAL` takes its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOptionSyntax {
    /// 14: `… PHYSICAL RESERVE_WAL`.
    Keywords,
    /// 15+: `… PHYSICAL (RESERVE_WAL)` (the keyword form is still accepted, but deprecated).
    OptionList,
}

/// The replication-protocol facts of one major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplFeatures {
    /// Major version number.
    pub major: u32,
    /// `BASE_BACKUP` grammar and stream format.
    pub base_backup: BaseBackupDialect,
    /// `CREATE_REPLICATION_SLOT` option syntax.
    pub slot_options: SlotOptionSyntax,
    /// `READ_REPLICATION_SLOT` exists (15+).
    pub read_replication_slot: bool,
    /// `UPLOAD_MANIFEST` and `BASE_BACKUP (INCREMENTAL)` exist (17+; the server also needs
    /// `summarize_wal = on`).
    pub incremental_backup: bool,
}

/// The table: one row per supported major.
pub const REPL_FEATURES: &[ReplFeatures] = &[
    ReplFeatures {
        major: 14,
        base_backup: BaseBackupDialect::Keywords,
        slot_options: SlotOptionSyntax::Keywords,
        read_replication_slot: false,
        incremental_backup: false,
    },
    ReplFeatures {
        major: 15,
        base_backup: BaseBackupDialect::OptionList,
        slot_options: SlotOptionSyntax::OptionList,
        read_replication_slot: true,
        incremental_backup: false,
    },
    ReplFeatures {
        major: 16,
        base_backup: BaseBackupDialect::OptionList,
        slot_options: SlotOptionSyntax::OptionList,
        read_replication_slot: true,
        incremental_backup: false,
    },
    ReplFeatures {
        major: 17,
        base_backup: BaseBackupDialect::OptionList,
        slot_options: SlotOptionSyntax::OptionList,
        read_replication_slot: true,
        incremental_backup: true,
    },
    ReplFeatures {
        major: 18,
        base_backup: BaseBackupDialect::OptionList,
        slot_options: SlotOptionSyntax::OptionList,
        read_replication_slot: true,
        incremental_backup: true,
    },
];

/// `CREATE_REPLICATION_SLOT name [TEMPORARY] PHYSICAL [RESERVE_WAL]` in the server's grammar;
/// `name` must already be valid (see `validate_slot_name`).
pub(crate) fn create_slot_sql(
    f: &ReplFeatures,
    name: &str,
    temporary: bool,
    reserve_wal: bool,
) -> String {
    let mut sql = format!("CREATE_REPLICATION_SLOT {name}");
    if temporary {
        sql.push_str(" TEMPORARY");
    }
    sql.push_str(" PHYSICAL");
    if reserve_wal {
        sql.push_str(match f.slot_options {
            SlotOptionSyntax::Keywords => " RESERVE_WAL",
            SlotOptionSyntax::OptionList => " (RESERVE_WAL)",
        });
    }
    sql
}

/// The `BASE_BACKUP` options pitr sends, already checked and quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseBackupSpec {
    /// Quoted label literal.
    pub label: String,
    pub progress: bool,
    pub fast: bool,
    pub wal: bool,
    pub wait: bool,
    pub max_rate_kb: Option<u32>,
    pub tablespace_map: bool,
    pub verify_checksums: bool,
    /// `yes`, or `no` (then no manifest option is sent: the default).
    pub manifest: &'static str,
    /// `CRC32C`, `SHA256`, … (quoted by the builder).
    pub manifest_checksums: &'static str,
    pub incremental: bool,
}

/// `BASE_BACKUP …` in the server's grammar (14: keywords; 15+: option list, spelled as
/// pg_basebackup 15+ spells it).
pub(crate) fn base_backup_sql(f: &ReplFeatures, o: &BaseBackupSpec) -> String {
    match f.base_backup {
        BaseBackupDialect::Keywords => {
            let mut sql = format!("BASE_BACKUP LABEL {}", o.label);
            let mut flag = |on: bool, word: &str| {
                if on {
                    sql.push(' ');
                    sql.push_str(word);
                }
            };
            flag(o.progress, "PROGRESS");
            flag(o.fast, "FAST");
            flag(o.wal, "WAL");
            flag(!o.wait, "NOWAIT");
            flag(o.tablespace_map, "TABLESPACE_MAP");
            flag(!o.verify_checksums, "NOVERIFY_CHECKSUMS");
            if let Some(rate) = o.max_rate_kb {
                sql.push_str(&format!(" MAX_RATE {rate}"));
            }
            // Checksums without a manifest are an error on the server.
            if o.manifest == "yes" {
                sql.push_str(&format!(
                    " MANIFEST 'yes' MANIFEST_CHECKSUMS '{}'",
                    o.manifest_checksums
                ));
            }
            sql
        }
        BaseBackupDialect::OptionList => {
            let mut opts = vec![format!("LABEL {}", o.label)];
            let mut flag = |on: bool, opt: &str| {
                if on {
                    opts.push(opt.to_string());
                }
            };
            flag(o.progress, "PROGRESS");
            flag(o.fast, "CHECKPOINT 'fast'");
            flag(o.wal, "WAL");
            flag(!o.wait, "WAIT 0");
            flag(o.tablespace_map, "TABLESPACE_MAP");
            flag(!o.verify_checksums, "VERIFY_CHECKSUMS 0");
            flag(o.incremental, "INCREMENTAL");
            if let Some(rate) = o.max_rate_kb {
                opts.push(format!("MAX_RATE {rate}"));
            }
            if o.manifest == "yes" {
                opts.push("MANIFEST 'yes'".to_string());
                opts.push(format!("MANIFEST_CHECKSUMS '{}'", o.manifest_checksums));
            }
            format!("BASE_BACKUP ({})", opts.join(", "))
        }
    }
}

/// The row for `server_version_num` (e.g. 170010), or `None` for a major not in the table.
pub fn features_for(version_num: u32) -> Option<&'static ReplFeatures> {
    let major = version_num / 10_000;
    REPL_FEATURES.iter().find(|f| f.major == major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_major_has_a_row_and_others_none() {
        for (num, major) in [(140001, 14), (150018, 15), (160014, 16), (170010, 17)] {
            assert_eq!(features_for(num).map(|f| f.major), Some(major));
        }
        assert_eq!(
            features_for(180006).map(|f| f.base_backup),
            Some(BaseBackupDialect::OptionList)
        );
        assert_eq!(
            features_for(140001).map(|f| f.base_backup),
            Some(BaseBackupDialect::Keywords)
        );
        assert!(features_for(130012).is_none());
        assert!(features_for(190000).is_none());
        assert!(features_for(0).is_none());
    }

    #[test]
    fn commands_are_spelled_in_each_dialect() {
        let f14 = features_for(140001).unwrap();
        let f15 = features_for(150001).unwrap();
        assert_eq!(
            create_slot_sql(f14, "s", true, true),
            "CREATE_REPLICATION_SLOT s TEMPORARY PHYSICAL RESERVE_WAL"
        );
        assert_eq!(
            create_slot_sql(f15, "s", false, true),
            "CREATE_REPLICATION_SLOT s PHYSICAL (RESERVE_WAL)"
        );
        let spec = BaseBackupSpec {
            label: "'l'".into(),
            progress: false,
            fast: true,
            wal: false,
            wait: false,
            max_rate_kb: None,
            tablespace_map: true,
            verify_checksums: true,
            manifest: "yes",
            manifest_checksums: "CRC32C",
            incremental: false,
        };
        assert_eq!(
            base_backup_sql(f14, &spec),
            "BASE_BACKUP LABEL 'l' FAST NOWAIT TABLESPACE_MAP MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'"
        );
        assert_eq!(
            base_backup_sql(f15, &spec),
            "BASE_BACKUP (LABEL 'l', CHECKPOINT 'fast', WAIT 0, TABLESPACE_MAP, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C')"
        );
        let bare = BaseBackupSpec {
            manifest: "no",
            fast: false,
            wait: true,
            tablespace_map: false,
            ..spec
        };
        assert_eq!(base_backup_sql(f14, &bare), "BASE_BACKUP LABEL 'l'");
        assert_eq!(base_backup_sql(f15, &bare), "BASE_BACKUP (LABEL 'l')");
    }
}
