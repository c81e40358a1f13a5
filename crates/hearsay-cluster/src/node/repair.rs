//! Anti-entropy repair sessions: the driver around the pure `crate::repair` core.
//!
//! A session repairs one token range of one keyspace across its replicas (this node among
//! them or not): it asks every replica for the root of its hash tree over the range at one
//! snapshot; when the roots agree it is done. Otherwise it splits ranges holding more than
//! `max_session_cells` and asks for the leaves, reads the cells of the differing slices from
//! every replica, and sends each replica exactly the cells it lacks (last write wins makes
//! the exchange symmetric). Every byte read or sent, here or by a replica building a tree
//! for us, is paced by the node's one repair budget ([`Throttle`]).
//!
//! Jobs (on demand, `Node::start_repair`) and the always-on worker run sessions over many
//! ranges; a job's progress is persisted in the local `system` keyspace after every range,
//! so a repair interrupted by a crash resumes at its first unfinished range. Each range's
//! last successful repair time is persisted too (the always-on worker repairs the oldest
//! first, after any the hint store marked dirty).

use super::messages::{
    RepairDone, RepairDoneAck, RepairTree, RepairTreeReply, ScanRange, WireCell,
};
use super::schema::SYSTEM_KEYSPACE;
use super::schema::TombstoneGc;
use super::{Inner, Node, NodeError};
use crate::repair::{MAX_TREE_DEPTH, MerkleTree, Snapshot, differing_ranges, plan_sync};
use crate::rpc::HandlerError;
use bytes::Bytes;
use hearsay_ring::TokenRange;
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{NodeId, Timestamp, Token};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Cells per leaf a differing range's tree aims at: a differing leaf's cells are fetched
/// from every replica, so this sets the wire cost of scattered differences (at 1% of keys
/// differing, about 5% of a range's leaves differ at 8 cells per leaf, against a third at
/// 64: `docs/benchmarks.md`, "Repair"), while the leaves of a session stay a small message
/// (100,000 cells at 8 per leaf: 2^14 leaves, 256 KiB).
const LEAF_TARGET_CELLS: u64 = 8;
/// When the differing leaves cover at least 1/this of a range, its cells are fetched in one
/// paged pass instead of slice by slice: at 10% of keys differing most leaves differ, and
/// thousands of small fetches cost more round trips than the bytes they save.
const WHOLE_RANGE_FETCH_DIVISOR: u128 = 4;
/// Cells fetched per page when reading a differing slice (a `ScanRange` answer is capped at
/// `MAX_SCAN_CELLS` anyway).
const FETCH_PAGE_CELLS: usize = 2_000;
/// Cells per push to one replica: one `Mutate`, far below `MAX_CELLS_PER_MUTATION`, so a
/// push is a bounded amount of work on the replica.
const PUSH_BATCH_CELLS: usize = 500;
/// Per-call deadline of repair RPCs, in ms: a tree over a large range takes a scan, paced by
/// the budget.
const REPAIR_CALL_TIMEOUT_MS: u64 = 60_000;
/// Margin added to the write timeout to get a session's snapshot lag, in µs (see
/// `repair_range_inner`).
const SNAPSHOT_MARGIN_US: u64 = 500_000;
/// Slices a naive (`full`) session reads a range in, so one fetch holds a sixteenth of it.
const FULL_MODE_SLICES: usize = 16;
/// Most finished jobs kept for `repair --status`.
const MAX_FINISHED_JOBS: usize = 32;
/// Key prefixes in the local `system` keyspace.
const JOB_KEY_PREFIX: &str = "repair-job/";
const RANGE_KEY_PREFIX: &str = "repair-range/";
/// Version byte in front of every stored repair record.
const REPAIR_RECORD_VERSION: u8 = 1;

/// One repair budget for the whole node: a token bucket of bytes per second, shared by every
/// session, tree build and fetch, so that repair never takes more than its share of disk and
/// network whatever runs at once.
#[derive(Debug)]
pub(crate) struct Throttle {
    bytes_per_sec: AtomicU64,
    /// Bytes charged so far (what the budget paced: reads, fetches, sends).
    charged: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub(crate) fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec: AtomicU64::new(bytes_per_sec),
            charged: AtomicU64::new(0),
            // A second's worth may go at once.
            state: Mutex::new((bytes_per_sec as f64, Instant::now())),
        }
    }

    /// The budget in bytes per second.
    pub(crate) fn rate(&self) -> u64 {
        self.bytes_per_sec.load(Relaxed)
    }

    /// Takes `bytes` from the budget; returns how long the caller must wait first.
    fn take(&self, bytes: u64) -> Duration {
        self.charged.fetch_add(bytes, Relaxed);
        let rate = self.rate().max(1) as f64;
        let mut s = self.state.lock();
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * rate;
        s.0 = (s.0 + refill).min(rate);
        s.1 = now;
        s.0 -= bytes as f64;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / rate)
        }
    }

    /// Waits until `bytes` fit the budget (async).
    pub(crate) async fn acquire(&self, bytes: u64) {
        let wait = self.take(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until `bytes` fit the budget (blocking thread).
    fn acquire_blocking(&self, bytes: u64) {
        let wait = self.take(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// What one range's session found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOutcome {
    /// Cells and bytes hashed over all replicas.
    pub cells_compared: u64,
    pub bytes_compared: u64,
    /// Cells and bytes sent to replicas that lacked them.
    pub cells_moved: u64,
    pub bytes_moved: u64,
    /// Whether the replicas' trees differed.
    pub differed: bool,
}

impl RangeOutcome {
    fn add(&mut self, o: &RangeOutcome) {
        self.cells_compared += o.cells_compared;
        self.bytes_compared += o.bytes_compared;
        self.cells_moved += o.cells_moved;
        self.bytes_moved += o.bytes_moved;
        self.differed |= o.differed;
    }
}

/// What to repair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRequest {
    /// One keyspace, or every keyspace.
    pub keyspace: Option<String>,
    /// Only the part of this node's ranges within `(start, end]`.
    pub range: Option<(i64, i64)>,
    /// Compare every cell of every replica, without trees: the naive full comparison (reads
    /// and fetches all data), for when the trees themselves are in doubt and as the
    /// baseline the tree comparison is measured against.
    #[serde(default)]
    pub full: bool,
}

/// The state of one repair job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairJob {
    pub id: u64,
    pub request: RepairRequest,
    /// Ranges to repair, in order: `(keyspace, start, end)`.
    pub ranges: Vec<(String, i64, i64)>,
    /// Ranges finished (a prefix of `ranges`): a resumed job starts after them.
    pub done: usize,
    /// Ranges that failed (retried on resume).
    pub failed: usize,
    pub totals: RangeOutcome,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// Why the last failed range failed.
    pub last_error: Option<String>,
}

/// Counters and recent jobs, as `/v1/stats` and `hearsay repair --status` show them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairStats {
    pub enabled: bool,
    pub bytes_per_sec: u64,
    pub sessions: u64,
    pub sessions_failed: u64,
    pub ranges_in_sync: u64,
    pub ranges_out_of_sync: u64,
    pub cells_compared: u64,
    pub bytes_compared: u64,
    pub cells_moved: u64,
    pub bytes_moved: u64,
    /// Bytes this node read from its engine for repair (tree builds and fetches, its own
    /// and those it served to peers), as the engine's scans returned them.
    pub bytes_read: u64,
    /// Sessions running now.
    pub running: u64,
    /// Bytes charged to this node's budget so far (engine reads, fetched cells, sends):
    /// against `bytes_per_sec` and time, how much of the budget repair used.
    pub bytes_charged: u64,
    /// Age of the oldest last-successful repair among this node's primary ranges, in ms
    /// (`None` before every primary range has been repaired once).
    pub max_age_ms: Option<u64>,
    /// Per keyspace: primary ranges and how many were ever repaired.
    pub primary_ranges: BTreeMap<String, (usize, usize)>,
    pub jobs: Vec<RepairJob>,
}

