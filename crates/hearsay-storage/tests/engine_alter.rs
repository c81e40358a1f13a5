//! `Engine::alter_keyspace`: a live keyspace's options change without a restart (issue #22,
//! as Cassandra's `ALTER TABLE … WITH compaction`). One scenario per test: every switch
//! among the three strategies on a keyspace with data, compression, gc_grace, a switch into
//! leveled that finds overlapping levels, bad options, a full disk.

use bytes::Bytes;
use hearsay_storage::manifest::Manifest;
use hearsay_storage::sstable::Compression;
use hearsay_storage::{
    Cell, CellKey, CompactionStrategy, Engine, EngineConfig, Error, FaultyFs, KeyspaceOptions,
    NoSpace, SyncMode, TableSummary,
};
use hearsay_types::{Clock, ManualClock, Timestamp, Token};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KS: &str = "ks";
const START_MICROS: u64 = 1_700_000_000_000_000;
const WINDOW_MS: u64 = 60_000;

const STCS: CompactionStrategy = CompactionStrategy::SizeTiered {
    min_threshold: 4,
    max_threshold: 32,
};
const LCS: CompactionStrategy = CompactionStrategy::Leveled {
    sstable_target_bytes: 4096,
    level_size_multiplier: 10,
};
const TWCS: CompactionStrategy = CompactionStrategy::TimeWindow {
    window_ms: WINDOW_MS,
};

fn key(i: u64) -> CellKey {
    // Several keys per token: the (token, key) order matters.
    CellKey::new(
        Token((i / 3) as i64 - 50),
        Bytes::from(format!("key-{i:04}")),
    )
}

fn config(dir: &Path, clock: &Arc<ManualClock>) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::None;
    c.compaction_bytes_per_sec = 0;
    c.clock = clock.clone();
    c
}

fn options(compaction: CompactionStrategy) -> KeyspaceOptions {
    KeyspaceOptions {
        compaction,
        // Tombstones stay: this test is about where tables go, not about purging.
        gc_grace_ms: u64::MAX,
        compression: Compression::Lz4,
    }
}

/// Cells written so far, newest per key, to compare the engine against.
#[derive(Default)]
struct Model {
    cells: BTreeMap<CellKey, Cell>,
    round: u64,
}

