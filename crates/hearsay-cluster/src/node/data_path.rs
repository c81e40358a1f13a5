//! The coordinator's data path: the async driver around the pure `crate::quorum` types.
//!
//! Write: group the cells by replica set, check availability (fail fast), send to every
//! natural + pending replica (the local one through the engine directly; unfit replicas are
//! hinted instead while the others can meet the level), acknowledge after W; replicas that
//! are down, fail or time out get a hint (our own through a peer, `HintFor`). A write a
//! counted replica reports superseded is re-sent above the newer version. The per-write task
//! keeps running after the client is answered, so late failures are still hinted.
//!
//! Read: plan (closest live replicas), one data read + digests; on a mismatch full reads
//! from every contacted replica, newest wins, and stale replicas are repaired with a
//! blocking write before the answer.

use super::messages::{HintFor, Mutate, MutateV2, Read, ReadReply, WireCell};
use super::{Inner, NodeError, RingView, Superseded};
use crate::hints::HintOutcome;
use crate::quorum::{
    ConsistencyError, FailureReason, ReadPlan, ReadRepair, ReadResolver, ReadStatus, RepairStatus,
    WriteStatus, WriteTracker,
};
use crate::rpc::RpcError;
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{ConsistencyLevel, NodeId, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What a successful write reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteResult {
    /// Cells some replica reported as losing to a newer version it already held (the write
    /// was acknowledged but is not the newest; see docs/cluster.md).
    pub superseded: u32,
    /// The timestamp given to cells the caller left at 0.
    pub timestamp: Timestamp,
}

pub(super) fn failure_of(e: &RpcError) -> FailureReason {
    match e {
        RpcError::Timeout { .. } => FailureReason::Timeout,
        RpcError::Overloaded { .. } => FailureReason::Overloaded,
        other => FailureReason::Error(other.to_string()),
    }
}

type Batch = Vec<(CellKey, Cell)>;

/// Most times one write is re-sent above a newer version a replica holds: one retry settles
/// a write that lost to an earlier one from a clock ahead; more mean writers racing on one
/// key, where either order is correct and the write is reported superseded instead.
const MAX_SUPERSEDED_RETRIES: u32 = 3;
/// Peers asked, one after the other, to hold a hint for this node when its own replica
/// failed: two, so that one unreachable peer does not lose the hint.
const HINT_FORWARD_ATTEMPTS: usize = 2;

impl Inner {
    pub(super) fn route(&self, view: &RingView, keyspace: &str) -> Result<(), NodeError> {
        if view.routes.contains_key(keyspace) {
            Ok(())
        } else {
            Err(NodeError::NoSuchKeyspace(keyspace.to_string()))
        }
    }

    pub(crate) async fn write(
        self: &Arc<Self>,
        keyspace: &str,
        mut cells: Batch,
        level: ConsistencyLevel,
    ) -> Result<WriteResult, NodeError> {
        if let Err(e) = self.check_write_coordinator() {
            if matches!(e, NodeError::ClockSkew(_)) {
                self.counters
                    .writes_refused_clock_skew
                    .fetch_add(1, Relaxed);
            }
            return Err(e);
        }
        let view = self.current_view();
        self.route(&view, keyspace)?;
        self.counters.writes.inc(level);
        let ts = self.hlc.now();
        for (_, c) in cells.iter_mut() {
            if c.timestamp == Timestamp(0) {
                c.timestamp = ts;
            } else {
                // A caller-minted timestamp is a causal fact this clock must not mint below.
                self.hlc.observe(c.timestamp);
            }
        }
        // Group by replica set: every group is one write with its own tracker.
        let route = &view.routes[keyspace];
        let mut groups: BTreeMap<(Vec<NodeId>, Vec<NodeId>), Batch> = BTreeMap::new();
        for (k, c) in cells {
            let ep = route.map.write_endpoints(k.token);
            groups
                .entry((ep.natural.to_vec(), ep.pending.to_vec()))
                .or_default()
                .push((k, c));
        }
        let mut waits = Vec::with_capacity(groups.len());
        for ((natural, pending), batch) in groups {
            match self.start_write(&view, keyspace, &natural, &pending, batch.clone(), level) {
                Ok(rx) => waits.push((natural, pending, batch, rx)),
                Err(e) => {
                    self.counters.write_unavailable.fetch_add(1, Relaxed);
                    return Err(e.into());
                }
            }
        }
        let mut result = WriteResult {
            superseded: 0,
            timestamp: ts,
        };
        for (natural, pending, mut batch, mut rx) in waits {
            let mut retries = 0;
            loop {
                let verdict = match rx.await {
                    Ok(v) => v,
                    Err(_) => return Err(NodeError::ShuttingDown),
                };
                match verdict {
                    Ok(s) if s.cells > 0 && self.may_retry_above(level, s.newest, retries) => {
                        // A replica among those counted holds a newer version: a write that
                        // was acknowledged before this one started may have got a later
                        // timestamp from a clock that runs ahead. Re-send this write above
                        // it, so that a later write never loses to an earlier one.
                        retries += 1;
                        self.counters.superseded_retries.fetch_add(1, Relaxed);
                        let bumped = self.timestamp_above(s.newest);
                        for (_, c) in batch.iter_mut() {
                            c.timestamp = bumped;
                        }
                        result.timestamp = result.timestamp.max(bumped);
                        match self.start_write(
                            &view,
                            keyspace,
                            &natural,
                            &pending,
                            batch.clone(),
                            level,
                        ) {
                            Ok(next) => rx = next,
                            Err(e) => {
                                self.counters.write_unavailable.fetch_add(1, Relaxed);
                                return Err(e.into());
                            }
                        }
                    }
                    Ok(s) => {
                        result.superseded += s.cells;
                        break;
                    }
                    Err(e) => {
                        match &e {
                            ConsistencyError::Timeout { .. } => &self.counters.write_timeouts,
                            _ => &self.counters.write_failures,
                        }
                        .fetch_add(1, Relaxed);
                        return Err(e.into());
                    }
                }
            }
        }
        if result.superseded > 0 {
            self.counters
                .superseded_cells
                .fetch_add(u64::from(result.superseded), Relaxed);
        }
        Ok(result)
    }

    /// Whether a write some counted replica superseded is re-sent above `newest`: not for ANY
    /// (a hint is not a replica), not after [`MAX_SUPERSEDED_RETRIES`], and not above a
    /// timestamp too far ahead for replicas to accept (a version planted by a clock far
    /// ahead: the write is reported superseded instead of failing on every replica).
    fn may_retry_above(&self, level: ConsistencyLevel, newest: u64, retries: u32) -> bool {
        let limit = self
            .rpc
            .context()
            .cluster_now_us()
            .saturating_add(self.config.max_timestamp_lead_us());
        level != ConsistencyLevel::Any
            && retries < MAX_SUPERSEDED_RETRIES
            && newest > 0
            && newest < limit
    }

    /// A timestamp newer than `newest` and than anything this clock minted, observed by the
    /// clock so that later writes through this node start above it.
    fn timestamp_above(&self, newest: u64) -> Timestamp {
        self.hlc.observe(Timestamp(newest));
        self.hlc.now()
    }

    /// Starts one replica-set write; the receiver gets the verdict as soon as the level is
    /// met or cannot be. Fails at once with `Unavailable`.
    fn start_write(
        self: &Arc<Self>,
        view: &RingView,
        keyspace: &str,
        natural: &[NodeId],
        pending: &[NodeId],
        batch: Batch,
        level: ConsistencyLevel,
    ) -> Result<oneshot::Receiver<Result<Superseded, ConsistencyError>>, ConsistencyError> {
        let dcs = view.dc_info();
        let strategy = &view.routes[keyspace].def.strategy;
        // Replicas whose storage cannot take writes (poisoned, disk full) are left out and
        // hinted while the others can meet the level; when they cannot, every live replica
        // is tried (the sick one may have recovered since it last gossiped).
        let fit = view.fit_alive();
        let mut tracker = WriteTracker::new(level, natural, pending, strategy, Some(&dcs), &fit);
        if fit.len() != view.alive.len() && tracker.check_availability().is_err() {
            tracker = WriteTracker::new(level, natural, pending, strategy, Some(&dcs), &view.alive);
        }
        tracker.check_availability()?;
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        let (tx, mut rx) = mpsc::channel::<(NodeId, Result<Superseded, FailureReason>)>(
            natural.len() + pending.len() + 1,
        );
        let batch = Arc::new(batch);
        // When this node is a replica, the acknowledgement also waits for its own apply (or
        // its failure, or the deadline): a client that writes through a node and then reads
        // at ONE through the same node, which is served by the local replica, must see its
        // write even when a remote replica acknowledged first.
        let mut local_pending = false;
        for node in tracker.send_to() {
            local_pending |= node == self.id;
            let tx = tx.clone();
            let this = self.clone();
            let batch = batch.clone();
            let keyspace = keyspace.to_string();
            let addr = view.addr_of(node);
            tokio::spawn(async move {
                let r = this
                    .send_mutation(node, addr, keyspace, &batch, timeout, true)
                    .await;
                let _ = tx.send((node, r)).await;
            });
        }
        drop(tx);
        let (done_tx, done_rx) = oneshot::channel();
        let this = self.clone();
        let keyspace = keyspace.to_string();
        tokio::spawn(async move {
            let mut done_tx = Some(done_tx);
            let mut superseded = Superseded::default();
            let mut timed_out = false;
            loop {
                this.hint_failed(&mut tracker, &keyspace, &batch).await;
                match tracker.status() {
                    WriteStatus::Pending => {}
                    WriteStatus::Satisfied if local_pending => {}
                    WriteStatus::Satisfied => {
                        if let Some(t) = done_tx.take() {
                            let _ = t.send(Ok(superseded));
                        }
                    }
                    WriteStatus::Failed(e) => {
                        if let Some(t) = done_tx.take() {
                            let _ = t.send(Err(e));
                        }
                    }
                }
                tokio::select! {
                    r = rx.recv() => match r {
                        Some((node, Ok(s))) => {
                            local_pending &= node != this.id;
                            // Only answers that count toward the verdict matter: the verdict
                            // is sent as soon as the level is met.
                            if tracker.on_ack(node) && done_tx.is_some() {
                                superseded.cells = superseded.cells.max(s.cells);
                                superseded.newest = superseded.newest.max(s.newest);
                            }
                        }
                        Some((node, Err(reason))) => {
                            local_pending &= node != this.id;
                            tracker.on_failure(node, reason);
                        }
                        None => {
                            // Every replica answered or failed; settle hints and stop.
                            this.hint_failed(&mut tracker, &keyspace, &batch).await;
                            if let Some(t) = done_tx.take() {
                                let _ = t.send(match tracker.status() {
                                    WriteStatus::Satisfied => Ok(superseded),
                                    WriteStatus::Failed(e) => Err(e),
                                    WriteStatus::Pending => {
                                        tracker.on_timeout();
                                        match tracker.status() {
                                            WriteStatus::Failed(e) => Err(e),
                                            _ => Ok(superseded),
                                        }
                                    }
                                });
                            }
                            return;
                        }
                    },
                    _ = tokio::time::sleep_until(deadline), if !timed_out => {
                        timed_out = true;
                        local_pending = false;
                        tracker.on_timeout();
                    }
                }
            }
        });
        Ok(done_rx)
    }

    /// Stores a hint for every replica the tracker lists (down, failed, timed out).
    async fn hint_failed(
        self: &Arc<Self>,
        tracker: &mut WriteTracker,
        keyspace: &str,
        batch: &Arc<Batch>,
    ) {
        for node in tracker.needs_hint() {
            if self.config.testing.plant == Some(super::PlantedBug::DropHints) {
                // Planted bug (test-only): the hint is lost.
                tracker.on_hint_dropped(node);
                continue;
            }
            if node == self.id {
                // Our own replica failed (its storage refuses writes, and our hint store,
                // on the same disk, likely too): a peer holds the hint for us and replays it
                // once our storage takes writes again.
                if self.forward_hint(&tracker.members(), keyspace, batch).await {
                    self.counters.hints_stored.fetch_add(1, Relaxed);
                    tracker.on_hint_stored(node);
                } else {
                    self.counters.hints_dropped.fetch_add(1, Relaxed);
                    tracker.on_hint_dropped(node);
                }
                continue;
            }
            let Some(store) = self.hints.clone() else {
                tracker.on_hint_dropped(node);
                continue;
            };
            let ks = keyspace.to_string();
            let b = batch.clone();
            let now_ms = self.clock.wall_millis();
            let outcome =
                tokio::task::spawn_blocking(move || store.store(node, &ks, &b, now_ms)).await;
            match outcome {
                Ok(HintOutcome::Stored { .. }) => {
                    self.counters.hints_stored.fetch_add(1, Relaxed);
                    tracker.on_hint_stored(node);
                    self.hint_wake.notify_one();
                }
                _ => {
                    self.counters.hints_dropped.fetch_add(1, Relaxed);
                    tracker.on_hint_dropped(node);
                }
            }
        }
    }

    /// Asks a live peer (the write's other replicas first) to hold a hint for this node;
    /// whether one did.
    async fn forward_hint(
        self: &Arc<Self>,
        replicas: &[NodeId],
        keyspace: &str,
        batch: &Arc<Batch>,
    ) -> bool {
        let view = self.current_view();
        let mut peers: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|n| *n != self.id && view.up.contains(n))
            .collect();
        peers.extend(
            view.up
                .iter()
                .copied()
                .filter(|n| *n != self.id && !replicas.contains(n)),
        );
        let m = HintFor {
            target: self.id.0,
            keyspace: keyspace.to_string(),
            cells: batch
                .iter()
                .map(|(k, c)| WireCell::from_cell(k, c))
                .collect(),
        };
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        for peer in peers.into_iter().take(HINT_FORWARD_ATTEMPTS) {
            let Some(addr) = view.addr_of(peer) else {
                continue;
            };
            match self.rpc.call(addr, &m, timeout).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "peer could not hold a hint for us");
                }
            }
        }
        false
    }

    /// Sends `batch` to one replica (the local engine directly); reports what it superseded.
    /// A coordinator's write (`report_superseded`) goes as `MutateV2`, which says how new
    /// the version that beat it is; a peer that does not know that method gets `Mutate`.
    pub(crate) async fn send_mutation(
        self: &Arc<Self>,
        node: NodeId,
        addr: Option<std::net::SocketAddr>,
        keyspace: String,
        batch: &[(CellKey, Cell)],
        timeout: Duration,
        report_superseded: bool,
    ) -> Result<Superseded, FailureReason> {
        let report = report_superseded && self.config.report_superseded;
        if node == self.id {
            return self
                .apply_local(keyspace, batch.to_vec(), report)
                .await
                .map_err(FailureReason::Error);
        }
        let Some(addr) = addr else {
            return Err(FailureReason::Error("no known address".into()));
        };
        let cells: Vec<WireCell> = batch
            .iter()
            .map(|(k, c)| WireCell::from_cell(k, c))
            .collect();
        if report {
            let m = MutateV2 {
                keyspace: keyspace.clone(),
                cells: cells.clone(),
                report_superseded: true,
            };
            match self.rpc.call(addr, &m, timeout).await {
                Ok(ack) => {
                    return Ok(Superseded {
                        cells: ack.superseded,
                        newest: ack.newest_superseding,
                    });
                }
                Err(RpcError::UnknownMethod { .. }) => {}
                Err(e) => return Err(failure_of(&e)),
            }
        }
        let m = Mutate {
            keyspace,
            cells,
            report_superseded: report,
        };
        match self.rpc.call(addr, &m, timeout).await {
            Ok(ack) => Ok(Superseded {
                cells: ack.superseded,
                newest: 0,
            }),
            Err(e) => Err(failure_of(&e)),
        }
    }

    async fn read_one(
        self: &Arc<Self>,
        node: NodeId,
        addr: Option<std::net::SocketAddr>,
        keyspace: String,
        key: CellKey,
        digest_only: bool,
        timeout: Duration,
    ) -> Result<ReadReply, FailureReason> {
        if node == self.id {
            let cell = self
                .get_local(keyspace, key.clone())
                .await
                .map_err(FailureReason::Error)?;
            return Ok(if digest_only {
                ReadReply::Digest(crate::quorum::cell_digest(cell.as_ref()))
            } else {
                ReadReply::Data(cell.map(|c| WireCell::from_cell(&key, &c)))
            });
        }
        let Some(addr) = addr else {
            return Err(FailureReason::Error("no known address".into()));
        };
        let m = Read {
            keyspace,
            token: key.token.0,
            key: key.key.to_vec(),
            digest_only,
        };
        self.rpc
            .call(addr, &m, timeout)
            .await
            .map_err(|e| failure_of(&e))
    }

    pub(crate) async fn read(
        self: &Arc<Self>,
        keyspace: &str,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<Cell>, NodeError> {
        self.check_coordinator()?;
        let view = self.current_view();
        self.route(&view, keyspace)?;
        self.counters.reads.inc(level);
        let token = hearsay_ring::token_of(key);
        let cell_key = CellKey::new(token, bytes::Bytes::copy_from_slice(key));
        let replicas =
            view.by_fitness(view.by_proximity(view.routes[keyspace].map.read_replicas(token)));
        let dcs = view.dc_info();
        let strategy = &view.routes[keyspace].def.strategy;
        let plan = match ReadPlan::new(level, &replicas, strategy, Some(&dcs), &view.alive) {
            Ok(p) => p,
            Err(e) => {
                if e.is_unavailable() {
                    self.counters.read_unavailable.fetch_add(1, Relaxed);
                }
                return Err(e.into());
            }
        };
        // One answer needed and it is ours (ONE, with this node a replica): no digests, no
        // repair, nothing to wait for. A local error falls through to the general path,
        // which asks a spare replica.
        if plan.contacted.len() == 1
            && plan.data_replica() == Some(self.id)
            && let Ok(cell) = self.get_local_now(keyspace, &cell_key)
        {
            return Ok(cell);
        }
        let timeout = Duration::from_millis(self.config.read_timeout_ms);
        let mut deadline = Instant::now() + timeout;
        let (tx, mut rx) = mpsc::channel::<(NodeId, bool, Result<ReadReply, FailureReason>)>(
            replicas.len() * 2 + 1,
        );
        let send = |node: NodeId, digest_only: bool, full_phase: bool| {
            let tx = tx.clone();
            let this = self.clone();
            let ks = keyspace.to_string();
            let k = cell_key.clone();
            let addr = view.addr_of(node);
            tokio::spawn(async move {
                let r = this.read_one(node, addr, ks, k, digest_only, timeout).await;
                let _ = tx.send((node, full_phase, r)).await;
            });
        };
        if let Some(d) = plan.data_replica() {
            send(d, false, false);
        }
        for n in plan.digest_replicas() {
            send(*n, true, false);
        }
        let mut resolver: ReadResolver<Cell> = ReadResolver::new(plan);
        let mut full_phase = false;
        let mut timed_out = false;
        loop {
            match resolver.status() {
                ReadStatus::Pending => {}
                ReadStatus::Match(cell) => return Ok(cell),
                ReadStatus::Mismatch => {
                    self.counters.digest_mismatches.fetch_add(1, Relaxed);
                    full_phase = true;
                    timed_out = false;
                    deadline = Instant::now() + timeout;
                    for n in resolver.begin_full_read() {
                        send(n, false, true);
                    }
                    continue;
                }
                ReadStatus::Resolved(res) => {
                    if let Some(newest) = &res.newest
                        && !res.stale.is_empty()
                        // Planted bug (test-only): no read repair.
                        && self.config.testing.plant != Some(super::PlantedBug::SkipReadRepair)
                        // The keyspace may trade monotonic reads for latency.
                        && view.routes[keyspace].def.options.read_repair
                    {
                        let repair = resolver.read_repair(&res);
                        self.read_repair(&view, keyspace, &cell_key, newest, repair)
                            .await?;
                    }
                    return Ok(res.newest);
                }
                ReadStatus::Failed(e) => {
                    match &e {
                        ConsistencyError::Timeout { .. } => &self.counters.read_timeouts,
                        _ => &self.counters.read_failures,
                    }
                    .fetch_add(1, Relaxed);
                    return Err(e.into());
                }
            }
            tokio::select! {
                r = rx.recv() => match r {
                    // Answers from the digest phase arriving in the full phase are stale.
                    Some((_, phase, _)) if phase != full_phase => {}
                    Some((node, _, Ok(ReadReply::Data(c)))) => {
                        resolver.on_data(node, c.map(|w| w.cell()));
                    }
                    Some((node, _, Ok(ReadReply::Digest(d)))) => {
                        resolver.on_digest(node, d);
                    }
                    Some((node, _, Err(reason))) => {
                        let fast = reason != FailureReason::Timeout;
                        if resolver.on_failure(node, reason)
                            && fast
                            && let Some(spare) = resolver.take_spare()
                        {
                            send(spare, false, full_phase);
                        }
                    }
                    None => resolver.on_timeout(),
                },
                _ = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    resolver.on_timeout();
                }
            }
        }
    }

    /// Blocking read repair: writes `newest` to every stale replica and waits for them, so
    /// that a QUORUM read never goes back in time. A stale replica whose repair fails fast
    /// (its storage refuses writes) is replaced by a spare live replica, so the newest cell
    /// still reaches as many replicas as the level needs. A repair that cannot finish fails
    /// the read, as in Cassandra (the client may retry; the next read repairs again); every
    /// replica that missed the repair gets a hint.
    async fn read_repair(
        self: &Arc<Self>,
        view: &RingView,
        keyspace: &str,
        key: &CellKey,
        newest: &Cell,
        mut repair: ReadRepair,
    ) -> Result<(), NodeError> {
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let batch = vec![(key.clone(), newest.clone())];
        let mut failures: Vec<(NodeId, FailureReason)> = Vec::new();
        let mut ok = 0usize;
        let mut send_to = repair.send_to();
        // Rounds: the stale replicas, then one spare per fast failure, until the level is met
        // or no spare is left.
        loop {
            let mut handles = Vec::new();
            for node in send_to.drain(..) {
                let this = self.clone();
                let b = batch.clone();
                let ks = keyspace.to_string();
                let addr = view.addr_of(node);
                handles.push(tokio::spawn(async move {
                    (
                        node,
                        this.send_mutation(node, addr, ks, &b, timeout, false).await,
                    )
                }));
            }
            for h in handles {
                match h.await {
                    Ok((node, Ok(_))) => {
                        ok += 1;
                        repair.on_ack(node);
                    }
                    Ok((node, Err(reason))) => {
                        let fast = reason != FailureReason::Timeout;
                        repair.on_failure(node, reason.clone());
                        failures.push((node, reason));
                        if fast && let Some(spare) = repair.take_spare() {
                            send_to.push(spare);
                        }
                    }
                    Err(_) => {}
                }
            }
            if send_to.is_empty() || !matches!(repair.status(), RepairStatus::Failed(_)) {
                break;
            }
        }
        self.counters.read_repairs.fetch_add(ok as u64, Relaxed);
        if !failures.is_empty() {
            self.counters
                .read_repair_failures
                .fetch_add(failures.len() as u64, Relaxed);
            // The replicas missed the repair; a hint gets it there eventually. (ANY over just
            // the failed replicas: a tracker that only lists them for hints.)
            let failed: Vec<NodeId> = failures.iter().map(|(n, _)| *n).collect();
            let mut tracker = WriteTracker::new(
                ConsistencyLevel::Any,
                &failed,
                &[],
                &hearsay_ring::ReplicationStrategy::simple(failed.len()),
                None,
                &view.alive,
            );
            for (n, r) in &failures {
                tracker.on_failure(*n, r.clone());
            }
            self.hint_failed(&mut tracker, keyspace, &Arc::new(batch))
                .await;
        }
        match repair.status() {
            RepairStatus::Satisfied => Ok(()),
            RepairStatus::Failed(e) => Err(e.into()),
            RepairStatus::Pending => {
                repair.on_timeout();
                match repair.status() {
                    RepairStatus::Failed(e) => Err(e.into()),
                    _ => Ok(()),
                }
            }
        }
    }
}
