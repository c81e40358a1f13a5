//! The rumor queue: new facts (this node's state changes, DOWN verdicts, proofs of life,
//! tombstones) being spread by rumor mongering, each for a number of rounds that grows with
//! `log10` of the cluster size, then retired. Self-contained: it knows rumors, their keys
//! and sizes, and nothing of members or liveness; the caller tells it how large the cluster
//! is and who sends (the header's varints decide how many bytes a packet leaves).
//!
//! Invariants: at most [`MAX_ACTIVE_RUMORS`] rumors, each small enough to ride one `Ping`;
//! at most one rumor per key other than [`RumorKey::Other`]; a rumor still queued has at
//! least one round to go.

use std::collections::VecDeque;

use hearsay_types::NodeId;

use crate::wire::{Body, MAX_RUMORS, Rumor, Sender, budget_left, encoded_len};

/// Rumors spread at once; beyond this the oldest is evicted (anti-entropy still carries it).
pub const MAX_ACTIVE_RUMORS: usize = 512;

/// What a rumor is about. A new rumor replaces a queued one with the same key (one
/// self-state delta covering every change still spreading; one proof of life or verdict
/// per node); [`RumorKey::Other`] rumors never replace each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RumorKey {
    /// This node's own state changes.
    SelfState,
    /// A heartbeat-only delta of a node: proof of life.
    Alive(NodeId),
    /// A DOWN verdict about a node.
    Down(NodeId),
    /// Anything else (tombstones, other nodes' state changes).
    Other,
}

impl RumorKey {
    /// The key under which a rumor learnt from a peer is passed on; `None` for suspicion
    /// reports, which go to the suspect's monitors only and stop there.
    pub(crate) fn of_received(r: &Rumor) -> Option<RumorKey> {
        Some(match r {
            Rumor::Suspicion { .. } => return None,
            Rumor::Delta(d) if d.entries.is_empty() && !d.removed => RumorKey::Alive(d.node.into()),
            Rumor::Delta(_) => RumorKey::Other,
            Rumor::Down { target, .. } => RumorKey::Down((*target).into()),
        })
    }
}

/// Rounds a rumor is sent for: `max(2, ceil(retransmit_mult × log10(N + 1)))` (with
/// `retransmit_mult` 1: 3 rounds at N = 100, 4 at 1 000, 5 at 10 000).
pub(crate) fn rounds_for(cluster_size: usize, retransmit_mult: f64) -> u32 {
    let n = cluster_size as f64;
    ((retransmit_mult * (n + 1.0).log10()).ceil() as u32).max(2)
}

/// As many of `rumors`, in order, as fit `max_bytes` and [`MAX_RUMORS`]; one that does not
/// fit is skipped and smaller ones after it may still be taken.
pub(crate) fn pack<'a>(
    rumors: impl IntoIterator<Item = &'a Rumor>,
    max_bytes: usize,
) -> Vec<Rumor> {
    let mut batch = Vec::new();
    let mut size = 0;
    for r in rumors {
        let s = encoded_len(r);
        if size + s <= max_bytes && batch.len() < MAX_RUMORS {
            size += s;
            batch.push(r.clone());
        }
    }
    batch
}

#[derive(Clone, Debug)]
struct ActiveRumor {
    key: RumorKey,
    rumor: Rumor,
    size: usize,
    rounds_left: u32,
}

/// The rumors of one round's batch, and which queue entries they came from.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    /// The rumors, newest first.
    pub(crate) rumors: Vec<Rumor>,
    /// Queue positions, for [`RumorQueue::sent`].
    taken: Vec<usize>,
    /// Queue length when taken: the positions are valid only while it is unchanged.
    queue_len: usize,
}

/// The active rumors, oldest first.
#[derive(Clone, Debug)]
pub(crate) struct RumorQueue {
    active: VecDeque<ActiveRumor>,
    /// The packet budget (`GossipConfig::max_packet_bytes`): a rumor must fit one `Ping`.
    max_packet_bytes: usize,
    /// `GossipConfig::retransmit_mult`, for [`rounds_for`].
    retransmit_mult: f64,
    /// Rumors evicted because the queue was full.
    evicted: u64,
}

impl RumorQueue {
    /// An empty queue for packets of at most `max_packet_bytes`.
    pub(crate) fn new(max_packet_bytes: usize, retransmit_mult: f64) -> RumorQueue {
        RumorQueue {
            active: VecDeque::new(),
            max_packet_bytes,
            retransmit_mult,
            evicted: 0,
        }
    }

    /// Rumors being spread.
    pub(crate) fn len(&self) -> usize {
        self.active.len()
    }

