//! A full disk, end to end (issue #17): an engine on a real 8 MiB tmpfs is written until
//! `ENOSPC`, stopped, started again on the still-full disk (reads work, writes fail with
//! `ENOSPC` and `disk_full` is set), takes writes again once a filler file is deleted, and
//! loses nothing acknowledged. Needs root (to mount); skipped otherwise, run in CI (root).
//! Its own test binary: a `fork` for `mount` while another test of the same process reopens
//! an engine would briefly hold that engine's `flock`s in the child.

use bytes::Bytes;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, Error, SyncMode};
use hearsay_types::{Timestamp, Token};
use std::path::{Path, PathBuf};

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

fn put(e: &Engine, i: i64, len: usize) -> Result<(), Error> {
    e.apply(
        "default",
        &[(key(i), Cell::value(value(i, len), Timestamp(1)))],
    )
}

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
    assert!(
        e.to_string().contains("No space left on device"),
        "the error names the full disk: {e}"
    );
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Unmounts the tmpfs when dropped, also when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed as root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open (a panic mid-test): detach it anyway.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

#[test]
fn real_tmpfs_fills_up_and_recovers() {
    if !is_root() {
        eprintln!("SKIPPED real_tmpfs_fills_up_and_recovers: needs root to mount a tmpfs");
        return;
    }
    const VALUE_BYTES: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "8m");
    let data = mnt.join("data");
    let config = || {
        let mut c = EngineConfig::new(&data);
        c.sync_mode = SyncMode::Batch;
        c.commitlog_segment_bytes = 1 << 20;
        c.block_cache_bytes = 1 << 20;
        c
    };
    // Half the disk is a filler file the "operator" deletes later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0xAAu8; 4 << 20]).unwrap();

    let e = Engine::open(config()).unwrap();
    let mut acked: Vec<i64> = Vec::new();
    let err = loop {
        let i = acked.len() as i64;
        assert!(i < 20_000, "an 8 MiB tmpfs never filled up");
        match put(&e, i, VALUE_BYTES) {
            Ok(()) => acked.push(i),
            Err(err) => break err,
        }
    };
    assert_disk_full(&err);
    assert!(acked.len() > 1000, "only {} writes fit", acked.len());
    assert_eq!(e.health().poisoned, None);
    assert!(e.health().disk_full.unwrap().writes_failing);
    // A stop on the full disk: the flush cannot write its SSTable, nothing is poisoned, and
    // the close is clean.
    assert_disk_full(&e.flush(None).unwrap_err());
    assert_eq!(e.health().poisoned, None);
    e.close().unwrap();
    drop(e);

    // A start on the still-full disk.
    let e = Engine::open(config()).unwrap();
    assert_all_present(&e, acked.iter().copied(), VALUE_BYTES);
    let next = acked.len() as i64;
    assert_disk_full(&put(&e, next, VALUE_BYTES).unwrap_err());
    let full = e
        .stats()
        .disk_full
        .expect("disk_full after a refused write");
    assert!(full.error.contains("No space left on device"), "{full}");
    assert_eq!(e.health().poisoned, None);

    // The operator frees space: writes succeed again, no restart.
    std::fs::remove_file(&filler).unwrap();
    for i in next..next + 100 {
        put(&e, i, VALUE_BYTES).unwrap();
        acked.push(i);
    }
    assert_eq!(e.health().disk_full, None);
    assert_eq!(e.stats().disk_full, None);
    e.close().unwrap();
    drop(e);

    let e = Engine::open(config()).unwrap();
    assert_all_present(&e, acked.iter().copied(), VALUE_BYTES);
    assert_eq!(e.health(), Default::default());
    drop(e);
}
