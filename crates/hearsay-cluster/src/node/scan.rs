//! A ONE-level scan across the ring: vnode ranges walked in token order, each asked of one
//! live replica (the local one first), pages that never end inside a token (see
//! `docs/cluster.md`, "Scan").

use super::data_path::failure_of;
use super::messages::{ScanRange, WireCell};
use super::{Inner, NodeError};
use crate::quorum::{ConsistencyError, FailureReason, OpKind};
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{ConsistencyLevel, Token};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One page of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Stored cells in `(token, key)` order, tombstones and expired values included.
    pub cells: Vec<(CellKey, Cell)>,
    /// Where the next page starts (inclusive), or `None` at the end of the ring.
    pub next: Option<Token>,
}

impl Inner {
    /// One page of a ONE-level scan: walks vnode ranges in token order from `from`, asking
    /// one live replica of each (the local node when it is one), until about `count` cells.
    pub(crate) async fn scan(
        self: &Arc<Self>,
        keyspace: &str,
        from: Token,
        count: usize,
    ) -> Result<ScanResult, NodeError> {
        self.check_coordinator()?;
        let view = self.current_view();
        self.route(&view, keyspace)?;
        self.counters.scans.fetch_add(1, Relaxed);
        let placement = view.routes[keyspace].map.natural();
        let tokens = placement.tokens();
        if tokens.is_empty() {
            return Err(ConsistencyError::Unavailable {
                level: ConsistencyLevel::One,
                required: 1,
                alive: 0,
                dc: None,
            }
            .into());
        }
        let timeout = Duration::from_millis(self.config.read_timeout_ms);
        let count = count.max(1);
        let mut out: Vec<(CellKey, Cell)> = Vec::new();
        let mut cursor = from;
        loop {
            // The vnode owning `cursor`: the first ring token >= cursor, wrapping to the first.
            let i = tokens.partition_point(|t| *t < cursor);
            let (idx, end) = if i < tokens.len() {
                (i, tokens[i])
            } else {
                (0, Token::MAX)
            };
            let replicas = view.by_proximity(placement.vnode_replicas(idx));
            let want = count.saturating_sub(out.len()).max(1);
            let mut page = None;
            let mut last_err = None;
            for node in replicas.iter().filter(|n| view.alive.contains(n)) {
                let r = if *node == self.id {
                    self.scan_local(keyspace.to_string(), cursor, end, want)
                        .await
                        .map_err(FailureReason::Error)
                } else if let Some(addr) = view.addr_of(*node) {
                    let m = ScanRange {
                        keyspace: keyspace.to_string(),
                        from: cursor.0,
                        to: end.0,
                        limit: want.min(u32::MAX as usize) as u32,
                    };
                    self.rpc
                        .call(addr, &m, timeout)
                        .await
                        .map(|reply| {
                            (
                                reply.cells.into_iter().map(WireCell::into_cell).collect(),
                                reply.next.map(Token),
                            )
                        })
                        .map_err(|e| failure_of(&e))
                } else {
                    Err(FailureReason::Error("no known address".into()))
                };
                match r {
                    Ok(p) => {
                        page = Some(p);
                        break;
                    }
                    Err(e) => last_err = Some((*node, e)),
                }
            }
            let Some((cells, next)) = page else {
                let failures = crate::quorum::Failures(last_err.into_iter().collect());
                return Err(ConsistencyError::Failed {
                    kind: OpKind::Read,
                    level: ConsistencyLevel::One,
                    received: 0,
                    required: 1,
                    dc: None,
                    failures,
                }
                .into());
            };
            out.extend(cells);
            if let Some(n) = next {
                return Ok(ScanResult {
                    cells: out,
                    next: Some(n),
                });
            }
            if end == Token::MAX {
                return Ok(ScanResult {
                    cells: out,
                    next: None,
                });
            }
            cursor = Token(end.0 + 1);
            if out.len() >= count {
                return Ok(ScanResult {
                    cells: out,
                    next: Some(cursor),
                });
            }
        }
    }
}
