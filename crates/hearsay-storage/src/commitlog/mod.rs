//! The commit log: every batch is appended here (one checksummed record per batch, so a batch
//! is all-or-nothing across a crash) before it reaches a memtable.
//!
//! Format v1. A segment file `commitlog-<id>.log` starts with a 20-byte header:
//! magic `HSCL`, format version (u16), reserved (u16), segment id (u64), CRC32C of those 16
//! bytes (u32). Then records: payload length (u32), CRC32C of length bytes + payload (u32),
//! payload. A payload is: record version (u8 = 1), keyspace id (u32), cell count (u32), then
//! per cell: token (i64), key (u32 length + bytes), flags (u8: 1 = has value, 2 = has expiry),
//! timestamp (u64), [expiry ms (u64)], [value (u32 length + bytes)]. All little-endian.
//!
//! Recovery: a record cut short at the end of a segment, or a bad record followed only by
//! zeros or the end of the file, is a torn tail (the crash happened mid-append): the segment
//! is truncated there with a warning. A bad record followed by more data is corruption in the
//! middle of the log: replay fails with an error naming the file and offset, because skipping
//! it would silently lose acknowledged writes.

use crate::cell::{Cell, CellKey};
use crate::config::SyncMode;
use crate::engine::codec::{DResult, Reader, Writer};
use crate::engine::poison::Poison;
use crate::error::{Error, Result, is_disk_full};
use crate::fs::Fs;
use hearsay_types::{Timestamp, Token};
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Segment file magic.
pub const SEGMENT_MAGIC: [u8; 4] = *b"HSCL";
/// The segment format this build writes and the newest it reads.
pub const COMMITLOG_FORMAT_VERSION: u16 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 20;
/// Size of a record header (length + checksum).
pub const RECORD_HEADER_BYTES: usize = 8;
/// Version byte at the start of every record payload.
pub const RECORD_VERSION: u8 = 1;
/// Largest record payload. A batch is one record; this bounds what replay allocates for one
/// record and keeps a single batch from monopolising a segment.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// Most cells in one batch: bounds replay's per-record allocation and memtable lock hold time.
pub const MAX_BATCH_CELLS: usize = 100_000;
/// Longest key. Cassandra's partition key limit is 64 KiB; keys live in every index block.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Largest value. The RESP front end enforces its own (smaller or equal) limit with a clear
/// error; this is the engine's hard bound, below [`MAX_RECORD_BYTES`].
pub const MAX_VALUE_BYTES: usize = 32 << 20;
// Anything the commit log accepts must fit an SSTable, or a flush would fail after the
// write was acknowledged.
const _: () = assert!(MAX_KEY_BYTES <= crate::sstable::format::MAX_KEY_BYTES);
const _: () = assert!(MAX_VALUE_BYTES <= crate::sstable::format::MAX_VALUE_BYTES);
const _: () = assert!(MAX_VALUE_BYTES < MAX_RECORD_BYTES);

/// Smallest possible encoded cell, used to bound pre-allocation when decoding a count.
const MIN_CELL_BYTES: usize = 8 + 4 + 1 + 8;

const FLAG_VALUE: u8 = 1;
const FLAG_EXPIRY: u8 = 2;

/// The file name of segment `id`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("commitlog-{id:020}.log"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("commitlog-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Checks a batch against the engine's limits.
pub fn validate_batch(cells: &[(CellKey, Cell)]) -> Result<()> {
    if cells.len() > MAX_BATCH_CELLS {
        return Err(Error::InvalidArgument(format!(
            "batch of {} cells exceeds the limit of {MAX_BATCH_CELLS}",
            cells.len()
        )));
    }
    let mut total = 9usize;
    for (k, c) in cells {
        if k.key.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds the limit of {MAX_KEY_BYTES}",
                k.key.len()
            )));
        }
        if c.value_len() > MAX_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_BYTES}",
                c.value_len()
            )));
        }
        total += MIN_CELL_BYTES + 16 + k.key.len() + c.value_len();
    }
    if total > MAX_RECORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "batch of about {total} bytes exceeds the limit of {MAX_RECORD_BYTES}"
        )));
    }
    Ok(())
}

