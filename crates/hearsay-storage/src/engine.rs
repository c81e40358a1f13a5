//! The engine: keyspaces of memtables and SSTables over one shared commit log.
//!
//! Write path: validate → encode the batch as one commit-log record → (under the write lock)
//! append it, insert the batch into the keyspace's active memtable as one unit → (batch mode)
//! wait for a group fsync covering it. A batch is one checksummed record, so it is replayed
//! whole or not at all; the memtable inserts it under the lock its scans freeze under, so a
//! scan sees it whole or not at all.
//!
//! Read path: the newest version of a key by the conflict rule across the active memtable, the
//! memtables awaiting flush and the SSTables (the latter in descending max timestamp, stopping
//! once no remaining table can hold a newer version).
//!
//! Background: one flush thread (memtable → SSTable → manifest → drop flushed commit-log
//! segments), one compaction thread (strategy chooses, engine merges, rate-limited), and in
//! periodic sync mode one commit-log sync thread.
//!
//! Lock order (outermost first): `manifest` → keyspace `state`; `write` → keyspaces map →
//! keyspace `state`; a keyspace's `options` and `purge_horizon` are leaves (nothing is taken
//! under them); the commit log's own locks are innermost.

pub(crate) mod background;
pub(crate) mod codec;
pub(crate) mod disk_full;
pub(crate) mod merge;
pub(crate) mod poison;

use crate::cache::{BlockCache, CacheStats};
use crate::cell::{Cell, CellKey};
use crate::commitlog::{self, CommitLog};
use crate::compaction::{PurgeHorizon, TableInfo};
use crate::config::{EngineConfig, KeyspaceOptions, SyncMode, validate_keyspace_name};
use crate::error::{Error, Result};
use crate::manifest::{KeyspaceRecord, Manifest, TableRecord};
use crate::memtable::{Memtable, MemtableIter};
use crate::sstable::{Compression, ReadStats, ReadStatsSnapshot, Sstable, sstable_path};
pub use disk_full::DiskFull;
use disk_full::{Activity, DiskFullLatch};
use merge::{MergeIter, Source};
use parking_lot::{Condvar, Mutex, RwLock};
use poison::Poison;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The keyspace that always exists.
pub const DEFAULT_KEYSPACE: &str = "default";
/// Longest a writer stalls waiting for flushes to catch up before it gets an error. Long
/// enough to ride out a slow flush, short enough that a broken disk surfaces as errors
/// rather than hung clients.
pub const MAX_WRITE_STALL_MS: u64 = 10_000;
/// Pause after a failed flush or compaction before retrying, so a persistent error (disk
/// full) does not spin a core.
const BACKGROUND_RETRY_MS: u64 = 500;
const COMMITLOG_DIR: &str = "commitlog";
const LOCK_FILE: &str = "LOCK";

/// A wake-up signal: a generation counter and a condition variable.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    pub fn notify(&self) {
        *self.generation.lock() += 1;
        self.cv.notify_all();
    }
    pub fn generation(&self) -> u64 {
        *self.generation.lock()
    }
    /// Waits until notified after `seen`, or `timeout` passes.
    pub fn wait_after(&self, seen: u64, timeout: Duration) {
        let mut g = self.generation.lock();
        if *g == seen {
            let _ = self.cv.wait_for(&mut g, timeout);
        }
    }
}

/// One live SSTable, its level and the compression it was written with (both recorded in
/// the manifest).
#[derive(Clone)]
pub(crate) struct TableHandle {
    pub table: Arc<Sstable>,
    pub level: u32,
    pub compression: Compression,
}

impl std::fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({}, L{})", self.table.meta().id, self.level)
    }
}

impl TableHandle {
    fn info(&self) -> TableInfo {
        let m = self.table.meta();
        TableInfo {
            id: m.id,
            level: self.level,
            size_bytes: m.size_bytes,
            entry_count: m.entry_count,
            tombstone_count: m.tombstone_count,
            min_key: m.min_key.clone(),
            max_key: m.max_key.clone(),
            min_timestamp: m.min_timestamp,
            max_timestamp: m.max_timestamp,
        }
    }
}

/// An immutable view of one keyspace's data: what a read or scan works from.
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub active: Arc<Memtable>,
    /// Awaiting flush, oldest first.
    pub immutable: Vec<Arc<Memtable>>,
    /// Sorted by descending max timestamp (see [`sort_tables`]), so that a point read can
    /// stop early.
    pub tables: Vec<TableHandle>,
}

/// Orders tables newest (largest max timestamp) first.
pub(crate) fn sort_tables(tables: &mut [TableHandle]) {
    tables.sort_by_key(|t| {
        let m = t.table.meta();
        (std::cmp::Reverse(m.max_timestamp), std::cmp::Reverse(m.id))
    });
}

impl Version {
    fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.active).chain(self.immutable.iter().rev())
    }
}

#[derive(Debug)]
pub(crate) struct Keyspace {
    pub id: u32,
    pub name: String,
    /// The current options (`alter_keyspace` changes them). Read through [`Self::options`]
    /// when a flush or compaction starts; a leaf lock.
    options: Mutex<KeyspaceOptions>,
    /// Replaces `gc_grace` for this keyspace's compactions while set (not persisted: the node
    /// sets it after every start). A leaf lock.
    purge_horizon: RwLock<Option<Arc<dyn PurgeHorizon>>>,
    pub dir: PathBuf,
    pub state: RwLock<Arc<Version>>,
    pub dropped: AtomicBool,
    pub counters: KeyspaceCounters,
}

/// Per-keyspace counters (since open).
#[derive(Debug, Default)]
pub(crate) struct KeyspaceCounters {
    pub tombstones_purged: AtomicU64,
    pub tombstones_purged_by_horizon: AtomicU64,
    pub tombstones_kept_by_horizon: AtomicU64,
}

impl Keyspace {
    fn new(id: u32, name: &str, options: KeyspaceOptions, dir: PathBuf, version: Version) -> Self {
        Keyspace {
            id,
            name: name.into(),
            options: Mutex::new(options),
            purge_horizon: RwLock::new(None),
            dir,
            state: RwLock::new(Arc::new(version)),
            dropped: AtomicBool::new(false),
            counters: KeyspaceCounters::default(),
        }
    }

    pub fn version(&self) -> Arc<Version> {
        self.state.read().clone()
    }

    /// The keyspace's options now.
    pub fn options(&self) -> KeyspaceOptions {
        *self.options.lock()
    }

    /// The keyspace's purge horizon now, if it has one.
    pub fn purge_horizon(&self) -> Option<Arc<dyn PurgeHorizon>> {
        self.purge_horizon.read().clone()
    }
}

