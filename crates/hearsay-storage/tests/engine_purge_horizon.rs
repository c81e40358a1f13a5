//! `Engine::set_purge_horizon` (issue #20's `tombstone_gc = repair`): while a keyspace has a
//! [`PurgeHorizon`], compaction purges a tombstone iff its deletion time is before the
//! horizon of its token (and it shadows nothing outside the compaction); `gc_grace` plays no
//! part. One scenario per test.

use bytes::Bytes;
use hearsay_storage::{
    Cell, CellKey, CompactionStrategy, Engine, EngineConfig, Error, KeyspaceOptions, PurgeHorizon,
    SyncMode,
};
use hearsay_types::{Clock, ManualClock, Timestamp, Token};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const KS: &str = "ks";
const START_MICROS: u64 = 1_700_000_000_000_000;
const GC_GRACE_MS: u64 = 60_000;

/// A horizon per token, set by the test (what repair would learn).
#[derive(Debug, Default)]
struct RepairedBefore {
    by_token: Mutex<BTreeMap<i64, u64>>,
}

impl RepairedBefore {
    fn set(&self, token: i64, before_ms: u64) {
        self.by_token.lock().insert(token, before_ms);
    }
}

impl PurgeHorizon for RepairedBefore {
    fn purge_before_ms(&self, token: Token) -> u64 {
        self.by_token.lock().get(&token.0).copied().unwrap_or(0)
    }
}

fn key(token: i64, name: &str) -> CellKey {
    CellKey::new(Token(token), Bytes::from(name.to_string()))
}

/// An engine whose keyspace `ks` purges after [`GC_GRACE_MS`] unless it has a horizon; only
/// the compactions the test asks for run (size-tiered with a high threshold).
fn open(dir: &Path, clock: &Arc<ManualClock>) -> Engine {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::None;
    c.compaction_bytes_per_sec = 0;
    c.clock = clock.clone();
    let e = Engine::open(c).unwrap();
    e.create_keyspace(
        KS,
        KeyspaceOptions {
            compaction: CompactionStrategy::SizeTiered {
                min_threshold: 32,
                max_threshold: 32,
            },
            gc_grace_ms: GC_GRACE_MS,
            ..KeyspaceOptions::default()
        },
    )
    .unwrap();
    e
}

/// Writes a value and, a second later, its delete, each flushed into its own table; returns
/// the delete's time (ms).
fn write_then_delete(e: &Engine, clock: &ManualClock, k: &CellKey) -> u64 {
    e.apply(
        KS,
        &[(
            k.clone(),
            Cell::value("doomed", Timestamp(clock.wall_micros())),
        )],
    )
    .unwrap();
    e.flush(Some(KS)).unwrap();
    clock.advance(Duration::from_secs(1));
    let deleted_ms = clock.wall_millis();
    e.apply(
        KS,
        &[(k.clone(), Cell::tombstone(Timestamp(clock.wall_micros())))],
    )
    .unwrap();
    e.flush(Some(KS)).unwrap();
    deleted_ms
}

fn is_tombstone(e: &Engine, k: &CellKey) -> bool {
    e.get(KS, k).unwrap().is_some_and(|c| c.is_tombstone())
}

#[test]
fn a_tombstone_past_gc_grace_is_kept_until_the_horizon_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let horizon = Arc::new(RepairedBefore::default());
    e.set_purge_horizon(KS, Some(horizon.clone())).unwrap();
    assert!(e.stats().keyspaces[KS].purge_horizon);
    let k = key(7, "a");
    let deleted_ms = write_then_delete(&e, &clock, &k);
    // Long past gc_grace, but the last repair of token 7 started at the delete: not before it.
    clock.advance(Duration::from_millis(10 * GC_GRACE_MS));
    horizon.set(7, deleted_ms);
    e.compact(KS).unwrap();
    assert!(is_tombstone(&e, &k), "kept: the horizon has not passed it");
    let s = e.stats();
    assert_eq!(
        (s.tombstones_purged, s.tombstones_kept_by_horizon),
        (0, 1),
        "{s:?}"
    );
    assert_eq!(s.keyspaces[KS].tombstones_kept_by_horizon, 1);
    // The next repair moves the horizon past it: the next compaction purges it (and the
    // value it shadowed, merged in the same compaction).
    horizon.set(7, deleted_ms + 1);
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &k).unwrap(), None);
    assert_eq!(e.stats().keyspaces[KS].sstable_count, 0);
    let s = e.stats();
    assert_eq!(s.tombstones_purged, 1);
    assert_eq!(s.tombstones_purged_by_horizon, 1);
    assert_eq!(s.tombstones_kept_by_horizon, 1, "unchanged");
    let ks = &s.keyspaces[KS];
    assert_eq!(
        (
            ks.tombstones_purged,
            ks.tombstones_purged_by_horizon,
            ks.tombstones_kept_by_horizon
        ),
        (1, 1, 1)
    );
}

