//! The memtable: a concurrent sorted map (lock-free skiplist, so reads never wait for
//! writers) holding the newest writes of one keyspace until they are flushed to an SSTable.
//!
//! Every write is stored as its own version tagged with the batch's sequence number, rather
//! than overwriting in place: a scan captures the visible sequence number when it starts and
//! ignores later versions, which is what makes iterators consistent snapshots (a batch is
//! seen entirely or not at all). Versions of one key are reconciled with the conflict rule on
//! read and on flush, so an SSTable holds one cell per key.

use crate::cell::{Cell, CellKey};
use crossbeam_skiplist::SkipMap;
use std::cmp::Ordering as CmpOrdering;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Approximate per-version bookkeeping overhead (skiplist node, Bytes handles), counted in
/// the memtable size so the flush threshold tracks real memory, not only payload bytes.
pub const MEMTABLE_ENTRY_OVERHEAD_BYTES: u64 = 96;
/// Keys an iterator copies out per refill: large enough to amortise the re-seek, small enough
/// that an iterator's buffer stays a few hundred KiB at most.
const ITER_CHUNK_KEYS: usize = 256;

/// A key plus the sequence number of the batch that wrote it; versions of one key sort newest
/// (highest sequence) first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemKey {
    key: CellKey,
    seq: u64,
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// One memtable.
#[derive(Debug)]
pub struct Memtable {
    /// Unique within the process, for finding it again after version changes.
    pub id: u64,
    map: SkipMap<MemKey, Cell>,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Oldest commit-log segment holding data of this memtable; `u64::MAX` while empty.
    first_segment: AtomicU64,
    min_timestamp: AtomicU64,
    max_timestamp: AtomicU64,
}

impl Memtable {
    pub fn new(id: u64) -> Memtable {
        Memtable {
            id,
            map: SkipMap::new(),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            first_segment: AtomicU64::new(u64::MAX),
            min_timestamp: AtomicU64::new(u64::MAX),
            max_timestamp: AtomicU64::new(0),
        }
    }

