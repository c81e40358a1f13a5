//! Engine and keyspace configuration, with documented defaults and cross-field validation.

use crate::error::{Error, Result};
use crate::fs::{Fs, RealFs};
use crate::sstable::Compression;
use hearsay_types::{Clock, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;

/// Default periodic commit-log sync interval. One second, as Redis's `appendfsync everysec`:
/// a power loss may lose at most about this much acknowledged data. Cassandra uses 10 s; we
/// pick the tighter bound because a replica's loss window is what QUORUM durability relies on.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1_000;
/// Default flush threshold of one keyspace's memtable.
pub const DEFAULT_MEMTABLE_SIZE_BYTES: u64 = 64 << 20;
/// Default cap on all memtables (active and awaiting flush); writers stall above it.
pub const DEFAULT_MEMTABLE_TOTAL_BYTES_MAX: u64 = 256 << 20;
/// Default block cache size: 256 MiB. It fills only as blocks are read, so a small data set
/// costs no more. At 64 MiB the 1M-key working set of `redis-benchmark -r 1000000 -d 100`
/// (about 3 KiB blocks of 20 cells each, 90+ MiB decoded after three flushes) evicted blocks
/// it read again a round later: 256 MiB cut server CPU per 200K pipelined GETs by 6-8 % and
/// raised their rate 2-5 % (`docs/benchmarks.md`). Cassandra's chunk cache defaults to
/// 512 MiB (`file_cache_size`).
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 << 20;
/// Default commit-log segment size (Cassandra uses 32 MiB too).
pub const DEFAULT_COMMITLOG_SEGMENT_BYTES: u64 = 32 << 20;
/// Default compaction rate limit: Cassandra's `compaction_throughput` default, 64 MiB/s.
pub const DEFAULT_COMPACTION_BYTES_PER_SEC: u64 = 64 << 20;
/// Default `gc_grace`: ten days, as Cassandra's `gc_grace_seconds`. Tombstones must outlive
/// the longest a replica may stay unrepaired, or deleted data can come back.
pub const DEFAULT_GC_GRACE_MS: u64 = 10 * 24 * 3_600 * 1_000;
/// Smallest segment size accepted: smaller segments would rotate on nearly every batch.
pub const MIN_COMMITLOG_SEGMENT_BYTES: u64 = 64 << 10;
/// Longest periodic interval accepted; a longer one is almost surely a unit mistake.
pub const MAX_SYNC_INTERVAL_MS: u64 = 10 * 60 * 1_000;
/// Smallest `sstable_target_bytes` leveled compaction accepts: smaller outputs would be a
/// handful of blocks each, and a level of them mostly index and bloom overhead.
pub const MIN_LEVELED_SSTABLE_TARGET_BYTES: u64 = 4096;
/// Longest keyspace name; names become directory entries in the manifest.
pub const MAX_KEYSPACE_NAME_BYTES: usize = 128;

/// When the commit log is fsynced, which bounds what a power loss can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge once the record reached the kernel; fsync every `interval_ms` in the
    /// background. Loss bound on power loss: writes acknowledged in the last `interval_ms`
    /// (plus the duration of one fsync). A process crash (kill -9) loses nothing.
    Periodic { interval_ms: u64 },
    /// Acknowledge only after the record is fsynced. Concurrent writers share one fsync
    /// (group commit). Loses nothing acknowledged, even on power loss.
    Batch,
    /// Never fsync the commit log (segments and SSTables are still synced when sealed). A
    /// process crash loses nothing; a power loss may lose anything not yet flushed.
    None,
}

impl Default for SyncMode {
    fn default() -> Self {
        SyncMode::Periodic {
            interval_ms: DEFAULT_SYNC_INTERVAL_MS,
        }
    }
}

/// How a keyspace's SSTables are compacted. The choice is made by pure functions in
/// [`crate::compaction`]; the engine executes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionStrategy {
    /// Merge runs of similar-sized tables (Cassandra STCS): low write amplification, more
    /// space and read amplification. The default.
    SizeTiered {
        min_threshold: usize,
        max_threshold: usize,
    },
    /// Levels of non-overlapping tables, each `level_size_multiplier` times the previous
    /// (LevelDB/RocksDB/Cassandra LCS): low read and space amplification, more writes.
    Leveled {
        sstable_target_bytes: u64,
        level_size_multiplier: u64,
    },
    /// Tables grouped by the time window of their newest write; each closed window is
    /// compacted into one table (Cassandra TWCS): for time series and TTL'd data.
    TimeWindow { window_ms: u64 },
}