#[test]
fn under_a_horizon_gc_grace_plays_no_part() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let horizon = Arc::new(RepairedBefore::default());
    e.set_purge_horizon(KS, Some(horizon.clone())).unwrap();
    let k = key(7, "a");
    let deleted_ms = write_then_delete(&e, &clock, &k);
    // Well within gc_grace, but repaired past the delete: purged at once.
    clock.advance(Duration::from_secs(1));
    horizon.set(7, deleted_ms + 1);
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &k).unwrap(), None);
    assert_eq!(e.stats().tombstones_purged_by_horizon, 1);
    // An expired value counts from its expiry, as a tombstone deleted then.
    let t = key(7, "ttl");
    let expires_ms = clock.wall_millis() + 10;
    e.apply(
        KS,
        &[(
            t.clone(),
            Cell::expiring("brief", Timestamp(clock.wall_micros()), expires_ms),
        )],
    )
    .unwrap();
    e.flush(Some(KS)).unwrap();
    clock.advance(Duration::from_secs(1));
    horizon.set(7, expires_ms);
    e.compact(KS).unwrap();
    assert!(is_tombstone(&e, &t), "expired at the horizon: kept");
    horizon.set(7, expires_ms + 1);
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &t).unwrap(), None);
    assert_eq!(e.stats().tombstones_purged_by_horizon, 2);
}

#[test]
fn each_token_has_its_own_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let horizon = Arc::new(RepairedBefore::default());
    e.set_purge_horizon(KS, Some(horizon.clone())).unwrap();
    let (a, b) = (key(-3, "a"), key(9, "b"));
    let deleted_ms = write_then_delete(&e, &clock, &a);
    let b_deleted_ms = write_then_delete(&e, &clock, &b);
    clock.advance(Duration::from_millis(10 * GC_GRACE_MS));
    // Token -3 is repaired past its delete; token 9 only up to before its own.
    horizon.set(-3, deleted_ms + 1);
    horizon.set(9, b_deleted_ms);
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &a).unwrap(), None, "token -3: purged");
    assert!(is_tombstone(&e, &b), "token 9: kept");
    let s = e.stats();
    assert_eq!(
        (s.tombstones_purged_by_horizon, s.tombstones_kept_by_horizon),
        (1, 1)
    );
    horizon.set(9, b_deleted_ms + 1);
    e.compact(KS).unwrap();
    assert_eq!(
        e.get(KS, &b).unwrap(),
        None,
        "token 9: purged once repaired"
    );
    // Another keyspace has no horizon: gc_grace as before.
    assert!(!e.stats().keyspaces["default"].purge_horizon);
}

#[test]
fn a_horizon_still_keeps_a_tombstone_that_shadows_something_outside_the_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let horizon = Arc::new(RepairedBefore::default());
    e.set_purge_horizon(KS, Some(horizon.clone())).unwrap();
    let k = key(7, "a");
    let deleted_ms = clock.wall_millis();
    e.apply(
        KS,
        &[(k.clone(), Cell::tombstone(Timestamp(clock.wall_micros())))],
    )
    .unwrap();
    e.flush(Some(KS)).unwrap();
    // An older version arrives late and sits in the memtable, outside the compaction.
    e.apply(
        KS,
        &[(k.clone(), Cell::value("older", Timestamp(START_MICROS - 1)))],
    )
    .unwrap();
    clock.advance(Duration::from_secs(1));
    horizon.set(7, deleted_ms + 1);
    e.compact(KS).unwrap();
    assert!(is_tombstone(&e, &k), "purging it would bring 'older' back");
    assert_eq!(e.stats().tombstones_purged, 0);
}

#[test]
fn removing_the_horizon_reverts_to_gc_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let horizon = Arc::new(RepairedBefore::default());
    e.set_purge_horizon(KS, Some(horizon)).unwrap();
    let k = key(7, "a");
    write_then_delete(&e, &clock, &k);
    clock.advance(Duration::from_millis(10 * GC_GRACE_MS));
    // Never repaired (horizon 0): kept although past gc_grace.
    e.compact(KS).unwrap();
    assert!(is_tombstone(&e, &k));
    assert_eq!(e.stats().tombstones_kept_by_horizon, 1);
    e.set_purge_horizon(KS, None).unwrap();
    assert!(!e.stats().keyspaces[KS].purge_horizon);
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &k).unwrap(), None, "gc_grace has passed");
    let s = e.stats();
    assert_eq!(s.tombstones_purged, 1);
    assert_eq!(s.tombstones_purged_by_horizon, 0, "purged by gc_grace");
    // And within gc_grace, with no horizon, a tombstone stays.
    let k2 = key(8, "b");
    write_then_delete(&e, &clock, &k2);
    e.compact(KS).unwrap();
    assert!(is_tombstone(&e, &k2));
}

#[test]
fn a_horizon_for_an_unknown_keyspace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = open(dir.path(), &clock);
    let h: Arc<dyn PurgeHorizon> = Arc::new(RepairedBefore::default());
    assert!(matches!(
        e.set_purge_horizon("nope", Some(h)),
        Err(Error::NoSuchKeyspace(_))
    ));
}
