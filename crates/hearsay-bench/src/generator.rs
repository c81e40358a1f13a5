//! Key-number generators, as YCSB defines them: uniform, zipfian (Gray et al., "Quickly
//! Generating Billion-Record Synthetic Databases", SIGMOD 1994), scrambled zipfian and
//! skewed-latest.
//!
//! They are plain synchronous types over a caller-supplied `Rng`, so a run replays from its
//! seed and tests can count frequencies without any I/O.

use rand::Rng;

/// YCSB's default skew (`zipfian.constant`): item `i` (0-based) is drawn with probability
/// proportional to `1 / (i + 1)^0.99`.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item space YCSB's `ScrambledZipfianGenerator` draws from before hashing into the key
/// range: large enough that the popular items land on unrelated key numbers.
pub const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;

/// `zeta(SCRAMBLED_ITEM_COUNT, 0.99)`, precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`)
/// because summing 10^10 terms would take minutes.
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// `zeta(n, theta) = sum_{i=1..n} 1 / i^theta`, continued from an already known prefix sum
/// (`from` terms summing to `initial`), which is how YCSB grows the item count cheaply.
pub fn zeta_from(from: u64, n: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    let mut i = from;
    while i < n {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
        i += 1;
    }
    sum
}

/// `zeta(n, theta)` from scratch.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_from(0, n, theta, 0.0)
}

/// Draws `0..item_count` with item 0 the most popular, by Gray et al.'s closed-form
/// approximation (the same algorithm and constants as YCSB's `ZipfianGenerator`).
#[derive(Clone, Debug)]
pub struct Zipfian {
    item_count: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2theta: f64,
    eta: f64,
    /// The item count `zetan` was computed for; differs from `item_count` only transiently.
    count_for_zeta: u64,
}

impl Zipfian {
    /// A generator over `0..item_count` (`item_count` ≥ 1). Costs O(item_count) to sum zeta.
    pub fn new(item_count: u64, theta: f64) -> Self {
        let item_count = item_count.max(1);
        Self::with_zetan(item_count, theta, zeta(item_count, theta))
    }

    /// A generator whose `zeta(item_count, theta)` is already known.
    pub fn with_zetan(item_count: u64, theta: f64, zetan: f64) -> Self {
        let item_count = item_count.max(1);
        let zeta2theta = zeta(2, theta);
        let mut z = Zipfian {
            item_count,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            zeta2theta,
            eta: 0.0,
            count_for_zeta: item_count,
        };
        z.eta = z.compute_eta();
        z
    }

    fn compute_eta(&self) -> f64 {
        (1.0 - (2.0 / self.item_count as f64).powf(1.0 - self.theta))
            / (1.0 - self.zeta2theta / self.zetan)
    }

    /// The number of items drawn from.
    pub fn item_count(&self) -> u64 {
        self.item_count
    }

    /// `zeta(item_count, theta)`.
    pub fn zetan(&self) -> f64 {
        self.zetan
    }

    /// Grows (never shrinks) the item space, summing only the new zeta terms, as YCSB's
    /// `nextLong(itemcount)` does for the latest distribution while inserts arrive.
    pub fn grow_to(&mut self, item_count: u64) {
        if item_count > self.count_for_zeta {
            self.zetan = zeta_from(self.count_for_zeta, item_count, self.theta, self.zetan);
            self.count_for_zeta = item_count;
            self.item_count = item_count;
            self.eta = self.compute_eta();
        }
    }

    /// One draw in `0..item_count`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.item_count - 1);
        }
        let v = (self.item_count as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        // The float formula can land on `item_count` itself for u close to 1.
        v.min(self.item_count - 1)
    }
}

/// YCSB's 64-bit FNV-1a over the eight little-endian bytes of `value`, then `Math.abs`.
pub fn fnv_hash64(value: u64) -> u64 {
    const FNV_OFFSET_BASIS_64: u64 = 0xCBF2_9CE4_8422_2325;
    const FNV_PRIME_64: u64 = 1_099_511_628_211;
    let mut hash = FNV_OFFSET_BASIS_64;
    let mut v = value;
    for _ in 0..8 {
        hash ^= v & 0xff;
        hash = hash.wrapping_mul(FNV_PRIME_64);
        v >>= 8;
    }
    // Java's Math.abs(Long.MIN_VALUE) stays negative; its bit pattern is what YCSB then uses.
    (hash as i64).wrapping_abs() as u64
}