    /// True when nothing is being spread.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Rumors evicted so far because the queue was full.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes a `Ping` from `sender` leaves for rumors.
    pub(crate) fn capacity(&self, sender: Sender) -> usize {
        budget_left(self.max_packet_bytes, sender, &Body::Ping)
    }

    /// Removes and returns the queued rumor with `key`, if any.
    pub(crate) fn take(&mut self, key: RumorKey) -> Option<Rumor> {
        let pos = self.active.iter().position(|r| r.key == key)?;
        self.active.remove(pos).map(|r| r.rumor)
    }

    /// Starts spreading `rumor` for [`rounds_for`]`(cluster_size)` rounds, replacing a
    /// queued rumor with the same key (unless [`RumorKey::Other`]). When the queue is full
    /// the oldest is evicted first. A rumor too large for one `Ping` from `sender` is not
    /// queued: anti-entropy carries it instead.
    pub(crate) fn add(&mut self, key: RumorKey, rumor: Rumor, sender: Sender, cluster_size: usize) {
        if key != RumorKey::Other {
            self.take(key);
        }
        // Evicts even when the rumor then turns out too large, as it always has.
        if self.active.len() >= MAX_ACTIVE_RUMORS {
            self.active.pop_front();
            self.evicted += 1;
        }
        let size = encoded_len(&rumor);
        if size > self.capacity(sender) {
            return;
        }
        self.active.push_back(ActiveRumor {
            key,
            rumor,
            size,
            rounds_left: rounds_for(cluster_size, self.retransmit_mult),
        });
        debug_assert!(self.active.len() <= MAX_ACTIVE_RUMORS);
    }

    /// The rumors that fit one `Ping` from `sender`, newest first (they have been sent
    /// least); one that does not fit is skipped and older, smaller ones may still be taken.
    pub(crate) fn batch(&self, sender: Sender) -> Batch {
        let cap = self.capacity(sender);
        let mut size = 0;
        let mut rumors = Vec::new();
        let mut taken = Vec::new();
        for (i, r) in self.active.iter().enumerate().rev() {
            if size + r.size > cap || rumors.len() >= MAX_RUMORS {
                continue;
            }
            size += r.size;
            rumors.push(r.rumor.clone());
            taken.push(i);
        }
        Batch {
            rumors,
            taken,
            queue_len: self.active.len(),
        }
    }

