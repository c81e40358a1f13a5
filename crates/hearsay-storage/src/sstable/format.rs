//! Constants and byte-level codecs of the v1 SSTable format (`docs/storage-format.md` is the
//! spec; keep the two in step). Every decoder here works on untrusted bytes: lengths are
//! checked against the input and against the named limits before anything is allocated, and
//! failures are reasons (`&'static str`) that the caller wraps into
//! [`crate::Error::Corruption`] with the file and offset.

use crate::cell::CellKey;
use bytes::Bytes;
use hearsay_types::Token;
use std::cmp::Ordering;

/// Last 8 bytes of every SSTable: ASCII "HSAYSST1" read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HSAYSST1");
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed footer at the end of the file.
pub const FOOTER_BYTES: usize = 64;
/// Per-block trailer: compression type (1 byte) + CRC32C (4 bytes).
pub const BLOCK_TRAILER_BYTES: usize = 5;

/// Largest user key. Keys are prefix-compressed and held in memory in the index, so a bound
/// keeps both a corrupt length and a hostile client from costing unbounded memory; 64 KiB is
/// far above any Redis-style key in practice.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest value: Redis allows 512 MiB strings, but a value this size already dominates a
/// block; 32 MiB keeps one cell's decode allocation modest. Front ends enforce smaller limits.
pub const MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;
/// Largest decoded data block: a block is flushed once it reaches the block size, so it holds
/// at most `MAX_BLOCK_SIZE_OPTION_BYTES` plus one maximal cell, which stays under this.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024 * 1024;
/// Largest block-size option accepted, so that a block plus one maximal cell fits in
/// `MAX_BLOCK_BYTES`.
pub const MAX_BLOCK_SIZE_OPTION_BYTES: usize = 16 * 1024 * 1024;
/// Largest decoded meta block (index, bloom, stats). These grow with the table (the bloom at
/// ~1.25 bytes per key), so they get a larger bound than data blocks; 512 MiB covers a
/// table of a few hundred million keys, beyond which compaction must split its output.
pub const MAX_META_BLOCK_BYTES: usize = 512 * 1024 * 1024;
/// Bytes of the token prefix of an encoded key.
pub const TOKEN_BYTES: usize = 8;
/// Largest encoded key (token + user key).
pub const MAX_ENCODED_KEY_BYTES: usize = TOKEN_BYTES + MAX_KEY_BYTES;

/// Block compression types (the first trailer byte).
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_LZ4: u8 = 1;

/// Entry flag bits.
pub const FLAG_TOMBSTONE: u8 = 0b01;
pub const FLAG_EXPIRY: u8 = 0b10;
pub const FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | FLAG_EXPIRY;

/// Encodes a key so that byte order equals [`CellKey`] order: the token as 8 big-endian bytes
/// with the sign bit flipped (so negative tokens sort first), then the key bytes. Prefix
/// compression and all comparisons work on this form.
pub fn encode_key(key: &CellKey, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&encode_token(key.token));
    out.extend_from_slice(&key.key);
}

/// The 8-byte order-preserving form of a token.
#[inline]
pub fn encode_token(token: Token) -> [u8; TOKEN_BYTES] {
    ((token.0 as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`encode_token`].
#[inline]
pub fn decode_token(encoded: &[u8; TOKEN_BYTES]) -> Token {
    Token((u64::from_be_bytes(*encoded) ^ (1 << 63)) as i64)
}

/// Inverse of [`encode_key`]. `encoded` must be at least [`TOKEN_BYTES`] long (checked by
/// every decoder before it gets here); a shorter input yields token `i64::MIN`.
pub fn decode_key(encoded: &[u8]) -> CellKey {
    match encoded.split_first_chunk::<TOKEN_BYTES>() {
        Some((token, key)) => CellKey {
            token: decode_token(token),
            key: Bytes::copy_from_slice(key),
        },
        None => CellKey {
            token: Token(i64::MIN),
            key: Bytes::new(),
        },
    }
}

/// Compares an encoded key with a key given as token bytes and key bytes, without building
/// the encoded form of the latter.
#[inline]
pub fn cmp_encoded(encoded: &[u8], token: &[u8; TOKEN_BYTES], key: &[u8]) -> Ordering {
    let (head, tail) = encoded.split_at(encoded.len().min(TOKEN_BYTES));
    head.cmp(&token[..]).then_with(|| tail.cmp(key))
}

/// A block's location: its offset and on-disk size including the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

/// The fixed footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index: BlockHandle,
    pub bloom: BlockHandle,
    pub stats: BlockHandle,
}

/// How the footer failed to decode.
#[derive(Debug, PartialEq, Eq)]
pub enum FooterError {
    BadMagic,
    Version(u32),
    Checksum,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        let fields = [
            self.index.offset,
            self.index.size,
            self.bloom.offset,
            self.bloom.size,
            self.stats.offset,
            self.stats.size,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[52..56].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[56..64].copy_from_slice(&MAGIC.to_le_bytes());
        let crc = footer_crc(&out);
        out[48..52].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks magic, then version, then checksum: the magic and version stay at the same
    /// place in every future version, so an old build can say "too new" rather than
    /// "corrupt".
    pub fn decode(buf: &[u8; FOOTER_BYTES]) -> Result<Footer, FooterError> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if u64_at(56) != MAGIC {
            return Err(FooterError::BadMagic);
        }
        let version = u32_at(52);
        if version != FORMAT_VERSION {
            return Err(FooterError::Version(version));
        }
        if u32_at(48) != footer_crc(buf) {
            return Err(FooterError::Checksum);
        }
        let h = |i: usize| BlockHandle {
            offset: u64_at(i * 16),
            size: u64_at(i * 16 + 8),
        };
        Ok(Footer {
            index: h(0),
            bloom: h(1),
            stats: h(2),
        })
    }
}

/// CRC32C of the footer without its CRC field (bytes 48..52).
fn footer_crc(buf: &[u8; FOOTER_BYTES]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&buf[..48]), &buf[52..])
}

