//! SSTable write/read round trips: point reads, iteration under every bound combination
//! (against a BTreeMap model), metadata, file lifecycle (temp name, abandon, obsolete).

use bytes::Bytes;
use hearsay_storage::cache::BlockCache;
use hearsay_storage::sstable::{
    Compression, ReadStats, Sstable, SstableOptions, SstableWriter, sstable_path,
};
use hearsay_storage::{Cell, CellKey, Error, FaultyFs, Fs, RealFs};
use hearsay_types::{Timestamp, Token};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

type Model = BTreeMap<CellKey, Cell>;

/// A deterministic mix of values (some empty, some large), tombstones and expiring cells.
fn random_cells(seed: u64, n: usize) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Model::new();
    while m.len() < n {
        // Few distinct tokens so that many keys share a token (as hash collisions would not,
        // but it exercises prefix compression across the token bytes).
        let token = Token(rng.random_range(-50i64..50) * 1_000_003);
        let klen = rng.random_range(0..24);
        let key: Vec<u8> = (0..klen).map(|_| rng.random_range(b'a'..=b'f')).collect();
        let ts = Timestamp(rng.random_range(1..1_000_000_000));
        let cell = match rng.random_range(0..10) {
            0 | 1 => Cell::tombstone(ts),
            2 => Cell::expiring(
                random_value(&mut rng),
                ts,
                rng.random_range(1..u64::MAX / 2),
            ),
            3 => Cell {
                value: None,
                timestamp: ts,
                expires_at_ms: Some(rng.random_range(1..1_000_000)),
            },
            _ => Cell::value(random_value(&mut rng), ts),
        };
        m.insert(CellKey::new(token, key), cell);
    }
    m
}

fn random_value(rng: &mut StdRng) -> Bytes {
    let len = match rng.random_range(0..20) {
        0 => 0,
        1 => rng.random_range(1000..10_000),
        _ => rng.random_range(1..120),
    };
    // Compressible half the time.
    if rng.random_bool(0.5) {
        Bytes::from(vec![b'x'; len])
    } else {
        Bytes::from((0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>())
    }
}

fn write(dir: &Path, id: u64, opts: &SstableOptions, model: &Model) -> anyhow::Result<()> {
    let mut w = SstableWriter::create(dir, id, opts, Arc::new(RealFs), model.len())?;
    for (k, c) in model {
        w.add(k, c)?;
    }
    let meta = w.finish()?;
    assert_eq!(meta.entry_count, model.len() as u64);
    Ok(())
}

fn open(dir: &Path, id: u64) -> anyhow::Result<Arc<Sstable>> {
    Ok(Sstable::open(
        dir,
        id,
        BlockCache::new(1 << 20),
        Arc::new(ReadStats::default()),
    )?)
}

fn collect(
    it: impl Iterator<Item = hearsay_storage::Result<(CellKey, Cell)>>,
) -> Vec<(CellKey, Cell)> {
    it.collect::<Result<Vec<_>, _>>().expect("iteration failed")
}

#[test]
fn round_trip_many_cells_both_compressions() -> anyhow::Result<()> {
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let dir = tempfile::tempdir()?;
        let model = random_cells(id, 3000);
        let opts = SstableOptions {
            compression,
            ..Default::default()
        };
        let mut w = SstableWriter::create(dir.path(), id, &opts, Arc::new(RealFs), model.len())?;
        for (k, c) in &model {
            w.add(k, c)?;
        }
        assert_eq!(w.entry_count(), 3000);
        assert!(w.bytes_written() > 0);
        let meta = w.finish()?;
        let path = sstable_path(dir.path(), id);
        assert_eq!(meta.size_bytes, std::fs::metadata(&path)?.len());
        assert!(!dir.path().join(format!("{id:016x}.sst.tmp")).exists());

        // Meta matches the model.
        let tombstones = model.values().filter(|c| c.is_tombstone()).count() as u64;
        let expiring = model
            .values()
            .filter(|c| !c.is_tombstone() && c.expires_at_ms.is_some())
            .count() as u64;
        let min_del = model
            .values()
            .filter(|c| c.is_tombstone() || c.expires_at_ms.is_some())
            .map(Cell::deletion_time_ms)
            .min()
            .unwrap_or(u64::MAX);
        assert_eq!(meta.id, id);
        assert_eq!(meta.entry_count, 3000);
        assert_eq!(&meta.min_key, model.keys().next().expect("non-empty"));
        assert_eq!(&meta.max_key, model.keys().next_back().expect("non-empty"));
        assert_eq!(meta.tombstone_count, tombstones);
        assert_eq!(meta.expiring_count, expiring);
        assert_eq!(meta.min_deletion_time_ms, min_del);
        assert_eq!(
            meta.max_expiry_ms,
            model.values().filter_map(|c| c.expires_at_ms).max()
        );
        assert_eq!(
            meta.min_timestamp,
            model
                .values()
                .map(|c| c.timestamp)
                .min()
                .expect("non-empty")
        );
        assert_eq!(
            meta.max_timestamp,
            model
                .values()
                .map(|c| c.timestamp)
                .max()
                .expect("non-empty")
        );

        let table = open(dir.path(), id)?;
        assert_eq!(table.meta(), &meta, "meta read back equals meta written");
        assert!(table.memory_bytes() >= meta.bloom_bytes);
        assert!(table.block_count() > 10);
        for (k, c) in &model {
            assert_eq!(table.get(k)?.as_ref(), Some(c), "get {k:?}");
        }
        let all = collect(table.iter(Bound::Unbounded, Bound::Unbounded));
        let expected: Vec<_> = model.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
        assert_eq!(all, expected);
        // Compaction iteration sees the same.
        let all = collect(table.iter_for_compaction(Bound::Unbounded, Bound::Unbounded));
        assert_eq!(all, expected);
    }
    Ok(())
}

