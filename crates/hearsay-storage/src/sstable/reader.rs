//! Reads an SSTable: open verifies the footer and loads index, bloom and stats; point reads
//! and iterators fetch data blocks lazily through the shared [`BlockCache`].

use super::block::{Block, Cursor, EntryMeta};
use super::format::*;
use super::{ReadStats, SstableMeta, sstable_path};
use crate::bloom::{self, BloomFilter};
use crate::cache::{BlockCache, BlockKey, CacheTally};
use crate::cell::{Cell, CellKey};
use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use hearsay_types::{Timestamp, Token};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

thread_local! {
    static GET_CURSOR: RefCell<Cursor> = RefCell::new(Cursor::default());
}

/// One entry of the in-memory block index.
#[derive(Debug)]
struct IndexEntry {
    /// Encoded last key of the block (a slice of the decoded index block).
    last_key: Bytes,
    handle: BlockHandle,
}

/// An open, immutable SSTable. Shared as `Arc<Sstable>`; iterators hold the `Arc`, so the
/// file stays readable while iterated even after the engine drops it from the live set.
pub struct Sstable {
    path: PathBuf,
    file: File,
    /// Cache-unique id of this open table (see [`BlockCache::next_table_uid`]).
    uid: u64,
    meta: SstableMeta,
    index: Vec<IndexEntry>,
    /// Token prefix of each block's last key, as an order-preserving u64 (parallel to
    /// `index`): point reads binary-search this dense array.
    index_tokens: Vec<u64>,
    bloom: BloomFilter,
    /// End of the data blocks (start of the first meta block).
    data_end: u64,
    cache: Arc<BlockCache>,
    stats: Arc<ReadStats>,
    obsolete: AtomicBool,
    index_memory_bytes: u64,
}

impl fmt::Debug for Sstable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sstable")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .field("blocks", &self.index.len())
            .finish()
    }
}

/// Largest read buffer a thread keeps between block reads. Data blocks are ~4 KiB, so this
/// keeps the common case allocation-free while a rare huge block does not pin its memory.
const READ_BUF_KEEP_BYTES_MAX: usize = 256 * 1024;

/// Evicted block buffers a thread keeps for its next cache misses. One miss usually evicts
/// about one block, so a few cover the steady state.
const SPARE_BLOCKS_MAX: usize = 4;
/// Largest evicted buffer worth keeping: data blocks are ~4 KiB (the default block size).
const SPARE_BLOCK_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// Buffers of blocks this thread evicted from the block cache, reused as the
    /// destination of the next blocks it reads: no allocation, no zeroing, no free of a cold
    /// buffer per miss.
    static SPARE_BLOCKS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// Raw (on-disk) bytes of the data block being read: reused so a block-cache miss
    /// neither allocates, zeroes nor frees a buffer for bytes it only decompresses.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads `len` bytes at `offset` into `buf` (resized to `len`), mapping a short read (a file
/// truncated under us) to corruption and other failures to I/O errors.
fn read_into(file: &File, path: &Path, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    // Only bytes beyond the buffer's previous length are zeroed; a reused buffer costs none.
    buf.resize(len, 0);
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(path, offset, "file ends inside a block")
        } else {
            Error::io(path, e)
        }
    })
}

/// Reads `len` bytes at `offset` into a new buffer (see [`read_into`]).
fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_into(file, path, offset, len, &mut buf)?;
    Ok(buf)
}

/// Keeps the buffer of a block evicted from the cache for this thread's next miss, if no
/// reader still holds the block and the thread has room for it; drops it otherwise.
fn recycle_block(block: Bytes) {
    if block.len() > SPARE_BLOCK_BYTES_MAX {
        return;
    }
    if let Ok(buf) = block.try_into_mut() {
        SPARE_BLOCKS.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut()
                && s.len() < SPARE_BLOCKS_MAX
                && buf.capacity() <= SPARE_BLOCK_BYTES_MAX
            {
                s.push(buf);
            }
        });
    }
}

/// Below this many blocks a plain binary search touches few cache lines anyway.
const INTERPOLATION_MIN_BLOCKS: usize = 16;

