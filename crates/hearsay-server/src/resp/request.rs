//! Parser for client requests: RESP multibulk arrays (`*N\r\n$len\r\n...`) and inline commands
//! (`SET k v\r\n`), as Redis accepts them.
//!
//! The parser is a pure function over the bytes received so far: it either finds one complete
//! request, says how many bytes it needs at least before it is worth trying again, or rejects
//! the bytes with the protocol error Redis would give. It never allocates according to a
//! declared length: lengths only decide how many bytes to wait for, and the connection's buffer
//! grows as bytes actually arrive.

use std::ops::Range;

/// How long a length line (`*123\r\n`, `$45\r\n`) may get before the request is refused, in
/// bytes. Redis uses its inline limit (64 KiB) here; any honest length has at most 20 digits,
/// so a short bound costs nothing and stops a client from making us buffer a line forever.
pub const MAX_LENGTH_LINE_BYTES: usize = 64 * 1024;

/// What an unauthenticated client may send, as in Redis: enough for `AUTH user password` and
/// `HELLO 3 AUTH user password SETNAME name`, so that a client that has not proved who it is
/// cannot make the server buffer megabytes.
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// See [`UNAUTHENTICATED_MAX_ARGS`]; in bytes, per argument.
pub const UNAUTHENTICATED_MAX_BULK_BYTES: usize = 16 * 1024;

/// Bounds the parser enforces, from `[limits]` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest bulk string (one argument), in bytes.
    pub max_bulk_bytes: usize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Longest inline command line, in bytes.
    pub max_inline_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_bytes: 16 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_bytes: 64 * 1024,
        }
    }
}

/// A malformed or over-limit request. The text is what Redis replies (after `-ERR `); the
/// connection is closed after sending it, as Redis does, because the stream can no longer be
/// framed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooBig,
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooBig,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
}

/// The outcome of one parse attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete request occupying the first `consumed` bytes; its arguments are the ranges
    /// written to the caller's vector (ranges into the input slice).
    Request { consumed: usize },
    /// Bytes that carry no command (an empty inline line, `*0`, `*-1`): drop them.
    Skip { consumed: usize },
    /// Not enough bytes yet; do not try again before the buffer holds `at_least` bytes.
    Incomplete { at_least: usize },
    /// Inline commands are unescaped into owned bytes rather than borrowed: the argument
    /// values are in `args` (the ranges vector is left empty).
    Inline { consumed: usize, args: Vec<Vec<u8>> },
}

/// Parses one request from the front of `buf`. `ranges` is cleared and receives the argument
/// ranges for [`Parsed::Request`]. `authenticated` selects the stricter bounds Redis applies
/// before AUTH.
pub fn parse_request(
    buf: &[u8],
    limits: &RequestLimits,
    authenticated: bool,
    ranges: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    ranges.clear();
    match buf.first() {
        None => Ok(Parsed::Incomplete { at_least: 1 }),
        Some(b'*') => parse_multibulk(buf, limits, authenticated, ranges),
        Some(_) => parse_inline(buf, limits),
    }
}

fn find_crlf_line(buf: &[u8], from: usize) -> Option<usize> {
    // Redis looks for '\r' and assumes '\n' follows; we look for the '\r' and require the
    // '\n' to be there before accepting the line.
    buf.get(from..)?
        .iter()
        .position(|&b| b == b'\r')
        .map(|p| from + p)
}

/// Parses a decimal integer as Redis's `string2ll` does: optional '-', no '+', no leading
/// zeros, no spaces, fits in i64.
pub fn parse_i64_strict(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, s.get(1..)?),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(digit)?
        } else {
            v.checked_mul(10)?.checked_add(digit)?
        };
    }
    Some(v)
}