/// Global counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub user_bytes_written: AtomicU64,
    pub sstable_bytes_written: AtomicU64,
    pub manifest_bytes_written: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_stall_ms: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_errors: AtomicU64,
    /// Compactions handed to `hearsay-idle-compaction`, and those of them promoted back.
    pub compactions_background: AtomicU64,
    pub compactions_promoted: AtomicU64,
    /// While a compaction runs at idle priority.
    pub compaction_background_running: AtomicBool,
    pub compaction_bytes_read: AtomicU64,
    /// Output blocks compactions put into the block cache because their input was cached.
    pub compaction_blocks_warmed: AtomicU64,
    /// Data blocks flushes put into the block cache (`flush_warm_cache`).
    pub flush_blocks_warmed: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub tombstones_purged: AtomicU64,
    pub tombstones_purged_by_horizon: AtomicU64,
    pub tombstones_kept_by_horizon: AtomicU64,
    pub expired_converted: AtomicU64,
    pub replayed_records: AtomicU64,
    pub replay_torn_tails: AtomicU64,
    pub memtable_bytes: AtomicU64,
}

pub(crate) struct WriteState {
    next_memtable_id: u64,
}

pub(crate) struct Inner {
    pub config: EngineConfig,
    pub poison: Arc<Poison>,
    pub log: CommitLog,
    pub write: Mutex<WriteState>,
    pub keyspaces: RwLock<BTreeMap<String, Arc<Keyspace>>>,
    pub manifest: Mutex<Manifest>,
    pub cache: Arc<BlockCache>,
    pub read_stats: Arc<ReadStats>,
    pub counters: Counters,
    pub last_error: Mutex<Option<String>>,
    /// The I/O error kind of the last failed flush, so that `flush()` can report a full disk
    /// as one.
    pub last_flush_error_kind: Mutex<std::io::ErrorKind>,
    /// Set while writes or flushes fail because the disk is full.
    pub disk_full: DiskFullLatch,
    pub shutdown: AtomicBool,
    pub closed: AtomicBool,
    /// Wakes the flush thread.
    pub flush_wake: Signal,
    /// Notified after every flush attempt (success or failure).
    pub flush_done: Signal,
    /// Wakes the compaction thread.
    pub compaction_wake: Signal,
    /// Wakes the sync thread (for shutdown).
    pub sync_wake: Signal,
    pub compaction_requests: Mutex<Vec<background::MajorRequest>>,
    _lock: DirLock,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

/// The storage engine. `Send + Sync`: share it with `Arc<Engine>`. Dropping it closes it.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Per-keyspace statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyspaceStats {
    /// Bytes in the active memtable and those awaiting flush.
    pub memtable_bytes: u64,
    pub memtables_awaiting_flush: u64,
    pub sstable_count: u64,
    pub sstable_bytes: u64,
    /// Tables per level (level 0 first).
    pub sstables_per_level: Vec<u64>,
    /// Memory held by SSTable indexes and bloom filters (bounded by data size, not cache).
    pub sstable_memory_bytes: u64,
    pub index_bytes: u64,
    pub bloom_bytes: u64,
    /// Cells and tombstones in SSTables (a key in several tables counts in each).
    pub sstable_entries: u64,
    pub sstable_tombstones: u64,
    /// Tombstones compactions of this keyspace purged since open (by `gc_grace` or horizon).
    pub tombstones_purged: u64,
    /// Of those, the ones purged under a purge horizon.
    pub tombstones_purged_by_horizon: u64,
    /// Tombstones compactions kept (rewrote) because the purge horizon of their token had not
    /// passed their deletion time, since open. The same tombstone counts again in every
    /// compaction that keeps it.
    pub tombstones_kept_by_horizon: u64,
    /// Whether the keyspace has a purge horizon now (`Engine::set_purge_horizon`).
    pub purge_horizon: bool,
}

/// One live SSTable, as [`Engine::tables`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    pub id: u64,
    /// 0 for flushed tables; leveled compaction's levels are 1 and up.
    pub level: u32,
    pub size_bytes: u64,
    pub entry_count: u64,
    pub tombstone_count: u64,
    pub min_key: CellKey,
    pub max_key: CellKey,
    pub min_timestamp: hearsay_types::Timestamp,
    pub max_timestamp: hearsay_types::Timestamp,
    /// The compression the table was written with: the keyspace's option when it was
    /// flushed or compacted. (With LZ4 a block is stored compressed only when that saves an
    /// eighth of it, see `storage-format.md`.)
    pub compression: Compression,
}

/// Engine statistics, for the server's INFO and metrics.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub keyspaces: BTreeMap<String, KeyspaceStats>,
    /// Key + value bytes handed to `apply`.
    pub user_bytes_written: u64,
    /// Everything written to disk: commit log + SSTables (flush and compaction) + manifest.
    pub disk_bytes_written: u64,
    pub commitlog_bytes_written: u64,
    pub sstable_bytes_written: u64,
    pub commitlog_segments: u64,
    pub commitlog_syncs: u64,
    pub commitlog_segments_deleted: u64,
    pub write_stalls: u64,
    pub write_stall_ms: u64,
    pub flushes: u64,
    pub flush_errors: u64,
    pub compactions: u64,
    pub compaction_errors: u64,
    /// Compactions started at idle priority (`compaction_background_priority`).
    pub compactions_background: u64,
    /// Of those, the ones promoted to normal priority (work queued behind them, or they
    /// waited too long for idle CPU).
    pub compactions_promoted: u64,
    /// Whether a compaction is running at idle priority now.
    pub compaction_background_running: bool,
    pub compaction_bytes_read: u64,
    /// Output blocks compactions put into the block cache because an input block they came
    /// from was cached (hot data stays hot across a compaction).
    pub compaction_blocks_warmed: u64,
    /// Data blocks flushes put into the block cache (`flush_warm_cache`).
    pub flush_blocks_warmed: u64,
    pub compaction_bytes_written: u64,
    /// Tombstones (and expired values) compactions purged, by `gc_grace` or purge horizon.
    pub tombstones_purged: u64,
    /// Of `tombstones_purged`, those purged under a keyspace's purge horizon.
    pub tombstones_purged_by_horizon: u64,
    /// Tombstones compactions kept because their token's purge horizon had not passed their
    /// deletion time (each compaction that keeps one counts it).
    pub tombstones_kept_by_horizon: u64,
    pub expired_converted: u64,
    pub replayed_records: u64,
    pub replay_torn_tails: u64,
    pub memtable_bytes_total: u64,
    pub block_cache: CacheStats,
    /// SSTable read counters: bloom negatives / true / false positives, blocks and bytes read.
    pub sstable_reads: ReadStatsSnapshot,
    /// Set once the engine is poisoned: why.
    pub poisoned: Option<String>,
    /// Set while writes or flushes fail because the disk is full: the last such error and
    /// since when. Cleared once they succeed again.
    pub disk_full: Option<DiskFull>,
    /// The last background (flush/compaction) error, if any.
    pub last_background_error: Option<String>,
}

