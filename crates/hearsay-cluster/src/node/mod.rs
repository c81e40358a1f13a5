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

mod config;
mod coordinator;
mod hint_replay;
pub mod membership;
pub mod messages;
pub mod schema;
mod stats;
pub mod tokens;

pub use config::{
    DEFAULT_CLUSTER_PORT, DEFAULT_JOIN_WAIT_MS, DEFAULT_READ_TIMEOUT_MS,
    DEFAULT_REPLICATION_FACTOR, DEFAULT_WRITE_TIMEOUT_MS, GossipSettings, HintSettings,
    MAX_TIMEOUT_MS, NodeConfig, NodeConfigError, RpcSettings,
};
pub use coordinator::{ScanResult, WriteResult};
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
    MAX_CELLS_PER_MUTATION, MAX_SCAN_CELLS, Mutate, MutateAck, Read, ReadReply, ScanRange,
    ScanReply, SchemaPull, SchemaReply, WireCell,
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
/// Gossip rounds a new node stays JOINING (tokens announced) before NORMAL, so that every
/// node has seen its tokens as pending (writes reach it) before it owns ranges; also the
/// window in which two nodes that chose the same tokens find out.
const JOINING_ROUNDS: u64 = 3;
/// Attempts at binding the gossip UDP socket on the port the RPC server got (a restarted
/// node may find its old socket still closing), 50 ms apart.
const GOSSIP_BIND_ATTEMPTS: u32 = 40;

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
        });
        inner.ensure_engine_keyspaces();
        let server = RpcServer::serve(rpc_ctx, Box::new(listener), registry(&inner))
            .map_err(|e| NodeError::Startup(format!("cannot start the RPC server: {e}")))?;
        let node = Node {
            inner: inner.clone(),
            server: tokio::sync::Mutex::new(Some(server)),
            tasks: Mutex::new(Vec::new()),
        };
        let gossip = node.start_gossip(cluster_addr).await?;
        *inner.gossip.lock() = Some(gossip.clone());
        inner.refresh_view();

        // View refresher first, so that the token choice sees gossip as it arrives.
        node.spawn(view_worker(inner.clone(), gossip.clone()));
        let tokens = inner.choose_tokens(&gossip).await?;
        *inner.tokens.lock() = tokens.clone();
        inner.announce_normal(&gossip, &tokens).await;
        node.spawn(hint_replay::run(inner.clone()));
        tracing::info!(node = %id, generation, %cluster_addr, tokens = tokens.len(), "node started");
        Ok(node)
    }

    async fn start_gossip(&self, cluster_addr: SocketAddr) -> Result<Arc<GossipHandle>, NodeError> {
        let inner = &self.inner;
        let mut cfg = inner.config.gossip_config();
        cfg.cluster_addr = cluster_addr;
        let mut attempt = 0;
        let handle = loop {
            match GossipHandle::spawn(cfg.clone(), inner.id, inner.generation, inner.clock.clone())
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
        let c = &inner.config;
        let set = |k: StateKey, v: String| {
            if let Err(e) = handle.set_local_state(k, v.into_bytes()) {
                tracing::warn!(error = %e, "cannot set gossip state");
            }
        };
        set(StateKey::Dc, c.dc.clone());
        set(StateKey::Rack, c.rack.clone());
        set(StateKey::Custom("weight".into()), c.weight.to_string());
        if let Some(a) = c.client_addr {
            set(StateKey::ClientAddr, a.to_string());
        }
        if let Some(a) = c.admin_addr {
            set(StateKey::AdminAddr, a.to_string());
        }
        set(StateKey::SchemaVersion, inner.schema.lock().version());
        set(StateKey::Load, inner.load_bytes().to_string());
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

    /// Changes a keyspace's strategy and default level. Existing data is not moved (no
    /// streaming yet): raising RF makes reads repair new replicas as they go.
    pub async fn alter_keyspace(
        &self,
        name: &str,
        strategy: ReplicationStrategy,
        default_consistency: Option<ConsistencyLevel>,
    ) -> Result<(), NodeError> {
        strategy
            .validate()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if self.inner.schema.lock().get(name).is_none() {
            return Err(NodeError::NoSuchKeyspace(name.to_string()));
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

    /// Drops a keyspace cluster-wide and deletes its data on every node. `default` stays.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), NodeError> {
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
        inner.maybe_pull_schema();
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

    fn membership_now(&self) -> Membership {
        if let Some(m) = self.membership_override.lock().clone() {
            return m;
        }
        match self.gossip() {
            Some(g) => Membership::from_gossip(&g.membership()),
            None => Membership::default(),
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

    /// Reuses the tokens saved in the data directory, or learns the ring from the seeds
    /// (bounded wait) and allocates balanced tokens, announcing them as JOINING.
    async fn choose_tokens(&self, gossip: &GossipHandle) -> Result<Vec<Token>, NodeError> {
        if let Some(t) = tokens::load(&self.config.data_dir).map_err(NodeError::Startup)? {
            return Ok(t);
        }
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

    /// Applies cells to the local engine; counts cells that lose to what is stored when
    /// asked. Runs in a blocking task that outlives the handler's future (a write that
    /// started completes even if the caller gave up).
    pub(crate) async fn apply_local(
        self: &Arc<Self>,
        keyspace: String,
        cells: Vec<(hearsay_storage::CellKey, hearsay_storage::Cell)>,
        report_superseded: bool,
    ) -> Result<u32, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut superseded = 0u32;
            let cells = if report_superseded {
                let mut keep = Vec::with_capacity(cells.len());
                for (k, c) in cells {
                    match this.engine.get(&keyspace, &k) {
                        Ok(Some(stored))
                            if stored.reconcile_cmp(&c) == std::cmp::Ordering::Greater =>
                        {
                            superseded += 1;
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
        if m.cells.len() > MAX_CELLS_PER_MUTATION {
            return Err(HandlerError::new(format!(
                "Mutate of {} cells exceeds {MAX_CELLS_PER_MUTATION}",
                m.cells.len()
            )));
        }
        let cells = m.cells.into_iter().map(WireCell::into_cell).collect();
        // Observe the cells' timestamps: a replica's HLC must not mint below what it stores.
        let superseded = self
            .apply_local(m.keyspace, cells, m.report_superseded)
            .await
            .map_err(HandlerError::new)?;
        Ok(MutateAck { superseded })
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
                .snapshot()
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
        }
    }

    fn status(&self) -> NodeStatus {
        let view = self.current_view();
        let skew = self.rpc.context().clocks.snapshot();
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
                let up = if m.is_alive() || m.id == self.id {
                    'U'
                } else {
                    'D'
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
                    clock_skew_us: skew.get(&m.id).copied(),
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
            schema_version: schema.version(),
            keyspaces: schema.live_defs().cloned().collect(),
            members,
        }
    }
}