/// Encodes a batch as a record payload. Call [`validate_batch`] first.
pub fn encode_batch(keyspace_id: u32, cells: &[(CellKey, Cell)]) -> Vec<u8> {
    encode_batch_after(Vec::new(), keyspace_id, cells)
}

/// Appends the encoded batch to `buf` (which may hold a record header to fill in later).
fn encode_batch_after(buf: Vec<u8>, keyspace_id: u32, cells: &[(CellKey, Cell)]) -> Vec<u8> {
    let mut w = Writer { buf };
    w.buf.reserve(
        16 + cells
            .iter()
            .map(|(k, c)| MIN_CELL_BYTES + 16 + k.key.len() + c.value_len())
            .sum::<usize>(),
    );
    w.u8(RECORD_VERSION);
    w.u32(keyspace_id);
    w.u32(cells.len() as u32);
    for (k, c) in cells {
        w.i64(k.token.0);
        w.bytes(&k.key);
        let mut flags = 0;
        if c.value.is_some() {
            flags |= FLAG_VALUE;
        }
        if c.expires_at_ms.is_some() {
            flags |= FLAG_EXPIRY;
        }
        w.u8(flags);
        w.u64(c.timestamp.0);
        if let Some(e) = c.expires_at_ms {
            w.u64(e);
        }
        if let Some(v) = &c.value {
            w.bytes(v);
        }
    }
    w.buf
}

/// Encodes a batch as a complete record (header with length and checksum, then payload),
/// ready for [`CommitLog::append_frame`]. Doing this before taking any lock keeps the
/// checksum and copying off the serialised part of the write path.
pub(crate) fn encode_record(keyspace_id: u32, cells: &[(CellKey, Cell)]) -> Vec<u8> {
    // Encode after a placeholder header, then fill it in: one buffer, no copy of the payload.
    let mut frame = encode_batch_after(vec![0u8; RECORD_HEADER_BYTES], keyspace_id, cells);
    let (header, payload) = frame.split_at_mut(RECORD_HEADER_BYTES);
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&record_crc(payload).to_le_bytes());
    frame
}