/// The first position in the ascending `tokens` whose token is `>= t` (as
/// `tokens.partition_point(|&x| x < t)`). Tokens are hashes, spread evenly over the u64 range,
/// so the position is first guessed by interpolation between the first and last token, then
/// bracketed by steps doubling away from the guess and finished by a binary search inside
/// the bracket: about two cache misses on a large table's index instead of one per
/// binary-search step. Uneven tokens cost at most about twice a binary search.
fn lower_bound_token(tokens: &[u64], t: u64) -> usize {
    let n = tokens.len();
    if n < INTERPOLATION_MIN_BLOCKS {
        return tokens.partition_point(|&x| x < t);
    }
    let (first, last) = (tokens[0], tokens[n - 1]);
    if t <= first {
        return 0;
    }
    if t > last {
        return n;
    }
    // Here first < t <= last, so first < last and the guess lies in 0..n.
    let guess = (u128::from(t - first) * (n as u128 - 1) / u128::from(last - first)) as usize;
    let finish = |lo: usize, hi: usize| lo + 1 + tokens[lo + 1..hi].partition_point(|&x| x < t);
    let mut step = 1usize;
    if tokens[guess] < t {
        // Bracket to the right: tokens[lo] < t, and tokens[n - 1] >= t ends the walk.
        let mut lo = guess;
        loop {
            let hi = lo.saturating_add(step).min(n - 1);
            if tokens[hi] >= t {
                return finish(lo, hi);
            }
            lo = hi;
            step = step.saturating_mul(2);
        }
    } else {
        // Bracket to the left: tokens[hi] >= t, and tokens[0] < t ends the walk.
        let mut hi = guess;
        loop {
            let lo = hi.saturating_sub(step);
            if tokens[lo] < t {
                return finish(lo, hi);
            }
            hi = lo;
            step = step.saturating_mul(2);
        }
    }
}

/// Verifies a block's CRC and decompresses it into a new buffer, or into `spare` when given
/// (its old contents are overwritten). `max_decoded` bounds the decompressed size.
fn decode_envelope(
    raw: &[u8],
    max_decoded: usize,
    spare: Option<BytesMut>,
) -> Result<Bytes, &'static str> {
    let payload_len = raw
        .len()
        .checked_sub(BLOCK_TRAILER_BYTES)
        .ok_or("block shorter than its trailer")?;
    let (payload, trailer) = raw.split_at(payload_len);
    let kind = trailer[0];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&trailer[1..5]);
    if u32::from_le_bytes(crc) != block_crc(payload, kind) {
        return Err("block checksum mismatch");
    }
    match (kind, spare) {
        // A spare too small would regrow to about twice the block (memory the cache does
        // not charge for), so it is dropped and the block gets an exact buffer.
        (COMPRESSION_NONE, Some(mut out)) if out.capacity() >= payload.len() => {
            out.clear();
            out.extend_from_slice(payload);
            Ok(out.freeze())
        }
        (COMPRESSION_NONE, _) => Ok(Bytes::copy_from_slice(payload)),
        (COMPRESSION_LZ4, spare) => {
            let mut d = Decoder::new(payload);
            let decoded_len = d.u32_le()? as usize;
            if decoded_len > max_decoded {
                return Err("decompressed block size exceeds limit");
            }
            let compressed = &payload[4..];
            let wrong_size = "LZ4 block decompressed to the wrong size";
            match spare.filter(|b| b.capacity() >= decoded_len) {
                Some(mut out) => {
                    // Keeps the old bytes up to `decoded_len` (only growth is zeroed): the
                    // size check below guarantees every one of them was overwritten.
                    out.truncate(decoded_len);
                    out.resize(decoded_len, 0);
                    let n = lz4_flex::block::decompress_into(compressed, &mut out)
                        .map_err(|_| "LZ4 decompression failed")?;
                    if n != decoded_len {
                        return Err(wrong_size);
                    }
                    Ok(out.freeze())
                }
                None => {
                    // Into an uninitialised buffer of exactly `decoded_len` bytes; the decoder
                    // (built with `checked-decode`) fails rather than write past it.
                    let out = lz4_flex::block::decompress(compressed, decoded_len)
                        .map_err(|_| "LZ4 decompression failed")?;
                    if out.len() != decoded_len {
                        return Err(wrong_size);
                    }
                    Ok(Bytes::from(out))
                }
            }
        }
        _ => Err("unknown block compression type"),
    }
}

