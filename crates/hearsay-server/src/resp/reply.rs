//! Reply encoding, straight into the connection's output buffer (no intermediate tree), in
//! RESP2 or RESP3 depending on what the client asked for with HELLO.
//!
//! RESP3-only types degrade to their RESP2 forms exactly as Redis does: maps become flat
//! arrays, sets arrays, doubles bulk strings, booleans integers, nulls `$-1`/`*-1`, verbatim
//! strings bulk strings, pushes arrays.

use bytes::{BufMut, BytesMut};

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    /// The number HELLO reports.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// An output buffer plus the protocol to encode in.
#[derive(Debug)]
pub struct Reply {
    pub buf: BytesMut,
    pub proto: Protocol,
}

fn put_int(buf: &mut BytesMut, n: i64) {
    // Hand-rolled: formatting through `fmt` costs more than the rest of a GET reply.
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        buf.put_u8(b'-');
    }
    buf.put_slice(&tmp[i..]);
}

impl Reply {
    pub fn new(proto: Protocol) -> Reply {
        Reply {
            buf: BytesMut::with_capacity(16 * 1024),
            proto,
        }
    }

    fn header(&mut self, prefix: u8, n: i64) {
        self.buf.put_u8(prefix);
        put_int(&mut self.buf, n);
        self.buf.put_slice(b"\r\n");
    }

    /// `+OK`-style status. The text must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.put_u8(b'+');
        self.buf.put_slice(s.as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    /// An error reply; `msg` includes its code (`ERR ...`, `WRONGPASS ...`). Newlines are
    /// replaced by spaces, as Redis does, so a message can never break the framing.
    pub fn error(&mut self, msg: &str) {
        self.buf.put_u8(b'-');
        for &b in msg.as_bytes() {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.header(b'$', b.len() as i64);
        self.buf.put_slice(b);
        self.buf.put_slice(b"\r\n");
    }

    /// A null where a string was expected (`$-1` in RESP2).
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// A null where an array was expected (`*-1` in RESP2).
    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map of `n` pairs; the caller writes 2n elements.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', 2 * n as i64),
            Protocol::Resp3 => self.header(b'%', n as i64),
        }
    }

    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'~', n as i64),
        }
    }

    pub fn push(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'>', n as i64),
        }
    }

    pub fn boolean(&mut self, b: bool) {
        match self.proto {
            Protocol::Resp2 => self.int(i64::from(b)),
            Protocol::Resp3 => self.buf.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    pub fn double(&mut self, d: f64) {
        let s = if d.is_infinite() {
            if d > 0.0 {
                "inf".to_string()
            } else {
                "-inf".to_string()
            }
        } else if d.is_nan() {
            "nan".to_string()
        } else {
            format!("{d}")
        };
        match self.proto {
            Protocol::Resp2 => self.bulk(s.as_bytes()),
            Protocol::Resp3 => {
                self.buf.put_u8(b',');
                self.buf.put_slice(s.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    /// Human-readable text (INFO, CLIENT LIST): `=len\r\ntxt:...` in RESP3.
    pub fn verbatim(&mut self, text: &str) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.header(b'=', text.len() as i64 + 4);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_encodings() {
        let mut r = Reply::new(Protocol::Resp2);
        r.map(1);
        r.bulk(b"a");
        r.int(-42);
        r.null();
        r.boolean(true);
        r.double(1.5);
        r.verbatim("x");
        assert_eq!(
            &r.buf[..],
            b"*2\r\n$1\r\na\r\n:-42\r\n$-1\r\n:1\r\n$3\r\n1.5\r\n$1\r\nx\r\n"
        );
        let mut r = Reply::new(Protocol::Resp3);
        r.map(1);
        r.set(0);
        r.push(0);
        r.null();
        r.boolean(false);
        r.double(f64::INFINITY);
        r.verbatim("x");
        r.error("ERR a\r\nb");
        assert_eq!(
            &r.buf[..],
            b"%1\r\n~0\r\n>0\r\n_\r\n#f\r\n,inf\r\n=5\r\ntxt:x\r\n-ERR a  b\r\n"
        );
    }

    #[test]
    fn integers_format_like_display() {
        for n in [0, 1, -1, 10, i64::MAX, i64::MIN, 1234567890] {
            let mut b = BytesMut::new();
            put_int(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
    }
}
