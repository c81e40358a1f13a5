//! The node's configuration: one serde struct with a documented default for every field and a
//! `validate()` that rejects contradictions. Each subsystem gets only its own part
//! (`gossip_config()`, `rpc_config()`, `hint_config()`, ...).

use crate::hints::{HintConfig, HintSchedulerConfig, HintSyncPolicy};
use crate::rpc::RpcConfig;
use hearsay_gossip::{GossipConfig, GossipMode};
use hearsay_ring::{AllocatorConfig, DEFAULT_NUM_TOKENS, MAX_REPLICATION_FACTOR, MAX_WEIGHT};
use hearsay_types::ConsistencyLevel;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default internode port (RPC on TCP and gossip on UDP share it), per ARCHITECTURE.md.
pub const DEFAULT_CLUSTER_PORT: u16 = 7381;
/// Default write timeout: Cassandra's `write_request_timeout` (2 s).
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 2_000;
/// Default read timeout: Cassandra's `read_request_timeout` (5 s).
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 5_000;
/// Default replication factor of the `default` keyspace: 3, the usual Dynamo/Cassandra N.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// Default bound on waiting for the ring at first start, in ms: long enough for a few gossip
/// rounds with the seeds at the default 1 s interval, short enough that a node whose seeds
/// are all down still starts (alone) in seconds.
pub const DEFAULT_JOIN_WAIT_MS: u64 = 5_000;
/// Largest `max_clock_offset_ms`: beyond a minute the bound no longer protects anything a
/// client would notice, and every node's HLC could be dragged that far ahead.
pub const MAX_CLOCK_OFFSET_MS: u64 = 60_000;
/// Longest a timeout may be set to, in ms: beyond a minute a client has long given up, and
/// every in-flight request holds memory until its deadline.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// Hint settings (the serde face of [`HintConfig`] + [`HintSchedulerConfig`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HintSettings {
    /// Store hints at all. Default true. Without hints a replica that missed writes catches
    /// up only through read repair.
    pub enabled: bool,
    /// Cap on one target's hint files. Default 128 MiB.
    pub max_bytes_per_target: u64,
    /// Cap on all hint files. Default 1 GiB.
    pub max_total_bytes: u64,
    /// Hints older than this are dropped (range marked for repair). Default 3 h.
    pub max_hint_age_ms: u64,
    /// fsync hint appends every this many ms; 0 = every append (batch). Default 1000.
    pub sync_interval_ms: u64,
    /// Replay rate per target. Default 1 MiB/s (Cassandra's throttle).
    pub replay_bytes_per_sec: u64,
    /// Replay batch size. Default 256 KiB.
    pub replay_batch_bytes: u64,
    /// First retry delay after a failed replay. Default 10 s.
    pub retry_initial_ms: u64,
    /// Retry delay cap. Default 5 min.
    pub retry_max_ms: u64,
    /// Targets replayed at once. Default 2.
    pub max_concurrent_targets: usize,
}

impl Default for HintSettings {
    fn default() -> Self {
        let h = HintConfig::default();
        let s = HintSchedulerConfig::default();
        HintSettings {
            enabled: true,
            max_bytes_per_target: h.max_bytes_per_target,
            max_total_bytes: h.max_total_bytes,
            max_hint_age_ms: h.max_hint_age_ms,
            sync_interval_ms: crate::hints::DEFAULT_SYNC_INTERVAL_MS,
            replay_bytes_per_sec: s.max_bytes_per_sec_per_target,
            replay_batch_bytes: s.batch_bytes,
            retry_initial_ms: s.retry_initial_ms,
            retry_max_ms: s.retry_max_ms,
            max_concurrent_targets: s.max_concurrent_targets,
        }
    }
}

/// Gossip settings passed through to [`GossipConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSettings {
    /// Gossip round. Default 1000 ms.
    pub interval_ms: u64,
    /// Phi above which a watched node is suspected. Default 8.
    pub phi_threshold: f64,
    /// Monitors per node (a majority of them convicts it DOWN). Default 5.
    pub monitors: usize,
    /// Exchange mode. Default push-pull.
    pub mode: GossipMode,
    /// Byte budget of one datagram. Default 1400.
    pub max_packet_bytes: usize,
}

impl Default for GossipSettings {
    fn default() -> Self {
        let g = GossipConfig::new("x", b"", SocketAddr::from(([127, 0, 0, 1], 0)));
        GossipSettings {
            interval_ms: g.interval_ms,
            phi_threshold: g.phi_threshold,
            monitors: g.monitors,
            mode: g.mode,
            max_packet_bytes: g.max_packet_bytes,
        }
    }
}