/// Zipfian popularity spread over the key range: draw from a zipfian over
/// [`SCRAMBLED_ITEM_COUNT`] items and hash the item into `0..key_count`, so hot keys are not
/// clustered at the start of the range (YCSB's `ScrambledZipfianGenerator`).
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    key_count: u64,
    zipfian: Zipfian,
}

impl ScrambledZipfian {
    /// Keys `0..key_count` (`key_count` ≥ 1), with YCSB's constant 0.99. O(1) to build.
    pub fn new(key_count: u64) -> Self {
        ScrambledZipfian {
            key_count: key_count.max(1),
            zipfian: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// The key number the `rank`-th most popular zipfian item maps to.
    pub fn key_of_item(&self, item: u64) -> u64 {
        fnv_hash64(item) % self.key_count
    }

    /// One draw in `0..key_count`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.key_of_item(self.zipfian.next(rng))
    }
}

/// The most recently inserted keys are the most popular (YCSB's `SkewedLatestGenerator`):
/// `latest - zipfian(latest + 1)`.
#[derive(Clone, Debug)]
pub struct SkewedLatest {
    zipfian: Zipfian,
}

impl SkewedLatest {
    /// Starts with keys `0..key_count` present. O(key_count) to sum zeta.
    pub fn new(key_count: u64) -> Self {
        SkewedLatest {
            zipfian: Zipfian::new(key_count.max(1), ZIPFIAN_CONSTANT),
        }
    }

    /// One draw in `0..=latest`, where `latest` is the highest key number known to exist.
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R, latest: u64) -> u64 {
        self.zipfian.grow_to(latest.saturating_add(1));
        latest.saturating_sub(self.zipfian.next(rng))
    }
}

/// How key numbers are chosen for reads and updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Scrambled zipfian with constant 0.99: a few hot keys spread over the range.
    Zipfian,
    /// Zipfian over recency: the newest keys are the hottest.
    Latest,
}

/// A per-worker key chooser for one distribution.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// See [`Distribution::Uniform`].
    Uniform {
        /// Keys `0..key_count`.
        key_count: u64,
    },
    /// See [`Distribution::Zipfian`].
    Zipfian(ScrambledZipfian),
    /// See [`Distribution::Latest`].
    Latest(SkewedLatest),
}

