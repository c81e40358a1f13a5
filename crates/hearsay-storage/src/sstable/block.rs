//! Data blocks: prefix-compressed entries with restart points (as LevelDB's), plus the
//! on-disk envelope (optional LZ4, CRC32C trailer) shared by every block kind.
//!
//! Decoded block layout:
//! ```text
//! entry*  restart_offset: u32 LE * n  n: u32 LE
//! entry = shared: varint  unshared: varint  value_len: varint  flags: u8
//!         key_delta[unshared]  timestamp: u64 LE  [expires_at_ms: u64 LE]  value[value_len]
//! ```
//! An entry at a restart offset has `shared == 0`, so a reader can binary-search the restart
//! array and scan at most `restart_interval` entries.

use super::format::*;
use crate::cell::Cell;
use bytes::Bytes;
use hearsay_types::Timestamp;
use std::cmp::Ordering;

/// Builds one decoded data block.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    last_key: Vec<u8>,
    restart_interval: usize,
}

impl BlockBuilder {
    pub fn new(restart_interval: usize, capacity: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(capacity),
            restarts: Vec::new(),
            since_restart: 0,
            last_key: Vec::new(),
            restart_interval: restart_interval.max(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }

    /// Size the block would have if finished now.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// The last key added (encoded).
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends an entry. `key` is encoded and strictly greater than the previous one (the
    /// writer checks).
    pub fn add(&mut self, key: &[u8], cell: &Cell) {
        let shared = if self.since_restart.is_multiple_of(self.restart_interval) {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            key.iter()
                .zip(self.last_key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        self.since_restart += 1;
        let unshared = &key[shared..];
        let mut flags = 0u8;
        if cell.value.is_none() {
            flags |= FLAG_TOMBSTONE;
        }
        if cell.expires_at_ms.is_some() {
            flags |= FLAG_EXPIRY;
        }
        let value: &[u8] = cell.value.as_deref().unwrap_or(&[]);
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, unshared.len() as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.push(flags);
        self.buf.extend_from_slice(unshared);
        self.buf.extend_from_slice(&cell.timestamp.0.to_le_bytes());
        if let Some(e) = cell.expires_at_ms {
            self.buf.extend_from_slice(&e.to_le_bytes());
        }
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
    }

    /// Appends the restart array and returns the finished block; call [`Self::reset`] after.
    pub fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        &self.buf
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
    }
}

/// A decoded, checksum-verified data block.
#[derive(Clone, Debug)]
pub struct Block {
    pub data: Bytes,
    /// Where the restart array starts (= end of the entries).
    restarts_offset: usize,
    num_restarts: usize,
}

/// One decoded entry; the value is a range of the block's bytes.
#[derive(Clone, Copy, Debug)]
pub struct EntryMeta {
    pub flags: u8,
    pub timestamp: u64,
    pub expires_at_ms: Option<u64>,
    pub value_start: usize,
    pub value_len: usize,
}

impl Block {
    /// Checks the restart array's shape; entries are checked as they are decoded.
    pub fn parse(data: Bytes) -> Result<Block, &'static str> {
        let len = data.len();
        let tail = len
            .checked_sub(4)
            .ok_or("block shorter than its restart count")?;
        let mut d = Decoder::at(&data, tail);
        let num_restarts = d.u32_le()? as usize;
        let restarts_bytes = num_restarts
            .checked_mul(4)
            .ok_or("restart count overflows")?;
        let restarts_offset = tail
            .checked_sub(restarts_bytes)
            .ok_or("restart array larger than block")?;
        if num_restarts == 0 {
            return Err("data block without restart points");
        }
        Ok(Block {
            data,
            restarts_offset,
            num_restarts,
        })
    }

    fn restart(&self, i: usize) -> Result<usize, &'static str> {
        let mut d = Decoder::at(&self.data, self.restarts_offset + 4 * i);
        let off = d.u32_le()? as usize;
        if off >= self.restarts_offset {
            return Err("restart point past the entries");
        }
        Ok(off)
    }

    /// The full key of the restart entry at `pos`, borrowed from the block (no copy).
    fn restart_key(&self, pos: usize) -> Result<&[u8], &'static str> {
        let entries = self
            .data
            .get(..self.restarts_offset)
            .ok_or("entries past block end")?;
        let mut d = Decoder::at(entries, pos);
        let shared = d.varint()?;
        let unshared = d.varint_max(MAX_ENCODED_KEY_BYTES, "key length too large")?;
        d.varint()?;
        d.u8()?;
        if shared != 0 {
            return Err("restart entry shares a prefix");
        }
        if unshared < TOKEN_BYTES {
            return Err("key length out of range");
        }
        d.bytes(unshared)
    }

