//! The partitioner: Cassandra's Murmur3 token of a key.
//!
//! Cassandra's `MurmurHash.hash3_x64_128` is MurmurHash3 x64-128 with one deliberate-by-accident
//! difference: in the tail (the last `len % 16` bytes) each byte is read as a Java `byte`, which
//! is signed, so a byte >= 0x80 is sign-extended to 64 bits before it is shifted and xored in.
//! The 16-byte body blocks are read unsigned. Keys whose tail has no byte >= 0x80 hash exactly
//! as the reference MurmurHash3; the others differ. We reproduce Cassandra's variant so that a
//! key's token here is the token Cassandra (and its drivers) would give it.

use hearsay_types::Token;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline(always)]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline(always)]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// A tail byte as Cassandra's Java code sees it: a signed byte widened to a long.
#[inline(always)]
fn signed(b: u8) -> u64 {
    b as i8 as i64 as u64
}

/// MurmurHash3 x64-128 exactly as Cassandra computes it (signed tail bytes), returning both
/// 64-bit halves. Does not allocate.
pub fn murmur3_x64_128_cassandra(key: &[u8], seed: u64) -> (u64, u64) {
    let mut h1 = seed;
    let mut h2 = seed;

    let mut blocks = key.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        // chunks_exact(16) guarantees two 8-byte halves; the fallback is unreachable.
        let k1 = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let k2 = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));

        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    let mut k1: u64 = 0;
    let mut k2: u64 = 0;
    // Bytes 8..15 of the tail go to k2, bytes 0..7 to k1, each shifted by 8 * (index % 8),
    // mirroring the fall-through switch in Cassandra's MurmurHash.java.
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= signed(b) << (8 * i);
        } else {
            k2 ^= signed(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(k1);
    }

    let len = key.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// The ring position of a key, as Cassandra's `Murmur3Partitioner` computes it: the first half
/// of [`murmur3_x64_128_cassandra`] with seed 0, as a signed 64-bit integer, with `i64::MIN`
/// mapped to `i64::MAX` so that [`Token::MIN`] stays free to mean "before every key".
///
/// One deliberate difference from Cassandra: the empty key. Cassandra returns the minimum token
/// for it (it rejects empty partition keys elsewhere); Redis clients may use `""` as a key, and
/// `Token::MIN` must never be a key's token (range scans `(MIN, t]` would miss it), so the empty
/// key is hashed like any other key and gets token 0.
#[inline]
pub fn token_of(key: &[u8]) -> Token {
    let (h1, _) = murmur3_x64_128_cassandra(key, 0);
    let t = h1 as i64;
    Token(if t == i64::MIN { i64::MAX } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector hex"))
            .collect()
    }

    #[test]
    fn cassandra_vectors_from_the_issue() {
        assert_eq!(token_of(b"test"), Token(-6017608668500074083));
        assert_eq!(token_of(b"xd"), Token(4507812186440344727));
        assert_eq!(token_of(b"primary_key"), Token(-1632642444691073360));
    }

    /// Produced by running Cassandra's own `hash3_x64_128` and `Murmur3Partitioner` token code
    /// (copied verbatim into Cassandra's harry `TokenUtil.java`) under OpenJDK 17: keys of every
    /// length 1..=33 (every tail length 0..15, with zero, one and two full blocks) made of
    /// high bytes (0x80 and up), where the signed tail matters; runs of 0xff; and low bytes
    /// (below 0x80), where the variant agrees with the reference MurmurHash3. (Hex key, token.)
    const JAVA_VECTORS: &[(&str, i64)] = &[
        ("8b", -7299393527204481650),
        ("96bb", -8140077134074869146),
        ("a1c6eb", -3133735113233649620),
        ("acd1f69b", 8115105046748272757),
        ("b7dc81a6cb", 8919512979366682588),
        ("c2e78cb1d6fb", -8575122236886972773),
        ("cdf297bce186ab", 7516409651970156879),
        ("d8fda2c7ec91b6db", -4020111216305357694),
        ("e388add2f79cc1e68b", 654863090511375974),
        ("ee93b8dd82a7ccf196bb", 9079852976557810597),
        ("f99ec3e88db2d7fca1c6eb", -8911468877172695971),
        ("84a9cef398bde287acd1f69b", -4209892087356600923),
        ("8fb4d9fea3c8ed92b7dc81a6cb", -1390503831669931364),
        ("9abfe489aed3f89dc2e78cb1d6fb", -6128182187719198687),
        ("a5caef94b9de83a8cdf297bce186ab", 3728207445741946130),
        ("b0d5fa9fc4e98eb3d8fda2c7ec91b6db", 7930374870537465947),
        ("bbe085aacff499bee388add2f79cc1e68b", 8876595457776504511),
        ("c6eb90b5daffa4c9ee93b8dd82a7ccf196bb", 7543552964117269207),
        (
            "d1f69bc0e58aafd4f99ec3e88db2d7fca1c6eb",
            8949400690108176990,
        ),
        (
            "dc81a6cbf095badf84a9cef398bde287acd1f69b",
            -1007966177854504618,
        ),
        (
            "e78cb1d6fba0c5ea8fb4d9fea3c8ed92b7dc81a6cb",
            7904944009235859196,
        ),
        (
            "f297bce186abd0f59abfe489aed3f89dc2e78cb1d6fb",
            -6485317829040491679,
        ),
        (
            "fda2c7ec91b6db80a5caef94b9de83a8cdf297bce186ab",
            -4059371492770259055,
        ),
        (
            "88add2f79cc1e68bb0d5fa9fc4e98eb3d8fda2c7ec91b6db",
            -2399100940108710873,
        ),
        (
            "93b8dd82a7ccf196bbe085aacff499bee388add2f79cc1e68b",
            -1857223132577647308,
        ),
        (
            "9ec3e88db2d7fca1c6eb90b5daffa4c9ee93b8dd82a7ccf196bb",
            -5294856080363729649,
        ),
        (
            "a9cef398bde287acd1f69bc0e58aafd4f99ec3e88db2d7fca1c6eb",
            -5241154170857095831,
        ),
        (
            "b4d9fea3c8ed92b7dc81a6cbf095badf84a9cef398bde287acd1f69b",
            7079920196638069302,
        ),
        (
            "bfe489aed3f89dc2e78cb1d6fba0c5ea8fb4d9fea3c8ed92b7dc81a6cb",
            5736955972126777976,
        ),
        (
            "caef94b9de83a8cdf297bce186abd0f59abfe489aed3f89dc2e78cb1d6fb",
            -1914058595897458734,
        ),
        (
            "d5fa9fc4e98eb3d8fda2c7ec91b6db80a5caef94b9de83a8cdf297bce186ab",
            -8086903313871679114,
        ),
        (
            "e085aacff499bee388add2f79cc1e68bb0d5fa9fc4e98eb3d8fda2c7ec91b6db",
            3011185459410781866,
        ),
        (
            "eb90b5daffa4c9ee93b8dd82a7ccf196bbe085aacff499bee388add2f79cc1e68b",
            -6034267105132357617,
        ),
        ("ff", -4442228696663692417),
        ("ffff", 6163071069786142063),
        ("ffffff", -9154616442117352147),
        ("ffffffff", 7297452126230313552),
        ("ffffffffff", -8869521063059112040),
        ("ffffffffffff", 2112339540026359505),
        ("ffffffffffffff", 4860178782003914630),
        ("ffffffffffffffff", 7071048584287372947),
        ("ffffffffffffffffff", 8434364767658694854),
        ("ffffffffffffffffffff", -2285028417834605101),
        ("ffffffffffffffffffffff", 4844839740296823970),
        ("ffffffffffffffffffffffff", 5441275315642417349),
        ("ffffffffffffffffffffffffff", 5402220310222980743),
        ("ffffffffffffffffffffffffffff", -7003579699878715426),
        ("ffffffffffffffffffffffffffffff", -2195530867418009455),
        ("ffffffffffffffffffffffffffffffff", -2824192546314762522),
        ("ffffffffffffffffffffffffffffffffff", -4128212798341382003),
        ("01", 8849112093580131862),
        ("010e", -3383874481921073412),
        ("010e1b", 7629368866367943947),
        ("010e1b28", 9067732970457356327),
        ("010e1b2835", 8316814682099492328),
        ("010e1b283542", 2877085399156385199),
        ("010e1b2835424f", 4342062010649380907),
        ("010e1b2835424f5c", 1681136343759271368),
        ("010e1b2835424f5c69", 4157859831867736082),
        ("010e1b2835424f5c6976", 278322584314769995),
        ("010e1b2835424f5c697683", -6545821958534144451),
        ("010e1b2835424f5c69768390", -4052756580319734637),
        ("010e1b2835424f5c697683909d", 8141781307421952247),
        ("010e1b2835424f5c697683909daa", -3277649245133313323),
        ("010e1b2835424f5c697683909daab7", -3659196963398728561),
        ("010e1b2835424f5c697683909daab7c4", 8500423788840294964),
        ("010e1b2835424f5c697683909daab7c4d1", -396418578152019413),
    ];

    #[test]
    fn cassandra_java_vectors_signed_tails_of_every_length() {
        let mut tail_lengths = [false; 16];
        for (hex, want) in JAVA_VECTORS {
            let key = unhex(hex);
            tail_lengths[key.len() % 16] = true;
            assert_eq!(token_of(&key), Token(*want), "key {hex}");
        }
        assert!(
            tail_lengths.iter().all(|&seen| seen),
            "every tail length is covered"
        );
    }

    #[test]
    fn empty_key_is_hashed_not_minimum() {
        assert_eq!(token_of(b""), Token(0));
        assert_ne!(token_of(b""), Token::MIN);
    }

    #[test]
    fn signedness_changes_the_hash_only_for_high_tail_bytes() {
        // The same hash with an unsigned tail (the reference MurmurHash3) must differ from ours
        // exactly when some tail byte is >= 0x80; this guards against "fixing" the variant.
        fn reference_h1(key: &[u8]) -> u64 {
            let mut h1 = 0u64;
            let mut h2 = 0u64;
            let mut blocks = key.chunks_exact(16);
            for b in &mut blocks {
                let k1 = u64::from_le_bytes(b[..8].try_into().expect("8"));
                let k2 = u64::from_le_bytes(b[8..].try_into().expect("8"));
                h1 ^= mix_k1(k1);
                h1 = h1
                    .rotate_left(27)
                    .wrapping_add(h2)
                    .wrapping_mul(5)
                    .wrapping_add(0x52dc_e729);
                h2 ^= mix_k2(k2);
                h2 = h2
                    .rotate_left(31)
                    .wrapping_add(h1)
                    .wrapping_mul(5)
                    .wrapping_add(0x3849_5ab5);
            }
            let tail = blocks.remainder();
            let (mut k1, mut k2) = (0u64, 0u64);
            for (i, &b) in tail.iter().enumerate() {
                if i < 8 {
                    k1 ^= (b as u64) << (8 * i);
                } else {
                    k2 ^= (b as u64) << (8 * (i - 8));
                }
            }
            if tail.len() > 8 {
                h2 ^= mix_k2(k2);
            }
            if !tail.is_empty() {
                h1 ^= mix_k1(k1);
            }
            let len = key.len() as u64;
            h1 ^= len;
            h2 ^= len;
            h1 = h1.wrapping_add(h2);
            h2 = h2.wrapping_add(h1);
            fmix64(h1).wrapping_add(fmix64(h2))
        }
        for key in [&b"abc"[..], b"0123456789abcdefXY", b"\x01\x02\x7f"] {
            assert_eq!(murmur3_x64_128_cassandra(key, 0).0, reference_h1(key));
        }
        for key in [&b"\x80"[..], b"0123456789abcdef\xff", b"ab\xc3\xa9"] {
            assert_ne!(murmur3_x64_128_cassandra(key, 0).0, reference_h1(key));
        }
    }
}
