//! Little-endian encoding helpers shared by the commit log and the manifest. The reader never
//! panics and never allocates more than the bytes it was given: every length is checked
//! against what remains before anything is sliced.

use bytes::Bytes;

/// Appends little-endian integers and length-prefixed byte strings.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A u32 length then the bytes. Callers bound `b` below `u32::MAX` beforehand.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
}

/// Why a decode failed, with the offset (within the decoded buffer) where it did.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

pub(crate) type DResult<T> = std::result::Result<T, DecodeError>;

/// Reads what [`Writer`] wrote, bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn err<T>(&self, reason: impl Into<String>) -> DResult<T> {
        Err(DecodeError {
            offset: self.pos,
            reason: reason.into(),
        })
    }
    pub fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        if n > self.remaining() {
            return self.err(format!(
                "needs {n} bytes but only {} remain",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self) -> DResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> DResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> DResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> DResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> DResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A length-prefixed byte string of at most `max_len` bytes.
    pub fn bytes(&mut self, max_len: usize, what: &str) -> DResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max_len {
            return self.err(format!("{what} length {len} exceeds limit {max_len}"));
        }
        self.take(len)
    }
    pub fn bytes_owned(&mut self, max_len: usize, what: &str) -> DResult<Bytes> {
        Ok(Bytes::copy_from_slice(self.bytes(max_len, what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_and_oversized_input() {
        let mut w = Writer::default();
        w.u32(7);
        w.bytes(b"abc");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u32().unwrap(), 7);
        assert!(r.bytes(2, "key").is_err());
        let mut r = Reader::new(&w.buf[..6]);
        r.u32().unwrap();
        assert!(r.bytes(10, "key").is_err());
        let mut r = Reader::new(&[1, 2]);
        assert!(r.u64().is_err());
    }
}
