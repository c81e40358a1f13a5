//! Pending ranges: during a join or a leave, writes reach both old and new owners.

use hearsay_ring::{
    Member, Placement, ReplicaMap, ReplicationStrategy, Ring, TokenRange, Transition,
};
use hearsay_types::{NodeId, Token};
use proptest::prelude::*;
use std::collections::BTreeSet;

mod common;
use common::{arb_members, arb_strategy, arb_token};

/// A join of a fresh node (id above any generated one) or the leave of an existing member.
fn arb_case() -> impl Strategy<Value = (Vec<Member>, Transition)> {
    arb_members().prop_flat_map(|members| {
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let join = (
            0usize..3,
            0usize..4,
            prop::collection::vec(arb_token(), 1..6),
        )
            .prop_map(|(dc, rack, tokens)| {
                Transition::Join(Member::new(
                    NodeId(1000),
                    &format!("dc{dc}"),
                    &format!("rack{rack}"),
                    tokens,
                ))
            });
        let leave = prop::sample::select(ids).prop_map(Transition::Leave);
        (Just(members), prop_oneof![join, leave])
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_endpoints_cover_old_and_new_owners(
        (members, transition) in arb_case(),
        strategy in arb_strategy(),
        probes in prop::collection::vec(arb_token(), 1..16),
    ) {
        let ring = Ring::new(members).expect("valid");
        let future_ring = match &transition {
            Transition::Join(m) => ring.with_member(m.clone()).expect("valid"),
            Transition::Leave(id) => ring.without_member(*id).expect("member"),
        };
        let old = Placement::new(&ring, &strategy);
        let new = Placement::new(&future_ring, &strategy);
        let map = ReplicaMap::new(&ring, &strategy, std::slice::from_ref(&transition)).expect("valid");
        let pending_ranges = map.pending().ranges();

        let mut all_probes = probes;
        for &t in ring.tokens().iter().chain(future_ring.tokens()) {
            all_probes.extend([t, Token(t.0.wrapping_add(1)), Token(t.0.wrapping_sub(1))]);
        }
        for t in all_probes {
            let w = map.write_endpoints(t);
            prop_assert_eq!(w.natural, old.replicas(t), "natural = current replicas at {}", t);
            let natural: BTreeSet<NodeId> = w.natural.iter().copied().collect();
            let pending: BTreeSet<NodeId> = w.pending.iter().copied().collect();
            prop_assert_eq!(pending.len(), w.pending.len(), "pending has a duplicate at {}", t);
            prop_assert!(natural.is_disjoint(&pending), "natural ∩ pending at {}", t);
            let all: BTreeSet<NodeId> = w.all().collect();
            let old_set: BTreeSet<NodeId> = old.replicas(t).iter().copied().collect();
            let new_set: BTreeSet<NodeId> = new.replicas(t).iter().copied().collect();
            prop_assert!(all.is_superset(&old_set), "old owners missing at {}", t);
            prop_assert!(all.is_superset(&new_set), "new owners missing at {}", t);
            // Nothing extra: pending are exactly the newcomers to this token's list.
            prop_assert_eq!(&pending, &new_set.difference(&old_set).copied().collect(), "at {}", t);
            // The merged range list agrees with the per-token answer.
            let listed: Vec<&(TokenRange, Vec<NodeId>)> =
                pending_ranges.iter().filter(|(r, _)| r.contains(t)).collect();
            if w.pending.is_empty() {
                prop_assert!(listed.is_empty());
            } else {
                prop_assert_eq!(listed.len(), 1);
                prop_assert_eq!(&listed[0].1[..], w.pending);
            }
        }
    }
}

fn node(id: u128, tokens: &[i64]) -> Member {
    Member::new(
        NodeId(id),
        "dc1",
        "r1",
        tokens.iter().map(|&t| Token(t)).collect(),
    )
}

#[test]
fn join_makes_the_newcomer_pending_for_the_ranges_it_takes() {
    // Tokens 0, 100, 200, 300 owned by nodes 1..4; rf 2. Node 5 joins at 150.
    let ring = Ring::new([
        node(1, &[0]),
        node(2, &[100]),
        node(3, &[200]),
        node(4, &[300]),
    ])
    .expect("ring");
    let strategy = ReplicationStrategy::simple(2);
    let map = ReplicaMap::new(&ring, &strategy, &[Transition::Join(node(5, &[150]))]).expect("map");
    // (100, 150] is now primary 3 then 4; afterwards 5 then 3. (0, 100] is 2,3 → 2,5.
    let w = map.write_endpoints(Token(120));
    assert_eq!(w.natural, &[NodeId(3), NodeId(4)]);
    assert_eq!(w.pending, &[NodeId(5)]);
    let w = map.write_endpoints(Token(50));
    assert_eq!(w.natural, &[NodeId(2), NodeId(3)]);
    assert_eq!(w.pending, &[NodeId(5)]);
    let w = map.write_endpoints(Token(160));
    assert_eq!(w.natural, &[NodeId(3), NodeId(4)]);
    assert!(w.pending.is_empty());
    assert_eq!(
        map.pending().ranges(),
        vec![(TokenRange::new(Token(0), Token(150)), vec![NodeId(5)])]
    );
    assert_eq!(
        map.pending().ranges_for(NodeId(5)),
        vec![TokenRange::new(Token(0), Token(150))]
    );
    // Reads stay on the current owners.
    assert_eq!(map.read_replicas(Token(120)), &[NodeId(3), NodeId(4)]);
    assert_eq!(map.future().replicas(Token(120)), &[NodeId(5), NodeId(3)]);
}

#[test]
fn leave_keeps_the_leaver_natural_and_adds_the_next_owner() {
    let ring = Ring::new([
        node(1, &[0]),
        node(2, &[100]),
        node(3, &[200]),
        node(4, &[300]),
    ])
    .expect("ring");
    let strategy = ReplicationStrategy::simple(2);
    let map = ReplicaMap::new(&ring, &strategy, &[Transition::Leave(NodeId(2))]).expect("map");
    let w = map.write_endpoints(Token(50));
    assert_eq!(w.natural, &[NodeId(2), NodeId(3)]);
    assert_eq!(w.pending, &[NodeId(4)]);
    let w = map.write_endpoints(Token(-50));
    assert_eq!(w.natural, &[NodeId(1), NodeId(2)]);
    assert_eq!(w.pending, &[NodeId(3)]);
    assert!(map.write_endpoints(Token(250)).pending.is_empty());
}

#[test]
fn no_transition_means_no_pending_and_bad_leave_is_an_error() {
    let ring = Ring::new([node(1, &[0]), node(2, &[100])]).expect("ring");
    let strategy = ReplicationStrategy::simple(1);
    let map = ReplicaMap::new(&ring, &strategy, &[]).expect("map");
    assert!(map.pending().is_empty());
    assert!(map.write_endpoints(Token(5)).pending.is_empty());
    assert!(ReplicaMap::new(&ring, &strategy, &[Transition::Leave(NodeId(9))]).is_err());
    // First node joining an empty ring: every write goes to it as pending.
    let empty = Ring::empty();
    let map =
        ReplicaMap::new(&empty, &strategy, &[Transition::Join(node(1, &[7, 9]))]).expect("map");
    let w = map.write_endpoints(Token(8));
    assert!(w.natural.is_empty());
    assert_eq!(w.pending, &[NodeId(1)]);
    assert_eq!(
        map.pending().ranges(),
        vec![(TokenRange::new(Token(9), Token(9)), vec![NodeId(1)])]
    );
}