/// RPC settings passed through to [`RpcConfig`] (the rest keep their defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcSettings {
    /// Default 1000 ms.
    pub connect_timeout_ms: u64,
    /// Reconnect backoff cap. Default 5000 ms.
    pub backoff_max_ms: u64,
    /// Default 1000 ms.
    pub keepalive_interval_ms: u64,
    /// Default 5000 ms.
    pub peer_silence_timeout_ms: u64,
}

impl Default for RpcSettings {
    fn default() -> Self {
        let r = RpcConfig::default();
        RpcSettings {
            connect_timeout_ms: r.connect_timeout_ms,
            backoff_max_ms: r.backoff_max_ms,
            keepalive_interval_ms: r.keepalive_interval_ms,
            peer_silence_timeout_ms: r.peer_silence_timeout_ms,
        }
    }
}

/// Everything one node needs to join a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its identity (`node_id`, `generation`), its tokens and its hints.
    /// The engine's directory is chosen by the caller (it may be a subdirectory). Default
    /// `data`.
    pub data_dir: PathBuf,
    /// A human name for logs and status (not an identity: the node id is). Default empty.
    pub node_name: String,
    /// Data centre. Default `dc1`.
    pub dc: String,
    /// Rack. Default `rack1`.
    pub rack: String,
    /// Vnode tokens per unit of weight. Default 16 (see docs/ring.md).
    pub num_tokens: usize,
    /// Relative capacity: `weight × num_tokens` tokens. Default 1.
    pub weight: u32,
    /// Internode address: TCP RPC and UDP gossip share it; also what peers are told. Port 0
    /// picks a free TCP port and binds gossip on the same number. Default `127.0.0.1:7381`.
    pub cluster_addr: SocketAddr,
    /// RESP address to advertise in gossip (for clients and `hearsay status`).
    pub client_addr: Option<SocketAddr>,
    /// Admin HTTP address to advertise in gossip.
    pub admin_addr: Option<SocketAddr>,
    /// Seed cluster addresses (the same list on every node). Empty: a one-node cluster that
    /// others may join by naming it.
    pub seeds: Vec<SocketAddr>,
    /// Cluster name: gossip and RPC from another cluster are refused. Default `hearsay`.
    pub cluster_name: String,
    /// Shared secret proving cluster membership (gossip HMAC and RPC handshake). Default
    /// empty (development only).
    pub secret: String,
    /// Coordinator write deadline. Default 2000 ms (Cassandra).
    pub write_timeout_ms: u64,
    /// Coordinator read deadline. Default 5000 ms (Cassandra).
    pub read_timeout_ms: u64,
    /// Replication factor of the `default` keyspace (simple strategy). Default 3. Must be
    /// the same on every node (the definition has timestamp 0, so any ALTER overrides it).
    pub default_replication_factor: usize,
    /// Level used when a request names none. Default ONE.
    pub default_consistency: ConsistencyLevel,
    /// At first start, how long to wait for the seeds to tell us the ring before choosing
    /// tokens; at every start, how long to wait to hear from a peer before serving (see
    /// docs/cluster.md, restarts). Default 5000 ms.
    pub join_wait_ms: u64,
    /// Largest offset of this node's wall clock from the majority of its peers' before it
    /// refuses to coordinate writes, in ms; timestamps more than twice this ahead of a
    /// replica's clock are refused. Default 500 (CockroachDB's `max-offset`; see
    /// docs/cluster.md, "Clocks").
    pub max_clock_offset_ms: u64,
    /// Replicas check every write against what they hold and report cells that lost to a
    /// newer stored version ("superseded"). Costs one point read per written cell on each
    /// replica. Default true.
    pub report_superseded: bool,
    pub hints: HintSettings,
    pub gossip: GossipSettings,
    pub rpc: RpcSettings,
    /// Anti-entropy repair (`docs/repair.md`).
    pub repair: RepairSettings,
    /// Test-only seams (`docs/testing.md`); all off by default. Never set in production.
    pub testing: TestingSettings,
}

