//! Scuttlebutt reconciliation over [`ClusterState`]: digests that summarise it, the
//! candidates a peer lacks (tombstones first, then most versions behind), and deltas cut to
//! a byte budget so that the receiver's `max_version` promise stays true
//! (docs/gossip.md, "Exchange").

use std::collections::BTreeSet;
use std::ops::Bound;

use hearsay_types::NodeId;
use rand::Rng;

use super::{ClusterState, Member, Versioned};
use crate::types::Effects;
use crate::wire::{
    Digest, DigestEntry, LEN_PREFIX_SLACK_BYTES, MAX_DELTAS, MAX_DIGEST_ENTRIES, NodeDelta,
    StateKey, WireEntry, WireId, encoded_len,
};

/// Nodes of the sweeping range a push offers after this node and its hot nodes.
const PUSH_RANGE_NODES: usize = 64;
/// A push stops once fewer bytes than this are left: no delta is that small.
const PUSH_MIN_LEFT_BYTES: usize = 64;
/// Upper estimate of one digest entry's size, to try a complete digest first.
const DIGEST_ENTRY_ESTIMATE_BYTES: usize = 48;

/// What a requester lacks of one node.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    node: NodeId,
    /// Higher goes first: tombstones, then by versions behind.
    priority: u64,
    /// `None` sends the tombstone.
    from_version: Option<u64>,
}

impl ClusterState {
    /// Digest: self, then recently changed nodes (up to half), then a contiguous id range
    /// from a random start, marked complete so the peer can send nodes we do not know. At
    /// most `cap` bytes of entries.
    pub(crate) fn build_digest<R: Rng + ?Sized>(&mut self, rng: &mut R, cap: usize) -> Digest {
        let full = (WireId([0; 16]), WireId([0xff; 16]));
        let mut entries: Vec<DigestEntry> = Vec::new();
        let mut size = 0usize;
        let mut included: BTreeSet<NodeId> = BTreeSet::new();
        let push = |id: NodeId, m: &Member, entries: &mut Vec<DigestEntry>, size: &mut usize| {
            let e = m.digest_entry(id);
            let s = encoded_len(&e);
            if *size + s > cap || entries.len() >= MAX_DIGEST_ENTRIES {
                return false;
            }
            *size += s;
            entries.push(e);
            true
        };
        // Everything fits: a plain complete digest.
        if self.members.len() * DIGEST_ENTRY_ESTIMATE_BYTES <= cap {
            for (id, m) in &self.members {
                if !push(*id, m, &mut entries, &mut size) {
                    break;
                }
            }
            if entries.len() == self.members.len() {
                return Digest {
                    complete_range: Some(full),
                    entries,
                };
            }
            entries.clear();
            size = 0;
        }
        if let Some(m) = self.members.get(&self.me) {
            push(self.me, m, &mut entries, &mut size);
            included.insert(self.me);
        }
        for id in self.hot(self.hot_rounds) {
            if size * 2 >= cap {
                break;
            }
            if included.contains(&id) {
                continue;
            }
            if let Some(m) = self.members.get(&id)
                && push(id, m, &mut entries, &mut size)
            {
                included.insert(id);
            }
        }
        // The range: walk from the cursor (a random start the first time) until the budget
        // is spent; the next digest continues after it.
        let start = match self.digest_cursor {
            Some(c) => c,
            None if self.order.is_empty() => self.me,
            None => self.order[rng.random_range(0..self.order.len())],
        };
        let mut last = None;
        let walk = self
            .members
            .range(start..)
            .chain(self.members.range(..start));
        for (id, m) in walk {
            if included.contains(id) {
                last = Some(*id);
                continue;
            }
            if !push(*id, m, &mut entries, &mut size) {
                break;
            }
            last = Some(*id);
        }
        self.digest_cursor = last.and_then(|l| {
            self.members
                .range((Bound::Excluded(l), Bound::Unbounded))
                .chain(self.members.range(..l))
                .next()
                .map(|(k, _)| *k)
        });
        Digest {
            complete_range: last.map(|l| (start.into(), l.into())),
            entries,
        }
    }