/// Repair's shared state on a node.
#[derive(Debug)]
pub(crate) struct RepairState {
    pub(crate) throttle: Throttle,
    pub(crate) sessions: AtomicU64,
    pub(crate) sessions_failed: AtomicU64,
    pub(crate) ranges_in_sync: AtomicU64,
    pub(crate) ranges_out_of_sync: AtomicU64,
    pub(crate) cells_compared: AtomicU64,
    pub(crate) bytes_compared: AtomicU64,
    pub(crate) cells_moved: AtomicU64,
    pub(crate) bytes_moved: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) running: AtomicU64,
    /// Jobs by id: running and recently finished.
    pub(crate) jobs: Mutex<BTreeMap<u64, RepairJob>>,
    pub(crate) next_job: AtomicU64,
    /// Per keyspace: ranges this node knows were repaired on every replica, each with its
    /// watermark (ms; deletions before it are on every replica). Loaded at start, updated
    /// by every `RepairDone`.
    pub(crate) watermarks: Arc<RepairedRanges>,
}

/// One keyspace's purge horizon for the engine (`tombstone_gc = repair`).
#[derive(Debug)]
pub(crate) struct KeyspaceHorizon {
    ranges: Arc<RepairedRanges>,
    keyspace: String,
}

impl KeyspaceHorizon {
    pub(crate) fn new(ranges: Arc<RepairedRanges>, keyspace: &str) -> KeyspaceHorizon {
        KeyspaceHorizon {
            ranges,
            keyspace: keyspace.to_string(),
        }
    }
}

impl hearsay_storage::PurgeHorizon for KeyspaceHorizon {
    fn purge_before_ms(&self, token: Token) -> u64 {
        self.ranges.horizon(&self.keyspace, token)
    }
}

/// Ranges repaired on every replica and their watermarks, per keyspace: the purge horizon
/// of `tombstone_gc = repair` (a token's horizon is the newest watermark of a range that
/// covers it; 0, nothing purgeable, when none does).
#[derive(Debug, Default)]
pub struct RepairedRanges {
    by_keyspace: Mutex<BTreeMap<String, Watermarks>>,
}

/// One keyspace's watermarks: `(start, end)` of a range → ms.
type Watermarks = BTreeMap<(i64, i64), u64>;

impl RepairedRanges {
    /// Records a watermark for `(start, end]` (keeping the newer one).
    pub fn record(&self, keyspace: &str, range: TokenRange, watermark_ms: u64) {
        let mut m = self.by_keyspace.lock();
        let e = m
            .entry(keyspace.to_string())
            .or_default()
            .entry((range.start.0, range.end.0))
            .or_insert(0);
        *e = (*e).max(watermark_ms);
    }

