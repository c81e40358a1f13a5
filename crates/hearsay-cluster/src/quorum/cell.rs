//! What the coordinator needs to know about a stored cell.
//!
//! The read path compares and reconciles replicas' cells, but the conflict rule belongs to
//! the storage engine ([`hearsay_storage::Cell::reconcile_cmp`]): this trait lets the pure
//! coordinator use exactly that rule while staying testable with any cell type, and keeps the
//! module from reaching into the engine for anything else.

use hearsay_types::Timestamp;
use std::cmp::Ordering;
use std::fmt;

/// One replica's version of a key: a value or a tombstone, its write timestamp and an
/// optional expiry (wall-clock ms).
///
/// Laws: `reconcile_cmp` is a total order, identical on every node (the cluster converges
/// only if every coordinator picks the same winner); `Equal` exactly when the two cells have
/// the same timestamp, value (or tombstone) and expiry.
pub trait VersionedCell: Clone + fmt::Debug + PartialEq {
    fn timestamp(&self) -> Timestamp;
    /// `None` for a tombstone.
    fn value_bytes(&self) -> Option<&[u8]>;
    fn expires_at_ms(&self) -> Option<u64>;
    /// The conflict rule: `Greater` when `self` wins.
    fn reconcile_cmp(&self, other: &Self) -> Ordering;
    /// The value a client sees at `now_ms`: nothing for a tombstone or an expired value.
    fn live_value_bytes(&self, now_ms: u64) -> Option<&[u8]> {
        match self.expires_at_ms() {
            Some(e) if e <= now_ms => None,
            _ => self.value_bytes(),
        }
    }
}

impl VersionedCell for hearsay_storage::Cell {
    fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
    fn value_bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }
    fn reconcile_cmp(&self, other: &Self) -> Ordering {
        hearsay_storage::Cell::reconcile_cmp(self, other)
    }
    fn live_value_bytes(&self, now_ms: u64) -> Option<&[u8]> {
        self.live_value(now_ms).map(|b| &b[..])
    }
}
