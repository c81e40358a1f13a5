//! One Hearsay node in a cluster: ties gossip (membership, liveness), the ring (placement),
//! the internode RPC, the storage engine, the coordinator (consistency levels, read repair),
//! hinted handoff and the keyspace schema together.
//!
//! - [`Node::start`] loads or creates the node id, bumps the generation, starts the RPC
//!   server and gossip, chooses (or reloads) its tokens, announces JOINING then NORMAL, and
//!   starts the background workers: the ring-view refresher (gossip events → a new
//!   [`RingView`] swapped atomically), schema pulls, and hint replay.
//! - [`Node::write`], [`Node::read`], [`Node::scan`] are the data path (see `coordinator`).
//! - [`Node::create_keyspace`] and friends change the schema; definitions spread by schema
//!   version in gossip and `SchemaPull`.
//! - [`Node::stats`], [`Node::status`], [`Node::endpoints`] are the observability surface.
//!
//! Invariants: every request routes by one immutable `RingView` snapshot; a replica is
//! counted alive unless gossip convicted it DOWN; hints never fail a client write. The design
//! is written up in `docs/cluster.md`.

pub mod clock;
mod config;
mod coordinator;
pub mod health;
mod hint_replay;
pub mod membership;
pub mod messages;
pub mod peers;
pub mod schema;
mod stats;
pub mod tokens;

pub use config::{
    DEFAULT_CLUSTER_PORT, DEFAULT_JOIN_WAIT_MS, DEFAULT_READ_TIMEOUT_MS,
    DEFAULT_REPLICATION_FACTOR, DEFAULT_WRITE_TIMEOUT_MS, GossipSettings, HintSettings,
    MAX_TIMEOUT_MS, NodeConfig, NodeConfigError, RpcSettings,
};
pub use coordinator::{ScanResult, WriteResult};
pub use health::NodeHealth;
pub use membership::{Live, MemberInfo, Membership, RingStatus, RingView};
pub use schema::{DEFAULT_KEYSPACE, KeyspaceDef, SYSTEM_KEYSPACE, Schema};
pub use stats::{CoordinatorStats, HintsStats, MemberRow, NodeStats, NodeStatus};

use crate::coordinator::ConsistencyError;
use crate::hints::{HintScheduler, HintStore};
use crate::rpc::{
    ClusterSecret, HandlerError, Identity, Registry, RpcClient, RpcContext, RpcServer,
};
use hearsay_gossip::StateKey;
use hearsay_gossip::driver::GossipHandle;
use hearsay_ring::{Member, ReplicationStrategy, Ring};
use hearsay_storage::{Engine, KeyspaceOptions};
use hearsay_types::{Clock, ConsistencyLevel, Hlc, NodeId, Token};
use messages::{
    HintFor, HintForAck, MAX_CELLS_PER_MUTATION, MAX_SCAN_CELLS, Mutate, MutateAck, MutateAckV2,
    MutateV2, Read, ReadReply, ScanRange, ScanReply, SchemaPull, SchemaReply, WireCell,
};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Directory under `data_dir` for hint files.
const HINTS_DIR: &str = "hints";
/// How often a peer with a different schema version is asked again, at most, in ms: a pull
/// is one small RPC, and versions converge within a round or two.
const SCHEMA_PULL_INTERVAL_MS: u64 = 1_000;
/// How often the node announces its load in gossip, in ms (`hearsay status` shows it; it
/// need not be fresh).
const LOAD_ANNOUNCE_INTERVAL_MS: u64 = 10_000;
/// How often the saved ring is written, at most, in ms: it changes only when members join,
/// leave or restart, and it is a cache that gossip refills.
const RING_SAVE_INTERVAL_MS: u64 = 1_000;
/// Gossip rounds a new node stays JOINING (tokens announced) before NORMAL, so that every
/// node has seen its tokens as pending (writes reach it) before it owns ranges; also the
/// window in which two nodes that chose the same tokens find out.
const JOINING_ROUNDS: u64 = 3;
/// Attempts at binding the gossip UDP socket on the port the RPC server got (a restarted
/// node may find its old socket still closing), 50 ms apart.
const GOSSIP_BIND_ATTEMPTS: u32 = 40;