impl KeyChooser {
    /// A chooser over the initial `key_count` keys.
    pub fn new(distribution: Distribution, key_count: u64) -> Self {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform {
                key_count: key_count.max(1),
            },
            Distribution::Zipfian => KeyChooser::Zipfian(ScrambledZipfian::new(key_count)),
            Distribution::Latest => KeyChooser::Latest(SkewedLatest::new(key_count)),
        }
    }

    /// A key number; `latest` is the highest key number known to exist (grows with inserts;
    /// only the latest distribution follows it, the others keep to the loaded range as YCSB's
    /// uniform chooser does).
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R, latest: u64) -> u64 {
        match self {
            KeyChooser::Uniform { key_count } => rng.random_range(0..*key_count),
            KeyChooser::Zipfian(z) => z.next(rng),
            KeyChooser::Latest(l) => l.next(rng, latest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn seed() -> u64 {
        let s = std::env::var("HEARSAY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_2026);
        eprintln!("seed {s} (set HEARSAY_TEST_SEED to replay)");
        s
    }

    /// The sampled frequencies of a zipfian over 100 items match `1/(i+1)^0.99 / zeta(100)`:
    /// total variation distance small, and the head items each within a few percent.
    #[test]
    fn zipfian_frequencies_match_theory() {
        let s = seed();
        let mut rng = SmallRng::seed_from_u64(s);
        const N: u64 = 100;
        const SAMPLES: u64 = 400_000;
        let z = Zipfian::new(N, ZIPFIAN_CONSTANT);
        let mut counts = vec![0u64; N as usize];
        for _ in 0..SAMPLES {
            let v = z.next(&mut rng);
            assert!(v < N, "seed {s}: draw {v} out of range");
            counts[v as usize] += 1;
        }
        let zetan = zeta(N, ZIPFIAN_CONSTANT);
        let mut tv = 0.0;
        for (i, &c) in counts.iter().enumerate() {
            let expected = 1.0 / ((i + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan;
            let observed = c as f64 / SAMPLES as f64;
            tv += (expected - observed).abs() / 2.0;
            // Gray's formula is exact for the two hottest items (they are special-cased).
            if i < 2 {
                let rel = (observed - expected).abs() / expected;
                assert!(
                    rel < 0.05,
                    "seed {s}: item {i} observed {observed:.4} expected {expected:.4}"
                );
            }
        }
        // Gray's formula is an approximation beyond the first two items; YCSB accepts it. A
        // uniform draw would be at TV ≈ 0.48 here, an off-by-one rank at ≈ 0.1.
        eprintln!("total variation distance {tv:.4}");
        assert!(tv < 0.03, "seed {s}: total variation distance {tv:.4}");
    }

    /// The precomputed scrambled constant is zeta(10^10, 0.99): check its first million terms
    /// plus the integral tail bound agree, and that the hottest key gets 1/zetan of the draws.
    #[test]
    fn scrambled_zipfian_hottest_key_and_range() {
        let s = seed();
        let head = zeta(1_000_000, ZIPFIAN_CONSTANT);
        // Tail sum_{i>10^6}^{10^10} i^-0.99 ≈ ∫ x^-0.99 dx = 100 (b^0.01 - a^0.01).
        let tail = 100.0 * (1e10f64.powf(0.01) - 1e6f64.powf(0.01));
        assert!(
            (head + tail - SCRAMBLED_ZETAN).abs() < 0.01,
            "{}",
            head + tail
        );

        let mut rng = SmallRng::seed_from_u64(s);
        const KEYS: u64 = 1_000;
        const SAMPLES: u64 = 200_000;
        let z = ScrambledZipfian::new(KEYS);
        let mut counts = vec![0u64; KEYS as usize];
        for _ in 0..SAMPLES {
            let k = z.next(&mut rng);
            assert!(k < KEYS, "seed {s}: key {k} out of range");
            counts[k as usize] += 1;
        }
        // Key of item 0 gets p0 = 1/zetan plus its share (~1/KEYS) of the long tail.
        let p0 = 1.0 / SCRAMBLED_ZETAN;
        let observed = counts[z.key_of_item(0) as usize] as f64 / SAMPLES as f64;
        assert!(
            observed > p0 * 0.95 && observed < p0 * 1.15 + 1.0 / KEYS as f64,
            "seed {s}: hottest key {observed:.4}, theory {p0:.4}"
        );
        // Scrambled: the hot keys are not the low key numbers.
        let low: u64 = counts[..10].iter().sum();
        assert!((low as f64 / SAMPLES as f64) < 0.1, "seed {s}");
        // Skewed: the top 1% of keys take far more than 1% of the draws.
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = counts[..10].iter().sum();
        assert!(top as f64 / SAMPLES as f64 > 0.12, "seed {s}: top-10 {top}");
    }

    #[test]
    fn fnv_is_ycsbs_fnv1a_with_abs() {
        // Eight zero octets: XOR changes nothing, so the hash is basis * prime^8, then abs.
        let expected = (0xCBF2_9CE4_8422_2325u64.wrapping_mul(1_099_511_628_211u64.wrapping_pow(8))
            as i64)
            .wrapping_abs() as u64;
        assert_eq!(fnv_hash64(0), expected);
        // Never negative as a Java long (except abs(MIN), which YCSB also keeps).
        for v in 0..10_000u64 {
            let h = fnv_hash64(v);
            assert!(h <= i64::MAX as u64 || h == 1 << 63);
        }
        // Spreads consecutive numbers.
        assert_ne!(fnv_hash64(1) % 1000, fnv_hash64(2) % 1000);
    }

    #[test]
    fn latest_prefers_newest_and_grows() {
        let s = seed();
        let mut rng = SmallRng::seed_from_u64(s);
        let mut l = SkewedLatest::new(1_000);
        let mut newest = 0u64;
        for _ in 0..10_000 {
            let k = l.next(&mut rng, 999);
            assert!(k <= 999);
            if k == 999 {
                newest += 1;
            }
        }
        let p0 = 1.0 / zeta(1_000, ZIPFIAN_CONSTANT);
        let observed = newest as f64 / 10_000.0;
        assert!((observed - p0).abs() < 0.02, "seed {s}: {observed} vs {p0}");
        // After inserts the new key is the hottest and reachable.
        let mut saw_new = false;
        for _ in 0..1_000 {
            let k = l.next(&mut rng, 1_499);
            assert!(k <= 1_499);
            saw_new |= k == 1_499;
        }
        assert!(saw_new, "seed {s}");
    }

    #[test]
    fn uniform_covers_range() {
        let mut rng = SmallRng::seed_from_u64(seed());
        let mut c = KeyChooser::new(Distribution::Uniform, 10);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            seen[c.next(&mut rng, 9) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }
}
