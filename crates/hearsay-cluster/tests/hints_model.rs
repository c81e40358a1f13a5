//! HintStore against a model: random sequences of store / replay / ack / reopen / clock
//! advances. The model is a per-target list of pending hints; the store must replay exactly
//! the live prefix of it, in order, drop expired heads, and count pending hints the same way.

use hearsay_cluster::hints::{DropReason, HintConfig, HintOutcome, HintStore, HintSyncPolicy};
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{Clock, ManualClock, NodeId, Timestamp, Token};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TARGETS: [NodeId; 2] = [NodeId(0x11 << 100), NodeId(0x22 << 100)];
const MAX_AGE_MS: u64 = 60_000;

#[derive(Clone, Debug)]
enum Op {
    Store {
        target: usize,
        key: u8,
        age_ms: u64,
    },
    Replay {
        target: usize,
        max_bytes: u64,
    },
    /// Acknowledge the `k`-th hint (mod batch length) of the target's last batch.
    Ack {
        target: usize,
        k: usize,
    },
    Reopen,
    Advance {
        ms: u64,
    },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..2, any::<u8>(), prop_oneof![3 => Just(0u64), 1 => 0u64..2 * MAX_AGE_MS])
            .prop_map(|(target, key, age_ms)| Op::Store { target, key, age_ms }),
        3 => (0usize..2, 1u64..600).prop_map(|(target, max_bytes)| Op::Replay { target, max_bytes }),
        3 => (0usize..2, 0usize..8).prop_map(|(target, k)| Op::Ack { target, k }),
        1 => Just(Op::Reopen),
        2 => (0u64..MAX_AGE_MS).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Purge),
    ]
}

#[derive(Clone, Debug)]
struct ModelHint {
    id: u64,
    created_at_ms: u64,
    cells: Vec<(CellKey, Cell)>,
}

fn cells(key: u8, ts: u64) -> Vec<(CellKey, Cell)> {
    vec![(
        CellKey::new(Token(key as i64), vec![key; 1 + key as usize % 7]),
        Cell::value(vec![key; 10 + key as usize], Timestamp(ts)),
    )]
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> HintStore {
    let c: Arc<dyn Clock> = clock.clone();
    let config = HintConfig {
        max_hint_age_ms: MAX_AGE_MS,
        segment_bytes: 4096,
        sync: HintSyncPolicy::None,
        ..HintConfig::default()
    };
    HintStore::open(dir, config, c).expect("open")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000_000);
        let mut store = open(dir.path(), &clock);
        let mut model: BTreeMap<usize, Vec<ModelHint>> = BTreeMap::new();
        let mut last_batch: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for op in ops {
            let now_ms = clock.wall_millis();
            let expired = |h: &ModelHint| now_ms.saturating_sub(h.created_at_ms) > MAX_AGE_MS;
            match op {
                Op::Store { target, key, age_ms } => {
                    let created = now_ms - age_ms;
                    let c = cells(key, clock.wall_micros());
                    let outcome = store.store(TARGETS[target], "ks", &c, created);
                    if age_ms > MAX_AGE_MS {
                        prop_assert_eq!(outcome, HintOutcome::Dropped(DropReason::TooOld));
                        continue;
                    }
                    let HintOutcome::Stored { hint_id } = outcome else {
                        panic!("caps are large: nothing may be dropped")
                    };
                    let q = model.entry(target).or_default();
                    prop_assert!(q.last().is_none_or(|h| h.id < hint_id), "ids grow");
                    q.push(ModelHint { id: hint_id, created_at_ms: created, cells: c });
                }
                Op::Replay { target, max_bytes } => {
                    let got = store.replay_batch(TARGETS[target], max_bytes).unwrap();
                    let q = model.entry(target).or_default();
                    // The expired head is dropped at once.
                    let head = q.iter().take_while(|h| expired(h)).count();
                    q.drain(..head);
                    let live: Vec<&ModelHint> = q.iter().filter(|h| !expired(h)).collect();
                    prop_assert_eq!(got.is_empty(), live.is_empty());
                    prop_assert!(got.len() <= live.len());
                    for (g, want) in got.iter().zip(&live) {
                        prop_assert_eq!(g.hint_id, want.id);
                        prop_assert_eq!(&g.cells, &want.cells);
                        prop_assert_eq!(g.created_at_ms, want.created_at_ms);
                        prop_assert_eq!(g.keyspace.as_str(), "ks");
                    }
                    last_batch.insert(target, got.iter().map(|h| h.hint_id).collect());
                }
                Op::Ack { target, k } => {
                    let Some(batch) = last_batch.get(&target).filter(|b| !b.is_empty()) else {
                        continue;
                    };
                    let id = batch[k % batch.len()];
                    store.ack(TARGETS[target], id).unwrap();
                    model.entry(target).or_default().retain(|h| h.id > id);
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path(), &clock);
                }
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
                Op::Purge => {
                    store.purge_expired().unwrap();
                    for q in model.values_mut() {
                        let head = q.iter().take_while(|h| expired(h)).count();
                        q.drain(..head);
                    }
                }
            }
            for (i, t) in TARGETS.iter().enumerate() {
                let want = model.get(&i).map_or(0, Vec::len) as u64;
                prop_assert_eq!(store.pending(*t).0, want, "pending count of target {}", i);
            }
        }
    }
}
