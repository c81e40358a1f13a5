//! One Hearsay node in a cluster: ties gossip (membership, liveness), the ring (placement),
//! the internode RPC, the storage engine, the coordinator (consistency levels, read repair),
//! hinted handoff and the keyspace schema together.
//!
//! - [`Node::start`] loads or creates the node id, bumps the generation, starts the RPC
//!   server and gossip, chooses (or reloads) its tokens, announces JOINING then NORMAL, and
//!   starts the background workers: the ring-view refresher (gossip events → a new
//!   [`RingView`] swapped atomically), schema pulls, and hint replay.
//! - [`Node::write`], [`Node::read`], [`Node::scan`] are the data path (`data_path`, `scan`;
//!   the counting rules are the pure `crate::quorum`); `replica` serves the other side.
//! - [`Node::create_keyspace`] and friends change the schema; definitions spread by schema
//!   version in gossip and `SchemaPull`.
//! - [`Node::stats`], [`Node::status`], [`Node::endpoints`] are the observability surface.
//!
//! Invariants: every request routes by one immutable `RingView` snapshot; a replica is
//! counted alive unless gossip convicted it DOWN; hints never fail a client write. The design
//! is written up in `docs/cluster.md`.

pub mod clock;
mod config;
mod data_path;
pub mod health;
mod hint_replay;
mod joining;
pub mod membership;
pub mod messages;
pub mod peers;
pub mod repair;
mod replica;
mod scan;
pub mod schema;
mod schema_sync;
mod stats;
pub mod tokens;
mod view;

pub use config::{
    DEFAULT_CLUSTER_PORT, DEFAULT_JOIN_WAIT_MS, DEFAULT_READ_TIMEOUT_MS,
    DEFAULT_REPLICATION_FACTOR, DEFAULT_WRITE_TIMEOUT_MS, GossipSettings, HintSettings,
    MAX_TIMEOUT_MS, NodeConfig, NodeConfigError, PlantedBug, RepairSettings, RpcSettings,
    TestingSettings,
};
pub use data_path::WriteResult;
pub use health::NodeHealth;
pub use membership::{Live, MemberInfo, Membership, RingStatus, RingView};
pub use scan::ScanResult;
pub use schema::{
    CompactionOption, CompressionOption, DEFAULT_KEYSPACE, KeyspaceChange, KeyspaceDef,
    KeyspaceOptions, SYSTEM_KEYSPACE, Schema, TombstoneGc,
};
pub use stats::{CoordinatorStats, HintsStats, MemberRow, NodeStats, NodeStatus};

use crate::hints::{HintScheduler, HintStore};
use crate::quorum::ConsistencyError;
use crate::rpc::{ClusterSecret, Identity, RpcClient, RpcContext, RpcServer};
use hearsay_gossip::driver::GossipHandle;
use hearsay_storage::Engine;
use hearsay_types::{Clock, ConsistencyLevel, Hlc, NodeId, Token};
use parking_lot::{Mutex, RwLock};
pub(crate) use replica::Superseded;
use replica::registry;
use schema_sync::load_schema;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use view::view_worker;

/// Directory under `data_dir` for hint files.
const HINTS_DIR: &str = "hints";
/// The system-keyspace key an engine holding this node's data carries (written at the first
/// start); a node with saved tokens and peers whose engine lacks it lost its disk.
const BOOTSTRAPPED_KEY: &[u8] = b"local:bootstrapped";

/// A replica and its internode address (if gossip knows it).
pub type Endpoint = (NodeId, Option<SocketAddr>);

