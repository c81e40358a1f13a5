//! The unit of storage: a cell, keyed by `(token, key)`.

use bytes::Bytes;
use hearsay_types::{Timestamp, Token};
use std::cmp::Ordering;

/// Where a cell lives: the key's token first, then the key bytes, so that a token range is a
/// contiguous run of the sort order (repair hashes ranges, streaming sends them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CellKey {
    pub token: Token,
    pub key: Bytes,
}

impl CellKey {
    pub fn new(token: Token, key: impl Into<Bytes>) -> CellKey {
        CellKey {
            token,
            key: key.into(),
        }
    }
}

impl Ord for CellKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.token
            .cmp(&other.token)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for CellKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One version of a key: a value or a tombstone, the write timestamp, and an optional
/// expiry (TTL) in wall-clock milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// `None` is a tombstone (a delete).
    pub value: Option<Bytes>,
    pub timestamp: Timestamp,
    /// For a value: when it expires (after which it reads as deleted). For a tombstone made
    /// from an expired value: the expiry it came from (its deletion time, see
    /// [`Cell::deletion_time_ms`]).
    pub expires_at_ms: Option<u64>,
}

impl Cell {
    /// A live value with no expiry.
    pub fn value(value: impl Into<Bytes>, timestamp: Timestamp) -> Cell {
        Cell {
            value: Some(value.into()),
            timestamp,
            expires_at_ms: None,
        }
    }

    /// A value that expires at `expires_at_ms`.
    pub fn expiring(value: impl Into<Bytes>, timestamp: Timestamp, expires_at_ms: u64) -> Cell {
        Cell {
            value: Some(value.into()),
            timestamp,
            expires_at_ms: Some(expires_at_ms),
        }
    }

    /// A delete.
    pub fn tombstone(timestamp: Timestamp) -> Cell {
        Cell {
            value: None,
            timestamp,
            expires_at_ms: None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True when this cell is a value that has expired at `now_ms` (it then reads as a delete).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.expires_at_ms.is_some_and(|e| e <= now_ms)
    }

    /// The value a client should see at `now_ms`: `None` for tombstones and expired values.
    pub fn live_value(&self, now_ms: u64) -> Option<&Bytes> {
        if self.is_expired(now_ms) {
            None
        } else {
            self.value.as_ref()
        }
    }

    /// When this cell became (or becomes) a deletion, in wall-clock milliseconds: the expiry
    /// for an expiring value or a tombstone made from one, else the write time. `gc_grace`
    /// counts from here, as Cassandra's local deletion time does.
    pub fn deletion_time_ms(&self) -> u64 {
        self.expires_at_ms.unwrap_or(self.timestamp.millis())
    }

    /// The conflict rule, deterministic on every replica (as Cassandra's): the higher
    /// timestamp wins; on an exact tie a tombstone wins, then the larger value bytes, then the
    /// later expiry. Returns true when `self` wins over `other`, or they are identical.
    pub fn supersedes(&self, other: &Cell) -> bool {
        self.reconcile_cmp(other) != Ordering::Less
    }

    /// Total order behind [`Cell::supersedes`]: `Greater` means `self` wins.
    pub fn reconcile_cmp(&self, other: &Cell) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| match (&self.value, &other.value) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| {
                // No expiry means "lives forever", which outlasts any expiry.
                let a = self.expires_at_ms.unwrap_or(u64::MAX);
                let b = other.expires_at_ms.unwrap_or(u64::MAX);
                a.cmp(&b)
            })
    }

    /// Bytes this cell occupies in user terms (key excluded): the value length, for
    /// amplification accounting.
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_rule() {
        let old = Cell::value("b", Timestamp(1));
        let new = Cell::value("a", Timestamp(2));
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        // Tie: tombstone wins, then larger bytes.
        let del = Cell::tombstone(Timestamp(2));
        assert!(del.supersedes(&new));
        assert!(!new.supersedes(&del));
        let bigger = Cell::value("b", Timestamp(2));
        assert!(bigger.supersedes(&new));
        assert!(!new.supersedes(&bigger));
    }

    #[test]
    fn expiry_and_deletion_time() {
        let c = Cell::expiring("v", Timestamp(5_000_000), 10_000);
        assert_eq!(c.live_value(9_999).map(|b| &b[..]), Some(&b"v"[..]));
        assert!(c.is_expired(10_000));
        assert_eq!(c.live_value(10_000), None);
        assert_eq!(c.deletion_time_ms(), 10_000);
        assert_eq!(
            Cell::tombstone(Timestamp(7_000_000)).deletion_time_ms(),
            7_000
        );
    }

    #[test]
    fn key_order_is_token_then_bytes() {
        let a = CellKey::new(Token(-5), &b"z"[..]);
        let b = CellKey::new(Token(3), &b"a"[..]);
        let c = CellKey::new(Token(3), &b"b"[..]);
        assert!(a < b && b < c);
    }
}
