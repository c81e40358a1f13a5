//! A full disk, gracefully (issue #17): `ENOSPC` on a commit-log segment creation, an SSTable
//! or the manifest is an operating error, never poisoning; flushes and stops on a full disk
//! finish cleanly; an engine opens on a full disk, serves reads, refuses writes with the
//! `ENOSPC` error and takes them again once space is freed; nothing acknowledged is lost.
//! Faults come through the `FaultyFs` seam; `engine_full_disk_tmpfs.rs` is the end-to-end
//! proof on a real 8 MiB tmpfs (root only).

use bytes::Bytes;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, Error, FaultyFs, NoSpace, SyncMode};
use hearsay_types::{Timestamp, Token};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(i: i64) -> CellKey {
    CellKey::new(Token(i), Bytes::from(format!("k{i}")))
}

/// `len` incompressible bytes determined by `i` (xorshift), so SSTables cannot shrink them.
fn value(i: i64, len: usize) -> Bytes {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn config(dir: &Path, fs: &Arc<FaultyFs>) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::Batch;
    c.compaction_bytes_per_sec = 0;
    c.commitlog_segment_bytes = 64 << 10;
    c.fs = fs.clone();
    c
}

fn put(e: &Engine, i: i64, len: usize) -> Result<(), Error> {
    e.apply(
        "default",
        &[(key(i), Cell::value(value(i, len), Timestamp(1)))],
    )
}

/// Every key in `keys` reads back with its value.
fn assert_all_present(e: &Engine, keys: impl IntoIterator<Item = i64>, len: usize) {
    for i in keys {
        let got = e.get("default", &key(i)).unwrap();
        assert_eq!(
            got.and_then(|c| c.value),
            Some(value(i, len)),
            "acknowledged key {i} lost or wrong"
        );
    }
}

