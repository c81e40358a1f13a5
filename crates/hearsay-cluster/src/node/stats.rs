//! The node's counters (plain atomics) and the serde snapshots `Node::stats()` and
//! `Node::status()` return for INFO, the admin API and `hearsay status`.

use super::schema::KeyspaceDef;
use super::{Inner, NodeId};
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

impl Inner {
    pub(super) fn stats(&self) -> NodeStats {
        let c = &self.counters;
        let mut hints = HintsStats {
            enabled: self.hints.is_some(),
            replays_ok: c.hint_replays_ok.load(Relaxed),
            replays_failed: c.hint_replays_failed.load(Relaxed),
            replaying: self
                .hint_scheduler
                .lock()
                .in_flight()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            ..HintsStats::default()
        };
        if let Some(h) = &self.hints {
            let s = h.stats();
            for (n, t) in &s.targets {
                if t.pending_count > 0 {
                    hints
                        .pending
                        .insert(n.to_string(), (t.pending_count, t.pending_bytes));
                    hints.pending_total += t.pending_count;
                }
            }
            hints.stored_total = s.stored_total;
            hints.delivered_total = s.delivered_total;
            hints.dropped_total = s
                .dropped_total
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            hints.bytes_on_disk = s.bytes_on_disk;
        }
        NodeStats {
            node_id: self.id.to_string(),
            coordinator: c.coordinator(),
            hints,
            schema_version: self.schema.lock().version(),
            schema_pulls: c.schema_pulls.load(Relaxed),
            schema_pull_failures: c.schema_pull_failures.load(Relaxed),
            view_rebuilds: c.view_rebuilds.load(Relaxed),
            clock_skew_us: self
                .rpc
                .context()
                .clocks
                .offsets()
                .into_iter()
                .map(|(n, s)| (n.to_string(), s.offset_us))
                .collect(),
            hlc_lead_us: self
                .rpc
                .context()
                .clocks
                .snapshot()
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
            clock: {
                let v = self.clock_verdict.lock().clone();
                ClockStats {
                    skewed: v.skewed,
                    median_peer_offset_us: v.median_offset_us,
                    peers_measured: v.measured,
                    peers_far: v.far,
                    max_offset_ms: self.config.max_clock_offset_ms,
                }
            },
            health: self.health(),
        }
    }

    pub(super) fn status(&self) -> NodeStatus {
        let view = self.current_view();
        let skew = self.rpc.context().clocks.offsets();
        let health = self.health();
        let own_codes: Vec<String> = health.codes().iter().map(|c| c.to_string()).collect();
        let owns: BTreeMap<String, BTreeMap<NodeId, f64>> = view
            .routes
            .iter()
            .map(|(name, r)| (name.clone(), r.map.natural().effective_ownerships()))
            .collect();
        let members = view
            .membership
            .members
            .values()
            .map(|m| {
                let codes = if m.id == self.id {
                    own_codes.clone()
                } else {
                    m.health.clone()
                };
                // U(p), D(own), or S(ick): alive but refusing writes (clock or storage).
                let up = if !(m.is_alive() || m.id == self.id) {
                    'D'
                } else if codes.is_empty() {
                    'U'
                } else {
                    'S'
                };
                MemberRow {
                    code: format!("{up}{}", m.status.letter()),
                    node_id: m.id.to_string(),
                    is_self: m.id == self.id,
                    cluster_addr: m.cluster_addr.map(|a| a.to_string()),
                    client_addr: m.client_addr.map(|a| a.to_string()),
                    admin_addr: m.admin_addr.map(|a| a.to_string()),
                    load_bytes: m.load_bytes,
                    tokens: m.tokens.len(),
                    owns_effective: owns
                        .iter()
                        .map(|(k, o)| (k.clone(), o.get(&m.id).copied().unwrap_or(0.0)))
                        .collect(),
                    dc: m.dc.clone(),
                    rack: m.rack.clone(),
                    liveness: format!("{:?}", m.live).to_uppercase(),
                    status: format!("{:?}", m.status).to_uppercase(),
                    generation: m.generation,
                    heartbeat: m.heartbeat,
                    phi: m.phi,
                    schema_version: m.schema_version.clone(),
                    clock_skew_us: skew.get(&m.id).map(|s| s.offset_us),
                    health: codes,
                }
            })
            .collect();
        let schema = self.schema.lock();
        NodeStatus {
            node_id: self.id.to_string(),
            node_name: self.config.node_name.clone(),
            cluster_name: self.config.cluster_name.clone(),
            generation: self.generation,
            cluster_addr: view
                .addr_of(self.id)
                .map_or_else(String::new, |a| a.to_string()),
            ready: self.ready.load(Relaxed),
            health,
            schema_version: schema.version(),
            keyspaces: schema.live_defs().cloned().collect(),
            members,
        }
    }
}
