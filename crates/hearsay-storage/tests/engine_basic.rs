//! Engine behaviour, one scenario per test: writes, reads, scans, keyspaces, replay,
//! flush, compaction, TTL and tombstone rules.

use bytes::Bytes;
use hearsay_storage::{
    Cell, CellKey, CompactionStrategy, Engine, EngineConfig, Error, KeyspaceOptions, SyncMode,
};
use hearsay_types::{ManualClock, Timestamp, Token};
use std::ops::Bound;
use std::time::Duration;

fn key(i: i64) -> CellKey {
    CellKey::new(Token(i), Bytes::from(format!("k{i}")))
}

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::None;
    c.compaction_bytes_per_sec = 0;
    c
}

fn val(e: &Engine, ks: &str, i: i64) -> Option<Bytes> {
    e.get(ks, &key(i)).unwrap().and_then(|c| c.value)
}

fn scan_all(e: &Engine, ks: &str) -> Vec<(CellKey, Cell)> {
    e.scan(ks, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn apply_get_scan_newest_wins_and_tombstones_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(e.keyspaces(), vec!["default".to_string()]);
    e.apply(
        "default",
        &[
            (key(1), Cell::value("a", Timestamp(10))),
            (key(2), Cell::value("b", Timestamp(10))),
            (key(3), Cell::value("c", Timestamp(10))),
        ],
    )
    .unwrap();
    // An older write arriving later loses; a newer delete wins.
    e.apply("default", &[(key(1), Cell::value("old", Timestamp(5)))])
        .unwrap();
    e.apply("default", &[(key(2), Cell::tombstone(Timestamp(11)))])
        .unwrap();
    assert_eq!(val(&e, "default", 1).unwrap(), "a");
    let t = e.get("default", &key(2)).unwrap().unwrap();
    assert!(t.is_tombstone());
    assert_eq!(e.get("default", &key(9)).unwrap(), None);
    let all = scan_all(&e, "default");
    assert_eq!(all.len(), 3);
    assert!(all[1].1.is_tombstone());
    let some: Vec<_> = e
        .scan("default", Bound::Excluded(key(1)), Bound::Included(key(3)))
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(some, vec![key(2), key(3)]);
}

#[test]
fn keyspaces_are_separate_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(config(dir.path())).unwrap();
        e.create_keyspace("users", KeyspaceOptions::default())
            .unwrap();
        assert!(matches!(
            e.create_keyspace("users", KeyspaceOptions::default()),
            Err(Error::KeyspaceExists(_))
        ));
        e.apply("users", &[(key(1), Cell::value("u", Timestamp(1)))])
            .unwrap();
        assert_eq!(val(&e, "default", 1), None);
        assert!(matches!(
            e.get("nope", &key(1)),
            Err(Error::NoSuchKeyspace(_))
        ));
        e.create_keyspace("gone", KeyspaceOptions::default())
            .unwrap();
        e.apply("gone", &[(key(7), Cell::value("g", Timestamp(1)))])
            .unwrap();
        e.drop_keyspace("gone").unwrap();
        assert!(e.drop_keyspace("default").is_err());
    }
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(e.keyspaces(), vec!["default", "users"]);
    assert_eq!(val(&e, "users", 1).unwrap(), "u");
    // A re-created keyspace of a dropped name does not see the old commit-log records.
    e.create_keyspace("gone", KeyspaceOptions::default())
        .unwrap();
    assert_eq!(val(&e, "gone", 7), None);
}

#[test]
fn replay_restores_unflushed_writes_in_every_sync_mode() {
    for mode in [
        SyncMode::None,
        SyncMode::Batch,
        SyncMode::Periodic { interval_ms: 20 },
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut c = config(dir.path());
            c.sync_mode = mode;
            let e = Engine::open(c).unwrap();
            for i in 0..200 {
                e.apply(
                    "default",
                    &[(key(i), Cell::value(format!("v{i}"), Timestamp(1)))],
                )
                .unwrap();
            }
            e.apply("default", &[(key(5), Cell::tombstone(Timestamp(2)))])
                .unwrap();
        }
        let e = Engine::open(config(dir.path())).unwrap();
        assert_eq!(e.stats().replayed_records, 201, "{mode:?}");
        assert_eq!(val(&e, "default", 150).unwrap(), "v150");
        assert!(e.get("default", &key(5)).unwrap().unwrap().is_tombstone());
        assert_eq!(scan_all(&e, "default").len(), 200);
    }
}

