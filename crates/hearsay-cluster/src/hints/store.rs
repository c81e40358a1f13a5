//! The hint store: per-target segment files on the coordinator's disk.

use super::config::{HintConfig, HintConfigError, HintSyncPolicy, MAX_REMOVED_TARGETS_REMEMBERED};
use super::format::{
    Cursor, HeaderProblem, HintCellV1, HintRecordV1, MAX_HINT_RECORD_BYTES, RECORD_HEADER_BYTES,
    ReadOutcome, SEGMENT_HEADER_BYTES, check_segment_header, decode_cursor, encode_cursor,
    encode_record, read_record, segment_header,
};
use hearsay_storage::{Cell, CellKey, Fs, RealFs};
use hearsay_types::{Clock, NodeId, Token};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const SEGMENT_SUFFIX: &str = ".hint";
const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP_FILE: &str = "cursor.tmp";

/// Why a hint was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The target's or the store's byte cap would be exceeded.
    Full,
    /// Older than `max_hint_age_ms` when replay reached it.
    TooOld,
    /// The target was removed from the cluster.
    TargetRemoved,
    /// Larger than `MAX_HINT_RECORD_BYTES`.
    TooLarge,
    /// The disk refused the append.
    Io,
    /// A checksum (or decode) failure: the rest of that segment was dropped. Counted once
    /// per event, not per hint (how many hints the lost bytes held is unknowable).
    Corrupt,
}

impl DropReason {
    /// The `reason` label of `hints_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::TooOld => "too_old",
            DropReason::TargetRemoved => "target_removed",
            DropReason::TooLarge => "too_large",
            DropReason::Io => "io",
            DropReason::Corrupt => "corrupt",
        }
    }
}

/// The result of [`HintStore::store`]. Never an error: a hint that cannot be kept is
/// dropped, counted, and its tokens are marked for repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintOutcome {
    Stored { hint_id: u64 },
    Dropped(DropReason),
}

/// A hint read back for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub hint_id: u64,
    pub target: NodeId,
    pub keyspace: String,
    pub created_at_ms: u64,
    pub cells: Vec<(CellKey, Cell)>,
}

/// Ranges that lost hints, for repair to pick up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyRanges {
    /// `(target, token)` of every cell in a dropped hint, up to the configured bound.
    pub tokens: BTreeSet<(NodeId, Token)>,
    /// Targets that lost more than the bound could remember: repair all their ranges.
    pub whole_targets: BTreeSet<NodeId>,
}

/// One target's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetStats {
    pub pending_count: u64,
    pub pending_bytes: u64,
    pub bytes_on_disk: u64,
}

/// Counters since open (plus gauges), for the admin API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HintStats {
    pub stored_total: u64,
    pub delivered_total: u64,
    /// `hints_dropped_total{reason}`.
    pub dropped_total: BTreeMap<&'static str, u64>,
    /// Records found corrupt (each drops the rest of its segment) and the bytes dropped.
    pub corrupt_records_total: u64,
    pub corrupt_bytes_dropped_total: u64,
    /// Segments whose torn tail was truncated at open.
    pub torn_tails_truncated_total: u64,
    pub fsyncs_total: u64,
    /// fsyncs that failed (each seals the segment; in Batch mode the hint counts as dropped).
    pub fsync_failures_total: u64,
    pub bytes_on_disk: u64,
    pub targets: BTreeMap<NodeId, TargetStats>,
}

/// A failure of the store's own disk access (listing, reading, deleting). Appends never
/// return it: they drop the hint instead.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error("hint store I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Config(#[from] HintConfigError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HintError + '_ {
    move |source| HintError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Bytes of header + good records (the file is truncated to this at open).
    len: u64,
    count: u64,
}

#[derive(Debug, Default)]
struct Batch {
    /// Ids handed out by the last `replay_batch`.
    delivered: BTreeSet<u64>,
    /// Expired ids the last batch skipped (dropped when acknowledged past).
    skipped: BTreeSet<u64>,
}

#[derive(Debug)]
struct Target {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to, if open in this process. Segments found at open are
    /// never appended to again, so a torn tail can never end up in the middle of a segment.
    active: Option<(u64, Arc<File>)>,
    unsynced: bool,
    cursor: Cursor,
    batch: Batch,
}