#[cfg(test)]
fn frame_payload(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&record_crc(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Decodes a record payload into its keyspace id and cells.
pub(crate) fn decode_batch(payload: &[u8]) -> DResult<(u32, Vec<(CellKey, Cell)>)> {
    let mut r = Reader::new(payload);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return r.err(format!("unsupported record version {version}"));
    }
    let keyspace_id = r.u32()?;
    let count = r.u32()? as usize;
    if count > MAX_BATCH_CELLS {
        return r.err(format!("cell count {count} exceeds {MAX_BATCH_CELLS}"));
    }
    let mut cells = Vec::with_capacity(count.min(r.remaining() / MIN_CELL_BYTES));
    for _ in 0..count {
        let token = Token(r.i64()?);
        let key = r.bytes_owned(MAX_KEY_BYTES, "key")?;
        let flags = r.u8()?;
        if flags & !(FLAG_VALUE | FLAG_EXPIRY) != 0 {
            return r.err(format!("unknown cell flags {flags:#x}"));
        }
        let timestamp = Timestamp(r.u64()?);
        let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let value = if flags & FLAG_VALUE != 0 {
            Some(r.bytes_owned(MAX_VALUE_BYTES, "value")?)
        } else {
            None
        };
        cells.push((
            CellKey { token, key },
            Cell {
                value,
                timestamp,
                expires_at_ms,
            },
        ));
    }
    if r.remaining() != 0 {
        return r.err(format!("{} trailing bytes after the cells", r.remaining()));
    }
    Ok((keyspace_id, cells))
}

fn record_crc(payload: &[u8]) -> u32 {
    let len = (payload.len() as u32).to_le_bytes();
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

fn segment_header(id: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&COMMITLOG_FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What replay found.
#[derive(Debug, Default)]
pub(crate) struct ReplayOutcome {
    /// Segments kept (they hold data not yet flushed), ascending.
    pub segments: Vec<u64>,
    /// The id the next segment gets.
    pub next_segment_id: u64,
    pub records: u64,
    pub torn_tails: u64,
}

/// Lists segment ids in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Replays every segment in `dir` in order, calling `apply(segment_id, payload)` for each
/// intact record. Torn tails are truncated (with a warning); corruption elsewhere is an error.
pub(crate) fn replay(
    dir: &Path,
    fs: &dyn Fs,
    mut apply: impl FnMut(u64, &Path, u64, &[u8]) -> Result<()>,
) -> Result<ReplayOutcome> {
    let mut out = ReplayOutcome::default();
    for id in list_segments(dir)? {
        out.next_segment_id = out.next_segment_id.max(id + 1);
        let path = segment_path(dir, id);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if data.len() < SEGMENT_HEADER_BYTES {
            // Crashed while creating the segment: nothing in it was ever acknowledged.
            tracing::warn!(path = %path.display(), len = data.len(), "removing commit-log segment with a torn header");
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            out.torn_tails += 1;
            continue;
        }
        check_segment_header(&path, id, &data)?;
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut torn_at = None;
        while pos < data.len() {
            match read_record(&path, &data, pos)? {
                RecordRead::Ok { payload, next } => {
                    apply(id, &path, pos as u64, payload)?;
                    out.records += 1;
                    pos = next;
                }
                RecordRead::Torn => {
                    torn_at = Some(pos);
                    break;
                }
            }
        }
        if let Some(at) = torn_at {
            tracing::warn!(path = %path.display(), offset = at, dropped_bytes = data.len() - at,
                "truncating torn commit-log tail (a crash interrupted an append; it was never acknowledged)");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(at as u64).map_err(|e| Error::io(&path, e))?;
            fs.sync_file(&f, &path).map_err(|e| Error::io(&path, e))?;
            out.torn_tails += 1;
        }
        out.segments.push(id);
    }
    Ok(out)
}

fn check_segment_header(path: &Path, id: u64, data: &[u8]) -> Result<()> {
    let mut r = Reader::new(data);
    let bad = |off: u64, why: &str| Error::corruption(path, off, why);
    let magic = r.take(4).map_err(|_| bad(0, "short header"))?;
    if magic != SEGMENT_MAGIC {
        return Err(bad(0, "not a commit-log segment (bad magic)"));
    }
    let version = r.u16().map_err(|_| bad(4, "short header"))?;
    let _reserved = r.u16().map_err(|_| bad(6, "short header"))?;
    let seg_id = r.u64().map_err(|_| bad(8, "short header"))?;
    let crc = r.u32().map_err(|_| bad(16, "short header"))?;
    if crc != crc32c::crc32c(&data[0..16]) {
        return Err(bad(16, "segment header checksum mismatch"));
    }
    if version == 0 || version > COMMITLOG_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: u32::from(version),
            supported: u32::from(COMMITLOG_FORMAT_VERSION),
        });
    }
    if seg_id != id {
        return Err(bad(
            8,
            &format!("segment header says id {seg_id} but the file name says {id}"),
        ));
    }
    Ok(())
}

enum RecordRead<'a> {
    Ok { payload: &'a [u8], next: usize },
    Torn,
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn read_record<'a>(path: &Path, data: &'a [u8], pos: usize) -> Result<RecordRead<'a>> {
    let rest = &data[pos..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Ok(RecordRead::Torn);
    }
    let mut r = Reader::new(rest);
    let (len, crc) = match (r.u32(), r.u32()) {
        (Ok(l), Ok(c)) => (l as usize, c),
        _ => return Ok(RecordRead::Torn),
    };
    let corrupt =
        |why: String| -> Result<RecordRead<'a>> { Err(Error::corruption(path, pos as u64, why)) };
    if len == 0 || len > MAX_RECORD_BYTES {
        if all_zero(rest) {
            return Ok(RecordRead::Torn);
        }
        return corrupt(format!(
            "record length {len} out of range 1..={MAX_RECORD_BYTES}"
        ));
    }
    let end = RECORD_HEADER_BYTES + len;
    if end > rest.len() {
        return Ok(RecordRead::Torn);
    }
    let payload = &rest[RECORD_HEADER_BYTES..end];
    if record_crc(payload) != crc {
        if end == rest.len() || all_zero(&rest[end..]) {
            return Ok(RecordRead::Torn);
        }
        return corrupt("record checksum mismatch with intact data after it".into());
    }
    Ok(RecordRead::Ok {
        payload,
        next: pos + end,
    })
}

