//! [`ClusterStore`]: the [`Store`] of a cluster member, over `hearsay_cluster::node::Node`.
//!
//! Every request is coordinated by this node at the connection's consistency level: the
//! node routes it to the key's replicas, waits for as many as the level needs, repairs stale
//! replicas it read from, and hints the ones that missed a write.
//!
//! Conditional mutations (SET NX/XX/GET, GETDEL, EXPIRE, DEL's count, ...) read the key at
//! the request's level, evaluate the condition with the same [`evaluate`] the single-node
//! store uses, and write the result with a timestamp newer than the version read. That is
//! what Cassandra does without lightweight transactions: two clients racing on the same key
//! through different coordinators may both see their condition hold, and last write wins.
//! Within one request, later mutations see earlier ones (a per-request overlay), so MSET
//! and DEL of repeated keys behave as on one node. Blind puts (plain SET, MSET, SETEX)
//! skip the read entirely.

use super::read_pool::OFFLOAD_MIN_KEYS;
use super::{
    Action, BoxFuture, Condition, Entry, Expiry, KeyspaceAlter, KeyspaceInfo, KeyspaceSpec,
    Mutation, Outcome, RequestContext, ScanPage, Store, StoreError, evaluate, live_entry,
};
use crate::server::busy_poll::Handoff;
use bytes::Bytes;
use hearsay_cluster::node::{Node, NodeError, SYSTEM_KEYSPACE};
use hearsay_cluster::quorum::ConsistencyError;
use hearsay_ring::token_of;
use hearsay_storage::commitlog::{MAX_KEY_BYTES, MAX_RECORD_BYTES};
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{Clock, ConsistencyLevel, Timestamp, Token};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most keys of one MGET read at once: each is a coordinated read holding replica
/// responses in memory until answered, so a huge MGET is read in waves of this many.
pub const MGET_PARALLEL_MAX: usize = 64;
/// Cells one scan page asks the coordinator for at most (SCAN COUNT is clamped to it):
/// a page is held in memory whole and sent as one RPC reply per vnode range.
pub const SCAN_PAGE_MAX: usize = 10_000;
/// Pages DBSIZE walks at most before answering with what it counted (it is a full scan of
/// the ring at ONE; beyond this the answer would take minutes and the client would give up).
pub const COUNT_PAGES_MAX: usize = 10_000;

/// Counters exported through INFO.
#[derive(Debug, Default)]
pub struct ClusterStoreStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Mutations that needed a read first (conditions, KEEPTTL, previous values).
    pub read_before_write: AtomicU64,
    pub errors: AtomicU64,
}

/// A cluster member's data: every operation coordinated by `node`.
pub struct ClusterStore {
    node: Arc<Node>,
    clock: Arc<dyn Clock>,
    /// The runtime the node was started on (work-stealing): pipelined GET runs are read there
    /// so that the client's event loop, one thread, goes on with its other connections.
    runtime: Option<tokio::runtime::Handle>,
    closed: AtomicBool,
    stats: ClusterStoreStats,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("node", &self.node)
            .field("closed", &self.closed)
            .finish()
    }
}

/// Maps a coordinator error to what the client sees: Cassandra's words, Redis's framing.
pub fn node_error(e: NodeError) -> StoreError {
    match e {
        NodeError::Consistency(c) => {
            let code = match &c {
                ConsistencyError::Unavailable { .. } | ConsistencyError::TooFewReplicas { .. } => {
                    "UNAVAILABLE"
                }
                ConsistencyError::Timeout { .. } => "TIMEOUT",
                ConsistencyError::Failed { .. } => "FAILURE",
                ConsistencyError::WriteOnlyLevel { .. } => "ERR",
            };
            StoreError::Cluster {
                code,
                message: c.to_string(),
            }
        }
        NodeError::NoSuchKeyspace(k) => StoreError::NoSuchKeyspace(k),
        NodeError::KeyspaceExists(k) => StoreError::KeyspaceExists(k),
        NodeError::Invalid(m) => StoreError::Invalid(m),
        NodeError::ShuttingDown => StoreError::Unavailable("server is shutting down".into()),
        e @ NodeError::NotReady(_) => StoreError::Cluster {
            code: "UNAVAILABLE",
            message: e.to_string(),
        },
        e @ (NodeError::ClockSkew(_) | NodeError::Unhealthy(_)) => StoreError::Cluster {
            code: "ERR",
            message: e.to_string(),
        },
        NodeError::Storage(m) => StoreError::Storage(m),
        other => StoreError::Storage(other.to_string()),
    }
}

