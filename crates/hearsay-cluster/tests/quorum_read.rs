//! ReadPlan and ReadResolver: replica choice, digest agreement and mismatch, full-read
//! resolution (newest wins, tombstone wins ties), stale replica lists, timeouts.

use hearsay_cluster::quorum::{
    ConsistencyError, FailureReason, ReadPlan, ReadResolver, ReadStatus, VersionedCell,
    cell_digest, resolve_full, visible_value,
};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, NodeId, Timestamp};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// A stand-in for `hearsay_storage::Cell` with the same conflict rule (this crate does not
/// depend on the engine yet): timestamp, then tombstone wins a tie, then larger bytes, then
/// later expiry (no expiry = forever).
#[derive(Clone, Debug, PartialEq, Eq)]
struct TestCell {
    value: Option<Vec<u8>>,
    ts: u64,
    expires_at_ms: Option<u64>,
}

impl VersionedCell for TestCell {
    fn timestamp(&self) -> Timestamp {
        Timestamp(self.ts)
    }
    fn value_bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }
    fn reconcile_cmp(&self, other: &Self) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| match (&self.value, &other.value) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| {
                self.expires_at_ms
                    .unwrap_or(u64::MAX)
                    .cmp(&other.expires_at_ms.unwrap_or(u64::MAX))
            })
    }
}

fn val(v: &str, ts: u64) -> TestCell {
    TestCell {
        value: Some(v.as_bytes().to_vec()),
        ts,
        expires_at_ms: None,
    }
}

fn tomb(ts: u64) -> TestCell {
    TestCell {
        value: None,
        ts,
        expires_at_ms: None,
    }
}

/// A keyspace replicated to exactly the replicas listed.
fn rf(n: &[NodeId]) -> ReplicationStrategy {
    ReplicationStrategy::simple(n.len())
}

fn ids(n: u128) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

fn all_alive(n: &[NodeId]) -> BTreeSet<NodeId> {
    n.iter().copied().collect()
}

#[test]
fn plan_takes_the_closest_live_replicas() {
    let n = ids(3);
    let alive: BTreeSet<_> = [n[1], n[2]].into();
    let plan = ReadPlan::new(ConsistencyLevel::Quorum, &n, &rf(&n), None, &alive).unwrap();
    assert_eq!(plan.contacted, vec![n[1], n[2]]);
    assert_eq!(plan.data_replica(), Some(n[1]));
    assert_eq!(plan.digest_replicas(), &[n[2]]);
    let plan = ReadPlan::new(ConsistencyLevel::One, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    assert_eq!(plan.contacted, vec![n[0]]);
    let err = ReadPlan::new(ConsistencyLevel::All, &n, &rf(&n), None, &alive).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot achieve consistency level ALL: 2 of 3 replicas alive"
    );
    let err = ReadPlan::new(ConsistencyLevel::Any, &n, &rf(&n), None, &alive).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ANY ConsistencyLevel is only supported for writes"
    );
}

