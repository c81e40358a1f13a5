//! Hash trees over a token range of one replica's cells, and their comparison.
//!
//! A range `(start, end]` is cut into `2^depth` equal slices of the token space (leaves); a
//! leaf's hash is the XOR of the canonical hashes of the cells whose token falls in it
//! ([`cell_hash`]), so it does not depend on the order cells are added in, nor on how the
//! engine laid them out (flushes, compactions). Inner nodes hash their two children; two
//! replicas that hold logically equal data have equal roots, and leaves that differ locate
//! the token slices whose cells must be compared.
//!
//! Canonical form, at the snapshot time `now_ms` of the comparison:
//! - a value: key, timestamp, value bytes, expiry;
//! - an expired value: the tombstone compaction turns it into (key, timestamp, deletion
//!   time = its expiry) — so a replica that compacted it and one that did not hash equal;
//! - a tombstone purgeable at the snapshot (its deletion time before `purge_before_ms`:
//!   older than `gc_grace` with `tombstone_gc = timeout`, older than the range's last
//!   completed repair with `tombstone_gc = repair`): nothing. One replica may have purged it
//!   and another not; both hash equal, and such a tombstone is copied only to a replica whose
//!   older version it shadows. With `timeout`, a delete a replica missed for longer than
//!   `gc_grace` (and that no repair brought it) can come back; with `repair` it cannot, since
//!   a tombstone is purgeable only once a repair put it on every replica.
//! - cells newer than the snapshot timestamp: nothing (writes in flight during the
//!   comparison would otherwise show as differences that are not).
//!
//! Pure: cells in, hashes out.

use hearsay_ring::TokenRange;
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{Timestamp, Token};
use serde::{Deserialize, Serialize};

/// Deepest tree: 2^16 leaves of 16 bytes is a 1 MiB leaf list, the most one answer carries.
pub const MAX_TREE_DEPTH: u8 = 16;

/// What is hashed, and what counts as the same data, at one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Wall-clock ms the comparison treats as now (expiry).
    pub now_ms: u64,
    /// Cells with a newer timestamp are left out (writes in flight).
    pub max_timestamp: Timestamp,
    /// Tombstones whose deletion time (ms) is before this are left out (purgeable).
    pub purge_before_ms: u64,
}

/// A cell's contribution to a tree at `snap`, or `None` when it is left out.
pub fn cell_hash(key: &CellKey, cell: &Cell, snap: &Snapshot) -> Option<u128> {
    if cell.timestamp > snap.max_timestamp {
        return None;
    }
    let expired = cell.is_expired(snap.now_ms);
    let tombstone = cell.is_tombstone() || expired;
    if tombstone && cell.deletion_time_ms() < snap.purge_before_ms {
        return None;
    }
    let mut buf = Vec::with_capacity(40 + key.key.len() + cell.value_len());
    buf.extend_from_slice(&key.token.0.to_be_bytes());
    buf.extend_from_slice(&(key.key.len() as u32).to_be_bytes());
    buf.extend_from_slice(&key.key);
    buf.extend_from_slice(&cell.timestamp.0.to_be_bytes());
    match (&cell.value, expired) {
        (Some(v), false) => {
            buf.push(1);
            buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
            buf.extend_from_slice(v);
        }
        // A tombstone, or the tombstone an expired value becomes.
        _ => buf.push(0),
    }
    match cell.expires_at_ms {
        Some(e) => {
            buf.push(1);
            buf.extend_from_slice(&e.to_be_bytes());
        }
        None => buf.push(0),
    }
    Some(xxhash_rust::xxh3::xxh3_128(&buf))
}

/// The tree of one replica's cells in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    range: TokenRange,
    depth: u8,
    leaves: Vec<u128>,
    /// Cells and bytes (key + value) hashed, for the report.
    cells: u64,
    bytes: u64,
}

impl MerkleTree {
    /// An empty tree of `2^depth` leaves over `range` (depth capped at [`MAX_TREE_DEPTH`]).
    pub fn new(range: TokenRange, depth: u8) -> MerkleTree {
        let depth = depth.min(MAX_TREE_DEPTH);
        MerkleTree {
            range,
            depth,
            leaves: vec![0; 1 << depth],
            cells: 0,
            bytes: 0,
        }
    }