    /// The newest watermark of a recorded range that covers `token` (0 when none does).
    pub fn horizon(&self, keyspace: &str, token: Token) -> u64 {
        let m = self.by_keyspace.lock();
        m.get(keyspace)
            .map(|ranges| {
                ranges
                    .iter()
                    .filter(|((s, e), _)| TokenRange::new(Token(*s), Token(*e)).contains(token))
                    .map(|(_, w)| *w)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// The watermark of exactly this range, if recorded.
    pub fn of(&self, keyspace: &str, range: &TokenRange) -> Option<u64> {
        self.by_keyspace
            .lock()
            .get(keyspace)
            .and_then(|r| r.get(&(range.start.0, range.end.0)).copied())
    }

    /// Forgets a dropped keyspace.
    pub fn forget(&self, keyspace: &str) {
        self.by_keyspace.lock().remove(keyspace);
    }
}

impl RepairState {
    pub(crate) fn new(bytes_per_sec: u64) -> RepairState {
        RepairState {
            throttle: Throttle::new(bytes_per_sec),
            sessions: AtomicU64::new(0),
            sessions_failed: AtomicU64::new(0),
            ranges_in_sync: AtomicU64::new(0),
            ranges_out_of_sync: AtomicU64::new(0),
            cells_compared: AtomicU64::new(0),
            bytes_compared: AtomicU64::new(0),
            cells_moved: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            running: AtomicU64::new(0),
            jobs: Mutex::new(BTreeMap::new()),
            next_job: AtomicU64::new(1),
            watermarks: Arc::default(),
        }
    }
}

/// The tree depth that puts about [`LEAF_TARGET_CELLS`] cells in a leaf.
fn depth_for(cells: u64) -> u8 {
    let leaves = (cells / LEAF_TARGET_CELLS).max(1);
    (64 - leaves.leading_zeros()).min(u32::from(MAX_TREE_DEPTH)) as u8
}

fn stored_range_key(keyspace: &str, r: &TokenRange) -> String {
    format!("{RANGE_KEY_PREFIX}{keyspace}/{}/{}", r.start.0, r.end.0)
}

fn system_cell(key: String, value: &impl Serialize, ts: Timestamp) -> (CellKey, Cell) {
    let mut v = vec![REPAIR_RECORD_VERSION];
    v.extend_from_slice(&postcard::to_allocvec(value).unwrap_or_default());
    (
        CellKey::new(Token(0), Bytes::from(key)),
        Cell::value(Bytes::from(v), ts),
    )
}

fn decode_record<T: for<'de> Deserialize<'de>>(cell: &Cell) -> Option<T> {
    match cell.value.as_ref()?.split_first() {
        Some((&REPAIR_RECORD_VERSION, body)) => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

impl Inner {
    /// Builds this node's tree over `range` (blocking: scans the engine), paced by the
    /// repair budget.
    fn build_tree_blocking(
        &self,
        keyspace: &str,
        range: TokenRange,
        depth: u8,
        snap: &Snapshot,
    ) -> Result<MerkleTree, String> {
        let mut tree = MerkleTree::new(range, depth);
        let mut pending_bytes = 0u64;
        for piece in range.unwrap() {
            let lower = std::ops::Bound::Excluded(CellKey::new(piece.start, Bytes::new()));
            let lower = match piece.start.0.checked_add(1) {
                Some(t) => std::ops::Bound::Included(CellKey::new(Token(t), Bytes::new())),
                None => lower,
            };
            let upper = match piece.end.0.checked_add(1) {
                Some(t) => std::ops::Bound::Excluded(CellKey::new(Token(t), Bytes::new())),
                None => std::ops::Bound::Unbounded,
            };
            let iter = self
                .engine
                .scan(keyspace, lower, upper)
                .map_err(|e| e.to_string())?;
            for item in iter {
                let (k, c) = item.map_err(|e| e.to_string())?;
                let n = (k.key.len() + c.value_len()) as u64;
                pending_bytes += n;
                self.repair.bytes_read.fetch_add(n, Relaxed);
                // Pace in steps of 64 KiB: one wait per step, not per cell.
                if pending_bytes >= 64 * 1024 {
                    self.repair.throttle.acquire_blocking(pending_bytes);
                    pending_bytes = 0;
                }
                tree.add(&k, &c, snap);
            }
        }
        Ok(tree)
    }

    /// Serves a peer's [`RepairTree`].
    pub(super) async fn handle_repair_tree(
        self: &Arc<Self>,
        m: RepairTree,
    ) -> Result<RepairTreeReply, HandlerError> {
        if m.depth > MAX_TREE_DEPTH {
            return Err(HandlerError::new(format!(
                "tree depth {} exceeds {MAX_TREE_DEPTH}",
                m.depth
            )));
        }
        let range = TokenRange::new(Token(m.start), Token(m.end));
        let tree = self
            .tree_of(m.keyspace, range, m.depth, m.snapshot)
            .await
            .map_err(HandlerError::new)?;
        Ok(RepairTreeReply {
            root: tree.root(),
            leaves: if m.with_leaves {
                tree.leaves().to_vec()
            } else {
                Vec::new()
            },
            cells: tree.cells(),
            bytes: tree.bytes(),
        })
    }

    async fn tree_of(
        self: &Arc<Self>,
        keyspace: String,
        range: TokenRange,
        depth: u8,
        snap: Snapshot,
    ) -> Result<MerkleTree, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.build_tree_blocking(&keyspace, range, depth, &snap)
        })
        .await
        .map_err(|e| format!("tree task failed: {e}"))?
    }

    /// A replica's tree (this node's own, or a peer's by RPC).
    async fn replica_tree(
        self: &Arc<Self>,
        node: NodeId,
        keyspace: &str,
        range: TokenRange,
        depth: u8,
        snap: Snapshot,
        with_leaves: bool,
    ) -> Result<(u128, Option<MerkleTree>, u64, u64), String> {
        if node == self.id {
            let t = self
                .tree_of(keyspace.to_string(), range, depth, snap)
                .await?;
            let (cells, bytes) = (t.cells(), t.bytes());
            return Ok((t.root(), with_leaves.then_some(t), cells, bytes));
        }
        let addr = self
            .current_view()
            .addr_of(node)
            .ok_or_else(|| format!("no address for {node}"))?;
        let m = RepairTree {
            keyspace: keyspace.to_string(),
            start: range.start.0,
            end: range.end.0,
            depth,
            snapshot: snap,
            with_leaves,
        };
        let reply = self
            .rpc
            .call(addr, &m, Duration::from_millis(REPAIR_CALL_TIMEOUT_MS))
            .await
            .map_err(|e| e.to_string())?;
        let tree = if with_leaves {
            Some(
                MerkleTree::from_leaves(range, reply.leaves)
                    .ok_or_else(|| format!("{node} sent a malformed tree"))?,
            )
        } else {
            None
        };
        Ok((reply.root, tree, reply.cells, reply.bytes))
    }

    /// Every stored cell of `range` on a replica (tombstones included), page by page.
    async fn replica_cells(
        self: &Arc<Self>,
        node: NodeId,
        keyspace: &str,
        range: TokenRange,
    ) -> Result<Vec<(CellKey, Cell)>, String> {
        let mut out = Vec::new();
        for piece in range.unwrap() {
            let Some(mut from) = piece.start.0.checked_add(1).map(Token) else {
                continue;
            };
            loop {
                let (cells, next) = if node == self.id {
                    self.scan_local(keyspace.to_string(), from, piece.end, FETCH_PAGE_CELLS)
                        .await?
                } else {
                    let addr = self
                        .current_view()
                        .addr_of(node)
                        .ok_or_else(|| format!("no address for {node}"))?;
                    let m = ScanRange {
                        keyspace: keyspace.to_string(),
                        from: from.0,
                        to: piece.end.0,
                        limit: FETCH_PAGE_CELLS as u32,
                    };
                    let reply = self
                        .rpc
                        .call(addr, &m, Duration::from_millis(REPAIR_CALL_TIMEOUT_MS))
                        .await
                        .map_err(|e| e.to_string())?;
                    (
                        reply.cells.into_iter().map(WireCell::into_cell).collect(),
                        reply.next.map(Token),
                    )
                };
                let bytes: u64 = cells
                    .iter()
                    .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
                    .sum();
                if node == self.id {
                    self.repair.bytes_read.fetch_add(bytes, Relaxed);
                }
                self.repair.throttle.acquire(bytes).await;
                out.extend(cells);
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Sends `cells` to a replica, in bounded batches, paced by the budget.
    async fn push_cells(
        self: &Arc<Self>,
        node: NodeId,
        keyspace: &str,
        cells: Vec<(CellKey, Cell)>,
    ) -> Result<(), String> {
        let addr = self.current_view().addr_of(node);
        let timeout = Duration::from_millis(REPAIR_CALL_TIMEOUT_MS);
        for chunk in cells.chunks(PUSH_BATCH_CELLS) {
            let bytes: u64 = chunk
                .iter()
                .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
                .sum();
            self.repair.throttle.acquire(bytes).await;
            self.send_mutation(node, addr, keyspace.to_string(), chunk, timeout, false)
                .await
                .map_err(|e| format!("push to {node}: {e}"))?;
        }
        Ok(())
    }

    /// Repairs `range` of `keyspace` across `replicas`: compares roots, splits a large
    /// range, compares leaves, exchanges the differing cells.
    pub(crate) async fn repair_range(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
        full: bool,
    ) -> Result<RangeOutcome, String> {
        self.repair.running.fetch_add(1, Relaxed);
        self.repair.sessions.fetch_add(1, Relaxed);
        let r = if full {
            self.repair_range_full(keyspace, range, replicas).await
        } else {
            self.repair_range_inner(keyspace, range, replicas).await
        };
        self.repair.running.fetch_sub(1, Relaxed);
        match &r {
            Ok(o) => {
                if o.differed {
                    self.repair.ranges_out_of_sync.fetch_add(1, Relaxed);
                } else {
                    self.repair.ranges_in_sync.fetch_add(1, Relaxed);
                }
                self.repair
                    .cells_compared
                    .fetch_add(o.cells_compared, Relaxed);
                self.repair
                    .bytes_compared
                    .fetch_add(o.bytes_compared, Relaxed);
                self.repair.cells_moved.fetch_add(o.cells_moved, Relaxed);
                self.repair.bytes_moved.fetch_add(o.bytes_moved, Relaxed);
            }
            Err(e) => {
                self.repair.sessions_failed.fetch_add(1, Relaxed);
                tracing::warn!(%keyspace, ?range, error = %e, "repair session failed");
            }
        }
        r
    }

    /// The naive comparison: every replica's cells of the range, slice by slice, exchanged
    /// by the same plan (no trees).
    async fn repair_range_full(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
    ) -> Result<RangeOutcome, String> {
        let snap = self.snapshot_for(keyspace, &range);
        let mut out = RangeOutcome::default();
        if replicas.len() < 2 {
            return Ok(out);
        }
        for slice in range.split_even(FULL_MODE_SLICES) {
            self.exchange_slice(keyspace, slice, replicas, &snap, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Reads every replica's cells of `slice`, sends each what it lacks; adds to `out`.
    async fn exchange_slice(
        self: &Arc<Self>,
        keyspace: &str,
        slice: TokenRange,
        replicas: &[NodeId],
        snap: &Snapshot,
        out: &mut RangeOutcome,
    ) -> Result<(), String> {
        let mut held = Vec::with_capacity(replicas.len());
        for cells in self.cells_of_all(keyspace, slice, replicas).await? {
            out.cells_compared += cells.len() as u64;
            out.bytes_compared += cells
                .iter()
                .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
                .sum::<u64>();
            held.push(cells);
        }
        let plan = plan_sync(&held, snap);
        for (n, cells) in replicas.iter().zip(plan) {
            if cells.is_empty() {
                continue;
            }
            out.differed = true;
            out.cells_moved += cells.len() as u64;
            out.bytes_moved += cells
                .iter()
                .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
                .sum::<u64>();
            self.push_cells(*n, keyspace, cells).await?;
        }
        Ok(())
    }

    /// Every replica's tree of `range`, built concurrently (each replica reads its own
    /// engine under its own budget), in the order of `replicas`.
    async fn trees_of_all(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
        depth: u8,
        snap: Snapshot,
        with_leaves: bool,
    ) -> Result<Vec<(u128, Option<MerkleTree>, u64, u64)>, String> {
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in replicas.iter().copied().enumerate() {
            let (this, ks) = (self.clone(), keyspace.to_string());
            set.spawn(async move {
                let r = this
                    .replica_tree(n, &ks, range, depth, snap, with_leaves)
                    .await;
                (i, r)
            });
        }
        in_order(set, replicas.len(), "tree").await
    }

    /// Every replica's cells of `slice`, fetched concurrently, in the order of `replicas`.
    async fn cells_of_all(
        self: &Arc<Self>,
        keyspace: &str,
        slice: TokenRange,
        replicas: &[NodeId],
    ) -> Result<Vec<Vec<(CellKey, Cell)>>, String> {
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in replicas.iter().copied().enumerate() {
            let (this, ks) = (self.clone(), keyspace.to_string());
            set.spawn(async move { (i, this.replica_cells(n, &ks, slice).await) });
        }
        in_order(set, replicas.len(), "fetch").await
    }

    async fn repair_range_inner(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
    ) -> Result<RangeOutcome, String> {
        let snap = self.snapshot_for(keyspace, &range);
        if replicas.len() < 2 {
            return Ok(RangeOutcome::default());
        }
        // Round 1: roots and sizes.
        let mut roots = Vec::with_capacity(replicas.len());
        let mut out = RangeOutcome::default();
        let mut max_cells = 0;
        for (root, _, cells, bytes) in self
            .trees_of_all(keyspace, range, replicas, 0, snap, false)
            .await?
        {
            roots.push(root);
            out.cells_compared += cells;
            out.bytes_compared += bytes;
            max_cells = max_cells.max(cells);
        }
        if roots.iter().all(|r| *r == roots[0]) {
            return Ok(out);
        }
        out.differed = true;
        // Too much for one session: each half is its own session (retried alone on failure).
        let halves = range.split_even(2);
        if max_cells > self.config.repair.max_session_cells && halves.len() == 2 {
            let mut out = RangeOutcome {
                differed: true,
                ..RangeOutcome::default()
            };
            for half in halves {
                let o = Box::pin(self.repair_range_inner(keyspace, half, replicas)).await?;
                out.add(&o);
            }
            // The halves compared their own cells again; keep their figures.
            return Ok(out);
        }
        // Round 2: leaves at a depth sized to the range.
        let depth = depth_for(max_cells);
        let mut trees = Vec::with_capacity(replicas.len());
        for (_, tree, _, _) in self
            .trees_of_all(keyspace, range, replicas, depth, snap, true)
            .await?
        {
            trees.push(tree.ok_or("no tree")?);
        }
        let refs: Vec<&MerkleTree> = trees.iter().collect();
        // The trees already counted what was compared; the slices' figures are moves only.
        let mut moved = RangeOutcome::default();
        let slices = differing_ranges(&refs);
        let differing: u128 = slices.iter().map(TokenRange::width).sum();
        if differing.saturating_mul(WHOLE_RANGE_FETCH_DIVISOR) >= range.width() {
            // Differences everywhere: one paged pass over the range costs fewer round
            // trips than a fetch per scattered slice, for about the same bytes.
            self.exchange_slice(keyspace, range, replicas, &snap, &mut moved)
                .await?;
        } else {
            for slice in slices {
                self.exchange_slice(keyspace, slice, replicas, &snap, &mut moved)
                    .await?;
            }
        }
        out.cells_moved += moved.cells_moved;
        out.bytes_moved += moved.bytes_moved;
        Ok(out)
    }

    /// The snapshot a session of `range` compares at: now, minus the writes still in flight;
    /// tombstones purgeable per the keyspace's `tombstone_gc`.
    fn snapshot_for(&self, keyspace: &str, range: &TokenRange) -> Snapshot {
        let now_us = self.hlc.clock().wall_micros();
        let now_ms = now_us / 1_000;
        // Writes younger than a write's deadline may still be arriving at some replicas:
        // they are left out, or they would show as differences that are not.
        let lag_us = self.config.write_timeout_ms * 1_000 + SNAPSHOT_MARGIN_US;
        let options = self
            .schema
            .lock()
            .get(keyspace)
            .map(|d| d.options.clone())
            .unwrap_or_default();
        let purge_before_ms = match options.tombstone_gc {
            TombstoneGc::Timeout => now_ms.saturating_sub(options.gc_grace_ms),
            TombstoneGc::Repair => self.repair.watermarks.of(keyspace, range).unwrap_or(0),
        };
        Snapshot {
            now_ms,
            max_timestamp: Timestamp(now_us.saturating_sub(lag_us)),
            purge_before_ms,
        }
    }

    /// Tells every replica (this node too) that `range` is repaired up to `watermark_ms`;
    /// returns how many acknowledged.
    async fn announce_repaired(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
        watermark_ms: u64,
    ) -> usize {
        let m = RepairDone {
            keyspace: keyspace.to_string(),
            start: range.start.0,
            end: range.end.0,
            watermark_ms,
        };
        let mut acked = 0;
        for n in replicas {
            let ok = if *n == self.id {
                self.handle_repair_done(m.clone()).await.is_ok()
            } else if let Some(addr) = self.current_view().addr_of(*n) {
                self.rpc
                    .call(addr, &m, Duration::from_millis(REPAIR_CALL_TIMEOUT_MS))
                    .await
                    .is_ok()
            } else {
                false
            };
            acked += usize::from(ok);
        }
        acked
    }

    /// Records a peer's (or our own) completed repair of a range.
    pub(super) async fn handle_repair_done(
        self: &Arc<Self>,
        m: RepairDone,
    ) -> Result<RepairDoneAck, HandlerError> {
        let range = TokenRange::new(Token(m.start), Token(m.end));
        self.repair
            .watermarks
            .record(&m.keyspace, range, m.watermark_ms);
        let cell = system_cell(
            stored_range_key(&m.keyspace, &range),
            &m.watermark_ms,
            self.hlc.now(),
        );
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.engine.apply(SYSTEM_KEYSPACE, &[cell]))
            .await
            .map_err(|e| HandlerError::new(e.to_string()))?
            .map_err(|e| HandlerError::new(e.to_string()))?;
        Ok(RepairDoneAck {})
    }

    /// Loads the stored watermarks (at start).
    pub(crate) fn load_watermarks(&self) {
        for (key, ms) in self.repaired_at() {
            let rest = &key[RANGE_KEY_PREFIX.len()..];
            let mut parts = rest.rsplitn(3, '/');
            let (Some(e), Some(s), Some(ks)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(s), Ok(e)) = (s.parse::<i64>(), e.parse::<i64>()) else {
                continue;
            };
            self.repair
                .watermarks
                .record(ks, TokenRange::new(Token(s), Token(e)), ms);
        }
    }

    /// The ranges this node repairs for a request: for each keyspace, each vnode range
    /// whose replicas include this node (cut to the requested range), with its replicas.
    pub(crate) fn repair_ranges(
        &self,
        request: &RepairRequest,
        primary_only: bool,
    ) -> Vec<(String, TokenRange, Vec<NodeId>)> {
        let view = self.current_view();
        let mut out = Vec::new();
        for (name, route) in &view.routes {
            if request.keyspace.as_ref().is_some_and(|k| k != name) {
                continue;
            }
            for (range, replicas) in route.map.natural().ranges() {
                let mine = if primary_only {
                    replicas.first() == Some(&self.id)
                } else {
                    replicas.contains(&self.id)
                };
                if !mine {
                    continue;
                }
                let pieces = match request.range {
                    Some((s, e)) => range.intersection(&TokenRange::new(Token(s), Token(e))),
                    None => vec![range],
                };
                for p in pieces {
                    out.push((name.clone(), p, replicas.to_vec()));
                }
            }
        }
        out
    }

    /// Persists a job's progress (local `system` keyspace).
    async fn save_job(self: &Arc<Self>, job: &RepairJob) {
        let cell = system_cell(
            format!("{JOB_KEY_PREFIX}{:020}", job.id),
            job,
            self.hlc.now(),
        );
        let this = self.clone();
        let _ =
            tokio::task::spawn_blocking(move || this.engine.apply(SYSTEM_KEYSPACE, &[cell])).await;
    }

    /// Repairs `range` and announces its watermark to every replica (the repair covered
    /// them all: a session fails when any replica fails).
    async fn repair_and_record(
        self: &Arc<Self>,
        keyspace: &str,
        range: TokenRange,
        replicas: &[NodeId],
        full: bool,
    ) -> Result<RangeOutcome, String> {
        let watermark_ms = self.snapshot_for(keyspace, &range).max_timestamp.millis();
        let o = self.repair_range(keyspace, range, replicas, full).await?;
        self.announce_repaired(keyspace, range, replicas, watermark_ms)
            .await;
        Ok(o)
    }

    /// Every range's last successful repair time, by stored key.
    fn repaired_at(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let lower = std::ops::Bound::Included(CellKey::new(
            Token(0),
            Bytes::from_static(RANGE_KEY_PREFIX.as_bytes()),
        ));
        let Ok(iter) = self
            .engine
            .scan(SYSTEM_KEYSPACE, lower, std::ops::Bound::Unbounded)
        else {
            return out;
        };
        for (k, c) in iter.flatten() {
            if !k.key.starts_with(RANGE_KEY_PREFIX.as_bytes()) {
                break;
            }
            if let Some(ms) = decode_record::<u64>(&c) {
                out.insert(String::from_utf8_lossy(&k.key).into_owned(), ms);
            }
        }
        out
    }

    /// Jobs stored unfinished (a crash interrupted them), to resume.
    fn stored_unfinished_jobs(&self) -> Vec<RepairJob> {
        let lower = std::ops::Bound::Included(CellKey::new(
            Token(0),
            Bytes::from_static(JOB_KEY_PREFIX.as_bytes()),
        ));
        let Ok(iter) = self
            .engine
            .scan(SYSTEM_KEYSPACE, lower, std::ops::Bound::Unbounded)
        else {
            return Vec::new();
        };
        iter.flatten()
            .take_while(|(k, _)| k.key.starts_with(JOB_KEY_PREFIX.as_bytes()))
            .filter_map(|(_, c)| decode_record::<RepairJob>(&c))
            .filter(|j| j.finished_ms.is_none())
            .collect()
    }

    /// Runs a job from its first unfinished range to the end, persisting after each range.
    /// One range of a job: repaired across the replicas placement names now (the ring may
    /// have changed since the job began), or failed when one of them is down.
    async fn job_range(
        self: &Arc<Self>,
        (ks, s, e): &(String, i64, i64),
        full: bool,
    ) -> Result<RangeOutcome, String> {
        let range = TokenRange::new(Token(*s), Token(*e));
        let view = self.current_view();
        let replicas: Vec<NodeId> = view
            .routes
            .get(ks)
            .map(|r| r.map.natural().replicas(range.end).to_vec())
            .unwrap_or_default();
        let down = replicas.iter().filter(|n| !view.alive.contains(n)).count();
        if down > 0 {
            return Err(format!("{down} of {} replicas are down", replicas.len()));
        }
        self.repair_and_record(ks, range, &replicas, full).await
    }

    async fn run_job(self: &Arc<Self>, mut job: RepairJob) {
        tracing::info!(
            job = job.id,
            ranges = job.ranges.len(),
            done = job.done,
            "repair job running"
        );
        while job.done < job.ranges.len() {
            if self.shutdown.is_cancelled() {
                return;
            }
            // One range at a time: the replicas of a session already work concurrently, and
            // the budget, not the sessions, bounds the rate (`docs/benchmarks.md`, "Repair":
            // the busiest node is charged its full `bytes_per_sec`).
            match self
                .job_range(&job.ranges[job.done], job.request.full)
                .await
            {
                Ok(o) => job.totals.add(&o),
                Err(e) => {
                    job.failed += 1;
                    job.last_error = Some(e);
                }
            }
            job.done += 1;
            self.repair.jobs.lock().insert(job.id, job.clone());
            self.save_job(&job).await;
        }
        job.finished_ms = Some(self.clock.wall_millis());
        tracing::info!(
            job = job.id,
            failed = job.failed,
            cells_moved = job.totals.cells_moved,
            "repair job finished"
        );
        self.repair.jobs.lock().insert(job.id, job.clone());
        self.save_job(&job).await;
        let mut jobs = self.repair.jobs.lock();
        while jobs.values().filter(|j| j.finished_ms.is_some()).count() > MAX_FINISHED_JOBS {
            let Some(oldest) = jobs
                .values()
                .filter(|j| j.finished_ms.is_some())
                .map(|j| j.id)
                .next()
            else {
                break;
            };
            jobs.remove(&oldest);
        }
    }
}

impl Node {
    /// Starts a repair job of the ranges this node replicates (within the request); returns
    /// its id. The job runs in the background; `repair_stats` shows its progress.
    pub async fn start_repair(&self, request: RepairRequest) -> Result<u64, NodeError> {
        self.inner.check_coordinator()?;
        if let Some(ks) = &request.keyspace
            && !self.inner.current_view().routes.contains_key(ks)
        {
            return Err(NodeError::NoSuchKeyspace(ks.clone()));
        }
        let ranges = self.inner.repair_ranges(&request, false);
        let job = self.inner.new_job(request, ranges);
        let id = job.id;
        self.inner.repair.jobs.lock().insert(id, job.clone());
        self.inner.save_job(&job).await;
        let inner = self.inner.clone();
        self.spawn(async move { inner.run_job(job).await });
        Ok(id)
    }

    /// Repair counters, the node's primary ranges' repair ages, and recent jobs.
    pub fn repair_stats(&self) -> RepairStats {
        let inner = &self.inner;
        let r = &inner.repair;
        let repaired = inner.repaired_at();
        let now = inner.clock.wall_millis();
        let mut primary: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut oldest: Option<u64> = Some(0);
        for (ks, range, _) in inner.repair_ranges(&RepairRequest::default(), true) {
            let e = primary.entry(ks.clone()).or_default();
            e.0 += 1;
            match repaired.get(&stored_range_key(&ks, &range)) {
                Some(at) => {
                    e.1 += 1;
                    oldest = oldest.map(|o| o.max(now.saturating_sub(*at)));
                }
                None => oldest = None,
            }
        }
        RepairStats {
            enabled: inner.config.repair.enabled,
            bytes_per_sec: r.throttle.rate(),
            sessions: r.sessions.load(Relaxed),
            sessions_failed: r.sessions_failed.load(Relaxed),
            ranges_in_sync: r.ranges_in_sync.load(Relaxed),
            ranges_out_of_sync: r.ranges_out_of_sync.load(Relaxed),
            cells_compared: r.cells_compared.load(Relaxed),
            bytes_compared: r.bytes_compared.load(Relaxed),
            cells_moved: r.cells_moved.load(Relaxed),
            bytes_moved: r.bytes_moved.load(Relaxed),
            bytes_read: r.bytes_read.load(Relaxed),
            running: r.running.load(Relaxed),
            bytes_charged: r.throttle.charged.load(Relaxed),
            max_age_ms: if primary.is_empty() { None } else { oldest },
            primary_ranges: primary,
            jobs: r.jobs.lock().values().cloned().collect(),
        }
    }
}

/// Resumes jobs a crash interrupted, then runs the always-on repair: the node's primary
/// ranges, the one repaired longest ago first (never-repaired ones before all), one every
/// `interval / ranges` so each is repaired about once per interval.
pub(crate) async fn run(inner: Arc<Inner>) {
    for job in inner.stored_unfinished_jobs() {
        tracing::info!(
            job = job.id,
            done = job.done,
            of = job.ranges.len(),
            "resuming an interrupted repair job"
        );
        inner.repair.jobs.lock().insert(job.id, job.clone());
        let i = inner.clone();
        tokio::spawn(async move { i.run_job(job).await });
    }
    if inner.needs_repair.load(Relaxed) {
        inner.repair_lost_data().await;
    }
    if !inner.config.repair.enabled {
        return;
    }
    let initial = Duration::from_millis(inner.config.repair.initial_delay_ms);
    tokio::select! {
        _ = inner.shutdown.cancelled() => return,
        _ = tokio::time::sleep(initial) => {}
    }
    // Tokens of hints that were dropped (their replicas missed writes no hint will bring):
    // repaired before anything else. Lost on a restart; the regular schedule covers them.
    // Each with when it went dirty: a repair leaves out writes younger than a write's
    // deadline (`snapshot_for`), so a token is taken only once its dropped writes are older.
    let mut dirty: BTreeMap<Token, Instant> = BTreeMap::new();
    // When the regular schedule takes its next range (one per `interval / ranges`).
    let mut next_regular = Instant::now();
    let settle = Duration::from_micros(inner.config.write_timeout_ms * 1_000 + SNAPSHOT_MARGIN_US);
    let mut last_purge = Instant::now();
    loop {
        if let Some(h) = inner.hints.clone()
            && last_purge.elapsed() >= Duration::from_millis(HINT_PURGE_INTERVAL_MS)
        {
            last_purge = Instant::now();
            // Expired hints are dropped on this timer too, not only when replayed: a target
            // that never comes back must not hold the disk, and its ranges go dirty.
            let _ = tokio::task::spawn_blocking(move || h.purge_expired()).await;
        }
        let now = Instant::now();
        for t in inner.take_dirty_tokens() {
            dirty.entry(t).or_insert(now);
        }
        let ranges = inner.repair_ranges(&RepairRequest::default(), true);
        let pause =
            Duration::from_millis(inner.config.repair.interval_ms / (ranges.len().max(1) as u64));
        let repaired = inner.repaired_at();
        let view = inner.current_view();
        let all_up = |replicas: &[NodeId]| replicas.iter().all(|n| view.alive.contains(n));
        // A dirty token's ranges first (whoever's primary they are), then the primary range
        // repaired longest ago, when it is due.
        let dirty_next = dirty
            .iter()
            .find(|(_, since)| since.elapsed() >= settle)
            .map(|(t, _)| *t);
        let mut waiting_for_replicas = !dirty.is_empty() && dirty_next.is_none();
        let next = if let Some(t) = dirty_next {
            let found = inner
                .ranges_of_token(t)
                .into_iter()
                .find(|(_, _, replicas)| all_up(replicas));
            // A token whose replicas are not all up waits for them (the drop happened while
            // the target was away); the others go ahead.
            if found.is_some() {
                dirty.remove(&t);
            } else {
                waiting_for_replicas = true;
            }
            found
        } else if Instant::now() >= next_regular {
            next_regular = Instant::now() + pause;
            ranges
                .into_iter()
                .min_by_key(|(ks, r, _)| {
                    repaired.get(&stored_range_key(ks, r)).copied().unwrap_or(0)
                })
                .filter(|(ks, r, _)| {
                    repaired.get(&stored_range_key(ks, r)).is_none_or(|at| {
                        inner.clock.wall_millis().saturating_sub(*at)
                            >= inner.config.repair.interval_ms
                    })
                })
                .filter(|(_, _, replicas)| all_up(replicas))
        } else {
            None
        };
        if let Some((ks, range, replicas)) = next
            && inner.ready.load(Relaxed)
        {
            let _ = inner.repair_and_record(&ks, range, &replicas, false).await;
        }
        if !dirty.is_empty() && !waiting_for_replicas {
            continue;
        }
        // The pause between scheduled ranges can be long (interval / ranges); newly dirty
        // tokens end it early.
        let until = if waiting_for_replicas {
            next_regular.min(Instant::now() + Duration::from_millis(DIRTY_CHECK_INTERVAL_MS))
        } else {
            next_regular
        };
        loop {
            let step = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(DIRTY_CHECK_INTERVAL_MS));
            if step.is_zero() {
                break;
            }
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(step) => {}
            }
            let fresh = inner.take_dirty_tokens();
            if !fresh.is_empty() {
                let now = Instant::now();
                for t in fresh {
                    dirty.entry(t).or_insert(now);
                }
                break;
            }
        }
    }
}

/// The results of `n` tasks that each return their index, in index order; the first error
/// (or a task that panicked) fails the whole.
async fn in_order<T: 'static>(
    mut set: tokio::task::JoinSet<(usize, Result<T, String>)>,
    n: usize,
    what: &str,
) -> Result<Vec<T>, String> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.map_err(|e| format!("{what} task: {e}"))?;
        out[i] = Some(r?);
    }
    out.into_iter()
        .map(|t| t.ok_or_else(|| format!("{what} task vanished")))
        .collect()
}

/// How often the always-on worker looks for newly dirty tokens while it pauses between
/// scheduled ranges, in ms: dropped hints are repaired within about this of the drop.
const DIRTY_CHECK_INTERVAL_MS: u64 = 1_000;
/// How often expired hints are purged, in ms.
const HINT_PURGE_INTERVAL_MS: u64 = 60_000;
/// File in the data directory that says this node lost its data and must be repaired
/// before it serves reads again; it holds the id of the repair job that restores it.
pub const NEEDS_REPAIR_FILE: &str = "needs_repair";

impl Inner {
    /// The tokens of dropped hints since the last call (the hint store's dirty ranges).
    fn take_dirty_tokens(&self) -> Vec<Token> {
        let Some(h) = &self.hints else {
            return Vec::new();
        };
        let d = h.take_dirty_ranges();
        let mut out: Vec<Token> = d.tokens.into_iter().map(|(_, t)| t).collect();
        if !d.whole_targets.is_empty() {
            // Too many to remember one by one: every range those targets replicate.
            let view = self.current_view();
            for route in view.routes.values() {
                for (range, replicas) in route.map.natural().ranges() {
                    if replicas.iter().any(|n| d.whole_targets.contains(n)) {
                        out.push(range.end);
                    }
                }
            }
        }
        out
    }

    /// The vnode ranges (every keyspace) that contain `token`, with their replicas.
    fn ranges_of_token(&self, token: Token) -> Vec<(String, TokenRange, Vec<NodeId>)> {
        let view = self.current_view();
        let mut out = Vec::new();
        for (ks, route) in &view.routes {
            if let Some((range, replicas)) = route
                .map
                .natural()
                .ranges()
                .find(|(r, _)| r.contains(token))
            {
                out.push((ks.clone(), range, replicas.to_vec()));
            }
        }
        out
    }

    /// A node that lost its data: repairs every range it replicates, in one job, retried
    /// until it succeeds, then serves reads again.
    async fn repair_lost_data(self: &Arc<Self>) {
        tracing::warn!(node = %self.id, "this node lost its data: it serves no reads until a repair of its ranges completes");
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            // Wait to be routed to, and for the replicas of our ranges to be up.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.ready.load(Relaxed) {
                continue;
            }
            let ranges = self.repair_ranges(&RepairRequest::default(), false);
            let view = self.current_view();
            if ranges
                .iter()
                .any(|(_, _, r)| r.iter().any(|n| !view.alive.contains(n)))
            {
                continue;
            }
            let job = self.new_job(RepairRequest::default(), ranges);
            let id = job.id;
            self.repair.jobs.lock().insert(id, job.clone());
            self.run_job(job).await;
            let ok = self
                .repair
                .jobs
                .lock()
                .get(&id)
                .is_some_and(|j| j.failed == 0 && j.finished_ms.is_some());
            if ok {
                let _ = std::fs::remove_file(self.config.data_dir.join(NEEDS_REPAIR_FILE));
                self.needs_repair.store(false, Relaxed);
                tracing::info!(node = %self.id, job = id, "lost data restored by repair; serving reads again");
                return;
            }
        }
    }