/// Every read level, rf 1..=5, every alive set: the plan is available exactly when enough
/// replicas are alive, and then contacts exactly R of them, the closest live ones.
#[test]
fn exhaustive_plan_matches_model() {
    for level in ConsistencyLevel::ALL_LEVELS {
        if level == ConsistencyLevel::Any {
            continue;
        }
        for rf in 1..=5usize {
            let n = ids(rf as u128);
            let r = level.block_for(rf).max(1);
            for mask in 0u32..(1 << rf) {
                let alive: BTreeSet<NodeId> = n
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, x)| *x)
                    .collect();
                match ReadPlan::new(level, &n, &ReplicationStrategy::simple(rf), None, &alive) {
                    Ok(plan) => {
                        assert!(alive.len() >= r);
                        let want: Vec<NodeId> = n
                            .iter()
                            .filter(|x| alive.contains(x))
                            .take(r)
                            .copied()
                            .collect();
                        assert_eq!(plan.contacted, want, "{level} rf={rf}");
                    }
                    Err(ConsistencyError::Unavailable {
                        required, alive: a, ..
                    }) => {
                        assert!(alive.len() < r, "{level} rf={rf}");
                        assert_eq!((required, a), (r, alive.len()));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

#[test]
fn matching_digests_answer_with_the_data_cell() {
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::Quorum, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    let c = val("v", 10);
    assert!(r.on_digest(n[1], cell_digest(Some(&c))));
    assert_eq!(r.status(), ReadStatus::Pending, "data not in yet");
    assert!(r.on_data(n[0], Some(c.clone())));
    assert_eq!(r.status(), ReadStatus::Match(Some(c)));
}

#[test]
fn a_disagreeing_digest_leads_to_full_reads_and_repair_of_the_stale() {
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::All, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    let old = val("old", 10);
    let new = val("new", 20);
    r.on_data(n[0], Some(old.clone()));
    r.on_digest(n[1], cell_digest(Some(&new)));
    assert_eq!(
        r.status(),
        ReadStatus::Mismatch,
        "decided before the last digest"
    );
    let send = r.begin_full_read();
    assert_eq!(
        send,
        vec![n[1], n[2]],
        "the data replica's answer is reused"
    );
    assert!(
        !r.on_digest(n[2], 5),
        "late digests are ignored in the full phase"
    );
    r.on_data(n[1], Some(new.clone()));
    assert_eq!(r.status(), ReadStatus::Pending);
    r.on_data(n[2], None);
    let ReadStatus::Resolved(res) = r.status() else {
        panic!("expected resolution")
    };
    assert_eq!(res.newest, Some(new));
    assert_eq!(res.stale, vec![n[0], n[2]]);
    assert_eq!(res.visible_value(0), Some(&b"new"[..]));
}

#[test]
fn losing_the_data_replica_falls_back_to_full_reads() {
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::One, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    r.on_failure(n[0], FailureReason::Error("io".into()));
    assert!(matches!(
        r.status(),
        ReadStatus::Failed(ConsistencyError::Failed { .. })
    ));

    let plan = ReadPlan::new(ConsistencyLevel::Quorum, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    r.on_digest(n[1], 7);
    r.on_timeout();
    let ReadStatus::Failed(err) = r.status() else {
        panic!("expected timeout")
    };
    assert_eq!(
        err.to_string(),
        format!(
            "Operation timed out - received only 1 of 2 required responses (node {}: timeout)",
            n[0]
        )
    );
    assert!(matches!(
        err,
        ConsistencyError::Timeout {
            data_present: false,
            ..
        }
    ));
}

#[test]
fn tombstone_wins_a_timestamp_tie_and_expired_values_compare_as_stored() {
    let n = ids(3);
    let res = resolve_full(vec![
        (n[0], Some(val("zzz", 5))),
        (n[1], Some(tomb(5))),
        (n[2], Some(val("a", 4))),
    ]);
    assert_eq!(res.newest, Some(tomb(5)));
    assert_eq!(res.stale, vec![n[0], n[2]]);
    assert_eq!(res.visible_value(0), None);

    // A value that expired at 100 vs the tombstone compaction made from it (same timestamp):
    // the tombstone wins, and the client sees nothing either way.
    let expired = TestCell {
        value: Some(b"v".to_vec()),
        ts: 50,
        expires_at_ms: Some(100),
    };
    let from_expiry = TestCell {
        value: None,
        ts: 50,
        expires_at_ms: Some(100),
    };
    assert_ne!(cell_digest(Some(&expired)), cell_digest(Some(&from_expiry)));
    let res = resolve_full(vec![
        (n[0], Some(expired.clone())),
        (n[1], Some(from_expiry.clone())),
    ]);
    assert_eq!(res.newest, Some(from_expiry));
    assert_eq!(res.stale, vec![n[0]]);
    assert_eq!(visible_value(Some(&expired), 99), Some(&b"v"[..]));
    assert_eq!(visible_value(Some(&expired), 100), None);
    // Nobody has anything: nothing is stale.
    let res = resolve_full::<TestCell>(vec![(n[0], None), (n[1], None)]);
    assert_eq!(
        res,
        hearsay_cluster::quorum::Resolution {
            newest: None,
            stale: vec![]
        }
    );
}

#[test]
fn digest_is_pinned_and_covers_every_field() {
    // A change to the digest encoding is a wire change (replicas of different versions would
    // see permanent mismatches): this pin makes it deliberate.
    let c = TestCell {
        value: Some(b"hello".to_vec()),
        ts: 1_700_000_000_000_000,
        expires_at_ms: Some(1_800_000_000_000),
    };
    let d = cell_digest(Some(&c));
    assert_eq!(
        d, DIGEST_PIN,
        "digest of the pinned cell changed: {d:#018x}"
    );
    let variants = [
        TestCell {
            ts: c.ts + 1,
            ..c.clone()
        },
        TestCell {
            value: None,
            ..c.clone()
        },
        TestCell {
            value: Some(b"hellp".to_vec()),
            ..c.clone()
        },
        TestCell {
            expires_at_ms: None,
            ..c.clone()
        },
        TestCell {
            expires_at_ms: Some(1),
            ..c.clone()
        },
    ];
    for v in &variants {
        assert_ne!(cell_digest(Some(v)), d, "{v:?}");
    }
    assert_ne!(cell_digest::<TestCell>(None), d);
    assert_ne!(cell_digest::<TestCell>(None), cell_digest(Some(&tomb(0))));
}

const DIGEST_PIN: u64 = 0x1a35_e58c_efdd_7962;

fn arb_cell() -> impl Strategy<Value = Option<TestCell>> {
    proptest::option::weighted(
        0.85,
        (
            proptest::option::weighted(0.7, proptest::collection::vec(0u8..3, 0..3)),
            0u64..4,
            proptest::option::of(0u64..3),
        )
            .prop_map(|(value, ts, expires_at_ms)| TestCell {
                value,
                ts,
                expires_at_ms,
            }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// resolve_full against a brute-force model: the winner beats or equals every answer, and
    /// a replica is stale exactly when its answer is not identical to the winner.
    #[test]
    fn resolve_full_matches_brute_force(cells in proptest::collection::vec(arb_cell(), 1..6)) {
        let n = ids(cells.len() as u128);
        let responses: Vec<_> = n.iter().copied().zip(cells.iter().cloned()).collect();
        let res = resolve_full(responses);
        match &res.newest {
            None => {
                prop_assert!(cells.iter().all(Option::is_none));
                prop_assert!(res.stale.is_empty());
            }
            Some(w) => {
                prop_assert!(cells.iter().any(|c| c.as_ref() == Some(w)));
                for (i, c) in cells.iter().enumerate() {
                    let is_stale = match c {
                        None => true,
                        Some(c) => {
                            prop_assert!(w.reconcile_cmp(c) != Ordering::Less);
                            c != w
                        }
                    };
                    prop_assert_eq!(res.stale.contains(&n[i]), is_stale);
                }
            }
        }
        // Digests agree exactly when the cells are identical.
        for a in &cells {
            for b in &cells {
                prop_assert_eq!(cell_digest(a.as_ref()) == cell_digest(b.as_ref()), a == b);
            }
        }
    }

    /// Feeding a full ALL read through the resolver in any order ends in Match when every
    /// replica holds the same cell, and otherwise in a Resolved repair list equal to the model.
    #[test]
    fn resolver_outcome_matches_model(cells in proptest::collection::vec(arb_cell(), 1..5), order_seed in 0u64..1000) {
        let n = ids(cells.len() as u128);
        let plan = ReadPlan::new(ConsistencyLevel::All, &n, &rf(&n), None, &all_alive(&n)).unwrap();
        let mut r = ReadResolver::<TestCell>::new(plan);
        let mut idx: Vec<usize> = (0..cells.len()).collect();
        idx.rotate_left(order_seed as usize % cells.len());
        for &i in &idx {
            if i == 0 {
                r.on_data(n[0], cells[0].clone());
            } else {
                r.on_digest(n[i], cell_digest(cells[i].as_ref()));
            }
        }
        let all_same = cells.iter().all(|c| *c == cells[0]);
        if all_same {
            prop_assert_eq!(r.status(), ReadStatus::Match(cells[0].clone()));
        } else {
            prop_assert_eq!(r.status(), ReadStatus::Mismatch);
            for node in r.begin_full_read() {
                let i = n.iter().position(|x| *x == node).unwrap();
                r.on_data(node, cells[i].clone());
            }
            let want = resolve_full(n.iter().copied().zip(cells.iter().cloned()).collect());
            prop_assert_eq!(r.status(), ReadStatus::Resolved(want));
        }
    }
}

/// The engine's own cell plugs in and resolves by the engine's rule; the test stand-in
/// above agrees with it on the cases that matter (ties, tombstones, expiry).
#[test]
fn storage_cell_resolves_like_the_stand_in() {
    use hearsay_storage::Cell;
    let n = ids(3);
    let cases: Vec<(Cell, TestCell)> = vec![
        (Cell::value(&b"zzz"[..], Timestamp(5)), val("zzz", 5)),
        (Cell::tombstone(Timestamp(5)), tomb(5)),
        (Cell::value(&b"a"[..], Timestamp(6)), val("a", 6)),
        (
            Cell::expiring(&b"a"[..], Timestamp(6), 9),
            TestCell {
                expires_at_ms: Some(9),
                ..val("a", 6)
            },
        ),
    ];
    for (a, ta) in &cases {
        assert_eq!(
            cell_digest(Some(a)),
            cell_digest(Some(ta)),
            "same digest for the same cell"
        );
        for (b, tb) in &cases {
            assert_eq!(VersionedCell::reconcile_cmp(a, b), ta.reconcile_cmp(tb));
        }
    }
    let res = resolve_full(vec![
        (n[0], Some(cases[0].0.clone())),
        (n[1], Some(cases[1].0.clone())),
        (n[2], None),
    ]);
    assert_eq!(res.newest, Some(Cell::tombstone(Timestamp(5))));
    assert_eq!(res.stale, vec![n[0], n[2]]);
    let exp = &cases[3].0;
    assert_eq!(visible_value(Some(exp), 8), Some(&b"a"[..]));
    assert_eq!(visible_value(Some(exp), 9), None);
}

#[test]
fn blocking_read_repair_waits_until_the_level_holds_the_newest_cell() {
    use hearsay_cluster::quorum::RepairStatus;
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::Quorum, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    r.on_data(n[0], Some(val("old", 1)));
    r.on_digest(n[1], cell_digest(Some(&val("new", 2))));
    assert_eq!(r.status(), ReadStatus::Mismatch);
    r.begin_full_read();
    r.on_data(n[1], Some(val("new", 2)));
    let ReadStatus::Resolved(res) = r.status() else {
        panic!("expected resolution")
    };
    assert_eq!(res.stale, vec![n[0]]);
    let mut repair = r.read_repair(&res);
    assert_eq!(repair.send_to(), vec![n[0]]);
    assert_eq!(
        repair.status(),
        RepairStatus::Pending,
        "1 current of 2 required"
    );
    assert!(!repair.on_ack(n[2]), "not contacted, cannot count");
    assert!(repair.on_ack(n[0]));
    assert_eq!(repair.status(), RepairStatus::Satisfied);

    // The stale replica never acknowledges: a read timeout naming it.
    let mut repair = r.read_repair(&res);
    repair.on_timeout();
    let RepairStatus::Failed(err) = repair.status() else {
        panic!("expected failure")
    };
    assert_eq!(
        err.to_string(),
        format!(
            "Operation timed out - received only 1 of 2 required responses (node {}: timeout)",
            n[0]
        )
    );
}

/// Issue 17: a stale replica whose repair write fails fast (its storage refuses writes) is
/// replaced by the spare replica, so the newest cell still reaches a quorum.
#[test]
fn a_repair_that_fails_fast_goes_to_a_spare_replica() {
    use hearsay_cluster::quorum::RepairStatus;
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::Quorum, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    assert_eq!(plan.spares, vec![n[2]]);
    let mut r = ReadResolver::<TestCell>::new(plan);
    r.on_data(n[0], Some(val("new", 2)));
    r.on_digest(n[1], cell_digest(Some(&val("old", 1))));
    assert_eq!(r.status(), ReadStatus::Mismatch);
    r.begin_full_read();
    r.on_data(n[1], Some(val("old", 1)));
    let ReadStatus::Resolved(res) = r.status() else {
        panic!("expected resolution")
    };
    assert_eq!(res.stale, vec![n[1]]);
    let mut repair = r.read_repair(&res);
    assert!(repair.on_failure(n[1], FailureReason::Error("storage poisoned".into())));
    assert!(matches!(repair.status(), RepairStatus::Failed(_)));
    assert_eq!(repair.take_spare(), Some(n[2]));
    assert_eq!(repair.send_to(), vec![n[2]]);
    assert_eq!(repair.status(), RepairStatus::Pending);
    assert!(repair.on_ack(n[2]));
    assert_eq!(repair.status(), RepairStatus::Satisfied);
    assert_eq!(repair.take_spare(), None, "no spare left");
}

#[test]
fn read_repair_with_nothing_stale_is_satisfied_at_once() {
    use hearsay_cluster::quorum::RepairStatus;
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::All, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    let mut r = ReadResolver::<TestCell>::new(plan);
    r.on_data(n[0], None);
    r.on_digest(n[1], 1);
    r.begin_full_read();
    r.on_data(n[1], None);
    r.on_data(n[2], None);
    let ReadStatus::Resolved(res) = r.status() else {
        panic!("expected resolution")
    };
    let repair = r.read_repair(&res);
    assert!(repair.send_to().is_empty());
    assert_eq!(repair.status(), RepairStatus::Satisfied);
}

#[test]
fn dc_levels_plan_local_or_per_dc_replicas() {
    use hearsay_cluster::quorum::DcInfo;
    // Proximity order: two remote replicas first (a worst case), then the local ones.
    let n = ids(6);
    let dc_of = n
        .iter()
        .enumerate()
        .map(|(i, x)| (*x, if i < 3 { "remote" } else { "local" }.to_string()))
        .collect();
    let dcs = DcInfo {
        dc_of,
        local_dc: "local".into(),
    };
    let alive = all_alive(&n);
    let plan = ReadPlan::new(
        ConsistencyLevel::LocalQuorum,
        &n,
        &ReplicationStrategy::network_topology([("remote", 3), ("local", 3)]),
        Some(&dcs),
        &alive,
    )
    .unwrap();
    assert_eq!(
        plan.contacted,
        vec![n[3], n[4]],
        "only local replicas count"
    );
    let plan = ReadPlan::new(
        ConsistencyLevel::EachQuorum,
        &n,
        &ReplicationStrategy::network_topology([("remote", 3), ("local", 3)]),
        Some(&dcs),
        &alive,
    )
    .unwrap();
    assert_eq!(plan.contacted, vec![n[0], n[1], n[3], n[4]]);
    let local_down: BTreeSet<NodeId> = n[..4].iter().copied().collect();
    let err = ReadPlan::new(
        ConsistencyLevel::LocalQuorum,
        &n,
        &ReplicationStrategy::network_topology([("remote", 3), ("local", 3)]),
        Some(&dcs),
        &local_down,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot achieve consistency level LOCAL_QUORUM in DC local: 1 of 2 replicas alive"
    );
}

#[test]
fn a_fast_failure_is_replaced_by_a_spare_replica() {
    // C died but gossip has not convicted it yet: QUORUM contacts A (data) and C (digest).
    let n = ids(3);
    let (a, b, c) = (n[0], n[2], n[1]);
    let order = vec![a, c, b];
    let plan = ReadPlan::new(
        ConsistencyLevel::Quorum,
        &order,
        &rf(&order),
        None,
        &all_alive(&n),
    )
    .unwrap();
    assert_eq!(plan.contacted, vec![a, c]);
    assert_eq!(plan.spares, vec![b]);
    let mut r: ReadResolver<TestCell> = ReadResolver::new(plan);
    r.on_data(a, Some(val("x", 5)));
    assert!(r.on_failure(c, FailureReason::Error("connection refused".into())));
    assert_eq!(
        r.take_spare(),
        Some(b),
        "the live third replica stands in for C"
    );
    assert_eq!(r.status(), ReadStatus::Pending);
    r.on_data(b, Some(val("x", 5)));
    assert_eq!(r.status(), ReadStatus::Match(Some(val("x", 5))));
    assert_eq!(r.take_spare(), None, "no spare left");
}

#[test]
fn without_a_spare_the_failure_fails_the_read() {
    let n = ids(2);
    let plan = ReadPlan::new(ConsistencyLevel::All, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    assert!(plan.spares.is_empty());
    let mut r: ReadResolver<TestCell> = ReadResolver::new(plan);
    r.on_data(n[0], Some(val("x", 5)));
    r.on_failure(n[1], FailureReason::Error("refused".into()));
    assert_eq!(r.take_spare(), None);
    assert!(matches!(
        r.status(),
        ReadStatus::Failed(ConsistencyError::Failed { .. })
    ));
}

#[test]
fn a_spare_is_not_taken_after_the_deadline() {
    let n = ids(3);
    let plan = ReadPlan::new(ConsistencyLevel::One, &n, &rf(&n), None, &all_alive(&n)).unwrap();
    assert_eq!(plan.spares.len(), 2);
    let mut r: ReadResolver<TestCell> = ReadResolver::new(plan);
    r.on_timeout();
    assert_eq!(r.take_spare(), None);
}
