//! Cassandra's `Murmur3Partitioner` token: the first 64 bits of MurmurHash3 x64-128 (seed 0),
//! as a signed integer, with `i64::MIN` mapped to `i64::MAX` (Cassandra reserves the minimum).
//!
//! Private copy until `hearsay-ring` exports its partitioner; keep both in step with the
//! vectors in the tests (taken from Cassandra).

use hearsay_types::Token;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

fn fmix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn read_u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The first 64 bits of MurmurHash3 x64-128 with seed 0, with Cassandra's quirk: tail bytes
/// are sign-extended (Java bytes are signed), which changes hashes of keys with bytes >= 0x80.
pub fn murmur3_x64_128_h1(data: &[u8]) -> i64 {
    let len = data.len();
    let nblocks = len / 16;
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;
    for i in 0..nblocks {
        let block = &data[i * 16..i * 16 + 16];
        let mut k1 = read_u64_le(&block[..8]);
        let mut k2 = read_u64_le(&block[8..]);
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = &data[nblocks * 16..];
    let mut k1: u64 = 0;
    let mut k2: u64 = 0;
    // Java's `(long) key.get(i)` sign-extends each byte.
    let b = |i: usize| tail[i] as i8 as i64 as u64;
    let rem = len & 15;
    if rem > 8 {
        for i in (8..rem).rev() {
            k2 ^= b(i) << ((i - 8) * 8);
        }
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
    }
    if rem > 0 {
        for i in (0..rem.min(8)).rev() {
            k1 ^= b(i) << (i * 8);
        }
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
    }
    h1 ^= len as u64;
    h2 ^= len as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h1 as i64
}

/// The ring token of a key.
pub fn token_of(key: &[u8]) -> Token {
    let h = murmur3_x64_128_h1(key);
    Token(if h == i64::MIN { i64::MAX } else { h })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cassandra_vectors() {
        assert_eq!(token_of(b"test"), Token(-6017608668500074083));
        assert_eq!(token_of(b"xd"), Token(4507812186440344727));
        assert_eq!(token_of(b"primary_key"), Token(-1632642444691073360));
    }
}