/// Where an appended record ended: the segment it went to and the log position (total bytes
/// appended since open) after it, which group commit waits on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    pub segment_id: u64,
    pub end_pos: u64,
}

/// Commit-log counters.
#[derive(Debug, Default)]
pub(crate) struct CommitLogStats {
    pub bytes_written: AtomicU64,
    pub records_written: AtomicU64,
    pub syncs: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
}

/// The segment appends go to.
#[derive(Debug)]
struct Segment {
    id: u64,
    file: Arc<File>,
    path: PathBuf,
    len: u64,
}

#[derive(Debug)]
struct ActiveSegment {
    /// The segment appends go to. `None` from open until the first append creates one, so
    /// that opening on a full disk needs no space: a creation that fails then is that
    /// append's error.
    current: Option<Segment>,
    /// The id the next segment gets. Not reused after a failed creation, so a file a failed
    /// creation could not remove never collides with a later segment.
    next_id: u64,
    /// Total bytes appended since open (all segments).
    written_pos: u64,
    /// Older segments still on disk, waiting for their data to be flushed.
    sealed: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct SyncState {
    synced_pos: u64,
    syncing: bool,
}

/// The appending side of the commit log, with group commit.
#[derive(Debug)]
pub(crate) struct CommitLog {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    segment_bytes: u64,
    sync_mode: SyncMode,
    active: Mutex<ActiveSegment>,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    poison: Arc<Poison>,
    pub stats: CommitLogStats,
}

impl CommitLog {
    /// Opens the log for appending; `existing` are the replayed segments that stay until
    /// their data is flushed. Creates nothing: the first append creates segment `next_id`.
    pub fn open(
        dir: &Path,
        fs: Arc<dyn Fs>,
        segment_bytes: u64,
        sync_mode: SyncMode,
        existing: &[u64],
        next_id: u64,
        poison: Arc<Poison>,
    ) -> CommitLog {
        debug_assert!(existing.iter().all(|&id| id < next_id));
        CommitLog {
            dir: dir.to_path_buf(),
            fs,
            segment_bytes,
            sync_mode,
            active: Mutex::new(ActiveSegment {
                current: None,
                next_id,
                written_pos: 0,
                sealed: existing.iter().copied().collect(),
            }),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
            poison,
            stats: CommitLogStats::default(),
        }
    }

    /// Appends one record. On return the bytes have reached the kernel (a process crash
    /// keeps them); call [`CommitLog::sync_to`] for power-loss durability.
    #[cfg(test)]
    pub fn append(&self, payload: &[u8]) -> Result<Appended> {
        self.append_frame(&frame_payload(payload))
    }

    /// Appends one record made by [`encode_record`]. Creates the first segment, or the next
    /// one when the current one is full; if that creation fails (a full disk), this append
    /// fails and the next one tries again.
    pub fn append_frame(&self, frame: &[u8]) -> Result<Appended> {
        debug_assert!(
            frame.len() > RECORD_HEADER_BYTES
                && frame.len() <= RECORD_HEADER_BYTES + MAX_RECORD_BYTES
        );
        let mut guard = self.active.lock();
        self.poison.check()?;
        let a = &mut *guard;
        let needs_segment = a.current.as_ref().is_none_or(|s| {
            s.len > SEGMENT_HEADER_BYTES as u64 && s.len + frame.len() as u64 > self.segment_bytes
        });
        if needs_segment {
            self.rotate(a)?;
        }
        let Some(seg) = a.current.as_mut() else {
            unreachable!("rotate returns Ok only with a segment open");
        };
        if let Err(e) = (&*seg.file).write_all(frame) {
            // Cut off whatever part was written so the next record does not follow garbage
            // (which replay would call mid-log corruption). Shrinking a file needs no space,
            // so this works on a full disk too. If even that fails, the log's state is
            // unknown: stop accepting writes.
            let undo = seg.file.set_len(seg.len);
            if let Err(undo_err) = undo {
                self.poison.poison(format!(
                    "commit-log write to {} failed ({e}) and truncating the partial record failed ({undo_err})",
                    seg.path.display()
                ));
            }
            return Err(Error::io(&seg.path, e));
        }
        seg.len += frame.len() as u64;
        a.written_pos += frame.len() as u64;
        self.stats
            .bytes_written
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.stats.records_written.fetch_add(1, Ordering::Relaxed);
        Ok(Appended {
            segment_id: seg.id,
            end_pos: a.written_pos,
        })
    }