/// Anti-entropy repair settings (`[cluster.repair]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairSettings {
    /// Repair continuously: every node repairs the ranges it is primary for, spread over
    /// `interval_ms`, dirty ranges first. Default true.
    pub enabled: bool,
    /// Every primary range is repaired at least once per this, in ms. Default one day: well
    /// within the default `gc_grace` of ten days, so deletes reach every replica before
    /// their tombstones may be purged.
    pub interval_ms: u64,
    /// Bytes per second that every repair on this node together may read and send. Default
    /// 16 MiB/s: a fraction of a disk's and a NIC's bandwidth, so foreground requests keep
    /// theirs.
    pub bytes_per_sec: u64,
    /// Largest sub-range one session compares, in cells (estimated from the trees): a larger
    /// range is split, and a failed sub-range is retried alone. Default 100,000 (about 10 MB
    /// of 100-byte values).
    pub max_session_cells: u64,
    /// Pause before the always-on worker's first session after start, in ms. Default 60 s,
    /// so that a restarting cluster settles first.
    pub initial_delay_ms: u64,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            enabled: true,
            interval_ms: 24 * 3_600_000,
            bytes_per_sec: 16 * 1024 * 1024,
            max_session_cells: 100_000,
            initial_delay_ms: 60_000,
        }
    }
}
/// Test-only seams: a bug planted on purpose (to prove the fault suite's checkers catch it)
/// and injected network faults. All off by default; never set in production.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingSettings {
    /// A bug to plant (see [`PlantedBug`]).
    pub plant: Option<PlantedBug>,
    /// A TOML file of injected network faults (`delay_ms`, `jitter_ms`, `loss` 0.0–1.0),
    /// applied to this node's RPC calls and gossip packets and re-read every 500 ms while the
    /// node runs, so a test can change them; absent file or keys: no faults.
    pub net_faults_file: Option<PathBuf>,
}

/// Bugs a fault test can plant to show that its checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlantedBug {
    /// A replica acknowledges one mutation in five from other coordinators without applying
    /// it (caught as lost or under-replicated writes and stale reads).
    AckWithoutApply,
    /// Reads never repair stale replicas (caught as backwards or stale reads once replicas
    /// diverge).
    SkipReadRepair,
    /// Coordinators store no hints (caught as under-replicated writes after a partition).
    DropHints,
}
impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("data"),
            node_name: String::new(),
            dc: "dc1".into(),
            rack: "rack1".into(),
            num_tokens: DEFAULT_NUM_TOKENS,
            weight: 1,
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_CLUSTER_PORT)),
            client_addr: None,
            admin_addr: None,
            seeds: Vec::new(),
            cluster_name: "hearsay".into(),
            secret: String::new(),
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            default_replication_factor: DEFAULT_REPLICATION_FACTOR,
            default_consistency: ConsistencyLevel::One,
            join_wait_ms: DEFAULT_JOIN_WAIT_MS,
            max_clock_offset_ms: super::clock::DEFAULT_MAX_CLOCK_OFFSET_MS,
            report_superseded: true,
            hints: HintSettings::default(),
            gossip: GossipSettings::default(),
            rpc: RpcSettings::default(),
            repair: RepairSettings::default(),
            testing: TestingSettings::default(),
        }
    }
}

/// A configuration that contradicts itself or a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid node configuration: {0}")]
pub struct NodeConfigError(pub String);

