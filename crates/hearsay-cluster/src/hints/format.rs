//! On-disk format of hint segments and the delivery cursor (version 1).
//!
//! A segment file is an 8-byte header (`SEGMENT_MAGIC`, the format version, three zero bytes)
//! followed by records:
//!
//! ```text
//! [version u8 = 1][body_len u32 LE][crc32c u32 LE over body_len bytes ++ body][body]
//! ```
//!
//! The body is postcard of [`HintRecordV1`]. The checksum covers the length, so a flipped
//! length bit is caught rather than sending the reader to a wrong offset. A body is never
//! larger than [`MAX_HINT_RECORD_BYTES`], so a reader allocates at most that much per record
//! whatever the bytes say.
//!
//! The cursor file (`cursor`) records how far delivery got in a target's segments:
//! `[version u8 = 1][crc32c u32 LE over the payload][payload: seq u64, offset u64,
//! consumed u64, last_id u64, all LE]`.

use hearsay_storage::{Cell, CellKey};
use hearsay_types::{NodeId, Timestamp, Token};
use serde::{Deserialize, Serialize};

/// Version byte of segment headers, records and cursor files.
pub const FORMAT_VERSION: u8 = 1;
/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"HSHT";
/// Segment header: magic, version, three reserved zero bytes.
pub const SEGMENT_HEADER_BYTES: usize = 8;
/// Record header: version, body length, checksum.
pub const RECORD_HEADER_BYTES: usize = 9;
/// Largest record body. Bounds what a reader allocates for one record and what one hint may
/// hold; a mutation larger than this is not hinted (it is dropped and counted, and its range
/// marked for repair). 32 MiB is well above the front ends' value limits.
pub const MAX_HINT_RECORD_BYTES: usize = 32 * 1024 * 1024;
/// Size of the cursor file.
pub const CURSOR_FILE_BYTES: usize = 1 + 4 + 32;

/// One hint as stored: the mutation a replica missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintRecordV1 {
    pub hint_id: u64,
    pub target: NodeId,
    pub keyspace: String,
    pub created_at_ms: u64,
    pub cells: Vec<HintCellV1>,
}

/// A cell as stored in a hint (the engine's `Cell` has no serde form; this is its frozen v1
/// wire shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintCellV1 {
    pub token: i64,
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    pub timestamp: u64,
    pub expires_at_ms: Option<u64>,
}

impl HintCellV1 {
    pub fn from_cell(key: &CellKey, cell: &Cell) -> HintCellV1 {
        HintCellV1 {
            token: key.token.0,
            key: key.key.to_vec(),
            value: cell.value.as_ref().map(|v| v.to_vec()),
            timestamp: cell.timestamp.0,
            expires_at_ms: cell.expires_at_ms,
        }
    }

    pub fn into_cell(self) -> (CellKey, Cell) {
        (
            CellKey::new(Token(self.token), self.key),
            Cell {
                value: self.value.map(Into::into),
                timestamp: Timestamp(self.timestamp),
                expires_at_ms: self.expires_at_ms,
            },
        )
    }

    /// Only the cell part (the key is known to the caller).
    pub fn cell(&self) -> Cell {
        Cell {
            value: self.value.clone().map(Into::into),
            timestamp: Timestamp(self.timestamp),
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// The segment file header.
pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4] = FORMAT_VERSION;
    h
}

/// Why a segment header is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Shorter than a header (a crash right after creating the file).
    Short,
    /// Wrong magic or an unknown version.
    Invalid,
}

pub fn check_segment_header(bytes: &[u8]) -> Result<(), HeaderProblem> {
    let Some(h) = bytes.get(..SEGMENT_HEADER_BYTES) else {
        return Err(HeaderProblem::Short);
    };
    if h[..4] != SEGMENT_MAGIC || h[4] != FORMAT_VERSION {
        return Err(HeaderProblem::Invalid);
    }
    Ok(())
}

/// Encodes one record (header + body). Errors only if the body would exceed
/// [`MAX_HINT_RECORD_BYTES`] (or postcard fails, which it cannot for these types).
pub fn encode_record(rec: &HintRecordV1) -> Option<Vec<u8>> {
    let body = postcard::to_allocvec(rec).ok()?;
    if body.len() > MAX_HINT_RECORD_BYTES {
        return None;
    }
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &body);
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// What the reader found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A good record and the number of bytes it occupies.
    Record(Box<HintRecordV1>, usize),
    /// Clean end of the data.
    End,
    /// The data ends inside a record: a write torn by a crash.
    Torn,
    /// A complete record whose checksum, version or body is wrong. Nothing after it in the
    /// segment can be trusted to be aligned, so the rest of the segment is dropped.
    Corrupt,
}