    /// Decodes the entry at `pos`, updating `key` (which must hold the previous entry's key
    /// unless the entry is a restart point). Returns the entry and the next entry's offset.
    pub fn decode_entry(
        &self,
        pos: usize,
        key: &mut Vec<u8>,
    ) -> Result<(EntryMeta, usize), &'static str> {
        let entries = self
            .data
            .get(..self.restarts_offset)
            .ok_or("entries past block end")?;
        let mut d = Decoder::at(entries, pos);
        let shared = d.varint_max(MAX_ENCODED_KEY_BYTES, "shared key length too large")?;
        let unshared = d.varint_max(MAX_ENCODED_KEY_BYTES, "key length too large")?;
        let value_len = d.varint_max(MAX_VALUE_BYTES, "value length too large")?;
        let flags = d.u8()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err("unknown entry flags");
        }
        if flags & FLAG_TOMBSTONE != 0 && value_len != 0 {
            return Err("tombstone with a value");
        }
        if shared > key.len() {
            return Err("shared prefix longer than previous key");
        }
        let delta = d.bytes(unshared)?;
        let total = shared + unshared;
        if !(TOKEN_BYTES..=MAX_ENCODED_KEY_BYTES).contains(&total) {
            return Err("key length out of range");
        }
        key.truncate(shared);
        key.extend_from_slice(delta);
        let timestamp = d.u64_le()?;
        let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
            Some(d.u64_le()?)
        } else {
            None
        };
        let value_start = d.pos();
        d.bytes(value_len)?;
        Ok((
            EntryMeta {
                flags,
                timestamp,
                expires_at_ms,
                value_start,
                value_len,
            },
            d.pos(),
        ))
    }

    /// The cell of a decoded entry; the value shares the block's buffer.
    pub fn cell(&self, e: &EntryMeta) -> Cell {
        Cell {
            value: if e.flags & FLAG_TOMBSTONE != 0 {
                None
            } else {
                Some(self.data.slice(e.value_start..e.value_start + e.value_len))
            },
            timestamp: Timestamp(e.timestamp),
            expires_at_ms: e.expires_at_ms,
        }
    }

    /// Positions `cursor` on the first entry whose key is `>= target` (token bytes + key
    /// bytes), or at the end of the block when there is none.
    pub fn seek(
        &self,
        cursor: &mut Cursor,
        token: &[u8; TOKEN_BYTES],
        target: &[u8],
    ) -> Result<(), &'static str> {
        // Binary search for the last restart point whose key is < target.
        let mut lo = 0usize;
        let mut hi = self.num_restarts - 1;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let pos = self.restart(mid)?;
            if cmp_encoded(self.restart_key(pos)?, token, target) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        cursor.key.clear();
        cursor.pos = self.restart(lo)?;
        cursor.pending = None;
        // Linear scan, bounded by the entries of this block.
        while cursor.pos < self.restarts_offset {
            let (meta, next) = self.decode_entry(cursor.pos, &mut cursor.key)?;
            cursor.pos = next;
            if cmp_encoded(&cursor.key, token, target) != Ordering::Less {
                cursor.pending = Some(meta);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Advances `cursor` to the next entry, or returns `None` at the end of the block.
    pub fn next_entry(&self, cursor: &mut Cursor) -> Result<Option<EntryMeta>, &'static str> {
        if let Some(p) = cursor.pending.take() {
            return Ok(Some(p));
        }
        if cursor.pos >= self.restarts_offset {
            return Ok(None);
        }
        if cursor.pos == 0 {
            cursor.key.clear();
        }
        let (meta, next) = self.decode_entry(cursor.pos, &mut cursor.key)?;
        cursor.pos = next;
        Ok(Some(meta))
    }
}