    /// A new job over `ranges`.
    fn new_job(
        &self,
        request: RepairRequest,
        ranges: Vec<(String, TokenRange, Vec<NodeId>)>,
    ) -> RepairJob {
        let id = self.repair.next_job.fetch_add(1, Relaxed) + self.clock.wall_millis() * 1_000;
        RepairJob {
            id,
            request,
            ranges: ranges
                .into_iter()
                .map(|(ks, r, _)| (ks, r.start.0, r.end.0))
                .collect(),
            done: 0,
            failed: 0,
            totals: RangeOutcome::default(),
            started_ms: self.clock.wall_millis(),
            finished_ms: None,
            last_error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_puts_about_the_target_in_a_leaf() {
        assert_eq!(depth_for(0), 1);
        assert_eq!(depth_for(LEAF_TARGET_CELLS), 1);
        // 100,000 cells: 12,500 leaves' worth, 2^14 leaves of about 6 cells.
        assert_eq!(depth_for(100_000), 14);
        assert!(100_000 >> depth_for(100_000) <= LEAF_TARGET_CELLS);
        assert_eq!(depth_for(u64::MAX), MAX_TREE_DEPTH);
    }

    #[test]
    fn the_throttle_paces_to_its_rate() {
        let t = Throttle::new(1_000);
        assert_eq!(t.take(1_000), Duration::ZERO, "a second's worth at once");
        let wait = t.take(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
