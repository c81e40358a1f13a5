//! The replica side of the data path: the RPC handlers a node serves to coordinators
//! (`Mutate`, `MutateV2`, `HintFor`, `Read`, `ScanRange`, `SchemaPull`) and the local
//! engine operations they and the coordinator's own replica share.

use super::Inner;
use super::messages::{
    HintFor, HintForAck, MAX_CELLS_PER_MUTATION, MAX_SCAN_CELLS, Mutate, MutateAck, MutateAckV2,
    MutateV2, Read, ReadReply, ScanRange, ScanReply, SchemaPull, SchemaReply, WireCell,
};
use crate::rpc::{HandlerError, Registry};
use hearsay_types::{NodeId, Token};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// What a replica's apply reports about cells that lost to a newer stored version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Superseded {
    /// Cells not applied because a newer version is stored.
    pub cells: u32,
    /// The newest stored timestamp among those that beat a cell (0 when none did).
    pub newest: u64,
}

pub(super) fn registry(inner: &Arc<Inner>) -> Registry {
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
    r.register_fn::<super::messages::RepairTree, _, _>(move |_ctx, m| {
        let i = i.clone();
        async move { i.handle_repair_tree(m).await }
    })
    .unwrap_or_else(dup);
    let i = inner.clone();
    r.register_fn::<super::messages::RepairDone, _, _>(move |_ctx, m| {
        let i = i.clone();
        async move { i.handle_repair_done(m).await }
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

impl Inner {
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

    pub(super) async fn handle_mutate(
        self: &Arc<Self>,
        m: Mutate,
    ) -> Result<MutateAck, HandlerError> {
        let s = self
            .handle_mutation(m.keyspace, m.cells, m.report_superseded)
            .await?;
        Ok(MutateAck {
            superseded: s.cells,
        })
    }

    pub(super) async fn handle_mutate_v2(
        self: &Arc<Self>,
        m: MutateV2,
    ) -> Result<MutateAckV2, HandlerError> {
        let s = self
            .handle_mutation(m.keyspace, m.cells, m.report_superseded)
            .await?;
        Ok(MutateAckV2 {
            superseded: s.cells,
            newest_superseding: s.newest,
        })
    }

    /// Stores a hint a peer asks us to hold for it ([`HintFor`]).
    pub(super) async fn handle_hint_for(
        self: &Arc<Self>,
        m: HintFor,
    ) -> Result<HintForAck, HandlerError> {
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

    pub(super) async fn handle_mutation(
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
        if self.config.testing.plant == Some(super::PlantedBug::AckWithoutApply)
            && self
                .counters
                .replica_mutations
                .load(Relaxed)
                .is_multiple_of(5)
        {
            // Planted bug (test-only): acknowledged, not applied.
            self.counters.replica_mutations.fetch_add(1, Relaxed);
            return Ok(super::Superseded::default());
        }
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

    pub(super) async fn handle_read(self: &Arc<Self>, m: Read) -> Result<ReadReply, HandlerError> {
        let key = hearsay_storage::CellKey::new(Token(m.token), bytes::Bytes::from(m.key));
        let cell = self
            .get_local(m.keyspace, key.clone())
            .await
            .map_err(HandlerError::new)?;
        Ok(if m.digest_only {
            ReadReply::Digest(crate::quorum::cell_digest(cell.as_ref()))
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

    pub(super) async fn handle_scan(
        self: &Arc<Self>,
        m: ScanRange,
    ) -> Result<ScanReply, HandlerError> {
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
}
