//! The memtable: the newest writes of one keyspace until they are flushed to an SSTable.
//!
//! Two structures, each shaped for one kind of access:
//! - **A sharded hash map from key to its winning cell** (by the conflict rule over every
//!   version written so far). Writes and point reads are one hash probe under a shard lock,
//!   where a sorted skiplist of a few hundred thousand entries costs a chain of ~20 cache
//!   misses per insert and per lookup (it was a quarter of the write path and of RESP GET).
//!   Because the map keeps only the winner, a key overwritten N times costs one probe, not
//!   N versions walked.
//! - **Sorted runs, built lazily for scans and flush.** Each key changed since the last
//!   freeze is listed once in `pending`. A scan (or flush) *freezes*: it sorts the pending
//!   keys with their current winners into a new run, immutable from then on, and iterates
//!   the runs it saw, merged (a key in a newer run supersedes the older runs: a newer run
//!   took the winner over every version written before it). Runs of similar size are merged
//!   (newer wins) so a memtable never holds more than about log2(entries) runs.
//!
//! Consistency: writers insert a whole batch under the `frozen` lock, and a freeze takes the
//! same lock, so a scan sees every batch entirely or not at all (the snapshot is the moment
//! of its freeze). A run never changes after it is built, so an iterator owns an `Arc` of the
//! runs it saw and later writes cannot reach it. Point reads see each cell as soon as it is
//! inserted (as before: a point read is of one key).

use crate::cell::{Cell, CellKey};
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Approximate per-write bookkeeping overhead counted in the memtable size on top of key and
/// value bytes, so the flush threshold tracks real memory: a hash-map slot (key and cell
/// handles, ~104 bytes, at a load factor between 7/16 and 7/8), the pending-key handle (40
/// bytes) and allocator headers of the shared key and value. Overwrites of a key already
/// present are charged again though they replace the old slot, which errs on the safe side.
pub const MEMTABLE_ENTRY_OVERHEAD_BYTES: u64 = 160;
/// Keys and values up to this size are copied into the memtable's arena chunks; larger ones
/// keep the caller's buffer (one more copy of a big value would cost more than its malloc).
const ARENA_COPY_MAX_BYTES: usize = 4 << 10;
/// Size of one arena chunk. Small cells are copied into chunks so a write costs a memcpy and
/// a reference count instead of two allocations, and a flushed memtable frees a few hundred
/// chunks instead of a million small buffers. A chunk lives until the last cell sliced from
/// it is dropped (a reader may hold one a little longer than the memtable).
const ARENA_CHUNK_BYTES: usize = 1 << 20;
/// Shards of the key map: writers and readers of different shards never meet, and a shard
/// that grows rehashes only its own share (a 16th) of the keys at once.
const SHARDS: usize = 16;

/// Hashes a [`CellKey`] for the shard maps: xxh3 over the key bytes, seeded by what came
/// before (the token). SipHash would cost more than the rest of a probe; xxh3 still spreads
/// keys whose tokens collide (tokens are caller-chosen hashes, not a secret).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        // Golden-ratio multiply then fold the high bits down: the table uses the low bits.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type KeyMap = HashMap<CellKey, Slot, BuildHasherDefault<KeyHasher>>;

/// The winning cell of a key, and whether the key is listed in `pending` (changed since the
/// last freeze).
#[derive(Debug)]
struct Slot {
    cell: Cell,
    pending: bool,
}

/// Cells sorted by key, one per key.
type Run = Vec<(CellKey, Cell)>;

#[derive(Debug, Default)]
struct Frozen {
    /// Keys whose winner changed since the last freeze, each once.
    pending: Vec<CellKey>,
    /// Oldest first.
    runs: Arc<Vec<Arc<Run>>>,
    /// The chunk small keys and values are copied into (see [`ARENA_CHUNK_BYTES`]).
    arena: BytesMut,
}

impl Frozen {
    fn copy_in(&mut self, data: &Bytes) -> Bytes {
        if data.len() > ARENA_COPY_MAX_BYTES {
            return data.clone();
        }
        if self.arena.capacity() - self.arena.len() < data.len() {
            self.arena = BytesMut::with_capacity(ARENA_CHUNK_BYTES);
        }
        self.arena.extend_from_slice(data);
        self.arena.split().freeze()
    }

