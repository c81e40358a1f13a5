//! Acceptance 1: random interleavings of put, delete, put-with-expiry, get, range scan,
//! flush, compaction, clock advance, close/reopen, a change of the keyspace's options
//! (`alter_keyspace`: any strategy, either compression) and (monotone regime) a change of its
//! purge horizon give the same visible results as a `BTreeMap` model, starting from each
//! compaction strategy.
//!
//! Two timestamp regimes: "monotone" (timestamps follow the clock, tombstones may be purged
//! after a small gc_grace) and "shuffled" (writes arrive out of timestamp order; gc_grace is
//! effectively infinite, since purging a tombstone and then accepting an older write is the
//! documented gc_grace hazard, not a bug).

use bytes::Bytes;
use hearsay_storage::sstable::Compression;
use hearsay_storage::{
    Cell, CellKey, CompactionStrategy, Engine, EngineConfig, KeyspaceOptions, PurgeHorizon,
    SyncMode,
};
use hearsay_types::{Clock, ManualClock, Timestamp, Token};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    PutTtl(u8, u8, u16),
    Get(u8),
    Scan(u8, u8),
    Flush,
    Compact,
    Advance(u16),
    Reopen,
    /// Switch to strategy `.0 % 3`, compressed or not.
    Alter(u8, bool),
    /// Set a purge horizon lagging the clock by this much (per token a little more), or
    /// remove it.
    Horizon(Option<u16>),
}

/// A horizon `lag_ms` behind the clock, and 3 ms more per token step, so tokens differ.
#[derive(Debug)]
struct Lagging {
    clock: Arc<ManualClock>,
    lag_ms: u64,
}

impl PurgeHorizon for Lagging {
    fn purge_before_ms(&self, token: Token) -> u64 {
        let extra = (token.0 + 2).unsigned_abs() * 3;
        self.clock.wall_millis().saturating_sub(self.lag_ms + extra)
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..24).prop_map(Op::Delete),
        2 => (0u8..24, any::<u8>(), 1u16..40).prop_map(|(k, v, t)| Op::PutTtl(k, v, t)),
        3 => (0u8..24).prop_map(Op::Get),
        2 => (0u8..24, 0u8..24).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        2 => (0u16..30).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
        1 => (0u8..3, any::<bool>()).prop_map(|(s, c)| Op::Alter(s, c)),
        1 => proptest::option::of(0u16..40).prop_map(Op::Horizon),
    ]
}

fn key(k: u8) -> CellKey {
    // Few tokens, several keys per token: exercises the (token, key) order.
    CellKey::new(Token(i64::from(k % 5) - 2), Bytes::from(vec![b'k', k]))
}

fn strategy(i: u8) -> CompactionStrategy {
    match i {
        0 => CompactionStrategy::SizeTiered {
            min_threshold: 2,
            max_threshold: 4,
        },
        1 => CompactionStrategy::Leveled {
            sstable_target_bytes: 4096,
            level_size_multiplier: 2,
        },
        _ => CompactionStrategy::TimeWindow { window_ms: 20 },
    }
}

const START_MICROS: u64 = 1_700_000_000_000_000;