impl Sstable {
    /// Opens `dir/{id:016x}.sst`: verifies the footer (magic, version, CRC), then reads and
    /// verifies the stats, index and bloom blocks and keeps them in memory. A short, garbage
    /// or damaged file gives [`Error::Corruption`] naming the file and offset; a file from a
    /// newer format gives [`Error::UnsupportedVersion`]. Never panics on file contents.
    pub fn open(
        dir: &Path,
        id: u64,
        cache: Arc<BlockCache>,
        stats: Arc<ReadStats>,
    ) -> Result<Arc<Sstable>> {
        let uid = cache.next_table_uid();
        Sstable::open_as(dir, id, cache, stats, uid)
    }

    /// As [`Self::open`], under a cache uid taken from `cache.next_table_uid()` before the
    /// file was written, so the writer could already put its blocks in the cache.
    pub fn open_as(
        dir: &Path,
        id: u64,
        cache: Arc<BlockCache>,
        stats: Arc<ReadStats>,
        uid: u64,
    ) -> Result<Arc<Sstable>> {
        let path = sstable_path(dir, id);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if file_len < FOOTER_BYTES as u64 {
            return Err(Error::corruption(
                &path,
                0,
                format!("file of {file_len} bytes is too short for the {FOOTER_BYTES}-byte footer"),
            ));
        }
        let footer_offset = file_len - FOOTER_BYTES as u64;
        let raw = read_at(&file, &path, footer_offset, FOOTER_BYTES)?;
        let mut footer_bytes = [0u8; FOOTER_BYTES];
        footer_bytes.copy_from_slice(&raw);
        let footer = Footer::decode(&footer_bytes).map_err(|e| match e {
            FooterError::BadMagic => Error::corruption(
                &path,
                footer_offset,
                "bad magic number: not an SSTable or truncated",
            ),
            FooterError::Version(found) => Error::UnsupportedVersion {
                path: path.clone(),
                found,
                supported: FORMAT_VERSION,
            },
            FooterError::Checksum => {
                Error::corruption(&path, footer_offset, "footer checksum mismatch")
            }
        })?;

        let check_handle = |h: BlockHandle, what: &str| -> Result<()> {
            let end = h.offset.checked_add(h.size);
            let ok = h.size >= BLOCK_TRAILER_BYTES as u64
                && h.size <= (MAX_META_BLOCK_BYTES + BLOCK_TRAILER_BYTES) as u64
                && end.is_some_and(|e| e <= footer_offset);
            if ok {
                Ok(())
            } else {
                Err(Error::corruption(
                    &path,
                    footer_offset,
                    format!(
                        "{what} block handle (offset {}, size {}) out of bounds",
                        h.offset, h.size
                    ),
                ))
            }
        };
        check_handle(footer.index, "index")?;
        check_handle(footer.bloom, "bloom")?;
        check_handle(footer.stats, "stats")?;
        let data_end = footer
            .index
            .offset
            .min(footer.bloom.offset)
            .min(footer.stats.offset);

        let read_meta = |h: BlockHandle| -> Result<Bytes> {
            let raw = read_at(&file, &path, h.offset, h.size as usize)?;
            decode_envelope(&raw, MAX_META_BLOCK_BYTES, None)
                .map_err(|r| Error::corruption(&path, h.offset, r))
        };

        // Stats.
        let stats_block = read_meta(footer.stats)?;
        let corrupt_stats = |r: &str| Error::corruption(&path, footer.stats.offset, r);
        let mut d = Decoder::new(&stats_block);
        let mut fields = [0u64; 7];
        for f in &mut fields {
            *f = d.u64_le().map_err(corrupt_stats)?;
        }
        let [
            _written_id,
            entry_count,
            min_timestamp,
            max_timestamp,
            tombstone_count,
            expiring_count,
            min_deletion_time_ms,
        ] = fields;
        let has_max_expiry = d.u8().map_err(corrupt_stats)?;
        let max_expiry = d.u64_le().map_err(corrupt_stats)?;
        let max_expiry_ms = match has_max_expiry {
            0 => None,
            1 => Some(max_expiry),
            _ => return Err(corrupt_stats("bad max-expiry flag")),
        };
        let read_key = |d: &mut Decoder<'_>| -> Result<Vec<u8>> {
            let len = d
                .varint_max(MAX_ENCODED_KEY_BYTES, "key length too large")
                .map_err(corrupt_stats)?;
            if len < TOKEN_BYTES {
                return Err(corrupt_stats("key shorter than a token"));
            }
            Ok(d.bytes(len).map_err(corrupt_stats)?.to_vec())
        };
        let min_key = read_key(&mut d)?;
        let max_key = read_key(&mut d)?;
        if d.remaining() != 0 {
            return Err(corrupt_stats("trailing bytes in stats block"));
        }
        if min_key > max_key || entry_count == 0 || min_timestamp > max_timestamp {
            return Err(corrupt_stats("inconsistent stats"));
        }

