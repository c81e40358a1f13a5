//! Bloom filters for SSTables: a point read skips a table whose filter says "definitely not
//! here", which is most tables for most keys.
//!
//! Our own implementation so its bytes on disk are ours to keep stable (see
//! `docs/storage-format.md`). One 64-bit xxh3 hash per key, expanded into `k` probe positions
//! by double hashing (Kirsch & Mitzenmacher: `h1 + i*h2`, mapped onto
//! `0..m` by multiply-shift), which keeps the theoretical
//! false-positive rate `(1 - e^(-k/b))^k` for `b` bits per key while hashing the key once.
//!
//! Encoded form: `k: u8`, `num_bits: u64 LE`, then `ceil(num_bits / 8)` bytes of bits (bit `i`
//! is `bytes[i / 8] >> (i % 8) & 1`). Decoding checks every length against the input.

use hearsay_types::Token;
use std::fmt;

/// Upper bound on probes per key. More than this only costs time: with 30 probes the filter
/// would need > 43 bits per key to be optimal, far past anything useful.
pub const MAX_PROBES: u32 = 30;

/// Bytes of the encoded header (`k: u8`, `num_bits: u64`).
const HEADER_BYTES: usize = 9;

/// The hash a bloom filter uses for a cell key: xxh3-64 of the key bytes seeded with the
/// token's bits. Seeding (instead of hashing `token ++ key`) hashes without building a
/// composite buffer. Part of the on-disk format: changing it breaks every v1 filter.
#[inline]
pub fn hash_key(token: Token, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, token.0 as u64)
}

/// Probes per key that minimise the false-positive rate for `bits_per_key`: `b * ln 2`,
/// clamped to `1..=MAX_PROBES`.
pub fn probes_for(bits_per_key: u32) -> u32 {
    let k = (f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32;
    k.clamp(1, MAX_PROBES)
}

/// A bloom filter over key hashes (see [`hash_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct BloomFilter {
    /// Number of probes per key; 0 only for the empty filter (which matches everything).
    probes: u8,
    num_bits: u64,
    bits: Vec<u8>,
}

impl fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BloomFilter")
            .field("probes", &self.probes)
            .field("num_bits", &self.num_bits)
            .finish()
    }
}

impl BloomFilter {
    /// Builds a filter for `hashes` with `bits_per_key` bits per key. With `bits_per_key == 0`
    /// or no keys, the filter is empty and [`BloomFilter::may_contain`] always says yes (a
    /// filter must never produce a false negative).
    pub fn build(hashes: &[u64], bits_per_key: u32) -> BloomFilter {
        if bits_per_key == 0 || hashes.is_empty() {
            return BloomFilter {
                probes: 0,
                num_bits: 0,
                bits: Vec::new(),
            };
        }
        // At least 64 bits so that tiny filters are not all ones.
        let num_bits = (hashes.len() as u64)
            .saturating_mul(u64::from(bits_per_key))
            .max(64);
        let num_bytes = num_bits.div_ceil(8);
        let num_bits = num_bytes * 8;
        let mut filter = BloomFilter {
            probes: probes_for(bits_per_key) as u8,
            num_bits,
            bits: vec![0; num_bytes as usize],
        };
        for &h in hashes {
            filter.insert(h);
        }
        filter
    }