/// Whether the engine can take writes, cheaply (no statistics snapshot): what the node
/// gossips and the admin API reports. See [`Engine::health`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// Set once the engine is poisoned (it refuses writes until restarted): why.
    pub poisoned: Option<String>,
    /// Set while writes or flushes fail because the disk is full (they succeed again, with
    /// no restart, once space is freed).
    pub disk_full: Option<DiskFull>,
}

/// A consistent-snapshot scan: ascending keys, the newest version of each, tombstones and
/// expired cells included. Holds the files it reads from alive until dropped.
pub struct ScanIter {
    _version: Arc<Version>,
    merge: MergeIter,
}

impl std::fmt::Debug for ScanIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanIter")
            .field("merge", &self.merge)
            .finish()
    }
}

impl Iterator for ScanIter {
    type Item = Result<(CellKey, Cell)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.merge.next()
    }
}

fn keyspace_dir(root: &Path, id: u32) -> PathBuf {
    root.join(format!("ks-{id}"))
}

impl Engine {
    /// Opens (or creates) the engine in `config.dir`: loads the manifest, opens the live
    /// SSTables, deletes files left by interrupted flushes or compactions, replays the commit
    /// log, and starts the background threads.
    ///
    /// Opening an existing directory writes nothing that needs space, so it works on a full
    /// disk: the first commit-log segment is created by the first write (whose error a full
    /// disk then is), `LOCK` is only locked, the manifest is rewritten only when it changes
    /// (a new directory), and flushes and compactions run in the background. Reads work;
    /// writes fail with `ENOSPC` until space is freed.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        config.validate()?;
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let fs = config.fs.clone();
        let lock = DirLock::acquire(&dir, &*fs)?;
        let log_dir = dir.join(COMMITLOG_DIR);
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::io(&log_dir, e))?;

        let mut manifest = match Manifest::load(&dir)? {
            Some(m) => m,
            None => {
                // An empty keyspace directory holds no data: one is made before the first
                // manifest is written, so a start that could not write it (a full disk, a
                // crash) leaves one behind.
                let has_data = !commitlog::list_segments(&log_dir)?.is_empty()
                    || std::fs::read_dir(&dir)
                        .map_err(|e| Error::io(&dir, e))?
                        .filter_map(|e| e.ok())
                        .any(|e| {
                            e.file_name().to_string_lossy().starts_with("ks-")
                                && std::fs::read_dir(e.path())
                                    .map_or(true, |mut d| d.next().is_some())
                        });
                if has_data {
                    return Err(Error::corruption(
                        Manifest::path(&dir),
                        0,
                        "manifest is missing but the directory holds data; refusing to start empty",
                    ));
                }
                Manifest::empty()
            }
        };
        let mut manifest_dirty = false;
        if !manifest
            .keyspaces
            .iter()
            .any(|k| k.name == DEFAULT_KEYSPACE)
        {
            let id = manifest.next_keyspace_id;
            manifest.next_keyspace_id += 1;
            manifest.keyspaces.push(KeyspaceRecord {
                id,
                name: DEFAULT_KEYSPACE.into(),
                options: config.default_keyspace,
                tables: Vec::new(),
            });
            manifest_dirty = true;
        }
        for ks in &manifest.keyspaces {
            let d = keyspace_dir(&dir, ks.id);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        if manifest_dirty {
            fs.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            manifest.store(&dir, &*fs)?;
        }
        remove_orphans(&dir, &manifest)?;

        let cache = BlockCache::new(config.block_cache_bytes);
        let read_stats = Arc::new(ReadStats::default());
        let mut next_memtable_id = 1u64;
        let mut keyspaces = BTreeMap::new();
        for rec in &manifest.keyspaces {
            let kdir = keyspace_dir(&dir, rec.id);
            let mut tables = Vec::with_capacity(rec.tables.len());
            for t in &rec.tables {
                let table = Sstable::open(&kdir, t.id, cache.clone(), read_stats.clone())?;
                tables.push(TableHandle {
                    table,
                    level: t.level,
                    compression: t.compression,
                });
            }
            sort_tables(&mut tables);
            let active = Arc::new(Memtable::new(next_memtable_id));
            next_memtable_id += 1;
            keyspaces.insert(
                rec.name.clone(),
                Arc::new(Keyspace::new(
                    rec.id,
                    &rec.name,
                    rec.options,
                    kdir,
                    Version {
                        active,
                        immutable: Vec::new(),
                        tables,
                    },
                )),
            );
        }

        // Replay: every intact record goes back into its keyspace's memtable; records of
        // dropped keyspaces (ids no longer in the manifest) are skipped.
        let by_id: BTreeMap<u32, Arc<Keyspace>> =
            keyspaces.values().map(|k| (k.id, k.clone())).collect();
        let mut replayed_bytes = 0u64;
        let outcome = commitlog::replay(&log_dir, &*fs, |segment, path, offset, payload| {
            let (ks_id, cells) = commitlog::decode_batch(payload).map_err(|e| {
                Error::corruption(
                    path,
                    offset + (commitlog::RECORD_HEADER_BYTES + e.offset) as u64,
                    format!("undecodable commit-log record: {}", e.reason),
                )
            })?;
            if let Some(ks) = by_id.get(&ks_id) {
                ks.version().active.insert_batch(&cells, segment);
                replayed_bytes += payload.len() as u64;
            }
            Ok(())
        })?;
        if outcome.records > 0 {
            tracing::info!(
                records = outcome.records,
                segments = outcome.segments.len(),
                torn_tails = outcome.torn_tails,
                "replayed commit log"
            );
        }
        let poison = Arc::new(Poison::default());
        let log = CommitLog::open(
            &log_dir,
            fs.clone(),
            config.commitlog_segment_bytes,
            config.sync_mode,
            &outcome.segments,
            outcome.next_segment_id,
            poison.clone(),
        );
        let memtable_bytes: u64 = keyspaces
            .values()
            .map(|k| k.version().active.size_bytes())
            .sum();
        let counters = Counters::default();
        counters
            .replayed_records
            .store(outcome.records, Ordering::Relaxed);
        counters
            .replay_torn_tails
            .store(outcome.torn_tails, Ordering::Relaxed);
        counters
            .memtable_bytes
            .store(memtable_bytes, Ordering::Relaxed);
        let _ = replayed_bytes;

        let inner = Arc::new(Inner {
            config,
            poison,
            log,
            write: Mutex::new(WriteState { next_memtable_id }),
            keyspaces: RwLock::new(keyspaces),
            manifest: Mutex::new(manifest),
            cache,
            read_stats,
            counters,
            last_error: Mutex::new(None),
            last_flush_error_kind: Mutex::new(std::io::ErrorKind::Other),
            disk_full: DiskFullLatch::default(),
            shutdown: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            flush_wake: Signal::default(),
            flush_done: Signal::default(),
            compaction_wake: Signal::default(),
            sync_wake: Signal::default(),
            compaction_requests: Mutex::new(Vec::new()),
            _lock: lock,
        });
        // Replayed memtables past the threshold go straight to the flush queue; segments with
        // nothing unflushed left (all keyspaces dropped) can go.
        {
            let mut w = inner.write.lock();
            let list: Vec<Arc<Keyspace>> = inner.keyspaces.read().values().cloned().collect();
            for ks in list {
                if ks.version().active.size_bytes() >= inner.config.memtable_size_bytes {
                    inner.rotate_locked(&mut w, &ks);
                }
            }
            inner.release_segments_locked();
        }
        let workers = background::start(&inner)?;
        Ok(Engine {
            inner,
            workers: Mutex::new(workers),
        })
    }

    fn keyspace(&self, name: &str) -> Result<Arc<Keyspace>> {
        self.inner.keyspace(name)
    }

    /// Creates a keyspace; `KeyspaceExists` if the name is taken.
    pub fn create_keyspace(&self, name: &str, opts: KeyspaceOptions) -> Result<()> {
        validate_keyspace_name(name)?;
        opts.validate()?;
        let inner = &self.inner;
        inner.check_open()?;
        inner.poison.check()?;
        let mut m = inner.manifest.lock();
        if inner.keyspaces.read().contains_key(name) {
            return Err(Error::KeyspaceExists(name.into()));
        }
        if m.keyspaces.len() >= crate::manifest::MAX_KEYSPACES {
            return Err(Error::InvalidArgument(format!(
                "at most {} keyspaces",
                crate::manifest::MAX_KEYSPACES
            )));
        }
        let mut next = m.clone();
        let id = next.next_keyspace_id;
        next.next_keyspace_id += 1;
        next.keyspaces.push(KeyspaceRecord {
            id,
            name: name.into(),
            options: opts,
            tables: Vec::new(),
        });
        let kdir = keyspace_dir(&inner.config.dir, id);
        std::fs::create_dir_all(&kdir).map_err(|e| Error::io(&kdir, e))?;
        inner.store_manifest(&next)?;
        *m = next;
        let mem_id = {
            let mut w = inner.write.lock();
            w.next_memtable_id += 1;
            w.next_memtable_id
        };
        inner.keyspaces.write().insert(
            name.into(),
            Arc::new(Keyspace::new(
                id,
                name,
                opts,
                kdir,
                Version {
                    active: Arc::new(Memtable::new(mem_id)),
                    immutable: Vec::new(),
                    tables: Vec::new(),
                },
            )),
        );
        Ok(())
    }

    /// Changes a live keyspace's options (Cassandra's `ALTER TABLE … WITH compaction`):
    /// validates them (`InvalidArgument` naming the option), records them in the manifest
    /// (atomically, with any table the switch moves), and makes them take effect without a
    /// restart:
    ///
    /// - `compression`: flushes and compactions that start from now on write with it;
    ///   existing tables keep theirs until compacted ([`TableSummary::compression`]).
    /// - `compaction`: the next compaction pick uses the new strategy, which re-organises
    ///   the existing tables over time (a major compaction, [`Self::compact`], does it at
    ///   once). A switch to leveled keeps tables where they are, except any table of level 1
    ///   or deeper that overlaps another of its level, which goes to level 0
    ///   ([`crate::compaction::relevel_for`]); the other strategies ignore levels.
    /// - `gc_grace_ms`: applies from the next compaction that starts.
    ///
    /// A compaction already running finishes under the options it started with (its
    /// compression, `gc_grace` and output level). Reads are unaffected: they never depend on
    /// levels or the strategy. Options equal to the current ones change nothing (and write
    /// nothing). Like `create_keyspace`, this rewrites the manifest, so it fails on a full disk
    /// (without poisoning) and leaves the old options in place.
    pub fn alter_keyspace(&self, name: &str, opts: KeyspaceOptions) -> Result<()> {
        opts.validate().map_err(|e| match e {
            Error::InvalidArgument(why) => {
                Error::InvalidArgument(format!("options of keyspace '{name}': {why}"))
            }
            other => other,
        })?;
        let inner = &self.inner;
        inner.check_open()?;
        inner.poison.check()?;
        let mut m = inner.manifest.lock();
        let ks = self.keyspace(name)?;
        let old = ks.options();
        if old == opts {
            return Ok(());
        }
        // Under the manifest lock the table set cannot change (flushes and compactions
        // install under it), so the moves computed here apply to exactly these tables.
        let tables = ks.version().tables.clone();
        let infos: Vec<TableInfo> = tables.iter().map(|t| t.info()).collect();
        let moves = crate::compaction::relevel_for(&opts.compaction, &infos);
        let moved = |t: &TableHandle| {
            let id = t.table.meta().id;
            let level = moves
                .iter()
                .find(|(m, _)| *m == id)
                .map_or(t.level, |(_, l)| *l);
            TableHandle { level, ..t.clone() }
        };
        let mut next = m.clone();
        let rec = next.keyspace_mut(ks.id).ok_or_else(|| {
            // The keyspaces map and the manifest change together under the manifest lock.
            Error::NoSuchKeyspace(name.into())
        })?;
        rec.options = opts;
        rec.tables = table_records(&tables.iter().map(moved).collect::<Vec<_>>());
        inner.store_manifest(&next)?;
        *m = next;
        {
            let mut st = ks.state.write();
            if !moves.is_empty() {
                // Memtables may have rotated since; the tables have not (manifest lock).
                let mut v: Version = (**st).clone();
                v.tables = v.tables.iter().map(moved).collect();
                *st = Arc::new(v);
            }
            *ks.options.lock() = opts;
        }
        drop(m);
        tracing::info!(
            keyspace = name,
            from = old.compaction.name(),
            to = opts.compaction.name(),
            tables_to_level_0 = moves.len(),
            ?opts,
            "keyspace options changed"
        );
        inner.compaction_wake.notify();
        Ok(())
    }

    /// Sets (or, with `None`, removes) the keyspace's purge horizon: while it has one,
    /// compaction purges a tombstone iff its deletion time is before the horizon of its
    /// token (and, as always, it shadows nothing outside the compaction); `gc_grace` plays
    /// no part. Without one, `gc_grace` applies. Takes effect from the next compaction that
    /// starts; a running one finishes under the rule it started with. Not persisted: the
    /// caller sets it again after every open (see `docs/storage-engine.md` for the window
    /// before it does).
    pub fn set_purge_horizon(
        &self,
        keyspace: &str,
        horizon: Option<Arc<dyn PurgeHorizon>>,
    ) -> Result<()> {
        self.inner.check_open()?;
        let ks = self.keyspace(keyspace)?;
        let set = horizon.is_some();
        *ks.purge_horizon.write() = horizon;
        tracing::info!(keyspace, set, "purge horizon changed");
        Ok(())
    }

    /// Drops a keyspace and deletes its data. `default` cannot be dropped.
    pub fn drop_keyspace(&self, name: &str) -> Result<()> {
        if name == DEFAULT_KEYSPACE {
            return Err(Error::InvalidArgument(
                "the default keyspace cannot be dropped".into(),
            ));
        }
        let inner = &self.inner;
        inner.check_open()?;
        inner.poison.check()?;
        let mut m = inner.manifest.lock();
        let ks = inner.keyspace(name)?;
        let mut next = m.clone();
        next.keyspaces.retain(|k| k.id != ks.id);
        inner.store_manifest(&next)?;
        *m = next;
        drop(m);
        {
            // Under the write lock so no batch is half-inserted into it.
            let _w = inner.write.lock();
            inner.keyspaces.write().remove(name);
            ks.dropped.store(true, Ordering::SeqCst);
            let v = ks.version();
            let bytes: u64 = v.memtables().map(|m| m.size_bytes()).sum();
            inner
                .counters
                .memtable_bytes
                .fetch_sub(bytes, Ordering::AcqRel);
            for t in &v.tables {
                t.table.mark_obsolete();
            }
            inner.release_segments_locked();
        }
        if let Err(e) = std::fs::remove_dir_all(&ks.dir) {
            tracing::warn!(dir = %ks.dir.display(), error = %e, "could not remove dropped keyspace's directory; it is removed on next open");
        }
        inner.flush_done.notify();
        Ok(())
    }

    /// Keyspace names, sorted.
    pub fn keyspaces(&self) -> Vec<String> {
        self.inner.keyspaces.read().keys().cloned().collect()
    }

    /// A keyspace's current options: those it was created with, or last given to
    /// [`Self::alter_keyspace`].
    pub fn keyspace_options(&self, name: &str) -> Result<KeyspaceOptions> {
        Ok(self.keyspace(name)?.options())
    }

    /// The live SSTables of a keyspace, newest first (for admin views and tests).
    pub fn tables(&self, keyspace: &str) -> Result<Vec<TableSummary>> {
        let v = self.keyspace(keyspace)?.version();
        Ok(v.tables
            .iter()
            .map(|t| {
                let m = t.table.meta();
                TableSummary {
                    id: m.id,
                    level: t.level,
                    size_bytes: m.size_bytes,
                    entry_count: m.entry_count,
                    tombstone_count: m.tombstone_count,
                    min_key: m.min_key.clone(),
                    max_key: m.max_key.clone(),
                    min_timestamp: m.min_timestamp,
                    max_timestamp: m.max_timestamp,
                    compression: t.compression,
                }
            })
            .collect())
    }

    /// Applies a batch atomically: after a crash it is replayed whole or not at all, and
    /// scans see all of it or none. Durable on return as the sync mode promises. No
    /// read-before-write: a cell older than what is stored is kept but loses on read.
    pub fn apply(&self, keyspace: &str, batch: &[(CellKey, Cell)]) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.poison.check()?;
        commitlog::validate_batch(batch)?;
        let ks = self.keyspace(keyspace)?;
        if batch.is_empty() {
            return Ok(());
        }
        inner.maybe_stall()?;
        let frame = commitlog::encode_record(ks.id, batch);
        let user_bytes: u64 = batch
            .iter()
            .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
            .sum();
        let appended = {
            let mut w = inner.write.lock();
            if ks.dropped.load(Ordering::SeqCst) {
                return Err(Error::NoSuchKeyspace(keyspace.into()));
            }
            let appended = match inner.log.append_frame(&frame) {
                Ok(a) => a,
                Err(e) => {
                    inner.note_disk_full(Activity::Write, &e);
                    return Err(e);
                }
            };
            inner.disk_full.clear(Activity::Write);
            let mem = ks.version().active.clone();
            let before = mem.size_bytes();
            mem.insert_batch(batch, appended.segment_id);
            inner
                .counters
                .memtable_bytes
                .fetch_add(mem.size_bytes() - before, Ordering::AcqRel);
            if mem.size_bytes() >= inner.config.memtable_size_bytes {
                inner.rotate_locked(&mut w, &ks);
                inner.flush_wake.notify();
            }
            appended
        };
        inner
            .counters
            .user_bytes_written
            .fetch_add(user_bytes, Ordering::Relaxed);
        if inner.config.sync_mode == SyncMode::Batch {
            inner.log.sync_to(appended.end_pos)?;
        }
        Ok(())
    }

    /// The newest version of `key` by the conflict rule, tombstones and expired values
    /// included (use [`Cell::live_value`]); `None` if nothing is stored.
    pub fn get(&self, keyspace: &str, key: &CellKey) -> Result<Option<Cell>> {
        let ks = self.keyspace(keyspace)?;
        let v = ks.version();
        let mut best: Option<Cell> = None;
        for m in v.memtables() {
            if m.is_empty() {
                continue;
            }
            if let Some(c) = m.get(key) {
                best = Some(newer(best, c));
            }
        }
        // Hash once for every table's bloom filter.
        let key_hash = crate::bloom::hash_key(key.token, &key.key);
        for t in &v.tables {
            let m = t.table.meta();
            // Tables are kept newest-first (by max timestamp): once a table's newest write is
            // strictly older than what we hold, neither it nor any later table can win (ties
            // must still be read, since the conflict rule breaks them by content).
            if best.as_ref().is_some_and(|b| m.max_timestamp < b.timestamp) {
                break;
            }
            if *key < m.min_key || m.max_key < *key {
                continue;
            }
            if let Some(c) = t.table.get_with_hash(key, key_hash)? {
                best = Some(newer(best, c));
            }
        }
        Ok(best)
    }

    /// As [`Self::get`] for each of `keys`, in order, from one look at the keyspace's
    /// memtables and tables. Each table is consulted for the keys that still need it, all
    /// together (see [`Sstable::get_batch`]), so the bloom filters' cache misses of different
    /// keys overlap. A read error fails only its own key.
    pub fn get_many(&self, keyspace: &str, keys: &[CellKey]) -> Result<Vec<Result<Option<Cell>>>> {
        let ks = self.keyspace(keyspace)?;
        let v = ks.version();
        let mut out: Vec<Result<Option<Cell>>> = (0..keys.len()).map(|_| Ok(None)).collect();
        for m in v.memtables() {
            if m.is_empty() {
                continue;
            }
            for (k, o) in keys.iter().zip(out.iter_mut()) {
                if let (Some(c), Ok(best)) = (m.get(k), o.as_mut()) {
                    *best = Some(newer(best.take(), c));
                }
            }
        }
        let hashes: Vec<u64> = keys
            .iter()
            .map(|k| crate::bloom::hash_key(k.token, &k.key))
            .collect();
        let mut wanted: Vec<(&CellKey, u64)> = Vec::with_capacity(keys.len());
        let mut which: Vec<usize> = Vec::with_capacity(keys.len());
        for t in &v.tables {
            let m = t.table.meta();
            wanted.clear();
            which.clear();
            for (i, key) in keys.iter().enumerate() {
                match &out[i] {
                    Err(_) => continue,
                    // As in `get`: tables are newest-first, so none from here on can win.
                    Ok(Some(b)) if m.max_timestamp < b.timestamp => continue,
                    Ok(_) => {}
                }
                if *key < m.min_key || m.max_key < *key {
                    continue;
                }
                wanted.push((key, hashes[i]));
                which.push(i);
            }
            if wanted.is_empty() {
                continue;
            }
            t.table.get_batch(&wanted, |j, r| {
                let i = which[j];
                match r {
                    Ok(Some(c)) => {
                        if let Ok(best) = out[i].as_mut() {
                            *best = Some(newer(best.take(), c));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => out[i] = Err(e),
                }
            });
        }
        Ok(out)
    }

    /// Scans `[lower, upper]` (per the bounds) over a consistent snapshot: ascending, the
    /// newest version per key, tombstones and expired values included.
    pub fn scan(
        &self,
        keyspace: &str,
        lower: Bound<CellKey>,
        upper: Bound<CellKey>,
    ) -> Result<ScanIter> {
        let ks = self.keyspace(keyspace)?;
        // Each memtable iterator freezes its memtable as it is created (whole batches only);
        // memtables awaiting flush and tables no longer change. Tables in the version only
        // hold batches older than the version's memtables.
        let v = ks.version();
        let mut sources: Vec<Source> = Vec::with_capacity(1 + v.immutable.len() + v.tables.len());
        for m in v.memtables() {
            if m.is_empty() {
                continue;
            }
            sources.push(Box::new(
                MemtableIter::new(m.clone(), lower.clone(), upper.clone()).map(Ok),
            ));
        }
        for t in &v.tables {
            let m = t.table.meta();
            let below = match &lower {
                Bound::Included(k) => m.max_key < *k,
                Bound::Excluded(k) => m.max_key <= *k,
                Bound::Unbounded => false,
            };
            let above = match &upper {
                Bound::Included(k) => m.min_key > *k,
                Bound::Excluded(k) => m.min_key >= *k,
                Bound::Unbounded => false,
            };
            if below || above {
                continue;
            }
            // A scan reads the blocks it passes from disk without caching them: it uses
            // each once, and inserting costs an eviction per block (a cold map probe, a cold
            // buffer) while pushing out blocks that point reads keep hot. Blocks already
            // cached are used. scan100 per CPU-second +16 % in an A/B on the same tables.
            sources.push(Box::new(
                t.table.iter_uncached(lower.clone(), upper.clone()),
            ));
        }
        Ok(ScanIter {
            _version: v,
            merge: MergeIter::new(sources),
        })
    }

    /// Flushes the memtable(s) of one keyspace (or all) to SSTables and waits until done.
    pub fn flush(&self, keyspace: Option<&str>) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let targets: Vec<Arc<Keyspace>> = match keyspace {
            Some(name) => vec![self.keyspace(name)?],
            None => inner.keyspaces.read().values().cloned().collect(),
        };
        let mut waiting: Vec<(Arc<Keyspace>, u64)> = Vec::new();
        {
            let mut w = inner.write.lock();
            for ks in &targets {
                inner.rotate_locked(&mut w, ks);
                for m in &ks.version().immutable {
                    waiting.push((ks.clone(), m.id));
                }
            }
        }
        inner.wait_flushed(&waiting)
    }

    /// Runs a major compaction of `keyspace` (every table, per the strategy) and waits.
    pub fn compact(&self, keyspace: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        self.keyspace(keyspace)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        inner
            .compaction_requests
            .lock()
            .push(background::MajorRequest {
                keyspace: keyspace.into(),
                reply: tx,
            });
        inner.compaction_wake.notify();
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// A snapshot of the engine's statistics.
    pub fn stats(&self) -> EngineStats {
        let inner = &self.inner;
        let c = &inner.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut keyspaces = BTreeMap::new();
        for (name, ks) in inner.keyspaces.read().iter() {
            let v = ks.version();
            let mut s = KeyspaceStats {
                memtable_bytes: v.memtables().map(|m| m.size_bytes()).sum(),
                memtables_awaiting_flush: v.immutable.len() as u64,
                sstable_count: v.tables.len() as u64,
                tombstones_purged: ld(&ks.counters.tombstones_purged),
                tombstones_purged_by_horizon: ld(&ks.counters.tombstones_purged_by_horizon),
                tombstones_kept_by_horizon: ld(&ks.counters.tombstones_kept_by_horizon),
                purge_horizon: ks.purge_horizon.read().is_some(),
                ..KeyspaceStats::default()
            };
            for t in &v.tables {
                let m = t.table.meta();
                s.sstable_bytes += m.size_bytes;
                s.index_bytes += m.index_bytes;
                s.bloom_bytes += m.bloom_bytes;
                s.sstable_memory_bytes += t.table.memory_bytes();
                s.sstable_entries += m.entry_count;
                s.sstable_tombstones += m.tombstone_count;
                let l = t.level as usize;
                if s.sstables_per_level.len() <= l {
                    s.sstables_per_level.resize(l + 1, 0);
                }
                s.sstables_per_level[l] += 1;
            }
            keyspaces.insert(name.clone(), s);
        }
        let commitlog_bytes = ld(&inner.log.stats.bytes_written);
        let sstable_bytes = ld(&c.sstable_bytes_written);
        EngineStats {
            keyspaces,
            user_bytes_written: ld(&c.user_bytes_written),
            disk_bytes_written: commitlog_bytes + sstable_bytes + ld(&c.manifest_bytes_written),
            commitlog_bytes_written: commitlog_bytes,
            sstable_bytes_written: sstable_bytes,
            commitlog_segments: inner.log.segment_count(),
            commitlog_syncs: ld(&inner.log.stats.syncs),
            commitlog_segments_deleted: ld(&inner.log.stats.segments_deleted),
            write_stalls: ld(&c.write_stalls),
            write_stall_ms: ld(&c.write_stall_ms),
            flushes: ld(&c.flushes),
            flush_errors: ld(&c.flush_errors),
            compactions: ld(&c.compactions),
            compaction_errors: ld(&c.compaction_errors),
            compactions_background: ld(&c.compactions_background),
            compactions_promoted: ld(&c.compactions_promoted),
            compaction_background_running: c.compaction_background_running.load(Ordering::Relaxed),
            compaction_bytes_read: ld(&c.compaction_bytes_read),
            compaction_blocks_warmed: ld(&c.compaction_blocks_warmed),
            flush_blocks_warmed: ld(&c.flush_blocks_warmed),
            compaction_bytes_written: ld(&c.compaction_bytes_written),
            tombstones_purged: ld(&c.tombstones_purged),
            tombstones_purged_by_horizon: ld(&c.tombstones_purged_by_horizon),
            tombstones_kept_by_horizon: ld(&c.tombstones_kept_by_horizon),
            expired_converted: ld(&c.expired_converted),
            replayed_records: ld(&c.replayed_records),
            replay_torn_tails: ld(&c.replay_torn_tails),
            memtable_bytes_total: ld(&c.memtable_bytes),
            block_cache: inner.cache.stats(),
            sstable_reads: inner.read_stats.snapshot(),
            poisoned: inner.poison.reason(),
            disk_full: inner.disk_full.get(),
            last_background_error: inner.last_error.lock().clone(),
        }
    }

    /// Whether the engine is poisoned or out of space. Cheap (two atomic loads when neither
    /// is set): meant to be called on every gossip round, where [`Self::stats`] would build
    /// the whole snapshot.
    pub fn health(&self) -> EngineHealth {
        let inner = &self.inner;
        EngineHealth {
            poisoned: if inner.poison.is_poisoned() {
                inner.poison.reason()
            } else {
                None
            },
            disk_full: inner.disk_full.get(),
        }
    }

    /// Commit-log positions (bytes appended since open, and bytes fsynced), for tests and
    /// monitoring of the periodic-sync loss window.
    pub fn commitlog_positions(&self) -> (u64, u64) {
        (self.inner.log.written_pos(), self.inner.log.synced_pos())
    }

    /// Stops cleanly without flushing: syncs the commit log (so a clean stop loses nothing
    /// in any sync mode), stops the background threads. Later calls return `Closed`.
    /// Idempotent; also run on drop.
    pub fn close(&self) -> Result<()> {
        let inner = &self.inner;
        let first = !inner.closed.swap(true, Ordering::SeqCst);
        let sync = if first && !inner.poison.is_poisoned() {
            // Take the write lock so no append is in flight, then sync everything.
            let _w = inner.write.lock();
            inner.log.sync_all()
        } else {
            Ok(())
        };
        inner.shutdown.store(true, Ordering::SeqCst);
        inner.flush_wake.notify();
        inner.flush_done.notify();
        inner.compaction_wake.notify();
        inner.sync_wake.notify();
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock());
        for h in handles {
            let _ = h.join();
        }
        // Fail any major compaction still queued.
        for r in inner.compaction_requests.lock().drain(..) {
            let _ = r.reply.send(Err(Error::Closed));
        }
        sync
    }
}