    /// A tree from its leaves (as a peer sent them); `None` if the count is not a power of
    /// two within [`MAX_TREE_DEPTH`].
    pub fn from_leaves(range: TokenRange, leaves: Vec<u128>) -> Option<MerkleTree> {
        let n = leaves.len();
        if n == 0 || !n.is_power_of_two() || n > 1 << MAX_TREE_DEPTH {
            return None;
        }
        Some(MerkleTree {
            range,
            depth: n.trailing_zeros() as u8,
            leaves,
            cells: 0,
            bytes: 0,
        })
    }

    /// The range.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// The depth (`2^depth` leaves).
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// The leaves.
    pub fn leaves(&self) -> &[u128] {
        &self.leaves
    }

    /// Cells hashed.
    pub fn cells(&self) -> u64 {
        self.cells
    }

    /// Key and value bytes hashed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Which leaf `token` falls in; `None` outside the range.
    pub fn leaf_of(&self, token: Token) -> Option<usize> {
        if !self.range.contains(token) {
            return None;
        }
        // Offset from the exclusive start, 1..=width, in ring arithmetic.
        let offset = (token.0 as i128 - self.range.start.0 as i128).rem_euclid(1i128 << 64);
        let offset = if offset == 0 {
            1u128 << 64
        } else {
            offset as u128
        };
        // Leaf i holds offsets in (⌊w·i/n⌋, ⌊w·(i+1)/n⌋], so the leaf of `offset` is the
        // largest i with ⌊w·i/n⌋ < offset, that is ⌈offset·n/w⌉ − 1.
        let width = self.range.width();
        let n = self.leaves.len() as u128;
        Some(((offset * n - 1) / width) as usize)
    }

    /// The sub-range of leaf `i`: `(start + width·i/n, start + width·(i+1)/n]`.
    pub fn leaf_range(&self, i: usize) -> TokenRange {
        let n = self.leaves.len() as u128;
        let width = self.range.width();
        let lo = width * i as u128 / n;
        let hi = width * (i as u128 + 1) / n;
        let start = if lo == 0 {
            self.range.start
        } else {
            self.range.token_at(lo)
        };
        TokenRange::new(start, self.range.token_at(hi))
    }

    /// Adds a cell (left out per [`cell_hash`]); cells outside the range are ignored.
    pub fn add(&mut self, key: &CellKey, cell: &Cell, snap: &Snapshot) {
        let Some(i) = self.leaf_of(key.token) else {
            return;
        };
        if let Some(h) = cell_hash(key, cell, snap) {
            self.leaves[i] ^= h;
            self.cells += 1;
            self.bytes += (key.key.len() + cell.value_len()) as u64;
        }
    }

    /// The root hash: leaves paired up level by level.
    pub fn root(&self) -> u128 {
        let mut level = self.leaves.clone();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| {
                    let mut b = [0u8; 32];
                    b[..16].copy_from_slice(&p[0].to_be_bytes());
                    b[16..].copy_from_slice(&p[1].to_be_bytes());
                    xxhash_rust::xxh3::xxh3_128(&b)
                })
                .collect();
        }
        level[0]
    }
}

/// The leaves on which the trees disagree (any two differ), as merged token ranges in
/// clockwise order. Trees must share range and depth; otherwise the whole range differs.
pub fn differing_ranges(trees: &[&MerkleTree]) -> Vec<TokenRange> {
    let Some(first) = trees.first() else {
        return Vec::new();
    };
    if trees
        .iter()
        .any(|t| t.range != first.range || t.depth != first.depth)
    {
        return vec![first.range];
    }
    let mut out: Vec<TokenRange> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for i in 0..first.leaves.len() {
        let differs = trees.iter().any(|t| t.leaves[i] != first.leaves[i]);
        match (&mut run, differs) {
            (Some((_, end)), true) => *end = i,
            (None, true) => run = Some((i, i)),
            (Some((a, b)), false) => {
                out.push(span(first, *a, *b));
                run = None;
            }
            (None, false) => {}
        }
    }
    if let Some((a, b)) = run {
        out.push(span(first, a, b));
    }
    out
}