impl Target {
    fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Where unread data starts in segment `seq`, and how many records precede it there.
    fn start_of(&self, seq: u64) -> (u64, u64) {
        if seq == self.cursor.seq {
            (
                self.cursor.offset.max(SEGMENT_HEADER_BYTES as u64),
                self.cursor.consumed,
            )
        } else {
            (SEGMENT_HEADER_BYTES as u64, 0)
        }
    }

    fn pending(&self) -> (u64, u64) {
        let mut count = 0;
        let mut bytes = 0;
        for (seq, s) in self.segments.range(self.cursor.seq..) {
            let (start, consumed) = self.start_of(*seq);
            count += s.count.saturating_sub(consumed);
            bytes += s.len.saturating_sub(start);
        }
        (count, bytes)
    }

    fn next_seq(&self) -> u64 {
        self.segments
            .keys()
            .next_back()
            .map_or(self.cursor.seq, |s| s + 1)
            .max(self.cursor.seq)
    }
}

#[derive(Debug)]
struct Inner {
    targets: BTreeMap<NodeId, Target>,
    next_id: u64,
    stats: HintStats,
    dirty: DirtyRanges,
    removed: BTreeSet<NodeId>,
    last_sync: Instant,
}

impl Inner {
    fn count_drop(&mut self, reason: DropReason, n: u64) {
        if n > 0 {
            *self.stats.dropped_total.entry(reason.label()).or_insert(0) += n;
        }
    }

    fn mark_dirty(&mut self, target: NodeId, tokens: impl IntoIterator<Item = Token>, max: usize) {
        if self.dirty.whole_targets.contains(&target) {
            return;
        }
        for t in tokens {
            if self.dirty.tokens.len() >= max && !self.dirty.tokens.contains(&(target, t)) {
                // Out of room: remember the whole target instead, and drop its entries to make
                // room for others (they are covered by the whole-target mark).
                self.dirty.whole_targets.insert(target);
                self.dirty.tokens.retain(|(n, _)| *n != target);
                return;
            }
            self.dirty.tokens.insert((target, t));
        }
    }
}

/// Hints for replicas that missed writes, kept on disk until delivered.
///
/// Layout: `<dir>/<target node id>/<seq as 16 hex digits>.hint` segments plus a `cursor` file
/// per target. See `format` for the bytes and `docs/hinted-handoff.md` for the contract.
/// Thread-safe; one lock guards everything (hints are off the hot path: they exist only while
/// a replica is failing).
#[derive(Debug)]
pub struct HintStore {
    dir: PathBuf,
    config: HintConfig,
    clock: Arc<dyn Clock>,
    /// The durability seam (fsync, rename), shared with the storage engine, so fault tests
    /// can make fsync fail.
    fs: Arc<dyn Fs>,
    inner: Mutex<Inner>,
}