impl Default for CompactionStrategy {
    fn default() -> Self {
        CompactionStrategy::SizeTiered {
            min_threshold: 4,
            max_threshold: 32,
        }
    }
}

impl CompactionStrategy {
    /// Rejects parameters the strategy cannot work with; the error names the option.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        match *self {
            CompactionStrategy::SizeTiered {
                min_threshold,
                max_threshold,
            } => {
                if min_threshold < 2 {
                    return bad(format!(
                        "compaction (size-tiered): min_threshold must be at least 2, got {min_threshold}"
                    ));
                }
                if max_threshold < min_threshold {
                    return bad(format!(
                        "compaction (size-tiered): max_threshold ({max_threshold}) must be at least min_threshold ({min_threshold})"
                    ));
                }
            }
            CompactionStrategy::Leveled {
                sstable_target_bytes,
                level_size_multiplier,
            } => {
                if sstable_target_bytes < MIN_LEVELED_SSTABLE_TARGET_BYTES {
                    return bad(format!(
                        "compaction (leveled): sstable_target_bytes must be at least {MIN_LEVELED_SSTABLE_TARGET_BYTES}, got {sstable_target_bytes}"
                    ));
                }
                if level_size_multiplier < 2 {
                    return bad(format!(
                        "compaction (leveled): level_size_multiplier must be at least 2, got {level_size_multiplier}"
                    ));
                }
            }
            CompactionStrategy::TimeWindow { window_ms } => {
                if window_ms == 0 {
                    return bad(
                        "compaction (time-window): window_ms must be greater than 0, got 0".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// A short name for logs and errors: `size-tiered`, `leveled` or `time-window`.
    pub fn name(&self) -> &'static str {
        match self {
            CompactionStrategy::SizeTiered { .. } => "size-tiered",
            CompactionStrategy::Leveled { .. } => "leveled",
            CompactionStrategy::TimeWindow { .. } => "time-window",
        }
    }
}

/// Per-keyspace storage options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyspaceOptions {
    pub compaction: CompactionStrategy,
    /// How long a tombstone (or expired cell) is kept before compaction may purge it, unless
    /// the keyspace has a purge horizon (`Engine::set_purge_horizon`), which replaces it.
    /// Any value is valid; a very large one (`u64::MAX`) means "never by time alone".
    pub gc_grace_ms: u64,
    pub compression: Compression,
}

impl Default for KeyspaceOptions {
    fn default() -> Self {
        KeyspaceOptions {
            compaction: CompactionStrategy::default(),
            gc_grace_ms: DEFAULT_GC_GRACE_MS,
            compression: Compression::Lz4,
        }
    }
}

impl KeyspaceOptions {
    /// Rejects options the engine cannot work with, naming the option in the error.
    /// (`gc_grace_ms` takes any value and `compression` is an enum, so only the compaction
    /// parameters can be wrong.)
    pub fn validate(&self) -> Result<()> {
        self.compaction.validate()
    }
}

/// Configuration of one engine. Build with [`EngineConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Data directory (created if missing): commit log, manifest, one directory per keyspace.
    pub dir: PathBuf,
    /// Default: periodic, every [`DEFAULT_SYNC_INTERVAL_MS`].
    pub sync_mode: SyncMode,
    /// A keyspace's memtable is flushed when it reaches this size. Default 64 MiB.
    pub memtable_size_bytes: u64,
    /// Writers stall while all memtables together exceed this. Default 256 MiB.
    pub memtable_total_bytes_max: u64,
    /// Block cache capacity, shared by all keyspaces. Default [`DEFAULT_BLOCK_CACHE_BYTES`].
    pub block_cache_bytes: u64,
    /// Commit-log segment size. Default 32 MiB.
    pub commitlog_segment_bytes: u64,
    /// Compaction write rate limit in bytes per second; 0 = unlimited. Default 64 MiB/s.
    pub compaction_bytes_per_sec: u64,
    /// Run compactions nothing waits for at the OS's idle scheduling priority (Linux
    /// `SCHED_IDLE`), on CPU time requests leave over; one is promoted to normal priority when
    /// more compaction work queues behind it, a major compaction is asked for, or it has
    /// waited 10 s. Major compactions (`Engine::compact`) always run at normal priority.
    /// Default true.
    pub compaction_background_priority: bool,
    /// A flush puts the data blocks it writes into the block cache (as RocksDB's
    /// `prepopulate_block_cache = kFlushOnly`), when its memtable is at most a third of the
    /// cache: the keys just written are the ones likely to be read next, and otherwise each
    /// of them misses the cache once right after the flush. Default true.
    pub flush_warm_cache: bool,
    /// SSTable data block size. Default 3 KiB: a point read that misses the block cache reads,
    /// checks and decompresses a whole block for one cell, so its cost grows with the block,
    /// while the cache's hit rate (bytes cached over bytes read) does not depend on it. With
    /// ~140-byte cells, 4 KiB -> 3 KiB gave +7-9 % point-read hits per CPU-second for 0-4 %
    /// fewer 100-key scans (more blocks per scan) and one third more index memory; 2 KiB
    /// gave +23 % hits but -8 % scans
    /// (`docs/benchmarks.md`, storage engine vs fjall).
    pub sstable_block_size_bytes: usize,
    /// Bloom filter bits per key (10 ≈ 1% false positives). Default 10.
    pub bloom_bits_per_key: u32,
    /// Options of the `default` keyspace when it is first created.
    pub default_keyspace: KeyspaceOptions,
    /// Wall time for TTL expiry and tombstone gc.
    pub clock: Arc<dyn Clock>,
    /// The durability seam (fsync, rename).
    pub fs: Arc<dyn Fs>,
}

