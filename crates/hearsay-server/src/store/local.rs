//! [`LocalStore`]: the single-node [`Store`] over `hearsay_storage::Engine`.
//!
//! Writes go through one writer thread that groups every write request waiting in its queue
//! into one engine batch (group commit): under `batch` sync, 50 concurrent clients share one
//! fsync; under `periodic` sync, they share one commit-log append and one trip through the
//! memtable lock. Because that thread is the only writer, conditional mutations (SET NX,
//! EXPIRE GT, DEL's count, ...) read-then-write without races, and HLC timestamps it mints
//! are ordered exactly as the writes are applied. Reads run on the caller's thread: they are
//! memtable or block-cache lookups, cheaper than a hop to a blocking pool. Scans and counts,
//! which can touch many blocks, run on tokio's blocking pool.

use super::read_pool::{OFFLOAD_MIN_KEYS, ReadPool};
use super::{
    Action, BoxFuture, Condition, Entry, Expiry, Mutation, Outcome, RequestContext, ScanPage,
    Store, StoreError, evaluate, live_entry,
};
use crate::server::busy_poll::Handoff;
use bytes::Bytes;
use hearsay_ring::token_of;
use hearsay_storage::commitlog::{MAX_KEY_BYTES, MAX_RECORD_BYTES};
use hearsay_storage::{Cell, CellKey, Engine};
use hearsay_types::{Clock, Hlc, Token};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Most bytes of keys and values one grouped engine batch carries. The engine refuses a
/// commit-log record over `MAX_RECORD_BYTES` (64 MiB); grouping stops well below so that one
/// large request never makes a whole group fail, and so that one group's fsync stays short.
pub const GROUP_BYTES_MAX: usize = 8 << 20;
/// Most cells a scan page examines (live or not) before returning, so a region full of
/// tombstones costs a bounded amount per SCAN call.
pub const SCAN_EXAMINE_MAX: usize = 10_000;

/// Writer settings (from `[storage]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most write requests in one engine batch.
    pub batch_max: usize,
    /// Write requests queued before callers wait.
    pub queue_max: usize,
    /// A write finding the writer idle applies itself, on the caller's thread, instead of
    /// queueing for the writer thread (see [`LocalStore`]). Right when an apply is short: a
    /// commit-log append with acknowledgement before fsync (`periodic`, `none`). Under
    /// `batch` sync every apply waits for an fsync, which must neither block an async worker
    /// nor lose the group commit, so it stays off there.
    pub inline_when_idle: bool,
}

/// Counters of the writer, exported through INFO.
#[derive(Debug, Default)]
pub struct LocalStoreStats {
    pub write_groups: AtomicU64,
    pub write_requests: AtomicU64,
    pub mutations_applied: AtomicU64,
    pub largest_group: AtomicU64,
    pub write_errors: AtomicU64,
    /// Write requests applied on the caller's thread (the writer was idle).
    pub inline_requests: AtomicU64,
}

struct WriteRequest {
    keyspace: String,
    mutations: Vec<Mutation>,
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
}

enum Msg {
    Write(WriteRequest),
    Stop,
}

/// One node's data: an engine, an HLC, and the writer thread.
///
/// Writes are serialised by one lock, the writer lock, which owns the HLC: whoever holds it
/// evaluates conditions against everything applied before and mints timestamps in apply
/// order. The writer thread takes it for each group it drains from its queue. With
/// `inline_when_idle`, a write that finds the lock free takes it itself and applies on the
/// caller's thread: at one write in flight per client (redis-benchmark P1), the two thread
/// hand-offs of the queue (wake the writer, wake the task) cost more than the apply. A write
/// that finds the lock held never waits for it on an async worker; it queues for the
/// writer thread, whose groups keep the group commit for bursts. The price: an inline apply
/// that hits an engine write stall (memtables over budget) blocks its async worker for the
/// stall, where the writer thread would have blocked only writes.
pub struct LocalStore {
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    /// The writer lock (see above).
    core: Arc<Mutex<Hlc>>,
    inline_when_idle: bool,
    tx: mpsc::Sender<Msg>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    keyspaces: RwLock<BTreeSet<String>>,
    stats: Arc<LocalStoreStats>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("closed", &self.closed)
            .field("stats", &self.stats)
            .finish()
    }
}