    /// Seals the current segment and starts a new one, unless it holds no records yet (or
    /// there is none). A failed creation (a full disk) leaves the current segment active:
    /// see [`Self::rotate`].
    pub fn rotate_now(&self) -> Result<()> {
        let mut a = self.active.lock();
        if a.current
            .as_ref()
            .is_some_and(|s| s.len > SEGMENT_HEADER_BYTES as u64)
        {
            self.rotate(&mut a)?;
        }
        Ok(())
    }

    /// Syncs the current segment (unless sync mode is `None`), creates the next one and
    /// makes it current, sealing the old one.
    ///
    /// A failed fsync of the current segment poisons the engine: acknowledged writes in it
    /// may be lost. A failed *creation* of the next segment does not, unless it was an fsync
    /// failing for another reason than a full disk: the current segment is synced, so nothing
    /// acknowledged is in doubt, and the new file is removed. The current segment then stays
    /// active (a segment's size is a target, not a format limit) and the next rotation tries
    /// again.
    fn rotate(&self, a: &mut ActiveSegment) -> Result<()> {
        if let Some(cur) = &a.current {
            if self.sync_mode != SyncMode::None {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.fs.sync_file(&cur.file, &cur.path) {
                    let msg = format!(
                        "fsync of commit-log segment {} failed: {e}",
                        cur.path.display()
                    );
                    self.poison.poison(msg.clone());
                    return Err(Error::Poisoned(msg));
                }
            }
            // Everything appended so far is synced (or sync mode is None).
            let mut s = self.sync.lock();
            s.synced_pos = s.synced_pos.max(a.written_pos);
        }
        let id = a.next_id;
        a.next_id += 1;
        let seg = match create_segment(&self.dir, &*self.fs, id, self.sync_mode, &self.stats) {
            Ok(seg) => seg,
            Err(f) => {
                if f.durability_failure {
                    self.poison.poison(format!(
                        "creating commit-log segment {id} failed: {}",
                        f.error
                    ));
                }
                return Err(f.error);
            }
        };
        if let Some(old) = a.current.replace(seg) {
            a.sealed.insert(old.id);
        }
        Ok(())
    }

    /// The log position after the last append.
    pub fn written_pos(&self) -> u64 {
        self.active.lock().written_pos
    }

    /// The log position up to which everything is fsynced.
    pub fn synced_pos(&self) -> u64 {
        self.sync.lock().synced_pos
    }

    /// Returns once everything up to `pos` is fsynced. Group commit: while one caller runs
    /// the fsync, others wait and are covered by it (or by the next one) — one fsync serves
    /// every writer that appended before it started.
    pub fn sync_to(&self, pos: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            self.poison.check()?;
            if s.synced_pos >= pos {
                return Ok(());
            }
            if s.syncing {
                self.sync_cv.wait(&mut s);
                continue;
            }
            s.syncing = true;
            drop(s);
            // Lock order: never hold `sync` while taking `active` (rotate takes them the
            // other way round).
            let (current, target) = {
                let a = self.active.lock();
                let current = a.current.as_ref().map(|c| (c.file.clone(), c.path.clone()));
                (current, a.written_pos)
            };
            // No segment yet: nothing has been appended since open.
            let r = match &current {
                Some((file, path)) => {
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                    self.fs.sync_file(file, path).map_err(|e| (path.clone(), e))
                }
                None => Ok(()),
            };
            s = self.sync.lock();
            s.syncing = false;
            match r {
                Ok(()) => s.synced_pos = s.synced_pos.max(target),
                Err((path, e)) => self.poison.poison(format!(
                    "fsync of commit-log segment {} failed: {e}",
                    path.display()
                )),
            }
            self.sync_cv.notify_all();
        }
    }