        // Index.
        let index_block = read_meta(footer.index)?;
        let corrupt_index = |r: &str| Error::corruption(&path, footer.index.offset, r);
        let mut d = Decoder::new(&index_block);
        let count = d.u32_le().map_err(corrupt_index)? as usize;
        // Each entry takes at least 8 key bytes + 3 varint bytes: bounds the allocation.
        if count == 0 || count > d.remaining() / (TOKEN_BYTES + 3) {
            return Err(corrupt_index("bad index entry count"));
        }
        let mut index = Vec::with_capacity(count);
        let mut next_offset = 0u64;
        for _ in 0..count {
            let len = d
                .varint_max(MAX_ENCODED_KEY_BYTES, "index key too long")
                .map_err(corrupt_index)?;
            if len < TOKEN_BYTES {
                return Err(corrupt_index("index key shorter than a token"));
            }
            let start = d.pos();
            d.bytes(len).map_err(corrupt_index)?;
            let last_key = index_block.slice(start..start + len);
            let offset = d.varint().map_err(corrupt_index)?;
            let size = d.varint().map_err(corrupt_index)?;
            let end = offset.checked_add(size);
            // Blocks are contiguous from offset 0, in key order.
            if offset != next_offset
                || size < BLOCK_TRAILER_BYTES as u64
                || size > (MAX_BLOCK_BYTES + BLOCK_TRAILER_BYTES) as u64
                || end.is_none_or(|e| e > data_end)
            {
                return Err(corrupt_index("data block handle out of bounds"));
            }
            next_offset = offset + size;
            if index
                .last()
                .is_some_and(|p: &IndexEntry| p.last_key >= last_key)
            {
                return Err(corrupt_index("index keys out of order"));
            }
            index.push(IndexEntry {
                last_key,
                handle: BlockHandle { offset, size },
            });
        }
        if d.remaining() != 0 {
            return Err(corrupt_index("trailing bytes in index block"));
        }
        if next_offset != data_end {
            return Err(corrupt_index("data blocks do not fill the data region"));
        }
        if index.last().is_some_and(|e| e.last_key[..] != max_key[..]) {
            return Err(corrupt_index(
                "last index key differs from the table's max key",
            ));
        }

        // Bloom.
        let bloom_block = read_meta(footer.bloom)?;
        let bloom = BloomFilter::decode(&bloom_block)
            .map_err(|r| Error::corruption(&path, footer.bloom.offset, r))?;

