//! SSTables: immutable sorted files of cells, ordered by `(token, key)`.
//!
//! A table is written once by [`SstableWriter`] (under a temporary name, fsynced, renamed,
//! directory fsynced) and then only read, through [`Sstable`]. The byte layout is specified
//! in `docs/storage-format.md`: data blocks of prefix-compressed entries with restart points,
//! each optionally LZ4-compressed and checksummed with CRC32C; an index of the last key of
//! each block; a bloom filter over `(token, key)`; a stats block; and a fixed 64-byte footer
//! carrying the magic number, the format version and its own CRC.
//!
//! Invariants: keys in a table are strictly increasing; every byte read from disk is
//! checksum-verified before it is interpreted, and every length is bounded by the file size
//! and by the limits in [`format`], so damaged files give [`crate::Error::Corruption`]
//! (naming the file and block offset), never a panic or wrong data.

mod block;
pub mod format;
mod reader;
mod writer;

pub use format::{
    FORMAT_VERSION, MAX_BLOCK_BYTES, MAX_BLOCK_SIZE_OPTION_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
pub use reader::{BloomOutcome, Sstable, SstableIter};
pub use writer::SstableWriter;

use crate::cell::CellKey;
use crate::error::{Error, Result};
use hearsay_types::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Most bloom bits per key accepted: beyond ~30 the false-positive rate is already below
/// one in a million and more bits only cost memory.
pub const MAX_BLOOM_BITS_PER_KEY: u32 = 64;

/// Block compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// LZ4 block compression, used per block only when it saves at least an eighth.
    #[default]
    Lz4,
}

/// How tables are written. Readers need none of this: everything is recorded in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstableOptions {
    /// Target uncompressed size of a data block; a block is cut once it reaches this.
    /// Default 4096. At most [`MAX_BLOCK_SIZE_OPTION_BYTES`].
    pub block_size_bytes: usize,
    /// Default [`Compression::Lz4`].
    pub compression: Compression,
    /// Bloom filter bits per key; 10 gives ~0.8% false positives. 0 disables the filter.
    pub bloom_bits_per_key: u32,
    /// A full key is stored every this many entries (a restart point); the keys in
    /// between store only what differs from the previous key. Default 16.
    pub restart_interval: usize,
}

impl Default for SstableOptions {
    fn default() -> Self {
        SstableOptions {
            block_size_bytes: 4096,
            compression: Compression::Lz4,
            bloom_bits_per_key: 10,
            restart_interval: 16,
        }
    }
}

impl SstableOptions {
    /// Rejects options the format cannot honour.
    pub fn validate(&self) -> Result<()> {
        if self.block_size_bytes == 0 || self.block_size_bytes > MAX_BLOCK_SIZE_OPTION_BYTES {
            return Err(Error::InvalidArgument(format!(
                "block_size_bytes must be in 1..={MAX_BLOCK_SIZE_OPTION_BYTES}, got {}",
                self.block_size_bytes
            )));
        }
        if self.restart_interval == 0 || self.restart_interval > 1024 {
            return Err(Error::InvalidArgument(format!(
                "restart_interval must be in 1..=1024, got {}",
                self.restart_interval
            )));
        }
        if self.bloom_bits_per_key > MAX_BLOOM_BITS_PER_KEY {
            return Err(Error::InvalidArgument(format!(
                "bloom_bits_per_key must be at most {MAX_BLOOM_BITS_PER_KEY}, got {}",
                self.bloom_bits_per_key
            )));
        }
        Ok(())
    }
}

/// The path of table `id` in `dir`: `dir/{id:016x}.sst` (fixed width, so names sort by id).
pub fn sstable_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.sst"))
}

/// The temporary path a table is written under before its rename: `dir/{id:016x}.sst.tmp`.
/// The engine may delete any such file it finds at startup.
pub fn tmp_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.sst.tmp"))
}