    /// The answer to a digest within `budget` bytes: the deltas the initiator lacks and, in
    /// push-pull, our entries where it is newer (requests, at most half the budget).
    pub(crate) fn answer_digest<R: Rng + ?Sized>(
        &self,
        digest: &Digest,
        push_pull: bool,
        budget: usize,
        rng: &mut R,
        fx: &mut Effects,
    ) -> (Vec<NodeDelta>, Vec<DigestEntry>) {
        let mut seen: BTreeSet<NodeId> = BTreeSet::new();
        let mut cands: Vec<Candidate> = Vec::new();
        let mut request: Vec<DigestEntry> = Vec::new();
        for e in &digest.entries {
            let id: NodeId = e.node.into();
            if !seen.insert(id) {
                continue;
            }
            if let Some(c) = self.candidate(id, Some(e)) {
                cands.push(c);
            }
            if push_pull && let Some(mine) = self.lacking(e) {
                request.push(mine);
            }
        }
        if let Some((lo, hi)) = digest.complete_range {
            let (lo, hi): (NodeId, NodeId) = (lo.into(), hi.into());
            // The range wraps around the id space when lo > hi.
            let (head, tail) = if lo <= hi {
                (self.members.range(lo..=hi), None)
            } else {
                (self.members.range(lo..), Some(self.members.range(..=hi)))
            };
            for (id, _) in head.chain(tail.into_iter().flatten()) {
                if !seen.contains(id)
                    && let Some(c) = self.candidate(*id, None)
                {
                    cands.push(c);
                }
            }
        }
        // Hot nodes outside the digest: push them speculatively, after the precise ones.
        let mut hot_seen: BTreeSet<NodeId> = BTreeSet::new();
        for id in self.hot(self.hot_rounds) {
            let covered = match digest.complete_range {
                Some((lo, hi)) => in_range(id, lo.into(), hi.into()),
                None => false,
            };
            if seen.contains(&id) || covered || !hot_seen.insert(id) {
                continue;
            }
            if let Some(mut c) = self.candidate(id, None) {
                c.priority = 0;
                cands.push(c);
            }
        }
        // Requests are small and let the initiator finish the exchange: cap them at half.
        let mut req_size = 0;
        let mut kept = Vec::new();
        for r in request {
            let s = encoded_len(&r);
            if req_size + s > budget / 2 {
                break;
            }
            req_size += s;
            kept.push(r);
        }
        let deltas = self.fill_deltas(cands, budget - req_size, rng, fx);
        (deltas, kept)
    }

    /// The deltas a peer's requests (its entries where we are newer) ask for, within
    /// `budget` bytes.
    pub(crate) fn answer_requests<R: Rng + ?Sized>(
        &self,
        request: &[DigestEntry],
        budget: usize,
        rng: &mut R,
        fx: &mut Effects,
    ) -> Vec<NodeDelta> {
        let cands: Vec<Candidate> = request
            .iter()
            .filter_map(|e| self.candidate(e.node.into(), Some(e)))
            .collect();
        self.fill_deltas(cands, budget, rng, fx)
    }

    /// What a peer whose view of `id` is `theirs` (None: unknown to it) lacks.
    fn candidate(&self, id: NodeId, theirs: Option<&DigestEntry>) -> Option<Candidate> {
        let mine = self.members.get(&id)?;
        let tomb = Candidate {
            node: id,
            priority: u64::MAX,
            from_version: None,
        };
        let full = Candidate {
            node: id,
            priority: mine.max_version.saturating_add(1),
            from_version: Some(0),
        };
        let known = theirs.filter(|t| t.generation != 0);
        if mine.removed() {
            return match known {
                None => Some(tomb),
                Some(t) if t.removed && t.generation >= mine.generation => None,
                Some(t) if t.generation <= mine.generation => Some(tomb),
                Some(_) => None,
            };
        }
        match known {
            None => Some(full),
            Some(t) if t.removed => (t.generation < mine.generation).then_some(full),
            Some(t) if t.generation < mine.generation => Some(full),
            Some(t) if t.generation > mine.generation => None,
            Some(t) if mine.max_version > t.max_version => Some(Candidate {
                node: id,
                priority: mine.max_version - t.max_version,
                from_version: Some(t.max_version),
            }),
            Some(_) => None,
        }
    }

    /// If the peer's entry is newer than ours, our own entry to request the difference.
    fn lacking(&self, t: &DigestEntry) -> Option<DigestEntry> {
        let id: NodeId = t.node.into();
        if id == self.me {
            return None;
        }
        let unknown = DigestEntry {
            node: t.node,
            generation: 0,
            heartbeat: 0,
            max_version: 0,
            removed: false,
        };
        let Some(mine) = self.members.get(&id) else {
            return Some(unknown);
        };
        let newer = if mine.removed() {
            t.generation > mine.generation
        } else if t.removed {
            t.generation >= mine.generation
        } else {
            t.generation > mine.generation
                || (t.generation == mine.generation && t.max_version > mine.max_version)
        };
        newer.then(|| mine.digest_entry(id))
    }

