//! The v1 frame: a sans-IO encoder and decoder, plus a `tokio_util` codec wrapper.
//!
//! Layout (all integers big-endian; see `docs/rpc.md`):
//!
//! ```text
//! offset size field
//!  0      4   length      bytes after this field (28-byte header tail + body)
//!  4      1   version     FRAME_VERSION (1)
//!  5      1   kind        FrameKind
//!  6      2   method      MethodId of a Request (0 otherwise)
//!  8      8   request_id  matches a Response/Error/Pong to its Request/Ping
//! 16      4   deadline_ms time the caller will still wait, in ms (Request only)
//! 20      8   hlc         sender's hybrid-logical-clock reading, microseconds
//! 28      4   crc32c      over bytes 4..28 and the body
//! 32      ..  body        postcard
//! ```
//!
//! The decoder validates the length before it reserves a byte for the body, and the version
//! and kind as soon as they arrive, so a peer cannot make us allocate more than
//! `max_frame_bytes` per connection nor wait for a body that will be rejected anyway.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hearsay_types::Timestamp;
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

/// The frame format version this code writes and the only one it reads.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the fixed header, length prefix included; the body follows.
pub const HEADER_BYTES: usize = 32;

/// Default limit on a whole frame (length prefix, header and body), in bytes.
///
/// Why 16 MiB: the largest single message the coordinator sends is a mutation or a read
/// result carrying one value, and the front ends cap values well below this; batched work
/// (hint replay, repair streams) is chunked by its sender to a few MiB. The limit is also the
/// most one connection can make us buffer for a single frame, and with one connection per
/// peer, 16 MiB × peers stays affordable on a node with a few GiB of memory.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// The largest value `max_frame_bytes` may be configured to, in bytes. Above this a single
/// peer could make a node hold a quarter of a GiB for one frame, which nothing legitimate needs.
pub const MAX_FRAME_BYTES_CEILING: u32 = 256 * 1024 * 1024;

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A handshake step (body: `HandshakeMsg`); only before the connection is established.
    Handshake = 1,
    /// A typed request; `method` names its type.
    Request = 2,
    /// A successful answer to the request with the same id (body: the response type).
    Response = 3,
    /// A failed answer to the request with the same id (body: `RemoteError`).
    Error = 4,
    /// Connection-level liveness probe (empty body); answered with `Pong` by the RPC layer
    /// itself, without any handler.
    Ping = 5,
    /// Answer to `Ping`.
    Pong = 6,
}

impl FrameKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Handshake,
            2 => FrameKind::Request,
            3 => FrameKind::Response,
            4 => FrameKind::Error,
            5 => FrameKind::Ping,
            6 => FrameKind::Pong,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// The request type (`Rpc::METHOD`) of a `Request`; 0 for other kinds.
    pub method: u16,
    pub request_id: u64,
    /// For a `Request`: milliseconds the caller will still wait. 0 means the caller has
    /// already given up, so the server drops the request unread. Unused (0) for other kinds.
    pub deadline_ms: u32,
    /// The sender's HLC reading when it wrote the frame.
    pub hlc: Timestamp,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no method and no deadline.
    pub fn new(kind: FrameKind, request_id: u64, hlc: Timestamp, body: Bytes) -> Frame {
        Frame {
            kind,
            method: 0,
            request_id,
            deadline_ms: 0,
            hlc,
            body,
        }
    }

    /// The size of this frame on the wire, in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Why a frame was rejected. Each reason has its own counter, so an operator can tell a
/// version mismatch from corruption from an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    BadVersion,
    BadKind,
    BadCrc,
    /// The declared length is above `max_frame_bytes`.
    Oversize,
    /// The declared length is shorter than the header, or the stream ended mid-frame.
    Truncated,
    /// The frame is well formed but its body does not decode as the type it must carry.
    Undecodable,
    /// A well-formed frame of a kind that is not allowed at this point (e.g. a Request before
    /// the handshake, a Response for a server).
    Unexpected,
}

impl RejectReason {
    /// Every reason, in a fixed order (for stats and reports).
    pub const ALL: [RejectReason; 7] = [
        RejectReason::BadVersion,
        RejectReason::BadKind,
        RejectReason::BadCrc,
        RejectReason::Oversize,
        RejectReason::Truncated,
        RejectReason::Undecodable,
        RejectReason::Unexpected,
    ];

