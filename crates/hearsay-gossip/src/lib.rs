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
//! Module map (the sans-IO core first):
//! - `gossiper`: [`Gossiper`], the protocol layer — rounds (`tick`), received packets
//!   (`handle_packet`), peer choice, framing and sealing; it composes the three parts below
//!   and owns nothing else of substance.
//! - `state`: Scuttlebutt — members, versioned application states, tombstones, and merging
//!   what peers send; `state::exchange`: digests, and deltas under a byte budget.
//! - `liveness`: who monitors whom, phi-accrual detectors ([`phi`]), suspicion reports,
//!   SUSPECT/DOWN verdicts by a majority of monitors, refutation.
//! - `rumors`: the rumor queue — add, dedupe by key, retire after a number of rounds,
//!   batches under a byte budget, at most [`MAX_ACTIVE_RUMORS`].
//! - `peers` (whom to gossip with each round) and `outbox` (the packets of one turn:
//!   rumors riding on messages already going to a peer, sealing under the budget).
//! - [`wire`]: the packet format and its decoder; [`config`], [`identity`] (node id and
//!   generation files), `types` (events, views, metrics).
//! - [`driver`]: a thin tokio UDP driver (`GossipHandle`).
//! - `sim_hooks` (feature `sim`, for `hearsay-sim`): seeding a converged simulation.
//!
//! Feature `node-bin` (default) builds the `hearsay-gossip-node` test binary and its
//! command-line dependencies; the workspace depends on this crate without it.
//!
//! The core must not depend on tokio, sockets or wall time, nor on any Hearsay crate above
//! `hearsay-types`.

#![warn(missing_docs)]

pub mod config;
pub mod driver;
mod gossiper;
pub mod identity;
mod liveness;
mod outbox;
mod peers;
pub mod phi;
mod rumors;
#[cfg(feature = "sim")]
mod sim_hooks;
mod state;
mod types;
pub mod wire;

pub use config::{GossipConfig, GossipMode};
pub use gossiper::Gossiper;
pub use identity::{load_or_create_node_id, next_generation};
pub use outbox::Outgoing;
pub use rumors::MAX_ACTIVE_RUMORS;
#[cfg(feature = "sim")]
pub use sim_hooks::SelfSnapshot;
pub use state::{MAX_RECENT_CHANGES, Versioned};
pub use types::{Event, GossipMetrics, Liveness, MAX_PENDING_EVENTS, MemberStatus, MemberView};
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