    /// Most out-of-date first; equal priorities in id order from a random start, so every
    /// candidate is served within ceil(candidates / fit) exchanges with the same peer.
    fn fill_deltas<R: Rng + ?Sized>(
        &self,
        mut cands: Vec<Candidate>,
        budget: usize,
        rng: &mut R,
        fx: &mut Effects,
    ) -> Vec<NodeDelta> {
        let start: u128 = rng.random();
        cands.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.node.0.wrapping_sub(start)));
        let mut out = Vec::new();
        let mut left = budget;
        let mut deferred = 0;
        for c in &cands {
            if out.len() >= MAX_DELTAS {
                deferred += 1;
                continue;
            }
            let d = match c.from_version {
                None => self.tombstone_delta(c.node),
                Some(from) => self.delta_since(c.node, from, left),
            };
            match d {
                Some(d) => {
                    let s = encoded_len(&d);
                    if s > left {
                        deferred += 1;
                        continue;
                    }
                    if let Some(m) = self.members.get(&c.node)
                        && d.to_version < m.max_version
                        && !d.removed
                    {
                        fx.metrics.deltas_truncated += 1;
                    }
                    left -= s;
                    out.push(d);
                }
                None => deferred += 1,
            }
        }
        fx.metrics.deltas_deferred += deferred;
        out
    }

    fn tombstone_delta(&self, id: NodeId) -> Option<NodeDelta> {
        let m = self.members.get(&id)?;
        Some(NodeDelta {
            node: id.into(),
            generation: m.generation,
            heartbeat: m.heartbeat,
            removed: true,
            from_version: 0,
            to_version: 0,
            entries: Vec::new(),
        })
    }

    /// The entries of `id` newer than `from`, in version order, cut to `budget` bytes.
    pub(crate) fn delta_since(&self, id: NodeId, from: u64, budget: usize) -> Option<NodeDelta> {
        let m = self.members.get(&id)?;
        if m.removed() {
            return self.tombstone_delta(id);
        }
        let mut es: Vec<(&StateKey, &Versioned)> =
            m.states.iter().filter(|(_, v)| v.version > from).collect();
        es.sort_by_key(|(_, v)| v.version);
        let mut d = NodeDelta {
            node: id.into(),
            generation: m.generation,
            heartbeat: m.heartbeat,
            removed: false,
            from_version: from.min(m.max_version),
            to_version: m.max_version,
            entries: Vec::new(),
        };
        let mut size = encoded_len(&d) + LEN_PREFIX_SLACK_BYTES;
        if size > budget {
            return None;
        }
        let total = es.len();
        for (k, v) in es {
            let e = WireEntry {
                key: k.clone(),
                version: v.version,
                value: v.value.clone(),
            };
            let s = encoded_len(&e);
            if size + s > budget {
                break;
            }
            size += s;
            d.entries.push(e);
        }
        if d.entries.len() < total {
            let last = d.entries.last()?.version;
            d.to_version = last;
        }
        Some(d)
    }

    /// A heartbeat-only delta of `id`: proof of life that clears stale suspicions.
    pub(crate) fn proof_of_life(&self, id: NodeId) -> Option<NodeDelta> {
        let m = self.members.get(&id)?;
        Some(NodeDelta {
            node: id.into(),
            generation: m.generation,
            heartbeat: m.heartbeat,
            removed: false,
            from_version: m.max_version,
            to_version: m.max_version,
            entries: Vec::new(),
        })
    }

    /// How long a change stays hot in push mode: `max(hot_rounds, ceil(3 ln(N + 1)))`
    /// rounds (14 at N = 100, 21 at 1 000, 28 at 10 000). A push never learns what the peer
    /// lacks, so a node that every pusher missed waits for the range sweep, which offers a
    /// given node to it about once per N / 8 exchanges (~60 rounds at N = 1 000). Each node
    /// pushes a change to one random peer per hot round, so a node is missed by all N × k
    /// pushes with probability ≈ e^(−k(1 − loss)); k = 3 ln N makes the expected number of
    /// missed nodes ≈ N^(1 − 3(1 − loss)) ≪ 1. With the push-pull `hot_rounds` of 10, one
    /// anti-entropy-only trial in ten at N = 1 000 and 10% loss took 95 rounds instead of 16.
    fn push_hot_rounds(&self) -> u64 {
        let n = self.members.len() as f64;
        self.hot_rounds.max((3.0 * (n + 1.0).ln()).ceil() as u64)
    }

    /// Push mode: self, hot nodes, then a range from a random start; full states, at most
    /// `budget` bytes.
    pub(crate) fn push_deltas<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        budget: usize,
    ) -> Vec<NodeDelta> {
        let mut left = budget;
        let mut out = Vec::new();
        let mut included = BTreeSet::new();
        let mut ids: Vec<NodeId> = vec![self.me];
        ids.extend(self.hot(self.push_hot_rounds()));
        if !self.order.is_empty() {
            let start = self.order[rng.random_range(0..self.order.len())];
            ids.extend(
                self.members
                    .range(start..)
                    .chain(self.members.range(..start))
                    .map(|(k, _)| *k)
                    .take(PUSH_RANGE_NODES),
            );
        }
        for id in ids {
            if !included.insert(id) {
                continue;
            }
            if let Some(d) = self.delta_since(id, 0, left) {
                let s = encoded_len(&d);
                if s <= left {
                    left -= s;
                    out.push(d);
                }
            }
            if left < PUSH_MIN_LEFT_BYTES {
                break;
            }
        }
        out
    }
}

/// True if `id` lies in the ring range `lo..=hi` (which wraps when `lo > hi`).
fn in_range(id: NodeId, lo: NodeId, hi: NodeId) -> bool {
    if lo <= hi {
        lo <= id && id <= hi
    } else {
        id >= lo || id <= hi
    }
}
