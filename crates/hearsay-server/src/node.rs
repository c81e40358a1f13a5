//! Wiring one node together: configuration → storage engine → [`LocalStore`] → RESP server.

use crate::cmd::ServerState;
use crate::config::{ConfigError, NodeConfig, SyncModeName};
use crate::server::RespServer;
use crate::store::{LocalStore, WriterConfig};
use hearsay_storage::{Engine, EngineConfig, SyncMode};
use hearsay_types::{Clock, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open storage in {dir}: {message}")]
    Storage { dir: String, message: String },
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The engine's part of the configuration.
pub fn engine_config(cfg: &NodeConfig, clock: Arc<dyn Clock>) -> EngineConfig {
    let st = &cfg.storage;
    let mut e = EngineConfig::new(&st.data_dir);
    e.sync_mode = match st.sync_mode {
        SyncModeName::Periodic => SyncMode::Periodic {
            interval_ms: st.sync_interval_ms,
        },
        SyncModeName::Batch => SyncMode::Batch,
        SyncModeName::None => SyncMode::None,
    };
    e.memtable_size_bytes = st.memtable_size_bytes;
    // Room for the active memtable plus a few being flushed before writers stall.
    e.memtable_total_bytes_max = e.memtable_total_bytes_max.max(st.memtable_size_bytes * 4);
    e.block_cache_bytes = st.block_cache_bytes;
    e.clock = clock;
    e
}

/// A started node: the bound RESP server (call [`RespServer::run`]) and its store.
#[derive(Debug)]
pub struct Node {
    pub server: RespServer,
    pub store: Arc<LocalStore>,
}

impl Node {
    /// Validates `config`, opens the engine (replaying its commit log) and binds the client
    /// port.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ecfg = engine_config(&config, clock.clone());
        let dir = config.storage.data_dir.display().to_string();
        let engine = tokio::task::spawn_blocking(move || Engine::open(ecfg))
            .await
            .map_err(|e| NodeError::Storage {
                dir: dir.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| NodeError::Storage {
                dir: dir.clone(),
                message: e.to_string(),
            })?;
        let store = Arc::new(LocalStore::new(
            Arc::new(engine),
            clock,
            WriterConfig {
                batch_max: config.storage.write_batch_max,
                queue_max: config.storage.write_queue_max,
            },
        ));
        let listen = config.server.listen;
        let state = Arc::new(ServerState::new(store.clone(), config));
        let server = RespServer::bind(state)
            .await
            .map_err(|source| NodeError::Listen {
                addr: listen,
                source,
            })?;
        Ok(Node { server, store })
    }
}
