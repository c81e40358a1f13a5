//! A minimal RESP2/RESP3 codec for the benchmark client: command encoding straight into a
//! reusable buffer, and a zero-copy reply parser that borrows from the read buffer.
//!
//! The parser never panics and never allocates: every length is bounds-checked against named
//! limits, and a malformed reply is an error that makes the caller drop the connection.

/// Largest bulk string accepted in a reply. Benchmark values are at most
/// [`crate::MAX_VALUE_SIZE_BYTES`]; anything far larger is a confused server, and accepting it
/// would let one reply make the read buffer grow without bound.
pub const MAX_REPLY_BULK_BYTES: usize = 64 * 1024 * 1024;

/// Longest simple string, error or number line. Servers send short status lines; a line
/// without CRLF past this is garbage.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Elements accepted in one aggregate reply (we only skip aggregates; a bound keeps a hostile
/// count from making us scan forever).
pub const MAX_AGGREGATE_LEN: i64 = 1 << 20;

/// Nesting accepted in aggregate replies, so recursion depth is bounded.
pub const MAX_NESTING_DEPTH: usize = 16;

/// One parsed reply, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`.
    Simple(&'a [u8]),
    /// `-ERR ...` or a RESP3 blob error.
    Error(&'a [u8]),
    /// `:123`.
    Integer(i64),
    /// `$n` bulk (or RESP3 verbatim string); `None` is a null (`$-1`, `_`, `*-1`).
    Bulk(Option<&'a [u8]>),
    /// An array, map, set, boolean, double or big number: parsed for framing, contents unused.
    Other,
    /// A RESP3 out-of-band push: not an answer to any request.
    Push,
}

/// A reply that is not valid RESP or exceeds a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A type byte we do not know.
    #[error("unknown RESP type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A length or integer that does not parse.
    #[error("malformed number in RESP reply")]
    BadNumber,
    /// A line or bulk not terminated by CRLF.
    #[error("missing CRLF in RESP reply")]
    MissingCrlf,
    /// A line longer than [`MAX_LINE_BYTES`].
    #[error("RESP line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// A bulk longer than [`MAX_REPLY_BULK_BYTES`] or a negative length other than -1.
    #[error("RESP bulk length {0} out of range")]
    BadBulkLength(i64),
    /// An aggregate with more than [`MAX_AGGREGATE_LEN`] elements.
    #[error("RESP aggregate length {0} out of range")]
    BadAggregateLength(i64),
    /// Aggregates nested more than [`MAX_NESTING_DEPTH`] deep.
    #[error("RESP aggregates nested too deeply")]
    TooDeep,
}

/// Appends the RESP array encoding of a command with the given arguments.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        push_bulk_header(out, a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `$len\r\n`.
pub fn push_bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `v` without going through `fmt` (this is on the hot path).
pub fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses one reply from the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((reply, consumed)))` gives the reply and how many bytes it used.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some(&ty) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, after_line)) = read_line(buf, pos + 1)? else {
        return Ok(None);
    };
    match ty {
        b'+' => Ok(Some((Reply::Simple(line), after_line))),
        b'-' => Ok(Some((Reply::Error(line), after_line))),
        b':' => Ok(Some((Reply::Integer(parse_i64(line)?), after_line))),
        // Boolean, double, big number: framing only.
        b'#' | b',' | b'(' => Ok(Some((Reply::Other, after_line))),
        b'_' => Ok(Some((Reply::Bulk(None), after_line))),
        b'$' | b'!' | b'=' => {
            let len = parse_i64(line)?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), after_line)));
            }
            if !(0..=MAX_REPLY_BULK_BYTES as i64).contains(&len) {
                return Err(RespError::BadBulkLength(len));
            }
            let len = len as usize;
            let end = after_line + len;
            let Some(tail) = buf.get(end..end + 2) else {
                return Ok(None);
            };
            if tail != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            let body = buf.get(after_line..end).unwrap_or_default();
            let reply = match ty {
                b'!' => Reply::Error(body),
                // Verbatim strings start with a three-letter format and a colon.
                b'=' => Reply::Bulk(Some(body.get(4..).unwrap_or_default())),
                _ => Reply::Bulk(Some(body)),
            };
            Ok(Some((reply, end + 2)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_i64(line)?;
            if ty == b'*' && n == -1 {
                return Ok(Some((Reply::Bulk(None), after_line)));
            }
            if !(0..=MAX_AGGREGATE_LEN).contains(&n) {
                return Err(RespError::BadAggregateLength(n));
            }
            // Maps and attributes hold key-value pairs.
            let elems = if ty == b'%' || ty == b'|' { n * 2 } else { n };
            let mut at = after_line;
            for _ in 0..elems {
                match parse_at(buf, at, depth + 1)? {
                    Some((_, next)) => at = next,
                    None => return Ok(None),
                }
            }
            match ty {
                b'>' => Ok(Some((Reply::Push, at))),
                // An attribute annotates the reply that follows it.
                b'|' => match parse_at(buf, at, depth + 1)? {
                    Some((r, next)) => Ok(Some((r, next))),
                    None => Ok(None),
                },
                _ => Ok(Some((Reply::Other, at))),
            }
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// The bytes from `start` up to the next CRLF, and the position after it.
fn read_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE_BYTES + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&rest[..i], start + i + 2))),
        None if rest.len() > MAX_LINE_BYTES + 1 => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

fn parse_i64(s: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', d)) => (true, d),
        Some((b'+', d)) => (false, d),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(RespError::BadNumber);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadNumber);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(RespError::BadNumber)?;
    }
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        let mut d = Vec::new();
        for v in [0u64, 7, 10, 12345, u64::MAX] {
            d.clear();
            push_decimal(&mut d, v);
            assert_eq!(d, v.to_string().as_bytes());
        }
    }

    #[test]
    fn parses_each_type_and_waits_for_more() {
        let cases: &[(&[u8], Reply<'_>)] = &[
            (b"+OK\r\n", Reply::Simple(b"OK")),
            (b"-ERR no\r\n", Reply::Error(b"ERR no")),
            (b":-42\r\n", Reply::Integer(-42)),
            (b"$3\r\nabc\r\n", Reply::Bulk(Some(b"abc"))),
            (b"$0\r\n\r\n", Reply::Bulk(Some(b""))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Bulk(None)),
            (b"_\r\n", Reply::Bulk(None)),
            (b"!5\r\nERR x\r\n", Reply::Error(b"ERR x")),
            (b"=7\r\ntxt:abc\r\n", Reply::Bulk(Some(b"abc"))),
            (b"*2\r\n$1\r\na\r\n:1\r\n", Reply::Other),
            (b"%1\r\n+k\r\n*1\r\n#t\r\n", Reply::Other),
            (b">2\r\n+message\r\n+x\r\n", Reply::Push),
            (b"|1\r\n+ttl\r\n:3\r\n+OK\r\n", Reply::Simple(b"OK")),
            (b",1.5\r\n", Reply::Other),
        ];
        for (bytes, expected) in cases {
            let (r, n) = parse_reply(bytes).expect("valid").expect("complete");
            assert_eq!(&r, expected, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(n, bytes.len());
            // Every strict prefix asks for more bytes rather than failing or misparsing.
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(&bytes[..cut]), Ok(None), "prefix {cut}");
            }
        }
        // Two replies back to back: the first consumes only itself.
        let (r, n) = parse_reply(b"+OK\r\n:1\r\n").unwrap().unwrap();
        assert_eq!((r, n), (Reply::Simple(b"OK"), 5));
    }

    #[test]
    fn rejects_malformed_without_panicking() {
        let bad: &[&[u8]] = &[
            b"?x\r\n",
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$99999999999\r\n",
            b"$3\r\nabcXY",
            b"*-5\r\n",
            b"*99999999\r\n",
        ];
        for b in bad {
            assert!(parse_reply(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let mut deep = Vec::new();
        for _ in 0..(MAX_NESTING_DEPTH + 2) {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(parse_reply(&deep), Err(RespError::TooDeep));
        let long = vec![b'a'; MAX_LINE_BYTES + 10];
        let mut line = b"+".to_vec();
        line.extend_from_slice(&long);
        assert_eq!(parse_reply(&line), Err(RespError::LineTooLong));
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed = 99;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let alphabet = b"+-:$*%~>|_#,(!=\r\n0123456789-ab";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if let Ok(Some((_, n))) = parse_reply(&bytes) {
                assert!(n <= bytes.len(), "seed {seed}: consumed past end");
            }
        }
    }
}
