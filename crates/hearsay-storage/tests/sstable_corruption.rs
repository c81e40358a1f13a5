//! Damaged SSTables: every flipped bit is caught by a checksum and reported as
//! `Error::Corruption` naming the file (and, for data blocks, the block's offset); truncated
//! and garbage files fail to open; a newer version is `UnsupportedVersion`; random mutations
//! never panic and never yield wrong data.

use hearsay_storage::cache::BlockCache;
use hearsay_storage::sstable::format::{BlockHandle, Decoder, Footer, block_crc};
use hearsay_storage::sstable::{
    Compression, ReadStats, Sstable, SstableOptions, SstableWriter, sstable_path,
};
use hearsay_storage::{Cell, CellKey, Error, RealFs};
use hearsay_types::{Timestamp, Token};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

type Model = BTreeMap<CellKey, Cell>;

fn model(n: u32) -> Model {
    (0..n)
        .map(|i| {
            let key = CellKey::new(Token(i64::from(i / 3) - 20), format!("key-{i:04}"));
            let ts = Timestamp(1_000_000 + u64::from(i));
            let cell = match i % 5 {
                0 => Cell::tombstone(ts),
                1 => Cell::expiring(format!("expiring value {i}"), ts, 5_000 + u64::from(i)),
                _ => Cell::value(format!("value {i} {}", "abc".repeat(i as usize % 9)), ts),
            };
            (key, cell)
        })
        .collect()
}

fn write(dir: &Path, id: u64, compression: Compression, model: &Model) -> Vec<u8> {
    let opts = SstableOptions {
        compression,
        block_size_bytes: 256,
        restart_interval: 4,
        ..Default::default()
    };
    let mut w = SstableWriter::create(dir, id, &opts, Arc::new(RealFs), model.len())
        .expect("create writer");
    for (k, c) in model {
        w.add(k, c).expect("add");
    }
    w.finish().expect("finish");
    std::fs::read(sstable_path(dir, id)).expect("read back")
}

fn open(dir: &Path, id: u64) -> hearsay_storage::Result<Arc<Sstable>> {
    Sstable::open(
        dir,
        id,
        BlockCache::new(1 << 20),
        Arc::new(ReadStats::default()),
    )
}

/// Asserts `err` is corruption naming `path`, with an offset before `at_or_before`.
fn assert_corruption(err: &Error, path: &Path, at_or_before: u64) {
    match err {
        Error::Corruption {
            path: p, offset, ..
        } => {
            assert_eq!(p, path, "{err}");
            assert!(*offset <= at_or_before, "{err}: offset past {at_or_before}");
        }
        other => panic!("expected corruption naming {}, got {other}", path.display()),
    }
}

#[test]
fn flipped_bit_in_a_data_block_is_corruption_on_get_and_iter() {
    let m = model(300);
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(dir.path(), id, compression, &m);
        let path = sstable_path(dir.path(), id);
        let data_bytes = open(dir.path(), id).expect("open").data_bytes();
        assert!(data_bytes > 1000, "several blocks");
        // One bit in a few hundred bytes spread over the data region (the bit varies with
        // the position); the stride is odd so positions drift across entry boundaries.
        let stride = (data_bytes / 300).max(1) | 1;
        for pos in (0..data_bytes).step_by(stride as usize) {
            let mut bytes = good.clone();
            bytes[pos as usize] ^= 1 << (pos % 8);
            std::fs::write(&path, &bytes).expect("write damaged copy");
            let table = open(dir.path(), id).expect("data damage is found on read, not open");
            let mut iter_err = None;
            let mut seen = 0;
            for item in table.iter(Bound::Unbounded, Bound::Unbounded) {
                match item {
                    Ok((k, c)) => {
                        assert_eq!(m.get(&k), Some(&c), "pos {pos}: wrong data from iter");
                        seen += 1;
                    }
                    Err(e) => iter_err = Some(e),
                }
            }
            let e = iter_err.unwrap_or_else(|| panic!("pos {pos}: iter missed the damage"));
            assert_corruption(&e, &path, pos);
            assert!(seen < m.len());
            // Every get either returns the right cell (another block) or corruption.
            let mut get_errors = 0;
            for (k, c) in &m {
                match table.get(k) {
                    Ok(found) => assert_eq!(found.as_ref(), Some(c), "pos {pos}: wrong get"),
                    Err(e) => {
                        assert_corruption(&e, &path, pos);
                        get_errors += 1;
                    }
                }
            }
            assert!(get_errors > 0, "pos {pos}: no get hit the damaged block");
        }
    }
}

#[test]
fn flipped_bit_in_index_bloom_stats_or_footer_fails_open() {
    let m = model(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), 1, Compression::Lz4, &m);
    let path = sstable_path(dir.path(), 1);
    let data_bytes = open(dir.path(), 1).expect("open").data_bytes() as usize;
    let version_field = good.len() - 12..good.len() - 8;
    // Every byte of the meta blocks and footer, one bit each (varying with the position).
    for pos in data_bytes..good.len() {
        let bit = pos % 8;
        let mut bytes = good.clone();
        bytes[pos] ^= 1 << bit;
        std::fs::write(&path, &bytes).expect("write");
        match open(dir.path(), 1) {
            Ok(_) => panic!("pos {pos} bit {bit}: damaged meta opened"),
            Err(Error::UnsupportedVersion { .. }) if version_field.contains(&pos) => {}
            Err(e) => assert_corruption(&e, &path, pos as u64),
        }
    }
}