/// Parses a file name made by [`sstable_path`] back into its id (`None` for anything else,
/// including temporary files).
pub fn parse_sstable_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".sst")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a table holds, recorded in its stats block and returned by the writer.
#[derive(Clone, Debug, PartialEq)]
pub struct SstableMeta {
    pub id: u64,
    /// File size.
    pub size_bytes: u64,
    pub entry_count: u64,
    pub min_key: CellKey,
    pub max_key: CellKey,
    pub min_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
    /// Cells with no value (including tombstones made from expired values).
    pub tombstone_count: u64,
    /// Live values that carry an expiry.
    pub expiring_count: u64,
    /// Minimum [`crate::Cell::deletion_time_ms`] over tombstones and expiring values;
    /// `u64::MAX` if the table has neither. Compaction uses it to know when `gc_grace` can
    /// first allow a purge.
    pub min_deletion_time_ms: u64,
    /// Largest `expires_at_ms` of any cell (values or tombstones made from expiries), if any.
    pub max_expiry_ms: Option<u64>,
    /// On-disk size of the index block (its decoded form is what stays in memory).
    pub index_bytes: u64,
    /// On-disk size of the bloom filter block (held in memory at this size).
    pub bloom_bytes: u64,
}

/// Read-path counters, shared by all tables of an engine (or a keyspace).
#[derive(Debug, Default)]
pub struct ReadStats {
    /// The filter said "absent": the table was skipped without I/O.
    pub bloom_negatives: AtomicU64,
    /// The filter said "maybe" and the key was there.
    pub bloom_true_positives: AtomicU64,
    /// The filter said "maybe" and the key was not there (a wasted block read).
    pub bloom_false_positives: AtomicU64,
    /// Data blocks read from disk (cache misses).
    pub blocks_read: AtomicU64,
    /// Bytes of data blocks read from disk.
    pub bytes_read: AtomicU64,
}

/// A copy of [`ReadStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStatsSnapshot {
    pub bloom_negatives: u64,
    pub bloom_true_positives: u64,
    pub bloom_false_positives: u64,
    pub blocks_read: u64,
    pub bytes_read: u64,
}

impl ReadStats {
    /// Current values.
    pub fn snapshot(&self) -> ReadStatsSnapshot {
        ReadStatsSnapshot {
            bloom_negatives: self.bloom_negatives.load(Ordering::Relaxed),
            bloom_true_positives: self.bloom_true_positives.load(Ordering::Relaxed),
            bloom_false_positives: self.bloom_false_positives.load(Ordering::Relaxed),
            blocks_read: self.blocks_read.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_bloom(&self, outcome: BloomOutcome) {
        let counter = match outcome {
            BloomOutcome::Negative => &self.bloom_negatives,
            BloomOutcome::TruePositive => &self.bloom_true_positives,
            BloomOutcome::FalsePositive => &self.bloom_false_positives,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a batch's bloom outcomes at once (one atomic add per counter, not per probe:
    /// each is a locked instruction that waits for every load before it, misses included).
    pub(crate) fn record_blooms(&self, negatives: u64, true_positives: u64, false_positives: u64) {
        for (c, n) in [
            (&self.bloom_negatives, negatives),
            (&self.bloom_true_positives, true_positives),
            (&self.bloom_false_positives, false_positives),
        ] {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn record_block_read(&self, bytes: u64) {
        self.blocks_read.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let p = sstable_path(Path::new("/d"), 0xabc);
        assert_eq!(p, Path::new("/d/0000000000000abc.sst"));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(parse_sstable_file_name(name), Some(0xabc));
        assert_eq!(parse_sstable_file_name("0000000000000abc.sst.tmp"), None);
        assert_eq!(parse_sstable_file_name("abc.sst"), None);
    }

    #[test]
    fn options_validate() {
        assert!(SstableOptions::default().validate().is_ok());
        let bad = SstableOptions {
            block_size_bytes: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = SstableOptions {
            restart_interval: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