impl HintStore {
    /// Opens (or creates) the store in `dir`. Scans every segment: torn tails are truncated
    /// (warned), corrupt records drop the rest of their segment (counted), and a cursor is
    /// reconciled with the segments that exist.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: HintConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<HintStore, HintError> {
        HintStore::open_with_fs(dir, config, clock, Arc::new(RealFs))
    }

    /// [`HintStore::open`] with a chosen durability seam (fault tests pass a `FaultyFs`).
    pub fn open_with_fs(
        dir: impl Into<PathBuf>,
        config: HintConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn Fs>,
    ) -> Result<HintStore, HintError> {
        config.validate()?;
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut inner = Inner {
            targets: BTreeMap::new(),
            next_id: 1,
            stats: HintStats::default(),
            dirty: DirtyRanges::default(),
            removed: BTreeSet::new(),
            last_sync: clock.monotonic(),
        };
        let mut max_id = 0u64;
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(node) = NodeId::parse(name).filter(|_| path.is_dir()) else {
                tracing::warn!(path = %path.display(), "ignoring unexpected entry in hint directory");
                continue;
            };
            if let Some(target) = open_target(node, &path, &mut inner.stats, &mut max_id)? {
                inner.targets.insert(node, target);
            }
        }
        inner.next_id = (max_id + 1).max(clock.wall_micros());
        Ok(HintStore {
            dir,
            config,
            clock,
            fs,
            inner: Mutex::new(inner),
        })
    }

    pub fn config(&self) -> &HintConfig {
        &self.config
    }

    /// Stores a hint of `cells` (a mutation of `keyspace`) for `target`, created at `now_ms`.
    /// Never fails the caller's write: a hint that cannot be kept is dropped, counted by
    /// reason, and its tokens are marked dirty for repair.
    pub fn store(
        &self,
        target: NodeId,
        keyspace: &str,
        cells: &[(CellKey, Cell)],
        now_ms: u64,
    ) -> HintOutcome {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let tokens = || cells.iter().map(|(k, _)| k.token);
        let max_dirty = self.config.max_dirty_entries;
        let refuse = |inner: &mut Inner, reason: DropReason| {
            inner.count_drop(reason, 1);
            if reason != DropReason::TargetRemoved {
                inner.mark_dirty(target, tokens(), max_dirty);
            }
            tracing::debug!(%target, reason = reason.label(), "hint dropped");
            HintOutcome::Dropped(reason)
        };
        if inner.removed.contains(&target) {
            return refuse(inner, DropReason::TargetRemoved);
        }
        if self.clock.wall_millis().saturating_sub(now_ms) > self.config.max_hint_age_ms {
            // Already past the max age (a write stuck for hours): replay would only drop it.
            return refuse(inner, DropReason::TooOld);
        }
        let hint_id = inner.next_id;
        let rec = HintRecordV1 {
            hint_id,
            target,
            keyspace: keyspace.to_string(),
            created_at_ms: now_ms,
            cells: cells
                .iter()
                .map(|(k, c)| HintCellV1::from_cell(k, c))
                .collect(),
        };
        let Some(bytes) = encode_record(&rec) else {
            return refuse(inner, DropReason::TooLarge);
        };
        let total: u64 = inner.targets.values().map(Target::disk_bytes).sum();
        let (target_bytes, needs_segment) = match inner.targets.get(&target) {
            Some(t) => (
                t.disk_bytes(),
                t.active
                    .as_ref()
                    .and_then(|(seq, _)| t.segments.get(seq))
                    .is_none_or(|s| s.len >= self.config.segment_bytes),
            ),
            None => (0, true),
        };
        let added = bytes.len() as u64
            + if needs_segment {
                SEGMENT_HEADER_BYTES as u64
            } else {
                0
            };
        if target_bytes + added > self.config.max_bytes_per_target
            || total + added > self.config.max_total_bytes
        {
            return refuse(inner, DropReason::Full);
        }
        if let Err(e) = self.append(inner, target, &bytes, needs_segment) {
            tracing::warn!(%target, error = %e, "hint append failed; hint dropped");
            return refuse(inner, DropReason::Io);
        }
        inner.next_id += 1;
        if self.config.sync != HintSyncPolicy::Batch {
            self.maybe_sync(inner);
            inner.stats.stored_total += 1;
            return HintOutcome::Stored { hint_id };
        }
        // Batch: fsync outside the lock, so other stores keep appending meanwhile and
        // concurrent fsyncs of one file share the kernel's work (a group commit in effect);
        // holding the lock would serialise every hint behind a disk flush.
        let Some((seq, file)) = inner
            .targets
            .get(&target)
            .and_then(|t| t.active.as_ref().map(|(seq, f)| (*seq, f.clone())))
        else {
            return refuse(inner, DropReason::Io);
        };
        let dir = self.dir.join(target.to_string());
        drop(guard);
        let synced = self.fs.sync_file(&file, &dir);
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        match synced {
            Ok(()) => {
                inner.stats.fsyncs_total += 1;
                inner.stats.stored_total += 1;
                HintOutcome::Stored { hint_id }
            }
            Err(e) => {
                // Batch promised durability and the fsync failed: do not let ANY count this
                // hint, and append nothing more behind bytes that may not be on disk. The
                // record may still be replayed later (harmless: it carries the original
                // timestamps).
                tracing::warn!(%target, error = %e, "hint fsync failed; hint dropped, segment sealed");
                inner.stats.fsync_failures_total += 1;
                if let Some(t) = inner.targets.get_mut(&target)
                    && t.active.as_ref().is_some_and(|(s, _)| *s == seq)
                {
                    t.active = None;
                }
                refuse(inner, DropReason::Io)
            }
        }
    }

    fn append(
        &self,
        inner: &mut Inner,
        target: NodeId,
        bytes: &[u8],
        new_segment: bool,
    ) -> io::Result<()> {
        let t = match inner.targets.entry(target) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let dir = self.dir.join(target.to_string());
                fs::create_dir_all(&dir)?;
                v.insert(Target {
                    dir,
                    segments: BTreeMap::new(),
                    active: None,
                    unsynced: false,
                    cursor: Cursor::default(),
                    batch: Batch::default(),
                })
            }
        };
        if new_segment {
            if let Some((_, f)) = t.active.take()
                && t.unsynced
                && self.config.sync != HintSyncPolicy::None
            {
                // Seal the old segment durably before moving on.
                self.fs.sync_file(&f, &t.dir)?;
                inner.stats.fsyncs_total += 1;
            }
            let seq = t.next_seq();
            let path = t.dir.join(format!("{seq:016x}{SEGMENT_SUFFIX}"));
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            f.write_all(&segment_header())?;
            if self.config.sync == HintSyncPolicy::Batch {
                self.fs.sync_file(&f, &path)?;
                self.fs.sync_dir(&t.dir)?;
            }
            t.segments.insert(
                seq,
                Segment {
                    path,
                    len: SEGMENT_HEADER_BYTES as u64,
                    count: 0,
                },
            );
            t.active = Some((seq, Arc::new(f)));
        }
        let Some((seq, f)) = t.active.as_mut() else {
            return Err(io::Error::other("no active hint segment"));
        };
        let Some(seg) = t.segments.get_mut(seq) else {
            return Err(io::Error::other("active hint segment missing"));
        };
        if let Err(e) = (&**f).write_all(bytes) {
            // Cut off whatever part of the record got written, so the segment stays readable;
            // if even that fails, stop appending to it (readers stop at the bad record).
            if f.set_len(seg.len).is_err() {
                t.active = None;
            }
            return Err(e);
        }
        seg.len += bytes.len() as u64;
        seg.count += 1;
        t.unsynced = true;
        Ok(())
    }

    /// The periodic policy's sync-on-store once the interval has passed (Batch syncs in
    /// `store` itself, outside the lock).
    fn maybe_sync(&self, inner: &mut Inner) {
        if let HintSyncPolicy::Periodic { interval_ms } = self.config.sync {
            let now = self.clock.monotonic();
            if now.saturating_duration_since(inner.last_sync).as_millis() as u64 >= interval_ms {
                sync_all(&*self.fs, inner);
                inner.last_sync = now;
            }
        }
    }

    /// fsyncs every segment with unsynced appends (the periodic policy's timer calls this).
    pub fn sync(&self) {
        let mut inner = self.inner.lock();
        sync_all(&*self.fs, &mut inner);
        inner.last_sync = self.clock.monotonic();
    }

    /// Undelivered hints for `target`: `(count, bytes)`.
    pub fn pending(&self, target: NodeId) -> (u64, u64) {
        self.inner
            .lock()
            .targets
            .get(&target)
            .map_or((0, 0), Target::pending)
    }

    /// Targets with undelivered hints, in `NodeId` order.
    pub fn targets_with_hints(&self) -> Vec<NodeId> {
        self.inner
            .lock()
            .targets
            .iter()
            .filter(|(_, t)| t.pending().0 > 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The oldest undelivered hints for `target`, up to about `max_bytes` of records (at least
    /// one hint if any is pending). Expired hints are not returned: those at the head are
    /// dropped at once (counted `too_old`, tokens marked dirty); any behind a live hint are
    /// dropped when [`HintStore::ack`] passes them. Calling again without an ack returns the
    /// same hints (a failed replay is simply retried).
    pub fn replay_batch(&self, target: NodeId, max_bytes: u64) -> Result<Vec<Hint>, HintError> {
        self.scan(target, max_bytes, true)
    }

    /// Drops the expired hints at the head of every target's queue (counted `too_old`,
    /// tokens marked dirty), so the disk is freed even for a target that never comes back.
    /// The driver calls this from a slow timer (every minute is plenty).
    pub fn purge_expired(&self) -> Result<(), HintError> {
        let targets: Vec<NodeId> = self.inner.lock().targets.keys().copied().collect();
        for t in targets {
            self.scan(t, 0, false)?;
        }
        Ok(())
    }

    /// Reads `target`'s queue from the cursor: drops the expired head; with `collect`, also
    /// gathers up to `max_bytes` of live hints as the new replay batch; without it, stops at
    /// the first live hint and leaves the batch alone.
    fn scan(&self, target: NodeId, max_bytes: u64, collect: bool) -> Result<Vec<Hint>, HintError> {
        let now_ms = self.clock.wall_millis();
        let max_age = self.config.max_hint_age_ms;
        let max_dirty = self.config.max_dirty_entries;
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(t) = inner.targets.get_mut(&target) else {
            return Ok(Vec::new());
        };
        if collect {
            t.batch = Batch::default();
        }
        let mut out = Vec::new();
        let mut bytes_out = 0u64;
        let mut head = true;
        let mut head_dropped = 0u64;
        let mut dirty: Vec<Token> = Vec::new();
        let seqs: Vec<u64> = t.segments.range(t.cursor.seq..).map(|(s, _)| *s).collect();
        'segments: for seq in seqs {
            let (start, mut consumed) = t.start_of(seq);
            let Some(seg) = t.segments.get(&seq) else {
                continue;
            };
            let mut reader = SegmentReader::open(&seg.path, seg.len)?;
            let mut off = start as usize;
            loop {
                match reader.record_at(off as u64)? {
                    ReadOutcome::End => break,
                    ReadOutcome::Torn | ReadOutcome::Corrupt => {
                        // The file changed under us since open: drop the rest of the segment.
                        let lost = seg.len.saturating_sub(off as u64);
                        let path = seg.path.clone();
                        inner.stats.corrupt_records_total += 1;
                        inner.stats.corrupt_bytes_dropped_total += lost;
                        *inner
                            .stats
                            .dropped_total
                            .entry(DropReason::Corrupt.label())
                            .or_insert(0) += 1;
                        tracing::warn!(path = %path.display(), offset = off, "corrupt hint record; dropping rest of segment");
                        if let Some(seg) = t.segments.get_mut(&seq) {
                            seg.len = off as u64;
                            seg.count = consumed;
                        }
                        if t.active.as_ref().is_some_and(|(s, _)| *s == seq) {
                            t.active = None;
                        }
                        let _ = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(off as u64));
                        break;
                    }
                    ReadOutcome::Record(rec, len) => {
                        let expired = now_ms.saturating_sub(rec.created_at_ms) > max_age;
                        if expired {
                            dirty.extend(rec.cells.iter().map(|c| Token(c.token)));
                            if head {
                                t.cursor = Cursor {
                                    seq,
                                    offset: (off + len) as u64,
                                    consumed: consumed + 1,
                                    last_id: rec.hint_id,
                                };
                                head_dropped += 1;
                            } else {
                                t.batch.skipped.insert(rec.hint_id);
                            }
                        } else {
                            if !collect || (!out.is_empty() && bytes_out + len as u64 > max_bytes) {
                                break 'segments;
                            }
                            head = false;
                            bytes_out += len as u64;
                            t.batch.delivered.insert(rec.hint_id);
                            out.push(Hint {
                                hint_id: rec.hint_id,
                                target: rec.target,
                                keyspace: rec.keyspace,
                                created_at_ms: rec.created_at_ms,
                                cells: rec.cells.into_iter().map(HintCellV1::into_cell).collect(),
                            });
                        }
                        off += len;
                        consumed += 1;
                    }
                }
            }
        }
        inner.count_drop(DropReason::TooOld, head_dropped);
        inner.mark_dirty(target, dirty, max_dirty);
        if head_dropped > 0 {
            self.settle(inner, target)?;
        }
        Ok(out)
    }

    /// Marks every hint for `target` with id `<= up_to_hint_id` delivered: the cursor moves
    /// past them (persisted, checksummed), and segments wholly behind it are deleted. Hints
    /// from the last batch count as delivered; expired ones it skipped count as dropped.
    pub fn ack(&self, target: NodeId, up_to_hint_id: u64) -> Result<(), HintError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(t) = inner.targets.get_mut(&target) else {
            return Ok(());
        };
        let mut delivered = 0u64;
        let mut too_old = 0u64;
        let seqs: Vec<u64> = t.segments.range(t.cursor.seq..).map(|(s, _)| *s).collect();
        'segments: for seq in seqs {
            let (start, consumed) = t.start_of(seq);
            let Some(seg) = t.segments.get(&seq) else {
                continue;
            };
            let mut reader = SegmentReader::open(&seg.path, seg.len)?;
            let mut off = start as usize;
            let mut consumed = consumed;
            t.cursor.seq = seq;
            t.cursor.offset = off as u64;
            t.cursor.consumed = consumed;
            loop {
                match reader.record_at(off as u64)? {
                    ReadOutcome::Record(rec, len) if rec.hint_id <= up_to_hint_id => {
                        if t.batch.skipped.remove(&rec.hint_id) {
                            too_old += 1;
                        } else {
                            t.batch.delivered.remove(&rec.hint_id);
                            delivered += 1;
                        }
                        off += len;
                        consumed += 1;
                        t.cursor = Cursor {
                            seq,
                            offset: off as u64,
                            consumed,
                            last_id: rec.hint_id,
                        };
                    }
                    ReadOutcome::Record(..) => break 'segments,
                    // End of segment (or a bad tail, which replay will count): go on.
                    _ => break,
                }
            }
            if (off as u64) < seg.len {
                break;
            }
        }
        inner.stats.delivered_total += delivered;
        inner.count_drop(DropReason::TooOld, too_old);
        self.settle(inner, target)
    }

    /// Persists `target`'s cursor and deletes segments wholly behind it; removes the target's
    /// directory when nothing is left.
    fn settle(&self, inner: &mut Inner, target: NodeId) -> Result<(), HintError> {
        let Some(t) = inner.targets.get_mut(&target) else {
            return Ok(());
        };
        let done: Vec<u64> = t
            .segments
            .iter()
            .filter(|(seq, s)| {
                **seq < t.cursor.seq || (**seq == t.cursor.seq && t.cursor.offset >= s.len)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            if t.active.as_ref().is_some_and(|(s, _)| *s == seq) {
                t.active = None;
            }
            if let Some(s) = t.segments.remove(&seq) {
                match fs::remove_file(&s.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&s.path)(e)),
                }
            }
            if t.cursor.seq == seq {
                t.cursor.seq = seq + 1;
                t.cursor.offset = 0;
                t.cursor.consumed = 0;
            }
        }
        if t.segments.is_empty() {
            let dir = t.dir.clone();
            inner.targets.remove(&target);
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
            return Ok(());
        }
        write_cursor(
            &*self.fs,
            &t.dir,
            &t.cursor,
            self.config.sync == HintSyncPolicy::Batch,
        )
    }

    /// Deletes every hint for `target` (the node was removed) and refuses later ones.
    pub fn delete_target(&self, target: NodeId) -> Result<(), HintError> {
        let mut inner = self.inner.lock();
        if inner.removed.len() < MAX_REMOVED_TARGETS_REMEMBERED {
            inner.removed.insert(target);
        }
        let Some(t) = inner.targets.remove(&target) else {
            return Ok(());
        };
        let (count, _) = t.pending();
        inner.count_drop(DropReason::TargetRemoved, count);
        match fs::remove_dir_all(&t.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&t.dir)(e)),
        }
    }

    /// Ranges that lost hints (dropped or expired), for repair.
    pub fn dirty_ranges(&self) -> DirtyRanges {
        self.inner.lock().dirty.clone()
    }

    /// Takes the dirty ranges (repair scheduled them), leaving the set empty.
    pub fn take_dirty_ranges(&self) -> DirtyRanges {
        std::mem::take(&mut self.inner.lock().dirty)
    }

    /// Undelivered bytes per target with hints, the input `HintScheduler::poll` wants.
    pub fn pending_bytes_by_target(&self) -> BTreeMap<NodeId, u64> {
        self.inner
            .lock()
            .targets
            .iter()
            .map(|(n, t)| (*n, t.pending().1))
            .filter(|(_, b)| *b > 0)
            .collect()
    }

    /// A snapshot of the counters and per-target figures.
    pub fn stats(&self) -> HintStats {
        let inner = self.inner.lock();
        let mut s = inner.stats.clone();
        s.targets = inner
            .targets
            .iter()
            .map(|(n, t)| {
                let (pending_count, pending_bytes) = t.pending();
                (
                    *n,
                    TargetStats {
                        pending_count,
                        pending_bytes,
                        bytes_on_disk: t.disk_bytes(),
                    },
                )
            })
            .collect();
        s.bytes_on_disk = s.targets.values().map(|t| t.bytes_on_disk).sum();
        s
    }
}