fn parse_multibulk(
    buf: &[u8],
    limits: &RequestLimits,
    authenticated: bool,
    ranges: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    let Some(cr) = find_crlf_line(buf, 1) else {
        if buf.len() > MAX_LENGTH_LINE_BYTES {
            return Err(ProtocolError::MultibulkCountTooBig);
        }
        return Ok(Parsed::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    if cr > MAX_LENGTH_LINE_BYTES {
        return Err(ProtocolError::MultibulkCountTooBig);
    }
    if buf.len() < cr + 2 {
        return Ok(Parsed::Incomplete { at_least: cr + 2 });
    }
    let count = match parse_i64_strict(&buf[1..cr]) {
        Some(n) if buf[cr + 1] == b'\n' => n,
        _ => return Err(ProtocolError::InvalidMultibulkLength),
    };
    let mut pos = cr + 2;
    if count <= 0 {
        return Ok(Parsed::Skip { consumed: pos });
    }
    if count as u64 > limits.max_args as u64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    if !authenticated && count as usize > UNAUTHENTICATED_MAX_ARGS {
        return Err(ProtocolError::UnauthenticatedMultibulkLength);
    }
    let count = count as usize;
    // The declared count is not trusted for allocation: reserve at most a small amount; the
    // vector grows only as arguments actually arrive.
    ranges.reserve(count.min(64));
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(Parsed::Incomplete { at_least: pos + 1 });
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError::ExpectedDollar(char::from(buf[pos])));
        }
        let Some(cr) = find_crlf_line(buf, pos + 1) else {
            if buf.len() - pos > MAX_LENGTH_LINE_BYTES {
                return Err(ProtocolError::BulkCountTooBig);
            }
            return Ok(Parsed::Incomplete {
                at_least: buf.len() + 1,
            });
        };
        if cr - pos > MAX_LENGTH_LINE_BYTES {
            return Err(ProtocolError::BulkCountTooBig);
        }
        if buf.len() < cr + 2 {
            return Ok(Parsed::Incomplete { at_least: cr + 2 });
        }
        let len = match parse_i64_strict(&buf[pos + 1..cr]) {
            Some(n)
                if buf[cr + 1] == b'\n' && n >= 0 && n as u64 <= limits.max_bulk_bytes as u64 =>
            {
                n as usize
            }
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        if !authenticated && len > UNAUTHENTICATED_MAX_BULK_BYTES {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        let start = cr + 2;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete { at_least: end + 2 });
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        ranges.push(start..end);
        pos = end + 2;
    }
    Ok(Parsed::Request { consumed: pos })
}

