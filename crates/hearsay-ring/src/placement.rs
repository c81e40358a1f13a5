//! Natural replica placement of one keyspace: precomputed per vnode range.

use crate::range::{RING_SIZE_F64, TokenRange};
use crate::ring::{Ring, vnode_index};
use crate::strategy::ReplicationStrategy;
use crate::token_of;
use hearsay_types::{NodeId, Token};
use std::collections::BTreeMap;

/// The preference list of every vnode range of a ring under one strategy.
///
/// Built once per (ring, strategy) change, then `replicas(token)` is a binary search over the
/// sorted vnode tokens plus a slice: no allocation, no walk. Every token in one vnode range
/// `(prev, t]` has the same replicas, because the clockwise walk starts at the same vnode.
#[derive(Clone, Debug)]
pub struct Placement {
    strategy: ReplicationStrategy,
    tokens: Vec<Token>,
    /// `replicas[offsets[i]..offsets[i + 1]]` is vnode `i`'s preference list.
    offsets: Vec<u32>,
    replicas: Vec<NodeId>,
}

impl Placement {
    /// Computes the preference list of every vnode range.
    pub fn new(ring: &Ring, strategy: &ReplicationStrategy) -> Placement {
        let n = ring.tokens().len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut replicas = Vec::with_capacity(n * strategy.total_rf().min(ring.len()));
        offsets.push(0u32);
        let mut walker = Walker::new(ring, strategy);
        for i in 0..n {
            walker.walk(i, &mut replicas);
            offsets.push(replicas.len() as u32);
        }
        Placement {
            strategy: strategy.clone(),
            tokens: ring.tokens().to_vec(),
            offsets,
            replicas,
        }
    }

    /// The strategy this placement was computed for.
    pub fn strategy(&self) -> &ReplicationStrategy {
        &self.strategy
    }

    /// The sorted vnode tokens (range ends).
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The natural preference list for `t`: primary first, then clockwise, distinct nodes.
    /// Empty for an empty ring. Shorter than the replication factor when there are not enough
    /// nodes (per DC, for NetworkTopology).
    #[inline]
    pub fn replicas(&self, t: Token) -> &[NodeId] {
        match vnode_index(&self.tokens, t) {
            Some(i) => self.vnode_replicas(i),
            None => &[],
        }
    }

    /// The preference list for a key.
    pub fn replicas_for_key(&self, key: &[u8]) -> &[NodeId] {
        self.replicas(token_of(key))
    }

    /// Preference list of the `i`-th vnode range. Panics if `i >= tokens().len()`.
    #[inline]
    pub fn vnode_replicas(&self, i: usize) -> &[NodeId] {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        &self.replicas[a..b]
    }

    /// The range `(previous token, tokens[i]]`. Panics if `i >= tokens().len()`.
    pub fn vnode_range(&self, i: usize) -> TokenRange {
        let prev = if i == 0 {
            self.tokens[self.tokens.len() - 1]
        } else {
            self.tokens[i - 1]
        };
        TokenRange::new(prev, self.tokens[i])
    }

    /// Every vnode range with its preference list, in token order.
    pub fn ranges(&self) -> impl Iterator<Item = (TokenRange, &[NodeId])> {
        (0..self.tokens.len()).map(|i| (self.vnode_range(i), self.vnode_replicas(i)))
    }

    /// The ranges `node` holds a replica of (primary or not), adjacent ranges merged, in ring
    /// order (a range that wraps is reported as one range, starting near the end).
    pub fn replicated_ranges(&self, node: NodeId) -> Vec<TokenRange> {
        let held: Vec<bool> = (0..self.tokens.len())
            .map(|i| self.vnode_replicas(i).contains(&node))
            .collect();
        merge_runs(&self.tokens, &held)
    }

    /// Fraction of the token space whose data `node` stores (as any replica), in [0, 1]:
    /// nodetool's "Owns (effective)". Over all nodes it sums to the number of replicas per key.
    pub fn effective_ownership(&self, node: NodeId) -> f64 {
        self.ranges()
            .filter(|(_, reps)| reps.contains(&node))
            .map(|(r, _)| r.width() as f64)
            .sum::<f64>()
            / RING_SIZE_F64
    }

    /// Effective ownership of every node that holds any replica, in id order.
    pub fn effective_ownerships(&self) -> BTreeMap<NodeId, f64> {
        let mut out = BTreeMap::new();
        for (r, reps) in self.ranges() {
            for &n in reps {
                *out.entry(n).or_insert(0.0) += r.fraction();
            }
        }
        out
    }
}

/// Merges consecutive vnode ranges whose flag is set into maximal ranges, in ring order.
pub(crate) fn merge_runs(tokens: &[Token], held: &[bool]) -> Vec<TokenRange> {
    let n = tokens.len();
    if n == 0 {
        return Vec::new();
    }
    if held.iter().all(|&h| h) {
        return vec![TokenRange::new(tokens[n - 1], tokens[n - 1])];
    }
    let prev = |i: usize| if i == 0 { tokens[n - 1] } else { tokens[i - 1] };
    // Start scanning just after a range that is not held so no run is cut at the array end.
    let first_gap = held.iter().position(|&h| !h).unwrap_or(0);
    let mut out = Vec::new();
    let mut run_start: Option<Token> = None;
    for k in 1..=n {
        let i = (first_gap + k) % n;
        match (held[i], run_start) {
            (true, None) => run_start = Some(prev(i)),
            (false, Some(s)) => {
                out.push(TokenRange::new(s, prev(i)));
                run_start = None;
            }
            _ => {}
        }
    }
    // The scan ends on `first_gap`, which is not held, so every run has been closed.
    debug_assert!(run_start.is_none());
    out.sort_by_key(|r| r.end);
    out
}