impl ClusterStore {
    pub fn new(node: Arc<Node>, clock: Arc<dyn Clock>) -> ClusterStore {
        ClusterStore {
            node,
            clock,
            runtime: tokio::runtime::Handle::try_current().ok(),
            closed: AtomicBool::new(false),
            stats: ClusterStoreStats::default(),
        }
    }

    /// The cluster node behind this store.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Unavailable("server is shutting down".into()))
        } else {
            Ok(())
        }
    }

    fn count_error<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The newest cell of `key` at `level` (tombstones included).
    async fn read_cell(
        &self,
        keyspace: &str,
        key: &Bytes,
        level: ConsistencyLevel,
    ) -> Result<Option<Cell>, StoreError> {
        if key.len() > MAX_KEY_BYTES {
            // Such a key can never have been written.
            return Ok(None);
        }
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.node
            .read(keyspace, key, level)
            .await
            .map_err(node_error)
    }

    async fn read_entry(
        &self,
        keyspace: &str,
        key: &Bytes,
        level: ConsistencyLevel,
    ) -> Result<Option<Entry>, StoreError> {
        let now = self.now_ms();
        Ok(self
            .read_cell(keyspace, key, level)
            .await?
            .and_then(|c| live_entry(c.value.as_ref(), c.expires_at_ms, now)))
    }

    async fn write_mutations(
        &self,
        ctx: &RequestContext,
        mutations: Vec<Mutation>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.check_open()?;
        let mut bytes = 0usize;
        for m in &mutations {
            if m.key.len() > MAX_KEY_BYTES {
                return Err(StoreError::Storage(format!(
                    "key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
                    m.key.len()
                )));
            }
            bytes += m.key.len() + 32;
            if let Action::Put { value, .. } = &m.action {
                bytes += value.len();
            }
        }
        if bytes > MAX_RECORD_BYTES / 2 {
            return Err(StoreError::Storage(format!(
                "one write of about {bytes} bytes exceeds the limit of {} bytes",
                MAX_RECORD_BYTES / 2
            )));
        }
        let level = ctx.consistency;
        let now = self.now_ms();
        // What this request has already written, by key: later conditions see it.
        let mut overlay: HashMap<Bytes, Option<Entry>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(mutations.len());
        // Cells waiting to be sent; flushed before any read so a read sees them.
        let mut pending: Vec<(CellKey, Cell)> = Vec::new();
        for m in &mutations {
            let blind = m.condition == Condition::Always
                && !m.want_previous
                && matches!(
                    m.action,
                    Action::Put {
                        expiry: Expiry::Never | Expiry::AtMs(_),
                        ..
                    } | Action::Delete
                );
            let (current, read_ts) = if blind {
                (None, None)
            } else if let Some(c) = overlay.get(&m.key) {
                (c.clone(), None)
            } else {
                self.stats.read_before_write.fetch_add(1, Ordering::Relaxed);
                self.flush_pending(ctx, &mut pending, level).await?;
                // ANY cannot read; a condition needs at least one replica's answer.
                let read_level = if level == ConsistencyLevel::Any {
                    ConsistencyLevel::One
                } else {
                    level
                };
                let cell = self.read_cell(&ctx.keyspace, &m.key, read_level).await?;
                let ts = cell.as_ref().map(|c| c.timestamp);
                let entry = cell.and_then(|c| live_entry(c.value.as_ref(), c.expires_at_ms, now));
                (entry, ts)
            };
            let (outcome, cell) = evaluate(current.as_ref(), m, now);
            if let Some(new) = cell {
                // A conditional write must win over the version it was decided on, even if
                // that version came from a node whose clock runs ahead.
                if let Some(ts) = read_ts {
                    self.node.hlc().observe(ts);
                }
                let ts = if blind {
                    Timestamp(0)
                } else {
                    self.node.hlc().now()
                };
                let ck = CellKey::new(token_of(&m.key), m.key.clone());
                let c = match &new.value {
                    Some(v) => Cell {
                        value: Some(v.clone()),
                        timestamp: ts,
                        expires_at_ms: new.expires_at_ms,
                    },
                    None => Cell::tombstone(ts),
                };
                overlay.insert(
                    m.key.clone(),
                    new.value.as_ref().map(|v| Entry {
                        value: v.clone(),
                        expires_at_ms: new.expires_at_ms,
                    }),
                );
                pending.push((ck, c));
            } else if !blind {
                overlay.insert(m.key.clone(), current);
            }
            outcomes.push(outcome);
        }
        self.flush_pending(ctx, &mut pending, level).await?;
        Ok(outcomes)
    }

    async fn flush_pending(
        &self,
        ctx: &RequestContext,
        pending: &mut Vec<(CellKey, Cell)>,
        level: ConsistencyLevel,
    ) -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        // Blind cells (timestamp 0) of one flush share the coordinator's fresh timestamp, so
        // a later cell for the same key in the same batch must not tie with an earlier one:
        // keep only the last cell per key, which is what applying them in order would leave.
        let mut last: HashMap<&Bytes, usize> = HashMap::new();
        for (i, (k, _)) in pending.iter().enumerate() {
            last.insert(&k.key, i);
        }
        let cells: Vec<(CellKey, Cell)> = if last.len() == pending.len() {
            std::mem::take(pending)
        } else {
            let keep: std::collections::HashSet<usize> = last.values().copied().collect();
            pending
                .drain(..)
                .enumerate()
                .filter(|(i, _)| keep.contains(i))
                .map(|(_, c)| c)
                .collect()
        };
        pending.clear();
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.node
            .write(&ctx.keyspace, cells, level)
            .await
            .map(|_| ())
            .map_err(node_error)
    }
}

