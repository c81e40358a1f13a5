//! Peer choice (docs/gossip.md, "Peer choice"): every round one random live peer, a random
//! seed if that peer is not one, and now and then an unreachable node so recoveries are
//! seen. Sampling is O(1) expected: random draws into the member list, then a scan.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use hearsay_types::NodeId;
use rand::Rng;

use crate::state::ClusterState;
use crate::types::Liveness;

/// Random draws before falling back to a scan when sampling a peer.
const SAMPLE_TRIES: usize = 16;

/// This round's gossip targets.
#[derive(Clone, Debug, Default)]
pub(crate) struct Targets {
    /// Where to send, the random live peer first.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The members among them (seeds are addresses and may not be known yet).
    pub(crate) nodes: BTreeSet<NodeId>,
}

/// This round's targets: one random live peer; a random seed if that peer was not one;
/// and, with probability `unreachable / (live + 1)`, one unreachable node.
pub(crate) fn gossip_targets<R: Rng + ?Sized>(
    state: &ClusterState,
    unreachable: &BTreeSet<NodeId>,
    seeds: &BTreeSet<SocketAddr>,
    rng: &mut R,
) -> Targets {
    let mut t = Targets::default();
    let live = live_count(state, unreachable);
    let peer = random_live(state, rng, None);
    if let Some((id, addr)) = peer {
        t.addrs.push(addr);
        t.nodes.insert(id);
    }
    let peer_is_seed = peer.is_some_and(|(_, a)| seeds.contains(&a));
    if !peer_is_seed && !seeds.is_empty() {
        let i = rng.random_range(0..seeds.len());
        if let Some(s) = seeds.iter().nth(i)
            && !t.addrs.contains(s)
        {
            t.addrs.push(*s);
        }
    }
    let u = unreachable.len();
    if u > 0 && rng.random_bool((u as f64 / (live as f64 + 1.0)).min(1.0)) {
        let i = rng.random_range(0..u);
        if let Some(id) = unreachable.iter().nth(i).copied()
            && let Some(a) = state.get(&id).and_then(|m| m.addr())
            && !t.addrs.contains(&a)
        {
            t.addrs.push(a);
            t.nodes.insert(id);
        }
    }
    t
}

/// Other members that are neither removed nor suspect or down.
fn live_count(state: &ClusterState, unreachable: &BTreeSet<NodeId>) -> usize {
    (state.len() - 1)
        .saturating_sub(state.removed_count)
        .saturating_sub(unreachable.len())
}

/// A random Up peer with a known address, not `except`.
pub(crate) fn random_live<R: Rng + ?Sized>(
    state: &ClusterState,
    rng: &mut R,
    except: Option<NodeId>,
) -> Option<(NodeId, SocketAddr)> {
    if state.order.is_empty() {
        return None;
    }
    let ok = |id: &NodeId| -> Option<(NodeId, SocketAddr)> {
        if Some(*id) == except {
            return None;
        }
        let m = state.get(id)?;
        if m.liveness != Liveness::Up {
            return None;
        }
        Some((*id, m.addr()?))
    };
    for _ in 0..SAMPLE_TRIES {
        let id = state.order[rng.random_range(0..state.order.len())];
        if let Some(x) = ok(&id) {
            return Some(x);
        }
    }
    let all: Vec<(NodeId, SocketAddr)> = state.order.iter().filter_map(ok).collect();
    if all.is_empty() {
        None
    } else {
        Some(all[rng.random_range(0..all.len())])
    }
}