    /// A short stable name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadKind => "bad_kind",
            RejectReason::BadCrc => "bad_crc",
            RejectReason::Oversize => "oversize",
            RejectReason::Truncated => "truncated",
            RejectReason::Undecodable => "undecodable",
            RejectReason::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported frame version {found} (this node speaks {FRAME_VERSION})")]
    BadVersion { found: u8 },
    #[error("unknown frame kind {found}")]
    BadKind { found: u8 },
    #[error("frame checksum mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    BadCrc { expected: u32, computed: u32 },
    #[error("frame of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    Oversize { len_bytes: u64, max_bytes: u32 },
    #[error("frame declares {len_bytes} bytes, shorter than its {HEADER_BYTES}-byte header")]
    TooShort { len_bytes: u32 },
    #[error("stream ended inside a frame ({buffered_bytes} bytes buffered)")]
    TruncatedAtEof { buffered_bytes: usize },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The rejection counter this error counts under; `None` for I/O errors, which are not
    /// the peer's bytes being wrong.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            FrameError::BadVersion { .. } => Some(RejectReason::BadVersion),
            FrameError::BadKind { .. } => Some(RejectReason::BadKind),
            FrameError::BadCrc { .. } => Some(RejectReason::BadCrc),
            FrameError::Oversize { .. } => Some(RejectReason::Oversize),
            FrameError::TooShort { .. } | FrameError::TruncatedAtEof { .. } => {
                Some(RejectReason::Truncated)
            }
            FrameError::Io(_) => None,
        }
    }
}

fn checksum(header_tail: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_tail), body)
}

