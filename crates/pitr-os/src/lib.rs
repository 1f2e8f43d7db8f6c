//! The operating system as pitr sees it, in one place: OS users (through NSS, so users from
//! LDAP or SSSD are found like local ones), the effective user, ownership of restored trees,
//! filesystem-wide sync and writeback hints, and whether a PostgreSQL server runs on a data
//! directory.
//!
//! Why a crate of its own: these small jobs were written five times (hand-made `/etc/passwd`
//! parsers that missed NSS users, `unsafe` libc calls). Here they are written once, on `nix`,
//! with no `unsafe` code of ours. Everything is Linux-first, like pitr.
//!
//! What it must never do: know about pitr's repository, storage or PostgreSQL's formats beyond
//! the `postmaster.pid` lines it reads; print anything; or decide policy (who may own a data
//! directory is the caller's decision). Errors are `std::io::Error`s for the caller to wrap
//! with its own context.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod fs;
mod server;
mod session;
mod user;

pub use fs::{allocated_bytes, chown_tree, free_space, start_writeback, syncfs, TreeError};
pub use server::{running_postmaster, server_using_tablespace, PidFile};
pub use session::new_session;
pub use user::{
    effective_uid, effective_user, effective_user_name, is_root, may_create_in, probe_create_as,
    user_by_name, user_by_uid, Probe, User,
};