    fn copy_cell(&mut self, cell: &Cell) -> Cell {
        Cell {
            value: cell.value.as_ref().map(|v| self.copy_in(v)),
            timestamp: cell.timestamp,
            expires_at_ms: cell.expires_at_ms,
        }
    }
}

/// One memtable.
#[derive(Debug)]
pub struct Memtable {
    /// Unique within the process, for finding it again after version changes.
    pub id: u64,
    shards: Box<[RwLock<KeyMap>]>,
    frozen: Mutex<Frozen>,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Oldest commit-log segment holding data of this memtable; `u64::MAX` while empty.
    first_segment: AtomicU64,
    min_timestamp: AtomicU64,
    max_timestamp: AtomicU64,
}

fn shard_of(key: &CellKey) -> usize {
    // Tokens are hashes in production but small integers in tests: mix before taking bits.
    let h = (key.token.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - SHARDS.trailing_zeros())) as usize
}

const _: () = assert!(SHARDS.is_power_of_two() && SHARDS > 1);

/// Merges two runs; on equal keys the newer run's cell is kept (it was taken as the winner
/// over every version written before it, the older run's included).
fn merge_runs(older: &Run, newer: &Run) -> Run {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        match older[i].0.cmp(&newer[j].0) {
            CmpOrdering::Less => {
                out.push(older[i].clone());
                i += 1;
            }
            CmpOrdering::Greater => {
                out.push(newer[j].clone());
                j += 1;
            }
            CmpOrdering::Equal => {
                out.push(newer[j].clone());
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

impl Memtable {
    pub fn new(id: u64) -> Memtable {
        Memtable {
            id,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(KeyMap::default()))
                .collect(),
            frozen: Mutex::new(Frozen::default()),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            first_segment: AtomicU64::new(u64::MAX),
            min_timestamp: AtomicU64::new(u64::MAX),
            max_timestamp: AtomicU64::new(0),
        }
    }

    /// Inserts one cell (a batch of one).
    pub fn insert(&self, key: CellKey, cell: Cell, segment_id: u64) {
        self.insert_batch(std::slice::from_ref(&(key, cell)), segment_id);
    }

    /// Inserts a batch as one unit: a scan sees all of it or none of it.
    pub fn insert_batch(&self, batch: &[(CellKey, Cell)], segment_id: u64) {
        if batch.is_empty() {
            return;
        }
        let mut frozen = self.frozen.lock();
        let mut size = 0u64;
        let (mut min_ts, mut max_ts) = (u64::MAX, 0u64);
        for (key, cell) in batch {
            size += key.key.len() as u64 + cell.value_len() as u64 + MEMTABLE_ENTRY_OVERHEAD_BYTES;
            min_ts = min_ts.min(cell.timestamp.0);
            max_ts = max_ts.max(cell.timestamp.0);
            let mut shard = self.shards[shard_of(key)].write();
            match shard.get_mut(key) {
                Some(slot) => {
                    // Losing to what is stored changes nothing a reader or scan could see.
                    if cell.reconcile_cmp(&slot.cell) == CmpOrdering::Greater {
                        slot.cell = frozen.copy_cell(cell);
                        if !std::mem::replace(&mut slot.pending, true) {
                            let stored = shard.get_key_value(key).map(|(k, _)| k.clone());
                            drop(shard);
                            frozen.pending.extend(stored);
                        }
                    }
                }
                None => {
                    let stored = CellKey {
                        token: key.token,
                        key: frozen.copy_in(&key.key),
                    };
                    let cell = frozen.copy_cell(cell);
                    shard.insert(
                        stored.clone(),
                        Slot {
                            cell,
                            pending: true,
                        },
                    );
                    drop(shard);
                    frozen.pending.push(stored);
                }
            }
        }
        self.first_segment.fetch_min(segment_id, Ordering::AcqRel);
        self.min_timestamp.fetch_min(min_ts, Ordering::AcqRel);
        self.max_timestamp.fetch_max(max_ts, Ordering::AcqRel);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        self.entries.fetch_add(batch.len() as u64, Ordering::AcqRel);
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// Cells written (not distinct keys): an upper bound on the keys a flush writes.
    pub fn entry_count(&self) -> u64 {
        self.entries.load(Ordering::Acquire)
    }

    /// Oldest commit-log segment this memtable needs kept, if it holds anything.
    pub fn first_segment(&self) -> Option<u64> {
        match self.first_segment.load(Ordering::Acquire) {
            u64::MAX => None,
            s => Some(s),
        }
    }

    /// Largest timestamp held (0 when empty).
    pub fn max_timestamp(&self) -> u64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Smallest timestamp held (`u64::MAX` when empty).
    pub fn min_timestamp(&self) -> u64 {
        self.min_timestamp.load(Ordering::Acquire)
    }

    /// The winning version of `key` among all written.
    pub fn get(&self, key: &CellKey) -> Option<Cell> {
        self.shards[shard_of(key)]
            .read()
            .get(key)
            .map(|s| s.cell.clone())
    }

    /// Sorts the keys changed since the last freeze into a new run and returns every run,
    /// oldest first: the memtable's content as of now, immutable from here on.
    fn freeze(&self) -> Arc<Vec<Arc<Run>>> {
        let mut frozen = self.frozen.lock();
        if frozen.pending.is_empty() {
            return frozen.runs.clone();
        }
        let keys = std::mem::take(&mut frozen.pending);
        let mut run: Run = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shards[shard_of(&key)].write();
            // Every pending key has a slot (slots are never removed); the check only keeps a
            // broken invariant from becoming a panic.
            if let Some(slot) = shard.get_mut(&key) {
                slot.pending = false;
                let cell = slot.cell.clone();
                drop(shard);
                run.push((key, cell));
            }
        }
        run.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        debug_assert!(
            run.windows(2).all(|w| w[0].0 < w[1].0),
            "pending keys repeat"
        );
        let mut runs: Vec<Arc<Run>> = frozen.runs.iter().cloned().collect();
        runs.push(Arc::new(run));
        // Keep run sizes decreasing by more than half from oldest to newest, which bounds
        // their number by log2(keys) and the merging work per key by the same.
        while runs.len() >= 2 && runs[runs.len() - 2].len() <= 2 * runs[runs.len() - 1].len() {
            let (Some(newer), Some(older)) = (runs.pop(), runs.pop()) else {
                break;
            };
            runs.push(Arc::new(merge_runs(&older, &newer)));
        }
        frozen.runs = Arc::new(runs);
        frozen.runs.clone()
    }
}

/// An owning iterator over a memtable range as of its creation (see the module docs): one
/// winning cell per key, ascending. It holds the runs it saw, so it can be sent between
/// threads and outlive any lock; later writes never reach it.
#[derive(Debug)]
pub struct MemtableIter {
    runs: Arc<Vec<Arc<Run>>>,
    /// Next position in each run.
    pos: Vec<usize>,
    upper: Bound<CellKey>,
}

impl MemtableIter {
    /// Freezes `mem` now and iterates `(lower, upper)` of what it holds.
    pub fn new(mem: Arc<Memtable>, lower: Bound<CellKey>, upper: Bound<CellKey>) -> MemtableIter {
        let runs = mem.freeze();
        let pos = runs
            .iter()
            .map(|r| match &lower {
                Bound::Included(k) => r.partition_point(|(rk, _)| rk < k),
                Bound::Excluded(k) => r.partition_point(|(rk, _)| rk <= k),
                Bound::Unbounded => 0,
            })
            .collect();
        MemtableIter { runs, pos, upper }
    }
}

impl Iterator for MemtableIter {
    type Item = (CellKey, Cell);
    fn next(&mut self) -> Option<(CellKey, Cell)> {
        // The smallest current key; among equal keys the newest run's (highest index) wins.
        let mut best: Option<usize> = None;
        for (i, run) in self.runs.iter().enumerate() {
            let Some((k, _)) = run.get(self.pos[i]) else {
                continue;
            };
            match best {
                Some(b) if self.runs[b][self.pos[b]].0 < *k => {}
                _ => best = Some(i),
            }
        }
        let b = best?;
        let (key, cell) = self.runs[b][self.pos[b]].clone();
        let beyond = match &self.upper {
            Bound::Included(u) => key > *u,
            Bound::Excluded(u) => key >= *u,
            Bound::Unbounded => false,
        };
        if beyond {
            for (i, run) in self.runs.iter().enumerate() {
                self.pos[i] = run.len();
            }
            return None;
        }
        for (i, run) in self.runs.iter().enumerate() {
            if run.get(self.pos[i]).is_some_and(|(k, _)| *k == key) {
                self.pos[i] += 1;
            }
        }
        Some((key, cell))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_types::{Timestamp, Token};

    fn k(t: i64, s: &str) -> CellKey {
        CellKey::new(Token(t), s.as_bytes().to_vec())
    }

    fn all(m: &Arc<Memtable>) -> Vec<(CellKey, Cell)> {
        MemtableIter::new(m.clone(), Bound::Unbounded, Bound::Unbounded).collect()
    }

    #[test]
    fn versions_reconcile_and_iterators_are_snapshots() {
        let m = Arc::new(Memtable::new(1));
        m.insert(k(1, "a"), Cell::value("new", Timestamp(10)), 0);
        // Older timestamp written later: loses by the conflict rule.
        m.insert(k(1, "a"), Cell::value("old", Timestamp(5)), 0);
        m.insert(k(0, "z"), Cell::tombstone(Timestamp(3)), 0);
        let snap = MemtableIter::new(m.clone(), Bound::Unbounded, Bound::Unbounded);
        m.insert(k(2, "b"), Cell::value("b", Timestamp(4)), 0);
        // A tie on timestamp: the tombstone wins.
        m.insert(k(1, "a"), Cell::tombstone(Timestamp(10)), 0);
        assert_eq!(m.get(&k(1, "a")), Some(Cell::tombstone(Timestamp(10))));
        assert_eq!(m.get(&k(5, "q")), None);
        let snap: Vec<_> = snap.collect();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[1].1.value.as_deref(), Some(&b"new"[..]));
        let now = all(&m);
        let keys: Vec<_> = now.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![k(0, "z"), k(1, "a"), k(2, "b")]);
        assert!(now[1].1.is_tombstone());
        let bounded: Vec<_> = MemtableIter::new(
            m.clone(),
            Bound::Excluded(k(0, "z")),
            Bound::Excluded(k(2, "b")),
        )
        .collect();
        assert_eq!(bounded.len(), 1);
        assert_eq!(m.first_segment(), Some(0));
        assert_eq!(m.max_timestamp(), 10);
        assert_eq!(m.min_timestamp(), 3);
        assert_eq!(m.entry_count(), 5);
    }

    #[test]
    fn many_freezes_keep_few_runs_and_the_newest_winner() {
        let m = Arc::new(Memtable::new(1));
        let mut model = std::collections::BTreeMap::new();
        for i in 0..2000u64 {
            let key = k((i * 7919 % 301) as i64, "x");
            let cell = Cell::value(format!("{i}"), Timestamp(i + 1));
            m.insert(key.clone(), cell.clone(), 3);
            model.insert(key, cell);
            // A scan after every few writes: many small runs, merged as they go.
            if i % 3 == 0 {
                let got = all(&m);
                assert_eq!(got.len(), model.len());
            }
        }
        assert!(m.frozen.lock().runs.len() <= 12);
        let got = all(&m);
        let want: Vec<_> = model.into_iter().collect();
        assert_eq!(got, want);
        for (key, cell) in &want {
            assert_eq!(m.get(key).as_ref(), Some(cell));
        }
    }

    #[test]
    fn upper_bound_included_and_lower_bound_included() {
        let m = Arc::new(Memtable::new(1));
        for i in 0..100i64 {
            m.insert(k(i, "x"), Cell::value("v", Timestamp(1)), 3);
        }
        let got: Vec<_> = MemtableIter::new(
            m.clone(),
            Bound::Included(k(10, "x")),
            Bound::Included(k(20, "x")),
        )
        .collect();
        assert_eq!(got.len(), 11);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
