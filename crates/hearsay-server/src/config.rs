//! Node configuration: one TOML file (and/or command-line overrides) parsed into a validated
//! [`NodeConfig`], then handed out in pieces (the engine's part, the RESP limits, ...).
//!
//! Every field has a default (see `docs/configuration.md` for each and why); unknown fields
//! are errors, so a typo never silently falls back to a default; [`NodeConfig::validate`]
//! refuses invalid or contradictory values with a message naming the field.

use crate::resp::RequestLimits;
use hearsay_cluster::node::{
    GossipSettings, HintSettings, NodeConfig as ClusterNodeConfig, RepairSettings, RpcSettings,
    TestingSettings,
};
use hearsay_types::ConsistencyLevel;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot parse config: {0}")]
    Parse(String),
    #[error("invalid config: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// The whole node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
}

/// `[server]`: the client-facing side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// RESP (Redis protocol) listen address.
    pub listen: SocketAddr,
    /// HTTP admin API listen address.
    pub admin_listen: SocketAddr,
    /// When set, clients must AUTH (or HELLO ... AUTH) with it before anything else.
    pub password: Option<String>,
    /// Most simultaneous client connections; more are refused with an error.
    pub maxclients: usize,
    /// Close a client idle this long (no request in progress); 0 = never, as Redis's
    /// `timeout 0`.
    pub idle_timeout_ms: u64,
    /// On shutdown, how long in-flight requests get to finish before connections are cut.
    pub shutdown_timeout_ms: u64,
    /// Event-loop threads that serve client connections (0 = half the available cores, at
    /// least one). The pool is per process: in a process that runs several servers the first
    /// one sizes it.
    pub io_threads: usize,
    /// Longest an idle event loop polls its sockets before it sleeps, in microseconds; the
    /// window adapts below it to how closely requests follow each other (0 = never poll).
    /// See `server/busy_poll.rs`. Per process, like `io_threads`.
    pub busy_poll_us: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7379)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7380)),
            password: None,
            maxclients: 10_000,
            idle_timeout_ms: 0,
            shutdown_timeout_ms: 10_000,
            io_threads: 0,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
        }
    }
}

/// When the commit log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncModeName {
    /// Acknowledge before fsync; fsync every `sync_interval_ms`.
    Periodic,
    /// Acknowledge after fsync (group commit).
    Batch,
    /// Never fsync the commit log.
    None,
}

impl std::str::FromStr for SyncModeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "periodic" => Ok(SyncModeName::Periodic),
            "batch" => Ok(SyncModeName::Batch),
            "none" => Ok(SyncModeName::None),
            _ => Err(format!(
                "unknown sync mode '{s}' (expected periodic, batch or none)"
            )),
        }
    }
}

impl SyncModeName {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncModeName::Periodic => "periodic",
            SyncModeName::Batch => "batch",
            SyncModeName::None => "none",
        }
    }
}

/// `[storage]`: the local engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub sync_mode: SyncModeName,
    /// Period of background fsync in `periodic` mode.
    pub sync_interval_ms: u64,
    pub memtable_size_bytes: u64,
    pub block_cache_bytes: u64,
    /// Run compactions nothing waits for at the OS's idle scheduling priority, promoting them
    /// when work queues behind them (see `docs/storage-engine.md`).
    pub compaction_background_priority: bool,
    /// A flush puts the blocks it writes into the block cache (when its memtable is at most
    /// a third of the cache), so reads of the keys just written do not all miss after it.
    pub flush_warm_cache: bool,
    /// Most write requests the writer thread groups into one engine batch.
    pub write_batch_max: usize,
    /// Write requests queued for the writer before clients wait (backpressure).
    pub write_queue_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data"),
            sync_mode: SyncModeName::Periodic,
            sync_interval_ms: 1_000,
            memtable_size_bytes: hearsay_storage::config::DEFAULT_MEMTABLE_SIZE_BYTES,
            block_cache_bytes: hearsay_storage::config::DEFAULT_BLOCK_CACHE_BYTES,
            compaction_background_priority: true,
            flush_warm_cache: true,
            write_batch_max: 1_024,
            write_queue_max: 8_192,
        }
    }
}