impl Model {
    /// One round of 150 writes (a fifth of them deletes) over 300 keys, timestamped by the
    /// clock, then a flush: one new table.
    fn write_round(&mut self, e: &Engine, clock: &ManualClock) {
        self.round += 1;
        let r = self.round;
        let batch: Vec<(CellKey, Cell)> = (0..150u64)
            .map(|i| {
                let k = (i * 7 + r * 31) % 300;
                let ts = Timestamp(clock.wall_micros() + i);
                let cell = if (i + r).is_multiple_of(5) {
                    Cell::tombstone(ts)
                } else {
                    // Part noise (LZ4 finds nothing in it), part run (it compresses well).
                    let noise = (r * 1_000 + k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    Cell::value(format!("r{r} k{k} {noise:016x} {}", "v".repeat(60)), ts)
                };
                (key(k), cell)
            })
            .collect();
        e.apply(KS, &batch).unwrap();
        for (k, c) in batch {
            self.cells.insert(k, c);
        }
        e.flush(Some(KS)).unwrap();
        clock.advance(Duration::from_millis(1));
    }

    /// Every key reads as written, one by one and in one scan.
    fn check(&self, e: &Engine, when: &str) {
        for (k, want) in &self.cells {
            let got = e.get(KS, k).unwrap();
            assert_eq!(got.as_ref(), Some(want), "{when}: get {k:?}");
        }
        let scanned: Vec<(CellKey, Cell)> = e
            .scan(KS, Bound::Unbounded, Bound::Unbounded)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<(CellKey, Cell)> = self
            .cells
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        assert!(scanned == want, "{when}: scan differs from the model");
    }
}

fn window(t: &TableSummary) -> u64 {
    t.max_timestamp.millis() / WINDOW_MS
}

/// No two tables of one level >= 1 overlap.
fn levels_do_not_overlap(tables: &[TableSummary]) -> bool {
    tables.iter().all(|a| {
        tables.iter().all(|b| {
            a.id == b.id
                || a.level != b.level
                || a.level == 0
                || a.max_key < b.min_key
                || b.max_key < a.min_key
        })
    })
}

/// Whether the strategy's background compactions have brought the tables to the shape only
/// that strategy leaves (the test writes two tables in each of four windows first).
fn settled(strategy: &CompactionStrategy, tables: &[TableSummary], now_ms: u64) -> bool {
    match strategy {
        // One bucket (all tables are small): merged whenever four gather.
        CompactionStrategy::SizeTiered { .. } => tables.len() < 4,
        // Level 0 merged up below its trigger, into levels that do not overlap.
        CompactionStrategy::Leveled { .. } => {
            tables.iter().filter(|t| t.level == 0).count() < 4
                && tables.iter().any(|t| t.level >= 1)
                && levels_do_not_overlap(tables)
        }
        // Each closed window one table; at least the four windows written.
        CompactionStrategy::TimeWindow { .. } => {
            let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
            for t in tables {
                *per_window.entry(window(t)).or_default() += 1;
            }
            per_window
                .iter()
                .all(|(w, n)| *w >= now_ms / WINDOW_MS || *n == 1)
                && per_window.len() >= 4
        }
    }
}

/// The shape a major compaction leaves under each strategy.
fn check_major_shape(strategy: &CompactionStrategy, tables: &[TableSummary]) {
    match strategy {
        CompactionStrategy::SizeTiered { .. } => {
            assert_eq!(tables.len(), 1, "{tables:#?}");
            assert_eq!(tables[0].level, 0);
        }
        CompactionStrategy::Leveled { .. } => {
            assert!(tables.len() >= 2, "split at the target: {tables:#?}");
            assert!(tables.iter().all(|t| t.level >= 1), "{tables:#?}");
            assert!(levels_do_not_overlap(tables), "{tables:#?}");
        }
        CompactionStrategy::TimeWindow { .. } => {
            assert!(tables.iter().all(|t| t.level == 0), "{tables:#?}");
            let windows: BTreeSet<u64> = tables.iter().map(window).collect();
            assert_eq!(windows.len(), tables.len(), "one per window: {tables:#?}");
            assert!(tables.len() >= 4, "{tables:#?}");
        }
    }
}

fn wait_until(e: &Engine, what: &str, done: impl Fn(&[TableSummary]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tables = e.tables(KS).unwrap();
        if done(&tables) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; tables {tables:#?}, stats {:?}",
            e.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// S→L, L→T, T→S, S→T, T→L, L→S: each of the six switches, each on a keyspace with data in
/// several tables (in levels when leaving leveled). After each, on the live engine: data
/// intact, the new strategy's background compactions reshape new and old tables, and a
/// major compaction leaves the shape only the new strategy makes; then the options and the
/// data survive a reopen.
#[test]
fn every_strategy_switch_keeps_the_data_and_the_new_strategy_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let cfg = config(dir.path(), &clock);
    let mut e = Engine::open(cfg.clone()).unwrap();
    e.create_keyspace(KS, options(STCS)).unwrap();
    let mut model = Model::default();
    model.write_round(&e, &clock);
    let cycle = [LCS, TWCS, STCS, TWCS, LCS, STCS];
    let mut from = STCS;
    for to in cycle {
        let step = format!("{} -> {}", from.name(), to.name());
        // Flushed tables next to what the last major compaction left (too few for any of
        // the strategies to pick them up on their own).
        model.write_round(&e, &clock);
        model.write_round(&e, &clock);
        let before = e.tables(KS).unwrap();
        assert!(before.len() >= 3, "{step}: {before:#?}");
        if from == LCS {
            assert!(before.iter().any(|t| t.level >= 1), "{step}: {before:#?}");
        }
        e.alter_keyspace(KS, options(to)).unwrap();
        assert_eq!(e.keyspace_options(KS).unwrap(), options(to));
        model.check(&e, &format!("{step}: right after the switch"));
        // New tables, two per time window over four windows; the background compactions
        // of the new strategy settle them together with the old ones.
        for _ in 0..4 {
            model.write_round(&e, &clock);
            model.write_round(&e, &clock);
            clock.advance(Duration::from_millis(WINDOW_MS));
        }
        let now_ms = clock.wall_millis();
        wait_until(&e, &format!("{step}: background compactions"), |t| {
            settled(&to, t, now_ms)
        });
        model.check(&e, &format!("{step}: after background compactions"));
        e.compact(KS).unwrap();
        check_major_shape(&to, &e.tables(KS).unwrap());
        model.check(&e, &format!("{step}: after a major compaction"));
        // Survives a restart (everything above ran on the live engine).
        drop(e); // closes, and releases the directory lock
        e = Engine::open(cfg.clone()).unwrap();
        assert_eq!(e.keyspace_options(KS).unwrap(), options(to), "{step}");
        model.check(&e, &format!("{step}: after reopen"));
        from = to;
    }
    let s = e.stats();
    assert!(s.poisoned.is_none() && s.compaction_errors == 0, "{s:?}");
}

/// Compression changes apply to tables written from then on (flushes and compactions);
/// older tables keep theirs until compacted; a table's compression is in `tables()` and
/// survives a reopen (the manifest records it).
#[test]
fn a_compression_change_applies_to_new_tables_and_is_recorded_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let cfg = config(dir.path(), &clock);
    let e = Engine::open(cfg.clone()).unwrap();
    // Size-tiered with a high threshold: only the compactions asked for run.
    let quiet = CompactionStrategy::SizeTiered {
        min_threshold: 32,
        max_threshold: 32,
    };
    e.create_keyspace(KS, options(quiet)).unwrap();
    let mut model = Model::default();
    model.write_round(&e, &clock);
    let lz4_table = e.tables(KS).unwrap()[0].clone();
    assert_eq!(lz4_table.compression, Compression::Lz4);
    e.alter_keyspace(
        KS,
        KeyspaceOptions {
            compression: Compression::None,
            ..options(quiet)
        },
    )
    .unwrap();
    // The same kind of cells, uncompressed this time: the option reached the writer.
    model.write_round(&e, &clock);
    let tables = e.tables(KS).unwrap();
    let by_id: BTreeMap<u64, &TableSummary> = tables.iter().map(|t| (t.id, t)).collect();
    assert_eq!(by_id[&lz4_table.id].compression, Compression::Lz4);
    let plain = tables.iter().find(|t| t.id != lz4_table.id).unwrap();
    assert_eq!(plain.compression, Compression::None);
    assert!(
        plain.size_bytes > lz4_table.size_bytes * 3 / 2,
        "uncompressed {} vs lz4 {}",
        plain.size_bytes,
        lz4_table.size_bytes
    );
    // Each table's compression survives a reopen.
    drop(e);
    let e = Engine::open(cfg.clone()).unwrap();
    let reopened: BTreeMap<u64, Compression> = e
        .tables(KS)
        .unwrap()
        .iter()
        .map(|t| (t.id, t.compression))
        .collect();
    assert_eq!(
        reopened,
        tables.iter().map(|t| (t.id, t.compression)).collect()
    );
    // A compaction writes with the new option: everything is uncompressed now.
    e.compact(KS).unwrap();
    let tables = e.tables(KS).unwrap();
    assert!(tables.iter().all(|t| t.compression == Compression::None));
    model.check(&e, "after compacting to no compression");
    // And back.
    e.alter_keyspace(KS, options(quiet)).unwrap();
    e.compact(KS).unwrap();
    let tables = e.tables(KS).unwrap();
    assert!(tables.iter().all(|t| t.compression == Compression::Lz4));
    model.check(&e, "after compacting back to LZ4");
}

/// A new `gc_grace` applies from the next compaction.
#[test]
fn a_gc_grace_change_applies_from_the_next_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let e = Engine::open(config(dir.path(), &clock)).unwrap();
    e.create_keyspace(KS, options(STCS)).unwrap();
    let deleted_ms = clock.wall_millis();
    e.apply(
        KS,
        &[(key(1), Cell::tombstone(Timestamp(clock.wall_micros())))],
    )
    .unwrap();
    e.flush(None).unwrap();
    clock.advance(Duration::from_secs(3_600));
    e.compact(KS).unwrap();
    assert!(e.get(KS, &key(1)).unwrap().unwrap().is_tombstone());
    assert_eq!(e.stats().tombstones_purged, 0);
    e.alter_keyspace(
        KS,
        KeyspaceOptions {
            gc_grace_ms: clock.wall_millis() - deleted_ms,
            ..options(STCS)
        },
    )
    .unwrap();
    e.compact(KS).unwrap();
    assert_eq!(e.get(KS, &key(1)).unwrap(), None);
    assert_eq!(e.stats().tombstones_purged, 1);
    assert_eq!(e.stats().keyspaces[KS].tombstones_purged, 1);
}

/// A switch into leveled that finds overlapping tables in a level (not something the engine
/// makes, so the manifest is edited here) moves each table that overlaps an earlier one of
/// its level to level 0, in the manifest as in memory; the data stays, and leveled
/// compaction then merges them up into levels that do not overlap.
#[test]
fn a_switch_to_leveled_sends_overlapping_tables_of_a_level_to_level_0() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let cfg = config(dir.path(), &clock);
    let quiet = CompactionStrategy::SizeTiered {
        min_threshold: 32,
        max_threshold: 32,
    };
    let mut model = Model::default();
    {
        let e = Engine::open(cfg.clone()).unwrap();
        e.create_keyspace(KS, options(quiet)).unwrap();
        for _ in 0..3 {
            model.write_round(&e, &clock);
        }
    }
    // Put all three tables (which overlap: same keys) into level 2.
    let mut m = Manifest::load(dir.path()).unwrap().unwrap();
    let ks = m.keyspaces.iter_mut().find(|k| k.name == KS).unwrap();
    for t in &mut ks.tables {
        t.level = 2;
    }
    m.store(dir.path(), &hearsay_storage::RealFs).unwrap();