#[test]
fn flush_writes_tables_survives_reopen_and_frees_commitlog_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut c = config(dir.path());
        c.commitlog_segment_bytes = 64 << 10;
        let e = Engine::open(c).unwrap();
        for i in 0..2000 {
            e.apply(
                "default",
                &[(key(i), Cell::value(vec![b'x'; 100], Timestamp(1)))],
            )
            .unwrap();
        }
        assert!(e.stats().commitlog_segments > 2);
        e.flush(None).unwrap();
        let s = e.stats();
        assert_eq!(s.keyspaces["default"].sstable_count, 1);
        assert_eq!(s.keyspaces["default"].memtable_bytes, 0);
        assert_eq!(s.commitlog_segments, 1, "flushed segments are deleted");
        assert!(s.disk_bytes_written > s.user_bytes_written);
        // Overwrite a few after the flush: memtable and table must merge.
        e.apply("default", &[(key(3), Cell::value("new", Timestamp(2)))])
            .unwrap();
    }
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(e.stats().replayed_records, 1);
    assert_eq!(val(&e, "default", 3).unwrap(), "new");
    assert_eq!(val(&e, "default", 4).unwrap().len(), 100);
    let all = scan_all(&e, "default");
    assert_eq!(all.len(), 2000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn memtable_threshold_flushes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memtable_size_bytes = 64 << 10;
    // Total budget = one memtable: every write made while a flush is pending must stall
    // (the flush takes milliseconds, the next write comes microseconds after the rotation).
    c.memtable_total_bytes_max = 64 << 10;
    let e = Engine::open(c).unwrap();
    for i in 0..3000 {
        e.apply(
            "default",
            &[(key(i), Cell::value(vec![b'y'; 100], Timestamp(1)))],
        )
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while e.stats().flushes == 0 {
        assert!(std::time::Instant::now() < deadline, "no background flush");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in (0..3000).step_by(97) {
        assert_eq!(val(&e, "default", i).unwrap().len(), 100);
    }
    assert_eq!(scan_all(&e, "default").len(), 3000);
    let s = e.stats();
    assert!(s.write_stalls > 0, "stalls are counted: {s:?}");
    assert!(s.memtable_bytes_total <= (64 << 10) + 4096);
}

#[test]
fn size_tiered_compaction_merges_flushed_tables() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path())).unwrap();
    for round in 0..4u64 {
        for i in 0..100 {
            e.apply(
                "default",
                &[(
                    key(i),
                    Cell::value(format!("r{round}"), Timestamp(round + 1)),
                )],
            )
            .unwrap();
        }
        e.flush(Some("default")).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while e.stats().keyspaces["default"].sstable_count != 1 || e.stats().compactions == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction: {:?}",
            e.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(e.stats().compactions >= 1);
    assert_eq!(val(&e, "default", 42).unwrap(), "r3");
    assert_eq!(e.stats().keyspaces["default"].sstable_entries, 100);
}

#[test]
fn expired_cells_become_tombstones_and_are_purged_after_gc_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000_000);
    let mut c = config(dir.path());
    c.clock = clock.clone();
    let e = Engine::open(c).unwrap();
    e.create_keyspace(
        "ttl",
        KeyspaceOptions {
            gc_grace_ms: 60_000,
            ..KeyspaceOptions::default()
        },
    )
    .unwrap();
    let now_ms = 1_000_000;
    e.apply(
        "ttl",
        &[
            (
                key(1),
                Cell::expiring("soon", Timestamp(now_ms * 1000), now_ms + 10),
            ),
            (key(2), Cell::value("forever", Timestamp(now_ms * 1000))),
        ],
    )
    .unwrap();
    e.flush(None).unwrap();
    clock.advance(Duration::from_millis(20));
    e.compact("ttl").unwrap();
    let c1 = e.get("ttl", &key(1)).unwrap().unwrap();
    assert!(c1.is_tombstone(), "expired value became a tombstone");
    assert_eq!(c1.deletion_time_ms(), now_ms + 10);
    assert_eq!(e.stats().expired_converted, 1);
    // Past gc_grace the tombstone goes.
    clock.advance(Duration::from_millis(60_000));
    e.compact("ttl").unwrap();
    assert_eq!(e.get("ttl", &key(1)).unwrap(), None);
    assert_eq!(val(&e, "ttl", 2).unwrap(), "forever");
    assert_eq!(e.stats().tombstones_purged, 1);
}