/// CRC32C of a block's payload followed by its compression byte.
#[inline]
pub fn block_crc(payload: &[u8], compression: u8) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(payload), &[compression])
}

/// Appends a LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked reader over untrusted bytes.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Decoder { buf, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> Result<u8, &'static str> {
        let b = *self.buf.get(self.pos).ok_or("truncated (u8)")?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u32_le(&mut self) -> Result<u32, &'static str> {
        let b = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    pub fn u64_le(&mut self) -> Result<u64, &'static str> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    #[inline]
    pub fn varint(&mut self) -> Result<u64, &'static str> {
        // Lengths in a data block are nearly always below 128: one byte, no loop.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_multibyte()
    }

    fn varint_multibyte(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err("varint overflows u64");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    /// A varint that must not exceed `max` (a named limit).
    #[inline]
    pub fn varint_max(&mut self, max: usize, what: &'static str) -> Result<usize, &'static str> {
        let v = self.varint()?;
        if v > max as u64 {
            return Err(what);
        }
        Ok(v as usize)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let b = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_preserves_order() {
        let keys = [
            CellKey::new(Token(i64::MIN), &b""[..]),
            CellKey::new(Token(-1), &b"zz"[..]),
            CellKey::new(Token(0), &b""[..]),
            CellKey::new(Token(0), &b"a"[..]),
            CellKey::new(Token(0), &b"a\0"[..]),
            CellKey::new(Token(1), &b""[..]),
            CellKey::new(Token(i64::MAX), &b"x"[..]),
        ];
        let mut prev: Option<Vec<u8>> = None;
        for k in &keys {
            let mut e = Vec::new();
            encode_key(k, &mut e);
            assert_eq!(&decode_key(&e), k);
            assert_eq!(
                cmp_encoded(&e, &encode_token(k.token), &k.key),
                Ordering::Equal
            );
            if let Some(p) = &prev {
                assert!(p < &e, "{k:?}");
            }
            prev = Some(e);
        }
    }

    #[test]
    fn varint_round_trip_and_overflow() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut d = Decoder::new(&b);
            assert_eq!(d.varint(), Ok(v));
            assert_eq!(d.remaining(), 0);
        }
        assert!(Decoder::new(&[0xff; 11]).varint().is_err());
        assert!(Decoder::new(&[0xff; 3]).varint().is_err());
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(Decoder::new(&over).varint().is_err());
    }

    #[test]
    fn footer_round_trip_and_checks() {
        let f = Footer {
            index: BlockHandle {
                offset: 10,
                size: 20,
            },
            bloom: BlockHandle {
                offset: 30,
                size: 40,
            },
            stats: BlockHandle {
                offset: 70,
                size: 9,
            },
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b), Ok(f));
        let mut bad = b;
        bad[3] ^= 1;
        assert_eq!(Footer::decode(&bad), Err(FooterError::Checksum));
        let mut v2 = b;
        v2[52] = 2;
        assert_eq!(Footer::decode(&v2), Err(FooterError::Version(2)));
        let mut m = b;
        m[63] ^= 0x80;
        assert_eq!(Footer::decode(&m), Err(FooterError::BadMagic));
    }
}