/// Reusable state for computing preference lists by walking the ring.
struct Walker<'a> {
    ring: &'a Ring,
    kind: Kind,
    /// Dense node indexes chosen so far for the current vnode, in walk order.
    chosen: Vec<u32>,
    rack_seen: Vec<bool>,
    racks_touched: Vec<u32>,
    rf_left: Vec<usize>,
    repeats_left: Vec<usize>,
}

enum Kind {
    Simple {
        rf: usize,
    },
    /// Per dense DC index: wanted replicas (clamped to nodes on the ring in that DC) and
    /// allowed rack repeats (wanted − racks in that DC, as Cassandra's
    /// `acceptableRackRepeats`).
    Nts {
        want: Vec<usize>,
        repeats: Vec<usize>,
    },
}

impl<'a> Walker<'a> {
    fn new(ring: &'a Ring, strategy: &ReplicationStrategy) -> Walker<'a> {
        let ids = ring.dense_ids();
        // Only nodes that own a ring token can be replicas; count those per DC and rack.
        let mut on_ring = vec![false; ids.len()];
        for &o in ring.dense_owners() {
            on_ring[o as usize] = true;
        }
        let nodes_on_ring = on_ring.iter().filter(|&&b| b).count();
        let kind = match strategy {
            ReplicationStrategy::Simple { rf } => Kind::Simple {
                rf: (*rf).min(nodes_on_ring),
            },
            ReplicationStrategy::NetworkTopology { dc_rf } => {
                let ndc = ring.dcs().len();
                let mut nodes = vec![0usize; ndc];
                let mut racks: Vec<Vec<u32>> = vec![Vec::new(); ndc];
                for (i, &on) in on_ring.iter().enumerate() {
                    if on {
                        let d = ring.dense_dc()[i] as usize;
                        nodes[d] += 1;
                        racks[d].push(ring.dense_rack()[i]);
                    }
                }
                let mut want = vec![0usize; ndc];
                let mut repeats = vec![0usize; ndc];
                for (d, name) in ring.dcs().iter().enumerate() {
                    racks[d].sort_unstable();
                    racks[d].dedup();
                    let rf = dc_rf.get(name).copied().unwrap_or(0).min(nodes[d]);
                    want[d] = rf;
                    repeats[d] = rf.saturating_sub(racks[d].len());
                }
                Kind::Nts { want, repeats }
            }
        };
        Walker {
            ring,
            kind,
            chosen: Vec::new(),
            rack_seen: vec![false; ring.rack_count()],
            racks_touched: Vec::new(),
            rf_left: Vec::new(),
            repeats_left: Vec::new(),
        }
    }

    /// Appends the preference list of vnode `start` to `out`.
    fn walk(&mut self, start: usize, out: &mut Vec<NodeId>) {
        let owners = self.ring.dense_owners();
        let ids = self.ring.dense_ids();
        let n = owners.len();
        self.chosen.clear();
        match &self.kind {
            Kind::Simple { rf } => {
                let rf = *rf;
                // At most one lap: every node on the ring is met within n steps.
                for k in 0..n {
                    if self.chosen.len() == rf {
                        break;
                    }
                    let o = owners[(start + k) % n];
                    if !self.chosen.contains(&o) {
                        self.chosen.push(o);
                    }
                }
            }
            Kind::Nts { want, repeats } => {
                self.rf_left.clone_from(want);
                self.repeats_left.clone_from(repeats);
                let mut total_left: usize = want.iter().sum();
                let dc_of = self.ring.dense_dc();
                let rack_of = self.ring.dense_rack();
                for k in 0..n {
                    if total_left == 0 {
                        break;
                    }
                    let o = owners[(start + k) % n];
                    let d = dc_of[o as usize] as usize;
                    if self.rf_left[d] == 0 {
                        continue;
                    }
                    let rack = rack_of[o as usize] as usize;
                    if !self.rack_seen[rack] {
                        // A rack not used yet in this DC: always take it (its node cannot
                        // have been chosen, since that would have marked the rack).
                        self.rack_seen[rack] = true;
                        self.racks_touched.push(rack as u32);
                    } else if self.repeats_left[d] == 0 || self.chosen.contains(&o) {
                        // Slots left are reserved for racks not seen yet.
                        continue;
                    } else {
                        self.repeats_left[d] -= 1;
                    }
                    self.chosen.push(o);
                    self.rf_left[d] -= 1;
                    total_left -= 1;
                }
                for &r in &self.racks_touched {
                    self.rack_seen[r as usize] = false;
                }
                self.racks_touched.clear();
            }
        }
        // A duplicate here would mean a write counted twice towards W: a broken invariant, so
        // the check stays on in release (the list is at most a few dozen entries).
        assert!(
            self.chosen
                .iter()
                .enumerate()
                .all(|(k, o)| !self.chosen[..k].contains(o)),
            "preference list with a duplicate node"
        );
        out.extend(self.chosen.iter().map(|&o| ids[o as usize]));
    }
}