/// Reads the record at the start of `buf` (which runs to the end of the segment's data).
pub fn read_record(buf: &[u8]) -> ReadOutcome {
    if buf.is_empty() {
        return ReadOutcome::End;
    }
    let Some(header) = buf.get(..RECORD_HEADER_BYTES) else {
        return ReadOutcome::Torn;
    };
    let version = header[0];
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&header[1..5]);
    let mut crc4 = [0u8; 4];
    crc4.copy_from_slice(&header[5..9]);
    let len = u32::from_le_bytes(len4) as usize;
    if version != FORMAT_VERSION || len > MAX_HINT_RECORD_BYTES {
        return ReadOutcome::Corrupt;
    }
    let Some(body) = buf.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return ReadOutcome::Torn;
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len4), body);
    if crc != u32::from_le_bytes(crc4) {
        return ReadOutcome::Corrupt;
    }
    match postcard::from_bytes::<HintRecordV1>(body) {
        Ok(rec) => ReadOutcome::Record(Box::new(rec), RECORD_HEADER_BYTES + len),
        Err(_) => ReadOutcome::Corrupt,
    }
}

/// Where delivery to one target stands: everything before `offset` in segment `seq`
/// (and every earlier segment) is delivered or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
    pub offset: u64,
    /// Records before `offset` in segment `seq` (for pending counts without an index).
    pub consumed: u64,
    /// The highest hint id delivered or dropped.
    pub last_id: u64,
}

pub fn encode_cursor(c: &Cursor) -> [u8; CURSOR_FILE_BYTES] {
    let mut payload = [0u8; 32];
    payload[..8].copy_from_slice(&c.seq.to_le_bytes());
    payload[8..16].copy_from_slice(&c.offset.to_le_bytes());
    payload[16..24].copy_from_slice(&c.consumed.to_le_bytes());
    payload[24..32].copy_from_slice(&c.last_id.to_le_bytes());
    let mut out = [0u8; CURSOR_FILE_BYTES];
    out[0] = FORMAT_VERSION;
    out[1..5].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out[5..].copy_from_slice(&payload);
    out
}

/// `None` when the file is not a valid v1 cursor.
pub fn decode_cursor(bytes: &[u8]) -> Option<Cursor> {
    if bytes.len() != CURSOR_FILE_BYTES || bytes[0] != FORMAT_VERSION {
        return None;
    }
    let payload = &bytes[5..];
    let crc = u32::from_le_bytes(bytes[1..5].try_into().ok()?);
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some(Cursor {
        seq: word(0)?,
        offset: word(1)?,
        consumed: word(2)?,
        last_id: word(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec() -> HintRecordV1 {
        HintRecordV1 {
            hint_id: 42,
            target: NodeId(7),
            keyspace: "default".into(),
            created_at_ms: 1_000,
            cells: vec![HintCellV1 {
                token: -3,
                key: b"k".to_vec(),
                value: Some(b"v".to_vec()),
                timestamp: 9,
                expires_at_ms: None,
            }],
        }
    }

    #[test]
    fn record_round_trips_and_every_prefix_is_torn() {
        let bytes = encode_record(&rec()).unwrap();
        assert_eq!(
            read_record(&bytes),
            ReadOutcome::Record(Box::new(rec()), bytes.len())
        );
        assert_eq!(read_record(&[]), ReadOutcome::End);
        for cut in 1..bytes.len() {
            assert_eq!(
                read_record(&bytes[..cut]),
                ReadOutcome::Torn,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_and_unknown_version_are_corrupt_without_allocating() {
        let mut bytes = encode_record(&rec()).unwrap();
        bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_record(&bytes), ReadOutcome::Corrupt);
        let mut bytes = encode_record(&rec()).unwrap();
        bytes[0] = 2;
        assert_eq!(read_record(&bytes), ReadOutcome::Corrupt);
    }

    #[test]
    fn cursor_round_trips_and_rejects_damage() {
        let c = Cursor {
            seq: 3,
            offset: 100,
            consumed: 4,
            last_id: 99,
        };
        let bytes = encode_cursor(&c);
        assert_eq!(decode_cursor(&bytes), Some(c));
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 1;
            assert_eq!(decode_cursor(&b), None, "flip at {i}");
        }
        assert_eq!(decode_cursor(&bytes[..10]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_record(&bytes);
            let _ = decode_cursor(&bytes);
            let _ = check_segment_header(&bytes);
        }

        #[test]
        fn any_single_flip_is_detected(i in 0usize..1000, mask in 1u8..=255) {
            let bytes = encode_record(&rec()).unwrap();
            let mut b = bytes.clone();
            let i = i % b.len();
            b[i] ^= mask;
            prop_assert!(!matches!(read_record(&b), ReadOutcome::Record(..)), "flip at {} undetected", i);
        }
    }
}
