//! The bounded block cache: decoded (checksum-verified, decompressed) SSTable blocks, shared
//! by every open table, so a hot block costs neither a read nor a CRC nor a decompression.
//!
//! Sharded CLOCK (second-chance) rather than strict LRU: a hit only sets a flag, so readers
//! never reorder a list, and a scan that touches each block once does not flush the hot set
//! as quickly as LRU would. Each shard is a mutex around a map (key to block, so a hit is one
//! probe) and a ring of keys for the CLOCK hand; the shard's share of the capacity bounds its
//! bytes, so the whole cache never holds more than `capacity_bytes`.
//!
//! Keys are `(table uid, block offset)`. The uid comes from [`BlockCache::next_table_uid`] at
//! table open, not from the file id, so two tables with the same file id in different
//! directories (keyspaces) can never see each other's blocks.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most shards a cache is split into; more shards mean less lock contention, but each shard
/// must still hold many blocks for CLOCK to approximate LRU.
const MAX_SHARDS: usize = 16;
/// Smallest share of the capacity worth a shard of its own (a few hundred 4 KiB blocks).
const MIN_SHARD_CAPACITY_BYTES: u64 = 1 << 20;
/// Bytes charged per entry on top of the block itself: map entry, slot and `Bytes` header.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// Data blocks a compaction read, and how many of them were in the cache: how the writer
/// tells hot input ranges from cold ones (see `SstableWriter::warm_cache`).
#[derive(Debug, Default)]
pub struct CacheTally {
    pub cached: std::sync::atomic::AtomicU64,
    pub read: std::sync::atomic::AtomicU64,
}

/// Where a block lives: the cache-unique uid of its table and its offset in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub table_uid: u64,
    pub offset: u64,
}

impl BlockKey {
    #[inline]
    fn mix(&self) -> u64 {
        // Cheap, well-spread 64-bit mix (the constants are the golden ratio and a murmur
        // finaliser constant); SipHash would cost more than the rest of a cache hit.
        let h = self.table_uid.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.offset.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^ (h >> 29)
    }
}

/// A hasher for [`BlockKey`] maps that passes through the precomputed mix.
#[derive(Default)]
struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A resident block. It lives in the map itself, so a hit is one hash probe; the ring
/// only remembers keys, for the CLOCK hand.
struct Entry {
    block: Bytes,
    charge: u64,
    /// Its position in the ring (and in `referenced`).
    slot: usize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<BlockKey, Entry, BuildHasherDefault<PassHasher>>,
    /// CLOCK ring of resident keys; `None` marks a free position (listed in `free`).
    ring: Vec<Option<BlockKey>>,
    /// The CLOCK reference bit of each ring position. Kept beside the ring rather than in
    /// the map entry, so the hand's sweep reads a dense array instead of probing the map
    /// (one cache miss per step) for every block it passes.
    referenced: Vec<bool>,
    free: Vec<usize>,
    hand: usize,
    used_bytes: u64,
}

/// Counters of a [`BlockCache`], as of one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub bytes_used: u64,
    pub capacity_bytes: u64,
}

