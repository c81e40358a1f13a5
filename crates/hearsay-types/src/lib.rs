//! Primitive types shared by every Hearsay crate.
//!
//! This crate owns the vocabulary that crosses crate boundaries: [`Token`] (a key's position
//! on the ring), [`Timestamp`] (a hybrid-logical-clock reading in microseconds), [`NodeId`],
//! [`ConsistencyLevel`], the [`Clock`] seam through which every component reads time, and the
//! test-only network fault seam ([`faults::NetFaults`]).
//! It must not depend on any other Hearsay crate and must stay free of I/O and async code.

mod clock;
mod consistency;
pub mod faults;

pub use clock::{Clock, Hlc, ManualClock, SystemClock};
pub use consistency::{ConsistencyLevel, ParseConsistencyError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A key's position on the ring: the first 64 bits of Murmur3 x64-128, as a signed integer,
/// exactly as Cassandra's `Murmur3Partitioner` computes it. `i64::MIN` is never produced for a
/// key (the partitioner maps it to `i64::MAX`), so it can serve as the ring's minimum bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub i64);

impl Token {
    /// The smallest token; never the token of a key.
    pub const MIN: Token = Token(i64::MIN);
    /// The largest token.
    pub const MAX: Token = Token(i64::MAX);
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A write timestamp: microseconds since the Unix epoch, as produced by a hybrid logical
/// clock ([`Hlc`]): never behind wall time, strictly increasing per node, and advanced by every
/// timestamp the node observes. Last write wins by this value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> u64 {
        self.0
    }
    /// Milliseconds since the Unix epoch (truncated).
    pub fn millis(self) -> u64 {
        self.0 / 1_000
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node's permanent identity, created once and kept in its data directory. Addresses and
/// generations change; the id does not.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> NodeId {
        NodeId(rand::random::<u128>())
    }

    /// Parses the 32-hex-digit form produced by `Display`, with or without dashes.
    pub fn parse(s: &str) -> Option<NodeId> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(NodeId)
    }
}

impl fmt::Display for NodeId {
    /// UUID-style formatting, as `nodetool status` shows host ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form keeps logs and test failures readable.
        write!(f, "NodeId({:08x})", (self.0 >> 96) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_display_parses_back() {
        let id = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(NodeId::parse(&s), Some(id));
        assert_eq!(NodeId::parse("xyz"), None);
    }
}
