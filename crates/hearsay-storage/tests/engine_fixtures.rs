//! Acceptance 4: checked-in files of the engine's own formats still open, decode to exactly
//! what was written, and a damaged copy is refused:
//! - `commitlog-v1/`: a commit-log segment (format v1, still current).
//! - `manifest-v1/MANIFEST`: a v1 manifest (two keyspaces, no tables).
//! - `datadir-v1/`: a whole data directory written by the v1 build (commit 5c62cbb, before
//!   per-table compression): `MANIFEST` v1 and the SSTables it names: keyspace `default`
//!   (size-tiered, LZ4) with three flushed tables, keyspace `plain` (leveled, no
//!   compression) with one table in level 1 and one in level 0; 20 keys each, written in
//!   three rounds (`datadir_v1_value`).
//! - `manifest-v2/MANIFEST`: a v2 manifest whose `default` keyspace holds one table written
//!   with LZ4 and one without (its compression was changed between them).
//!
//! Regenerate (only for a new format version, keeping the old fixtures; the v1 manifest
//! fixtures cannot be regenerated, this build writes v2):
//! `cargo test -p hearsay-storage --test engine_fixtures -- --ignored generate`

use bytes::Bytes;
use hearsay_storage::manifest::Manifest;
use hearsay_storage::sstable::Compression;
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
        compression: Compression::None,
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
fn generate_commitlog_v1_fixture() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(config(dir.path())).unwrap();
        e.create_keyspace("events", events_options()).unwrap();
        for (ks, batch) in cells() {
            e.apply(ks, &batch).unwrap();
        }
    }
    let cl = fixtures().join("commitlog-v1");
    std::fs::create_dir_all(&cl).unwrap();
    std::fs::copy(dir.path().join("commitlog").join(SEGMENT), cl.join(SEGMENT)).unwrap();
    // The manifest of this run is v2 now; `manifest-v1/` stays as the v1 build wrote it.
}

/// The `default` keyspace's tables in the v2 fixture, as listed (newest first): (id, level,
/// compression).
const MANIFEST_V2_TABLES: [(u64, u32, Compression); 2] =
    [(2, 0, Compression::None), (1, 0, Compression::Lz4)];

#[test]
#[ignore = "writes the checked-in fixtures; run only for a new format version"]
fn generate_manifest_v2_fixture() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(config(dir.path())).unwrap();
        e.create_keyspace("events", events_options()).unwrap();
        let (ks, batch) = &cells()[0];
        e.apply(ks, batch).unwrap();
        e.flush(None).unwrap();
        e.alter_keyspace(
            "default",
            KeyspaceOptions {
                compression: Compression::None,
                ..KeyspaceOptions::default()
            },
        )
        .unwrap();
        let (ks, batch) = &cells()[2];
        e.apply(ks, batch).unwrap();
        e.flush(None).unwrap();
    }
    let mf = fixtures().join("manifest-v2");
    std::fs::create_dir_all(&mf).unwrap();
    std::fs::copy(dir.path().join("MANIFEST"), mf.join("MANIFEST")).unwrap();
}

#[test]
fn v2_manifest_decodes_exactly() {
    let path = fixtures().join("manifest-v2");
    let bytes = std::fs::read(path.join("MANIFEST")).unwrap();
    assert_eq!(manifest_version(&bytes), 2);
    let m = Manifest::load(&path).unwrap().unwrap();
    assert_eq!(m.keyspaces.len(), 2);
    assert_eq!(m.keyspaces[0].name, "default");
    assert_eq!(
        m.keyspaces[0].options,
        KeyspaceOptions {
            compression: Compression::None,
            ..KeyspaceOptions::default()
        }
    );
    let tables: Vec<(u64, u32, Compression)> = m.keyspaces[0]
        .tables
        .iter()
        .map(|t| (t.id, t.level, t.compression))
        .collect();
    assert_eq!(tables, MANIFEST_V2_TABLES);
    assert_eq!(m.keyspaces[1].name, "events");
    assert_eq!(m.keyspaces[1].options, events_options());
    assert!(m.keyspaces[1].tables.is_empty());
    // This build writes exactly these bytes for it.
    assert_eq!(m.encode(), bytes);
}

fn manifest_version(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
}

/// The value of key `i` of keyspace `ks` in `datadir-v1`, as its last round wrote it.
fn datadir_v1_value(ks: &str, i: i64) -> String {
    format!("{ks} round 2 value {i} {}", "x".repeat(40))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A v1 data directory opens: each table gets its keyspace's compression (exact: options
/// could not change under v1), levels and data are as written, and opening does not rewrite
/// the manifest (a start writes nothing, for a full disk). The first change writes v2.
#[test]
fn v1_data_directory_opens_and_its_manifest_is_migrated_on_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("datadir-v1"), dir.path());
    let v1_bytes = std::fs::read(dir.path().join("MANIFEST")).unwrap();
    assert_eq!(manifest_version(&v1_bytes), 1);
    let summary = |e: &Engine, ks: &str| -> Vec<(u64, u32, Compression)> {
        let mut t: Vec<_> = e
            .tables(ks)
            .unwrap()
            .iter()
            .map(|t| (t.id, t.level, t.compression))
            .collect();
        t.sort_by_key(|(id, _, _)| *id);
        t
    };
    let want_default = vec![
        (1, 0, Compression::Lz4),
        (3, 0, Compression::Lz4),
        (6, 0, Compression::Lz4),
    ];
    let want_plain = vec![(5, 1, Compression::None), (7, 0, Compression::None)];
    let check_data = |e: &Engine| {
        for ks in ["default", "plain"] {
            for i in 0..20i64 {
                let k = CellKey::new(Token(i * 1000 - 5000), format!("{ks}-{i}"));
                let c = e.get(ks, &k).unwrap().unwrap();
                assert_eq!(
                    c.value,
                    Some(Bytes::from(datadir_v1_value(ks, i))),
                    "{ks} {i}"
                );
            }
            let n = e
                .scan(ks, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
                .unwrap()
                .count();
            assert_eq!(n, 20);
        }
    };
    {
        let e = Engine::open(config(dir.path())).unwrap();
        assert_eq!(summary(&e, "default"), want_default);
        assert_eq!(summary(&e, "plain"), want_plain);
        assert_eq!(
            e.keyspace_options("plain").unwrap().compaction,
            CompactionStrategy::Leveled {
                sstable_target_bytes: 4096,
                level_size_multiplier: 10,
            }
        );
        check_data(&e);
        assert_eq!(
            std::fs::read(dir.path().join("MANIFEST")).unwrap(),
            v1_bytes,
            "not rewritten at open"
        );
        // The first change writes v2, every table's compression in it.
        e.alter_keyspace(
            "plain",
            KeyspaceOptions {
                compression: Compression::Lz4,
                ..e.keyspace_options("plain").unwrap()
            },
        )
        .unwrap();
        let bytes = std::fs::read(dir.path().join("MANIFEST")).unwrap();
        assert_eq!(manifest_version(&bytes), 2);
    }
    let e = Engine::open(config(dir.path())).unwrap();
    assert_eq!(summary(&e, "default"), want_default);
    assert_eq!(summary(&e, "plain"), want_plain, "old tables keep theirs");
    check_data(&e);
    e.compact("plain").unwrap();
    assert!(
        e.tables("plain")
            .unwrap()
            .iter()
            .all(|t| t.compression == Compression::Lz4)
    );
    check_data(&e);
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
