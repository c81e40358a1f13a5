//! Simulator support (cargo feature `sim`, enabled by `hearsay-sim`): start a simulation
//! from a converged cluster of thousands without O(N²) packets. Not part of the protocol;
//! a node never learns state this way outside a simulation.

use std::collections::BTreeMap;
use std::sync::Arc;

use hearsay_types::NodeId;

use crate::Gossiper;
use crate::state::Member;

/// A node's own record, as [`Gossiper::self_snapshot`] takes it.
#[derive(Clone, Debug)]
pub struct SelfSnapshot {
    id: NodeId,
    member: Member,
}

impl Gossiper {
    /// Records `other`'s own current state as if a complete exchange with it had just
    /// happened, sharing its state allocation.
    pub fn learn_from(&mut self, other: &Gossiper) {
        let id = other.state.me;
        let Some(src) = other.state.members.get(&id) else {
            return;
        };
        if id == self.state.me {
            return;
        }
        let mut m = Member::new(src.generation, src.heartbeat);
        m.max_version = src.max_version;
        m.states = Arc::clone(&src.states);
        if self.state.members.insert(id, m).is_none() {
            self.state.order.push(id);
        }
    }

    /// This node's own record, for [`Gossiper::learn_from_all`].
    pub fn self_snapshot(&self) -> SelfSnapshot {
        let me = self.state.me;
        let src = self.state.members.get(&me);
        let mut m = Member::new(self.state.generation, src.map_or(0, |s| s.heartbeat));
        if let Some(src) = src {
            m.max_version = src.max_version;
            m.states = Arc::clone(&src.states);
        }
        SelfSnapshot { id: me, member: m }
    }

    /// [`Gossiper::learn_from`] for many nodes at once from their snapshots, built in bulk
    /// (sorted), which packs the member map densely and avoids touching every other
    /// gossiper's memory. Only before the first tick.
    pub fn learn_from_all(&mut self, snapshots: &[SelfSnapshot]) {
        let me = self.state.me;
        let mut batch: Vec<(NodeId, Member)> = snapshots
            .iter()
            .filter(|s| s.id != me && !self.state.members.contains_key(&s.id))
            .map(|s| (s.id, s.member.clone()))
            .collect();
        batch.sort_by_key(|(id, _)| *id);
        batch.dedup_by_key(|(id, _)| *id);
        self.state.order.reserve(batch.len());
        self.state.order.extend(batch.iter().map(|(id, _)| *id));
        let mut bulk: BTreeMap<NodeId, Member> = batch.into_iter().collect();
        self.state.members.append(&mut bulk);
    }
}