/// What a replica's apply reports about cells that lost to a newer stored version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Superseded {
    /// Cells not applied because a newer version is stored.
    pub cells: u32,
    /// The newest stored timestamp among those that beat a cell (0 when none did).
    pub newest: u64,
}

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
        });
        inner
            .clock_baseline_us
            .store(inner.wall_minus_monotonic_us(), Relaxed);
        inner.ensure_engine_keyspaces();
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

    /// Starts gossip with this node's states already set, so that its first packet carries
    /// them: a restarting node (`saved_tokens`) announces its tokens and NORMAL status from
    /// the start, and its peers never see its new incarnation without a place in the ring.
    async fn start_gossip(
        &self,
        cluster_addr: SocketAddr,
        saved_tokens: Option<&[Token]>,
    ) -> Result<Arc<GossipHandle>, NodeError> {
        let inner = &self.inner;
        let mut cfg = inner.config.gossip_config();
        cfg.cluster_addr = cluster_addr;
        let c = &inner.config;
        let mut initial: Vec<(StateKey, Vec<u8>)> = Vec::new();
        // Place first: deltas go out in version order, so a delta cut short by the packet
        // budget still carries them.
        if let Some(t) = saved_tokens {
            initial.push((StateKey::Status, b"NORMAL".to_vec()));
            initial.push((StateKey::Tokens, membership::encode_tokens(t).into_bytes()));
        }
        initial.push((StateKey::Dc, c.dc.clone().into_bytes()));
        initial.push((StateKey::Rack, c.rack.clone().into_bytes()));
        initial.push((
            StateKey::Custom("weight".into()),
            c.weight.to_string().into_bytes(),
        ));
        if let Some(a) = c.client_addr {
            initial.push((StateKey::ClientAddr, a.to_string().into_bytes()));
        }
        if let Some(a) = c.admin_addr {
            initial.push((StateKey::AdminAddr, a.to_string().into_bytes()));
        }
        initial.push((
            StateKey::SchemaVersion,
            inner.schema.lock().version().into_bytes(),
        ));
        initial.push((StateKey::Load, inner.load_bytes().to_string().into_bytes()));
        let mut attempt = 0;
        let handle = loop {
            match GossipHandle::spawn_with_states(
                cfg.clone(),
                inner.id,
                inner.generation,
                inner.clock.clone(),
                initial.clone(),
            )
            .await
            {
                Ok(h) => break h,
                Err(hearsay_gossip::GossipError::Io(e)) if attempt + 1 < GOSSIP_BIND_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %e, "gossip bind failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(NodeError::Startup(format!(
                        "cannot start gossip on {cluster_addr}: {e}"
                    )));
                }
            }
        };
        Ok(Arc::new(handle))
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

    /// Creates a keyspace cluster-wide (the definition spreads by schema pull).
    pub async fn create_keyspace(
        &self,
        name: &str,
        strategy: ReplicationStrategy,
        default_consistency: Option<ConsistencyLevel>,
    ) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        hearsay_storage::config::validate_keyspace_name(name)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if name == SYSTEM_KEYSPACE {
            return Err(NodeError::Invalid("the system keyspace is reserved".into()));
        }
        strategy
            .validate()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if self.inner.schema.lock().get(name).is_some() {
            return Err(NodeError::KeyspaceExists(name.to_string()));
        }
        self.inner
            .apply_defs(vec![KeyspaceDef {
                name: name.to_string(),
                strategy,
                default_consistency,
                timestamp: self.inner.hlc.now(),
                dropped: false,
            }])
            .await;
        Ok(())
    }

    /// Changes what is given of a keyspace's strategy and default level, and nothing else
    /// (`None` keeps the current value). Existing data is not moved (no streaming yet):
    /// raising RF makes reads repair new replicas as they go.
    pub async fn alter_keyspace(
        &self,
        name: &str,
        strategy: Option<ReplicationStrategy>,
        default_consistency: Option<ConsistencyLevel>,
    ) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        if let Some(s) = &strategy {
            s.validate()
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
        }
        let current = self
            .inner
            .schema
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NoSuchKeyspace(name.to_string()))?;
        self.inner
            .apply_defs(vec![KeyspaceDef {
                name: name.to_string(),
                strategy: strategy.unwrap_or(current.strategy),
                default_consistency: default_consistency.or(current.default_consistency),
                timestamp: self.inner.hlc.now(),
                dropped: false,
            }])
            .await;
        Ok(())
    }

    /// Drops a keyspace cluster-wide and deletes its data on every node. `default` stays.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), NodeError> {
        // Schema changes are last-write-wins by timestamp: a skewed clock must not mint them.
        self.inner.check_write_coordinator()?;
        if name == DEFAULT_KEYSPACE {
            return Err(NodeError::Invalid(
                "the default keyspace cannot be dropped".into(),
            ));
        }
        let def = self
            .inner
            .schema
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NoSuchKeyspace(name.to_string()))?;
        self.inner
            .apply_defs(vec![KeyspaceDef {
                dropped: true,
                timestamp: self.inner.hlc.now(),
                ..def
            }])
            .await;
        Ok(())
    }

    /// Live keyspace definitions, by name.
    pub fn keyspaces(&self) -> Vec<KeyspaceDef> {
        self.inner.schema.lock().live_defs().cloned().collect()
    }

    /// The schema version this node gossips.
    pub fn schema_version(&self) -> String {
        self.inner.schema.lock().version()
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

fn load_schema(engine: &Engine, default_rf: usize) -> Result<Schema, NodeError> {
    let mut schema = Schema::with_default(default_rf);
    if !engine.keyspaces().iter().any(|k| k == SYSTEM_KEYSPACE) {
        match engine.create_keyspace(SYSTEM_KEYSPACE, KeyspaceOptions::default()) {
            Ok(()) | Err(hearsay_storage::Error::KeyspaceExists(_)) => {}
            Err(e) => return Err(storage_err(e)),
        }
    }
    let iter = engine
        .scan(
            SYSTEM_KEYSPACE,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        )
        .map_err(storage_err)?;
    for item in iter {
        let (_, cell) = item.map_err(storage_err)?;
        if let Some(def) = schema::def_from_cell(&cell) {
            schema.merge(def);
        }
    }
    Ok(schema)
}

fn registry(inner: &Arc<Inner>) -> Registry {
    let mut r = Registry::new();
    let i = inner.clone();
    // Method ids are distinct constants; a duplicate is a programming error caught by tests.
    let dup = |e| panic!("duplicate RPC method: {e}");
    r.register_fn::<Mutate, _, _>(move |_ctx, m: Mutate| {
        let i = i.clone();
        async move { i.handle_mutate(m).await }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<MutateV2, _, _>(move |_ctx, m: MutateV2| {
        let i = i.clone();
        async move { i.handle_mutate_v2(m).await }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<HintFor, _, _>(move |_ctx, m: HintFor| {
        let i = i.clone();
        async move { i.handle_hint_for(m).await }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<Read, _, _>(move |_ctx, m: Read| {
        let i = i.clone();
        async move { i.handle_read(m).await }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<SchemaPull, _, _>(move |_ctx, _m: SchemaPull| {
        let i = i.clone();
        async move {
            Ok(SchemaReply {
                defs: i.schema.lock().defs().cloned().collect(),
            })
        }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<ScanRange, _, _>(move |_ctx, m: ScanRange| {
        let i = i.clone();
        async move { i.handle_scan(m).await }
    })
    .unwrap_or_else(dup);
    r
}

/// Rebuilds the ring view on gossip events (coalesced) and every gossip round, announces
/// load now and then, and starts schema pulls from peers whose version differs.
async fn view_worker(inner: Arc<Inner>, gossip: Arc<GossipHandle>) {
    let mut events = gossip.subscribe();
    let mut round = tokio::time::interval(Duration::from_millis(inner.config.gossip.interval_ms));
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_load = Instant::now();
    let mut last_save = Instant::now() - Duration::from_millis(RING_SAVE_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            e = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = e {
                    return;
                }
                // Coalesce a burst of events into one rebuild.
                while events.try_recv().is_ok() {}
            }
            _ = round.tick() => {}
        }
        inner.refresh_view();
        inner.check_ready();
        inner.maybe_pull_schema();
        if last_save.elapsed() >= Duration::from_millis(RING_SAVE_INTERVAL_MS) {
            last_save = Instant::now();
            inner.save_ring_if_dirty().await;
        }
        if last_load.elapsed() >= Duration::from_millis(LOAD_ANNOUNCE_INTERVAL_MS) {
            last_load = Instant::now();
            let load = inner.load_bytes();
            let _ = gossip.set_local_state(StateKey::Load, load.to_string().into_bytes());
        }
    }
}

impl Inner {
    fn gossip(&self) -> Option<Arc<GossipHandle>> {
        self.gossip.lock().clone()
    }

    pub(crate) fn current_view(&self) -> Arc<RingView> {
        self.view.read().clone()
    }

    /// The membership to route by: gossip's, completed with the saved ring (a restarting
    /// member keeps its place; members not heard of since this node started are placed but
    /// DOWN), or the test override.
    fn membership_now(&self) -> Membership {
        if let Some(m) = self.membership_override.lock().clone() {
            return m;
        }
        let mut m = match self.gossip() {
            Some(g) => Membership::from_gossip(&g.membership()),
            None => Membership::default(),
        };
        let mut saved = self.saved_ring.lock();
        if saved.remember(&m) {
            self.saved_ring_dirty.store(true, Relaxed);
        }
        saved.fill(&mut m, self.id);
        m
    }

    /// Whether gossip has heard from another node since this one started: gossip learns of
    /// members only from packets received, and the saved ring is not gossip.
    fn heard_from_peer(&self) -> bool {
        self.gossip().is_some_and(|g| {
            g.membership().members.iter().any(|m| {
                m.node_id != self.id.to_string()
                    && matches!(
                        m.liveness,
                        hearsay_gossip::Liveness::Up | hearsay_gossip::Liveness::Suspect
                    )
            })
        })
    }

    /// Marks the node ready once it has heard from a peer; returns whether it is ready.
    fn check_ready(&self) -> bool {
        if self.ready.load(Relaxed) {
            return true;
        }
        if self.heard_from_peer() {
            self.ready.store(true, Relaxed);
            tracing::info!(node = %self.id, "heard from a peer; coordinating requests");
            return true;
        }
        false
    }

    /// Waits (at most `join_wait_ms`) until the node has heard from a peer. A node that
    /// restarts must not coordinate on a view of itself alone: until it has heard from
    /// somebody it refuses requests with [`NodeError::NotReady`] (the view worker keeps
    /// checking and lifts the refusal at first contact).
    async fn await_contact(self: &Arc<Self>) {
        let deadline = Instant::now() + Duration::from_millis(self.config.join_wait_ms);
        let poll = Duration::from_millis((self.config.gossip.interval_ms / 4).clamp(10, 250));
        while !self.heard_from_peer() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    node = %self.id,
                    wait_ms = self.config.join_wait_ms,
                    "no peer answered; refusing to coordinate requests until one does"
                );
                return;
            }
            tokio::time::sleep(poll).await;
        }
        // Judge our clock before the first write can mint a timestamp with it.
        self.refresh_view();
        self.probe_clocks().await;
        self.check_ready();
    }

    /// Fails a request while the node is not ready (see [`Inner::await_contact`]).
    pub(crate) fn check_coordinator(&self) -> Result<(), NodeError> {
        if self.shutdown.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        if self.check_ready() {
            return Ok(());
        }
        Err(NodeError::NotReady(format!(
            "node {} has not heard from any peer since it started; it will not coordinate requests on a view of the cluster it cannot trust",
            self.id
        )))
    }

    /// Fails a write (or schema change) this node must not coordinate: not ready, or its
    /// clock is off (it would mint timestamps that reorder writes).
    pub(crate) fn check_write_coordinator(&self) -> Result<(), NodeError> {
        self.check_coordinator()?;
        if self.clock_skewed.load(Relaxed) {
            let v = self.clock_verdict.lock().clone();
            return Err(NodeError::ClockSkew(
                v.describe(self.config.max_clock_offset_ms * 1_000),
            ));
        }
        // A wall clock that stepped since it was last checked against the peers (an operator
        // or NTP set it) is not trusted until the next check: without this, a clock set ahead
        // would mint future timestamps until the next probe noticed.
        let jump_us = self.clock_jump_us();
        if jump_us.unsigned_abs() > self.config.max_clock_offset_ms * 1_000 / 2 {
            self.clock_probe_wake.notify_one();
            return Err(NodeError::ClockSkew(format!(
                "this node's wall clock moved {:+.3} s against its monotonic clock since it was last checked against its peers (max offset {} ms); checking it again",
                jump_us as f64 / 1e6,
                self.config.max_clock_offset_ms
            )));
        }
        let storage = self.engine.health();
        if let Some(reason) = storage.poisoned {
            return Err(NodeError::Unhealthy(format!(
                "storage poisoned: {reason}; this node does not coordinate writes until it is restarted (write through another node)"
            )));
        }
        if let Some(full) = storage.disk_full.filter(|d| d.writes_failing) {
            return Err(NodeError::Unhealthy(format!(
                "disk full: {full}; this node does not coordinate writes until space is freed (write through another node)"
            )));
        }
        Ok(())
    }

    /// Wall clock minus monotonic clock now, in µs since this node started: constant while
    /// the wall clock runs at the monotonic clock's rate, changed by a step.
    pub(crate) fn wall_minus_monotonic_us(&self) -> i64 {
        let mono = self
            .clock
            .monotonic()
            .saturating_duration_since(self.started_mono)
            .as_micros() as i64;
        self.clock.wall_micros() as i64 - mono
    }

    /// How far the wall clock stepped since the last clock check found it fine, in µs.
    fn clock_jump_us(&self) -> i64 {
        self.wall_minus_monotonic_us() - self.clock_baseline_us.load(Relaxed)
    }

    /// Refuses cells timestamped further ahead of the cluster's time (as this node knows
    /// it) than `max_timestamp_lead_us`: a coordinator whose clock runs ahead must not plant
    /// timestamps that would make every later write lose.
    pub(crate) fn check_timestamps(
        &self,
        cells: &[(hearsay_storage::CellKey, hearsay_storage::Cell)],
    ) -> Result<(), String> {
        let now = self.rpc.context().cluster_now_us();
        let limit = self.config.max_timestamp_lead_us();
        let Some(max) = cells.iter().map(|(_, c)| c.timestamp.0).max() else {
            return Ok(());
        };
        let lead = max.saturating_sub(now);
        if lead > limit {
            self.counters.future_mutations_refused.fetch_add(1, Relaxed);
            return Err(format!(
                "timestamp {max} is {} ms ahead of this replica's clock (limit {} ms, twice max_clock_offset_ms); the coordinator's clock is ahead",
                lead / 1_000,
                limit / 1_000
            ));
        }
        Ok(())
    }

    /// Saves the ring if it changed (on a blocking thread; errors are logged, the file is
    /// a cache).
    async fn save_ring_if_dirty(self: &Arc<Self>) {
        if !self.saved_ring_dirty.swap(false, Relaxed) {
            return;
        }
        let this = self.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let ring = this.saved_ring.lock().clone();
            ring.save(&this.config.data_dir)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("cannot save the ring; will retry");
            self.saved_ring_dirty.store(true, Relaxed);
        }
    }

    pub(crate) fn refresh_view(&self) {
        let membership = self.membership_now();
        // Built and installed under the schema lock: a rebuild that read the schema before
        // `apply_defs` merged a keyspace must not install its view after the one that routes
        // the keyspace.
        let schema = self.schema.lock();
        self.install_view(membership, &schema);
    }

    /// Installs the view of `schema` (whose lock the caller holds, so whoever sees a keyspace
    /// in the schema finds it in the view too).
    fn install_view(&self, membership: Membership, schema: &Schema) {
        let view = RingView::build(self.id, membership, schema);
        *self.view.write() = Arc::new(view);
        self.counters.view_rebuilds.fetch_add(1, Relaxed);
    }

    fn load_bytes(&self) -> u64 {
        let s = self.engine.stats();
        s.memtable_bytes_total + s.keyspaces.values().map(|k| k.sstable_bytes).sum::<u64>()
    }

    /// Creates engine keyspaces for live definitions and drops those of dropped ones.
    fn ensure_engine_keyspaces(&self) {
        let schema = self.schema.lock().clone();
        self.sync_engine_keyspaces(&schema);
    }

    fn sync_engine_keyspaces(&self, schema: &Schema) {
        let existing = self.engine.keyspaces();
        for def in schema.defs() {
            let exists = existing.contains(&def.name);
            if !def.dropped && !exists {
                match self
                    .engine
                    .create_keyspace(&def.name, KeyspaceOptions::default())
                {
                    Ok(()) | Err(hearsay_storage::Error::KeyspaceExists(_)) => {}
                    Err(e) => {
                        tracing::error!(keyspace = %def.name, error = %e, "cannot create keyspace")
                    }
                }
            } else if def.dropped
                && exists
                && def.name != DEFAULT_KEYSPACE
                && let Err(e) = self.engine.drop_keyspace(&def.name)
            {
                tracing::error!(keyspace = %def.name, error = %e, "cannot drop keyspace");
            }
        }
    }

    /// Merges definitions (newest per keyspace wins), persists the winners, creates or drops
    /// engine keyspaces, and announces the new schema version. Returns whether anything changed.
    pub(crate) async fn apply_defs(self: &Arc<Self>, defs: Vec<KeyspaceDef>) -> bool {
        let this = self.clone();
        let changed = tokio::task::spawn_blocking(move || {
            // Decide the winners on a copy, make them durable and create their engine
            // keyspaces, and only then publish them: a node must never advertise (or route
            // by) a keyspace its engine cannot take writes for yet.
            let mut next = this.schema.lock().clone();
            let winners: Vec<KeyspaceDef> =
                defs.into_iter().filter(|d| next.merge(d.clone())).collect();
            if winners.is_empty() {
                return false;
            }
            let cells: Vec<_> = winners.iter().map(schema::def_to_cell).collect();
            if let Err(e) = this.engine.apply(SYSTEM_KEYSPACE, &cells) {
                tracing::error!(error = %e, "cannot persist keyspace definitions");
            }
            this.sync_engine_keyspaces(&next);
            let membership = this.membership_now();
            let mut schema = this.schema.lock();
            for d in winners {
                schema.merge(d);
            }
            // Route by it before anyone can see it: a client that saw the new keyspace (or
            // schema version) and wrote to it got NoSuchKeyspace until the next rebuild.
            this.install_view(membership, &schema);
            true
        })
        .await
        .unwrap_or(false);
        if changed {
            let version = self.schema.lock().version();
            if let Some(g) = self.gossip() {
                let _ = g.set_local_state(StateKey::SchemaVersion, version.into_bytes());
            }
        }
        changed
    }

    /// Pulls definitions from alive peers that gossip a different schema version (at most
    /// once per `SCHEMA_PULL_INTERVAL_MS` per peer).
    fn maybe_pull_schema(self: &Arc<Self>) {
        let view = self.current_view();
        let ours = self.schema.lock().version();
        let now = Instant::now();
        for m in view.membership.members.values() {
            if m.id == self.id || !m.is_alive() {
                continue;
            }
            let (Some(v), Some(addr)) = (&m.schema_version, m.cluster_addr) else {
                continue;
            };
            if *v == ours {
                continue;
            }
            {
                let mut last = self.last_schema_pull.lock();
                if last.get(&m.id).is_some_and(|t| {
                    now.duration_since(*t) < Duration::from_millis(SCHEMA_PULL_INTERVAL_MS)
                }) {
                    continue;
                }
                last.insert(m.id, now);
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.counters.schema_pulls.fetch_add(1, Relaxed);
                let timeout = Duration::from_millis(this.config.read_timeout_ms);
                match this.rpc.call(addr, &SchemaPull {}, timeout).await {
                    Ok(reply) => {
                        this.apply_defs(reply.defs).await;
                    }
                    Err(e) => {
                        this.counters.schema_pull_failures.fetch_add(1, Relaxed);
                        tracing::debug!(%addr, error = %e, "schema pull failed");
                    }
                }
            });
        }
    }

    /// At first start: learns the ring from the seeds (bounded wait) and allocates balanced
    /// tokens, announcing them as JOINING, then saves them.
    async fn choose_tokens(&self, gossip: &GossipHandle) -> Result<Vec<Token>, NodeError> {
        let interval = Duration::from_millis(self.config.gossip.interval_ms);
        let other_seeds: Vec<SocketAddr> = self
            .config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.cluster_addr)
            .collect();
        if !other_seeds.is_empty() {
            let deadline = Instant::now() + Duration::from_millis(self.config.join_wait_ms);
            let mut heard_at: Option<Instant> = None;
            while Instant::now() < deadline {
                let ms = Membership::from_gossip(&gossip.membership());
                let heard = ms.members.values().any(|m| {
                    m.id != self.id && m.cluster_addr.is_some_and(|a| other_seeds.contains(&a))
                });
                if heard && heard_at.is_none() {
                    heard_at = Some(Instant::now());
                }
                // Two more rounds after the first answer: the seed's delta carries the ring.
                if heard_at.is_some_and(|t| t.elapsed() >= interval * 2) {
                    break;
                }
                tokio::time::sleep(interval / 2).await;
            }
            if heard_at.is_none() {
                tracing::warn!(seeds = ?other_seeds, "no seed answered; choosing tokens without the ring");
            }
        }
        let count = self.config.num_tokens * self.config.weight as usize;
        let me = Member {
            id: self.id,
            dc: self.config.dc.clone(),
            rack: self.config.rack.clone(),
            weight: self.config.weight,
            tokens: Vec::new(),
        };
        let mut chosen: Option<Vec<Token>> = None;
        for attempt in 0..3 {
            let ms = Membership::from_gossip(&gossip.membership());
            let others: Vec<Member> = ms
                .members
                .values()
                .filter(|m| {
                    m.id != self.id
                        && !m.tokens.is_empty()
                        && matches!(
                            m.status,
                            RingStatus::Normal | RingStatus::Joining | RingStatus::Leaving
                        )
                })
                .map(|m| Member {
                    id: m.id,
                    dc: m.dc.clone(),
                    rack: m.rack.clone(),
                    weight: m.weight,
                    tokens: m.tokens.clone(),
                })
                .filter(|m| Ring::new([m.clone()]).is_ok())
                .collect();
            let ring = Ring::new(others).unwrap_or_default();
            let tokens = match &chosen {
                // A clash with a node that chose at the same time: move to tokens derived from
                // our own id, which no other node computes.
                Some(_) => hearsay_ring::random_tokens(self.id, count),
                None => hearsay_ring::allocate_tokens(&ring, &me, &self.config.allocator_config()),
            };
            gossip
                .set_local_state(
                    StateKey::Tokens,
                    membership::encode_tokens(&tokens).into_bytes(),
                )
                .map_err(|e| NodeError::Startup(e.to_string()))?;
            let _ = gossip.set_local_state(StateKey::Status, b"JOINING".to_vec());
            tokio::time::sleep(interval * JOINING_ROUNDS as u32).await;
            let ms = Membership::from_gossip(&gossip.membership());
            let clash = ms.members.values().any(|m| {
                m.id < self.id
                    && m.status != RingStatus::Removed
                    && m.tokens.iter().any(|t| tokens.contains(t))
            });
            chosen = Some(tokens);
            if !clash {
                break;
            }
            tracing::warn!(
                attempt,
                "tokens clash with a node that joined at the same time; choosing again"
            );
        }
        let tokens = chosen.unwrap_or_default();
        tokens::save(&self.config.data_dir, &tokens).map_err(NodeError::Startup)?;
        Ok(tokens)
    }

    async fn announce_normal(&self, gossip: &GossipHandle, tokens: &[Token]) {
        let _ = gossip.set_local_state(
            StateKey::Tokens,
            membership::encode_tokens(tokens).into_bytes(),
        );
        let _ = gossip.set_local_state(StateKey::Status, b"NORMAL".to_vec());
        self.refresh_view();
    }

    // ------------------------------------------------------------------------------------
    // Replica side

    /// Applies cells to the local engine; with `report_superseded`, cells that lose to what
    /// is stored are not applied but counted, with the newest timestamp that beat them.
    /// Refuses cells timestamped too far ahead ([`Inner::check_timestamps`]). Runs in a
    /// blocking task that outlives the handler's future (a write that started completes
    /// even if the caller gave up).
    pub(crate) async fn apply_local(
        self: &Arc<Self>,
        keyspace: String,
        cells: Vec<(hearsay_storage::CellKey, hearsay_storage::Cell)>,
        report_superseded: bool,
    ) -> Result<Superseded, String> {
        self.check_timestamps(&cells)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut superseded = Superseded::default();
            let cells = if report_superseded {
                let mut keep = Vec::with_capacity(cells.len());
                for (k, c) in cells {
                    match this.engine.get(&keyspace, &k) {
                        Ok(Some(stored))
                            if stored.reconcile_cmp(&c) == std::cmp::Ordering::Greater =>
                        {
                            superseded.cells += 1;
                            superseded.newest = superseded.newest.max(stored.timestamp.0);
                        }
                        Ok(_) => keep.push((k, c)),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                keep
            } else {
                cells
            };
            this.engine
                .apply(&keyspace, &cells)
                .map_err(|e| e.to_string())?;
            this.counters.replica_mutations.fetch_add(1, Relaxed);
            Ok(superseded)
        })
        .await
        .map_err(|e| format!("apply task failed: {e}"))?
    }

    async fn handle_mutate(self: &Arc<Self>, m: Mutate) -> Result<MutateAck, HandlerError> {
        let s = self
            .handle_mutation(m.keyspace, m.cells, m.report_superseded)
            .await?;
        Ok(MutateAck {
            superseded: s.cells,
        })
    }

    async fn handle_mutate_v2(self: &Arc<Self>, m: MutateV2) -> Result<MutateAckV2, HandlerError> {
        let s = self
            .handle_mutation(m.keyspace, m.cells, m.report_superseded)
            .await?;
        Ok(MutateAckV2 {
            superseded: s.cells,
            newest_superseding: s.newest,
        })
    }

    /// Stores a hint a peer asks us to hold for it ([`HintFor`]).
    async fn handle_hint_for(self: &Arc<Self>, m: HintFor) -> Result<HintForAck, HandlerError> {
        let target = NodeId(m.target);
        if target == self.id {
            return Err(HandlerError::new("a node cannot hold a hint for itself"));
        }
        if m.cells.len() > MAX_CELLS_PER_MUTATION {
            return Err(HandlerError::new(format!(
                "HintFor of {} cells exceeds {MAX_CELLS_PER_MUTATION}",
                m.cells.len()
            )));
        }
        let Some(store) = self.hints.clone() else {
            return Err(HandlerError::new("hinted handoff is disabled on this node"));
        };
        let cells: Vec<_> = m.cells.into_iter().map(WireCell::into_cell).collect();
        let ks = m.keyspace;
        let now_ms = self.clock.wall_millis();
        let outcome = tokio::task::spawn_blocking(move || store.store(target, &ks, &cells, now_ms))
            .await
            .map_err(|e| HandlerError::new(format!("hint task failed: {e}")))?;
        match outcome {
            crate::hints::HintOutcome::Stored { .. } => {
                self.counters.hints_stored.fetch_add(1, Relaxed);
                self.hint_wake.notify_one();
                Ok(HintForAck {})
            }
            other => Err(HandlerError::new(format!("hint not stored: {other:?}"))),
        }
    }

    async fn handle_mutation(
        self: &Arc<Self>,
        keyspace: String,
        cells: Vec<WireCell>,
        report_superseded: bool,
    ) -> Result<Superseded, HandlerError> {
        if cells.len() > MAX_CELLS_PER_MUTATION {
            return Err(HandlerError::new(format!(
                "Mutate of {} cells exceeds {MAX_CELLS_PER_MUTATION}",
                cells.len()
            )));
        }
        let cells = cells.into_iter().map(WireCell::into_cell).collect();
        self.apply_local(keyspace, cells, report_superseded)
            .await
            .map_err(HandlerError::new)
    }

    pub(crate) async fn get_local(
        self: &Arc<Self>,
        keyspace: String,
        key: hearsay_storage::CellKey,
    ) -> Result<Option<hearsay_storage::Cell>, String> {
        self.get_local_now(&keyspace, &key)
    }

    /// A point read of this node's replica, on the calling thread: a memtable probe or a
    /// block-cache hit costs far less than a hop to the blocking pool (the single-node store
    /// makes the same choice); a cache miss blocks this worker for one block read.
    pub(crate) fn get_local_now(
        &self,
        keyspace: &str,
        key: &hearsay_storage::CellKey,
    ) -> Result<Option<hearsay_storage::Cell>, String> {
        self.counters.replica_reads.fetch_add(1, Relaxed);
        self.engine.get(keyspace, key).map_err(|e| e.to_string())
    }

    async fn handle_read(self: &Arc<Self>, m: Read) -> Result<ReadReply, HandlerError> {
        let key = hearsay_storage::CellKey::new(Token(m.token), bytes::Bytes::from(m.key));
        let cell = self
            .get_local(m.keyspace, key.clone())
            .await
            .map_err(HandlerError::new)?;
        Ok(if m.digest_only {
            ReadReply::Digest(crate::coordinator::cell_digest(cell.as_ref()))
        } else {
            ReadReply::Data(cell.map(|c| WireCell::from_cell(&key, &c)))
        })
    }

    pub(crate) async fn scan_local(
        self: &Arc<Self>,
        keyspace: String,
        from: Token,
        to: Token,
        limit: usize,
    ) -> Result<
        (
            Vec<(hearsay_storage::CellKey, hearsay_storage::Cell)>,
            Option<Token>,
        ),
        String,
    > {
        let this = self.clone();
        let limit = limit.clamp(1, MAX_SCAN_CELLS);
        tokio::task::spawn_blocking(move || {
            use std::ops::Bound;
            let lower = Bound::Included(hearsay_storage::CellKey::new(from, bytes::Bytes::new()));
            let upper = if to == Token::MAX {
                Bound::Unbounded
            } else {
                Bound::Excluded(hearsay_storage::CellKey::new(
                    Token(to.0 + 1),
                    bytes::Bytes::new(),
                ))
            };
            let iter = this
                .engine
                .scan(&keyspace, lower, upper)
                .map_err(|e| e.to_string())?;
            let mut out: Vec<(hearsay_storage::CellKey, hearsay_storage::Cell)> = Vec::new();
            for item in iter {
                let (k, c) = item.map_err(|e| e.to_string())?;
                if out.len() >= limit {
                    // A page never ends inside a token: finish the last token first.
                    let last = out.last().map(|(k, _)| k.token);
                    if last != Some(k.token) {
                        return Ok((out, Some(k.token)));
                    }
                }
                out.push((k, c));
            }
            Ok((out, None))
        })
        .await
        .map_err(|e| format!("scan task failed: {e}"))?
    }

    async fn handle_scan(self: &Arc<Self>, m: ScanRange) -> Result<ScanReply, HandlerError> {
        let (cells, next) = self
            .scan_local(m.keyspace, Token(m.from), Token(m.to), m.limit as usize)
            .await
            .map_err(HandlerError::new)?;
        Ok(ScanReply {
            cells: cells
                .iter()
                .map(|(k, c)| WireCell::from_cell(k, c))
                .collect(),
            next: next.map(|t| t.0),
        })
    }

    // ------------------------------------------------------------------------------------
    // Observability

    fn stats(&self) -> NodeStats {
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
                stats::ClockStats {
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

    fn status(&self) -> NodeStatus {
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