impl Engine {
    /// A stop: [`Self::flush`] then [`Self::close`], where a flush that fails because the
    /// disk is full is not an error. Its memtables' data stays in the commit log, which
    /// `close` syncs and the next start replays, so nothing acknowledged is lost; the stop
    /// only takes the longer replay. Any other flush error is returned (after closing).
    pub fn shutdown(&self) -> Result<()> {
        let flushed = match self.flush(None) {
            Err(e) if e.is_disk_full() => {
                tracing::warn!(error = %e, "not flushed at stop (disk full); the commit log keeps the data and is replayed on the next start");
                Ok(())
            }
            other => other,
        };
        let closed = self.close();
        flushed.and(closed)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "error closing storage engine");
        }
    }
}

fn newer(best: Option<Cell>, c: Cell) -> Cell {
    match best {
        Some(b) if b.supersedes(&c) => b,
        _ => c,
    }
}

/// Keeps other engines out of a data directory: an `flock` on `LOCK` and one on the
/// directory itself. Locking an existing file needs no space, but creating `LOCK` does (an
/// inode, a directory entry): if it is missing (an operator removed it) and the disk is full,
/// the lock on the directory is enough, since every engine takes that too. Where a directory
/// cannot be locked (NFS maps `flock` to `fcntl` locks, which need a file open for writing)
/// only `LOCK` is, as before.
#[derive(Debug)]
struct DirLock {
    _file: Option<std::fs::File>,
    _dir: Option<std::fs::File>,
}