        let index_tokens: Vec<u64> = index
            .iter()
            .map(|e| {
                // Index keys were checked to be at least TOKEN_BYTES long above.
                e.last_key
                    .first_chunk::<TOKEN_BYTES>()
                    .map_or(0, |t| u64::from_be_bytes(*t))
            })
            .collect();
        let index_memory_bytes = index_block.len() as u64
            + (index_tokens.capacity() * std::mem::size_of::<u64>()) as u64
            + (index.capacity() * std::mem::size_of::<IndexEntry>()) as u64;
        let meta = SstableMeta {
            id,
            size_bytes: file_len,
            entry_count,
            min_key: decode_key(&min_key),
            max_key: decode_key(&max_key),
            min_timestamp: Timestamp(min_timestamp),
            max_timestamp: Timestamp(max_timestamp),
            tombstone_count,
            expiring_count,
            min_deletion_time_ms,
            max_expiry_ms,
            index_bytes: footer.index.size,
            bloom_bytes: footer.bloom.size,
        };
        Ok(Arc::new(Sstable {
            path,
            file,
            uid,
            meta,
            index,
            index_tokens,
            bloom,
            data_end,
            cache,
            stats,
            obsolete: AtomicBool::new(false),
            index_memory_bytes,
        }))
    }

    /// The table's stats.
    pub fn meta(&self) -> &SstableMeta {
        &self.meta
    }

    /// The table's file id.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// The file this table reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of data blocks.
    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes of data blocks (the file without its index, bloom, stats and footer).
    pub fn data_bytes(&self) -> u64 {
        self.data_end
    }

    /// Bytes of index and bloom filter held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.index_memory_bytes + self.bloom.memory_bytes()
    }

    /// Asks for the file to be deleted once the last reference (this table or an iterator
    /// over it) is dropped. The engine calls this when compaction has replaced the table.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, AtomicOrdering::Release);
    }

    /// Whether [`Self::mark_obsolete`] was called.
    pub fn is_obsolete(&self) -> bool {
        self.obsolete.load(AtomicOrdering::Acquire)
    }

    /// Whether the bloom filter admits the key (false: certainly absent). Does not count.
    pub fn may_contain(&self, key: &CellKey) -> bool {
        self.bloom.may_contain(bloom::hash_key(key.token, &key.key))
    }

    /// Reads data block `idx`, from the cache if it is there. `fill_cache == false` (for
    /// compaction) still uses a cached copy but does not insert, so one pass over cold data
    /// does not evict the hot set.
    fn block(&self, idx: usize, fill_cache: bool) -> Result<Block> {
        self.block_noting(idx, fill_cache, None)
    }

    /// As [`Self::block`], counting the read (and whether the cache had it) into `tally`.
    fn block_noting(
        &self,
        idx: usize,
        fill_cache: bool,
        tally: Option<&CacheTally>,
    ) -> Result<Block> {
        let entry = self.index.get(idx).ok_or_else(|| {
            Error::corruption(&self.path, self.data_end, "block index out of range")
        })?;
        let h = entry.handle;
        let key = BlockKey {
            table_uid: self.uid,
            offset: h.offset,
        };
        let cached = self.cache.get(&key);
        if let Some(t) = tally {
            t.read.fetch_add(1, AtomicOrdering::Relaxed);
            if cached.is_some() {
                t.cached.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
        let data = match cached {
            Some(data) => data,
            None => {
                let data = self.read_data_block(h)?;
                if fill_cache {
                    self.cache.insert_with(key, data.clone(), recycle_block);
                }
                data
            }
        };
        Block::parse(data).map_err(|r| Error::corruption(&self.path, h.offset, r))
    }

    /// Reads, verifies and decompresses the data block at `h` from the file.
    fn read_data_block(&self, h: BlockHandle) -> Result<Bytes> {
        let decode = |raw: &mut Vec<u8>| -> Result<Bytes> {
            read_into(&self.file, &self.path, h.offset, h.size as usize, raw)?;
            self.stats.record_block_read(h.size);
            let spare = SPARE_BLOCKS.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()));
            decode_envelope(raw, MAX_BLOCK_BYTES, spare)
                .map_err(|r| Error::corruption(&self.path, h.offset, r))
        };
        READ_BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut raw) => {
                let data = decode(&mut raw);
                if raw.capacity() > READ_BUF_KEEP_BYTES_MAX {
                    *raw = Vec::new();
                }
                data
            }
            // Not reached (nothing in `decode` re-enters), but a fresh buffer beats a panic.
            Err(_) => decode(&mut Vec::new()),
        })
    }

    /// First block whose last key is >= the target.
    fn find_block(&self, token: &[u8; TOKEN_BYTES], key: &[u8]) -> usize {
        // Search the dense token array first (8 bytes per block, cache-friendly), then
        // compare full keys only among blocks whose last key has the same token.
        let t = u64::from_be_bytes(*token);
        let lo = lower_bound_token(&self.index_tokens, t);
        // Tokens are hashes, so a token almost never ends two blocks: check the first block
        // before paying a second binary search over the rest of the array for the run's end.
        let hi = if self.index_tokens.get(lo) == Some(&t) {
            lo + self.index_tokens[lo..].partition_point(|&x| x == t)
        } else {
            lo
        };
        lo + self.index[lo..hi]
            .partition_point(|e| cmp_encoded(&e.last_key, token, key) == Ordering::Less)
    }

    /// Point read: the cell stored for `key`, if any. Consults the bloom filter first, then
    /// the index, then one data block. Counts bloom outcomes in [`ReadStats`].
    pub fn get(&self, key: &CellKey) -> Result<Option<Cell>> {
        self.get_with_hash(key, bloom::hash_key(key.token, &key.key))
    }

    /// As [`Self::get`], with the key's bloom hash computed by the caller once for all the
    /// tables it probes. `key_hash` must be [`bloom::hash_key`]`(key.token, &key.key)`.
    pub fn get_with_hash(&self, key: &CellKey, key_hash: u64) -> Result<Option<Cell>> {
        if !self.bloom.may_contain(key_hash) {
            self.stats.record_bloom(BloomOutcome::Negative);
            return Ok(None);
        }
        let found = self.get_unfiltered(key)?;
        self.stats.record_bloom(if found.is_some() {
            BloomOutcome::TruePositive
        } else {
            BloomOutcome::FalsePositive
        });
        Ok(found)
    }

    /// Point reads of `keys` (each with its [`bloom::hash_key`]) in this table, for a batch:
    /// every key's filter lines are prefetched before any is tested, so their misses overlap,
    /// and the outcomes are counted once for the batch. Calls `found(i, result)` for the
    /// keys the filter admits (`i` indexes `keys`); the others are absent.
    pub fn get_batch(
        &self,
        keys: &[(&CellKey, u64)],
        mut found: impl FnMut(usize, Result<Option<Cell>>),
    ) {
        for &(_, h) in keys {
            self.bloom.prefetch(h);
        }
        let (mut neg, mut tp, mut fp) = (0u64, 0u64, 0u64);
        for (i, &(key, h)) in keys.iter().enumerate() {
            if !self.bloom.may_contain(h) {
                neg += 1;
                continue;
            }
            let r = self.get_unfiltered(key);
            match &r {
                Ok(Some(_)) => tp += 1,
                Ok(None) => fp += 1,
                Err(_) => {}
            }
            found(i, r);
        }
        self.stats.record_blooms(neg, tp, fp);
    }

    fn get_unfiltered(&self, key: &CellKey) -> Result<Option<Cell>> {
        let token = encode_token(key.token);
        let idx = self.find_block(&token, &key.key);
        if idx >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(idx, true)?;
        let offset = self.index[idx].handle.offset;
        let lookup = |cursor: &mut Cursor| -> Result<Option<Cell>> {
            let corrupt = |r| Error::corruption(&self.path, offset, r);
            block.seek(cursor, &token, &key.key).map_err(corrupt)?;
            match block.next_entry(cursor).map_err(corrupt)? {
                Some(e) if cmp_encoded(&cursor.key, &token, &key.key) == Ordering::Equal => {
                    Ok(Some(block.cell(&e)))
                }
                _ => Ok(None),
            }
        };
        // Reuse one cursor (and its key buffer) per thread: a point read then allocates
        // nothing but what it returns. `try_borrow_mut` cannot fail (nothing in `lookup`
        // re-enters), but falling back costs one allocation where a panic would cost a node.
        GET_CURSOR.with(|c| match c.try_borrow_mut() {
            Ok(mut cursor) => lookup(&mut cursor),
            Err(_) => lookup(&mut Cursor::default()),
        })
    }

    /// Ascending iterator over `[lower, upper]` (per the bounds). Reads blocks lazily and
    /// caches them. Holds an `Arc` of the table.
    pub fn iter(self: &Arc<Self>, lower: Bound<CellKey>, upper: Bound<CellKey>) -> SstableIter {
        SstableIter::new(self.clone(), lower, upper, true)
    }

    /// As [`Self::iter`], but blocks read from disk are not inserted into the cache (a
    /// compaction reads each block once; caching it would only evict hot blocks).
    pub fn iter_for_compaction(
        self: &Arc<Self>,
        lower: Bound<CellKey>,
        upper: Bound<CellKey>,
    ) -> SstableIter {
        self.iter_uncached(lower, upper)
    }

    /// As [`Self::iter`], but blocks read from disk are not inserted into the cache (cached
    /// blocks are still used). For reads that pass over each block once: compactions and
    /// engine scans.
    pub fn iter_uncached(
        self: &Arc<Self>,
        lower: Bound<CellKey>,
        upper: Bound<CellKey>,
    ) -> SstableIter {
        SstableIter::new(self.clone(), lower, upper, false)
    }
}