impl NodeConfig {
    /// Checks every rule, including each subsystem's own `validate()`.
    pub fn validate(&self) -> Result<(), NodeConfigError> {
        let bad = |m: String| Err(NodeConfigError(m));
        let r = &self.repair;
        if r.interval_ms < 1_000 || r.bytes_per_sec < 1024 || r.max_session_cells < 100 {
            return bad(format!(
                "repair: interval_ms must be at least 1000, bytes_per_sec at least 1024 and max_session_cells at least 100, got {}, {} and {}",
                r.interval_ms, r.bytes_per_sec, r.max_session_cells
            ));
        }
        if self.dc.is_empty() || self.dc.len() > hearsay_ring::MAX_LOCATION_NAME_BYTES {
            return bad(format!("dc must be 1..=64 bytes, got {:?}", self.dc));
        }
        if self.rack.is_empty() || self.rack.len() > hearsay_ring::MAX_LOCATION_NAME_BYTES {
            return bad(format!("rack must be 1..=64 bytes, got {:?}", self.rack));
        }
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return bad(format!(
                "weight must be in 1..={MAX_WEIGHT}, got {}",
                self.weight
            ));
        }
        if self.num_tokens * self.weight as usize > crate::node::membership::MAX_GOSSIP_TOKENS {
            return bad(format!(
                "num_tokens × weight = {} exceeds {} tokens, the most one gossip value carries",
                self.num_tokens * self.weight as usize,
                crate::node::membership::MAX_GOSSIP_TOKENS
            ));
        }
        self.allocator_config()
            .validate()
            .map_err(|e| NodeConfigError(e.to_string()))?;
        for (name, v) in [
            ("write_timeout_ms", self.write_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                return bad(format!("{name} must be in 1..={MAX_TIMEOUT_MS}, got {v}"));
            }
        }
        if self.default_replication_factor == 0
            || self.default_replication_factor > MAX_REPLICATION_FACTOR
        {
            return bad(format!(
                "default_replication_factor must be in 1..={MAX_REPLICATION_FACTOR}, got {}",
                self.default_replication_factor
            ));
        }
        if self.cluster_name.is_empty() || self.cluster_name.len() > 128 {
            return bad("cluster_name must be 1..=128 bytes".into());
        }
        if !(1..=MAX_CLOCK_OFFSET_MS).contains(&self.max_clock_offset_ms) {
            return bad(format!(
                "max_clock_offset_ms must be in 1..={MAX_CLOCK_OFFSET_MS}"
            ));
        }
        if self.join_wait_ms > MAX_TIMEOUT_MS {
            return bad(format!("join_wait_ms must be at most {MAX_TIMEOUT_MS}"));
        }
        self.hint_config()
            .validate()
            .map_err(|e| NodeConfigError(e.to_string()))?;
        if self.hints.replay_bytes_per_sec == 0 || self.hints.max_concurrent_targets == 0 {
            return bad("hints.replay_bytes_per_sec and max_concurrent_targets must be > 0".into());
        }
        if self.hints.retry_initial_ms == 0 || self.hints.retry_initial_ms > self.hints.retry_max_ms
        {
            return bad("hints.retry_initial_ms must be in 1..=retry_max_ms".into());
        }
        self.gossip_config()
            .validate()
            .map_err(|e| NodeConfigError(e.to_string()))?;
        self.rpc_config()
            .validate()
            .map_err(|e| NodeConfigError(e.to_string()))?;
        Ok(())
    }

    /// The allocator's part.
    pub fn allocator_config(&self) -> AllocatorConfig {
        AllocatorConfig {
            num_tokens: self.num_tokens,
            replication_factor: self.default_replication_factor,
        }
    }

    /// The hint store's part.
    pub fn hint_config(&self) -> HintConfig {
        HintConfig {
            max_bytes_per_target: self.hints.max_bytes_per_target,
            max_total_bytes: self.hints.max_total_bytes,
            max_hint_age_ms: self.hints.max_hint_age_ms,
            sync: if self.hints.sync_interval_ms == 0 {
                HintSyncPolicy::Batch
            } else {
                HintSyncPolicy::Periodic {
                    interval_ms: self.hints.sync_interval_ms,
                }
            },
            ..HintConfig::default()
        }
    }

    /// The hint replay scheduler's part.
    pub fn hint_scheduler_config(&self) -> HintSchedulerConfig {
        HintSchedulerConfig {
            max_bytes_per_sec_per_target: self.hints.replay_bytes_per_sec,
            batch_bytes: self.hints.replay_batch_bytes,
            retry_initial_ms: self.hints.retry_initial_ms,
            retry_max_ms: self.hints.retry_max_ms,
            max_concurrent_targets: self.hints.max_concurrent_targets,
        }
    }

    /// The gossip layer's part (`cluster_addr` may be replaced by the bound address).
    pub fn gossip_config(&self) -> GossipConfig {
        let mut g = GossipConfig::new(
            &self.cluster_name,
            self.secret.as_bytes(),
            self.cluster_addr,
        )
        .with_interval_ms(self.gossip.interval_ms.max(1));
        g.seeds = self.seeds.clone();
        g.phi_threshold = self.gossip.phi_threshold;
        g.monitors = self.gossip.monitors;
        g.mode = self.gossip.mode;
        g.max_packet_bytes = self.gossip.max_packet_bytes;
        g
    }

    /// The RPC layer's part.
    pub fn rpc_config(&self) -> RpcConfig {
        RpcConfig {
            connect_timeout_ms: self.rpc.connect_timeout_ms,
            backoff_max_ms: self.rpc.backoff_max_ms,
            keepalive_interval_ms: self.rpc.keepalive_interval_ms,
            peer_silence_timeout_ms: self.rpc.peer_silence_timeout_ms,
            clock_skew_warn_us: self.max_clock_offset_ms * 1_000,
            max_clock_ahead_us: self.max_timestamp_lead_us(),
            ..RpcConfig::default()
        }
    }

    /// How far ahead of this node's (corrected) clock a timestamp may be and still be
    /// accepted or observed, in µs: twice the maximum offset, because two healthy nodes may
    /// each be up to the maximum offset off, in opposite directions.
    pub fn max_timestamp_lead_us(&self) -> u64 {
        2 * self.max_clock_offset_ms * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_contradictions_are_named() {
        NodeConfig::default().validate().unwrap();
        let c = NodeConfig {
            weight: 0,
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("weight"));
        let c = NodeConfig {
            write_timeout_ms: 0,
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("write_timeout_ms"));
        let c = NodeConfig {
            num_tokens: 200,
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("gossip value"));
    }
}