#[test]
fn lz4_makes_compressible_tables_smaller() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model: Model = (0..2000u32)
        .map(|i| {
            (
                CellKey::new(Token(i64::from(i)), format!("user:{i:08}")),
                Cell::value(vec![b'v'; 100], Timestamp(1)),
            )
        })
        .collect();
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let opts = SstableOptions {
            compression,
            ..Default::default()
        };
        write(dir.path(), id, &opts, &model)?;
    }
    let plain = open(dir.path(), 1)?.meta().size_bytes;
    let lz4 = open(dir.path(), 2)?.meta().size_bytes;
    assert!(lz4 * 3 < plain, "lz4 {lz4} vs plain {plain}");
    Ok(())
}

#[test]
fn get_hits_and_misses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = random_cells(7, 2000);
    write(dir.path(), 7, &SstableOptions::default(), &model)?;
    let stats = Arc::new(ReadStats::default());
    let table = Sstable::open(dir.path(), 7, BlockCache::new(1 << 20), stats.clone())?;
    let mut rng = StdRng::seed_from_u64(99);
    let mut misses = 0u64;
    for _ in 0..5000 {
        let k = CellKey::new(
            Token(rng.random_range(-60i64..60) * 1_000_003),
            (0..rng.random_range(0..6))
                .map(|_| rng.random_range(b'a'..=b'g'))
                .collect::<Vec<u8>>(),
        );
        assert_eq!(table.get(&k)?.as_ref(), model.get(&k), "{k:?}");
        misses += u64::from(!model.contains_key(&k));
    }
    // Below, between and above every stored key.
    for k in [
        CellKey::new(Token(i64::MIN), &b""[..]),
        CellKey::new(Token(i64::MAX), &b"zzzz"[..]),
        CellKey::new(Token(3), &b"a"[..]),
    ] {
        assert_eq!(table.get(&k)?, None);
        misses += 1;
    }
    // The pre-hashed form agrees.
    for (k, c) in model.iter().take(100) {
        let h = hearsay_storage::bloom::hash_key(k.token, &k.key);
        assert_eq!(table.get_with_hash(k, h)?.as_ref(), Some(c));
    }
    let s = stats.snapshot();
    assert_eq!(s.bloom_true_positives, 5003 - misses + 100);
    assert_eq!(s.bloom_negatives + s.bloom_false_positives, misses);
    assert!(
        (s.bloom_false_positives as f64) < misses as f64 * 0.03,
        "{s:?} for {misses} misses"
    );
    Ok(())
}

