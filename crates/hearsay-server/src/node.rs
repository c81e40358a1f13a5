//! Wiring one node together: configuration → storage engine → store → RESP server (+ admin
//! HTTP). The store is a [`LocalStore`] when the node runs alone, or a [`ClusterStore`] over a
//! `hearsay_cluster::node::Node` when it is a cluster member (see [`NodeConfig::cluster_enabled`]).
//!
//! Stop order matters and lives here: RESP server drains its clients → cluster node stops
//! (RPC, gossip, hint workers) → engine flushes and closes. The engine outlives the cluster
//! node because replica writes arriving over RPC go straight into it.

use crate::cmd::ServerState;
use crate::config::{ConfigError, NodeConfig, SyncModeName};
use crate::server::RespServer;
use crate::store::{ClusterStore, LocalStore, Store, WriterConfig};
use hearsay_cluster::node::Node as ClusterNode;
use hearsay_storage::{Engine, EngineConfig, SyncMode};
use hearsay_types::{Clock, SystemClock};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open storage in {dir}: {message}")]
    Storage { dir: String, message: String },
    #[error("cannot listen on {addr} ({field}): {source}")]
    Listen {
        addr: SocketAddr,
        field: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
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
    e.compaction_background_priority = st.compaction_background_priority;
    e.flush_warm_cache = st.flush_warm_cache;
    e.clock = clock;
    e
}

/// A started node: call [`Node::run`].
#[derive(Debug)]
pub struct Node {
    pub server: RespServer,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    /// The cluster member, when the node runs in a cluster.
    pub cluster: Option<Arc<ClusterNode>>,
    admin: Option<tokio::net::TcpListener>,
}

impl Node {
    /// Validates `config`, opens the engine (replaying its commit log), binds the client and
    /// admin ports and, in cluster mode, joins the cluster (gossip, tokens).
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ecfg = engine_config(&config, clock.clone());
        let dir = config.storage.data_dir.display().to_string();
        let storage_err = |message: String| NodeError::Storage {
            dir: dir.clone(),
            message,
        };
        let engine = tokio::task::spawn_blocking(move || Engine::open(ecfg))
            .await
            .map_err(|e| storage_err(e.to_string()))?
            .map_err(|e| storage_err(e.to_string()))?;
        let engine = Arc::new(engine);
        // Bind the public ports before joining, so the addresses gossip advertises are real
        // (port 0 resolves here) and a port clash fails before the node announces itself.
        let client = bind(config.server.listen, "server.listen").await?;
        let admin = bind(config.server.admin_listen, "server.admin_listen").await?;
        let client_addr = client.local_addr().ok();
        let admin_addr = admin.local_addr().ok();
        let (store, cluster): (Arc<dyn Store>, _) = if config.cluster_enabled() {
            let ncfg = config.cluster_node_config(client_addr, admin_addr);
            let node = match ClusterNode::start(ncfg, engine.clone(), clock.clone()).await {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    close_engine(engine).await;
                    return Err(NodeError::Cluster(e.to_string()));
                }
            };
            (Arc::new(ClusterStore::new(node.clone(), clock)), Some(node))
        } else {
            (
                Arc::new(LocalStore::new(
                    engine.clone(),
                    clock,
                    WriterConfig {
                        batch_max: config.storage.write_batch_max,
                        queue_max: config.storage.write_queue_max,
                        inline_when_idle: config.storage.sync_mode != SyncModeName::Batch,
                    },
                )),
                None,
            )
        };
        let state = Arc::new(ServerState::new(store.clone(), config));
        let server = RespServer::from_listener(state, client);
        Ok(Node {
            server,
            store,
            engine,
            cluster,
            admin: Some(admin),
        })
    }

    /// The bound RESP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops in order (see the module docs).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_task = self.admin.take().map(|listener| {
            let state = crate::admin::AdminState {
                server: self.server.state().clone(),
                engine: self.engine.clone(),
                cluster: self.cluster.clone(),
            };
            tokio::spawn(async move {
                let stop = async move {
                    let _ = admin_stop_rx.await;
                };
                if let Err(e) = crate::admin::serve(listener, state, stop).await {
                    tracing::warn!(error = %e, "admin HTTP server stopped");
                }
            })
        });
        let served = self.server.run(shutdown).await;
        let _ = admin_stop_tx.send(());
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        if let Some(node) = self.cluster.take() {
            node.shutdown().await;
        }
        // LocalStore::shutdown already flushed and closed the engine; closing twice is a no-op.
        let engine = self.engine.clone();
        // A stop on a full disk is clean: the unflushed data stays in the commit log.
        let closed = tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .map_err(std::io::Error::other)?;
        served?;
        match closed {
            Ok(()) | Err(hearsay_storage::Error::Closed) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

async fn bind(addr: SocketAddr, field: &'static str) -> Result<tokio::net::TcpListener, NodeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen {
            addr,
            field,
            source,
        })
}

async fn close_engine(engine: Arc<Engine>) {
    let _ = tokio::task::spawn_blocking(move || engine.close()).await;
}