/// A request-level or startup failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Too few replicas alive, timeouts, failures: worded like Cassandra.
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    #[error("keyspace '{0}' does not exist")]
    NoSuchKeyspace(String),
    #[error("keyspace '{0}' already exists")]
    KeyspaceExists(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Config(#[from] NodeConfigError),
    #[error("node failed to start: {0}")]
    Startup(String),
    /// The node has not yet heard from any peer since it started, so its view of the
    /// cluster cannot be trusted to coordinate requests (see `docs/cluster.md`, restarts).
    #[error("{0}")]
    NotReady(String),
    /// This node's clock is too far from the majority's to mint write timestamps.
    #[error("clock skew: {0}; refusing to coordinate writes until it is back")]
    ClockSkew(String),
    /// This node's storage refuses writes (poisoned, disk full): it does not coordinate
    /// writes either, so that clients write through a node that can hint it.
    #[error("{0}")]
    Unhealthy(String),
}

/// Shared state of a running node (what handlers and workers hold).
pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) id: NodeId,
    pub(crate) generation: u64,
    pub(crate) cluster_addr: SocketAddr,
    pub(crate) engine: Arc<Engine>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hlc: Arc<Hlc>,
    pub(crate) rpc: RpcClient,
    pub(crate) view: RwLock<Arc<RingView>>,
    pub(crate) schema: Mutex<Schema>,
    pub(crate) gossip: Mutex<Option<Arc<GossipHandle>>>,
    /// Test seam: when set, the ring view is built from this instead of gossip.
    pub(crate) membership_override: Mutex<Option<Membership>>,
    pub(crate) hints: Option<Arc<HintStore>>,
    pub(crate) hint_scheduler: Mutex<HintScheduler>,
    pub(crate) hint_wake: tokio::sync::Notify,
    pub(crate) counters: stats::Counters,
    pub(crate) shutdown: CancellationToken,
    pub(crate) last_schema_pull: Mutex<BTreeMap<NodeId, Instant>>,
    pub(crate) tokens: Mutex<Vec<Token>>,
    /// The last known place of every member (see [`peers`]), saved when it changes.
    pub(crate) saved_ring: Mutex<peers::SavedRing>,
    pub(crate) saved_ring_dirty: std::sync::atomic::AtomicBool,
    /// Whether this node coordinates requests: set once it has heard from a peer since it
    /// started (or at once when it has no peer to hear from), and never cleared.
    pub(crate) ready: std::sync::atomic::AtomicBool,
    /// The last verdict on this node's clock ([`clock::judge`]) and its `skewed` flag, read
    /// on every write.
    pub(crate) clock_verdict: Mutex<clock::ClockVerdict>,
    pub(crate) clock_skewed: std::sync::atomic::AtomicBool,
    /// The `x-health` value last gossiped.
    pub(crate) published_health: Mutex<String>,
    /// When this node started (monotonic), and its wall-minus-monotonic reading at the last
    /// clock check that found the clock fine (see `check_write_coordinator`).
    pub(crate) started_mono: std::time::Instant,
    pub(crate) clock_baseline_us: std::sync::atomic::AtomicI64,
    /// Wakes the clock check at once (a write saw the clock step).
    pub(crate) clock_probe_wake: tokio::sync::Notify,
    /// Anti-entropy repair: budget, counters, jobs.
    pub(crate) repair: repair::RepairState,
    /// This node lost its data and serves no reads until a repair restores it.
    pub(crate) needs_repair: std::sync::atomic::AtomicBool,
}

/// A running node. Share it as `Arc<Node>`; every method takes `&self`.
pub struct Node {
    inner: Arc<Inner>,
    server: tokio::sync::Mutex<Option<RpcServer>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("cluster_addr", &self.inner.cluster_addr)
            .finish()
    }
}

impl Drop for Node {
    /// A node dropped without [`Node::shutdown`] (or a failed start) still stops its
    /// workers; the RPC server and gossip stop when their handles drop.
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.inner.gossip.lock().take();
    }
}

fn storage_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(e.to_string())
}

