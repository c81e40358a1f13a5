//! Writes one SSTable under a temporary name, then makes it durable and visible atomically:
//! data blocks, index, bloom, stats, footer; fsync the file; rename; fsync the directory.

use super::block::BlockBuilder;
use super::format::*;
use super::{Compression, SstableMeta, SstableOptions, sstable_path, tmp_path};
use crate::bloom::{self, BloomFilter};
use crate::cache::{BlockCache, BlockKey, CacheTally};
use crate::cell::{Cell, CellKey};
use crate::error::{Error, Result};
use crate::fs::Fs;
use hearsay_types::Timestamp;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Consecutive blocks that failed to compress before the writer stops trying every block.
const COMPRESSION_GIVE_UP_BLOCKS: u32 = 8;
/// Once it has given up, the writer still tries one block in this many, so data that turns
/// compressible later in the table is noticed.
const COMPRESSION_RETRY_INTERVAL_BLOCKS: u64 = 16;

/// Size of the writer's user-space buffer: large sequential writes, few syscalls.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Writes one SSTable. Keys must be added in strictly increasing [`CellKey`] order. Dropping
/// the writer without [`SstableWriter::finish`] removes the temporary file, as
/// [`SstableWriter::abandon`] does.
pub struct SstableWriter {
    dir: PathBuf,
    id: u64,
    tmp_path: PathBuf,
    opts: SstableOptions,
    fs: Arc<dyn Fs>,
    out: Option<BufWriter<File>>,
    /// Bytes handed to `out` so far (= offset of the next block).
    offset: u64,
    block: BlockBuilder,
    /// Index block under construction: (last key, handle) per data block.
    index: Vec<u8>,
    index_entries: u32,
    /// One bloom hash per key; the filter is sized at finish from the true key count.
    hashes: Vec<u64>,
    key_buf: Vec<u8>,
    compress_buf: Vec<u8>,
    /// Blocks written so far (all kinds).
    blocks_written: u64,
    /// LZ4 attempts in a row that did not pay off.
    incompressible_streak: u32,
    // Stats for the meta.
    entry_count: u64,
    min_key: Option<CellKey>,
    last_key: Vec<u8>,
    min_timestamp: u64,
    max_timestamp: u64,
    tombstone_count: u64,
    expiring_count: u64,
    min_deletion_time_ms: u64,
    max_expiry_ms: Option<u64>,
    warm: Option<Warm>,
}

/// Where a compaction's writer puts the blocks it writes from hot input (see
/// [`SstableWriter::warm_cache`]).
struct Warm {
    cache: Arc<BlockCache>,
    uid: u64,
    /// What decides which blocks go in: the inputs' cache hits (a compaction), or nothing
    /// (every block does: a flush, [`SstableWriter::warm_cache_all`]).
    tally: Option<TallyMark>,
    /// The decision for the previous data block.
    hot: bool,
    blocks: u64,
}

/// A compaction's input tally and its counts when the previous data block was written.
struct TallyMark {
    tally: Arc<CacheTally>,
    cached_before: u64,
    read_before: u64,
}

impl fmt::Debug for SstableWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SstableWriter")
            .field("path", &self.tmp_path)
            .field("entry_count", &self.entry_count)
            .field("offset", &self.offset)
            .finish()
    }
}

impl SstableWriter {
    /// Creates `dir/{id:016x}.sst.tmp` (truncating a leftover one). `expected_keys` sizes the
    /// in-memory buffers; it is a hint, not a limit.
    pub fn create(
        dir: &Path,
        id: u64,
        opts: &SstableOptions,
        fs: Arc<dyn Fs>,
        expected_keys: usize,
    ) -> Result<Self> {
        opts.validate()?;
        let tmp_path = tmp_path(dir, id);
        let file = fs
            .create_file(
                &tmp_path,
                OpenOptions::new().write(true).create(true).truncate(true),
            )
            .map_err(|e| Error::io(&tmp_path, e))?;
        Ok(SstableWriter {
            dir: dir.to_path_buf(),
            id,
            tmp_path,
            opts: opts.clone(),
            fs,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            offset: 0,
            block: BlockBuilder::new(opts.restart_interval, opts.block_size_bytes + 1024),
            index: Vec::new(),
            index_entries: 0,
            // Capped so a wild hint cannot allocate much up front.
            hashes: Vec::with_capacity(expected_keys.min(1 << 20)),
            key_buf: Vec::new(),
            compress_buf: Vec::new(),
            blocks_written: 0,
            incompressible_streak: 0,
            entry_count: 0,
            min_key: None,
            last_key: Vec::new(),
            min_timestamp: u64::MAX,
            max_timestamp: 0,
            tombstone_count: 0,
            expiring_count: 0,
            min_deletion_time_ms: u64::MAX,
            max_expiry_ms: None,
            warm: None,
        })
    }

