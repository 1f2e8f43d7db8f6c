//! `pitr backup`: online, non-exclusive base backups read straight from PGDATA.

pub mod copy;
pub mod walk;
