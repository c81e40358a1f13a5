//! The checked-in v1 SSTable fixtures under `tests/fixtures/sstable-v1/` must keep reading
//! back exactly, so a format change that breaks v1 files fails CI.
//!
//! Files (all written by `generate_sstable_v1_fixtures`, then checked in):
//! - `0000000000000001.sst`: the fixture cells, no compression, 128-byte blocks.
//! - `0000000000000002.sst`: the same cells, LZ4, 128-byte blocks.
//! - `0000000000000003.sst`: a copy of table 2 with one bit flipped in its first data block:
//!   open succeeds, reading that block is corruption.
//!
//! Regenerate (only for a deliberate new format version, never to "fix" this test):
//! `cargo test -p hearsay-storage --test sstable_fixture -- --ignored generate`

use hearsay_storage::cache::BlockCache;
use hearsay_storage::sstable::{
    Compression, ReadStats, Sstable, SstableOptions, SstableWriter, sstable_path,
};
use hearsay_storage::{Cell, CellKey, Error, RealFs};
use hearsay_types::{Timestamp, Token};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sstable-v1")
}

/// 40 cells: plain values (some compressible, one empty), tombstones, expiring values and a
/// tombstone carrying an expiry; negative, zero and extreme tokens; shared key prefixes.
fn fixture_cells() -> Vec<(CellKey, Cell)> {
    let mut cells = Vec::new();
    for i in 0..40u64 {
        let token = match i {
            0 => Token(i64::MIN + 1),
            39 => Token(i64::MAX),
            _ => Token((i as i64 - 20) * 1_000_000_007),
        };
        let key = CellKey::new(token, format!("user:{:03}:profile", i * 7));
        let ts = Timestamp(1_700_000_000_000_000 + i * 1_000);
        let cell = match i % 6 {
            0 => Cell::tombstone(ts),
            1 => Cell::expiring(format!("session-{i}"), ts, 1_700_000_100_000 + i),
            2 => Cell {
                value: None,
                timestamp: ts,
                expires_at_ms: Some(1_700_000_050_000 + i),
            },
            3 => Cell::value("x".repeat(60 + i as usize), ts),
            4 if i == 4 => Cell::value("", ts),
            _ => Cell::value(format!("value number {i}"), ts),
        };
        cells.push((key, cell));
    }
    cells
}

fn options(compression: Compression) -> SstableOptions {
    SstableOptions {
        block_size_bytes: 128,
        compression,
        bloom_bits_per_key: 10,
        restart_interval: 4,
    }
}

#[test]
#[ignore = "writes the checked-in fixtures; run only for a new format version"]
fn generate_sstable_v1_fixtures() -> anyhow::Result<()> {
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir)?;
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let mut w = SstableWriter::create(&dir, id, &options(compression), Arc::new(RealFs), 40)?;
        for (k, c) in fixture_cells() {
            w.add(&k, &c)?;
        }
        w.finish()?;
    }
    let mut bytes = std::fs::read(sstable_path(&dir, 2))?;
    bytes[20] ^= 0x04;
    std::fs::write(sstable_path(&dir, 3), bytes)?;
    Ok(())
}

fn open(id: u64) -> hearsay_storage::Result<Arc<Sstable>> {
    Sstable::open(
        &fixture_dir(),
        id,
        BlockCache::new(1 << 20),
        Arc::new(ReadStats::default()),
    )
}

#[test]
fn v1_fixtures_read_back_exactly() -> anyhow::Result<()> {
    let cells = fixture_cells();
    for id in [1, 2] {
        let t = open(id)?;
        let m = t.meta();
        assert_eq!(m.id, id);
        assert_eq!(m.entry_count, 40);
        assert_eq!(
            m.size_bytes,
            std::fs::metadata(sstable_path(&fixture_dir(), id))?.len()
        );
        assert_eq!(m.min_key, cells[0].0);
        assert_eq!(m.max_key, cells[39].0);
        assert_eq!(m.min_timestamp, Timestamp(1_700_000_000_000_000));
        assert_eq!(m.max_timestamp, Timestamp(1_700_000_000_039_000));
        // i % 6 == 0 or 2 are tombstones: 0,2,6,8,...: 7 + 7.
        assert_eq!(m.tombstone_count, 14);
        assert_eq!(m.expiring_count, 7);
        // The earliest deletion: tombstone 0 at its write time (1_700_000_000_000 ms).
        assert_eq!(m.min_deletion_time_ms, 1_700_000_000_000);
        assert_eq!(m.max_expiry_ms, Some(1_700_000_100_000 + 37));
        assert!(t.block_count() > 5, "several blocks: {}", t.block_count());

        let all: Vec<_> = t
            .iter(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()?;
        assert_eq!(all, cells, "table {id}");
        for (k, c) in &cells {
            assert_eq!(t.get(k)?.as_ref(), Some(c), "table {id} get {k:?}");
        }
        assert_eq!(t.get(&CellKey::new(Token(0), "absent"))?, None);
        let range: Vec<_> = t
            .iter(
                Bound::Excluded(cells[10].0.clone()),
                Bound::Included(cells[20].0.clone()),
            )
            .collect::<Result<_, _>>()?;
        assert_eq!(range, cells[11..=20].to_vec());
    }
    Ok(())
}

#[test]
fn v1_lz4_fixture_really_is_compressed() -> anyhow::Result<()> {
    // The LZ4 table is smaller only if some blocks were stored compressed, which is what
    // makes this fixture cover the LZ4 decoding path.
    assert!(open(2)?.meta().size_bytes < open(1)?.meta().size_bytes);
    Ok(())
}

#[test]
fn v1_corrupt_fixture_is_reported() -> anyhow::Result<()> {
    let t = open(3)?;
    let path = sstable_path(&fixture_dir(), 3);
    let first = t.iter(Bound::Unbounded, Bound::Unbounded).next();
    match first {
        Some(Err(Error::Corruption {
            path: p, offset, ..
        })) => {
            assert_eq!(p, path);
            assert_eq!(offset, 0, "the first data block");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(matches!(
        t.get(&fixture_cells()[0].0),
        Err(Error::Corruption { .. })
    ));
    Ok(())
}
