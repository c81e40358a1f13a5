//! Acceptance 4: checked-in v1 files of the engine's own formats (a commit-log segment and a
//! manifest) still open, decode to exactly what was written, and a damaged copy is refused.
//!
//! Regenerate (only for a new format version, keeping the old fixtures):
//! `cargo test -p hearsay-storage --test engine_fixtures -- --ignored generate`

use bytes::Bytes;
use hearsay_storage::manifest::Manifest;
use hearsay_storage::{
    Cell, CellKey, CompactionStrategy, Engine, EngineConfig, Error, KeyspaceOptions, SyncMode,
};
use hearsay_types::{Timestamp, Token};
use std::path::{Path, PathBuf};

const SEGMENT: &str = "commitlog-00000000000000000000.log";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn events_options() -> KeyspaceOptions {
    KeyspaceOptions {
        compaction: CompactionStrategy::TimeWindow {
            window_ms: 3_600_000,
        },
        gc_grace_ms: 86_400_000,
        compression: hearsay_storage::sstable::Compression::None,
    }
}

fn cells() -> Vec<(&'static str, Vec<(CellKey, Cell)>)> {
    vec![
        (
            "default",
            vec![
                (
                    CellKey::new(Token(-7), &b"alpha"[..]),
                    Cell::value(&b"one"[..], Timestamp(1_700_000_000_000_001)),
                ),
                (
                    CellKey::new(Token(42), &b"beta"[..]),
                    Cell::tombstone(Timestamp(1_700_000_000_000_002)),
                ),
            ],
        ),
        (
            "events",
            vec![(
                CellKey::new(Token(i64::MAX), &b"gamma"[..]),
                Cell::expiring(
                    &b"ttl"[..],
                    Timestamp(1_700_000_000_000_003),
                    1_700_000_100_000,
                ),
            )],
        ),
        (
            "default",
            vec![(
                CellKey::new(Token(-7), &b"alpha"[..]),
                Cell::value(&b"two"[..], Timestamp(1_700_000_000_000_004)),
            )],
        ),
    ]
}

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::Batch;
    c
}

#[test]
#[ignore = "writes the checked-in fixtures; run only for a new format version"]
fn generate_engine_v1_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(config(dir.path())).unwrap();
        e.create_keyspace("events", events_options()).unwrap();
        for (ks, batch) in cells() {
            e.apply(ks, &batch).unwrap();
        }
    }
    let cl = fixtures().join("commitlog-v1");
    let mf = fixtures().join("manifest-v1");
    std::fs::create_dir_all(&cl).unwrap();
    std::fs::create_dir_all(&mf).unwrap();
    std::fs::copy(dir.path().join("commitlog").join(SEGMENT), cl.join(SEGMENT)).unwrap();
    std::fs::copy(dir.path().join("MANIFEST"), mf.join("MANIFEST")).unwrap();
}

fn install(dir: &Path) {
    std::fs::copy(
        fixtures().join("manifest-v1/MANIFEST"),
        dir.join("MANIFEST"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("commitlog")).unwrap();
    std::fs::copy(
        fixtures().join("commitlog-v1").join(SEGMENT),
        dir.join("commitlog").join(SEGMENT),
    )
    .unwrap();
}

#[test]
fn v1_manifest_decodes_exactly() {
    let m = Manifest::load(&fixtures().join("manifest-v1"))
        .unwrap()
        .unwrap();
    assert_eq!(m.keyspaces.len(), 2);
    assert_eq!(m.keyspaces[0].name, "default");
    assert_eq!(m.keyspaces[0].options, KeyspaceOptions::default());
    assert_eq!(m.keyspaces[1].name, "events");
    assert_eq!(m.keyspaces[1].options, events_options());
    assert!(m.keyspaces.iter().all(|k| k.tables.is_empty()));
}

#[test]
fn v1_commitlog_and_manifest_open_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path());
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(e.keyspaces(), vec!["default", "events"]);
    assert_eq!(e.stats().replayed_records, 3);
    let a = e
        .get("default", &CellKey::new(Token(-7), &b"alpha"[..]))
        .unwrap()
        .unwrap();
    assert_eq!(a.value, Some(Bytes::from_static(b"two")));
    let b = e
        .get("default", &CellKey::new(Token(42), &b"beta"[..]))
        .unwrap()
        .unwrap();
    assert!(b.is_tombstone());
    let g = e
        .get("events", &CellKey::new(Token(i64::MAX), &b"gamma"[..]))
        .unwrap()
        .unwrap();
    assert_eq!(g.expires_at_ms, Some(1_700_000_100_000));
    assert_eq!(g.value, Some(Bytes::from_static(b"ttl")));
}

#[test]
fn damaged_v1_fixtures_are_refused() {
    // Flip a byte inside the first record with more records after it: mid-log corruption.
    let dir = tempfile::tempdir().unwrap();
    install(dir.path());
    let seg = dir.path().join("commitlog").join(SEGMENT);
    let mut data = std::fs::read(&seg).unwrap();
    data[30] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();
    assert!(matches!(
        Engine::open(config(dir.path())),
        Err(Error::Corruption { .. })
    ));
    // A damaged segment header.
    let dir = tempfile::tempdir().unwrap();
    install(dir.path());
    let seg = dir.path().join("commitlog").join(SEGMENT);
    let mut data = std::fs::read(&seg).unwrap();
    data[0] = b'X';
    std::fs::write(&seg, &data).unwrap();
    let err = Engine::open(config(dir.path())).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}