/// `[limits]`: protocol and per-connection bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest key or value (one bulk string), in bytes.
    pub max_bulk_bytes: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest inline command, in bytes.
    pub max_inline_bytes: usize,
    /// Largest single request (all its arguments), in bytes; bounds one client's input buffer.
    pub max_request_bytes: usize,
    /// A client whose pending replies exceed this is disconnected (Redis's
    /// `client-output-buffer-limit`).
    pub output_buffer_limit_bytes: usize,
    /// A request must arrive completely within this after its first byte, or the client is
    /// disconnected (defends against slowloris clients).
    pub request_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_bulk_bytes: 16 << 20,
            max_args: 1 << 20,
            max_inline_bytes: 64 << 10,
            max_request_bytes: 64 << 20,
            output_buffer_limit_bytes: 256 << 20,
            request_timeout_ms: 30_000,
        }
    }
}

impl LimitsConfig {
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_bulk_bytes: self.max_bulk_bytes,
            max_args: self.max_args,
            max_inline_bytes: self.max_inline_bytes,
        }
    }
}

/// `[cluster]`: internode settings. The node joins a cluster (gossip, ring, replication,
/// hints) when `enabled` is true, or when it is unset and `seeds` is not empty; otherwise it
/// serves its local engine alone, with every write conditional and atomic on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as a cluster member. Unset: on exactly when `seeds` is not empty.
    pub enabled: Option<bool>,
    /// Internode RPC (TCP) and gossip (UDP) address; also what peers are told.
    pub listen: SocketAddr,
    /// Cluster addresses of seed nodes, the same list on every node (a seed may name itself).
    pub seeds: Vec<SocketAddr>,
    /// Cluster name: gossip and RPC from a cluster with another name are refused.
    pub name: String,
    /// Shared secret (gossip HMAC and RPC handshake). Empty: development only.
    pub secret: String,
    /// A human name for logs and `hearsay status` (the node id is the identity).
    pub node_name: String,
    pub dc: String,
    pub rack: String,
    /// Vnode tokens per unit of weight (see docs/ring.md for the default of 16).
    pub num_tokens: usize,
    /// Relative capacity: the node gets `weight × num_tokens` tokens.
    pub weight: u32,
    /// Replication factor of the `default` keyspace; the same on every node.
    pub replication_factor: usize,
    /// Level for requests on a keyspace without its own default, until a client says
    /// `CONSISTENCY <level>`. Written as cqlsh names it (`"QUORUM"`, `"LOCAL_QUORUM"`).
    #[serde(with = "level_name")]
    pub default_consistency: ConsistencyLevel,
    /// Coordinator write deadline (Cassandra's 2 s).
    pub write_timeout_ms: u64,
    /// Coordinator read deadline (Cassandra's 5 s).
    pub read_timeout_ms: u64,
    /// At first start, how long to wait for the seeds' view of the ring before taking tokens.
    pub join_wait_ms: u64,
    /// Largest offset of this node's clock from the majority's before it refuses to
    /// coordinate writes, in ms. Default 500.
    pub max_clock_offset_ms: u64,
    /// Replicas report writes that lost to a newer stored version (costs a point read per
    /// replicated cell).
    pub report_superseded: bool,
    pub hints: HintSettings,
    pub gossip: GossipSettings,
    pub rpc: RpcSettings,
    /// Anti-entropy repair (`[cluster.repair]`; see `docs/repair.md`).
    pub repair: RepairSettings,
    /// Test-only seams (`[cluster.testing]`: a planted bug, injected network faults); see
    /// `docs/testing.md`. Never set in production.
    pub testing: TestingSettings,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let n = ClusterNodeConfig::default();
        ClusterConfig {
            enabled: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7381)),
            seeds: Vec::new(),
            name: n.cluster_name,
            secret: n.secret,
            node_name: n.node_name,
            dc: n.dc,
            rack: n.rack,
            num_tokens: n.num_tokens,
            weight: n.weight,
            replication_factor: n.default_replication_factor,
            default_consistency: n.default_consistency,
            write_timeout_ms: n.write_timeout_ms,
            read_timeout_ms: n.read_timeout_ms,
            join_wait_ms: n.join_wait_ms,
            max_clock_offset_ms: n.max_clock_offset_ms,
            report_superseded: n.report_superseded,
            hints: n.hints,
            gossip: n.gossip,
            rpc: n.rpc,
            repair: n.repair,
            testing: n.testing,
        }
    }
}