/// Appends `frame` to `dst`. Fails (writing nothing) if the frame would exceed
/// `max_frame_bytes`, so a sender learns of the limit before the receiver kills the connection.
pub fn encode_frame(
    frame: &Frame,
    max_frame_bytes: u32,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let total = frame.encoded_len() as u64;
    if total > u64::from(max_frame_bytes) {
        return Err(FrameError::Oversize {
            len_bytes: total,
            max_bytes: max_frame_bytes,
        });
    }
    dst.reserve(total as usize);
    let start = dst.len();
    dst.put_u32((total as usize - LENGTH_PREFIX_BYTES) as u32);
    dst.put_u8(FRAME_VERSION);
    dst.put_u8(frame.kind as u8);
    dst.put_u16(frame.method);
    dst.put_u64(frame.request_id);
    dst.put_u32(frame.deadline_ms);
    dst.put_u64(frame.hlc.0);
    let crc = checksum(&dst[start + LENGTH_PREFIX_BYTES..], &frame.body);
    dst.put_u32(crc);
    dst.extend_from_slice(&frame.body);
    Ok(())
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_bytes(frame: &Frame, max_frame_bytes: u32) -> Result<Bytes, FrameError> {
    let mut b = BytesMut::with_capacity(frame.encoded_len());
    encode_frame(frame, max_frame_bytes, &mut b)?;
    Ok(b.freeze())
}

/// Takes one frame off the front of `src` if a whole one is there.
///
/// Returns `Ok(None)` when more bytes are needed; in that case `src` has capacity for the
/// whole frame, allocated only after checking the declared length against `max_frame_bytes`
/// (and never more than that frame's size).
/// On `Err` the stream is unusable (framing is lost) and must be closed.
pub fn decode_frame(src: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, FrameError> {
    let Some(len_bytes) = src.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if (len as usize) < HEADER_BYTES - LENGTH_PREFIX_BYTES {
        return Err(FrameError::TooShort { len_bytes: len });
    }
    let total = u64::from(len) + LENGTH_PREFIX_BYTES as u64;
    if total > u64::from(max_frame_bytes) {
        return Err(FrameError::Oversize {
            len_bytes: total,
            max_bytes: max_frame_bytes,
        });
    }
    // Fail on a bad version or kind as soon as those bytes are here, rather than after
    // buffering a body we would throw away.
    if let Some(&version) = src.get(4)
        && version != FRAME_VERSION
    {
        return Err(FrameError::BadVersion { found: version });
    }
    if let Some(&kind) = src.get(5)
        && FrameKind::from_u8(kind).is_none()
    {
        return Err(FrameError::BadKind { found: kind });
    }
    let total = total as usize; // ≤ max_frame_bytes, which fits in usize.
    if src.len() < total {
        if src.capacity() < total {
            // Allocate exactly one frame's worth. `BytesMut::reserve` may double the old
            // capacity, which could exceed `max_frame_bytes`; only a prefix of this frame is
            // buffered (else it would be complete), so the copy is small.
            let mut exact = BytesMut::with_capacity(total);
            exact.extend_from_slice(src);
            *src = exact;
        }
        return Ok(None);
    }
    let mut frame = src.split_to(total);
    let computed = checksum(&frame[LENGTH_PREFIX_BYTES..28], &frame[HEADER_BYTES..]);
    frame.advance(LENGTH_PREFIX_BYTES + 1);
    let kind_byte = frame.get_u8();
    let method = frame.get_u16();
    let request_id = frame.get_u64();
    let deadline_ms = frame.get_u32();
    let hlc = Timestamp(frame.get_u64());
    let expected = frame.get_u32();
    if expected != computed {
        return Err(FrameError::BadCrc { expected, computed });
    }
    let kind = FrameKind::from_u8(kind_byte).ok_or(FrameError::BadKind { found: kind_byte })?;
    Ok(Some(Frame {
        kind,
        method,
        request_id,
        deadline_ms,
        hlc,
        body: frame.freeze(),
    }))
}

/// `tokio_util` codec over [`decode_frame`] / [`encode_frame`].
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

impl FrameCodec {
    /// A codec that rejects frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        decode_frame(src, self.max_frame_bytes)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::TruncatedAtEof {
                buffered_bytes: src.len(),
            }),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(&frame, self.max_frame_bytes, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame {
            kind: FrameKind::Request,
            method: 7,
            request_id: 42,
            deadline_ms: 1_500,
            hlc: Timestamp(1_700_000_000_000_000),
            body: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let bytes = encode_to_bytes(&sample(), MAX_FRAME_BYTES).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 5);
        // Fed one byte at a time, the decoder waits until the last byte, then yields the frame.
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode_frame(&mut buf, MAX_FRAME_BYTES).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "frame decoded early at byte {i}");
            } else {
                assert_eq!(got, Some(sample()));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_is_rejected_from_the_length_alone_without_reserving() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let cap_before = buf.capacity();
        let err = decode_frame(&mut buf, MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(err, FrameError::Oversize { .. }), "{err}");
        assert_eq!(
            buf.capacity(),
            cap_before,
            "decoder reserved memory for an oversize frame"
        );
        // The sender refuses to produce one too.
        let mut big = sample();
        big.body = Bytes::from(vec![0u8; 100]);
        assert!(matches!(
            encode_to_bytes(&big, 64),
            Err(FrameError::Oversize { .. })
        ));
    }

    #[test]
    fn each_corruption_maps_to_its_reason() {
        let good = encode_to_bytes(&sample(), MAX_FRAME_BYTES).unwrap();
        let cases: [(usize, u8, RejectReason); 4] = [
            (4, 2, RejectReason::BadVersion),
            (5, 99, RejectReason::BadKind),
            (20, 0xff, RejectReason::BadCrc), // hlc byte: header is covered by the crc
            (HEADER_BYTES, b'j', RejectReason::BadCrc),
        ];
        for (at, byte, reason) in cases {
            let mut bad = BytesMut::from(&good[..]);
            bad[at] = byte;
            let err = decode_frame(&mut bad, MAX_FRAME_BYTES).unwrap_err();
            assert_eq!(err.reject_reason(), Some(reason), "offset {at}: {err}");
        }
        let mut short = BytesMut::new();
        short.put_u32(3);
        let err = decode_frame(&mut short, MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(err.reject_reason(), Some(RejectReason::Truncated));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any frame round-trips, alone or back to back with another, whatever the split.
        #[test]
        fn any_frame_round_trips(
            kind in 1u8..=6,
            method: u16,
            request_id: u64,
            deadline_ms: u32,
            hlc: u64,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000),
            split in 0usize..4_200,
        ) {
            let frame = Frame {
                kind: FrameKind::from_u8(kind).unwrap(),
                method,
                request_id,
                deadline_ms,
                hlc: Timestamp(hlc),
                body: Bytes::from(body),
            };
            let one = encode_to_bytes(&frame, MAX_FRAME_BYTES).unwrap();
            let mut two = BytesMut::new();
            two.extend_from_slice(&one);
            two.extend_from_slice(&one);
            let split = split.min(two.len());
            let mut buf = BytesMut::from(&two[..split]);
            let mut got = Vec::new();
            while let Some(f) = decode_frame(&mut buf, MAX_FRAME_BYTES).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&two[split..]);
            while let Some(f) = decode_frame(&mut buf, MAX_FRAME_BYTES).unwrap() {
                got.push(f);
            }
            proptest::prop_assert_eq!(got, vec![frame.clone(), frame]);
            proptest::prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let good = encode_to_bytes(&sample(), MAX_FRAME_BYTES).unwrap();
        let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
        let mut buf = BytesMut::from(&good[..good.len() - 1]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert_eq!(err.reject_reason(), Some(RejectReason::Truncated));
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }
}