fn assert_disk_full(e: &Error) {
    assert!(e.is_disk_full(), "expected a full-disk error, got {e:?}");
    match e {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{e}")
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(
        e.to_string().contains("No space left on device"),
        "the error names the full disk: {e}"
    );
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_in(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A rotation that cannot create the next segment fails that write (`StorageFull`), does not
/// poison, retries on the next write, and loses nothing acknowledged; for each way a segment
/// creation can meet a full disk.
#[test]
fn full_disk_at_segment_creation_fails_the_write_without_poisoning() {
    for at in [NoSpace::Create, NoSpace::Write, NoSpace::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let e = Engine::open(config(dir.path(), &fs)).unwrap();
        put(&e, 0, 1000).unwrap();
        let first = files_in(dir.path(), ".log");
        assert_eq!(first.len(), 1);
        assert!(first[0].ends_with(format!("commitlog-{:020}.log", 0)));
        if at == NoSpace::Sync {
            // Only the segments to come: the active one's fsyncs cover acknowledged writes
            // (failing them poisons, see the next test).
            for id in 1..=5 {
                fs.no_space(&format!("commitlog-{id:020}"), at);
            }
        } else {
            fs.no_space("commitlog-", at);
        }
        let mut acked = vec![0];
        let mut failed = None;
        for i in 1..200 {
            match put(&e, i, 1000) {
                Ok(()) => acked.push(i),
                Err(err) => {
                    failed = Some((i, err));
                    break;
                }
            }
        }
        let (failed_key, err) = failed.expect("a rotation within 200 writes of 1 KB");
        assert_disk_full(&err);
        assert!(fs.no_space_hits() > 0);
        let h = e.health();
        assert_eq!(
            h.poisoned, None,
            "{at:?}: a failed segment creation poisoned"
        );
        let full = h.disk_full.expect("disk_full is set");
        assert!(full.writes_failing && !full.flushes_failing, "{full:?}");
        assert!(full.error.contains("No space left on device"), "{full}");
        assert_eq!(e.stats().disk_full, Some(full));
        // The next write retries the creation, and fails the same way.
        assert_disk_full(&put(&e, failed_key, 1000).unwrap_err());
        assert_all_present(&e, acked.iter().copied(), 1000);
        // No half-created segment is left behind.
        for seg in files_in(dir.path(), ".log") {
            assert!(std::fs::metadata(&seg).unwrap().len() > 20, "{seg:?}");
        }
        // Space is back: writes succeed, the state clears, no restart.
        fs.clear_no_space();
        put(&e, failed_key, 1000).unwrap();
        acked.push(failed_key);
        assert_eq!(e.health().disk_full, None);
        for i in 1000..1010 {
            put(&e, i, 1000).unwrap();
            acked.push(i);
        }
        e.close().unwrap();
        drop(e);
        let e = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap();
        assert_all_present(&e, acked.iter().copied(), 1000);
        assert!(e.get("default", &key(500)).unwrap().is_none());
    }
}

/// An `ENOSPC` from the fsync of a segment that holds acknowledged writes is a durability
/// failure like any other failed fsync: it poisons.
#[test]
fn full_disk_at_fsync_of_acknowledged_writes_still_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    put(&e, 0, 10).unwrap();
    fs.no_space("commitlog-", NoSpace::Sync);
    assert!(put(&e, 1, 10).is_err());
    assert!(matches!(put(&e, 2, 10), Err(Error::Poisoned(_))));
    assert!(e.health().poisoned.unwrap().contains("fsync"));
}

/// A flush that meets a full disk (the SSTable's writes, its fsync, or the manifest update
/// installing it) fails with `StorageFull` and poisons nothing; the manifest names no partial
/// table and no file is left; the data stays readable and in the commit log; the flush
/// succeeds once space is back, and everything survives a restart.
#[test]
fn flush_on_a_full_disk_keeps_the_data_and_succeeds_later() {
    for (name, at) in [
        (".sst", NoSpace::Create),
        (".sst", NoSpace::Write),
        (".sst", NoSpace::Sync),
        ("MANIFEST", NoSpace::Create),
        ("MANIFEST", NoSpace::Write),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let e = Engine::open(config(dir.path(), &fs)).unwrap();
        for i in 0..50 {
            put(&e, i, 100).unwrap();
        }
        fs.no_space(name, at);
        let err = e.flush(None).unwrap_err();
        assert_disk_full(&err);
        assert!(err.to_string().contains("flush failed"), "{err}");
        let h = e.health();
        assert_eq!(h.poisoned, None, "{name} {at:?}");
        assert!(h.disk_full.unwrap().flushes_failing);
        assert!(e.tables("default").unwrap().is_empty());
        assert_eq!(
            files_in(dir.path(), ".sst"),
            Vec::<PathBuf>::new(),
            "{name} {at:?}"
        );
        assert_eq!(
            files_in(dir.path(), ".tmp"),
            Vec::<PathBuf>::new(),
            "{name} {at:?}"
        );
        assert_all_present(&e, 0..50, 100);
        // Writes still go to the commit log; the disk stays "full" while flushes fail.
        put(&e, 50, 100).unwrap();
        assert!(e.health().disk_full.unwrap().flushes_failing);
        // A stop now (no flush) and a start replay everything from the commit log; the
        // manifest names no table.
        e.close().unwrap();
        drop(e);
        let e = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap();
        assert!(e.tables("default").unwrap().is_empty());
        assert!(e.stats().replayed_records >= 51);
        assert_all_present(&e, 0..51, 100);
        e.flush(None).unwrap();
        assert_eq!(e.tables("default").unwrap().len(), 1);
    }
}

/// The same, but with a clean stop while the disk is full, then the flush after space returns.
#[test]
fn flush_succeeds_once_space_is_back_and_clears_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    for i in 0..50 {
        put(&e, i, 100).unwrap();
    }
    fs.no_space("", NoSpace::Write);
    assert_disk_full(&e.flush(None).unwrap_err());
    assert_eq!(files_in(dir.path(), ".sst"), Vec::<PathBuf>::new());
    fs.clear_no_space();
    e.flush(None).unwrap();
    assert_eq!(e.tables("default").unwrap().len(), 1);
    assert_eq!(e.health().disk_full, None);
    assert_eq!(e.health().poisoned, None);
    drop(e);
    let e = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap();
    assert_all_present(&e, 0..50, 100);
    assert_eq!(e.tables("default").unwrap().len(), 1);
}

/// SIGTERM on a full disk: `flush` fails with `StorageFull` (not poisoned), `close` is clean,
/// `shutdown` (flush, then close) is `Ok`. The engine then opens on the still-full disk,
/// serves every acknowledged key, refuses writes with `ENOSPC` and sets `disk_full`, takes
/// writes again once space is back, and a restart loses nothing.
#[test]
fn stop_and_start_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    for i in 0..100 {
        put(&e, i, 1000).unwrap();
    }
    // Everything new is out of space: segments, SSTables, MANIFEST.tmp.
    fs.no_space("", NoSpace::Create);
    assert_disk_full(&e.flush(None).unwrap_err());
    assert_eq!(e.health().poisoned, None);
    e.close().unwrap();
    drop(e);
    // `shutdown` is the stop a node makes: a full disk is no error there.
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    e.shutdown().unwrap();
    drop(e);

    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    assert_eq!(e.health(), Default::default(), "nothing has failed yet");
    assert_all_present(&e, 0..100, 1000);
    assert_disk_full(&put(&e, 100, 1000).unwrap_err());
    let full = e.health().disk_full.unwrap();
    assert!(full.writes_failing, "{full}");
    assert_eq!(e.stats().poisoned, None);
    // Scans work too.
    let n = e
        .scan(
            "default",
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        )
        .unwrap()
        .count();
    assert_eq!(n, 100);
    fs.clear_no_space();
    put(&e, 100, 1000).unwrap();
    assert_eq!(e.health().disk_full, None);
    e.close().unwrap();
    drop(e);
    let e = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap();
    assert_all_present(&e, 0..101, 1000);
}