impl DirLock {
    fn acquire(dir: &Path, fs: &dyn crate::fs::Fs) -> Result<DirLock> {
        use std::fs::{File, OpenOptions, TryLockError};
        let in_use = |path: &Path, why: &dyn std::fmt::Display| {
            Error::io(
                path,
                std::io::Error::other(format!("data directory in use by another engine: {why}")),
            )
        };
        let dir_lock = match File::open(dir).map(|f| (f.try_lock(), f)) {
            Ok((Ok(()), f)) => Some(f),
            Ok((Err(e @ TryLockError::WouldBlock), _)) => return Err(in_use(dir, &e)),
            Ok((Err(TryLockError::Error(e)), _)) | Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot lock the data directory itself; relying on LOCK");
                None
            }
        };
        let lock_path = dir.join(LOCK_FILE);
        let file = match OpenOptions::new().write(true).open(&lock_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs.create_file(
                &lock_path,
                OpenOptions::new().create(true).truncate(false).write(true),
            ) {
                Ok(f) => Some(f),
                Err(e) if crate::error::is_disk_full(&e) && dir_lock.is_some() => {
                    tracing::warn!(path = %lock_path.display(), error = %e, "cannot create LOCK (disk full); the lock on the data directory keeps other engines out");
                    None
                }
                Err(e) => return Err(Error::io(&lock_path, e)),
            },
            Err(e) => return Err(Error::io(&lock_path, e)),
        };
        if let Some(f) = &file {
            f.try_lock().map_err(|e| in_use(&lock_path, &e))?;
        }
        Ok(DirLock {
            _file: file,
            _dir: dir_lock,
        })
    }
}

