//! The node's counters (plain atomics) and the serde snapshots `Node::stats()` and
//! `Node::status()` return for INFO, the admin API and `hearsay status`.

use super::schema::KeyspaceDef;
use hearsay_types::ConsistencyLevel;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

fn level_index(cl: ConsistencyLevel) -> usize {
    ConsistencyLevel::ALL_LEVELS
        .iter()
        .position(|l| *l == cl)
        .unwrap_or(0)
}

/// One counter per consistency level.
#[derive(Debug, Default)]
pub struct PerLevel([AtomicU64; 8]);

impl PerLevel {
    pub fn inc(&self, cl: ConsistencyLevel) {
        self.0[level_index(cl)].fetch_add(1, Relaxed);
    }

    /// Non-zero counters by level name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        ConsistencyLevel::ALL_LEVELS
            .iter()
            .zip(&self.0)
            .map(|(l, c)| (l.name().to_string(), c.load(Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// Coordinator and background-worker counters since start.
#[derive(Debug, Default)]
pub struct Counters {
    pub writes: PerLevel,
    pub reads: PerLevel,
    pub scans: AtomicU64,
    pub write_unavailable: AtomicU64,
    pub read_unavailable: AtomicU64,
    pub write_timeouts: AtomicU64,
    pub read_timeouts: AtomicU64,
    pub write_failures: AtomicU64,
    pub read_failures: AtomicU64,
    /// Reads whose digests disagreed (a full-read round followed).
    pub digest_mismatches: AtomicU64,
    /// Replicas sent a blocking read-repair write.
    pub read_repairs: AtomicU64,
    pub read_repair_failures: AtomicU64,
    /// Cells replicas reported as losing to a newer stored version.
    pub superseded_cells: AtomicU64,
    pub hints_stored: AtomicU64,
    pub hints_dropped: AtomicU64,
    pub hint_replays_ok: AtomicU64,
    pub hint_replays_failed: AtomicU64,
    pub hints_replayed: AtomicU64,
    pub schema_pulls: AtomicU64,
    pub schema_pull_failures: AtomicU64,
    pub view_rebuilds: AtomicU64,
    /// Mutations applied as a replica (any origin).
    pub replica_mutations: AtomicU64,
    pub replica_reads: AtomicU64,
    /// Mutations refused as a replica for timestamps too far ahead of our clock.
    pub future_mutations_refused: AtomicU64,
    /// Writes refused as a coordinator because our clock is off.
    pub writes_refused_clock_skew: AtomicU64,
    /// Writes re-sent with a newer timestamp because a replica held a newer version.
    pub superseded_retries: AtomicU64,
}

/// Coordinator counters, as served.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CoordinatorStats {
    pub writes_by_level: BTreeMap<String, u64>,
    pub reads_by_level: BTreeMap<String, u64>,
    pub scans: u64,
    pub write_unavailable: u64,
    pub read_unavailable: u64,
    pub write_timeouts: u64,
    pub read_timeouts: u64,
    pub write_failures: u64,
    pub read_failures: u64,
    pub digest_mismatches: u64,
    pub read_repairs: u64,
    pub read_repair_failures: u64,
    pub superseded_cells: u64,
    pub replica_mutations: u64,
    pub replica_reads: u64,
    pub future_mutations_refused: u64,
    pub writes_refused_clock_skew: u64,
    pub superseded_retries: u64,
}

/// Hint figures, as served.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HintsStats {
    pub enabled: bool,
    /// Undelivered hints per target node id: `(count, bytes)`.
    pub pending: BTreeMap<String, (u64, u64)>,
    pub pending_total: u64,
    pub stored_total: u64,
    pub delivered_total: u64,
    pub dropped_total: BTreeMap<String, u64>,
    pub bytes_on_disk: u64,
    pub replays_ok: u64,
    pub replays_failed: u64,
    /// Targets whose replay is running now.
    pub replaying: Vec<String>,
}

/// `Node::stats()`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStats {
    pub node_id: String,
    pub coordinator: CoordinatorStats,
    pub hints: HintsStats,
    pub schema_version: String,
    pub schema_pulls: u64,
    pub schema_pull_failures: u64,
    pub view_rebuilds: u64,
    /// Each peer's physical clock offset from ours (their wall clock minus ours), µs,
    /// measured by RPC pings (off by at most half the round trip).
    pub clock_skew_us: BTreeMap<String, i64>,
    /// How far each peer's HLC readings run ahead of our wall clock, µs, from RPC frames
    /// (whoever pushed them there).
    pub hlc_lead_us: BTreeMap<String, i64>,
    /// The verdict on our own clock.
    pub clock: ClockStats,
    /// What is wrong with this node, if anything.
    pub health: super::health::NodeHealth,
}

/// The verdict on this node's clock, as served.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClockStats {
    /// Our clock is more than `max_offset_ms` from a majority of the peers measured.
    pub skewed: bool,
    /// Median of the peers' offsets from us, µs (positive: we are behind).
    pub median_peer_offset_us: i64,
    pub peers_measured: usize,
    pub peers_far: usize,
    pub max_offset_ms: u64,
}

