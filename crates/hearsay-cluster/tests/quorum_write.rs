//! WriteTracker: W counting for every level, pending replicas, ANY and hints, unavailability,
//! timeouts and the hint list. Exhaustive over small replica sets against a simple model.

use hearsay_cluster::quorum::{ConsistencyError, DcInfo, FailureReason, WriteStatus, WriteTracker};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// A keyspace replicated to exactly the replicas listed (these tests count over full
/// replica lists; `too_few_replicas_*` covers a ring smaller than the RF).
fn rf(n: &[NodeId]) -> ReplicationStrategy {
    ReplicationStrategy::simple(n.len())
}

/// dc1 = 3, dc2 = 3: the keyspace of [`two_dcs`].
fn nts33() -> ReplicationStrategy {
    ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 3)])
}

fn ids(range: std::ops::Range<u128>) -> Vec<NodeId> {
    range.map(|i| NodeId(i << 96 | i)).collect()
}

fn subset(nodes: &[NodeId], mask: u32) -> BTreeSet<NodeId> {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The model: how many acks a whole-cluster level needs with `rf` natural and `p` pending.
fn model_required(level: ConsistencyLevel, rf: usize, p: usize) -> usize {
    use ConsistencyLevel::*;
    match level {
        Any => 1,
        One => 1 + p,
        Two => 2 + p,
        Three => 3 + p,
        Quorum | LocalQuorum | EachQuorum => rf / 2 + 1 + p,
        All => rf.max(1) + p,
    }
}

#[test]
fn unavailable_message_matches_cassandra_wording() {
    let n = ids(1..4);
    let alive: BTreeSet<_> = n[..2].iter().copied().collect();
    let t = WriteTracker::new(ConsistencyLevel::All, &n, &[], &rf(&n), None, &alive);
    let err = t.check_availability().unwrap_err();
    assert_eq!(
        err,
        ConsistencyError::Unavailable {
            level: ConsistencyLevel::All,
            required: 3,
            alive: 2,
            dc: None
        }
    );
    assert_eq!(
        err.to_string(),
        "Cannot achieve consistency level ALL: 2 of 3 replicas alive"
    );
}

/// Every whole-cluster level, rf 1..=4, 0..=2 pending replicas, every alive set and every set
/// of acks among the alive: availability, satisfaction and the timeout error agree with the
/// model, and hints never count except for ANY.
#[test]
fn exhaustive_counting_matches_model() {
    let mut checked = 0usize;
    for level in ConsistencyLevel::ALL_LEVELS {
        for rf in 1..=4usize {
            for p in 0..=2usize {
                let all = ids(1..(rf + p + 1) as u128);
                let (natural, pending) = all.split_at(rf);
                let required = model_required(level, rf, p);
                for alive_mask in 0u32..(1 << all.len()) {
                    let alive = subset(&all, alive_mask);
                    let mut t = WriteTracker::new(
                        level,
                        natural,
                        pending,
                        &ReplicationStrategy::simple(rf),
                        None,
                        &alive,
                    );
                    let available = level == ConsistencyLevel::Any || alive.len() >= required;
                    assert_eq!(
                        t.check_availability().is_ok(),
                        available,
                        "{level} rf={rf} p={p} alive={}",
                        alive.len()
                    );
                    assert_eq!(t.send_to(), alive.iter().copied().collect::<Vec<_>>());
                    let dead: Vec<NodeId> =
                        all.iter().filter(|n| !alive.contains(n)).copied().collect();
                    assert_eq!(t.needs_hint(), dead, "down replicas need hints at once");
                    // Hints for the down replicas: satisfy ANY only.
                    for d in &dead {
                        t.on_hint_stored(*d);
                    }
                    let base = t.clone();
                    for ack_mask in 0u32..(1 << all.len()) {
                        if ack_mask & !alive_mask != 0 {
                            continue;
                        }
                        let acks = subset(&all, ack_mask);
                        let mut t = base.clone();
                        for a in &acks {
                            assert!(t.on_ack(*a));
                            assert!(!t.on_ack(*a), "a second ack must not count");
                        }
                        let any_hint = level == ConsistencyLevel::Any && !dead.is_empty();
                        let satisfied = acks.len() >= required || any_hint;
                        let status = t.status();
                        if satisfied {
                            assert_eq!(status, WriteStatus::Satisfied, "{level} rf={rf} p={p}");
                        } else if acks.len() + (alive.len() - acks.len()) < required {
                            // Cannot reach W even if every waiting replica acks.
                            assert!(matches!(status, WriteStatus::Failed(_)), "{status:?}");
                        } else {
                            assert_eq!(status, WriteStatus::Pending, "{level} rf={rf} p={p}");
                        }
                        t.on_timeout();
                        match t.status() {
                            WriteStatus::Satisfied => assert!(satisfied),
                            WriteStatus::Failed(ConsistencyError::Timeout {
                                received,
                                required: r,
                                ..
                            }) => {
                                assert!(!satisfied);
                                assert_eq!(received, acks.len());
                                assert_eq!(r, required);
                            }
                            other => panic!("after the deadline: {other:?}"),
                        }
                        // After the deadline every non-acked replica without a hint needs one.
                        let want: Vec<NodeId> = all
                            .iter()
                            .filter(|n| alive.contains(n) && !acks.contains(n))
                            .copied()
                            .collect();
                        assert_eq!(t.needs_hint(), want);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "only {checked} cases checked");
}

#[test]
fn any_is_satisfied_by_a_hint_alone_and_hints_never_count_for_one() {
    let n = ids(1..4);
    let none = BTreeSet::new();
    let mut any = WriteTracker::new(ConsistencyLevel::Any, &n, &[], &rf(&n), None, &none);
    assert!(any.check_availability().is_ok(), "ANY is always available");
    assert!(any.send_to().is_empty());
    assert_eq!(any.status(), WriteStatus::Pending);
    assert_eq!(any.needs_hint(), n);
    any.on_hint_stored(n[1]);
    assert_eq!(any.status(), WriteStatus::Satisfied);
    assert_eq!(any.needs_hint(), vec![n[0], n[2]]);

    let alive: BTreeSet<_> = [n[0]].into();
    let mut one = WriteTracker::new(ConsistencyLevel::One, &n, &[], &rf(&n), None, &alive);
    one.on_hint_stored(n[1]);
    one.on_hint_stored(n[2]);
    assert_eq!(
        one.status(),
        WriteStatus::Pending,
        "hints are not acks for ONE"
    );
    one.on_ack(n[0]);
    assert_eq!(one.status(), WriteStatus::Satisfied);
}

#[test]
fn any_fails_when_every_replica_failed_and_every_hint_was_dropped() {
    let n = ids(1..3);
    let mut t = WriteTracker::new(
        ConsistencyLevel::Any,
        &n,
        &[],
        &rf(&n),
        None,
        &BTreeSet::new(),
    );
    t.on_hint_dropped(n[0]);
    assert_eq!(t.status(), WriteStatus::Pending);
    t.on_hint_dropped(n[1]);
    assert!(matches!(t.status(), WriteStatus::Failed(_)));
    assert!(
        t.needs_hint().is_empty(),
        "no point re-hinting a dropped hint"
    );
}

#[test]
fn pending_replicas_raise_block_for_as_cassandra_does() {
    // rf=3, one pending (a node joining): QUORUM needs 2 + 1 = 3 of the 4 targets.
    let n = ids(1..5);
    let (natural, pending) = n.split_at(3);
    let alive: BTreeSet<_> = n.iter().copied().collect();
    let mut t = WriteTracker::new(
        ConsistencyLevel::Quorum,
        natural,
        pending,
        &rf(natural),
        None,
        &alive,
    );
    t.on_ack(natural[0]);
    t.on_ack(pending[0]);
    assert_eq!(
        t.status(),
        WriteStatus::Pending,
        "a pending ack must not stand in for a natural replica"
    );
    t.on_ack(natural[1]);
    assert_eq!(t.status(), WriteStatus::Satisfied);
    // Three natural acks also satisfy it (the pending ack is not mandatory).
    let mut t = WriteTracker::new(
        ConsistencyLevel::Quorum,
        natural,
        pending,
        &rf(natural),
        None,
        &alive,
    );
    for a in natural {
        t.on_ack(*a);
    }
    assert_eq!(t.status(), WriteStatus::Satisfied);
    // Unavailable counts pending replicas in both numbers.
    let alive2: BTreeSet<_> = natural[..2].iter().copied().collect();
    let t = WriteTracker::new(
        ConsistencyLevel::Quorum,
        natural,
        pending,
        &rf(natural),
        None,
        &alive2,
    );
    assert_eq!(
        t.check_availability().unwrap_err().to_string(),
        "Cannot achieve consistency level QUORUM: 2 of 3 replicas alive"
    );
}

#[test]
fn timeout_error_says_how_many_answered_and_why_the_others_failed() {
    let n = ids(1..4);
    let alive: BTreeSet<_> = n.iter().copied().collect();
    let mut t = WriteTracker::new(
        ConsistencyLevel::All,
        &n[..2],
        &[],
        &rf(&n[..2]),
        None,
        &alive,
    );
    t.on_ack(n[0]);
    t.on_timeout();
    let WriteStatus::Failed(err) = t.status() else {
        panic!("expected failure")
    };
    assert_eq!(
        err.to_string(),
        format!(
            "Operation timed out - received only 1 of 2 required responses (node {}: timeout)",
            n[1]
        )
    );
    // Errors (not timeouts) fail the write early, as soon as W is out of reach.
    let mut t = WriteTracker::new(ConsistencyLevel::Quorum, &n, &[], &rf(&n), None, &alive);
    t.on_failure(n[0], FailureReason::Overloaded);
    assert_eq!(t.status(), WriteStatus::Pending);
    t.on_failure(n[2], FailureReason::Error("disk full".into()));
    let WriteStatus::Failed(err) = t.status() else {
        panic!("expected failure")
    };
    assert_eq!(
        err.to_string(),
        format!(
            "Operation failed - received only 0 of 2 required responses (node {}: overloaded, node {}: error: disk full)",
            n[0], n[2]
        )
    );
    assert!(
        !t.on_ack(n[0]),
        "a failed replica's late ack does not count"
    );
    assert!(!t.on_ack(NodeId(999)), "a stranger's ack does not count");
}

fn two_dcs() -> (Vec<NodeId>, DcInfo) {
    let n = ids(1..7);
    let dc_of: BTreeMap<NodeId, String> = n
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, if i < 3 { "dc1" } else { "dc2" }.to_string()))
        .collect();
    (
        n,
        DcInfo {
            dc_of,
            local_dc: "dc1".into(),
        },
    )
}

#[test]
fn local_quorum_counts_only_the_local_dc() {
    let (n, dcs) = two_dcs();
    let alive: BTreeSet<_> = n.iter().copied().collect();
    let mut t = WriteTracker::new(
        ConsistencyLevel::LocalQuorum,
        &n,
        &[],
        &nts33(),
        Some(&dcs),
        &alive,
    );
    for remote in &n[3..] {
        t.on_ack(*remote);
    }
    assert_eq!(t.status(), WriteStatus::Pending, "remote acks do not count");
    t.on_ack(n[0]);
    t.on_ack(n[1]);
    assert_eq!(t.status(), WriteStatus::Satisfied);
    // Two local replicas down: unavailable, whatever the remote DC has.
    let alive: BTreeSet<_> = n.iter().skip(2).copied().collect();
    let t = WriteTracker::new(
        ConsistencyLevel::LocalQuorum,
        &n,
        &[],
        &nts33(),
        Some(&dcs),
        &alive,
    );
    assert_eq!(
        t.check_availability().unwrap_err().to_string(),
        "Cannot achieve consistency level LOCAL_QUORUM in DC dc1: 1 of 2 replicas alive"
    );
}

#[test]
fn each_quorum_needs_a_quorum_in_every_dc() {
    let (n, dcs) = two_dcs();
    let alive: BTreeSet<_> = n.iter().copied().collect();
    let mut t = WriteTracker::new(
        ConsistencyLevel::EachQuorum,
        &n,
        &[],
        &nts33(),
        Some(&dcs),
        &alive,
    );
    for a in [n[0], n[1], n[2], n[3]] {
        t.on_ack(a);
    }
    assert_eq!(t.status(), WriteStatus::Pending);
    t.on_ack(n[5]);
    assert_eq!(t.status(), WriteStatus::Satisfied);
    let alive: BTreeSet<_> = n.iter().take(4).copied().collect();
    let t = WriteTracker::new(
        ConsistencyLevel::EachQuorum,
        &n,
        &[],
        &nts33(),
        Some(&dcs),
        &alive,
    );
    assert_eq!(
        t.check_availability().unwrap_err().to_string(),
        "Cannot achieve consistency level EACH_QUORUM in DC dc2: 1 of 2 replicas alive"
    );
}

#[test]
fn no_level_is_satisfied_by_zero_replicas() {
    for level in ConsistencyLevel::ALL_LEVELS {
        let t = WriteTracker::new(level, &[], &[], &rf(&[]), None, &BTreeSet::new());
        assert_ne!(t.status(), WriteStatus::Satisfied, "{level}");
    }
}

#[test]
#[should_panic(expected = "listed twice")]
fn a_duplicated_replica_is_a_corrupt_ring() {
    let n = ids(1..3);
    let _ = WriteTracker::new(
        ConsistencyLevel::One,
        &n,
        &n[..1],
        &rf(&n),
        None,
        &BTreeSet::new(),
    );
}

/// LOCAL_QUORUM and EACH_QUORUM over two DCs (dc1 = 3 natural, dc2 = 2 natural, plus one
/// pending replica in dc1), every alive set and every ack set, against a per-DC model.
#[test]
fn exhaustive_dc_levels_match_model() {
    let all = ids(1..7);
    let (natural, pending) = all.split_at(5);
    let dc_of: BTreeMap<NodeId, String> = all
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, if i < 3 || i == 5 { "dc1" } else { "dc2" }.to_string()))
        .collect();
    let dcs = DcInfo {
        dc_of: dc_of.clone(),
        local_dc: "dc1".into(),
    };
    let in_dc = |set: &BTreeSet<NodeId>, dc: &str| set.iter().filter(|n| dc_of[n] == dc).count();
    // dc1: rf 3 → quorum 2, + 1 pending = 3 (of 4 targets). dc2: rf 2 → quorum 2.
    let need = |dc: &str| if dc == "dc1" { 3 } else { 2 };
    for level in [ConsistencyLevel::LocalQuorum, ConsistencyLevel::EachQuorum] {
        let dcs_checked: &[&str] = if level == ConsistencyLevel::LocalQuorum {
            &["dc1"]
        } else {
            &["dc1", "dc2"]
        };
        for alive_mask in 0u32..64 {
            let alive = subset(&all, alive_mask);
            let t = WriteTracker::new(
                level,
                natural,
                pending,
                &ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]),
                Some(&dcs),
                &alive,
            );
            let available = dcs_checked.iter().all(|dc| in_dc(&alive, dc) >= need(dc));
            assert_eq!(
                t.check_availability().is_ok(),
                available,
                "{level} {alive_mask:06b}"
            );
            for ack_mask in 0u32..64 {
                if ack_mask & !alive_mask != 0 {
                    continue;
                }
                let acks = subset(&all, ack_mask);
                let mut t = t.clone();
                for a in &acks {
                    t.on_ack(*a);
                }
                let satisfied = dcs_checked.iter().all(|dc| in_dc(&acks, dc) >= need(dc));
                let reachable = dcs_checked.iter().all(|dc| in_dc(&alive, dc) >= need(dc));
                let want = if satisfied {
                    WriteStatus::Satisfied
                } else if reachable {
                    WriteStatus::Pending
                } else {
                    t.status() // failure detail checked below
                };
                let got = t.status();
                if satisfied || reachable {
                    assert_eq!(
                        got, want,
                        "{level} alive {alive_mask:06b} acks {ack_mask:06b}"
                    );
                } else {
                    assert!(matches!(got, WriteStatus::Failed(_)), "{got:?}");
                }
            }
        }
    }
}

#[test]
fn superseded_answers_count_toward_w_and_are_reported() {
    let n = ids(1..4);
    let alive: BTreeSet<_> = n.iter().copied().collect();
    let mut t = WriteTracker::new(ConsistencyLevel::Quorum, &n, &[], &rf(&n), None, &alive);
    assert!(t.on_superseded(n[0]));
    assert!(!t.on_ack(n[0]), "first answer wins");
    assert_eq!(t.status(), WriteStatus::Pending);
    t.on_ack(n[1]);
    assert_eq!(t.status(), WriteStatus::Satisfied);
    assert_eq!(t.superseded(), vec![n[0]]);
    assert_eq!(t.acked(), 2);
    t.on_timeout();
    assert_eq!(
        t.needs_hint(),
        vec![n[2]],
        "a superseded replica needs no hint"
    );
}