#[test]
fn keys_must_strictly_increase_and_respect_limits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = SstableWriter::create(
        dir.path(),
        1,
        &SstableOptions::default(),
        Arc::new(RealFs),
        10,
    )?;
    let c = Cell::value("v", Timestamp(1));
    w.add(&CellKey::new(Token(5), "b"), &c)?;
    for bad in [
        CellKey::new(Token(5), "b"),
        CellKey::new(Token(5), "a"),
        CellKey::new(Token(4), "z"),
    ] {
        assert!(
            matches!(w.add(&bad, &c), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    let big_key = CellKey::new(Token(6), vec![0u8; 64 * 1024 + 1]);
    assert!(matches!(
        w.add(&big_key, &c),
        Err(Error::InvalidArgument(_))
    ));
    // After refusals the writer still works.
    w.add(&CellKey::new(Token(6), "a"), &c)?;
    let meta = w.finish()?;
    assert_eq!(meta.entry_count, 2);
    Ok(())
}

#[test]
fn empty_table_is_refused_and_abandon_removes_the_temp_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = SstableOptions::default();
    let w = SstableWriter::create(dir.path(), 1, &opts, Arc::new(RealFs), 0)?;
    assert!(matches!(w.finish(), Err(Error::InvalidArgument(_))));
    let mut w = SstableWriter::create(dir.path(), 2, &opts, Arc::new(RealFs), 0)?;
    w.add(
        &CellKey::new(Token(1), "k"),
        &Cell::value("v", Timestamp(1)),
    )?;
    assert!(dir.path().join(format!("{:016x}.sst.tmp", 2)).exists());
    w.abandon();
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "nothing left behind"
    );
    Ok(())
}

#[test]
fn failed_fsync_propagates_as_io_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fs = FaultyFs::new();
    fs.fail_syncs(true);
    let faulty: Arc<dyn Fs> = fs.clone();
    let mut w = SstableWriter::create(dir.path(), 1, &SstableOptions::default(), faulty, 1)?;
    w.add(
        &CellKey::new(Token(1), "k"),
        &Cell::value("v", Timestamp(1)),
    )?;
    assert!(matches!(w.finish(), Err(Error::Io { .. })));
    assert!(fs.sync_count() >= 1);
    assert!(
        !sstable_path(dir.path(), 1).exists(),
        "not renamed into place"
    );
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "the temp file is removed"
    );
    Ok(())
}

#[test]
fn obsolete_table_is_deleted_after_the_last_reader() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = random_cells(3, 500);
    write(dir.path(), 3, &SstableOptions::default(), &model)?;
    let path = sstable_path(dir.path(), 3);
    let table = open(dir.path(), 3)?;
    let mut it = table.iter(Bound::Unbounded, Bound::Unbounded);
    assert!(it.next().is_some());
    table.mark_obsolete();
    drop(table);
    assert!(path.exists(), "an iterator still holds the table");
    assert_eq!(it.count(), model.len() - 1, "iterator reads to the end");
    assert!(!path.exists(), "deleted when the iterator dropped");

    // Not marked: the file stays.
    write(dir.path(), 4, &SstableOptions::default(), &model)?;
    drop(open(dir.path(), 4)?);
    assert!(sstable_path(dir.path(), 4).exists());
    Ok(())
}

#[test]
fn tiny_blocks_and_restart_interval_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = random_cells(11, 400);
    for (id, block_size_bytes, restart_interval) in [(1, 1, 1), (2, 64, 1), (3, 100_000, 128)] {
        let opts = SstableOptions {
            block_size_bytes,
            restart_interval,
            ..Default::default()
        };
        write(dir.path(), id, &opts, &model)?;
        let t = open(dir.path(), id)?;
        for (k, c) in &model {
            assert_eq!(t.get(k)?.as_ref(), Some(c));
        }
        assert_eq!(
            collect(t.iter(Bound::Unbounded, Bound::Unbounded)).len(),
            400
        );
    }
    Ok(())
}

