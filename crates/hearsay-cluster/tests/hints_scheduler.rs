//! HintScheduler with a fake `now`: only UP targets with hints are replayed, pacing by bytes,
//! exponential backoff on failure, reset when gossip sees the target come back, fairness and
//! the concurrency bound.

use hearsay_cluster::hints::{HintAction, HintScheduler, HintSchedulerConfig, ReplayResult};
use hearsay_types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn cfg() -> HintSchedulerConfig {
    HintSchedulerConfig {
        max_bytes_per_sec_per_target: 1000,
        batch_bytes: 500,
        retry_initial_ms: 100,
        retry_max_ms: 1000,
        max_concurrent_targets: 2,
    }
}

fn set(n: &[NodeId]) -> BTreeSet<NodeId> {
    n.iter().copied().collect()
}

fn pending(n: &[(NodeId, u64)]) -> BTreeMap<NodeId, u64> {
    n.iter().copied().collect()
}

fn targets(actions: &[HintAction]) -> Vec<NodeId> {
    actions
        .iter()
        .map(|HintAction::Replay { target, .. }| *target)
        .collect()
}

#[test]
fn replays_only_up_targets_with_pending_hints() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    let acts = s.poll(t0, &set(&[A, C]), &pending(&[(A, 10), (B, 10), (C, 0)]));
    assert_eq!(
        acts,
        vec![HintAction::Replay {
            target: A,
            max_bytes: 500
        }]
    );
    assert!(
        s.poll(t0, &set(&[A]), &pending(&[(A, 10)])).is_empty(),
        "one replay per target at a time"
    );
    assert_eq!(s.in_flight(), vec![A]);
}

#[test]
fn success_paces_by_bytes_sent() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    let up = set(&[A]);
    let p = pending(&[(A, 5000)]);
    assert_eq!(targets(&s.poll(t0, &up, &p)), vec![A]);
    s.on_replay_result(
        A,
        t0,
        ReplayResult::Ok {
            acked_id: 7,
            bytes: 500,
        },
    );
    // 500 bytes at 1000 B/s: not before 500 ms.
    assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_millis(500)));
    assert!(s.poll(t0 + Duration::from_millis(499), &up, &p).is_empty());
    assert_eq!(
        targets(&s.poll(t0 + Duration::from_millis(500), &up, &p)),
        vec![A]
    );
}

#[test]
fn failures_back_off_exponentially_up_to_the_cap() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    let up = set(&[A]);
    let p = pending(&[(A, 5000)]);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..6 {
        assert_eq!(targets(&s.poll(now, &up, &p)), vec![A], "at {:?}", now - t0);
        s.on_replay_result(A, now, ReplayResult::Err);
        let next = s.next_wakeup().unwrap();
        delays.push((next - now).as_millis() as u64);
        assert!(s.poll(next - Duration::from_millis(1), &up, &p).is_empty());
        now = next;
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(s.failures(A), 6);
    s.poll(now, &up, &p);
    s.on_replay_result(
        A,
        now,
        ReplayResult::Ok {
            acked_id: 1,
            bytes: 0,
        },
    );
    assert_eq!(s.failures(A), 0, "success resets the backoff");
}

#[test]
fn coming_back_up_resets_the_backoff() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    let p = pending(&[(A, 5000)]);
    s.poll(t0, &set(&[A]), &p);
    for _ in 0..3 {
        s.on_replay_result(A, t0, ReplayResult::Err);
    }
    assert!(s.poll(t0, &set(&[A]), &p).is_empty(), "backing off");
    // Gossip marks it down, then up again: replay at once.
    assert!(s.poll(t0, &set(&[]), &p).is_empty());
    assert_eq!(targets(&s.poll(t0, &set(&[A]), &p)), vec![A]);
}

#[test]
fn concurrency_is_bounded_and_targets_take_turns() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    let up = set(&[A, B, C]);
    let p = pending(&[(A, 1), (B, 1), (C, 1)]);
    let first = targets(&s.poll(t0, &up, &p));
    assert_eq!(first, vec![A, B], "two at a time");
    let t1 = t0 + Duration::from_millis(10);
    s.on_replay_result(
        A,
        t1,
        ReplayResult::Ok {
            acked_id: 1,
            bytes: 0,
        },
    );
    assert_eq!(
        targets(&s.poll(t1, &up, &p)),
        vec![C],
        "C has waited longest"
    );
    let t2 = t1 + Duration::from_millis(10);
    s.on_replay_result(
        B,
        t2,
        ReplayResult::Ok {
            acked_id: 1,
            bytes: 0,
        },
    );
    s.on_replay_result(
        C,
        t2,
        ReplayResult::Ok {
            acked_id: 1,
            bytes: 0,
        },
    );
    // All idle: A was served before B, B before C.
    assert_eq!(targets(&s.poll(t2, &up, &p)), vec![A, B]);
}

#[test]
fn drained_targets_are_forgotten() {
    let t0 = Instant::now();
    let mut s = HintScheduler::new(cfg());
    s.poll(t0, &set(&[A]), &pending(&[(A, 1)]));
    s.on_replay_result(
        A,
        t0,
        ReplayResult::Ok {
            acked_id: 1,
            bytes: 100,
        },
    );
    assert!(s.next_wakeup().is_some());
    assert!(s.poll(t0, &set(&[A]), &pending(&[])).is_empty());
    assert_eq!(s.next_wakeup(), None, "nothing pending: no timer needed");
}