    let e = Engine::open(cfg.clone()).unwrap();
    let tables = e.tables(KS).unwrap();
    assert!(tables.iter().all(|t| t.level == 2));
    assert!(!levels_do_not_overlap(&tables));
    model.check(&e, "overlapping level 2");
    // Leveled, but with a large target so that the first pick does not happen before we
    // look: level 2 is far under its size.
    let lcs = CompactionStrategy::Leveled {
        sstable_target_bytes: 1 << 30,
        level_size_multiplier: 10,
    };
    e.alter_keyspace(KS, options(lcs)).unwrap();
    let after = e.tables(KS).unwrap();
    assert_eq!(
        after.iter().filter(|t| t.level == 2).count(),
        1,
        "{after:#?}"
    );
    assert_eq!(
        after.iter().filter(|t| t.level == 0).count(),
        2,
        "{after:#?}"
    );
    assert!(levels_do_not_overlap(&after));
    model.check(&e, "after the switch");
    // The manifest says the same.
    let m = Manifest::load(dir.path()).unwrap().unwrap();
    let rec = m.keyspaces.iter().find(|k| k.name == KS).unwrap();
    let levels: BTreeMap<u64, u32> = rec.tables.iter().map(|t| (t.id, t.level)).collect();
    assert_eq!(
        levels,
        after.iter().map(|t| (t.id, t.level)).collect(),
        "manifest and memory agree"
    );
    assert_eq!(rec.options, options(lcs));
    // One more flush reaches the level 0 trigger; the merge keeps levels non-overlapping.
    model.write_round(&e, &clock);
    model.write_round(&e, &clock);
    wait_until(&e, "level 0 merged up", |t| {
        t.iter().all(|t| t.level >= 1) && levels_do_not_overlap(t)
    });
    model.check(&e, "after leveled compaction");
}