/// fsyncs `t`'s active segment if it has unsynced appends; false if the fsync failed.
fn sync_target(fs: &dyn Fs, t: &mut Target, stats: &mut HintStats) -> bool {
    if !t.unsynced {
        return true;
    }
    if let Some((_, f)) = &t.active {
        match fs.sync_file(f, &t.dir) {
            Ok(()) => {
                stats.fsyncs_total += 1;
                t.unsynced = false;
                true
            }
            // Hints are best-effort: an fsync failure is logged and the segment is closed so
            // no more hints are appended behind bytes that may not be on disk.
            Err(e) => {
                tracing::warn!(dir = %t.dir.display(), error = %e, "hint fsync failed; sealing segment");
                stats.fsync_failures_total += 1;
                t.active = None;
                t.unsynced = false;
                false
            }
        }
    } else {
        true
    }
}

fn sync_all(fs: &dyn Fs, inner: &mut Inner) {
    for t in inner.targets.values_mut() {
        sync_target(fs, t, &mut inner.stats);
    }
}

/// How much of a segment a reader loads at a time: a replay batch's worth, so replaying
/// 256 KiB from an 8 MiB segment reads about 256 KiB, not the whole file.
const READ_WINDOW_BYTES: usize = 256 * 1024;

/// Reads a segment's records through a moving window. Never reads past `len` (the good
/// data), and never more than one record (at most `MAX_HINT_RECORD_BYTES`) beyond a window.
struct SegmentReader {
    file: File,
    path: PathBuf,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl SegmentReader {
    fn open(path: &Path, len: u64) -> Result<SegmentReader, HintError> {
        Ok(SegmentReader {
            file: File::open(path).map_err(io_err(path))?,
            path: path.to_path_buf(),
            len,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// The bytes from `off` on, holding at least `need` of them unless the data ends first.
    fn window(&mut self, off: u64, need: usize) -> Result<&[u8], HintError> {
        let want_end = off.saturating_add(need as u64).min(self.len);
        let have_end = self.buf_start + self.buf.len() as u64;
        if off < self.buf_start || want_end > have_end {
            let n = self
                .len
                .saturating_sub(off)
                .min(need.max(READ_WINDOW_BYTES) as u64);
            self.buf.clear();
            let path = &self.path;
            self.file.seek(SeekFrom::Start(off)).map_err(io_err(path))?;
            // A file shorter than `len` (changed under us) just yields fewer bytes: the
            // record parser then reports it torn.
            (&mut self.file)
                .take(n)
                .read_to_end(&mut self.buf)
                .map_err(io_err(path))?;
            self.buf_start = off;
        }
        let from = (off - self.buf_start) as usize;
        Ok(self.buf.get(from..).unwrap_or(&[]))
    }

    fn record_at(&mut self, off: u64) -> Result<ReadOutcome, HintError> {
        let head = self.window(off, RECORD_HEADER_BYTES)?;
        if head.len() < RECORD_HEADER_BYTES {
            return Ok(read_record(head));
        }
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(&head[1..5]);
        let body_len = u32::from_le_bytes(len4) as usize;
        if body_len > MAX_HINT_RECORD_BYTES {
            return Ok(ReadOutcome::Corrupt);
        }
        Ok(read_record(
            self.window(off, RECORD_HEADER_BYTES + body_len)?,
        ))
    }
}

fn write_cursor(fs: &dyn Fs, dir: &Path, c: &Cursor, sync: bool) -> Result<(), HintError> {
    let tmp = dir.join(CURSOR_TMP_FILE);
    let path = dir.join(CURSOR_FILE);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode_cursor(c))?;
        if sync {
            fs.sync_file(&f, &tmp)?;
        }
        fs.rename(&tmp, &path)?;
        if sync {
            fs.sync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(io_err(&path))
}

/// Loads one target's directory: scans and repairs its segments, reconciles its cursor.
fn open_target(
    node: NodeId,
    dir: &Path,
    stats: &mut HintStats,
    max_id: &mut u64,
) -> Result<Option<Target>, HintError> {
    let mut cursor = match fs::read(dir.join(CURSOR_FILE)) {
        Ok(bytes) => decode_cursor(&bytes).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "hint cursor unreadable; replaying this target from the start");
            Cursor::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Cursor::default(),
        Err(e) => return Err(io_err(dir)(e)),
    };
    *max_id = (*max_id).max(cursor.last_id);
    let mut seg_paths: Vec<(u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = e.map_err(io_err(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name == CURSOR_TMP_FILE {
            let _ = fs::remove_file(&path);
            continue;
        }
        let seq = name
            .strip_suffix(SEGMENT_SUFFIX)
            .filter(|s| s.len() == 16)
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        match seq {
            Some(seq) => seg_paths.push((seq, path)),
            None if name == CURSOR_FILE => {}
            None => {
                tracing::warn!(path = %path.display(), "ignoring unexpected file in hint directory")
            }
        }
    }
    seg_paths.sort();
    let last_seq = seg_paths.last().map(|(s, _)| *s);
    let mut segments = BTreeMap::new();
    for (seq, path) in seg_paths {
        if seq < cursor.seq {
            // Delivered before a crash that came between the cursor write and the delete.
            let _ = fs::remove_file(&path);
            continue;
        }
        let data = fs::read(&path).map_err(io_err(&path))?;
        match check_segment_header(&data) {
            Ok(()) => {}
            Err(problem) => {
                if problem == HeaderProblem::Invalid || Some(seq) != last_seq {
                    stats.corrupt_records_total += 1;
                    stats.corrupt_bytes_dropped_total += data.len() as u64;
                    *stats
                        .dropped_total
                        .entry(DropReason::Corrupt.label())
                        .or_insert(0) += 1;
                    tracing::warn!(path = %path.display(), "hint segment header invalid; dropping segment");
                } else {
                    stats.torn_tails_truncated_total += 1;
                    tracing::warn!(path = %path.display(), "hint segment torn at creation; removing");
                }
                let _ = fs::remove_file(&path);
                continue;
            }
        }
        let mut off = SEGMENT_HEADER_BYTES;
        let mut count = 0u64;
        while let Some(rest) = data.get(off..) {
            match read_record(rest) {
                ReadOutcome::End => break,
                ReadOutcome::Record(rec, len) if rec.target == node => {
                    *max_id = (*max_id).max(rec.hint_id);
                    off += len;
                    count += 1;
                }
                ReadOutcome::Torn if Some(seq) == last_seq => {
                    stats.torn_tails_truncated_total += 1;
                    tracing::warn!(path = %path.display(), offset = off, "truncating torn tail of hint segment");
                    break;
                }
                _ => {
                    stats.corrupt_records_total += 1;
                    stats.corrupt_bytes_dropped_total += (data.len() - off) as u64;
                    *stats
                        .dropped_total
                        .entry(DropReason::Corrupt.label())
                        .or_insert(0) += 1;
                    tracing::warn!(path = %path.display(), offset = off, "corrupt hint record; dropping rest of segment");
                    break;
                }
            }
        }
        if off < data.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(off as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        if seq == cursor.seq && (cursor.offset > off as u64 || cursor.consumed > count) {
            // The cursor points past what survived: everything there counts as consumed.
            cursor.offset = off as u64;
            cursor.consumed = count;
        }
        segments.insert(
            seq,
            Segment {
                path,
                len: off as u64,
                count,
            },
        );
    }
    let t = Target {
        dir: dir.to_path_buf(),
        segments,
        active: None,
        unsynced: false,
        cursor,
        batch: Batch::default(),
    };
    if t.pending().0 == 0 {
        // Nothing left to deliver (all delivered, or all lost): clear the directory out.
        fs::remove_dir_all(dir).map_err(io_err(dir))?;
        return Ok(None);
    }
    Ok(Some(t))
}
