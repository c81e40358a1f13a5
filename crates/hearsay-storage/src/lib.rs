//! Hearsay's storage engine: a log-structured merge tree per keyspace, sharing one commit log.
//!
//! Owns: the commit log (durability), memtables, SSTables (immutable sorted files), the
//! manifest of live files, compaction (size-tiered, leveled, time-window), TTL and tombstone
//! garbage collection, and the block cache. Cells are keyed by `(token, key)` so a token range
//! is a contiguous scan. Last write wins by [`hearsay_types::Timestamp`], ties broken by
//! [`Cell::reconcile_cmp`].
//!
//! Entry point: [`Engine`] (open with an [`EngineConfig`]; `apply` / `get` / `scan` /
//! `flush` / `compact` / `stats`; a keyspace's options change live with
//! `alter_keyspace`, and its tombstones can be purged by a repair-driven [`PurgeHorizon`]
//! instead of `gc_grace`). Invariants: a batch is one checksummed commit-log record
//! (all or nothing across a crash) and one sequence number (all or nothing for a scan); an
//! acknowledged write survives a process crash in every sync mode and a power loss in
//! `Batch` mode; a failed fsync poisons the engine for writes, a full disk does not (writes
//! fail with `ENOSPC` and succeed again once space is freed, see [`Engine::health`]);
//! nothing on disk is trusted without its checksum. The durability contract is `docs/storage-engine.md`.
//!
//! Synchronous by design: no async runtime; the engine owns its flush and compaction threads.
//! Depends only on `hearsay-types`; must never depend on the ring, gossip, cluster or server.

pub mod cell;
pub mod error;
pub mod fs;

pub use cell::{Cell, CellKey};
pub use error::{Error, Result};
pub use fs::{FaultyFs, Fs, NoSpace, RealFs};

// Owned by the SSTable work.
pub mod bloom;
pub mod cache;
pub mod sstable;

// The engine.
pub mod commitlog;
pub mod compaction;
pub mod config;
pub mod engine;
pub mod manifest;
pub mod memtable;
mod prefetch;

pub use compaction::PurgeHorizon;
pub use config::{CompactionStrategy, EngineConfig, KeyspaceOptions, SyncMode};
pub use engine::{
    DEFAULT_KEYSPACE, DiskFull, Engine, EngineHealth, EngineStats, KeyspaceStats, ScanIter,
    TableSummary,
};
pub use sstable::Compression;