/// `horizon_lag_ms`: in the monotone regime, a purge horizon this far behind the clock from
/// the start (`Op::Horizon` moves or removes it).
fn run(
    strategy_ix: u8,
    monotone: bool,
    gc_grace_ms: u64,
    horizon_lag_ms: Option<u16>,
    ops: Vec<(Op, u16)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let mut config = EngineConfig::new(dir.path());
    config.sync_mode = SyncMode::None;
    config.compaction_bytes_per_sec = 0;
    config.memtable_size_bytes = 4096;
    config.memtable_total_bytes_max = 1 << 20;
    config.sstable_block_size_bytes = 256;
    config.clock = clock.clone();
    config.default_keyspace = KeyspaceOptions {
        compaction: strategy(strategy_ix),
        gc_grace_ms: if monotone { gc_grace_ms } else { u64::MAX / 4 },
        ..KeyspaceOptions::default()
    };
    let mut engine = Some(Engine::open(config.clone()).unwrap());
    // The horizon is not persisted: set again after each reopen, as the node does.
    let lagging = |lag_ms: u16| {
        Arc::new(Lagging {
            clock: clock.clone(),
            lag_ms: u64::from(lag_ms),
        }) as Arc<dyn PurgeHorizon>
    };
    let mut horizon: Option<Arc<dyn PurgeHorizon>> =
        horizon_lag_ms.filter(|_| monotone).map(lagging);
    if let Some(e) = &engine {
        e.set_purge_horizon("default", horizon.clone()).unwrap();
    }
    let mut model: BTreeMap<CellKey, Cell> = BTreeMap::new();
    let mut last_ts = 0u64;
    for (n, (op, jitter)) in ops.into_iter().enumerate() {
        let e = engine.as_ref().unwrap();
        let now_ms = clock.wall_millis();
        let mut ts = || {
            let t = if monotone {
                clock.wall_micros().max(last_ts + 1)
            } else {
                // Unique (counter in the low bits) but in random order.
                (u64::from(jitter) << 16) | n as u64
            };
            last_ts = t;
            Timestamp(t)
        };
        let mut write = |k: u8, c: Cell| {
            e.apply("default", &[(key(k), c.clone())]).unwrap();
            let slot = model.entry(key(k)).or_insert_with(|| c.clone());
            if c.supersedes(slot) {
                *slot = c;
            }
        };
        match op {
            Op::Put(k, v) => write(k, Cell::value(vec![v; 1 + v as usize % 50], ts())),
            Op::Delete(k) => write(k, Cell::tombstone(ts())),
            Op::PutTtl(k, v, ttl) => {
                write(k, Cell::expiring(vec![v; 3], ts(), now_ms + u64::from(ttl)))
            }
            Op::Get(k) => {
                let got = e.get("default", &key(k)).unwrap();
                let got = got.as_ref().and_then(|c| c.live_value(now_ms));
                let want = model.get(&key(k)).and_then(|c| c.live_value(now_ms));
                assert_eq!(got, want, "get of key {k} at op {n}");
                // A batch read around the key (neighbours, the key twice) agrees key by key.
                let batch: Vec<CellKey> = [0u8, 1, 2, 0, 7, 200]
                    .iter()
                    .map(|d| key(k.wrapping_add(*d)))
                    .collect();
                let many = e.get_many("default", &batch).unwrap();
                assert_eq!(many.len(), batch.len());
                for (bk, r) in batch.iter().zip(many) {
                    let got = r.unwrap();
                    let got = got.as_ref().and_then(|c| c.live_value(now_ms));
                    let want = model.get(bk).and_then(|c| c.live_value(now_ms));
                    assert_eq!(got, want, "get_many of {bk:?} at op {n}");
                }
            }
            Op::Scan(a, b) => {
                let (lo, hi) = (key(a).min(key(b)), key(a).max(key(b)));
                let got: Vec<(CellKey, Bytes)> = e
                    .scan(
                        "default",
                        Bound::Included(lo.clone()),
                        Bound::Excluded(hi.clone()),
                    )
                    .unwrap()
                    .map(|r| r.unwrap())
                    .filter_map(|(k, c)| c.live_value(now_ms).cloned().map(|v| (k, v)))
                    .collect();
                let want: Vec<(CellKey, Bytes)> = model
                    .range(lo..hi)
                    .filter_map(|(k, c)| c.live_value(now_ms).cloned().map(|v| (k.clone(), v)))
                    .collect();
                assert_eq!(got, want, "scan at op {n}");
            }
            Op::Flush => e.flush(None).unwrap(),
            Op::Compact => e.compact("default").unwrap(),
            Op::Advance(ms) => clock.advance(Duration::from_millis(u64::from(ms))),
            Op::Reopen => {
                engine.take().unwrap().close().unwrap();
                let e = Engine::open(config.clone()).unwrap();
                e.set_purge_horizon("default", horizon.clone()).unwrap();
                engine = Some(e);
            }
            Op::Alter(s, compressed) => {
                let mut opts = e.keyspace_options("default").unwrap();
                opts.compaction = strategy(s);
                opts.compression = if compressed {
                    Compression::Lz4
                } else {
                    Compression::None
                };
                e.alter_keyspace("default", opts).unwrap();
            }
            // Shuffled timestamps: purging a tombstone and then taking an older write is the
            // documented hazard of any purge, horizon or gc_grace; gc_grace is infinite there.
            Op::Horizon(_) if !monotone => {}
            Op::Horizon(lag) => {
                horizon = lag.map(lagging);
                e.set_purge_horizon("default", horizon.clone()).unwrap();
            }
        }
    }
    // Final full comparison, then once more after a reopen and a major compaction.
    for round in 0..2 {
        let e = engine.as_ref().unwrap();
        let now_ms = clock.wall_millis();
        for (k, c) in &model {
            let got = e.get("default", k).unwrap();
            assert_eq!(
                got.as_ref().and_then(|g| g.live_value(now_ms)),
                c.live_value(now_ms),
                "final get {k:?} round {round}"
            );
        }
        // The same through one batch read of every key ever written, and some never written.
        let mut all: Vec<CellKey> = model.keys().cloned().collect();
        all.extend((0..=255u8).step_by(17).map(key));
        let many = e.get_many("default", &all).unwrap();
        for (k, r) in all.iter().zip(many) {
            let got = r.unwrap();
            assert_eq!(
                got.as_ref().and_then(|g| g.live_value(now_ms)),
                model.get(k).and_then(|c| c.live_value(now_ms)),
                "final get_many {k:?} round {round}"
            );
        }
        assert!(e.stats().poisoned.is_none());
        if round == 0 {
            engine.take().unwrap().close().unwrap();
            let e = Engine::open(config.clone()).unwrap();
            e.set_purge_horizon("default", horizon.clone()).unwrap();
            e.compact("default").unwrap();
            engine = Some(e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_size_tiered(
        monotone in any::<bool>(), gc in 0u64..30, lag in proptest::option::of(0u16..40),
        ops in proptest::collection::vec((op(), any::<u16>()), 1..80),
    ) {
        run(0, monotone, gc, lag, ops);
    }

    #[test]
    fn engine_matches_model_leveled(
        monotone in any::<bool>(), gc in 0u64..30, lag in proptest::option::of(0u16..40),
        ops in proptest::collection::vec((op(), any::<u16>()), 1..80),
    ) {
        run(1, monotone, gc, lag, ops);
    }

    #[test]
    fn engine_matches_model_time_window(
        monotone in any::<bool>(), gc in 0u64..30, lag in proptest::option::of(0u16..40),
        ops in proptest::collection::vec((op(), any::<u16>()), 1..80),
    ) {
        run(2, monotone, gc, lag, ops);
    }
}

#[test]
fn leveled_compaction_keeps_levels_non_overlapping_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.sync_mode = SyncMode::None;
    config.compaction_bytes_per_sec = 0;
    config.memtable_size_bytes = 16 << 10;
    config.default_keyspace.compaction = CompactionStrategy::Leveled {
        sstable_target_bytes: 8 << 10,
        level_size_multiplier: 2,
    };
    let clock: Arc<dyn Clock> = ManualClock::new(START_MICROS);
    config.clock = clock;
    let e = Engine::open(config).unwrap();
    for round in 0..6u64 {
        for i in 0..400u64 {
            let k = (i * 7919 + round * 13) % 1000;
            e.apply(
                "default",
                &[(
                    CellKey::new(Token(k as i64), Bytes::from(format!("{k}"))),
                    Cell::value(vec![b'v'; 64], Timestamp(round * 1000 + i + 1)),
                )],
            )
            .unwrap();
        }
        e.flush(None).unwrap();
    }
    // Levels 1 and up never overlap, also before the major compaction.
    let check_levels = |e: &Engine| {
        let tables = e.tables("default").unwrap();
        for a in &tables {
            for b in &tables {
                if a.id != b.id && a.level == b.level && a.level >= 1 {
                    assert!(
                        a.max_key < b.min_key || b.max_key < a.min_key,
                        "overlap in level {}: {a:?} {b:?}",
                        a.level
                    );
                }
            }
        }
        tables
    };
    let before = check_levels(&e);
    assert!(before.iter().any(|t| t.level >= 1), "{before:?}");
    e.compact("default").unwrap();
    check_levels(&e);
    let s = e.stats();
    let ks = &s.keyspaces["default"];
    assert!(
        ks.sstable_count > 1,
        "outputs are split at the target size: {ks:?}"
    );
    assert!(s.compactions >= 1);
    let n = e
        .scan("default", Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .count();
    let distinct: std::collections::BTreeSet<u64> = (0..6u64)
        .flat_map(|r| (0..400u64).map(move |i| (i * 7919 + r * 13) % 1000))
        .collect();
    assert_eq!(n, distinct.len());
}