/// Deletes what no manifest entry names: keyspace directories of dropped keyspaces and files
/// in live keyspace directories that are not live tables (temp files of interrupted flushes
/// or compactions, outputs written but never installed).
fn remove_orphans(dir: &Path, m: &Manifest) -> Result<()> {
    let live_dirs: BTreeSet<PathBuf> = m
        .keyspaces
        .iter()
        .map(|k| keyspace_dir(dir, k.id))
        .collect();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("ks-") && p.is_dir() && !live_dirs.contains(&p) {
            tracing::warn!(dir = %p.display(), "removing directory of a dropped keyspace");
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    for ks in &m.keyspaces {
        let kdir = keyspace_dir(dir, ks.id);
        let live: BTreeSet<PathBuf> = ks
            .tables
            .iter()
            .map(|t| sstable_path(&kdir, t.id))
            .collect();
        for e in std::fs::read_dir(&kdir).map_err(|e| Error::io(&kdir, e))? {
            let e = e.map_err(|e| Error::io(&kdir, e))?;
            let p = e.path();
            if p.is_file() && !live.contains(&p) {
                tracing::info!(file = %p.display(), "removing file not in the manifest (interrupted flush or compaction)");
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    Ok(())
}

impl Inner {
    pub fn keyspace(&self, name: &str) -> Result<Arc<Keyspace>> {
        self.keyspaces
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchKeyspace(name.into()))
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Persists `m` as the manifest. A failure to rename it into place (or to fsync the
    /// directory after) poisons the engine: the manifest on disk may be either version, so
    /// nothing more may be built on it. So does a failed fsync of the temporary file, unless
    /// the disk is full. A full disk while writing the temporary file does not: `MANIFEST` is
    /// untouched and still valid, the error (kind `StorageFull`) goes to the caller. So after
    /// an error the engine is poisoned, or the old manifest stands.
    pub fn store_manifest(&self, m: &Manifest) -> Result<()> {
        self.poison.check()?;
        let dir = &self.config.dir;
        let fs = &*self.config.fs;
        let n = match m.write_temp(dir, fs) {
            Ok(n) => n,
            Err(e) if e.is_disk_full() => return Err(e),
            Err(e) => {
                self.poison.poison(format!("manifest update failed: {e}"));
                return Err(e);
            }
        };
        if let Err(e) = Manifest::commit_temp(dir, fs) {
            self.poison.poison(format!("manifest update failed: {e}"));
            return Err(e);
        }
        self.counters
            .manifest_bytes_written
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the active memtable of `ks` immutable (queued for flush) if it holds anything.
    /// Called with the write lock held, so no batch is mid-insert into it.
    pub fn rotate_locked(&self, w: &mut WriteState, ks: &Keyspace) {
        let mut st = ks.state.write();
        if st.active.is_empty() {
            return;
        }
        w.next_memtable_id += 1;
        let mut v = (**st).clone();
        let old = std::mem::replace(&mut v.active, Arc::new(Memtable::new(w.next_memtable_id)));
        v.immutable.push(old);
        *st = Arc::new(v);
        drop(st);
        // Start a fresh commit-log segment too, so that once this memtable is flushed the
        // segments holding its data hold nothing else of it and can be deleted (otherwise the
        // active segment would be replayed needlessly after a restart). A full disk leaves
        // the current segment active, holding data of both memtables: it is deleted once
        // both are flushed, and replayed whole until then, which is harmless. Any other
        // failure here has poisoned the engine; the next write reports it.
        if let Err(e) = self.log.rotate_now() {
            if self.note_disk_full(Activity::Write, &e) {
                tracing::warn!(error = %e, "cannot start a new commit-log segment (disk full); the current one stays active");
            } else {
                tracing::error!(error = %e, "commit-log rotation failed");
            }
        }
    }

    /// Deletes commit-log segments whose data is all in SSTables. Called with the write lock
    /// held: a batch appended but not yet in a memtable would otherwise be invisible here.
    pub fn release_segments_locked(&self) {
        let mut min = self.log.active_segment();
        for ks in self.keyspaces.read().values() {
            for m in ks.version().memtables() {
                if let Some(s) = m.first_segment() {
                    min = min.min(s);
                }
            }
        }
        self.log.release_below(min);
    }

    /// Stalls the caller while memtables exceed their total budget (flushes falling behind),
    /// counting the stall. Fails after [`MAX_WRITE_STALL_MS`].
    fn maybe_stall(&self) -> Result<()> {
        let max = self.config.memtable_total_bytes_max;
        if self.counters.memtable_bytes.load(Ordering::Acquire) <= max {
            return Ok(());
        }
        let start = Instant::now();
        self.counters.write_stalls.fetch_add(1, Ordering::Relaxed);
        let result = loop {
            if self.counters.memtable_bytes.load(Ordering::Acquire) <= max {
                break Ok(());
            }
            self.poison.check()?;
            self.check_open()?;
            if let Some(full) = self.disk_full.get().filter(|f| f.flushes_failing) {
                // Flushes fail for want of space: the budget will not come free by waiting,
                // so say so now rather than after MAX_WRITE_STALL_MS.
                break Err(Error::io(
                    &self.config.dir,
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!(
                            "write refused: memtables are over memtable_total_bytes_max and flushes fail because the disk is full ({})",
                            full.error
                        ),
                    ),
                ));
            }
            if start.elapsed() > Duration::from_millis(MAX_WRITE_STALL_MS) {
                break Err(Error::io(
                    &self.config.dir,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "write stalled {MAX_WRITE_STALL_MS} ms: memtables over memtable_total_bytes_max and flushes are not keeping up (last error: {})",
                            self.last_error.lock().as_deref().unwrap_or("none")
                        ),
                    ),
                ));
            }
            let seen = self.flush_done.generation();
            // Make sure something is queued: if nothing awaits flush, the budget is held by
            // active memtables (many keyspaces), so rotate the largest.
            {
                let mut w = self.write.lock();
                let list: Vec<Arc<Keyspace>> = self.keyspaces.read().values().cloned().collect();
                if list.iter().all(|k| k.version().immutable.is_empty())
                    && let Some(big) = list.iter().max_by_key(|k| k.version().active.size_bytes())
                {
                    self.rotate_locked(&mut w, big);
                }
            }
            self.flush_wake.notify();
            self.flush_done.wait_after(seen, Duration::from_millis(50));
        };
        self.counters
            .write_stall_ms
            .fetch_add(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        result
    }

    /// Waits until the given memtables are flushed (or their keyspace dropped). Fails if a
    /// flush fails meanwhile, or the engine closes or is poisoned.
    fn wait_flushed(&self, waiting: &[(Arc<Keyspace>, u64)]) -> Result<()> {
        let errors_before = self.counters.flush_errors.load(Ordering::Acquire);
        loop {
            let seen = self.flush_done.generation();
            let pending = waiting.iter().any(|(ks, id)| {
                !ks.dropped.load(Ordering::SeqCst)
                    && ks.version().immutable.iter().any(|m| m.id == *id)
            });
            if !pending {
                return Ok(());
            }
            self.poison.check()?;
            self.check_open()?;
            if self.counters.flush_errors.load(Ordering::Acquire) != errors_before {
                let why = self.last_error.lock().clone().unwrap_or_default();
                // Keep the kind, so a caller can tell a full disk (the data stays in the
                // commit log) from other failures.
                let kind = *self.last_flush_error_kind.lock();
                return Err(Error::io(
                    &self.config.dir,
                    std::io::Error::new(kind, format!("flush failed: {why}")),
                ));
            }
            self.flush_wake.notify();
            self.flush_done.wait_after(seen, Duration::from_millis(100));
        }
    }

    /// Records `e` in the "disk full" state if it is a full disk; returns whether it was.
    pub fn note_disk_full(&self, activity: Activity, e: &Error) -> bool {
        self.disk_full
            .note(activity, e, self.config.clock.wall_millis())
    }

    pub fn record_error(&self, what: &str, e: &Error) {
        if matches!(e, Error::Closed) {
            // A compaction or flush cut short by `close()` is the shutdown working, not a
            // fault: everything acknowledged is in the synced commit log.
            tracing::debug!(what, "background work stopped by close");
            return;
        }
        let msg = format!("{what}: {e}");
        tracing::error!(error = %msg, "background error");
        *self.last_error.lock() = Some(msg);
    }
}

/// Re-exported for tests and the table set of a version.
pub(crate) fn table_records(tables: &[TableHandle]) -> Vec<TableRecord> {
    tables
        .iter()
        .map(|t| TableRecord {
            id: t.table.meta().id,
            level: t.level,
            compression: t.compression,
        })
        .collect()
}