impl Node {
    /// Starts the node: identity, RPC server, gossip, tokens, JOINING → NORMAL, workers.
    /// The engine is the caller's (it closes it after [`Node::shutdown`]).
    pub async fn start(
        config: NodeConfig,
        engine: Arc<Engine>,
        clock: Arc<dyn Clock>,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let startup = |e: &dyn std::fmt::Display| NodeError::Startup(e.to_string());
        std::fs::create_dir_all(&config.data_dir).map_err(|e| startup(&e))?;
        let id =
            hearsay_gossip::load_or_create_node_id(&config.data_dir).map_err(|e| startup(&e))?;
        let generation =
            hearsay_gossip::next_generation(&config.data_dir, clock.wall_micros() / 1_000_000)
                .map_err(|e| startup(&e))?;
        let hlc = Arc::new(Hlc::new(clock.clone()));
        let rpc_ctx = RpcContext::new(
            Identity {
                node_id: id,
                cluster_name: config.cluster_name.clone(),
                secret: ClusterSecret::new(config.secret.as_bytes().to_vec()),
            },
            config.rpc_config(),
            hlc.clone(),
        )
        .map_err(|e| startup(&e))?;
        let rpc = RpcClient::new(rpc_ctx.clone());

        // Schema: the local copy in the system keyspace, plus the default keyspace.
        let schema = load_schema(&engine, config.default_replication_factor)?;
        let saved_tokens = tokens::load(&config.data_dir).map_err(NodeError::Startup)?;
        let saved_ring = peers::SavedRing::load(&config.data_dir);
        // A node with somebody to hear from waits to hear from them before it coordinates;
        // a node alone (no other seed, no known peer) has nobody to wait for.
        let has_peers =
            saved_ring.has_peers(id) || config.seeds.iter().any(|s| *s != config.cluster_addr);
        // A node that owned ranges in a cluster (saved tokens and peers) but whose engine
        // holds nothing lost its data (a replaced disk): until a repair restores its
        // ranges it serves no reads (a QUORUM read must not pair it with one stale replica).
        // The engine's own record that this node's data lives in it (Cassandra's
        // `bootstrapped` flag): an engine that lost it was replaced, while one that simply
        // holds nothing yet (a node whose writes all failed) is not.
        let marker = config.data_dir.join(repair::NEEDS_REPAIR_FILE);
        let engine_marked = {
            let key = hearsay_storage::CellKey::new(
                Token(0),
                bytes::Bytes::from_static(BOOTSTRAPPED_KEY),
            );
            let marked = engine.get(SYSTEM_KEYSPACE, &key).ok().flatten().is_some();
            if !marked {
                let cell = hearsay_storage::Cell::value(bytes::Bytes::from_static(b"1"), hlc.now());
                if let Err(e) = engine.apply(SYSTEM_KEYSPACE, &[(key, cell)]) {
                    tracing::warn!(error = %e, "cannot record that this engine holds the node's data");
                }
            }
            marked
        };
        let lost_data = saved_tokens.is_some()
            && saved_ring.has_peers(id)
            && !engine_marked
            && engine
                .stats()
                .keyspaces
                .iter()
                .filter(|(name, _)| name.as_str() != SYSTEM_KEYSPACE)
                .all(|(_, k)| k.sstable_bytes == 0 && k.memtable_bytes == 0);
        if lost_data && let Err(e) = std::fs::write(&marker, b"lost data\n") {
            tracing::warn!(error = %e, "cannot record that this node needs repair");
        }
        let needs_repair = lost_data || marker.exists();
        let hints = if config.hints.enabled {
            Some(Arc::new(
                HintStore::open(
                    config.data_dir.join(HINTS_DIR),
                    config.hint_config(),
                    clock.clone(),
                )
                .map_err(|e| startup(&e))?,
            ))
        } else {
            None
        };
        // The RPC listener first: its port is also gossip's (port 0 picks a free one).
        let listener = crate::rpc::transport::TcpListener::bind(config.cluster_addr)
            .await
            .map_err(|e| {
                NodeError::Startup(format!(
                    "cannot bind cluster address {}: {e}",
                    config.cluster_addr
                ))
            })?;
        let cluster_addr = crate::rpc::transport::Listener::local_addr(&listener);
        let empty_view = RingView::build(id, Membership::default(), &schema);
        let started_mono = clock.monotonic();
        let config_repair_rate = config.repair.bytes_per_sec;
        let inner = Arc::new(Inner {
            hint_scheduler: Mutex::new(HintScheduler::new(config.hint_scheduler_config())),
            config,
            id,
            generation,
            cluster_addr,
            engine,
            clock,
            hlc,
            rpc,
            view: RwLock::new(Arc::new(empty_view)),
            schema: Mutex::new(schema),
            gossip: Mutex::new(None),
            membership_override: Mutex::new(None),
            hints,
            hint_wake: tokio::sync::Notify::new(),
            counters: stats::Counters::default(),
            shutdown: CancellationToken::new(),
            last_schema_pull: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(Vec::new()),
            saved_ring: Mutex::new(saved_ring),
            saved_ring_dirty: std::sync::atomic::AtomicBool::new(false),
            ready: std::sync::atomic::AtomicBool::new(!has_peers),
            clock_verdict: Mutex::new(clock::ClockVerdict::default()),
            clock_skewed: std::sync::atomic::AtomicBool::new(false),
            published_health: Mutex::new(String::new()),
            started_mono,
            clock_baseline_us: std::sync::atomic::AtomicI64::new(0),
            clock_probe_wake: tokio::sync::Notify::new(),
            repair: repair::RepairState::new(config_repair_rate),
            needs_repair: std::sync::atomic::AtomicBool::new(needs_repair),
        });
        inner
            .clock_baseline_us
            .store(inner.wall_minus_monotonic_us(), Relaxed);
        inner.ensure_engine_keyspaces();
        inner.load_watermarks();
        let server = RpcServer::serve(rpc_ctx, Box::new(listener), registry(&inner))
            .map_err(|e| NodeError::Startup(format!("cannot start the RPC server: {e}")))?;
        let node = Node {
            inner: inner.clone(),
            server: tokio::sync::Mutex::new(Some(server)),
            tasks: Mutex::new(Vec::new()),
        };
        let gossip = node
            .start_gossip(cluster_addr, saved_tokens.as_deref())
            .await?;
        *inner.gossip.lock() = Some(gossip.clone());
        inner.refresh_view();

        // View refresher first, so that the token choice sees gossip as it arrives.
        node.spawn(view_worker(inner.clone(), gossip.clone()));
        let tokens = match saved_tokens {
            Some(t) => t,
            None => inner.choose_tokens(&gossip).await?,
        };
        *inner.tokens.lock() = tokens.clone();
        inner.announce_normal(&gossip, &tokens).await;
        inner.await_contact().await;
        inner.publish_health();
        node.spawn(hint_replay::run(inner.clone()));
        node.spawn(health::run(inner.clone()));
        node.spawn(repair::run(inner.clone()));
        tracing::info!(
            node = %id,
            generation,
            %cluster_addr,
            tokens = tokens.len(),
            ready = inner.ready.load(Relaxed),
            "node started"
        );
        Ok(node)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(tokio::spawn(fut));
    }