/// Position in a block: the offset of the next entry to decode, the key of the last decoded
/// entry (prefix compression needs it), and an entry decoded by a seek but not yet returned.
#[derive(Debug, Default)]
pub struct Cursor {
    pub pos: usize,
    pub key: Vec<u8>,
    pub pending: Option<EntryMeta>,
}

impl Cursor {
    pub fn reset(&mut self) {
        self.pos = 0;
        self.key.clear();
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CellKey;
    use hearsay_types::Token;

    fn build(n: usize, interval: usize) -> (Block, Vec<Vec<u8>>) {
        let mut b = BlockBuilder::new(interval, 4096);
        let mut keys = Vec::new();
        for i in 0..n {
            let mut k = Vec::new();
            encode_key(
                &CellKey::new(Token(7), format!("key{i:05}").into_bytes()),
                &mut k,
            );
            b.add(&k, &Cell::value(vec![i as u8; i % 7], Timestamp(i as u64)));
            keys.push(k);
        }
        let data = Bytes::copy_from_slice(b.finish());
        (Block::parse(data).unwrap(), keys)
    }

    #[test]
    fn scan_and_seek() {
        for interval in [1, 3, 16] {
            let (block, keys) = build(50, interval);
            let mut c = Cursor::default();
            let mut seen = 0;
            while let Some(e) = block.next_entry(&mut c).unwrap() {
                assert_eq!(c.key, keys[seen]);
                assert_eq!(block.cell(&e).value.unwrap().len(), seen % 7);
                seen += 1;
            }
            assert_eq!(seen, 50);
            let tok = encode_token(Token(7));
            for (i, k) in keys.iter().enumerate() {
                block.seek(&mut c, &tok, &k[8..]).unwrap();
                let e = block.next_entry(&mut c).unwrap().unwrap();
                assert_eq!(&c.key, k);
                assert_eq!(e.timestamp, i as u64);
            }
            // Past the end.
            block.seek(&mut c, &tok, b"zzz").unwrap();
            assert!(block.next_entry(&mut c).unwrap().is_none());
            // Before the start.
            block.seek(&mut c, &tok, b"a").unwrap();
            block.next_entry(&mut c).unwrap().unwrap();
            assert_eq!(c.key, keys[0]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// The block decoder as a fuzz target: arbitrary bytes parse, scan and seek to an
        /// error or to entries, never to a panic or an endless loop.
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            target in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
        ) {
            if let Ok(b) = Block::parse(Bytes::from(data.clone())) {
                let mut c = Cursor::default();
                let mut steps = 0;
                while let Ok(Some(e)) = b.next_entry(&mut c) {
                    let _ = b.cell(&e);
                    steps += 1;
                    proptest::prop_assert!(steps <= data.len(), "entries consume bytes");
                }
                let _ = b.seek(&mut c, &[0x80, 0, 0, 0, 0, 0, 0, 0], &target);
                let _ = b.next_entry(&mut c);
            }
        }
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(Block::parse(Bytes::from_static(&[1, 2])).is_err());
        assert!(Block::parse(Bytes::from_static(&[0, 0, 0, 0])).is_err());
        assert!(Block::parse(Bytes::from_static(&[255, 255, 255, 255])).is_err());
        let (block, _) = build(10, 4);
        // Every truncation or bit flip decodes to an error or to something, never a panic.
        for i in 0..block.data.len() {
            for bit in 0..8 {
                let mut d = block.data.to_vec();
                d[i] ^= 1 << bit;
                if let Ok(b) = Block::parse(Bytes::from(d)) {
                    let mut c = Cursor::default();
                    for _ in 0..100 {
                        match b.next_entry(&mut c) {
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                    let _ = b.seek(&mut c, &[0; 8], b"key");
                }
            }
        }
    }
}