    /// Makes this writer (a compaction's) put each data block into `cache`, under the table
    /// uid `uid` that the table will be opened with ([`super::Sstable::open_as`]), when any
    /// input block read since the previous block (counted in `tally`) was cached. Any, not
    /// most: a read stops at the newest version of a key, so of the inputs overlapping a hot
    /// range usually only the one holding the newest versions has cached blocks.
    ///
    /// Why: a compaction replaces its inputs by tables whose blocks are all new to the cache,
    /// so every hot key misses once more right after it, and on a read-heavy node the misses
    /// (a read, a checksum and a decompression each) arrive together. Following the inputs'
    /// hit rate keeps what was hot hot and leaves cold ranges out, so a compaction over cold
    /// data does not evict the hot set.
    pub fn warm_cache(&mut self, cache: Arc<BlockCache>, uid: u64, tally: Arc<CacheTally>) {
        self.warm = Some(Warm {
            cache,
            uid,
            tally: Some(TallyMark {
                cached_before: tally.cached.load(Ordering::Relaxed),
                read_before: tally.read.load(Ordering::Relaxed),
                tally,
            }),
            hot: false,
            blocks: 0,
        });
    }

    /// Makes this writer (a flush's) put every data block into `cache` under `uid`, as
    /// RocksDB's `prepopulate_block_cache` does for flushes.
    ///
    /// Why: until its flush, a memtable answered the reads of the keys just written. Right
    /// after it, every one of those reads misses the cache once (a `pread`, a checksum and a
    /// decompression each), all in the same moments: ~9,400 misses in the `redis-benchmark`
    /// GET run after each 64 MiB flush. The flush thread already holds each block decoded, so
    /// warming costs it one copy.
    pub fn warm_cache_all(&mut self, cache: Arc<BlockCache>, uid: u64) {
        self.warm = Some(Warm {
            cache,
            uid,
            tally: None,
            hot: true,
            blocks: 0,
        });
    }

    /// As [`Self::finish`], also returning how many data blocks went into the cache
    /// ([`Self::warm_cache`], [`Self::warm_cache_all`]), the last one included: it is only
    /// written, and so only warmed, by the finish.
    pub fn finish_counting_warmed(mut self) -> Result<(SstableMeta, u64)> {
        if self.min_key.is_some() {
            self.flush_block()?;
        }
        let warmed = self.warm.as_ref().map_or(0, |w| w.blocks);
        Ok((self.finish()?, warmed))
    }

