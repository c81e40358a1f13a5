//! A throughput probe for the SSTable alone (no engine): write N cells, then random point
//! reads (hits and misses, warm cache) and a full scan. A bench binary (`harness = false`):
//! `cargo bench -p hearsay-storage --bench sstable_perf`
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

/// Wall time and this thread's on-CPU time (from /proc/thread-self/schedstat, in ns), so the
/// figures mean something on a machine shared with other builds.
struct Timer {
    wall: Instant,
    cpu_ns: u64,
}

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu_ns: thread_cpu_ns(),
        }
    }
    /// "X/s wall, Y/s on-CPU" for `n` operations.
    fn rate(&self, n: u64) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (thread_cpu_ns() - self.cpu_ns) as f64 / 1e9;
        format!(
            "{:.0}/s wall, {:.0}/s on-CPU ({:.0} ns/op on-CPU)",
            n as f64 / wall,
            n as f64 / cpu,
            cpu * 1e9 / n as f64
        )
    }
}

fn key(i: u64) -> CellKey {
    // Token from a cheap mix so keys are spread as real tokens are.
    let token = Token(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64);
    CellKey::new(token, format!("key{i:012}"))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and any filter); this probe has one case and no options.
    let n: u64 = std::env::var("SST_PERF_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut keys: Vec<(CellKey, u64)> = (0..n).map(|i| (key(i), i)).collect();
    keys.sort();
    let mut rng = StdRng::seed_from_u64(1);

    // Random lower-case letters: what a benchmark's values look like, and about as
    // (in)compressible for LZ4. Generated up front (one buffer, sliced) so the timings
    // measure the table, not the generator.
    let values = bytes::Bytes::from(
        (0..n * 100)
            .map(|_| rng.random_range(b'a'..=b'z'))
            .collect::<Vec<u8>>(),
    );
    let cells: Vec<Cell> = keys
        .iter()
        .map(|(_, i)| {
            let at = (*i * 100) as usize;
            Cell::value(values.slice(at..at + 100), Timestamp(1))
        })
        .collect();

    let timer = Timer::start();
    let mut w = SstableWriter::create(
        dir.path(),
        1,
        &SstableOptions::default(),
        Arc::new(RealFs),
        keys.len(),
    )?;
    for ((k, _), c) in keys.iter().zip(&cells) {
        w.add(k, c)?;
    }
    let meta = w.finish()?;
    println!(
        "write {n} cells (incl. fsync): {}; file {} bytes ({:.1} bytes/cell), index {} bytes, bloom {} bytes",
        timer.rate(n),
        meta.size_bytes,
        meta.size_bytes as f64 / n as f64,
        meta.index_bytes,
        meta.bloom_bytes
    );

    let cache = BlockCache::new(1 << 30);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    let timer = Timer::start();
    let count = t.iter(Bound::Unbounded, Bound::Unbounded).count();
    assert_eq!(count as u64, n);
    println!("scan (cold cache, warm page cache): {}", timer.rate(n));
    let timer = Timer::start();
    let count = t.iter(Bound::Unbounded, Bound::Unbounded).count();
    assert_eq!(count as u64, n);
    println!("scan (cached blocks): {}", timer.rate(n));

    let reads = n.min(1_000_000);
    let hits: Vec<CellKey> = (0..reads).map(|_| key(rng.random_range(0..n))).collect();
    let misses: Vec<CellKey> = (0..reads)
        .map(|_| key(rng.random_range(n..n * 2)))
        .collect();
    let timer = Timer::start();
    for k in &hits {
        assert!(t.get(k)?.is_some());
    }
    println!("get hits (cached blocks): {}", timer.rate(reads));
    let timer = Timer::start();
    for k in &misses {
        assert!(t.get(k)?.is_none());
    }
    println!("get misses: {}", timer.rate(reads));
    println!("read stats: {:?}", stats.snapshot());
    println!(
        "cache: {:?}; table memory {} bytes",
        cache.stats(),
        t.memory_bytes()
    );
    Ok(())
}