#[test]
fn tombstone_is_kept_while_an_older_version_may_live_outside_the_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000_000_000);
    let mut c = config(dir.path());
    c.clock = clock.clone();
    // Leveled so that a major compaction of L0 can be arranged around an older table... we use
    // size-tiered with a high threshold and drive compactions by hand instead.
    c.default_keyspace = KeyspaceOptions {
        gc_grace_ms: 0,
        compaction: CompactionStrategy::SizeTiered {
            min_threshold: 32,
            max_threshold: 32,
        },
        ..KeyspaceOptions::default()
    };
    let e = Engine::open(c).unwrap();
    // Old value flushed into table A.
    e.apply("default", &[(key(1), Cell::value("old", Timestamp(1_000)))])
        .unwrap();
    e.flush(None).unwrap();
    // The delete stays in the memtable while compaction runs over A alone: it must not
    // matter — the value is superseded but only the tombstone knows.
    e.apply("default", &[(key(1), Cell::tombstone(Timestamp(2_000)))])
        .unwrap();
    e.compact("default").unwrap();
    assert!(e.get("default", &key(1)).unwrap().unwrap().is_tombstone());
    // Flush the tombstone into its own table B; a major compaction merges A and B, and with
    // gc_grace 0 both go.
    e.flush(None).unwrap();
    e.compact("default").unwrap();
    assert_eq!(e.get("default", &key(1)).unwrap(), None);
    assert_eq!(e.stats().keyspaces["default"].sstable_count, 0);
}

#[test]
fn engine_and_scan_iterators_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Engine>();
    send::<hearsay_storage::ScanIter>();
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(Engine::open(config(dir.path())).unwrap());
    e.apply("default", &[(key(1), Cell::value("a", Timestamp(1)))])
        .unwrap();
    let it = e
        .scan("default", Bound::Unbounded, Bound::Unbounded)
        .unwrap();
    // A scan is a snapshot: a later write does not appear in it.
    e.apply("default", &[(key(2), Cell::value("b", Timestamp(1)))])
        .unwrap();
    let n = std::thread::spawn(move || it.count()).join().unwrap();
    assert_eq!(n, 1);
    e.close().unwrap();
    assert!(matches!(
        e.apply("default", &[(key(3), Cell::value("c", Timestamp(1)))]),
        Err(Error::Closed)
    ));
}

#[test]
fn rate_limited_compaction_does_not_block_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // 256 KiB/s against ~1 MiB of tables: the compaction takes seconds.
    c.compaction_bytes_per_sec = 256 << 10;
    c.default_keyspace.compression = hearsay_storage::Compression::None;
    c.default_keyspace.compaction = CompactionStrategy::SizeTiered {
        min_threshold: 32,
        max_threshold: 32,
    };
    let e = std::sync::Arc::new(Engine::open(c).unwrap());
    for round in 0..4u64 {
        for i in 0..2000 {
            e.apply(
                "default",
                &[(key(i), Cell::value(vec![b'z'; 128], Timestamp(round + 1)))],
            )
            .unwrap();
        }
        e.flush(None).unwrap();
    }
    let started = std::time::Instant::now();
    let major = {
        let e = e.clone();
        std::thread::spawn(move || e.compact("default"))
    };
    // Writes and reads proceed while the compaction runs.
    for i in 0..500 {
        e.apply(
            "default",
            &[(key(10_000 + i), Cell::value("w", Timestamp(9)))],
        )
        .unwrap();
        assert!(e.get("default", &key(i % 2000)).unwrap().is_some());
    }
    assert_eq!(
        e.stats().compactions,
        0,
        "the writes above finished while the compaction was still running"
    );
    major.join().unwrap().unwrap();
    let s = e.stats();
    assert_eq!(s.compactions, 1);
    // The limiter held the compaction to about its rate.
    let secs = s.compaction_bytes_written as f64 / (256 << 10) as f64;
    assert!(
        started.elapsed().as_secs_f64() >= secs * 0.8,
        "compaction of {} bytes took {:?}, faster than the rate limit allows",
        s.compaction_bytes_written,
        started.elapsed()
    );
    assert_eq!(val(&e, "default", 7).unwrap().len(), 128);
}

