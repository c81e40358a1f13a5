//! Self-verifying benchmark values.
//!
//! Layout (little endian): `checksum: u64 | version: u8 | nonce: u64 | filler`, where
//! `checksum = xxh3_64_with_seed(value[8..], xxh3_64(key))`. Seeding with the key's hash means
//! a value stored under the wrong key (a phantom read, a misrouted write) fails verification,
//! not only a value whose bytes were damaged.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Bumped if the layout changes, so a verifier never misreads an older run's values.
pub const VALUE_FORMAT_VERSION: u8 = 1;

/// Bytes before the filler: checksum, version, nonce.
pub const VALUE_HEADER_BYTES: usize = 8 + 1 + 8;

/// Why a value read back is not one this benchmark wrote for that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorruptValue {
    /// Shorter than the header.
    #[error("value of {0} bytes is shorter than the {VALUE_HEADER_BYTES}-byte header")]
    TooShort(usize),
    /// An unknown layout version.
    #[error("value format version {0}, expected {VALUE_FORMAT_VERSION}")]
    BadVersion(u8),
    /// The checksum does not match the key and the bytes.
    #[error("checksum mismatch")]
    ChecksumMismatch,
}

/// Appends a value of exactly `VALUE_HEADER_BYTES + filler.len()` bytes for `key` to `out`.
/// `nonce` makes successive writes of the same key differ.
pub fn encode_value(key: &[u8], nonce: u64, filler: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(VALUE_FORMAT_VERSION);
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(filler);
    let sum = xxh3_64_with_seed(&out[start + 8..], xxh3_64(key));
    out[start..start + 8].copy_from_slice(&sum.to_le_bytes());
}

/// Checks that `value` is one [`encode_value`] produced for `key`.
pub fn verify_value(key: &[u8], value: &[u8]) -> Result<(), CorruptValue> {
    let (Some(sum), Some(&version)) = (value.get(..8), value.get(8)) else {
        return Err(CorruptValue::TooShort(value.len()));
    };
    if value.len() < VALUE_HEADER_BYTES {
        return Err(CorruptValue::TooShort(value.len()));
    }
    if version != VALUE_FORMAT_VERSION {
        return Err(CorruptValue::BadVersion(version));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    let body = value.get(8..).unwrap_or_default();
    if u64::from_le_bytes(stored) != xxh3_64_with_seed(body, xxh3_64(key)) {
        return Err(CorruptValue::ChecksumMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let filler = vec![b'x'; 83];
        let mut v = Vec::new();
        encode_value(b"k1", 42, &filler, &mut v);
        assert_eq!(v.len(), 100);
        assert_eq!(verify_value(b"k1", &v), Ok(()));
        // Same bytes under another key: a phantom.
        assert_eq!(verify_value(b"k2", &v), Err(CorruptValue::ChecksumMismatch));
        // Every single-bit flip is caught.
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            assert!(verify_value(b"k1", &bad).is_err(), "flip at {i} missed");
        }
        assert_eq!(
            verify_value(b"k1", b"short"),
            Err(CorruptValue::TooShort(5))
        );
        assert_eq!(
            verify_value(b"k1", &v[..VALUE_HEADER_BYTES - 1]),
            Err(CorruptValue::TooShort(VALUE_HEADER_BYTES - 1))
        );
        let mut bad_version = v.clone();
        bad_version[8] = 9;
        assert_eq!(
            verify_value(b"k1", &bad_version),
            Err(CorruptValue::BadVersion(9))
        );
        // Appends after existing bytes without touching them.
        let mut buf = b"prefix".to_vec();
        encode_value(b"k1", 42, &filler, &mut buf);
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], &v[..]);
    }
}
