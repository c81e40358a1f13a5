//! hearsay-ring: where keys live.
//!
//! Owns the partitioner (Cassandra's Murmur3 token of a key), the token ring of virtual nodes
//! ([`Ring`]), the token allocator that keeps ownership balanced as nodes join, the
//! replication strategies (simple and network-topology), the per-vnode preference lists
//! ([`Placement`]), pending ranges while nodes join or leave ([`PendingRanges`],
//! [`ReplicaMap`]), and token ranges ([`TokenRange`]) for repair and streaming.
//!
//! Invariants: everything here is a pure function of its inputs — every node that has the same
//! member set (ids, DCs, racks, weights, tokens) computes the same ring, the same replica lists
//! and the same pending ranges, whatever order it learnt the members in; ties (two members
//! claiming one token) go to the smaller node id. A preference list never holds a node twice.
//! `Token::MIN` is never a key's token.
//!
//! It must not do I/O, spawn threads, use async, read clocks or randomness, or depend on any
//! Hearsay crate but `hearsay-types`. See `docs/ring.md` for the design and measurements.

mod allocator;
mod murmur3;
mod pending;
mod placement;
mod range;
mod ring;
mod strategy;

pub use allocator::{
    AllocatorConfig, AllocatorConfigError, DEFAULT_ALLOCATION_RF, DEFAULT_NUM_TOKENS,
    allocate_ring, allocate_tokens, random_tokens,
};
pub use murmur3::{murmur3_x64_128_cassandra, token_of};
pub use pending::{PendingRanges, ReplicaMap, Transition, WriteEndpoints};
pub use placement::Placement;
pub use range::TokenRange;
pub use ring::{
    MAX_LOCATION_NAME_BYTES, MAX_TOKENS_PER_NODE, MAX_WEIGHT, Member, Ring, RingError,
    TokenConflict,
};
pub use strategy::{MAX_REPLICATION_FACTOR, MAX_STRATEGY_DCS, ReplicationStrategy, StrategyError};