#[test]
fn scans_see_whole_batches_while_memtables_flush_and_compact() {
    const KEYS: i64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memtable_size_bytes = 32 << 10;
    c.default_keyspace.compaction = CompactionStrategy::SizeTiered {
        min_threshold: 2,
        max_threshold: 4,
    };
    let e = std::sync::Arc::new(Engine::open(c).unwrap());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 1..=400u64 {
                let v = Bytes::from(format!("{i:08}"));
                let batch: Vec<_> = (0..KEYS)
                    .map(|k| (key(k), Cell::value(v.clone(), Timestamp(i))))
                    .collect();
                e.apply("default", &batch).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut scans = 0;
    let mut last_seen = 0u64;
    while !done.load(std::sync::atomic::Ordering::SeqCst) || scans == 0 {
        let cells: Vec<_> = scan_all(&e, "default");
        if cells.is_empty() {
            continue;
        }
        assert_eq!(cells.len(), KEYS as usize, "every key of the batch or none");
        let first = &cells[0].1;
        assert!(
            cells.iter().all(|(_, c)| c == first),
            "a scan saw part of a batch: {:?}",
            cells.iter().map(|(_, c)| c.timestamp.0).collect::<Vec<_>>()
        );
        assert!(
            first.timestamp.0 >= last_seen,
            "a later scan went back in time"
        );
        last_seen = first.timestamp.0;
        // Point reads never lose a key while memtables are swapped for tables either.
        let got = e
            .get("default", &key(KEYS - 1))
            .unwrap()
            .expect("key vanished");
        assert!(got.timestamp.0 >= last_seen, "a get went back in time");
        scans += 1;
    }
    writer.join().unwrap();
    assert!(e.stats().flushes > 0);
}

#[test]
fn dropping_a_keyspace_while_it_flushes_and_compacts_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memtable_size_bytes = 8 << 10;
    let e = Engine::open(c).unwrap();
    for round in 0..5 {
        let opts = KeyspaceOptions {
            compaction: CompactionStrategy::SizeTiered {
                min_threshold: 2,
                max_threshold: 4,
            },
            ..KeyspaceOptions::default()
        };
        e.create_keyspace("doomed", opts).unwrap();
        for i in 0..600 {
            e.apply(
                "doomed",
                &[(key(i), Cell::value(vec![b'd'; 64], Timestamp(round + 1)))],
            )
            .unwrap();
        }
        // Flushes and compactions of "doomed" are in flight now.
        e.drop_keyspace("doomed").unwrap();
        assert!(matches!(
            e.apply("doomed", &[(key(1), Cell::value("x", Timestamp(9)))]),
            Err(Error::NoSuchKeyspace(_))
        ));
    }
    e.apply("default", &[(key(1), Cell::value("ok", Timestamp(1)))])
        .unwrap();
    e.flush(None).unwrap();
    assert!(e.stats().poisoned.is_none(), "{:?}", e.stats().poisoned);
    drop(e);
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(e.keyspaces(), vec!["default"]);
    let dirs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|d| {
            d.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ks-")
        })
        .count();
    assert_eq!(dirs, 1, "dropped keyspaces leave no directories");
}

/// Four flushed tables of ~256 KiB each under a compaction rate of 512 KiB/s: the size-tiered
/// compaction they trigger takes about two seconds, long enough to act while it runs.
fn engine_with_slow_background_compaction(dir: &std::path::Path) -> Engine {
    let mut c = config(dir);
    c.compaction_bytes_per_sec = 512 << 10;
    c.default_keyspace.compression = hearsay_storage::Compression::None;
    c.default_keyspace.compaction = CompactionStrategy::SizeTiered {
        min_threshold: 4,
        max_threshold: 32,
    };
    assert!(c.compaction_background_priority, "on by default");
    let e = Engine::open(c).unwrap();
    write_rounds(&e, 0..4);
    wait_for(&e, "a compaction at idle priority", |s| {
        s.compaction_background_running
    });
    e
}