fn storage_err(e: hearsay_storage::Error) -> StoreError {
    match e {
        hearsay_storage::Error::NoSuchKeyspace(k) => StoreError::NoSuchKeyspace(k),
        e @ (hearsay_storage::Error::Poisoned(_) | hearsay_storage::Error::Closed) => {
            StoreError::Unavailable(e.to_string())
        }
        e => StoreError::Storage(e.to_string()),
    }
}

fn key_too_long(len: usize) -> StoreError {
    StoreError::Storage(format!(
        "key of {len} bytes exceeds the limit of {MAX_KEY_BYTES} bytes"
    ))
}

impl LocalStore {
    /// Starts the writer thread over an open engine. The HLC reads `clock`.
    pub fn new(engine: Arc<Engine>, clock: Arc<dyn Clock>, cfg: WriterConfig) -> LocalStore {
        let (tx, rx) = mpsc::channel(cfg.queue_max.max(1));
        let stats = Arc::new(LocalStoreStats::default());
        let core = Arc::new(Mutex::new(Hlc::new(clock.clone())));
        let writer = {
            let engine = engine.clone();
            let stats = stats.clone();
            let clock = clock.clone();
            let core = core.clone();
            std::thread::Builder::new()
                .name("hearsay-writer".into())
                .spawn(move || {
                    writer_loop(&engine, &core, &*clock, rx, &stats, cfg.batch_max.max(1))
                })
                .expect("spawning the writer thread")
        };
        let keyspaces = engine.keyspaces().into_iter().collect();
        LocalStore {
            engine,
            clock,
            core,
            inline_when_idle: cfg.inline_when_idle,
            tx,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            keyspaces: RwLock::new(keyspaces),
            stats,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn stats(&self) -> &LocalStoreStats {
        &self.stats
    }

    fn check_keyspace(&self, name: &str) -> Result<(), StoreError> {
        if self.keyspaces.read().contains(name) {
            return Ok(());
        }
        // Keyspaces may have been created since we looked.
        let now: BTreeSet<String> = self.engine.keyspaces().into_iter().collect();
        let found = now.contains(name);
        *self.keyspaces.write() = now;
        if found {
            Ok(())
        } else {
            Err(StoreError::NoSuchKeyspace(name.to_string()))
        }
    }

    fn read_one(
        &self,
        keyspace: &str,
        key: &Bytes,
        now_ms: &mut Option<u64>,
    ) -> Result<Option<Entry>, StoreError> {
        read_one(&self.engine, &*self.clock, keyspace, key, now_ms)
    }

    /// Reads `keys` in order; a run of [`OFFLOAD_MIN_KEYS`] or more goes to the read pool
    /// (see [`ReadPool`]) so the client's event loop is free meanwhile.
    async fn read_each(
        &self,
        keyspace: &str,
        keys: &[Bytes],
    ) -> Vec<Result<Option<Entry>, StoreError>> {
        if keys.len() < OFFLOAD_MIN_KEYS {
            let mut now = None;
            return keys
                .iter()
                .map(|k| self.read_one(keyspace, k, &mut now))
                .collect();
        }
        let (tx, rx) = oneshot::channel();
        let engine = self.engine.clone();
        let clock = self.clock.clone();
        let keyspace = keyspace.to_string();
        let keys = keys.to_vec();
        let n = keys.len();
        ReadPool::get().run(move || {
            let _ = tx.send(read_many(&engine, &*clock, &keyspace, &keys));
        });
        let _waiting = Handoff::start();
        rx.await.unwrap_or_else(|_| {
            // Only a reader that panicked drops the sender.
            (0..n)
                .map(|_| Err(StoreError::Storage("a read failed unexpectedly".into())))
                .collect()
        })
    }
}

/// `now_ms` is read from the wall clock on first need and kept for the caller's next key:
/// only a cell with a TTL needs it, and the clock call was ~2 % of a GET's CPU.
fn read_one(
    engine: &Engine,
    clock: &dyn Clock,
    keyspace: &str,
    key: &Bytes,
    now_ms: &mut Option<u64>,
) -> Result<Option<Entry>, StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Ok(None);
    }
    let ck = CellKey::new(token_of(key), key.clone());
    let cell = engine.get(keyspace, &ck).map_err(storage_err)?;
    Ok(cell.and_then(|c| live_cell(&c, clock, now_ms)))
}

