//! Node configuration: one TOML file (and/or command-line overrides) parsed into a validated
//! [`NodeConfig`], then handed out in pieces (the engine's part, the RESP limits, ...).
//!
//! Every field has a default (see `docs/configuration.md` for each and why); unknown fields
//! are errors, so a typo never silently falls back to a default; [`NodeConfig::validate`]
//! refuses invalid or contradictory values with a message naming the field.

use crate::resp::RequestLimits;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
            memtable_size_bytes: 64 << 20,
            block_cache_bytes: 64 << 20,
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

/// `[cluster]`: internode settings (gossip and replication are added with the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Internode RPC (TCP) and gossip (UDP) address.
    pub listen: SocketAddr,
    /// Cluster addresses of seed nodes (contact points at start-up). Empty: a cluster of one.
    /// Accepted now so `hearsay dev` and config files stay stable; used once gossip lands.
    pub seeds: Vec<SocketAddr>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7381)),
            seeds: Vec::new(),
        }
    }
}

/// Largest bulk string we accept at all: values live in memtables, commit-log records and
/// SSTable blocks, and a replica has to stream them; Redis's 512 MiB is far beyond what an
/// LSM handles well (Cassandra caps a mutation at half a 32 MiB commit-log segment).
pub const MAX_BULK_BYTES_CEILING: usize = 512 << 20;
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