fn bound_strategy() -> impl Strategy<Value = Bound<CellKey>> {
    let key = (-3i64..3, proptest::collection::vec(b'a'..=b'c', 0..3))
        .prop_map(|(t, k)| CellKey::new(Token(t), k));
    prop_oneof![
        Just(Bound::Unbounded),
        key.clone().prop_map(Bound::Included),
        key.prop_map(Bound::Excluded),
    ]
}

fn model_strategy() -> impl Strategy<Value = Model> {
    proptest::collection::btree_map(
        (-3i64..3, proptest::collection::vec(b'a'..=b'c', 0..3))
            .prop_map(|(t, k)| CellKey::new(Token(t), k)),
        (
            any::<bool>(),
            0u64..100,
            proptest::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(tomb, ts, v)| {
                if tomb {
                    Cell::tombstone(Timestamp(ts))
                } else {
                    Cell::value(v, Timestamp(ts))
                }
            }),
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every bound combination against the BTreeMap model, with blocks small enough that
    /// ranges cross block boundaries.
    #[test]
    fn iter_bounds_match_btreemap(
        model in model_strategy(),
        bounds in proptest::collection::vec((bound_strategy(), bound_strategy()), 1..8),
        block_size_bytes in prop_oneof![Just(1usize), Just(48), Just(4096)],
        restart_interval in 1usize..5,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SstableOptions { block_size_bytes, restart_interval, ..Default::default() };
        write(dir.path(), 1, &opts, &model).expect("write");
        let table = open(dir.path(), 1).expect("open");
        for (lower, upper) in bounds {
            // BTreeMap::range panics on inverted or equal-excluded ranges; an SSTable
            // iterator yields nothing for them.
            let valid = match (&lower, &upper) {
                (Bound::Included(l), Bound::Included(u)) => l <= u,
                (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => l < u,
                _ => true,
            };
            let expected: Vec<_> = if valid {
                model.range((lower.clone(), upper.clone())).map(|(k, c)| (k.clone(), c.clone())).collect()
            } else {
                Vec::new()
            };
            let got = collect(table.iter(lower.clone(), upper.clone()));
            prop_assert_eq!(got, expected, "bounds {:?} .. {:?}", lower, upper);
        }
    }
}

#[test]
fn compression_resumes_after_an_incompressible_run() -> anyhow::Result<()> {
    // The writer stops trying LZ4 on every block after a run of incompressible blocks;
    // it must still notice when the data turns compressible.
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(5);
    let model: Model = (0..4000u32)
        .map(|i| {
            let value: Vec<u8> = if i < 1000 {
                (0..100).map(|_| rng.random::<u8>()).collect()
            } else {
                vec![b'z'; 100]
            };
            (
                CellKey::new(Token(i64::from(i)), format!("k{i:06}")),
                Cell::value(value, Timestamp(1)),
            )
        })
        .collect();
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let opts = SstableOptions {
            compression,
            ..Default::default()
        };
        write(dir.path(), id, &opts, &model)?;
    }
    let plain = open(dir.path(), 1)?;
    let lz4 = open(dir.path(), 2)?;
    // 3000 of 4000 cells compress ~10x: the table must shrink by well over half.
    assert!(
        lz4.meta().size_bytes * 2 < plain.meta().size_bytes,
        "lz4 {} vs plain {}",
        lz4.meta().size_bytes,
        plain.meta().size_bytes
    );
    let all = collect(lz4.iter(Bound::Unbounded, Bound::Unbounded));
    assert_eq!(all.len(), 4000);
    assert!(
        all.iter()
            .zip(&model)
            .all(|(a, (k, c))| &a.0 == k && &a.1 == c)
    );
    Ok(())
}