/// The entry a stored cell reads as now, if it is live.
fn live_cell(c: &Cell, clock: &dyn Clock, now_ms: &mut Option<u64>) -> Option<Entry> {
    let now = match c.expires_at_ms {
        Some(_) => *now_ms.get_or_insert_with(|| clock.wall_millis()),
        // No TTL: `live_entry` does not look at the time.
        None => 0,
    };
    live_entry(c.value.as_ref(), c.expires_at_ms, now)
}

/// As [`read_one`] for each key, in order, through one engine batch read
/// ([`Engine::get_many`]).
fn read_many(
    engine: &Engine,
    clock: &dyn Clock,
    keyspace: &str,
    keys: &[Bytes],
) -> Vec<Result<Option<Entry>, StoreError>> {
    // Over-long keys cannot have been written: they read as absent without a lookup.
    let cks: Vec<CellKey> = keys
        .iter()
        .filter(|k| k.len() <= MAX_KEY_BYTES)
        .map(|k| CellKey::new(token_of(k), k.clone()))
        .collect();
    let mut cells = match engine.get_many(keyspace, &cks) {
        Ok(cells) => cells.into_iter(),
        Err(e) => {
            let e = storage_err(e);
            return keys.iter().map(|_| Err(e.clone())).collect();
        }
    };
    let mut now_ms = None;
    keys.iter()
        .map(|k| {
            if k.len() > MAX_KEY_BYTES {
                return Ok(None);
            }
            let cell = cells.next().unwrap_or(Ok(None)).map_err(storage_err)?;
            Ok(cell.and_then(|c| live_cell(&c, clock, &mut now_ms)))
        })
        .collect()
}