    /// Inserts one version. `seq` must be unique per batch and `>= 1`.
    pub fn insert(&self, key: CellKey, cell: Cell, seq: u64, segment_id: u64) {
        debug_assert!((1..u64::MAX).contains(&seq));
        let size = key.key.len() as u64 + cell.value_len() as u64 + MEMTABLE_ENTRY_OVERHEAD_BYTES;
        self.first_segment.fetch_min(segment_id, Ordering::AcqRel);
        self.min_timestamp
            .fetch_min(cell.timestamp.0, Ordering::AcqRel);
        self.max_timestamp
            .fetch_max(cell.timestamp.0, Ordering::AcqRel);
        self.map.insert(MemKey { key, seq }, cell);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        self.entries.fetch_add(1, Ordering::AcqRel);
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// Versions stored (not distinct keys).
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

    /// The winning version of `key` among all stored.
    pub fn get(&self, key: &CellKey) -> Option<Cell> {
        self.get_at(key, u64::MAX)
    }

    /// The winning version of `key` among versions with sequence `<= snapshot`.
    pub fn get_at(&self, key: &CellKey, snapshot: u64) -> Option<Cell> {
        let lo = MemKey {
            key: key.clone(),
            seq: u64::MAX,
        };
        let hi = MemKey {
            key: key.clone(),
            seq: 0,
        };
        let mut best: Option<Cell> = None;
        for e in self.map.range(lo..=hi) {
            if e.key().seq > snapshot {
                continue;
            }
            let c = e.value();
            if best
                .as_ref()
                .is_none_or(|b| c.reconcile_cmp(b) == CmpOrdering::Greater)
            {
                best = Some(c.clone());
            }
        }
        best
    }

    /// Reconciled cells of up to `max_keys` keys in `(lower, upper)`, ascending, seeing only
    /// versions with sequence `<= snapshot`.
    fn chunk(
        &self,
        lower: &Bound<CellKey>,
        upper: &Bound<CellKey>,
        snapshot: u64,
        max_keys: usize,
        out: &mut VecDeque<(CellKey, Cell)>,
    ) -> bool {
        let lo = match lower {
            Bound::Included(k) => Bound::Included(MemKey {
                key: k.clone(),
                seq: u64::MAX,
            }),
            // Sequence 0 is never used, so this excludes every version of `k`.
            Bound::Excluded(k) => Bound::Excluded(MemKey {
                key: k.clone(),
                seq: 0,
            }),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match upper {
            Bound::Included(k) => Bound::Included(MemKey {
                key: k.clone(),
                seq: 0,
            }),
            Bound::Excluded(k) => Bound::Excluded(MemKey {
                key: k.clone(),
                seq: u64::MAX,
            }),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut keys = 0;
        let mut current: Option<(CellKey, Option<Cell>)> = None;
        for e in self.map.range((lo, hi)) {
            let k = &e.key().key;
            let new_key = current.as_ref().is_none_or(|(ck, _)| ck != k);
            if new_key {
                if let Some((ck, Some(c))) = current.take() {
                    out.push_back((ck, c));
                    keys += 1;
                }
                if keys >= max_keys {
                    return true;
                }
                current = Some((k.clone(), None));
            }
            if e.key().seq > snapshot {
                continue;
            }
            if let Some((_, best)) = current.as_mut() {
                let c = e.value();
                if best
                    .as_ref()
                    .is_none_or(|b| c.reconcile_cmp(b) == CmpOrdering::Greater)
                {
                    *best = Some(c.clone());
                }
            }
        }
        if let Some((ck, Some(c))) = current.take() {
            out.push_back((ck, c));
        }
        false
    }
}

/// An owning iterator over a memtable range at a snapshot: one reconciled cell per key,
/// ascending. It re-seeks every [`ITER_CHUNK_KEYS`] keys instead of borrowing the skiplist, so
/// it can outlive any lock and be sent between threads.
#[derive(Debug)]
pub struct MemtableIter {
    mem: Arc<Memtable>,
    lower: Bound<CellKey>,
    upper: Bound<CellKey>,
    snapshot: u64,
    buf: VecDeque<(CellKey, Cell)>,
    done: bool,
}

impl MemtableIter {
    pub fn new(
        mem: Arc<Memtable>,
        lower: Bound<CellKey>,
        upper: Bound<CellKey>,
        snapshot: u64,
    ) -> MemtableIter {
        MemtableIter {
            mem,
            lower,
            upper,
            snapshot,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl Iterator for MemtableIter {
    type Item = (CellKey, Cell);
    fn next(&mut self) -> Option<(CellKey, Cell)> {
        if self.buf.is_empty() && !self.done {
            let more = self.mem.chunk(
                &self.lower,
                &self.upper,
                self.snapshot,
                ITER_CHUNK_KEYS,
                &mut self.buf,
            );
            self.done = !more;
            match self.buf.back() {
                Some((k, _)) => self.lower = Bound::Excluded(k.clone()),
                None => self.done = true,
            }
        }
        self.buf.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_types::{Timestamp, Token};

    fn k(t: i64, s: &str) -> CellKey {
        CellKey::new(Token(t), s.as_bytes().to_vec())
    }

    #[test]
    fn versions_reconcile_and_snapshots_hide_later_batches() {
        let m = Arc::new(Memtable::new(1));
        m.insert(k(1, "a"), Cell::value("new", Timestamp(10)), 1, 0);
        // Older timestamp written later: loses by the conflict rule.
        m.insert(k(1, "a"), Cell::value("old", Timestamp(5)), 2, 0);
        m.insert(k(0, "z"), Cell::tombstone(Timestamp(3)), 3, 0);
        m.insert(k(2, "b"), Cell::value("b", Timestamp(4)), 4, 0);
        assert_eq!(m.get(&k(1, "a")).unwrap().value.unwrap(), "new");
        assert_eq!(m.get(&k(5, "q")), None);
        let all: Vec<_> =
            MemtableIter::new(m.clone(), Bound::Unbounded, Bound::Unbounded, u64::MAX).collect();
        let keys: Vec<_> = all.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![k(0, "z"), k(1, "a"), k(2, "b")]);
        let snap: Vec<_> =
            MemtableIter::new(m.clone(), Bound::Unbounded, Bound::Unbounded, 2).collect();
        assert_eq!(snap.len(), 1);
        let bounded: Vec<_> = MemtableIter::new(
            m.clone(),
            Bound::Excluded(k(0, "z")),
            Bound::Excluded(k(2, "b")),
            u64::MAX,
        )
        .collect();
        assert_eq!(bounded.len(), 1);
        assert_eq!(m.first_segment(), Some(0));
        assert_eq!(m.max_timestamp(), 10);
    }

    #[test]
    fn iterator_crosses_chunk_boundaries() {
        let m = Arc::new(Memtable::new(1));
        for i in 0..1000i64 {
            m.insert(k(i, "x"), Cell::value("v", Timestamp(1)), 1 + i as u64, 3);
            m.insert(
                k(i, "x"),
                Cell::value("w", Timestamp(2)),
                5000 + i as u64,
                3,
            );
        }
        let got: Vec<_> =
            MemtableIter::new(m, Bound::Included(k(10, "x")), Bound::Unbounded, u64::MAX).collect();
        assert_eq!(got.len(), 990);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            got.iter()
                .all(|(_, c)| c.value.as_deref() == Some(&b"w"[..]))
        );
    }
}