impl CacheStats {
    /// Hits over lookups, 0 when there were none.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// A bounded, sharded CLOCK cache of decoded blocks. Capacity 0 disables it (every lookup
/// misses, inserts are dropped).
pub struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    capacity_bytes: u64,
    shard_capacity_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    bytes_used: AtomicU64,
    next_uid: AtomicU64,
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("shards", &self.shards.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (0 disables it).
    pub fn new(capacity_bytes: u64) -> Arc<Self> {
        let shard_count = (capacity_bytes / MIN_SHARD_CAPACITY_BYTES).clamp(1, MAX_SHARDS as u64);
        // A power of two so that shard selection is a mask.
        let shard_count = if shard_count.is_power_of_two() {
            shard_count
        } else {
            shard_count.next_power_of_two() / 2
        } as usize;
        let shards = (0..shard_count)
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Arc::new(BlockCache {
            shards,
            capacity_bytes,
            shard_capacity_bytes: capacity_bytes / shard_count as u64,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            bytes_used: AtomicU64::new(0),
            next_uid: AtomicU64::new(1),
        })
    }

    /// A uid for a newly opened table, unique within this cache.
    pub fn next_table_uid(&self) -> u64 {
        self.next_uid.fetch_add(1, Ordering::Relaxed)
    }

    /// Configured capacity.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    #[inline]
    fn shard(&self, key: &BlockKey) -> &Mutex<Shard> {
        let idx = (key.mix() >> 32) as usize & (self.shards.len() - 1);
        &self.shards[idx]
    }

    /// Looks a block up, counting a hit or a miss.
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        if self.capacity_bytes == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let found = {
            let mut guard = self.shard(key).lock();
            let shard = &mut *guard;
            shard.map.get(key).map(|e| {
                shard.referenced[e.slot] = true;
                e.block.clone()
            })
        };
        match found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// Inserts a block, evicting unreferenced blocks until it fits. A block larger than a
    /// shard's share of the capacity is not cached.
    pub fn insert(&self, key: BlockKey, block: Bytes) {
        self.insert_with(key, block, drop);
    }

    /// As [`Self::insert`], handing each evicted block to `on_evict` (called under the
    /// shard's lock, so it must be cheap) instead of dropping it: a reader that missed can
    /// reuse an evicted block's buffer for the block it reads next, which saves an
    /// allocation and the free of a cold 4 KiB buffer per miss.
    pub fn insert_with(&self, key: BlockKey, block: Bytes, mut on_evict: impl FnMut(Bytes)) {
        let charge = block.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if self.capacity_bytes == 0 || charge > self.shard_capacity_bytes {
            return;
        }
        let mut evicted = 0u64;
        let mut freed_bytes = 0u64;
        {
            let mut guard = self.shard(&key).lock();
            let shard = &mut *guard;
            if let Some(e) = shard.map.get(&key) {
                // Same bytes by construction (a block at an offset never changes); keep the
                // resident copy and mark it used.
                shard.referenced[e.slot] = true;
                return;
            }
            // CLOCK sweep. Each step either evicts or clears a flag, so two full turns of
            // the ring are enough to free anything the shard holds.
            let mut steps_left = shard.ring.len().saturating_mul(2) + 1;
            while shard.used_bytes + charge > self.shard_capacity_bytes && steps_left > 0 {
                steps_left -= 1;
                if shard.ring.is_empty() {
                    break;
                }
                let hand = shard.hand % shard.ring.len();
                shard.hand = hand + 1;
                let Some(k) = shard.ring[hand] else {
                    continue;
                };
                if shard.referenced[hand] {
                    shard.referenced[hand] = false;
                } else {
                    shard.ring[hand] = None;
                    shard.free.push(hand);
                    if let Some(e) = shard.map.remove(&k) {
                        shard.used_bytes -= e.charge;
                        evicted += 1;
                        freed_bytes += e.charge;
                        on_evict(e.block);
                    }
                }
            }
            if shard.used_bytes + charge > self.shard_capacity_bytes {
                // Could not make room (should not happen, see above): skip rather than
                // exceed the bound.
                drop(guard);
                self.account_evictions(evicted, freed_bytes);
                return;
            }
            let slot = match shard.free.pop() {
                Some(pos) => {
                    shard.ring[pos] = Some(key);
                    shard.referenced[pos] = false;
                    pos
                }
                None => {
                    shard.ring.push(Some(key));
                    shard.referenced.push(false);
                    shard.ring.len() - 1
                }
            };
            shard.map.insert(
                key,
                Entry {
                    block,
                    charge,
                    slot,
                },
            );
            shard.used_bytes += charge;
        }
        self.account_evictions(evicted, freed_bytes);
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.bytes_used.fetch_add(charge, Ordering::Relaxed);
    }

    fn account_evictions(&self, evicted: u64, freed_bytes: u64) {
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
            self.bytes_used.fetch_sub(freed_bytes, Ordering::Relaxed);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes_used: self.bytes_used.load(Ordering::Relaxed),
            capacity_bytes: self.capacity_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(table_uid: u64, offset: u64) -> BlockKey {
        BlockKey { table_uid, offset }
    }

    #[test]
    fn hit_miss_and_counters() {
        let cache = BlockCache::new(1 << 20);
        assert_eq!(cache.get(&key(1, 0)), None);
        cache.insert(key(1, 0), Bytes::from_static(b"block"));
        assert_eq!(cache.get(&key(1, 0)).as_deref(), Some(&b"block"[..]));
        assert_eq!(
            cache.get(&key(2, 0)),
            None,
            "another table's block is a miss"
        );
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.evictions), (1, 2, 1, 0));
        assert_eq!(s.bytes_used, 5 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn stays_under_capacity_and_evicts() {
        let capacity = 64 * 1024;
        let cache = BlockCache::new(capacity);
        let block = Bytes::from(vec![7u8; 4000]);
        for i in 0..1000 {
            cache.insert(key(1, i * 4096), block.clone());
            assert!(cache.stats().bytes_used <= capacity);
        }
        let s = cache.stats();
        assert!(s.evictions > 900, "{s:?}");
        assert_eq!(
            s.inserts - s.evictions,
            s.bytes_used / (4000 + ENTRY_OVERHEAD_BYTES)
        );
    }

    #[test]
    fn referenced_blocks_survive_a_sweep() {
        // 15 blocks fit; keep touching block 0 while streaming others through.
        let cache = BlockCache::new(16 * (1000 + ENTRY_OVERHEAD_BYTES));
        let block = Bytes::from(vec![1u8; 1000]);
        cache.insert(key(1, 0), block.clone());
        for i in 1..200 {
            assert!(cache.get(&key(1, 0)).is_some(), "hot block evicted at {i}");
            cache.insert(key(1, i), block.clone());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Random inserts and lookups: the cache never exceeds its capacity, a hit returns
        /// exactly the bytes inserted under that key, and the counters add up.
        #[test]
        fn bounded_and_faithful(
            capacity in 0u64..20_000,
            ops in proptest::collection::vec((0u64..40, 0usize..3000, proptest::prelude::any::<bool>()), 1..300),
        ) {
            let cache = BlockCache::new(capacity);
            let mut lookups = 0u64;
            for (k, len, is_get) in ops {
                // The content is a function of the key, as a block at an offset is.
                let content = Bytes::from(vec![k as u8; len % 50 * 60 + k as usize]);
                let key = BlockKey { table_uid: k % 3, offset: k };
                if is_get {
                    lookups += 1;
                    if let Some(b) = cache.get(&key) {
                        proptest::prop_assert_eq!(b.len() % 60, k as usize % 60);
                        proptest::prop_assert!(b.iter().all(|&x| x == k as u8));
                    }
                } else {
                    cache.insert(key, content);
                }
                let s = cache.stats();
                proptest::prop_assert!(s.bytes_used <= capacity, "{:?}", s);
            }
            let s = cache.stats();
            proptest::prop_assert_eq!(s.hits + s.misses, lookups);
            proptest::prop_assert!(s.evictions <= s.inserts);
        }
    }

    #[test]
    fn insert_with_hands_over_exactly_the_evicted_blocks() {
        let cache = BlockCache::new(4 * (1000 + ENTRY_OVERHEAD_BYTES));
        let mut handed = Vec::new();
        for i in 0..20u64 {
            cache.insert_with(key(1, i), Bytes::from(vec![i as u8; 1000]), |b| {
                handed.push(b)
            });
        }
        let s = cache.stats();
        assert_eq!(handed.len() as u64, s.evictions);
        assert!(s.evictions >= 16, "{s:?}");
        for b in &handed {
            // An evicted block is no longer served, and its bytes are intact.
            let i = b[0];
            assert!(b.iter().all(|&x| x == i));
            assert!(cache.get(&key(1, u64::from(i))).is_none());
        }
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = BlockCache::new(0);
        cache.insert(key(1, 0), Bytes::from_static(b"x"));
        assert_eq!(cache.get(&key(1, 0)), None);
        assert_eq!(cache.stats().bytes_used, 0);
        assert_eq!(cache.stats().inserts, 0);
    }

    #[test]
    fn oversize_block_is_not_cached() {
        let cache = BlockCache::new(1000);
        cache.insert(key(1, 0), Bytes::from(vec![0u8; 2000]));
        assert_eq!(cache.get(&key(1, 0)), None);
        assert_eq!(cache.stats().bytes_used, 0);
    }
}