fn parse_inline(buf: &[u8], limits: &RequestLimits) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_bytes {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(Parsed::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    if nl > limits.max_inline_bytes {
        return Err(ProtocolError::InlineTooBig);
    }
    let mut line = &buf[..nl];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    if args.is_empty() {
        return Ok(Parsed::Skip { consumed: nl + 1 });
    }
    if args.len() > limits.max_args {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    Ok(Parsed::Inline {
        consumed: nl + 1,
        args,
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line into arguments the way Redis's `sdssplitargs` does: whitespace
/// separates, `"..."` takes C escapes (`\n`, `\xHH`, ...), `'...'` takes only `\'`, and a
/// closing quote must be followed by whitespace or the end. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex_val(line[i + 2]), hex_val(line[i + 3]))
                {
                    cur.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or nothing.
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    in_dq = false;
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    in_sq = false;
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        debug_assert!(!in_dq && !in_sq);
        args.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> (Result<Parsed, ProtocolError>, Vec<Vec<u8>>) {
        let mut ranges = Vec::new();
        let r = parse_request(buf, &RequestLimits::default(), true, &mut ranges);
        let args = ranges.iter().map(|r| buf[r.clone()].to_vec()).collect();
        (r, args)
    }

    #[test]
    fn multibulk_complete_and_partial() {
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nextra";
        let (r, args) = parse(full);
        assert_eq!(r, Ok(Parsed::Request { consumed: 20 }));
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        for cut in 0..20 {
            let (r, _) = parse(&full[..cut]);
            match r {
                Ok(Parsed::Incomplete { at_least }) => assert!(at_least > cut, "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn big_declared_length_waits_without_allocating() {
        let (r, _) = parse(b"*1\r\n$1000000\r\nab");
        assert_eq!(
            r,
            Ok(Parsed::Incomplete {
                at_least: 14 + 1_000_002
            })
        );
    }

    #[test]
    fn protocol_errors_match_redis() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*abc\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*99999999999\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n+OK\r\n", ProtocolError::ExpectedDollar('+')),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$99999999999\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$2\r\nabcd", ProtocolError::MissingCrlf),
            (b"SET \"a b\r\n", ProtocolError::UnbalancedQuotes),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).0.as_ref(), Err(want), "{input:?}");
        }
        assert_eq!(
            ProtocolError::ExpectedDollar('+').to_string(),
            "Protocol error: expected '$', got '+'"
        );
        let long = vec![b'a'; 70_000];
        assert_eq!(parse(&long).0, Err(ProtocolError::InlineTooBig));
    }

    #[test]
    fn empty_and_negative_counts_are_skipped() {
        assert_eq!(parse(b"*0\r\n").0, Ok(Parsed::Skip { consumed: 4 }));
        assert_eq!(parse(b"*-1\r\n").0, Ok(Parsed::Skip { consumed: 5 }));
        assert_eq!(parse(b"\r\n").0, Ok(Parsed::Skip { consumed: 2 }));
    }

    #[test]
    fn unauthenticated_bounds() {
        let mut ranges = Vec::new();
        let l = RequestLimits::default();
        assert_eq!(
            parse_request(b"*11\r\n", &l, false, &mut ranges),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(
            parse_request(b"*1\r\n$16385\r\n", &l, false, &mut ranges),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn inline_split_like_sdssplitargs() {
        assert_eq!(
            split_args(br#"set "a\x41\n" 'it\'s' plain"#).unwrap(),
            vec![
                b"set".to_vec(),
                b"aA\n".to_vec(),
                b"it's".to_vec(),
                b"plain".to_vec()
            ]
        );
        assert_eq!(split_args(b"  ").unwrap(), Vec::<Vec<u8>>::new());
        assert!(split_args(br#""abc"def"#).is_none());
        assert!(split_args(b"'abc").is_none());
        let (r, _) = parse(b"PING\r\n");
        assert_eq!(
            r,
            Ok(Parsed::Inline {
                consumed: 6,
                args: vec![b"PING".to_vec()]
            })
        );
    }

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64_strict(b"0"), Some(0));
        assert_eq!(parse_i64_strict(b"-12"), Some(-12));
        assert_eq!(parse_i64_strict(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"01"[..],
            b"+1",
            b"",
            b"-",
            b"1 ",
            b"9223372036854775808",
            b"-0",
        ] {
            assert_eq!(parse_i64_strict(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut ranges = Vec::new();
            let limits = RequestLimits { max_bulk_bytes: 64, max_args: 8, max_inline_bytes: 128 };
            let mut buf = &bytes[..];
            // Consume as a connection would, checking every claimed range is in bounds.
            for _ in 0..1024 {
                match parse_request(buf, &limits, true, &mut ranges) {
                    Ok(Parsed::Request { consumed }) => {
                        proptest::prop_assert!(consumed <= buf.len());
                        for r in &ranges { proptest::prop_assert!(r.end <= consumed); }
                        buf = &buf[consumed..];
                    }
                    Ok(Parsed::Skip { consumed }) | Ok(Parsed::Inline { consumed, .. }) => {
                        proptest::prop_assert!(consumed > 0 && consumed <= buf.len());
                        buf = &buf[consumed..];
                    }
                    Ok(Parsed::Incomplete { at_least }) => {
                        proptest::prop_assert!(at_least > buf.len());
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn random_multibulk_with_structure_never_panics(
            parts in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(b"*".to_vec()), proptest::prelude::Just(b"$".to_vec()),
                proptest::prelude::Just(b"\r\n".to_vec()), proptest::prelude::Just(b"-1".to_vec()),
                proptest::prelude::Just(b"3".to_vec()), proptest::prelude::Just(b"abc".to_vec()),
                proptest::prelude::Just(b"\"".to_vec()), proptest::prelude::Just(b" ".to_vec()),
            ], 0..40)
        ) {
            let bytes: Vec<u8> = parts.concat();
            let mut ranges = Vec::new();
            let _ = parse_request(&bytes, &RequestLimits::default(), true, &mut ranges);
            let _ = parse_request(&bytes, &RequestLimits::default(), false, &mut ranges);
        }
    }
}