fn span(t: &MerkleTree, a: usize, b: usize) -> TokenRange {
    TokenRange::new(t.leaf_range(a).start, t.leaf_range(b).end)
}

/// What each replica must receive so that all hold the newest version of every key, given
/// each replica's cells of a range (in any order). Last write wins makes the merge
/// symmetric: for every key, every replica that does not hold the newest cell gets it.
/// Cells newer than the snapshot are left out (they are still arriving). A purgeable
/// tombstone that is the newest version is sent only to replicas holding an older version
/// it shadows (it keeps a delete from being undone there; a replica with nothing for the key
/// gains nothing from a tombstone it would purge).
pub fn plan_sync(replicas: &[Vec<(CellKey, Cell)>], snap: &Snapshot) -> Vec<Vec<(CellKey, Cell)>> {
    use std::collections::BTreeMap;
    let in_snapshot = |c: &Cell| c.timestamp <= snap.max_timestamp;
    let mut newest: BTreeMap<&CellKey, &Cell> = BTreeMap::new();
    for cells in replicas {
        for (k, c) in cells.iter().filter(|(_, c)| in_snapshot(c)) {
            match newest.get(k) {
                Some(cur) if cur.reconcile_cmp(c) != std::cmp::Ordering::Less => {}
                _ => {
                    newest.insert(k, c);
                }
            }
        }
    }
    replicas
        .iter()
        .map(|cells| {
            let held: BTreeMap<&CellKey, &Cell> = cells
                .iter()
                .filter(|(_, c)| in_snapshot(c))
                .map(|(k, c)| (k, c))
                .collect();
            newest
                .iter()
                .filter(|(k, c)| match held.get(*k) {
                    Some(h) if h.reconcile_cmp(c) == std::cmp::Ordering::Equal => false,
                    Some(h) => cell_hash(k, c, snap).is_some() || cell_hash(k, h, snap).is_some(),
                    None => cell_hash(k, c, snap).is_some(),
                })
                .map(|(k, c)| ((*k).clone(), (*c).clone()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const SNAP: Snapshot = Snapshot {
        now_ms: 1_000_000,
        max_timestamp: Timestamp(u64::MAX),
        purge_before_ms: 990_000,
    };

    fn key(t: i64, k: &str) -> CellKey {
        CellKey::new(Token(t), Bytes::copy_from_slice(k.as_bytes()))
    }

    fn tree_of(range: TokenRange, depth: u8, cells: &[(CellKey, Cell)]) -> MerkleTree {
        let mut t = MerkleTree::new(range, depth);
        for (k, c) in cells {
            t.add(k, c, &SNAP);
        }
        t
    }

    #[test]
    fn leaves_partition_the_range() {
        for range in [
            TokenRange::full(),
            TokenRange::new(Token(-100), Token(100)),
            TokenRange::new(Token(i64::MAX - 5), Token(i64::MIN + 5)),
        ] {
            let t = MerkleTree::new(range, 3);
            let mut covered = 0u128;
            for i in 0..8 {
                let r = t.leaf_range(i);
                covered += r.width();
                assert_eq!(t.leaf_of(r.end), Some(i), "{range:?} leaf {i}");
                if i > 0 {
                    assert_eq!(r.start, t.leaf_range(i - 1).end);
                }
            }
            assert_eq!(covered, range.width());
        }
        let t = MerkleTree::new(TokenRange::new(Token(0), Token(10)), 2);
        assert_eq!(t.leaf_of(Token(0)), None, "start is exclusive");
        assert_eq!(t.leaf_of(Token(11)), None);
        assert_eq!(t.leaf_of(Token(1)), Some(0));
    }

    #[test]
    fn expired_values_hash_as_their_tombstones_and_purgeable_ones_not_at_all() {
        let k = key(5, "k");
        let expired = Cell::expiring(Bytes::from_static(b"v"), Timestamp(10), 999_000);
        let tomb = Cell {
            value: None,
            timestamp: Timestamp(10),
            expires_at_ms: Some(999_000),
        };
        assert_eq!(cell_hash(&k, &expired, &SNAP), cell_hash(&k, &tomb, &SNAP));
        assert!(cell_hash(&k, &expired, &SNAP).is_some());
        let old = Cell::tombstone(Timestamp(1_000)); // deleted at 1 ms, long before gc_grace
        assert_eq!(cell_hash(&k, &old, &SNAP), None);
        let newer = Snapshot {
            max_timestamp: Timestamp(5),
            ..SNAP
        };
        assert_eq!(
            cell_hash(
                &k,
                &Cell::value(Bytes::from_static(b"v"), Timestamp(10)),
                &newer
            ),
            None
        );
    }

    fn cell_strategy() -> impl Strategy<Value = (CellKey, Cell)> {
        (
            -50i64..50,
            "[a-c]{1,2}",
            0u64..6,
            prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
            prop::option::of(998_000u64..1_002_000),
        )
            .prop_map(|(t, k, ts, v, exp)| {
                let cell = Cell {
                    value: v.map(Bytes::from),
                    timestamp: Timestamp(ts * 400_000_000),
                    expires_at_ms: exp,
                };
                (key(t, &k), cell)
            })
    }

    /// The newest version per key, as a replica's scan returns it.
    fn reconcile(cells: &[(CellKey, Cell)]) -> BTreeMap<CellKey, Cell> {
        let mut m: BTreeMap<CellKey, Cell> = BTreeMap::new();
        for (k, c) in cells {
            match m.get(k) {
                Some(cur) if cur.supersedes(c) => {}
                _ => {
                    m.insert(k.clone(), c.clone());
                }
            }
        }
        m
    }

    proptest! {
        /// Equal sets give equal trees whatever the insertion order; the diff and the sync
        /// plan find exactly the keys whose newest versions differ.
        #[test]
        fn trees_and_plans_find_exactly_the_differences(
            common in prop::collection::vec(cell_strategy(), 0..40),
            only_a in prop::collection::vec(cell_strategy(), 0..8),
            only_b in prop::collection::vec(cell_strategy(), 0..8),
            depth in 0u8..6,
        ) {
            let range = TokenRange::new(Token(-60), Token(60));
            let a: Vec<_> = reconcile(&[common.clone(), only_a].concat()).into_iter().collect();
            let b: Vec<_> = reconcile(&[common.clone(), only_b].concat()).into_iter().collect();
            let mut a_rev = a.clone();
            a_rev.reverse();
            let ta = tree_of(range, depth, &a);
            prop_assert_eq!(&ta, &tree_of(range, depth, &a_rev));
            let tb = tree_of(range, depth, &b);
            // The keys whose canonical content differs.
            let canon = |cells: &Vec<(CellKey, Cell)>| -> BTreeMap<CellKey, u128> {
                cells.iter().filter_map(|(k, c)| cell_hash(k, c, &SNAP).map(|h| (k.clone(), h))).collect()
            };
            let (ca, cb) = (canon(&a), canon(&b));
            let differing: Vec<CellKey> = ca.keys().chain(cb.keys())
                .filter(|k| ca.get(*k) != cb.get(*k)).cloned().collect();
            prop_assert_eq!(ta.root() == tb.root(), differing.is_empty());
            let ranges = differing_ranges(&[&ta, &tb]);
            for k in &differing {
                prop_assert!(ranges.iter().any(|r| r.contains(k.token)), "{:?} not in {:?}", k, ranges);
            }
            // After the plan is applied, both replicas hash equal and hold the newest.
            let plan = plan_sync(&[a.clone(), b.clone()], &SNAP);
            let a2: Vec<_> = reconcile(&[a.clone(), plan[0].clone()].concat()).into_iter().collect();
            let b2: Vec<_> = reconcile(&[b.clone(), plan[1].clone()].concat()).into_iter().collect();
            prop_assert_eq!(tree_of(range, depth, &a2), tree_of(range, depth, &b2));
            prop_assert_eq!(canon(&a2), canon(&b2));
            // Nothing is sent where nothing differs.
            if differing.is_empty() {
                prop_assert!(plan.iter().all(|p| p.is_empty()));
            }
        }
    }
}