    /// Appends a cell. Errors: `InvalidArgument` when the key is not strictly greater than
    /// the previous one or a key or value exceeds [`MAX_KEY_BYTES`] / [`MAX_VALUE_BYTES`];
    /// `Io` on a write failure.
    pub fn add(&mut self, key: &CellKey, cell: &Cell) -> Result<()> {
        if key.key.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds the SSTable limit of {MAX_KEY_BYTES}",
                key.key.len()
            )));
        }
        if cell.value_len() > MAX_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds the SSTable limit of {MAX_VALUE_BYTES}",
                cell.value_len()
            )));
        }
        let mut key_buf = std::mem::take(&mut self.key_buf);
        encode_key(key, &mut key_buf);
        if self.entry_count > 0 && key_buf <= self.last_key {
            self.key_buf = key_buf;
            return Err(Error::InvalidArgument(format!(
                "SSTable keys must be strictly increasing: {key:?} after {:?}",
                decode_key(&self.last_key)
            )));
        }
        self.block.add(&key_buf, cell);
        self.hashes.push(bloom::hash_key(key.token, &key.key));
        if self.min_key.is_none() {
            self.min_key = Some(key.clone());
        }
        std::mem::swap(&mut self.last_key, &mut key_buf);
        self.key_buf = key_buf;
        self.entry_count += 1;
        let ts = cell.timestamp.0;
        self.min_timestamp = self.min_timestamp.min(ts);
        self.max_timestamp = self.max_timestamp.max(ts);
        if cell.is_tombstone() {
            self.tombstone_count += 1;
        } else if cell.expires_at_ms.is_some() {
            self.expiring_count += 1;
        }
        if cell.is_tombstone() || cell.expires_at_ms.is_some() {
            self.min_deletion_time_ms = self.min_deletion_time_ms.min(cell.deletion_time_ms());
        }
        if let Some(e) = cell.expires_at_ms {
            self.max_expiry_ms = Some(self.max_expiry_ms.map_or(e, |m| m.max(e)));
        }
        if self.block.estimated_size() >= self.opts.block_size_bytes {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Cells added so far.
    pub fn entry_count(&self) -> u64 {
        self.entry_count
    }

    /// Bytes written to the file so far plus the (uncompressed) size of the block being
    /// built: what the file would be if finished now, give or take compression and the
    /// meta blocks. Use it to split compaction output.
    pub fn bytes_written(&self) -> u64 {
        let pending = if self.block.is_empty() {
            0
        } else {
            self.block.estimated_size() as u64
        };
        self.offset + pending
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut block = std::mem::replace(&mut self.block, BlockBuilder::new(1, 0));
        let result = (|| {
            let last_key = block.last_key().to_vec();
            let raw = block.finish();
            let handle = self.write_block(raw, self.opts.compression, true)?;
            if let Some(w) = self.warm.as_mut() {
                if let Some(m) = w.tally.as_mut() {
                    let cached = m.tally.cached.load(Ordering::Relaxed);
                    let read = m.tally.read.load(Ordering::Relaxed);
                    let (dc, dr) = (cached - m.cached_before, read - m.read_before);
                    // No input block read since the last output block: same inputs, same call.
                    if dr > 0 {
                        w.hot = dc > 0;
                    }
                    (m.cached_before, m.read_before) = (cached, read);
                }
                if w.hot {
                    let key = BlockKey {
                        table_uid: w.uid,
                        offset: handle.offset,
                    };
                    w.cache.insert(key, bytes::Bytes::copy_from_slice(raw));
                    w.blocks += 1;
                }
            }
            put_varint(&mut self.index, last_key.len() as u64);
            self.index.extend_from_slice(&last_key);
            put_varint(&mut self.index, handle.offset);
            put_varint(&mut self.index, handle.size);
            self.index_entries += 1;
            Ok(())
        })();
        block.reset();
        self.block = block;
        result
    }

    /// Writes `raw` (a decoded block) with its envelope: payload, compression byte, CRC32C.
    /// `adaptive` lets a run of incompressible data blocks turn compression attempts down;
    /// meta blocks always try.
    fn write_block(
        &mut self,
        raw: &[u8],
        compression: Compression,
        adaptive: bool,
    ) -> Result<BlockHandle> {
        let mut kind = COMPRESSION_NONE;
        // After a run of blocks that did not compress, try only every
        // `COMPRESSION_RETRY_INTERVAL_BLOCKS`-th block: incompressible data (random values)
        // otherwise pays an LZ4 pass per block for nothing.
        let try_compress = compression == Compression::Lz4
            && raw.len() >= 64
            && (!adaptive
                || self.incompressible_streak < COMPRESSION_GIVE_UP_BLOCKS
                || self
                    .blocks_written
                    .is_multiple_of(COMPRESSION_RETRY_INTERVAL_BLOCKS));
        self.blocks_written += 1;
        if try_compress {
            if adaptive {
                self.incompressible_streak += 1;
            }
            let max = lz4_flex::block::get_maximum_output_size(raw.len()) + 4;
            self.compress_buf.resize(max, 0);
            self.compress_buf[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            if let Ok(n) = lz4_flex::block::compress_into(raw, &mut self.compress_buf[4..]) {
                // Worth it only when it saves at least an eighth: decompression costs time
                // on every read.
                if 4 + n < raw.len() - raw.len() / 8 {
                    self.compress_buf.truncate(4 + n);
                    kind = COMPRESSION_LZ4;
                    self.incompressible_streak = 0;
                }
            }
        }
        let payload: &[u8] = if kind == COMPRESSION_LZ4 {
            &self.compress_buf
        } else {
            raw
        };
        let crc = block_crc(payload, kind);
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("SSTable writer already finished".into()))?;
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(payload)?;
            out.write_all(&[kind])?;
            out.write_all(&crc.to_le_bytes())
        };
        write(out).map_err(|e| Error::io(&self.tmp_path, e))?;
        let handle = BlockHandle {
            offset: self.offset,
            size: (payload.len() + BLOCK_TRAILER_BYTES) as u64,
        };
        self.offset += handle.size;
        Ok(handle)
    }

    fn write_meta_block(&mut self, raw: &[u8], compression: Compression) -> Result<BlockHandle> {
        if raw.len() > MAX_META_BLOCK_BYTES {
            return Err(Error::InvalidArgument(format!(
                "SSTable meta block of {} bytes exceeds {MAX_META_BLOCK_BYTES}: split the table",
                raw.len()
            )));
        }
        self.write_block(raw, compression, false)
    }

    /// Writes the rest of the table, fsyncs it, renames it to its final name and fsyncs the
    /// directory. An empty table is refused (`InvalidArgument`): check
    /// [`Self::entry_count`] and [`Self::abandon`] instead. Errors from the [`Fs`] propagate
    /// unchanged in kind (`Io`), so the engine can poison itself.
    pub fn finish(mut self) -> Result<SstableMeta> {
        let Some(min_key) = self.min_key.clone() else {
            return Err(Error::InvalidArgument(
                "cannot finish an empty SSTable; abandon it".into(),
            ));
        };
        self.flush_block()?;

        let mut index = std::mem::take(&mut self.index);
        let mut raw = Vec::with_capacity(index.len() + 4);
        raw.extend_from_slice(&self.index_entries.to_le_bytes());
        raw.append(&mut index);
        let index_handle = self.write_meta_block(&raw, self.opts.compression)?;

        let filter = BloomFilter::build(&self.hashes, self.opts.bloom_bits_per_key);
        self.hashes = Vec::new();
        raw.clear();
        filter.encode(&mut raw);
        // Bloom bits are random and never compress.
        let bloom_handle = self.write_meta_block(&raw, Compression::None)?;

        let max_key = decode_key(&self.last_key);
        raw.clear();
        for v in [
            self.id,
            self.entry_count,
            self.min_timestamp,
            self.max_timestamp,
            self.tombstone_count,
            self.expiring_count,
            self.min_deletion_time_ms,
        ] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        raw.push(u8::from(self.max_expiry_ms.is_some()));
        raw.extend_from_slice(&self.max_expiry_ms.unwrap_or(0).to_le_bytes());
        let mut min_enc = Vec::new();
        encode_key(&min_key, &mut min_enc);
        put_varint(&mut raw, min_enc.len() as u64);
        raw.extend_from_slice(&min_enc);
        put_varint(&mut raw, self.last_key.len() as u64);
        raw.extend_from_slice(&self.last_key);
        let stats_handle = self.write_meta_block(&raw, Compression::None)?;

        let footer = Footer {
            index: index_handle,
            bloom: bloom_handle,
            stats: stats_handle,
        };
        let mut out = self
            .out
            .take()
            .ok_or_else(|| Error::InvalidArgument("SSTable writer already finished".into()))?;
        out.write_all(&footer.encode())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(&self.tmp_path, e))?;
        let size_bytes = self.offset + FOOTER_BYTES as u64;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
        self.fs
            .sync_file(&file, &self.tmp_path)
            .map_err(|e| Error::io(&self.tmp_path, e))?;
        drop(file);
        let final_path = sstable_path(&self.dir, self.id);
        self.fs
            .rename(&self.tmp_path, &final_path)
            .map_err(|e| Error::io(&final_path, e))?;
        // From here the temp name is gone; Drop must not try to remove it.
        self.tmp_path = PathBuf::new();
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        Ok(SstableMeta {
            id: self.id,
            size_bytes,
            entry_count: self.entry_count,
            min_key,
            max_key,
            min_timestamp: Timestamp(self.min_timestamp),
            max_timestamp: Timestamp(self.max_timestamp),
            tombstone_count: self.tombstone_count,
            expiring_count: self.expiring_count,
            min_deletion_time_ms: self.min_deletion_time_ms,
            max_expiry_ms: self.max_expiry_ms,
            index_bytes: index_handle.size,
            bloom_bytes: bloom_handle.size,
        })
    }

    /// Gives up: closes and removes the temporary file.
    pub fn abandon(self) {
        // Drop does the work.
    }
}

impl Drop for SstableWriter {
    fn drop(&mut self) {
        self.out = None;
        if !self.tmp_path.as_os_str().is_empty()
            && let Err(e) = std::fs::remove_file(&self.tmp_path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.tmp_path.display(), error = %e, "could not remove abandoned SSTable temp file");
        }
    }
}
