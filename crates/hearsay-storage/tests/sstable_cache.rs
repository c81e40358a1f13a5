//! The block cache as SSTable reads use it: hits avoid disk reads, the cache stays within its
//! capacity, compaction iteration does not fill it, capacity 0 disables it.

use hearsay_storage::cache::BlockCache;
use hearsay_storage::sstable::{Compression, ReadStats, Sstable, SstableOptions, SstableWriter};
use hearsay_storage::{Cell, CellKey, RealFs};
use hearsay_types::{Timestamp, Token};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

fn key(i: u32) -> CellKey {
    CellKey::new(Token(i64::from(i)), format!("k{i:06}"))
}

/// 4000 cells of ~100 bytes in ~4 KiB blocks: about 110 blocks.
fn write(dir: &Path, id: u64) -> anyhow::Result<()> {
    write_compressed(dir, id, Compression::None)
}

fn write_compressed(dir: &Path, id: u64, compression: Compression) -> anyhow::Result<()> {
    let opts = SstableOptions {
        compression,
        ..Default::default()
    };
    let mut w = SstableWriter::create(dir, id, &opts, Arc::new(RealFs), 4000)?;
    for i in 0..4000 {
        w.add(
            &key(i),
            &Cell::value(vec![(i % 251) as u8; 100], Timestamp(1)),
        )?;
    }
    w.finish()?;
    Ok(())
}

#[test]
fn repeated_reads_hit_the_cache() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    let cache = BlockCache::new(8 << 20);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    assert!(t.get(&key(10))?.is_some());
    let after_first = (cache.stats(), stats.snapshot());
    assert_eq!(after_first.0.misses, 1);
    assert_eq!(after_first.0.inserts, 1);
    assert_eq!(after_first.1.blocks_read, 1);
    // Same block again (neighbouring key): a hit, no disk read.
    assert!(t.get(&key(11))?.is_some());
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(stats.snapshot().blocks_read, 1);
    // Read everything twice: the second pass is all hits.
    for i in 0..4000 {
        t.get(&key(i))?;
    }
    let blocks = t.block_count() as u64;
    assert_eq!(stats.snapshot().blocks_read, blocks);
    let before = cache.stats();
    for i in 0..4000 {
        t.get(&key(i))?;
    }
    let after = cache.stats();
    assert_eq!(after.hits - before.hits, 4000);
    assert_eq!(after.misses, before.misses);
    assert_eq!(stats.snapshot().blocks_read, blocks);
    assert!(after.hit_rate() > 0.9);
    Ok(())
}

#[test]
fn cache_stays_under_capacity() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    write(dir.path(), 2)?;
    let capacity = 64 * 1024;
    let cache = BlockCache::new(capacity);
    let stats = Arc::new(ReadStats::default());
    let a = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    let b = Sstable::open(dir.path(), 2, cache.clone(), stats.clone())?;
    for i in (0..4000).step_by(7) {
        // Same key in both tables: same offsets, different tables, never confused.
        let va = a.get(&key(i))?.and_then(|c| c.value);
        let vb = b.get(&key(i))?.and_then(|c| c.value);
        assert_eq!(va, vb);
        assert_eq!(va.as_deref(), Some(&vec![(i % 251) as u8; 100][..]));
        assert!(cache.stats().bytes_used <= capacity, "{:?}", cache.stats());
    }
    let s = cache.stats();
    assert!(s.evictions > 0, "{s:?}");
    assert!(s.bytes_used > capacity / 2, "the cache is used: {s:?}");
    Ok(())
}

#[test]
fn compaction_iteration_does_not_fill_the_cache() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    let cache = BlockCache::new(8 << 20);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    let n = t
        .iter_for_compaction(Bound::Unbounded, Bound::Unbounded)
        .count();
    assert_eq!(n, 4000);
    assert_eq!(cache.stats().inserts, 0);
    assert_eq!(stats.snapshot().blocks_read, t.block_count() as u64);
    // A normal iteration fills it; a second one reads nothing from disk.
    assert_eq!(t.iter(Bound::Unbounded, Bound::Unbounded).count(), 4000);
    assert_eq!(cache.stats().inserts, t.block_count() as u64);
    let read = stats.snapshot().blocks_read;
    assert_eq!(t.iter(Bound::Unbounded, Bound::Unbounded).count(), 4000);
    assert_eq!(stats.snapshot().blocks_read, read);
    Ok(())
}

