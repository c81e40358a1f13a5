//! Pending ranges: where writes must also go while nodes join or leave.
//!
//! While a node joins, it streams in the ranges it will own; while a node leaves, its ranges
//! stream out to their next owners. During that window a write must reach both the current
//! owners (who serve reads) and the future ones (who would otherwise miss it after the
//! switch). So for every token we compute the natural replicas (current ring) and the pending
//! replicas (future ring minus current); the coordinator writes to both.

use crate::placement::Placement;
use crate::range::TokenRange;
use crate::ring::{Member, Ring, RingError, vnode_index};
use crate::strategy::ReplicationStrategy;
use hearsay_types::{NodeId, Token};

/// A membership change in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A node bootstrapping with these tokens (it is not in the current ring yet). If a member
    /// with that id is already in the ring, this replaces it (a move).
    Join(Member),
    /// A member decommissioning; it stays a natural replica until it is gone.
    Leave(NodeId),
}

/// For each token, the nodes that will be replicas after a change but are not now.
#[derive(Clone, Debug, Default)]
pub struct PendingRanges {
    /// Sorted union of the current and future ring tokens: every elementary range between
    /// two consecutive bounds has one replica list in each ring.
    bounds: Vec<Token>,
    offsets: Vec<u32>,
    pending: Vec<NodeId>,
}

impl PendingRanges {
    /// No change in progress.
    pub fn none() -> PendingRanges {
        PendingRanges::default()
    }

    /// Pending replicas when moving from `current` to `future` (both for the same strategy):
    /// per token, the future replicas not in the current list, in future preference order.
    pub fn between(current: &Placement, future: &Placement) -> PendingRanges {
        let mut bounds: Vec<Token> = current
            .tokens()
            .iter()
            .chain(future.tokens())
            .copied()
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut offsets = Vec::with_capacity(bounds.len() + 1);
        let mut pending = Vec::new();
        offsets.push(0u32);
        let mut any = false;
        for &b in &bounds {
            let now = current.replicas(b);
            for &n in future.replicas(b) {
                if !now.contains(&n) {
                    pending.push(n);
                    any = true;
                }
            }
            offsets.push(pending.len() as u32);
        }
        if !any {
            return PendingRanges::none();
        }
        PendingRanges {
            bounds,
            offsets,
            pending,
        }
    }

    /// True when no token has a pending replica.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending replicas for `t` (empty when nothing moves there).
    #[inline]
    pub fn pending(&self, t: Token) -> &[NodeId] {
        match vnode_index(&self.bounds, t) {
            Some(i) => self.at(i),
            None => &[],
        }
    }

    fn at(&self, i: usize) -> &[NodeId] {
        &self.pending[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Every range with pending replicas, adjacent ranges with the same list merged, in token
    /// order. The ranges a node must stream in are those listing it.
    pub fn ranges(&self) -> Vec<(TokenRange, Vec<NodeId>)> {
        let n = self.bounds.len();
        let mut out: Vec<(TokenRange, Vec<NodeId>)> = Vec::new();
        for i in 0..n {
            let list = self.at(i);
            if list.is_empty() {
                continue;
            }
            let prev = if i == 0 {
                self.bounds[n - 1]
            } else {
                self.bounds[i - 1]
            };
            match out.last_mut() {
                Some((r, l)) if r.end == prev && l.as_slice() == list => r.end = self.bounds[i],
                _ => out.push((TokenRange::new(prev, self.bounds[i]), list.to_vec())),
            }
        }
        // Join a run that crosses the end of the array onto the first one.
        let k = out.len();
        if k > 1
            && out[k - 1].0.end == out[0].0.start
            && out[k - 1].1 == out[0].1
            && let Some((r, _)) = out.pop()
        {
            out[0].0.start = r.start;
        }
        out
    }

    /// The ranges `node` is pending for (must receive by streaming), in token order.
    pub fn ranges_for(&self, node: NodeId) -> Vec<TokenRange> {
        self.ranges()
            .into_iter()
            .filter(|(_, l)| l.contains(&node))
            .map(|(r, _)| r)
            .collect()
    }
}

/// Where a write for one token goes: natural replicas (count towards the consistency level)
/// and pending ones (also written, so the change loses nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteEndpoints<'a> {
    /// The current preference list, primary first.
    pub natural: &'a [NodeId],
    /// Future replicas not in `natural`; disjoint from it.
    pub pending: &'a [NodeId],
}

impl WriteEndpoints<'_> {
    /// All targets: natural then pending.
    pub fn all(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.natural.iter().chain(self.pending).copied()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.natural.len() + self.pending.len()
    }

    /// True when there is no target (empty ring).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The routing table of one keyspace: natural placement plus pending replicas for the changes
/// in progress. Rebuilt whenever the ring, the transitions or the strategy change.
#[derive(Clone, Debug)]
pub struct ReplicaMap {
    natural: Placement,
    future: Option<Placement>,
    pending: PendingRanges,
}

impl ReplicaMap {
    /// Routing for `ring` (the members in normal state) under `strategy`, while `transitions`
    /// are in progress. Concurrent transitions are applied together: the future ring is the
    /// ring after all of them, and pending replicas are its replicas minus the current ones.
    pub fn new(
        ring: &Ring,
        strategy: &ReplicationStrategy,
        transitions: &[Transition],
    ) -> Result<ReplicaMap, RingError> {
        let natural = Placement::new(ring, strategy);
        if transitions.is_empty() {
            return Ok(ReplicaMap {
                natural,
                future: None,
                pending: PendingRanges::none(),
            });
        }
        let mut future_ring = ring.clone();
        for t in transitions {
            future_ring = match t {
                Transition::Join(m) => future_ring.with_member(m.clone())?,
                Transition::Leave(id) => future_ring.without_member(*id)?,
            };
        }
        let future = Placement::new(&future_ring, strategy);
        let pending = PendingRanges::between(&natural, &future);
        Ok(ReplicaMap {
            natural,
            future: Some(future),
            pending,
        })
    }

    /// Natural placement (reads use only this).
    pub fn natural(&self) -> &Placement {
        &self.natural
    }

    /// Placement once every transition completes (same as natural when there is none).
    pub fn future(&self) -> &Placement {
        self.future.as_ref().unwrap_or(&self.natural)
    }

    /// Pending replicas.
    pub fn pending(&self) -> &PendingRanges {
        &self.pending
    }

    /// Replicas to read from for `t`.
    #[inline]
    pub fn read_replicas(&self, t: Token) -> &[NodeId] {
        self.natural.replicas(t)
    }

    /// Replicas to write to for `t`: natural and pending, disjoint.
    #[inline]
    pub fn write_endpoints(&self, t: Token) -> WriteEndpoints<'_> {
        WriteEndpoints {
            natural: self.natural.replicas(t),
            pending: self.pending.pending(t),
        }
    }
}
