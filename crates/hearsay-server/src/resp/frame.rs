//! A general RESP2/RESP3 value decoder: every reply type, nested, with hard limits. The server
//! does not need it to read requests (those are flat, see `request`); tests, the raw-protocol
//! checks and Rust clients use it to read what the server says, and it shares the rule that a
//! declared length never decides an allocation before the bytes are there.

use bytes::Bytes;

/// Bounds on what [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest bulk / verbatim / blob error, in bytes.
    pub max_bulk_bytes: usize,
    /// Most elements in one aggregate (pairs count twice for maps).
    pub max_elements: usize,
    /// Deepest nesting of aggregates; a depth-first decoder recurses once per level, so this
    /// also bounds stack use against `*1\r\n*1\r\n*1\r\n...`.
    pub max_depth: usize,
    /// Longest simple line (`+...`, `-...`, `:...`), in bytes.
    pub max_line_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_bulk_bytes: 512 * 1024 * 1024,
            max_elements: 16 * 1024 * 1024,
            max_depth: 32,
            max_line_bytes: 64 * 1024,
        }
    }
}

/// A decoded RESP value.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Push(Vec<Frame>),
    Double(f64),
    Boolean(bool),
    BigNumber(Bytes),
    Verbatim { format: Bytes, text: Bytes },
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    #[error("malformed RESP: {0}")]
    Malformed(&'static str),
    #[error("RESP value exceeds a limit: {0}")]
    TooLarge(&'static str),
}

/// Decodes one value from the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// value and the number of bytes it used.
pub fn decode(buf: &[u8], limits: &FrameLimits) -> Result<Option<(Frame, usize)>, FrameError> {
    let mut pos = 0;
    match decode_at(buf, &mut pos, limits, 0)? {
        Some(f) => Ok(Some((f, pos))),
        None => Ok(None),
    }
}

fn line<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    limits: &FrameLimits,
) -> Result<Option<&'a [u8]>, FrameError> {
    let rest = buf.get(*pos..).unwrap_or(&[]);
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > limits.max_line_bytes => Err(FrameError::TooLarge("line")),
        Some(i) => {
            *pos += i + 2;
            Ok(Some(&rest[..i]))
        }
        None if rest.len() > limits.max_line_bytes + 1 => Err(FrameError::TooLarge("line")),
        None => Ok(None),
    }
}

fn int_of(s: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(FrameError::Malformed("integer"))
}

fn blob(
    buf: &[u8],
    pos: &mut usize,
    len: i64,
    limits: &FrameLimits,
) -> Result<Option<Bytes>, FrameError> {
    if len < 0 {
        return Err(FrameError::Malformed("negative length"));
    }
    if len as u64 > limits.max_bulk_bytes as u64 {
        return Err(FrameError::TooLarge("bulk"));
    }
    let len = len as usize;
    let end = *pos + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(FrameError::Malformed("bulk not terminated by CRLF"));
    }
    let b = Bytes::copy_from_slice(&buf[*pos..end]);
    *pos = end + 2;
    Ok(Some(b))
}

fn elements(
    buf: &[u8],
    pos: &mut usize,
    n: usize,
    limits: &FrameLimits,
    depth: usize,
) -> Result<Option<Vec<Frame>>, FrameError> {
    // Capacity grows with decoded elements, never with the declared count.
    let mut v = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        match decode_at(buf, pos, limits, depth + 1)? {
            Some(f) => v.push(f),
            None => return Ok(None),
        }
    }
    Ok(Some(v))
}