/// Consistency levels in config files by their cqlsh names, case-insensitively.
mod level_name {
    use hearsay_types::ConsistencyLevel;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(l: &ConsistencyLevel, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(l.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConsistencyLevel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Subdirectory of `storage.data_dir` holding the node's identity, generation, tokens and
/// hints (the engine's own files are beside it; its keyspace directories are `ks-*`).
pub const CLUSTER_DIR: &str = "cluster";

impl NodeConfig {
    /// Whether this node runs as a cluster member (see [`ClusterConfig`]).
    pub fn cluster_enabled(&self) -> bool {
        self.cluster
            .enabled
            .unwrap_or(!self.cluster.seeds.is_empty())
    }

    /// The cluster node's configuration; `client_addr`/`admin_addr` are the bound addresses
    /// to advertise in gossip.
    pub fn cluster_node_config(
        &self,
        client_addr: Option<SocketAddr>,
        admin_addr: Option<SocketAddr>,
    ) -> ClusterNodeConfig {
        let c = &self.cluster;
        ClusterNodeConfig {
            data_dir: self.storage.data_dir.join(CLUSTER_DIR),
            node_name: c.node_name.clone(),
            dc: c.dc.clone(),
            rack: c.rack.clone(),
            num_tokens: c.num_tokens,
            weight: c.weight,
            cluster_addr: c.listen,
            client_addr,
            admin_addr,
            seeds: c.seeds.clone(),
            cluster_name: c.name.clone(),
            secret: c.secret.clone(),
            write_timeout_ms: c.write_timeout_ms,
            read_timeout_ms: c.read_timeout_ms,
            default_replication_factor: c.replication_factor,
            default_consistency: c.default_consistency,
            join_wait_ms: c.join_wait_ms,
            max_clock_offset_ms: c.max_clock_offset_ms,
            report_superseded: c.report_superseded,
            hints: c.hints.clone(),
            gossip: c.gossip.clone(),
            rpc: c.rpc.clone(),
            repair: c.repair.clone(),
            testing: c.testing.clone(),
        }
    }
}

/// Largest bulk string we accept at all: values live in memtables, commit-log records and
/// SSTable blocks, and a replica has to stream them; Redis's 512 MiB is far beyond what an
/// LSM handles well (Cassandra caps a mutation at half a 32 MiB commit-log segment).
pub const MAX_BULK_BYTES_CEILING: usize = 512 << 20;
/// Default longest busy-poll of an idle event loop: a wake-up of a sleeping thread on these
/// VMs costs tens of microseconds of the waker's and the woken's CPU, and the adaptive window
/// falls to zero when requests are further apart than this (see `server/busy_poll.rs`).
pub const DEFAULT_BUSY_POLL_US: u64 = 50;
/// Longest sync interval accepted (the engine's own bound; longer is surely a unit mistake).
pub const MAX_SYNC_INTERVAL_MS: u64 = 10 * 60 * 1_000;

impl NodeConfig {
    /// Parses TOML text. Does not validate (overrides may follow); call [`Self::validate`].
    pub fn from_toml_str(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        NodeConfig::from_toml_str(&text)
    }

    /// Checks every field and cross-field rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.maxclients == 0 {
            return Err(invalid("server.maxclients", "must be at least 1"));
        }
        if s.io_threads > crate::server::io_threads::MAX_IO_THREADS {
            return Err(invalid(
                "server.io_threads",
                format!(
                    "must be at most {} (0 = half the cores)",
                    crate::server::io_threads::MAX_IO_THREADS
                ),
            ));
        }
        if s.busy_poll_us > crate::server::busy_poll::MAX_BUSY_POLL_US {
            return Err(invalid(
                "server.busy_poll_us",
                format!(
                    "must be at most {} (0 = never poll)",
                    crate::server::busy_poll::MAX_BUSY_POLL_US
                ),
            ));
        }
        if s.password.as_deref() == Some("") {
            return Err(invalid(
                "server.password",
                "must not be empty (omit it to disable AUTH)",
            ));
        }
        let addrs = [
            ("server.listen", s.listen),
            ("server.admin_listen", s.admin_listen),
            ("cluster.listen", self.cluster.listen),
        ];
        for (i, (name_a, a)) in addrs.iter().enumerate() {
            for (name_b, b) in &addrs[i + 1..] {
                if a.port() != 0 && a == b {
                    return Err(invalid(name_b, format!("{b} is already used by {name_a}")));
                }
            }
        }
        let st = &self.storage;
        if st.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        if st.sync_mode == SyncModeName::Periodic
            && (st.sync_interval_ms == 0 || st.sync_interval_ms > MAX_SYNC_INTERVAL_MS)
        {
            return Err(invalid(
                "storage.sync_interval_ms",
                format!(
                    "must be in 1..={MAX_SYNC_INTERVAL_MS} with sync_mode = \"periodic\", got {}",
                    st.sync_interval_ms
                ),
            ));
        }
        if st.memtable_size_bytes < 4096 {
            return Err(invalid(
                "storage.memtable_size_bytes",
                "must be at least 4096",
            ));
        }
        if st.write_batch_max == 0 {
            return Err(invalid("storage.write_batch_max", "must be at least 1"));
        }
        if st.write_queue_max < st.write_batch_max {
            return Err(invalid(
                "storage.write_queue_max",
                format!(
                    "must be at least storage.write_batch_max ({})",
                    st.write_batch_max
                ),
            ));
        }
        let l = &self.limits;
        if l.max_bulk_bytes == 0 || l.max_bulk_bytes > MAX_BULK_BYTES_CEILING {
            return Err(invalid(
                "limits.max_bulk_bytes",
                format!("must be in 1..={MAX_BULK_BYTES_CEILING}"),
            ));
        }
        if (st.memtable_size_bytes as usize) < l.max_bulk_bytes {
            return Err(invalid(
                "limits.max_bulk_bytes",
                format!(
                    "must not exceed storage.memtable_size_bytes ({}): a value must fit a memtable",
                    st.memtable_size_bytes
                ),
            ));
        }
        if l.max_args < 3 {
            return Err(invalid(
                "limits.max_args",
                "must be at least 3 (SET key value)",
            ));
        }
        if l.max_inline_bytes < 64 {
            return Err(invalid("limits.max_inline_bytes", "must be at least 64"));
        }
        if l.max_request_bytes < l.max_bulk_bytes.saturating_add(1024) {
            return Err(invalid(
                "limits.max_request_bytes",
                format!(
                    "must be at least limits.max_bulk_bytes + 1024 ({}) so one value fits a request",
                    l.max_bulk_bytes.saturating_add(1024)
                ),
            ));
        }
        if l.output_buffer_limit_bytes < l.max_bulk_bytes.saturating_add(1024) {
            return Err(invalid(
                "limits.output_buffer_limit_bytes",
                "must be at least limits.max_bulk_bytes + 1024 so one value fits a reply",
            ));
        }
        if l.request_timeout_ms == 0 {
            return Err(invalid("limits.request_timeout_ms", "must be at least 1"));
        }
        if self.cluster_enabled() {
            // No seeds with `enabled = true` is a one-node cluster that others join by naming
            // it as their seed.
            let c = &self.cluster;
            let max_rf = hearsay_ring::MAX_REPLICATION_FACTOR;
            if c.replication_factor == 0 || c.replication_factor > max_rf {
                return Err(invalid(
                    "cluster.replication_factor",
                    format!("must be in 1..={max_rf}, got {}", c.replication_factor),
                ));
            }
            if c.num_tokens == 0 {
                return Err(invalid("cluster.num_tokens", "must be at least 1"));
            }
            self.cluster_node_config(None, None)
                .validate()
                .map_err(|e| invalid("cluster", e.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_ports() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        assert_eq!(c.server.listen.port(), 7379);
        assert_eq!(c.server.admin_listen.port(), 7380);
        assert_eq!(c.cluster.listen.port(), 7381);
    }

    #[test]
    fn toml_sections_parse_and_unknown_fields_fail() {
        let c = NodeConfig::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:9000\"\npassword = \"pw\"\n[storage]\nsync_mode = \"batch\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.storage.sync_mode, SyncModeName::Batch);
        assert_eq!(c.storage.sync_interval_ms, 1_000);
        let e = NodeConfig::from_toml_str("[server]\nlisen = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = NodeConfig::from_toml_str("[storage]\nsync_mode = \"often\"\n").unwrap_err();
        assert!(e.to_string().contains("often"), "{e}");
    }

    #[test]
    fn cluster_mode_follows_seeds_and_tables_parse() {
        let mut c = NodeConfig::default();
        assert!(!c.cluster_enabled(), "no seeds: alone");
        c.cluster.seeds = vec![c.cluster.listen];
        assert!(c.cluster_enabled());
        c.cluster.enabled = Some(false);
        assert!(!c.cluster_enabled());
        let c = NodeConfig::from_toml_str(
            "[cluster]\nenabled = true\ndefault_consistency = \"local_quorum\"\nreplication_factor = 2\n[cluster.gossip]\ninterval_ms = 200\nmode = \"push\"\n[cluster.hints]\nenabled = false\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.cluster_enabled());
        assert_eq!(c.cluster.default_consistency, ConsistencyLevel::LocalQuorum);
        let n = c.cluster_node_config(None, None);
        assert_eq!(n.default_replication_factor, 2);
        assert_eq!(n.gossip.interval_ms, 200);
        assert_eq!(format!("{:?}", n.gossip.mode), "Push");
        assert!(!n.hints.enabled);
        assert_eq!(n.data_dir, c.storage.data_dir.join(CLUSTER_DIR));
        let e =
            NodeConfig::from_toml_str("[cluster]\ndefault_consistency = \"MOST\"\n").unwrap_err();
        assert!(e.to_string().contains("MOST"), "{e}");
        let mut c = NodeConfig::default();
        c.cluster.enabled = Some(true);
        c.cluster.replication_factor = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.replication_factor"), "{e}");
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = NodeConfig::default();
        c.storage.sync_interval_ms = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.sync_interval_ms")
        );
        let mut c = NodeConfig::default();
        c.server.admin_listen = c.server.listen;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.admin_listen")
        );
        let mut c = NodeConfig::default();
        c.limits.max_request_bytes = c.limits.max_bulk_bytes;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("limits.max_request_bytes")
        );
        let mut c = NodeConfig::default();
        c.limits.max_bulk_bytes = 1 << 30;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("limits.max_bulk_bytes")
        );
        let mut c = NodeConfig::default();
        c.server.busy_poll_us = crate::server::busy_poll::MAX_BUSY_POLL_US + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.busy_poll_us")
        );
        c.server.busy_poll_us = crate::server::busy_poll::MAX_BUSY_POLL_US;
        assert!(c.validate().is_ok());
        let mut c = NodeConfig::default();
        c.server.io_threads = crate::server::io_threads::MAX_IO_THREADS + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.io_threads")
        );
        c.server.io_threads = crate::server::io_threads::MAX_IO_THREADS;
        c.validate().unwrap();
        let mut c = NodeConfig::default();
        c.server.maxclients = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.maxclients")
        );
        // Batch mode does not use the interval, so a zero there is not a contradiction.
        let mut c = NodeConfig::default();
        c.storage.sync_mode = SyncModeName::Batch;
        c.storage.sync_interval_ms = 0;
        c.validate().unwrap();
    }
}
