//! A throughput probe for the SSTable alone (no engine): write N cells, then random point
//! reads (hits and misses, warm cache) and a full scan. Ignored by default; run with
//! `cargo test --release -p hearsay-storage --test sstable_perf -- --ignored --nocapture`
//! (`SST_PERF_KEYS` sets N, default 1,000,000; values are 100 random letters).

use hearsay_storage::cache::BlockCache;
use hearsay_storage::sstable::{ReadStats, Sstable, SstableOptions, SstableWriter};
use hearsay_storage::{Cell, CellKey, RealFs};
use hearsay_types::{Timestamp, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

fn key(i: u64) -> CellKey {
    // Token from a cheap mix so keys are spread as real tokens are.
    let token = Token(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64);
    CellKey::new(token, format!("key{i:012}"))
}

#[test]
#[ignore = "performance probe; run explicitly in release"]
fn sstable_throughput() -> anyhow::Result<()> {
    let n: u64 = std::env::var("SST_PERF_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut keys: Vec<(CellKey, u64)> = (0..n).map(|i| (key(i), i)).collect();
    keys.sort();
    let mut rng = StdRng::seed_from_u64(1);

    let start = Instant::now();
    let mut w = SstableWriter::create(
        dir.path(),
        1,
        &SstableOptions::default(),
        Arc::new(RealFs),
        keys.len(),
    )?;
    let mut value = vec![0u8; 100];
    for (k, _) in &keys {
        // Random lower-case letters: what a benchmark's values look like, and about as
        // (in)compressible for LZ4.
        value.fill_with(|| rng.random_range(b'a'..=b'z'));
        w.add(k, &Cell::value(value.clone(), Timestamp(1)))?;
    }
    let meta = w.finish()?;
    let write_s = start.elapsed().as_secs_f64();
    println!(
        "write: {n} cells in {write_s:.2} s = {:.0} cells/s; file {} bytes ({:.1} bytes/cell), index {} bytes, bloom {} bytes",
        n as f64 / write_s,
        meta.size_bytes,
        meta.size_bytes as f64 / n as f64,
        meta.index_bytes,
        meta.bloom_bytes
    );

    let cache = BlockCache::new(1 << 30);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    // Warm the cache with one scan.
    let start = Instant::now();
    let count = t.iter(Bound::Unbounded, Bound::Unbounded).count();
    let scan_s = start.elapsed().as_secs_f64();
    assert_eq!(count as u64, n);
    println!("scan (cold): {:.0} cells/s", n as f64 / scan_s);
    let start = Instant::now();
    let count = t.iter(Bound::Unbounded, Bound::Unbounded).count();
    let scan_s = start.elapsed().as_secs_f64();
    assert_eq!(count as u64, n);
    println!("scan (cached): {:.0} cells/s", n as f64 / scan_s);

    let reads = n.min(1_000_000);
    let hits: Vec<CellKey> = (0..reads).map(|_| key(rng.random_range(0..n))).collect();
    let misses: Vec<CellKey> = (0..reads)
        .map(|_| key(rng.random_range(n..n * 2)))
        .collect();
    let start = Instant::now();
    for k in &hits {
        assert!(t.get(k)?.is_some());
    }
    let s = start.elapsed().as_secs_f64();
    println!("get hits (cached): {:.0} ops/s", reads as f64 / s);
    let start = Instant::now();
    for k in &misses {
        assert!(t.get(k)?.is_none());
    }
    let s = start.elapsed().as_secs_f64();
    println!("get misses: {:.0} ops/s", reads as f64 / s);
    println!("read stats: {:?}", stats.snapshot());
    println!(
        "cache: {:?}; table memory {} bytes",
        cache.stats(),
        t.memory_bytes()
    );
    Ok(())
}