impl Drop for Sstable {
    fn drop(&mut self) {
        if self.obsolete.load(AtomicOrdering::Acquire) {
            match std::fs::remove_file(&self.path) {
                Ok(()) => tracing::debug!(path = %self.path.display(), "deleted obsolete SSTable"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not delete obsolete SSTable")
                }
            }
        }
    }
}

/// What the bloom filter's answer turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BloomOutcome {
    Negative,
    TruePositive,
    FalsePositive,
}

enum IterState {
    Unstarted,
    InBlock { idx: usize, block: Block },
    Done,
}

/// An entry of the current block, decoded ahead: its key is `keys[key_start..key_end]`.
#[derive(Clone, Copy, Debug)]
struct DecodedEntry {
    key_start: usize,
    key_end: usize,
    meta: EntryMeta,
}

/// Ascending iterator over an SSTable's cells within bounds. Yields `Err` once on corruption
/// or I/O failure, then ends.
///
/// On entering a block it decodes the rest of the block at once, copying all its keys into
/// one buffer, so each yielded key is a slice of that buffer (one allocation per block, not
/// per cell) and each value a slice of the block.
pub struct SstableIter {
    table: Arc<Sstable>,
    lower: Bound<CellKey>,
    /// Upper bound in encoded form, compared against each entry's key.
    upper: Bound<Vec<u8>>,
    fill_cache: bool,
    /// Counts block reads for a compaction ([`SstableIter::tallying`]).
    tally: Option<Arc<CacheTally>>,
    state: IterState,
    cursor: Cursor,
    entries: Vec<DecodedEntry>,
    keys: Bytes,
    next: usize,
}