fn decode_at(
    buf: &[u8],
    pos: &mut usize,
    limits: &FrameLimits,
    depth: usize,
) -> Result<Option<Frame>, FrameError> {
    if depth > limits.max_depth {
        return Err(FrameError::TooLarge("nesting depth"));
    }
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(l) = line(buf, pos, limits)? else {
        return Ok(None);
    };
    let aggregate_len = |l: &[u8], per: usize| -> Result<Option<usize>, FrameError> {
        let n = int_of(l)?;
        if n < 0 {
            return Ok(None);
        }
        if (n as u64).saturating_mul(per as u64) > limits.max_elements as u64 {
            return Err(FrameError::TooLarge("aggregate"));
        }
        Ok(Some(n as usize))
    };
    Ok(match kind {
        b'+' => Some(Frame::Simple(Bytes::copy_from_slice(l))),
        b'-' => Some(Frame::Error(Bytes::copy_from_slice(l))),
        b':' => Some(Frame::Integer(int_of(l)?)),
        b'_' if l.is_empty() => Some(Frame::Null),
        b'#' => match l {
            b"t" => Some(Frame::Boolean(true)),
            b"f" => Some(Frame::Boolean(false)),
            _ => return Err(FrameError::Malformed("boolean")),
        },
        b',' => {
            let s = std::str::from_utf8(l).map_err(|_| FrameError::Malformed("double"))?;
            let d = match s {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => s.parse().map_err(|_| FrameError::Malformed("double"))?,
            };
            Some(Frame::Double(d))
        }
        b'(' => Some(Frame::BigNumber(Bytes::copy_from_slice(l))),
        b'$' | b'!' | b'=' => {
            let n = int_of(l)?;
            if kind == b'$' && n == -1 {
                return Ok(Some(Frame::Null));
            }
            let Some(b) = blob(buf, pos, n, limits)? else {
                return Ok(None);
            };
            match kind {
                b'$' => Some(Frame::Bulk(b)),
                b'!' => Some(Frame::Error(b)),
                _ => {
                    if b.len() < 4 || b[3] != b':' {
                        return Err(FrameError::Malformed("verbatim"));
                    }
                    Some(Frame::Verbatim {
                        format: b.slice(0..3),
                        text: b.slice(4..),
                    })
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let Some(n) = aggregate_len(l, 1)? else {
                if kind == b'*' {
                    return Ok(Some(Frame::Null));
                }
                return Err(FrameError::Malformed("negative aggregate length"));
            };
            let Some(v) = elements(buf, pos, n, limits, depth)? else {
                return Ok(None);
            };
            Some(match kind {
                b'*' => Frame::Array(v),
                b'~' => Frame::Set(v),
                _ => Frame::Push(v),
            })
        }
        b'%' | b'|' => {
            let Some(n) = aggregate_len(l, 2)? else {
                return Err(FrameError::Malformed("negative map length"));
            };
            let Some(v) = elements(buf, pos, 2 * n, limits, depth)? else {
                return Ok(None);
            };
            let mut pairs = Vec::with_capacity(n);
            let mut it = v.into_iter();
            while let (Some(k), Some(val)) = (it.next(), it.next()) {
                pairs.push((k, val));
            }
            if kind == b'|' {
                // An attribute annotates the value that follows; return that value.
                return decode_at(buf, pos, limits, depth);
            }
            Some(Frame::Map(pairs))
        }
        other => return Err(FrameError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        decode(b, &FrameLimits::default())
    }

    #[test]
    fn decodes_every_type() {
        let input = b"*9\r\n+OK\r\n-ERR x\r\n:-5\r\n$3\r\nabc\r\n_\r\n#t\r\n,1.5\r\n%1\r\n$1\r\nk\r\n~1\r\n:1\r\n=7\r\ntxt:abc\r\n";
        let (f, used) = d(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        let Frame::Array(v) = f else { panic!() };
        assert_eq!(v[2], Frame::Integer(-5));
        assert_eq!(v[3], Frame::Bulk(Bytes::from_static(b"abc")));
        assert_eq!(v[4], Frame::Null);
        assert_eq!(
            v[7],
            Frame::Map(vec![(
                Frame::Bulk(Bytes::from_static(b"k")),
                Frame::Set(vec![Frame::Integer(1)])
            )])
        );
        let (f, _) = d(b"=7\r\ntxt:abc\r\n").unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Verbatim {
                format: Bytes::from_static(b"txt"),
                text: Bytes::from_static(b"abc")
            }
        );
    }

    #[test]
    fn partial_input_asks_for_more_and_limits_hold() {
        let input = b"*2\r\n$3\r\nabc\r\n:1\r\n";
        for cut in 0..input.len() {
            assert_eq!(d(&input[..cut]), Ok(None), "cut {cut}");
        }
        let deep = b"*1\r\n".repeat(100);
        assert_eq!(d(&deep), Err(FrameError::TooLarge("nesting depth")));
        assert_eq!(
            d(b"*99999999999\r\n"),
            Err(FrameError::TooLarge("aggregate"))
        );
        assert_eq!(d(b"$99999999999\r\n"), Err(FrameError::TooLarge("bulk")));
        assert_eq!(d(b"$-2\r\n"), Err(FrameError::Malformed("negative length")));
        assert_eq!(d(b"?\r\n"), Err(FrameError::UnknownType(b'?')));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let limits = FrameLimits { max_bulk_bytes: 64, max_elements: 16, max_depth: 4, max_line_bytes: 32 };
            if let Ok(Some((_, used))) = decode(&bytes, &limits) {
                proptest::prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn structured_garbage_never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
            &b"*"[..], b"%", b"~", b">", b"|", b"$", b"=", b"!", b"#t", b",", b"_", b"\r\n", b"-1", b"2", b"1", b"txt:a", b"abc",
        ]), 0..48)) {
            let bytes = parts.concat();
            let _ = decode(&bytes, &FrameLimits::default());
        }
    }
}