#[test]
fn truncated_file_fails_open_with_corruption() {
    let m = model(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), 1, Compression::Lz4, &m);
    let path = sstable_path(dir.path(), 1);
    for len in [
        0,
        1,
        10,
        63,
        64,
        65,
        good.len() / 2,
        good.len() - 64,
        good.len() - 1,
    ] {
        std::fs::write(&path, &good[..len]).expect("write");
        match open(dir.path(), 1) {
            Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path),
            other => panic!("truncated to {len}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn garbage_file_fails_open_with_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sstable_path(dir.path(), 9);
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write");
    assert!(matches!(open(dir.path(), 9), Err(Error::Corruption { .. })));
    // Garbage with a valid magic and version: the footer checksum catches it.
    let mut g = garbage;
    let n = g.len();
    g[n - 8..].copy_from_slice(b"HSAYSST1");
    g[n - 12..n - 8].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, &g).expect("write");
    match open(dir.path(), 9) {
        Err(Error::Corruption { reason, offset, .. }) => {
            assert!(reason.contains("checksum"), "{reason}");
            assert_eq!(offset, n as u64 - 64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // A missing file is an I/O error, not corruption.
    assert!(matches!(open(dir.path(), 10), Err(Error::Io { .. })));
}

#[test]
fn newer_version_is_unsupported() {
    let m = model(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = write(dir.path(), 1, Compression::None, &m);
    let n = bytes.len();
    bytes[n - 12..n - 8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(sstable_path(dir.path(), 1), &bytes).expect("write");
    match open(dir.path(), 1) {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (2, 1)),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random byte overwrites (and an optional truncation) anywhere in the file: open, get
    /// and iter never panic, and whatever they return without error is the true data.
    #[test]
    fn random_mutations_never_panic_or_lie(
        lz4 in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let m = model(80);
        let dir = tempfile::tempdir().expect("tempdir");
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        let mut bytes = write(dir.path(), 1, compression, &m);
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        if let Some(t) = truncate {
            let len = t.index(bytes.len());
            bytes.truncate(len);
        }
        std::fs::write(sstable_path(dir.path(), 1), &bytes).expect("write");
        if let Ok(table) = open(dir.path(), 1) {
            for item in table.iter(Bound::Unbounded, Bound::Unbounded) {
                match item {
                    Ok((k, c)) => prop_assert_eq!(m.get(&k), Some(&c)),
                    Err(e) => prop_assert!(matches!(e, Error::Corruption { .. }), "{}", e),
                }
            }
            for (k, c) in &m {
                if let Ok(found) = table.get(k) {
                    prop_assert_eq!(found.as_ref(), Some(c));
                }
            }
            let lower = CellKey::new(Token(-10), "key-0030");
            let upper = CellKey::new(Token(0), "key-0062");
            for item in table.iter(Bound::Excluded(lower), Bound::Included(upper)) {
                match item {
                    Ok((k, c)) => prop_assert_eq!(m.get(&k), Some(&c)),
                    Err(e) => prop_assert!(matches!(e, Error::Corruption { .. }), "{}", e),
                }
            }
        }
    }
}

/// Handles of every block of a valid uncompressed table: the data blocks (parsed from the
/// index) followed by index, bloom and stats.
fn block_handles(bytes: &[u8]) -> Vec<BlockHandle> {
    let n = bytes.len();
    let mut footer = [0u8; 64];
    footer.copy_from_slice(&bytes[n - 64..]);
    let f = Footer::decode(&footer).expect("valid footer");
    let index_payload =
        &bytes[f.index.offset as usize..(f.index.offset + f.index.size) as usize - 5];
    let mut d = Decoder::new(index_payload);
    let count = d.u32_le().expect("count");
    let mut handles = Vec::new();
    for _ in 0..count {
        let len = d.varint().expect("len") as usize;
        d.bytes(len).expect("key");
        let offset = d.varint().expect("offset");
        let size = d.varint().expect("size");
        handles.push(BlockHandle { offset, size });
    }
    handles.extend([f.index, f.bloom, f.stats]);
    handles
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Fuzzes the decoders *behind* the checksums: mutate bytes inside one block's payload
    /// and recompute that block's CRC, so the structural checks (lengths, restart points,
    /// index order, stats, bloom) are all that stand between the bytes and a panic. Reads
    /// may then return wrong data (the checksum was forged), but never panic, and every
    /// error is a corruption error.
    #[test]
    fn forged_checksums_never_panic(
        block in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let m = model(80);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = write(dir.path(), 1, Compression::None, &m);
        let handles = block_handles(&bytes);
        let h = handles[block.index(handles.len())];
        let start = h.offset as usize;
        let payload_len = h.size as usize - 5;
        if payload_len > 0 {
            for (at, v) in &edits {
                bytes[start + at.index(payload_len)] = *v;
            }
        }
        let crc = block_crc(&bytes[start..start + payload_len], bytes[start + payload_len]);
        bytes[start + payload_len + 1..start + payload_len + 5].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(sstable_path(dir.path(), 1), &bytes).expect("write");
        let is_corruption = |e: &Error| matches!(e, Error::Corruption { .. });
        match open(dir.path(), 1) {
            Ok(table) => {
                for item in table.iter(Bound::Unbounded, Bound::Unbounded).take(1000) {
                    if let Err(e) = item {
                        prop_assert!(is_corruption(&e), "{}", e);
                    }
                }
                for k in m.keys() {
                    if let Err(e) = table.get(k) {
                        prop_assert!(is_corruption(&e), "{}", e);
                    }
                }
                let lower = CellKey::new(Token(-10), "key-0030");
                for item in table.iter(Bound::Included(lower), Bound::Unbounded).take(1000) {
                    if let Err(e) = item {
                        prop_assert!(is_corruption(&e), "{}", e);
                    }
                }
            }
            Err(e) => prop_assert!(is_corruption(&e), "{}", e),
        }
    }
}