    /// Syncs everything appended so far.
    pub fn sync_all(&self) -> Result<()> {
        let pos = self.written_pos();
        self.sync_to(pos)
    }

    /// The segment new appends go to, or (before the first append) the id the first one
    /// will get: every segment below it is sealed.
    pub fn active_segment(&self) -> u64 {
        let a = self.active.lock();
        a.current.as_ref().map_or(a.next_id, |c| c.id)
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> u64 {
        let a = self.active.lock();
        a.sealed.len() as u64 + u64::from(a.current.is_some())
    }

    /// Deletes sealed segments with ids below `min_needed`: all their data is in SSTables.
    pub fn release_below(&self, min_needed: u64) {
        let mut a = self.active.lock();
        let doomed: Vec<u64> = a.sealed.range(..min_needed).copied().collect();
        for id in doomed {
            let path = segment_path(&self.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete flushed commit-log segment");
                    continue;
                }
            }
            a.sealed.remove(&id);
        }
    }
}

/// Why a segment could not be created.
struct CreateFailure {
    error: Error,
    /// An fsync of the new file or its directory failed for another reason than a full
    /// disk: the file system's state is unknown, which poisons the engine. Failures to create
    /// or write the file, and a full disk at any step, do not: nothing in it was acknowledged.
    durability_failure: bool,
}