fn writer_loop(
    engine: &Engine,
    core: &Mutex<Hlc>,
    clock: &dyn Clock,
    mut rx: mpsc::Receiver<Msg>,
    stats: &LocalStoreStats,
    batch_max: usize,
) {
    let mut carried: Option<WriteRequest> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(Msg::Write(r)) => r,
                Some(Msg::Stop) | None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        let mut stop = false;
        while group.len() < batch_max && bytes < GROUP_BYTES_MAX {
            match rx.try_recv() {
                Ok(Msg::Write(r)) => {
                    if bytes + r.bytes > GROUP_BYTES_MAX {
                        carried = Some(r);
                        break;
                    }
                    bytes += r.bytes;
                    group.push(r);
                }
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        reply_group(engine, core, clock, group, stats);
        if stop {
            if let Some(r) = carried.take() {
                reply_group(engine, core, clock, vec![r], stats);
            }
            return;
        }
    }
}

/// Applies a group of queued requests under the writer lock, then answers each.
fn reply_group(
    engine: &Engine,
    core: &Mutex<Hlc>,
    clock: &dyn Clock,
    group: Vec<WriteRequest>,
    stats: &LocalStoreStats,
) {
    let items: Vec<(&str, &[Mutation])> = group
        .iter()
        .map(|r| (r.keyspace.as_str(), r.mutations.as_slice()))
        .collect();
    let results = {
        let hlc = core.lock();
        apply_group(engine, &hlc, clock, &items, stats)
    };
    drop(items);
    debug_assert_eq!(results.len(), group.len());
    for (req, result) in group.into_iter().zip(results) {
        let _ = req.reply.send(result);
    }
}

/// Whether a mutation writes without looking at the current version.
fn is_blind(m: &Mutation) -> bool {
    m.condition == Condition::Always
        && !m.want_previous
        && matches!(
            m.action,
            Action::Put {
                expiry: Expiry::Never | Expiry::AtMs(_),
                ..
            } | Action::Delete
        )
}

/// Keys and values up to this size are copied into the memtable's own arena by the engine
/// (`hearsay_storage::memtable`'s private `ARENA_COPY_MAX_BYTES`, 4 KiB); larger ones are kept
/// as given. Only those larger ones are copied here, so a memtable entry never pins a whole
/// network read buffer, while small cells are not copied twice. If the engine lowers its
/// threshold, the cost is memory held by read buffers, not correctness.
const MEMTABLE_COPIES_UP_TO_BYTES: usize = 4 << 10;

fn own_bytes(b: &Bytes) -> Bytes {
    if b.len() > MEMTABLE_COPIES_UP_TO_BYTES {
        Bytes::copy_from_slice(b)
    } else {
        b.clone()
    }
}

/// Evaluates and applies one group of write requests (`(keyspace, mutations)` each) as one
/// engine batch per keyspace; one result per request, in order. The caller holds the writer
/// lock (`hlc` is only reachable through it), so evaluation sees every earlier write and
/// timestamps are minted in apply order.
fn apply_group(
    engine: &Engine,
    hlc: &Hlc,
    clock: &dyn Clock,
    group: &[(&str, &[Mutation])],
    stats: &LocalStoreStats,
) -> Vec<Result<Vec<Outcome>, StoreError>> {
    let now_ms = clock.wall_millis();
    stats.write_groups.fetch_add(1, Ordering::Relaxed);
    stats
        .write_requests
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    stats
        .largest_group
        .fetch_max(group.len() as u64, Ordering::Relaxed);
    // Only mutations that read the current version need to see what the group has written
    // so far; a group of blind writes (plain SETs) skips that bookkeeping entirely.
    let reads = group.iter().any(|(_, ms)| ms.iter().any(|m| !is_blind(m)));
    // What this group has written so far, so later mutations see earlier ones.
    let mut overlay: HashMap<(&str, Bytes), Option<Entry>> = HashMap::new();
    let mut cells: BTreeMap<&str, Vec<(CellKey, Cell)>> = BTreeMap::new();
    let mut results: Vec<Result<Vec<Outcome>, StoreError>> = Vec::with_capacity(group.len());
    for &(ks, mutations) in group {
        let mut outcomes = Vec::with_capacity(mutations.len());
        let mut local_cells = Vec::with_capacity(mutations.len());
        let mut local_overlay: Vec<((&str, Bytes), Option<Entry>)> = Vec::new();
        let mut failed = None;
        for m in mutations {
            let current = if is_blind(m) {
                None
            } else if let Some(e) = local_overlay
                .iter()
                .rev()
                .find(|((_, k), _)| *k == m.key)
                .map(|(_, e)| e.clone())
            {
                e
            } else if let Some(e) = overlay.get(&(ks, m.key.clone())) {
                e.clone()
            } else {
                let ck = CellKey::new(token_of(&m.key), m.key.clone());
                match engine.get(ks, &ck) {
                    Ok(c) => c.and_then(|c| {
                        hlc.observe(c.timestamp);
                        live_entry(c.value.as_ref(), c.expires_at_ms, now_ms)
                    }),
                    Err(e) => {
                        failed = Some(storage_err(e));
                        break;
                    }
                }
            };
            let (outcome, new_cell) = evaluate(current.as_ref(), m, now_ms);
            if let Some(nc) = new_cell {
                let ts = hlc.now();
                let key = own_bytes(&m.key);
                let cell = match nc.value {
                    Some(v) => Cell {
                        value: Some(own_bytes(&v)),
                        timestamp: ts,
                        expires_at_ms: nc.expires_at_ms,
                    },
                    None => Cell::tombstone(ts),
                };
                if reads {
                    let entry = live_entry(cell.value.as_ref(), cell.expires_at_ms, now_ms);
                    local_overlay.push(((ks, key.clone()), entry));
                }
                local_cells.push((CellKey::new(token_of(&key), key), cell));
            }
            outcomes.push(outcome);
        }
        match failed {
            Some(e) => results.push(Err(e)),
            None => {
                stats
                    .mutations_applied
                    .fetch_add(local_cells.len() as u64, Ordering::Relaxed);
                overlay.extend(local_overlay);
                cells.entry(ks).or_default().extend(local_cells);
                results.push(Ok(outcomes));
            }
        }
    }
    drop(overlay);
    let mut failed_keyspaces: BTreeMap<&str, StoreError> = BTreeMap::new();
    for (ks, batch) in &cells {
        if let Err(e) = engine.apply(ks, batch) {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(keyspace = ks, error = %e, "write batch failed");
            failed_keyspaces.insert(ks, storage_err(e));
        }
    }
    if !failed_keyspaces.is_empty() {
        for (&(ks, _), result) in group.iter().zip(results.iter_mut()) {
            if let (Some(e), true) = (failed_keyspaces.get(ks), result.is_ok()) {
                *result = Err(e.clone());
            }
        }
    }
    results
}

impl Store for LocalStore {
    fn get<'a>(
        &'a self,
        ctx: &'a RequestContext,
        key: Bytes,
    ) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        let r = self.read_one(&ctx.keyspace, &key, &mut None);
        Box::pin(std::future::ready(r))
    }

    fn get_many<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: Vec<Bytes>,
    ) -> BoxFuture<'a, Result<Vec<Option<Entry>>, StoreError>> {
        Box::pin(async move {
            self.read_each(&ctx.keyspace, &keys)
                .await
                .into_iter()
                .collect()
        })
    }

    fn get_each<'a>(
        &'a self,
        ctx: &'a RequestContext,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Vec<Result<Option<Entry>, StoreError>>> {
        Box::pin(self.read_each(&ctx.keyspace, keys))
    }

    fn write<'a>(
        &'a self,
        ctx: &'a RequestContext,
        mutations: Vec<Mutation>,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable("server is shutting down".into()));
            }
            self.check_keyspace(&ctx.keyspace)?;
            let mut bytes = 0usize;
            for m in &mutations {
                if m.key.len() > MAX_KEY_BYTES {
                    return Err(key_too_long(m.key.len()));
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
            if self.inline_when_idle
                && let Some(hlc) = self.core.try_lock()
            {
                // Shutdown sets `closed` before it takes this lock, so a write that gets here
                // after shutdown finished cannot touch the closed engine unnoticed.
                if self.closed.load(Ordering::Acquire) {
                    return Err(StoreError::Unavailable("server is shutting down".into()));
                }
                self.stats.inline_requests.fetch_add(1, Ordering::Relaxed);
                let group = [(ctx.keyspace.as_str(), mutations.as_slice())];
                let mut results =
                    apply_group(&self.engine, &hlc, &*self.clock, &group, &self.stats);
                drop(hlc);
                debug_assert_eq!(results.len(), 1);
                return results.pop().unwrap_or_else(|| {
                    Err(StoreError::Storage("write produced no result".into()))
                });
            }
            let _waiting = Handoff::start();
            let (reply, rx) = oneshot::channel();
            let req = WriteRequest {
                keyspace: ctx.keyspace.clone(),
                mutations,
                bytes,
                reply,
            };
            self.tx
                .send(Msg::Write(req))
                .await
                .map_err(|_| StoreError::Unavailable("server is shutting down".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("write aborted by shutdown".into()))?
        })
    }

    fn scan<'a>(
        &'a self,
        ctx: &'a RequestContext,
        from: Token,
        count: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        let engine = self.engine.clone();
        let keyspace = ctx.keyspace.clone();
        let now = self.now_ms();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || scan_page(&engine, &keyspace, from, count, now))
                .await
                .map_err(|e| StoreError::Storage(e.to_string()))?
        })
    }

    fn count_keys<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<u64, StoreError>> {
        let engine = self.engine.clone();
        let keyspace = ctx.keyspace.clone();
        let now = self.now_ms();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut n = 0u64;
                for item in engine
                    .scan(&keyspace, Bound::Unbounded, Bound::Unbounded)
                    .map_err(storage_err)?
                {
                    let (_, c) = item.map_err(storage_err)?;
                    if c.live_value(now).is_some() {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.wall_millis()
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The writer finishes everything queued before the stop marker, then exits.
        // Connections have finished by now, so the queue drains quickly; this may be called
        // from async code, so wait by polling rather than with a blocking send.
        while let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Msg::Stop) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // Wait for an inline write still applying; later ones see `closed` under the lock.
        drop(self.core.lock());
        // A stop on a full disk is clean: the unflushed data stays in the commit log.
        self.engine.shutdown().map_err(storage_err)
    }

    fn info(&self) -> Vec<(&'static str, String, String)> {
        let st = &self.stats;
        let l = |sec: &'static str, k: &str, v: String| (sec, k.to_string(), v);
        let mut lines = super::engine_info(&self.engine);
        lines.extend([
            l(
                "stats",
                "write_groups",
                st.write_groups.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "stats",
                "write_requests",
                st.write_requests.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "stats",
                "write_largest_group",
                st.largest_group.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "stats",
                "write_errors",
                st.write_errors.load(Ordering::Relaxed).to_string(),
            ),
            l(
                "stats",
                "write_inline_requests",
                st.inline_requests.load(Ordering::Relaxed).to_string(),
            ),
        ]);
        lines
    }

    fn keyspaces(&self) -> Vec<super::KeyspaceInfo> {
        // One node: every keyspace has exactly one replica, this one.
        self.engine
            .keyspaces()
            .into_iter()
            .map(|name| super::KeyspaceInfo {
                options: self
                    .engine
                    .keyspace_options(&name)
                    .map(|o| hearsay_cluster::node::KeyspaceOptions::from_engine(&o))
                    .unwrap_or_default(),
                name,
                strategy: hearsay_ring::ReplicationStrategy::Simple { rf: 1 },
                default_consistency: None,
            })
            .collect()
    }

    fn create_keyspace<'a>(
        &'a self,
        spec: super::KeyspaceSpec,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                engine.create_keyspace(&spec.name, spec.options.engine_options())
            })
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
            .map_err(|e| match e {
                hearsay_storage::Error::KeyspaceExists(k) => StoreError::KeyspaceExists(k),
                hearsay_storage::Error::InvalidArgument(m) => StoreError::Invalid(m),
                e => storage_err(e),
            })
        })
    }

    fn drop_keyspace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let engine = self.engine.clone();
        let name = name.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || engine.drop_keyspace(&name))
                .await
                .map_err(|e| StoreError::Storage(e.to_string()))?
                .map_err(|e| match e {
                    hearsay_storage::Error::InvalidArgument(m) => StoreError::Invalid(m),
                    e => storage_err(e),
                })
        })
    }
}