#[test]
fn zero_capacity_reads_from_disk_every_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    let cache = BlockCache::new(0);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    for _ in 0..3 {
        assert!(t.get(&key(5))?.is_some());
    }
    assert_eq!(stats.snapshot().blocks_read, 3);
    assert_eq!(cache.stats().hits, 0);
    assert_eq!(cache.stats().bytes_used, 0);
    Ok(())
}

#[test]
fn concurrent_readers_with_a_small_cache_see_correct_data() -> anyhow::Result<()> {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Sstable>();
    assert_send_sync::<BlockCache>();

    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    // A few blocks' worth: readers constantly evict each other's blocks.
    let cache = BlockCache::new(32 * 1024);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats)?;
    std::thread::scope(|s| {
        for thread in 0..4u32 {
            let t = t.clone();
            s.spawn(move || {
                for n in 0..3000u32 {
                    let i = (n * 7919 + thread * 101) % 4000;
                    let cell = t.get(&key(i)).expect("get").expect("present");
                    assert_eq!(cell.value.as_deref(), Some(&vec![(i % 251) as u8; 100][..]));
                }
            });
        }
    });
    let s = cache.stats();
    assert!(s.bytes_used <= 32 * 1024, "{s:?}");
    assert_eq!(s.hits + s.misses, 12_000);
    Ok(())
}

/// A reader reuses the buffers of blocks it evicts for the blocks it reads next. Values a
/// caller still holds (slices of an evicted block) must never be overwritten, and reads
/// through reused buffers must return exactly the stored bytes, compressed or not.
#[test]
fn values_held_across_evictions_stay_intact() -> anyhow::Result<()> {
    for compression in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir()?;
        write_compressed(dir.path(), 1, compression)?;
        // Three blocks fit: nearly every read evicts one.
        let cache = BlockCache::new(3 * 4300);
        let t = Sstable::open(dir.path(), 1, cache.clone(), Arc::new(ReadStats::default()))?;
        let mut held = Vec::new();
        for n in 0..4000u32 {
            let i = (n * 7919) % 4000;
            let value = t.get(&key(i))?.and_then(|c| c.value);
            assert_eq!(value.as_deref(), Some(&vec![(i % 251) as u8; 100][..]));
            if n % 10 == 0 {
                held.push((i, value));
            }
        }
        for (i, value) in held {
            assert_eq!(
                value.as_deref(),
                Some(&vec![(i % 251) as u8; 100][..]),
                "{compression:?}: held value of key {i} changed"
            );
        }
        let s = cache.stats();
        assert!(s.evictions > 1000, "{compression:?}: {s:?}");
    }
    Ok(())
}

/// Engine scans iterate uncached: they use blocks already in the cache but never insert the
/// blocks they read from disk.
#[test]
fn uncached_iteration_uses_but_does_not_fill_the_cache() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write(dir.path(), 1)?;
    let cache = BlockCache::new(8 << 20);
    let stats = Arc::new(ReadStats::default());
    let t = Sstable::open(dir.path(), 1, cache.clone(), stats.clone())?;
    assert_eq!(
        t.iter_uncached(Bound::Unbounded, Bound::Unbounded).count(),
        4000
    );
    assert_eq!(cache.stats().inserts, 0);
    // Warm the first block through a point read; an uncached scan then reads it from memory.
    t.get(&key(0))?;
    assert_eq!(cache.stats().inserts, 1);
    let read = stats.snapshot().blocks_read;
    assert_eq!(
        t.iter_uncached(Bound::Unbounded, Bound::Unbounded).count(),
        4000
    );
    assert_eq!(
        stats.snapshot().blocks_read - read,
        t.block_count() as u64 - 1
    );
    assert_eq!(cache.stats().inserts, 1);
    Ok(())
}