/// Creates segment `id` with its header, durably (unless sync mode is `None`). On failure
/// the new file is removed again.
fn create_segment(
    dir: &Path,
    fs: &dyn Fs,
    id: u64,
    sync_mode: SyncMode,
    stats: &CommitLogStats,
) -> Result<Segment, CreateFailure> {
    let path = segment_path(dir, id);
    let not_durability = |error: Error| CreateFailure {
        error,
        durability_failure: false,
    };
    let mut file = fs
        .create_file(&path, OpenOptions::new().create_new(true).append(true))
        .map_err(|e| not_durability(Error::io(&path, e)))?;
    let synced = file
        .write_all(&segment_header(id))
        .map_err(|e| not_durability(Error::io(&path, e)))
        .and_then(|()| {
            if sync_mode == SyncMode::None {
                return Ok(());
            }
            // The new file's directory entry must be durable before any write in it is acked.
            let sync = |r: std::io::Result<()>, on: &Path| {
                r.map_err(|e| CreateFailure {
                    durability_failure: !is_disk_full(&e),
                    error: Error::io(on, e),
                })
            };
            sync(fs.sync_file(&file, &path), &path)?;
            sync(fs.sync_dir(dir), dir)?;
            stats.syncs.fetch_add(2, Ordering::Relaxed);
            Ok(())
        });
    if let Err(f) = synced {
        drop(file);
        // Unlinking needs no space. If it fails anyway, replay deletes a file too short for
        // its header, or replays a header-only one as empty; its id is never reused.
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a commit-log segment whose creation failed");
        }
        return Err(f);
    }
    stats
        .bytes_written
        .fetch_add(SEGMENT_HEADER_BYTES as u64, Ordering::Relaxed);
    stats.segments_created.fetch_add(1, Ordering::Relaxed);
    Ok(Segment {
        id,
        file: Arc::new(file),
        path,
        len: SEGMENT_HEADER_BYTES as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;

    fn cells() -> Vec<(CellKey, Cell)> {
        vec![
            (
                CellKey::new(Token(1), &b"a"[..]),
                Cell::value(&b"x"[..], Timestamp(5)),
            ),
            (
                CellKey::new(Token(-2), &b"b"[..]),
                Cell::tombstone(Timestamp(6)),
            ),
            (
                CellKey::new(Token(3), &b""[..]),
                Cell::expiring(&b"yy"[..], Timestamp(7), 99),
            ),
        ]
    }

    #[test]
    fn record_is_header_then_payload() {
        assert_eq!(
            encode_record(7, &cells()),
            frame_payload(&encode_batch(7, &cells()))
        );
    }

    #[test]
    fn batch_round_trips_and_rejects_garbage() {
        let enc = encode_batch(7, &cells());
        let (ks, dec) = decode_batch(&enc).unwrap();
        assert_eq!(ks, 7);
        assert_eq!(dec, cells());
        for cut in 0..enc.len() {
            assert!(decode_batch(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.clone();
        bad[0] = 9;
        assert!(decode_batch(&bad).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Replay of arbitrary bytes after a valid header never panics and never allocates
        /// beyond the input: it yields records, a torn tail, or a corruption error.
        #[test]
        fn replay_of_garbage_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            valid_prefix in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut data = segment_header(0).to_vec();
            if valid_prefix {
                let p = encode_batch(1, &cells());
                data.extend_from_slice(&(p.len() as u32).to_le_bytes());
                data.extend_from_slice(&record_crc(&p).to_le_bytes());
                data.extend_from_slice(&p);
            }
            data.extend_from_slice(&body);
            std::fs::write(segment_path(dir.path(), 0), &data).unwrap();
            let r = replay(dir.path(), &RealFs, |_, _, _, p| {
                let _ = decode_batch(p);
                Ok(())
            });
            if let Err(e) = r {
                proptest::prop_assert!(matches!(e, Error::Corruption { .. }), "{e}");
            }
            let _ = decode_batch(&body);
        }
    }

    #[test]
    fn append_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let poison = Arc::new(Poison::default());
        let log = CommitLog::open(
            dir.path(),
            Arc::new(RealFs),
            1 << 20,
            SyncMode::Batch,
            &[],
            0,
            poison,
        );
        let p1 = encode_batch(1, &cells());
        let a = log.append(&p1).unwrap();
        log.sync_to(a.end_pos).unwrap();
        log.append(&p1).unwrap();
        drop(log);
        // Tear the second record.
        let path = segment_path(dir.path(), 0);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let mut n = 0;
        let out = replay(dir.path(), &RealFs, |_, _, _, p| {
            assert_eq!(decode_batch(p).unwrap().1, cells());
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((n, out.torn_tails, out.next_segment_id), (1, 1, 1));
        let truncated = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            truncated,
            (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + p1.len()) as u64
        );
    }

    /// Open creates no segment (it may run on a full disk); the first append does. A failed
    /// creation at rotation leaves the current segment active, does not poison, and the next
    /// rotation retries under a new id.
    #[test]
    fn segments_are_created_lazily_and_a_failed_creation_keeps_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::FaultyFs::new();
        let poison = Arc::new(Poison::default());
        let log = CommitLog::open(
            dir.path(),
            fs.clone(),
            64 << 10,
            SyncMode::Batch,
            &[],
            7,
            poison.clone(),
        );
        assert_eq!(list_segments(dir.path()).unwrap(), Vec::<u64>::new());
        assert_eq!((log.active_segment(), log.segment_count()), (7, 0));
        log.sync_all().unwrap();
        let big = vec![0u8; 40 << 10];
        assert_eq!(log.append(&big).unwrap().segment_id, 7);
        fs.no_space("commitlog-", crate::fs::NoSpace::Write);
        let err = log.append(&big).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        assert!(!poison.is_poisoned());
        assert_eq!(log.active_segment(), 7);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
        log.rotate_now().unwrap_err();
        fs.clear_no_space();
        let a = log.append(&big).unwrap();
        assert_eq!(a.segment_id, 10, "ids 8 and 9 went to failed creations");
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7, 10]);
        log.sync_to(a.end_pos).unwrap();
        let mut n = 0;
        replay(dir.path(), &RealFs, |_, _, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
    }
}