impl Store for ClusterStore {
    fn get<'a>(
        &'a self,
        ctx: &'a RequestContext,
        key: Bytes,
    ) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(async move {
            // Replica reads and writes complete on other threads (see `Handoff`).
            let _waiting = Handoff::start();
            let r = self.read_entry(&ctx.keyspace, &key, ctx.consistency).await;
            self.count_error(r)
        })
    }

    fn get_each<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Vec<Result<Option<Entry>, StoreError>>> {
        Box::pin(async move {
            let _waiting = Handoff::start();
            let Some(runtime) = self
                .runtime
                .as_ref()
                .filter(|_| keys.len() >= OFFLOAD_MIN_KEYS)
            else {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    let r = self.read_entry(&ctx.keyspace, k, ctx.consistency).await;
                    out.push(self.count_error(r));
                }
                return out;
            };
            let n = keys.len();
            self.stats.reads.fetch_add(n as u64, Ordering::Relaxed);
            let node = self.node.clone();
            let ks = ctx.keyspace.clone();
            let level = ctx.consistency;
            let owned = keys.to_vec();
            let run = runtime.spawn(async move {
                let mut out = Vec::with_capacity(owned.len());
                for k in &owned {
                    out.push(if k.len() > MAX_KEY_BYTES {
                        // Such a key can never have been written.
                        Ok(None)
                    } else {
                        node.read(&ks, k, level).await.map_err(node_error)
                    });
                }
                out
            });
            let cells = match run.await {
                Ok(cells) => cells,
                Err(e) => (0..n)
                    .map(|_| Err(StoreError::Storage(format!("read task: {e}"))))
                    .collect(),
            };
            let now = self.now_ms();
            cells
                .into_iter()
                .map(|r| {
                    self.count_error(r)
                        .map(|c| c.and_then(|c| live_entry(c.value.as_ref(), c.expires_at_ms, now)))
                })
                .collect()
        })
    }

    fn get_many<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<Vec<Option<Entry>>, StoreError>> {
        Box::pin(async move {
            let _waiting = Handoff::start();
            let mut out = Vec::with_capacity(keys.len());
            for wave in keys.chunks(MGET_PARALLEL_MAX) {
                let mut set = tokio::task::JoinSet::new();
                for (i, k) in wave.iter().enumerate() {
                    let node = self.node.clone();
                    let ks = ctx.keyspace.clone();
                    let k = k.clone();
                    let level = ctx.consistency;
                    set.spawn(async move {
                        if k.len() > MAX_KEY_BYTES {
                            return (i, Ok(None));
                        }
                        (i, node.read(&ks, &k, level).await)
                    });
                }
                self.stats
                    .reads
                    .fetch_add(wave.len() as u64, Ordering::Relaxed);
                let mut slots: Vec<Option<Option<Cell>>> = vec![None; wave.len()];
                while let Some(joined) = set.join_next().await {
                    let (i, r) =
                        joined.map_err(|e| StoreError::Storage(format!("read task: {e}")))?;
                    let cell = self.count_error(r.map_err(node_error))?;
                    slots[i] = Some(cell);
                }
                let now = self.now_ms();
                out.extend(slots.into_iter().map(|c| {
                    c.flatten()
                        .and_then(|c| live_entry(c.value.as_ref(), c.expires_at_ms, now))
                }));
            }
            Ok(out)
        })
    }

    fn write<'a>(
        &'a self,
        ctx: &'a RequestContext,
        mutations: Vec<Mutation>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(async move {
            let _waiting = Handoff::start();
            let r = self.write_mutations(ctx, mutations).await;
            self.count_error(r)
        })
    }

    fn scan<'a>(
        &'a self,
        ctx: &'a RequestContext,
        from: Token,
        count: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        Box::pin(async move {
            let page = self
                .node
                .scan(&ctx.keyspace, from, count.clamp(1, SCAN_PAGE_MAX))
                .await
                .map_err(node_error);
            let page = self.count_error(page)?;
            let now = self.now_ms();
            let entries = page
                .cells
                .into_iter()
                .filter_map(|(k, c)| {
                    live_entry(c.live_value(now), c.expires_at_ms, now).map(|e| (k.key, e))
                })
                .collect();
            Ok(ScanPage {
                entries,
                next: page.next,
            })
        })
    }

    fn count_keys<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut n = 0u64;
            let mut from = Token::MIN;
            for _ in 0..COUNT_PAGES_MAX {
                let page = self
                    .node
                    .scan(&ctx.keyspace, from, SCAN_PAGE_MAX)
                    .await
                    .map_err(node_error)?;
                let now = self.now_ms();
                n += page
                    .cells
                    .iter()
                    .filter(|(_, c)| c.live_value(now).is_some())
                    .count() as u64;
                match page.next {
                    Some(t) => from = t,
                    None => break,
                }
            }
            Ok(n)
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.wall_millis()
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        // The node and the engine are stopped by their owner (`crate::node`) once the RESP
        // server has drained: the node is async and must stop before the engine closes.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn info(&self) -> Vec<(&'static str, String, String)> {
        let s = &self.stats;
        let node = &self.node;
        let view = node.view();
        let alive = view.alive.len();
        let members = view.membership.members.len();
        let l = |sec: &'static str, k: &str, v: String| (sec, k.to_string(), v);
        let mut lines = vec![
            l("cluster", "cluster_enabled", "1".into()),
            l("cluster", "node_id", node.id().to_string()),
            l("cluster", "cluster_addr", node.cluster_addr().to_string()),
            l("cluster", "generation", node.generation().to_string()),
            l("cluster", "members", members.to_string()),
            l("cluster", "members_alive", alive.to_string()),
            l("cluster", "tokens", node.tokens().len().to_string()),
            l("cluster", "schema_version", node.schema_version()),
            l("cluster", "hints_pending", node.hints_pending().to_string()),
            l(
                "cluster",
                "coordinator_reads",
                s.reads.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "cluster",
                "coordinator_writes",
                s.writes.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "cluster",
                "read_before_write",
                s.read_before_write.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "cluster",
                "request_errors",
                s.errors.load(Ordering::Relaxed).to_string(),
            ),
        ];
        lines.extend(super::engine_info(node.engine()));
        lines
    }

    fn keyspaces(&self) -> Vec<KeyspaceInfo> {
        self.node
            .keyspaces()
            .into_iter()
            .filter(|d| d.name != SYSTEM_KEYSPACE)
            .map(|d| KeyspaceInfo {
                name: d.name,
                strategy: d.strategy,
                default_consistency: d.default_consistency,
                options: d.options,
            })
            .collect()
    }

    fn create_keyspace<'a>(&'a self, spec: KeyspaceSpec) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.node
                .create_keyspace_with(
                    &spec.name,
                    spec.strategy,
                    spec.default_consistency,
                    spec.options,
                )
                .await
                .map_err(node_error)
        })
    }

    fn alter_keyspace<'a>(&'a self, spec: KeyspaceAlter) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.node
                .alter_keyspace_with(&spec.name, spec.change)
                .await
                .map_err(node_error)
        })
    }

    fn drop_keyspace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.node.drop_keyspace(name).await.map_err(node_error) })
    }

    fn default_consistency(&self, keyspace: &str) -> ConsistencyLevel {
        self.node.default_consistency(keyspace)
    }

    fn cluster_node(&self) -> Option<&Arc<Node>> {
        Some(&self.node)
    }
}