/// Each round overwrites keys 0..2000 with the round's number and flushes one table.
fn write_rounds(e: &Engine, rounds: std::ops::Range<u64>) {
    for round in rounds {
        for i in 0..2000 {
            let mut v = vec![b'z'; 128];
            v[..8].copy_from_slice(&round.to_be_bytes());
            e.apply("default", &[(key(i), Cell::value(v, Timestamp(round + 1)))])
                .unwrap();
        }
        e.flush(None).unwrap();
    }
}

fn wait_for(e: &Engine, what: &str, done: impl Fn(&hearsay_storage::EngineStats) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = e.stats();
        if done(&s) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn round_of(e: &Engine, i: i64) -> u64 {
    let v = val(e, "default", i).unwrap();
    u64::from_be_bytes(v[..8].try_into().unwrap())
}

/// Scheduling policy of every live thread of this process whose name starts `prefix`
/// (field 41 of /proc/self/task/*/stat; 5 = SCHED_IDLE).
#[cfg(target_os = "linux")]
fn thread_policies(prefix: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        if comm.trim_end().starts_with(prefix) {
            // Fields after the parenthesised name start at field 3.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            out.push(rest.split(' ').nth(41 - 3).unwrap().parse().unwrap());
        }
    }
    out
}

#[test]
fn automatic_compaction_runs_at_idle_priority_and_is_promoted_when_work_queues_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_slow_background_compaction(dir.path());
    #[cfg(target_os = "linux")]
    {
        // Every engine's idle worker (tests run in parallel) is SCHED_IDLE, its normal
        // compaction thread is not. A worker another test just started may not have lowered
        // its priority yet, hence the poll.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let idle = thread_policies("hearsay-idle-co");
            if !idle.is_empty() && idle.iter().all(|&p| p == 5) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{idle:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let normal = thread_policies("hearsay-compact");
        assert!(
            !normal.is_empty() && normal.iter().all(|&p| p == 0),
            "{normal:?}"
        );
    }
    assert_eq!(e.stats().compactions_promoted, 0);
    // Four more tables while it runs: a second bucket is ready behind it.
    write_rounds(&e, 4..8);
    wait_for(&e, "promotion", |s| s.compactions_promoted >= 1);
    // The promoted run finishes on the normal thread, then the rest merges too.
    wait_for(&e, "merge of everything", |s| {
        s.compactions >= 2
            && s.keyspaces["default"].sstable_count == 1
            && !s.compaction_background_running
    });
    let s = e.stats();
    assert!(s.compactions_background >= 2, "{s:?}");
    assert_eq!(s.keyspaces["default"].sstable_entries, 2000);
    for i in [0, 7, 1999] {
        assert_eq!(round_of(&e, i), 7);
    }
}

#[test]
fn a_major_compaction_request_promotes_the_idle_one_and_both_complete() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_slow_background_compaction(dir.path());
    write_rounds(&e, 4..5);
    e.compact("default").unwrap();
    let s = e.stats();
    assert!(s.compactions_promoted >= 1, "{s:?}");
    assert_eq!(s.keyspaces["default"].sstable_count, 1, "{s:?}");
    assert_eq!(round_of(&e, 42), 4);
    assert!(!s.compaction_background_running);
}

#[test]
fn with_background_priority_off_compactions_run_on_the_normal_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_background_priority = false;
    let e = Engine::open(c).unwrap();
    write_rounds(&e, 0..4);
    wait_for(&e, "compaction", |s| {
        s.compactions >= 1 && s.keyspaces["default"].sstable_count == 1
    });
    assert_eq!(e.stats().compactions_background, 0);
    assert_eq!(round_of(&e, 3), 3);
    #[cfg(target_os = "linux")]
    {
        let normal = thread_policies("hearsay-compact");
        assert!(normal.iter().all(|&p| p == 0), "{normal:?}");
    }
}

/// Four tables of keys 0..2000 that nothing compacts on its own. Flushes do not warm the
/// cache, so what is cached is what reads and the compaction put there.
fn engine_with_four_tables(dir: &std::path::Path) -> Engine {
    let mut c = config(dir);
    c.flush_warm_cache = false;
    c.default_keyspace.compaction = CompactionStrategy::SizeTiered {
        min_threshold: 32,
        max_threshold: 32,
    };
    let e = Engine::open(c).unwrap();
    write_rounds(&e, 0..4);
    assert_eq!(e.stats().keyspaces["default"].sstable_count, 4);
    e
}