/// When writers stall because memtables are over budget and flushes fail for a full disk,
/// they get the `StorageFull` error at once rather than a `TimedOut` after 10 s.
#[test]
fn stalled_writers_fail_fast_when_flushes_fail_for_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut c = config(dir.path(), &fs);
    c.memtable_size_bytes = 4096;
    c.memtable_total_bytes_max = 8192;
    let e = Engine::open(c).unwrap();
    fs.no_space(".sst", NoSpace::Create);
    let start = Instant::now();
    let mut acked = Vec::new();
    let err = loop {
        let i = acked.len() as i64;
        assert!(i < 1000, "writes never refused");
        match put(&e, i, 500) {
            Ok(()) => acked.push(i),
            Err(err) => break err,
        }
    };
    assert_disk_full(&err);
    assert!(
        err.to_string().contains("memtable_total_bytes_max"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.health().poisoned, None);
    fs.clear_no_space();
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.health().disk_full.is_some() {
        assert!(
            Instant::now() < deadline,
            "the background flush never recovered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    put(&e, 5000, 500).unwrap();
    acked.push(5000);
    drop(e);
    let e = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap();
    assert_all_present(&e, acked, 500);
}

/// A missing `LOCK` that cannot be created on a full disk does not stop the start: the lock
/// on the directory keeps a second engine out.
#[test]
fn open_on_a_full_disk_without_a_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    {
        let e = Engine::open(config(dir.path(), &fs)).unwrap();
        put(&e, 1, 10).unwrap();
    }
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    fs.no_space("", NoSpace::Create);
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    assert!(!dir.path().join("LOCK").exists());
    assert_all_present(&e, [1], 10);
    let second = Engine::open(config(dir.path(), &FaultyFs::new())).unwrap_err();
    assert!(second.to_string().contains("in use"), "{second}");
    drop(e);
}

/// A new directory needs its first manifest: on a full disk that open fails, with the
/// `ENOSPC` error (there is no data to serve).
#[test]
fn a_new_directory_on_a_full_disk_fails_to_open_with_enospc() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    fs.no_space("MANIFEST", NoSpace::Create);
    assert_disk_full(&Engine::open(config(dir.path(), &fs)).unwrap_err());
    fs.clear_no_space();
    let e = Engine::open(config(dir.path(), &fs)).unwrap();
    put(&e, 1, 10).unwrap();
}