/// Invalid options are refused with an error naming the option (and the keyspace), and
/// change nothing; an unknown keyspace is `NoSuchKeyspace`; the same options are a no-op.
#[test]
fn bad_options_are_rejected_naming_the_option_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MICROS);
    let cfg = config(dir.path(), &clock);
    let e = Engine::open(cfg.clone()).unwrap();
    e.create_keyspace(KS, options(STCS)).unwrap();
    let manifest = std::fs::read(dir.path().join("MANIFEST")).unwrap();
    let bad = [
        (
            CompactionStrategy::SizeTiered {
                min_threshold: 1,
                max_threshold: 32,
            },
            "min_threshold",
        ),
        (
            CompactionStrategy::SizeTiered {
                min_threshold: 8,
                max_threshold: 4,
            },
            "max_threshold",
        ),
        (
            CompactionStrategy::Leveled {
                sstable_target_bytes: 100,
                level_size_multiplier: 10,
            },
            "sstable_target_bytes",
        ),
        (
            CompactionStrategy::Leveled {
                sstable_target_bytes: 1 << 20,
                level_size_multiplier: 1,
            },
            "level_size_multiplier",
        ),
        (CompactionStrategy::TimeWindow { window_ms: 0 }, "window_ms"),
    ];
    for (strategy, option) in bad {
        match e.alter_keyspace(KS, options(strategy)) {
            Err(Error::InvalidArgument(why)) => {
                assert!(why.contains(option), "{why:?} should name {option}");
                assert!(why.contains("'ks'"), "{why:?} should name the keyspace");
            }
            other => panic!("{strategy:?} accepted: {other:?}"),
        }
        // create_keyspace refuses them the same way.
        match e.create_keyspace("other", options(strategy)) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains(option), "{why:?}"),
            other => panic!("{strategy:?} accepted: {other:?}"),
        }
        assert_eq!(e.keyspace_options(KS).unwrap(), options(STCS));
    }
    assert!(matches!(
        e.alter_keyspace("nope", options(LCS)),
        Err(Error::NoSuchKeyspace(_))
    ));
    // The same options again: nothing to do, nothing written.
    e.alter_keyspace(KS, options(STCS)).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("MANIFEST")).unwrap(),
        manifest
    );
    drop(e);
    let e = Engine::open(cfg).unwrap();
    assert_eq!(e.keyspace_options(KS).unwrap(), options(STCS));
    assert_eq!(e.keyspaces(), vec!["default", KS]);
}

/// On a full disk the manifest cannot be rewritten: the change fails with the full disk's
/// error, does not poison the engine, and leaves the old options in force and on disk; it
/// succeeds once space is back.
#[test]
fn a_change_on_a_full_disk_fails_cleanly_and_keeps_the_old_options() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let clock = ManualClock::new(START_MICROS);
    let mut cfg = config(dir.path(), &clock);
    cfg.fs = fs.clone();
    let e = Engine::open(cfg.clone()).unwrap();
    e.create_keyspace(KS, options(STCS)).unwrap();
    fs.no_space("MANIFEST", NoSpace::Write);
    let err = e.alter_keyspace(KS, options(LCS)).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(e.health().poisoned.is_none());
    assert_eq!(e.keyspace_options(KS).unwrap(), options(STCS));
    fs.clear_no_space();
    e.alter_keyspace(KS, options(LCS)).unwrap();
    drop(e);
    let e = Engine::open(cfg).unwrap();
    assert_eq!(e.keyspace_options(KS).unwrap(), options(LCS));
}