#[test]
fn compaction_keeps_hot_blocks_cached_and_leaves_cold_ones_out() {
    // Hot: every key was read, so every input block is cached.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_four_tables(dir.path());
    for i in 0..2000 {
        assert_eq!(round_of(&e, i), 3);
    }
    e.compact("default").unwrap();
    let s = e.stats();
    assert_eq!(s.keyspaces["default"].sstable_count, 1);
    assert!(s.compaction_blocks_warmed > 0, "{s:?}");
    // Every block of the output, as the next check shows.
    let all = s.compaction_blocks_warmed;
    // Reading everything again finds every block of the new table in the cache, with the
    // same contents a read from the file gives.
    let misses = s.block_cache.misses;
    for i in 0..2000 {
        assert_eq!(round_of(&e, i), 3);
    }
    assert_eq!(e.stats().block_cache.misses, misses, "{:?}", e.stats());
    drop(e);

    // Cold: nothing was read, so the compaction adds nothing to the cache.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_four_tables(dir.path());
    e.compact("default").unwrap();
    let s = e.stats();
    assert_eq!(s.compaction_blocks_warmed, 0);
    assert_eq!(s.block_cache.inserts, 0, "{s:?}");
    // Partly hot: the first quarter of the token range read, the rest cold; the new table's
    // warmed blocks cover about that quarter.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_four_tables(dir.path());
    for i in 0..500 {
        round_of(&e, i);
    }
    e.compact("default").unwrap();
    let warmed = e.stats().compaction_blocks_warmed;
    assert!(
        warmed >= all / 8 && warmed * 2 < all,
        "{warmed} warmed of {all} blocks"
    );
}

#[test]
fn closing_during_an_idle_priority_compaction_stops_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_slow_background_compaction(dir.path());
    // close() joins both compaction threads: the idle worker hands its run back between
    // two cells and the normal thread deletes the partial output.
    e.close().unwrap();
    assert_eq!(e.stats().compactions, 0, "it was stopped, not finished");
    drop(e);
    // Its partial output is gone; the four inputs are intact.
    let e = Engine::open(config(dir.path())).unwrap();
    let ks = &e.stats().keyspaces["default"];
    assert_eq!(ks.sstable_count, 4, "{ks:?}");
    for i in [0, 999, 1999] {
        assert_eq!(round_of(&e, i), 3);
    }
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_flush_puts_what_it_wrote_into_the_cache() {
    // On (the default): reading every key just flushed misses the cache nowhere, and what
    // the cache holds reads the same as the file.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path())).unwrap();
    write_rounds(&e, 0..1);
    let s = e.stats();
    assert!(s.flush_blocks_warmed > 0, "{s:?}");
    assert_eq!(s.block_cache.inserts, s.flush_blocks_warmed);
    for i in 0..2000 {
        assert_eq!(round_of(&e, i), 0);
    }
    assert_eq!(e.stats().block_cache.misses, s.block_cache.misses);
    drop(e);
    // After a restart the table is read from the file: same answers.
    let e = Engine::open(config(dir.path())).unwrap();
    for i in 0..2000 {
        assert_eq!(round_of(&e, i), 0);
    }
    assert!(e.stats().block_cache.misses > 0);
    drop(e);

    // Off: the same reads miss.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.flush_warm_cache = false;
    let e = Engine::open(c).unwrap();
    write_rounds(&e, 0..1);
    assert_eq!(e.stats().flush_blocks_warmed, 0);
    let misses = e.stats().block_cache.misses;
    for i in 0..2000 {
        assert_eq!(round_of(&e, i), 0);
    }
    assert!(e.stats().block_cache.misses > misses);
    drop(e);

    // A memtable larger than a third of the cache is not warmed: one flush must not push
    // out most of the hot set.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.block_cache_bytes = 512 << 10;
    let e = Engine::open(c).unwrap();
    write_rounds(&e, 0..1);
    let s = e.stats();
    assert_eq!(s.flush_blocks_warmed, 0, "{s:?}");
}