    #[inline]
    fn probe_positions(&self, hash: u64) -> impl Iterator<Item = u64> + use<> {
        let m = self.num_bits;
        let h1 = hash;
        // An odd step is coprime with any power of two and rarely shares factors otherwise;
        // the rotation makes it independent enough of h1 for double hashing.
        let h2 = hash.rotate_left(32) | 1;
        // Multiply-shift maps a 64-bit value onto 0..m without a division (Lemire's
        // "fastrange"); it uses the high bits, which the wrapping sum mixes well.
        (0..u64::from(self.probes)).map(move |i| {
            let x = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(x) * u128::from(m)) >> 64) as u64
        })
    }

    fn insert(&mut self, hash: u64) {
        for pos in self.probe_positions(hash) {
            if let Some(byte) = self.bits.get_mut((pos / 8) as usize) {
                *byte |= 1 << (pos % 8);
            }
        }
    }

    /// False means the key is certainly absent; true means it may be present.
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        if self.probes == 0 || self.num_bits == 0 {
            return true;
        }
        // No early exit: the probes' loads are independent, and without a branch between
        // them the CPU issues them together, so a filter that misses the CPU caches costs
        // about one memory latency per lookup instead of one per probe until the first
        // clear bit (most tables a point read consults answer "absent").
        let mut all_set = true;
        for pos in self.probe_positions(hash) {
            let bit = self
                .bits
                .get((pos / 8) as usize)
                .map_or(0, |b| (b >> (pos % 8)) & 1);
            all_set &= bit != 0;
        }
        all_set
    }

    /// Starts loading the lines [`Self::may_contain`] will read for `hash`, without waiting
    /// for them: a batch of lookups prefetches every key's lines first, so their cache misses
    /// overlap instead of following one another.
    pub fn prefetch(&self, hash: u64) {
        if self.probes == 0 || self.num_bits == 0 {
            return;
        }
        for pos in self.probe_positions(hash) {
            if let Some(b) = self.bits.get((pos / 8) as usize) {
                crate::prefetch::prefetch(b);
            }
        }
    }

    /// Probes per key.
    pub fn probes(&self) -> u32 {
        u32::from(self.probes)
    }

    /// Bits in the filter.
    pub fn num_bits(&self) -> u64 {
        self.num_bits
    }

    /// Bytes this filter holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.bits.len() as u64 + std::mem::size_of::<Self>() as u64
    }

    /// Appends the encoded filter to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.probes);
        out.extend_from_slice(&self.num_bits.to_le_bytes());
        out.extend_from_slice(&self.bits);
    }

    /// Decodes a filter, rejecting anything malformed. Allocates at most `input.len()` bytes.
    pub fn decode(input: &[u8]) -> Result<BloomFilter, &'static str> {
        let (&probes, rest) = input.split_first().ok_or("bloom filter: empty input")?;
        let (num_bits_bytes, bits) = rest
            .split_first_chunk::<8>()
            .ok_or("bloom filter: truncated header")?;
        let num_bits = u64::from_le_bytes(*num_bits_bytes);
        if u32::from(probes) > MAX_PROBES {
            return Err("bloom filter: too many probes");
        }
        if num_bits.div_ceil(8) != bits.len() as u64 || num_bits % 8 != 0 {
            return Err("bloom filter: bit count does not match its length");
        }
        if (probes == 0) != (num_bits == 0) {
            return Err("bloom filter: probes and bits disagree about emptiness");
        }
        debug_assert_eq!(HEADER_BYTES + bits.len(), input.len());
        Ok(BloomFilter {
            probes,
            num_bits,
            bits: bits.to_vec(),
        })
    }

    /// The theoretical false-positive rate for `bits_per_key` with the probes this module
    /// picks: `(1 - e^(-k/b))^k`.
    pub fn theoretical_fp_rate(bits_per_key: u32) -> f64 {
        if bits_per_key == 0 {
            return 1.0;
        }
        let k = f64::from(probes_for(bits_per_key));
        let b = f64::from(bits_per_key);
        (1.0 - (-k / b).exp()).powf(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn keys(seed: u64, n: usize) -> Vec<u64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let token = Token(rng.random());
                let key: [u8; 12] = rng.random();
                hash_key(token, &key)
            })
            .collect()
    }

    #[test]
    fn no_false_negatives() {
        let hashes = keys(1, 5_000);
        let f = BloomFilter::build(&hashes, 10);
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
    }

    #[test]
    fn false_positive_rate_near_theory_at_10_bits_per_key() {
        let seed = 42;
        let inserted = keys(seed, 20_000);
        let f = BloomFilter::build(&inserted, 10);
        let probes = keys(seed + 1, 100_000);
        let fp = probes.iter().filter(|&&h| f.may_contain(h)).count() as f64 / 100_000.0;
        let theory = BloomFilter::theoretical_fp_rate(10);
        assert!((0.007..0.0095).contains(&theory), "theory {theory}");
        // Generous band: sampling noise at 100k probes is ~ +/-0.0006.
        assert!(
            fp < theory * 1.35 && fp > theory * 0.6,
            "seed {seed}: fp rate {fp} vs theoretical {theory}"
        );
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_malformed() {
        let f = BloomFilter::build(&keys(3, 100), 10);
        let mut buf = Vec::new();
        f.encode(&mut buf);
        assert_eq!(BloomFilter::decode(&buf), Ok(f.clone()));
        assert!(BloomFilter::decode(&buf[..buf.len() - 1]).is_err());
        assert!(BloomFilter::decode(&buf[..5]).is_err());
        assert!(BloomFilter::decode(&[]).is_err());
        let mut bad = buf.clone();
        bad[0] = 200;
        assert!(BloomFilter::decode(&bad).is_err());
        let mut huge = buf;
        huge[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(BloomFilter::decode(&huge).is_err());
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = BloomFilter::build(&[], 10);
        assert!(f.may_contain(123));
        let f = BloomFilter::build(&keys(4, 10), 0);
        assert!(f.may_contain(456));
        let mut buf = Vec::new();
        f.encode(&mut buf);
        assert_eq!(BloomFilter::decode(&buf), Ok(f));
    }

    #[test]
    fn probes_follow_bits_per_key() {
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(1), 1);
        assert_eq!(probes_for(1000), MAX_PROBES);
    }
}