impl Counters {
    pub fn coordinator(&self) -> CoordinatorStats {
        CoordinatorStats {
            writes_by_level: self.writes.snapshot(),
            reads_by_level: self.reads.snapshot(),
            scans: self.scans.load(Relaxed),
            write_unavailable: self.write_unavailable.load(Relaxed),
            read_unavailable: self.read_unavailable.load(Relaxed),
            write_timeouts: self.write_timeouts.load(Relaxed),
            read_timeouts: self.read_timeouts.load(Relaxed),
            write_failures: self.write_failures.load(Relaxed),
            read_failures: self.read_failures.load(Relaxed),
            digest_mismatches: self.digest_mismatches.load(Relaxed),
            read_repairs: self.read_repairs.load(Relaxed),
            read_repair_failures: self.read_repair_failures.load(Relaxed),
            superseded_cells: self.superseded_cells.load(Relaxed),
            replica_mutations: self.replica_mutations.load(Relaxed),
            replica_reads: self.replica_reads.load(Relaxed),
            future_mutations_refused: self.future_mutations_refused.load(Relaxed),
            writes_refused_clock_skew: self.writes_refused_clock_skew.load(Relaxed),
            superseded_retries: self.superseded_retries.load(Relaxed),
        }
    }
}

/// One row of `hearsay status` (like `nodetool status`).
#[derive(Clone, Debug, Serialize)]
pub struct MemberRow {
    /// `UN`, `DN`, `UJ`, `UL`, ...: U/D (alive as the coordinator counts it) + ring status.
    pub code: String,
    pub node_id: String,
    pub is_self: bool,
    pub cluster_addr: Option<String>,
    pub client_addr: Option<String>,
    pub admin_addr: Option<String>,
    /// Bytes stored, as the member last announced.
    pub load_bytes: Option<u64>,
    pub tokens: usize,
    /// Effective ownership (fraction of the data it holds a replica of) per keyspace.
    pub owns_effective: BTreeMap<String, f64>,
    pub dc: String,
    pub rack: String,
    /// UP, SUSPECT, DOWN, REMOVED as gossip sees it.
    pub liveness: String,
    pub status: String,
    pub generation: u64,
    pub heartbeat: u64,
    pub phi: Option<f64>,
    pub schema_version: Option<String>,
    /// The member's physical clock offset from ours, µs (positive: it is ahead).
    pub clock_skew_us: Option<i64>,
    /// Health codes the member gossips (`clock_skew`, `storage_poisoned`, `disk_full`).
    pub health: Vec<String>,
}

/// `Node::status()`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub node_name: String,
    pub cluster_name: String,
    pub generation: u64,
    pub cluster_addr: String,
    /// Whether the node coordinates requests (it has heard from a peer since it started).
    pub ready: bool,
    /// What is wrong with this node, if anything.
    pub health: super::health::NodeHealth,
    pub schema_version: String,
    pub keyspaces: Vec<KeyspaceDef>,
    pub members: Vec<MemberRow>,
}