impl EngineConfig {
    /// A configuration with every default, storing under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            dir: dir.into(),
            sync_mode: SyncMode::default(),
            memtable_size_bytes: DEFAULT_MEMTABLE_SIZE_BYTES,
            memtable_total_bytes_max: DEFAULT_MEMTABLE_TOTAL_BYTES_MAX,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            commitlog_segment_bytes: DEFAULT_COMMITLOG_SEGMENT_BYTES,
            compaction_bytes_per_sec: DEFAULT_COMPACTION_BYTES_PER_SEC,
            compaction_background_priority: true,
            flush_warm_cache: true,
            sstable_block_size_bytes: 3072,
            bloom_bits_per_key: 10,
            default_keyspace: KeyspaceOptions::default(),
            clock: Arc::new(SystemClock),
            fs: Arc::new(RealFs),
        }
    }

    /// Checks the cross-field rules; [`crate::Engine::open`] calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if let SyncMode::Periodic { interval_ms } = self.sync_mode
            && (interval_ms == 0 || interval_ms > MAX_SYNC_INTERVAL_MS)
        {
            return bad(format!(
                "sync_mode periodic interval_ms must be in 1..={MAX_SYNC_INTERVAL_MS}, got {interval_ms}"
            ));
        }
        if self.memtable_size_bytes < 4096 {
            return bad(format!(
                "memtable_size_bytes must be at least 4096, got {}",
                self.memtable_size_bytes
            ));
        }
        if self.memtable_total_bytes_max < self.memtable_size_bytes {
            return bad(format!(
                "memtable_total_bytes_max ({}) must be >= memtable_size_bytes ({})",
                self.memtable_total_bytes_max, self.memtable_size_bytes
            ));
        }
        if self.commitlog_segment_bytes < MIN_COMMITLOG_SEGMENT_BYTES {
            return bad(format!(
                "commitlog_segment_bytes must be at least {MIN_COMMITLOG_SEGMENT_BYTES}, got {}",
                self.commitlog_segment_bytes
            ));
        }
        if self.sstable_block_size_bytes < 256 || self.sstable_block_size_bytes > (1 << 20) {
            return bad(format!(
                "sstable_block_size_bytes must be in 256..=1048576, got {}",
                self.sstable_block_size_bytes
            ));
        }
        if self.bloom_bits_per_key > 64 {
            return bad(format!(
                "bloom_bits_per_key must be at most 64, got {}",
                self.bloom_bits_per_key
            ));
        }
        self.default_keyspace.validate()
    }
}

/// Checks a keyspace name: non-empty, bounded, printable ASCII without path separators.
pub fn validate_keyspace_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEYSPACE_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "keyspace name must be 1..={MAX_KEYSPACE_NAME_BYTES} characters of [A-Za-z0-9_-], got {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_contradictions_are_rejected() {
        let c = EngineConfig::new("/tmp/x");
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.memtable_total_bytes_max = bad.memtable_size_bytes - 1;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.sync_mode = SyncMode::Periodic { interval_ms: 0 };
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.default_keyspace.compaction = CompactionStrategy::SizeTiered {
            min_threshold: 5,
            max_threshold: 4,
        };
        assert!(bad.validate().is_err());
        assert!(validate_keyspace_name("users_1").is_ok());
        assert!(validate_keyspace_name("../etc").is_err());
        assert!(validate_keyspace_name("").is_err());
    }
}