    /// `batch` went out this round: each of its rumors has one round fewer to go, and those
    /// with none left retire. Call before the queue changes again.
    pub(crate) fn sent(&mut self, batch: &Batch) {
        assert_eq!(
            self.active.len(),
            batch.queue_len,
            "rumor queue changed between batch and sent"
        );
        for &i in &batch.taken {
            if let Some(r) = self.active.get_mut(i) {
                r.rounds_left = r.rounds_left.saturating_sub(1);
            }
        }
        self.active.retain(|r| r.rounds_left > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateKey;
    use crate::wire::{NodeDelta, WireEntry, WireId};

    const BUDGET: usize = 1_400;

    fn sender() -> Sender {
        Sender {
            node: WireId([1; 16]),
            generation: 1,
            heartbeat: 1,
        }
    }

    fn node(i: u8) -> NodeId {
        NodeId(u128::from(i))
    }

    /// A delta rumor of about `value_bytes` + 60 bytes.
    fn delta(i: u8, version: u64, value_bytes: usize) -> Rumor {
        Rumor::Delta(NodeDelta {
            node: node(i).into(),
            generation: 1,
            heartbeat: 1,
            removed: false,
            from_version: version - 1,
            to_version: version,
            entries: vec![WireEntry {
                key: StateKey::Load,
                version,
                value: vec![7; value_bytes],
            }],
        })
    }

    fn down(i: u8, heartbeat: u64) -> Rumor {
        Rumor::Down {
            target: node(i).into(),
            generation: 1,
            heartbeat,
        }
    }

    #[test]
    fn rounds_grow_with_log10_of_the_cluster() {
        assert_eq!(rounds_for(1, 1.0), 2);
        assert_eq!(rounds_for(100, 1.0), 3);
        assert_eq!(rounds_for(1_000, 1.0), 4);
        assert_eq!(rounds_for(10_000, 1.0), 5);
        assert_eq!(rounds_for(10_000, 0.1), 2);
        assert_eq!(rounds_for(100, 3.0), 7);
    }

    #[test]
    fn same_key_replaces_other_never_does() {
        let mut q = RumorQueue::new(BUDGET, 1.0);
        q.add(RumorKey::Down(node(2)), down(2, 5), sender(), 10);
        q.add(RumorKey::Down(node(2)), down(2, 6), sender(), 10);
        q.add(RumorKey::Down(node(3)), down(3, 5), sender(), 10);
        assert_eq!(q.len(), 2);
        q.add(RumorKey::Other, delta(4, 1, 10), sender(), 10);
        q.add(RumorKey::Other, delta(4, 1, 10), sender(), 10);
        assert_eq!(q.len(), 4);
        assert_eq!(q.take(RumorKey::Down(node(2))), Some(down(2, 6)));
        assert_eq!(q.take(RumorKey::Down(node(2))), None);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn rumors_retire_after_their_rounds() {
        let mut q = RumorQueue::new(BUDGET, 1.0);
        // Cluster of 100: three rounds each.
        q.add(RumorKey::Other, delta(1, 1, 10), sender(), 100);
        for round in 1..=3 {
            let b = q.batch(sender());
            assert_eq!(b.rumors.len(), 1, "round {round}");
            q.sent(&b);
        }
        assert!(q.is_empty());
    }

    #[test]
    fn a_batch_is_newest_first_within_the_budget() {
        let mut q = RumorQueue::new(512, 1.0);
        let cap = q.capacity(sender());
        let small = encoded_len(&delta(1, 1, 100));
        // The largest rumor that fits beside one small one.
        let large = (0..cap)
            .rev()
            .find(|v| encoded_len(&delta(2, 1, *v)) + small <= cap)
            .unwrap();
        q.add(RumorKey::Other, delta(1, 1, 100), sender(), 10); // oldest, small
        q.add(RumorKey::Other, delta(2, 1, large), sender(), 10); // large
        q.add(RumorKey::Other, delta(3, 1, 100), sender(), 10); // newest, small
        let b = q.batch(sender());
        // The newest and the large one fill the packet; the oldest small one no longer fits.
        assert_eq!(b.rumors, vec![delta(3, 1, 100), delta(2, 1, large)]);
        let bytes: usize = b.rumors.iter().map(encoded_len).sum();
        assert!(bytes <= cap);
        // Only what went out loses a round: after the other two retire (2 rounds at N = 10)
        // the skipped rumor still has both of its rounds.
        q.sent(&b);
        q.sent(&q.batch(sender()));
        for _ in 0..2 {
            let left = q.batch(sender());
            assert_eq!(left.rumors, vec![delta(1, 1, 100)]);
            q.sent(&left);
        }
        assert!(q.is_empty());
    }

    #[test]
    fn too_large_for_one_packet_is_not_queued() {
        let mut q = RumorQueue::new(512, 1.0);
        let cap = q.capacity(sender());
        q.add(RumorKey::Other, delta(1, 1, cap), sender(), 10);
        assert!(q.is_empty());
        assert!(encoded_len(&delta(1, 1, cap)) > cap);
    }

    #[test]
    fn bounded_by_evicting_the_oldest() {
        let mut q = RumorQueue::new(BUDGET, 1.0);
        for i in 0..MAX_ACTIVE_RUMORS + 3 {
            q.add(RumorKey::Other, down(1, i as u64), sender(), 10);
        }
        assert_eq!(q.len(), MAX_ACTIVE_RUMORS);
        assert_eq!(q.evicted(), 3);
        // The oldest went: the batch starts at the newest and never sees heartbeats 0..3.
        let b = q.batch(sender());
        assert_eq!(
            b.rumors.first(),
            Some(&down(1, MAX_ACTIVE_RUMORS as u64 + 2))
        );
        assert!(!b.rumors.contains(&down(1, 2)));
    }

    #[test]
    fn pack_takes_what_fits_in_order() {
        let rs = vec![delta(1, 1, 100), delta(2, 1, 1_000), delta(3, 1, 100)];
        let small = encoded_len(&rs[0]) + encoded_len(&rs[2]);
        assert_eq!(pack(&rs, small), vec![rs[0].clone(), rs[2].clone()]);
        assert_eq!(pack(&rs, usize::MAX), rs);
    }

    #[test]
    fn received_rumors_keep_their_key_suspicions_are_not_passed_on() {
        let alive = Rumor::Delta(NodeDelta {
            node: node(5).into(),
            generation: 1,
            heartbeat: 9,
            removed: false,
            from_version: 3,
            to_version: 3,
            entries: Vec::new(),
        });
        assert_eq!(
            RumorKey::of_received(&alive),
            Some(RumorKey::Alive(node(5)))
        );
        assert_eq!(
            RumorKey::of_received(&delta(5, 1, 1)),
            Some(RumorKey::Other)
        );
        assert_eq!(
            RumorKey::of_received(&down(5, 1)),
            Some(RumorKey::Down(node(5)))
        );
        let report = Rumor::Suspicion {
            target: node(5).into(),
            generation: 1,
            heartbeat: 1,
            reporter: node(6).into(),
        };
        assert_eq!(RumorKey::of_received(&report), None);
    }
}