fn scan_page(
    engine: &Engine,
    keyspace: &str,
    from: Token,
    count: usize,
    now_ms: u64,
) -> Result<ScanPage, StoreError> {
    let lower = Bound::Included(CellKey::new(from, Bytes::new()));
    let iter = engine
        .scan(keyspace, lower, Bound::Unbounded)
        .map_err(storage_err)?;
    let mut entries = Vec::new();
    let mut prev_token: Option<Token> = None;
    for (examined, item) in iter.enumerate() {
        let (k, c) = item.map_err(storage_err)?;
        // Pages end only between tokens, so the cursor (a token) never splits keys.
        if prev_token != Some(k.token) && (entries.len() >= count || examined >= SCAN_EXAMINE_MAX) {
            return Ok(ScanPage {
                entries,
                next: Some(k.token),
            });
        }
        prev_token = Some(k.token);
        if let Some(e) = live_entry(c.live_value(now_ms), c.expires_at_ms, now_ms) {
            entries.push((k.key, e));
        }
    }
    Ok(ScanPage {
        entries,
        next: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_storage::EngineConfig;
    use hearsay_types::SystemClock;

    fn store(dir: &std::path::Path) -> Arc<LocalStore> {
        store_with(dir, true)
    }

    fn store_with(dir: &std::path::Path, inline_when_idle: bool) -> Arc<LocalStore> {
        let engine = Engine::open(EngineConfig::new(dir)).unwrap();
        Arc::new(LocalStore::new(
            Arc::new(engine),
            Arc::new(SystemClock),
            WriterConfig {
                batch_max: 64,
                queue_max: 256,
                inline_when_idle,
            },
        ))
    }

    /// 64 tasks race a SET NX on each of `LOCKS` keys: exactly one wins each key, whether
    /// writes queue for the writer thread or (inline) also apply on the tasks' threads.
    async fn conditional_race(inline_when_idle: bool) {
        const LOCKS: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let s = store_with(dir.path(), inline_when_idle);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let ctx = RequestContext::default();
                let mut won = Vec::new();
                for lock in 0..LOCKS {
                    let m = Mutation {
                        key: Bytes::from(format!("lock{lock}")),
                        condition: Condition::Absent,
                        action: Action::Put {
                            value: Bytes::from(format!("{i}")),
                            expiry: Expiry::Never,
                        },
                        want_previous: false,
                    };
                    if s.write(&ctx, vec![m]).await.unwrap()[0].applied {
                        won.push((lock, i));
                    }
                }
                won
            }));
        }
        let mut winners = BTreeMap::new();
        for t in tasks {
            for (lock, i) in t.await.unwrap() {
                assert!(
                    winners.insert(lock, i).is_none(),
                    "two winners of lock{lock}"
                );
            }
        }
        assert_eq!(winners.len(), LOCKS);
        // Every key holds its winner's value: no loser's write slipped in after.
        let ctx = RequestContext::default();
        for (lock, i) in &winners {
            let e = s
                .get(&ctx, Bytes::from(format!("lock{lock}")))
                .await
                .unwrap();
            assert_eq!(e.unwrap().value, Bytes::from(format!("{i}")));
        }
        let st = s.stats();
        assert_eq!(st.write_requests.load(Ordering::Relaxed), 64 * LOCKS as u64);
        if !inline_when_idle {
            assert_eq!(st.inline_requests.load(Ordering::Relaxed), 0);
        }
        s.shutdown().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_conditional_writes_have_exactly_one_winner_inline() {
        conditional_race(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_conditional_writes_have_exactly_one_winner_queued() {
        conditional_race(false).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_writer_applies_inline_and_shutdown_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let ctx = RequestContext::default();
        // Nothing else writes, so the lock is always free: every write applies inline.
        for i in 0..10 {
            let m = Mutation::put(
                Bytes::from(format!("k{i}")),
                Bytes::from(vec![b'v'; i * 1000]),
            );
            s.write(&ctx, vec![m]).await.unwrap();
        }
        assert_eq!(s.stats().inline_requests.load(Ordering::Relaxed), 10);
        for i in 0..10 {
            let e = s.get(&ctx, Bytes::from(format!("k{i}"))).await.unwrap();
            assert_eq!(e.map(|e| e.value.len()), Some(i * 1000));
        }
        s.shutdown().unwrap();
        let m = Mutation::put(Bytes::from_static(b"late"), Bytes::new());
        assert!(matches!(
            s.write(&ctx, vec![m]).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// Reads of several keys go through the read pool and come back in request order, one
    /// result per key: present, absent, expired, and too long to exist; reads of one key
    /// stay on the caller's thread.
    #[tokio::test(flavor = "current_thread")]
    async fn multi_key_reads_run_on_the_read_pool_and_keep_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let ctx = RequestContext::default();
        let mut puts: Vec<Mutation> = (0..20)
            .map(|i| Mutation::put(Bytes::from(format!("k{i}")), Bytes::from(format!("v{i}"))))
            .collect();
        puts.push(Mutation {
            key: Bytes::from_static(b"gone"),
            condition: Condition::Always,
            action: Action::Put {
                value: Bytes::from_static(b"old"),
                expiry: Expiry::AtMs(1),
            },
            want_previous: false,
        });
        s.write(&ctx, puts).await.unwrap();
        // Half the keys in an SSTable, half in the memtable.
        s.engine().flush(None).unwrap();
        for i in 20..40 {
            let m = Mutation::put(Bytes::from(format!("k{i}")), Bytes::from(format!("v{i}")));
            s.write(&ctx, vec![m]).await.unwrap();
        }
        let mut keys: Vec<Bytes> = (0..45)
            .rev()
            .map(|i| Bytes::from(format!("k{i}")))
            .collect();
        keys.insert(3, Bytes::from_static(b"gone"));
        keys.insert(7, Bytes::from(vec![b'x'; MAX_KEY_BYTES + 1]));
        let before = ReadPool::running().map_or(0, |p| p.stats.offloaded.load(Ordering::Relaxed));
        let got = s.get_each(&ctx, &keys).await;
        assert_eq!(got.len(), keys.len());
        for (k, r) in keys.iter().zip(&got) {
            let want = std::str::from_utf8(k)
                .ok()
                .and_then(|k| k.strip_prefix('k'))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n < 40)
                .map(|n| Bytes::from(format!("v{n}")));
            let r = r.as_ref().unwrap().as_ref().map(|e| e.value.clone());
            assert_eq!(r, want, "key {k:?}");
        }
        let many = s.get_many(&ctx, keys.clone()).await.unwrap();
        assert_eq!(many.len(), keys.len());
        assert!(many.iter().zip(&got).all(|(a, b)| a == b.as_ref().unwrap()));
        let pool = ReadPool::running().expect("a multi-key read started the pool");
        // Other tests in this process may use the pool too, so at least our two reads.
        assert!(
            pool.stats.offloaded.load(Ordering::Relaxed)
                + pool.stats.queue_full.load(Ordering::Relaxed)
                >= before + 2
        );
        // A keyspace that does not exist fails every key of the run, each on its own.
        let bad = RequestContext {
            keyspace: "nope".into(),
            ..RequestContext::default()
        };
        let errs = s.get_each(&bad, &keys[..5]).await;
        assert_eq!(errs.len(), 5);
        assert!(
            errs.iter()
                .all(|r| matches!(r, Err(StoreError::NoSuchKeyspace(_))))
        );
        s.shutdown().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scan_pages_cover_every_live_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let ctx = RequestContext::default();
        let puts = (0..300)
            .map(|i| Mutation::put(Bytes::from(format!("k{i}")), Bytes::from_static(b"v")))
            .collect();
        s.write(&ctx, puts).await.unwrap();
        let dels = (0..300)
            .step_by(3)
            .map(|i| Mutation {
                key: Bytes::from(format!("k{i}")),
                condition: Condition::Present,
                action: Action::Delete,
                want_previous: false,
            })
            .collect();
        let out = s.write(&ctx, dels).await.unwrap();
        assert!(out.iter().all(|o| o.applied));
        let mut from = Token::MIN;
        let mut seen = Vec::new();
        loop {
            let page = s.scan(&ctx, from, 17).await.unwrap();
            seen.extend(page.entries.into_iter().map(|(k, _)| k));
            match page.next {
                Some(t) => from = t,
                None => break,
            }
        }
        assert_eq!(seen.len(), 200);
        let tokens: Vec<Token> = seen.iter().map(|k| token_of(k)).collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s.count_keys(&ctx).await.unwrap(), 200);
        s.shutdown().unwrap();
        // Writes after shutdown are refused rather than lost.
        assert!(matches!(
            s.write(
                &ctx,
                vec![Mutation::put(Bytes::from_static(b"x"), Bytes::new())]
            )
            .await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