impl fmt::Debug for SstableIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SstableIter")
            .field("table", &self.table.path)
            .field("lower", &self.lower)
            .finish()
    }
}

impl SstableIter {
    /// Counts into `tally` the data blocks this iterator reads and how many of them came
    /// from the cache (a compaction's writer warms the output blocks of hot input ranges).
    pub fn tallying(mut self, tally: Arc<CacheTally>) -> SstableIter {
        self.tally = Some(tally);
        self
    }

    fn new(
        table: Arc<Sstable>,
        lower: Bound<CellKey>,
        upper: Bound<CellKey>,
        fill_cache: bool,
    ) -> Self {
        let encode = |k: CellKey| {
            let mut v = Vec::with_capacity(TOKEN_BYTES + k.key.len());
            encode_key(&k, &mut v);
            v
        };
        let upper = match upper {
            Bound::Included(k) => Bound::Included(encode(k)),
            Bound::Excluded(k) => Bound::Excluded(encode(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        SstableIter {
            table,
            lower,
            upper,
            fill_cache,
            tally: None,
            state: IterState::Unstarted,
            cursor: Cursor::default(),
            entries: Vec::new(),
            keys: Bytes::new(),
            next: 0,
        }
    }

    /// The table being iterated.
    pub fn table(&self) -> &Arc<Sstable> {
        &self.table
    }

    fn start(&mut self) -> Result<IterState> {
        let (token, key, exclusive) = match &self.lower {
            Bound::Unbounded => {
                return self.load(0);
            }
            Bound::Included(k) => (encode_token(k.token), k.key.clone(), false),
            Bound::Excluded(k) => (encode_token(k.token), k.key.clone(), true),
        };
        let idx = self.table.find_block(&token, &key);
        if idx >= self.table.index.len() {
            return Ok(IterState::Done);
        }
        let block = self
            .table
            .block_noting(idx, self.fill_cache, self.tally.as_deref())?;
        let offset = self.table.index[idx].handle.offset;
        let corrupt = |r| Error::corruption(&self.table.path, offset, r);
        self.cursor.reset();
        block
            .seek(&mut self.cursor, &token, &key)
            .map_err(corrupt)?;
        if exclusive
            && self.cursor.pending.is_some()
            && cmp_encoded(&self.cursor.key, &token, &key) == Ordering::Equal
        {
            self.cursor.pending = None;
        }
        self.fill(&block, offset)?;
        Ok(IterState::InBlock { idx, block })
    }

    fn load(&mut self, idx: usize) -> Result<IterState> {
        let Some(entry) = self.table.index.get(idx) else {
            return Ok(IterState::Done);
        };
        let offset = entry.handle.offset;
        let block = self
            .table
            .block_noting(idx, self.fill_cache, self.tally.as_deref())?;
        self.cursor.reset();
        self.fill(&block, offset)?;
        Ok(IterState::InBlock { idx, block })
    }

    /// Decodes the rest of `block` from the cursor into `entries` and `keys`. Terminates:
    /// every entry decoded moves the cursor forward by at least one byte.
    fn fill(&mut self, block: &Block, offset: u64) -> Result<()> {
        self.entries.clear();
        self.next = 0;
        // Sized so that a block of ~100-byte cells needs no regrowth (an iterator is made per
        // scan and table, so growing from empty was a series of reallocs per scan): keys are
        // about a fifth of such a block, and an entry takes ~64 bytes or more of it.
        let rest = block.data.len().saturating_sub(self.cursor.pos);
        self.entries.reserve(rest / 64);
        let mut arena = Vec::with_capacity(self.keys.len().max(rest / 4).max(256));
        while let Some(meta) = block
            .next_entry(&mut self.cursor)
            .map_err(|r| Error::corruption(&self.table.path, offset, r))?
        {
            let key_start = arena.len();
            arena.extend_from_slice(&self.cursor.key);
            self.entries.push(DecodedEntry {
                key_start,
                key_end: arena.len(),
                meta,
            });
        }
        self.keys = Bytes::from(arena);
        Ok(())
    }

    fn above_upper(&self, key: &[u8]) -> bool {
        match &self.upper {
            Bound::Unbounded => false,
            Bound::Included(u) => key > &u[..],
            Bound::Excluded(u) => key >= &u[..],
        }
    }

    fn advance(&mut self) -> Result<Option<(CellKey, Cell)>> {
        // Bounded by the number of blocks: each pass either yields or moves to the next one.
        loop {
            match &self.state {
                IterState::Done => return Ok(None),
                IterState::Unstarted => self.state = self.start()?,
                IterState::InBlock { idx, block } => {
                    let Some(&d) = self.entries.get(self.next) else {
                        let next_idx = *idx + 1;
                        self.state = self.load(next_idx)?;
                        continue;
                    };
                    self.next += 1;
                    let encoded = self.keys.get(d.key_start..d.key_end).unwrap_or_default();
                    if self.above_upper(encoded) {
                        self.state = IterState::Done;
                        return Ok(None);
                    }
                    let token = encoded
                        .first_chunk::<TOKEN_BYTES>()
                        .map_or(Token(i64::MIN), decode_token);
                    let key = CellKey {
                        token,
                        key: self.keys.slice(d.key_start + TOKEN_BYTES..d.key_end),
                    };
                    return Ok(Some((key, block.cell(&d.meta))));
                }
            }
        }
    }
}

impl Iterator for SstableIter {
    type Item = Result<(CellKey, Cell)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(e) => {
                self.state = IterState::Done;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The interpolated search agrees with a binary search on any sorted input: even
        /// spreads, clusters, duplicates, and targets outside the range.
        #[test]
        fn lower_bound_token_matches_partition_point(
            mut tokens in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..300),
            clustered in proptest::prelude::any::<bool>(),
            targets in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..50),
        ) {
            if clustered {
                // Squeeze most tokens into a narrow range so the interpolation guesses badly.
                for x in tokens.iter_mut().skip(2) {
                    *x %= 1000;
                }
            }
            tokens.sort_unstable();
            let mut probes = targets;
            probes.extend(tokens.iter().copied());
            probes.extend(tokens.iter().map(|x| x.wrapping_add(1)));
            probes.extend([0, u64::MAX]);
            for t in probes {
                proptest::prop_assert_eq!(
                    lower_bound_token(&tokens, t),
                    tokens.partition_point(|&x| x < t),
                    "target {}", t
                );
            }
        }
    }
}
