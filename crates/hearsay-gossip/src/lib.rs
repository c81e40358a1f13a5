//! Cluster membership by gossip: who is in the cluster, who is alive, and each node's soft
//! state (status, tokens, DC/rack, addresses, load, schema version, clock).
//!
//! The core is [`Gossiper`], a synchronous sans-IO state machine: the caller passes `now`
//! (milliseconds), a random number generator and received datagrams, and sends the
//! [`Outgoing`] packets it returns. Reconciliation is Scuttlebutt (digest → delta → final
//! push) under a per-packet byte budget; new facts also spread by rumor mongering;
//! liveness comes from phi-accrual detectors run by each node's monitors, with DOWN only
//! when a majority of them report. The protocol and its invariant are in `docs/gossip.md`.
//!
//! Invariants: a node's versions only grow within a generation, and a receiver's
//! `max_version` for a node never claims a version it has not received everything up to;
//! members are never dropped, only tombstoned by an operator, and no gossip at the
//! tombstone's generation or older undoes a tombstone; every decoder bounds what it
//! allocates and never panics.
//!
//! The [`driver`] module is a thin tokio UDP driver. The core must not depend on tokio,
//! sockets or wall time, nor on any Hearsay crate above `hearsay-types`.

pub mod config;
pub mod driver;
mod gossiper;
pub mod identity;
pub mod phi;
mod types;
pub mod wire;

pub use config::{GossipConfig, GossipMode};
pub use gossiper::{
    Gossiper, MAX_ACTIVE_RUMORS, MAX_PENDING_EVENTS, MAX_RECENT_CHANGES, Outgoing, SelfSnapshot,
    Versioned,
};
pub use identity::{load_or_create_node_id, next_generation};
pub use types::{Event, GossipMetrics, Liveness, MemberStatus, MemberView};
pub use wire::{DropReason, StateKey};

use hearsay_types::NodeId;

/// Errors of the gossip layer.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// A configuration rule was broken.
    #[error("invalid gossip configuration: {0}")]
    Config(String),
    /// A state value does not fit one packet.
    #[error("state value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `remove` of an unknown node.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// A node cannot remove itself.
    #[error("a node cannot remove itself")]
    RemoveSelf,
    /// Node id or generation file problem.
    #[error("identity: {0}")]
    Identity(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