    /// Stops the workers, the RPC server and gossip, and syncs the hint store. The engine
    /// stays open (it is the caller's). Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(server) = self.server.lock().await.take() {
            server.shutdown().await;
        }
        self.inner.rpc.close_all();
        // The last view's ring, so that the next start routes by it.
        self.inner.refresh_view();
        self.inner.save_ring_if_dirty().await;
        let gossip = self.inner.gossip.lock().take();
        drop(gossip);
        if let Some(h) = &self.inner.hints {
            let h = h.clone();
            let _ = tokio::task::spawn_blocking(move || h.sync()).await;
        }
        tracing::info!(node = %self.inner.id, "node stopped");
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The bound internode address (RPC and gossip).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.inner.cluster_addr
    }

    /// Whether the node coordinates requests: it has heard from a peer since it started
    /// (or has none to hear from). Until then requests fail with [`NodeError::NotReady`].
    pub fn is_ready(&self) -> bool {
        self.inner.check_ready()
    }

    /// What is wrong with this node, if anything (see [`health`]).
    pub fn health(&self) -> NodeHealth {
        self.inner.check_ready();
        self.inner.health()
    }

    /// This start's generation.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The tokens this node owns.
    pub fn tokens(&self) -> Vec<Token> {
        self.inner.tokens.lock().clone()
    }

    /// Bytes this node's RPC client sent and received, over every peer: requests out,
    /// responses in (what a repair or a write costs on the wire).
    pub fn rpc_bytes(&self) -> (u64, u64) {
        self.inner
            .rpc
            .stats()
            .values()
            .fold((0, 0), |(o, i), s| (o + s.bytes_out, i + s.bytes_in))
    }

    /// The engine this node serves.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The node's hybrid logical clock (mint timestamps for writes with it).
    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.inner.hlc
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The current ring view (one immutable snapshot).
    pub fn view(&self) -> Arc<RingView> {
        self.inner.view.read().clone()
    }

    /// Test seam: route by `membership` instead of gossip (`None` returns to gossip).
    pub fn override_membership(&self, membership: Option<Membership>) {
        *self.inner.membership_override.lock() = membership;
        self.inner.refresh_view();
    }

    /// Rebuilds the ring view now (normally done on gossip events and every round).
    pub fn refresh_view(&self) {
        self.inner.refresh_view();
    }

    /// The level for a request on `keyspace` that names none.
    pub fn default_consistency(&self, keyspace: &str) -> ConsistencyLevel {
        self.inner
            .schema
            .lock()
            .get(keyspace)
            .and_then(|d| d.default_consistency)
            .unwrap_or(self.inner.config.default_consistency)
    }

    /// Writes `cells` at `level`; see `docs/cluster.md` for the path. Cells with timestamp 0
    /// get a fresh HLC timestamp; others keep the one the caller minted.
    pub async fn write(
        &self,
        keyspace: &str,
        cells: Vec<(hearsay_storage::CellKey, hearsay_storage::Cell)>,
        level: ConsistencyLevel,
    ) -> Result<WriteResult, NodeError> {
        self.inner.write(keyspace, cells, level).await
    }

    /// Reads `key` at `level`: the newest cell (tombstones included; use `Cell::live_value`),
    /// after blocking read repair of stale contacted replicas.
    pub async fn read(
        &self,
        keyspace: &str,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<hearsay_storage::Cell>, NodeError> {
        self.inner.read(keyspace, key, level).await
    }

    /// One page of a scan in `(token, key)` order from `from` (inclusive), at ONE (see
    /// `docs/cluster.md`): up to about `count` stored cells, tombstones included.
    pub async fn scan(
        &self,
        keyspace: &str,
        from: Token,
        count: usize,
    ) -> Result<ScanResult, NodeError> {
        self.inner.scan(keyspace, from, count).await
    }

    /// The key's token and its natural replicas with their internode addresses (for
    /// `hearsay getendpoints`), primary first.
    pub fn endpoints(
        &self,
        keyspace: &str,
        key: &[u8],
    ) -> Result<(Token, Vec<Endpoint>), NodeError> {
        let view = self.view();
        let route = view
            .routes
            .get(keyspace)
            .ok_or_else(|| NodeError::NoSuchKeyspace(keyspace.to_string()))?;
        let token = hearsay_ring::token_of(key);
        let replicas = route
            .map
            .read_replicas(token)
            .iter()
            .map(|n| (*n, view.addr_of(*n)))
            .collect();
        Ok((token, replicas))
    }

    /// Counters: coordinator, hints, schema, clock skew.
    pub fn stats(&self) -> NodeStats {
        self.inner.stats()
    }

    /// Members as `hearsay status` shows them.
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// The gossip membership view as JSON (for the admin API), if gossip runs.
    pub fn membership_json(&self) -> Option<String> {
        self.inner
            .gossip
            .lock()
            .as_ref()
            .map(|g| serde_json::to_string(&g.membership()).unwrap_or_else(|_| "{}".to_string()))
    }

    /// Undelivered hints in total.
    pub fn hints_pending(&self) -> u64 {
        self.inner.hints.as_ref().map_or(0, |h| {
            h.targets_with_hints()
                .into_iter()
                .map(|t| h.pending(t).0)
                .sum()
        })
    }
}
