//! Placement against a brute-force reference, determinism, and rack/DC spreading.

use hearsay_ring::{Member, Placement, ReplicationStrategy, Ring, token_of};
use hearsay_types::{NodeId, Token};
use proptest::prelude::*;

mod common;
use common::{arb_members, arb_strategy, arb_token};
use std::collections::{BTreeMap, BTreeSet};

/// The naive model: sort every (token, id) pair, keep the smallest id for a repeated token,
/// find the first token >= t by a linear scan, and walk the list.
fn naive_walk(members: &[Member], t: Token) -> Vec<&Member> {
    let mut all: Vec<(Token, NodeId)> = members
        .iter()
        .flat_map(|m| m.tokens.iter().map(move |&tok| (tok, m.id)))
        .collect();
    all.sort();
    all.dedup_by_key(|(tok, _)| *tok);
    if all.is_empty() {
        return Vec::new();
    }
    let start = all.iter().position(|(tok, _)| *tok >= t).unwrap_or(0);
    let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
    (0..all.len())
        .map(|k| by_id[&all[(start + k) % all.len()].1])
        .collect()
}

fn naive_replicas(members: &[Member], strategy: &ReplicationStrategy, t: Token) -> Vec<NodeId> {
    let walk = naive_walk(members, t);
    // Distinct nodes in the order first met, with the step they were first met at.
    let mut firsts: Vec<(usize, &Member)> = Vec::new();
    for (step, m) in walk.iter().enumerate() {
        if !firsts.iter().any(|(_, f)| f.id == m.id) {
            firsts.push((step, m));
        }
    }
    match strategy {
        ReplicationStrategy::Simple { rf } => firsts.iter().take(*rf).map(|(_, m)| m.id).collect(),
        ReplicationStrategy::NetworkTopology { dc_rf } => {
            let mut picked: Vec<(usize, NodeId)> = Vec::new();
            for (dc, rf) in dc_rf {
                let in_dc: Vec<&(usize, &Member)> =
                    firsts.iter().filter(|(_, m)| &m.dc == dc).collect();
                let racks: BTreeSet<&str> = in_dc.iter().map(|(_, m)| m.rack.as_str()).collect();
                let want = (*rf).min(in_dc.len());
                // Slots beyond the number of racks may repeat racks, taken as met.
                let mut repeats = want.saturating_sub(racks.len());
                let mut used_racks = BTreeSet::new();
                let mut got = 0;
                for (step, m) in in_dc {
                    if got == want {
                        break;
                    }
                    if used_racks.insert(m.rack.as_str()) {
                        picked.push((*step, m.id));
                        got += 1;
                    } else if repeats > 0 {
                        repeats -= 1;
                        picked.push((*step, m.id));
                        got += 1;
                    }
                }
            }
            picked.sort();
            picked.into_iter().map(|(_, id)| id).collect()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn placement_matches_brute_force(
        members in arb_members(),
        strategy in arb_strategy(),
        probes in prop::collection::vec(arb_token(), 1..20),
    ) {
        let ring = Ring::new(members.clone()).expect("valid members");
        let placement = Placement::new(&ring, &strategy);
        // Probe random tokens plus every ring token and its neighbours (range boundaries).
        let mut all_probes = probes;
        for &t in ring.tokens() {
            all_probes.extend([t, Token(t.0.wrapping_sub(1)), Token(t.0.wrapping_add(1))]);
        }
        all_probes.extend([Token::MIN, Token::MAX]);
        for t in all_probes {
            let want = naive_replicas(&members, &strategy, t);
            prop_assert_eq!(placement.replicas(t), &want[..], "token {}", t);
        }
    }

    #[test]
    fn member_order_does_not_change_the_ring(
        (members, shuffled) in arb_members().prop_flat_map(|m| (Just(m.clone()), Just(m).prop_shuffle())),
        strategy in arb_strategy(),
    ) {
        let a = Ring::new(members).expect("valid");
        let b = Ring::new(shuffled).expect("valid");
        prop_assert_eq!(a.tokens(), b.tokens());
        prop_assert_eq!(a.token_conflicts(), b.token_conflicts());
        let (pa, pb) = (Placement::new(&a, &strategy), Placement::new(&b, &strategy));
        let la: Vec<_> = pa.ranges().map(|(r, reps)| (r, reps.to_vec())).collect();
        let lb: Vec<_> = pb.ranges().map(|(r, reps)| (r, reps.to_vec())).collect();
        prop_assert_eq!(la, lb);
    }

    #[test]
    fn effective_ownership_sums_to_replica_count(members in arb_members(), strategy in arb_strategy()) {
        let ring = Ring::new(members).expect("valid");
        prop_assume!(!ring.tokens().is_empty());
        let placement = Placement::new(&ring, &strategy);
        // Sum over nodes of effective ownership = Σ over ranges of width × replica count.
        let total: f64 = placement.effective_ownerships().values().sum();
        let expected: f64 = placement.ranges().map(|(r, reps)| r.fraction() * reps.len() as f64).sum();
        prop_assert!((total - expected).abs() < 1e-9);
        let primary: f64 = ring.ownerships().values().sum();
        prop_assert!((primary - 1.0).abs() < 1e-9);
        for m in ring.members() {
            let by_ranges: f64 = placement.replicated_ranges(m.id).iter().map(|r| r.fraction()).sum();
            prop_assert!((by_ranges - placement.effective_ownership(m.id)).abs() < 1e-9);
            let primary: f64 = ring.ranges_of(m.id).iter().map(|r| r.fraction()).sum();
            prop_assert!((primary - ring.ownership(m.id)).abs() < 1e-12);
        }
    }
}

/// A ring of `dcs × racks × per_rack` nodes, each with `tokens_each` pseudo-random tokens (the
/// Murmur3 token of "id/j"), so walks cross racks and DCs in no particular pattern.
fn grid(dcs: usize, racks: usize, per_rack: usize, tokens_each: usize) -> Vec<Member> {
    let mut out = Vec::new();
    for d in 0..dcs {
        for r in 0..racks {
            for p in 0..per_rack {
                let id = (d * 100 + r * 10 + p) as u128;
                let tokens = (0..tokens_each)
                    .map(|j| token_of(format!("{id}/{j}").as_bytes()))
                    .collect();
                out.push(Member::new(
                    NodeId(id),
                    &format!("dc{d}"),
                    &format!("r{r}"),
                    tokens,
                ));
            }
        }
    }
    out
}

#[test]
fn network_topology_spreads_over_racks_and_dcs() {
    let members = grid(2, 3, 3, 16);
    let ring = Ring::new(members.clone()).expect("ring");
    let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
    let strategy = ReplicationStrategy::network_topology([("dc0", 3), ("dc1", 2)]);
    let placement = Placement::new(&ring, &strategy);
    for (range, reps) in placement.ranges() {
        let mut per_dc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in reps {
            let m = by_id[id];
            per_dc.entry(&m.dc).or_default().push(&m.rack);
        }
        assert_eq!(per_dc["dc0"].len(), 3, "{range}: {reps:?}");
        assert_eq!(per_dc["dc1"].len(), 2, "{range}: {reps:?}");
        for racks in per_dc.values() {
            let distinct: BTreeSet<_> = racks.iter().collect();
            assert_eq!(
                distinct.len(),
                racks.len(),
                "{range}: racks repeat with enough racks"
            );
        }
        // The primary is the owner of the range's vnode.
        assert_eq!(Some(reps[0]), ring.primary_owner(range.end));
    }
}

#[test]
fn network_topology_with_fewer_racks_than_rf_uses_every_rack() {
    // One DC, 2 racks, rf 3: both racks must appear, one twice.
    let members = grid(1, 2, 3, 8);
    let ring = Ring::new(members.clone()).expect("ring");
    let rack: BTreeMap<NodeId, String> = members.iter().map(|m| (m.id, m.rack.clone())).collect();
    let placement = Placement::new(&ring, &ReplicationStrategy::network_topology([("dc0", 3)]));
    for (range, reps) in placement.ranges() {
        assert_eq!(reps.len(), 3, "{range}");
        let racks: BTreeSet<_> = reps.iter().map(|id| &rack[id]).collect();
        assert_eq!(racks.len(), 2, "{range}: {reps:?}");
    }
}

#[test]
fn not_enough_nodes_gives_every_node() {
    let members = grid(1, 1, 2, 4);
    let ring = Ring::new(members).expect("ring");
    let p = Placement::new(&ring, &ReplicationStrategy::simple(3));
    assert!(p.ranges().all(|(_, reps)| reps.len() == 2));
    let p = Placement::new(
        &ring,
        &ReplicationStrategy::network_topology([("dc0", 5), ("nowhere", 3)]),
    );
    assert!(p.ranges().all(|(_, reps)| reps.len() == 2));
    let empty = Placement::new(&Ring::empty(), &ReplicationStrategy::simple(3));
    assert!(empty.replicas(Token(0)).is_empty());
}
