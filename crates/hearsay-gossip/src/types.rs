//! Public value types of the gossip layer: statuses, liveness, events, the membership view
//! and metrics.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use hearsay_types::NodeId;
use serde::Serialize;

use crate::wire::{DropReason, StateKey};

/// Events kept for a subscriber that has not drained them; beyond this the oldest go
/// (counted), so a stuck subscriber cannot grow memory without bound.
pub const MAX_PENDING_EVENTS: usize = 100_000;

/// A node's operator-visible status, carried in its `Status` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum MemberStatus {
    /// Bootstrapping; also the status that allows a removed node back in.
    Joining,
    /// Serving.
    Normal,
    /// Decommissioning.
    Leaving,
    /// Left the ring.
    Left,
    /// Removed by an operator (a tombstone).
    Removed,
}

impl MemberStatus {
    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "JOINING",
            MemberStatus::Normal => "NORMAL",
            MemberStatus::Leaving => "LEAVING",
            MemberStatus::Left => "LEFT",
            MemberStatus::Removed => "REMOVED",
        }
    }

    /// Parses the wire text.
    pub fn parse(s: &[u8]) -> Option<MemberStatus> {
        Some(match s {
            b"JOINING" => MemberStatus::Joining,
            b"NORMAL" => MemberStatus::Normal,
            b"LEAVING" => MemberStatus::Leaving,
            b"LEFT" => MemberStatus::Left,
            b"REMOVED" => MemberStatus::Removed,
            _ => return None,
        })
    }
}

/// Whether a member is reachable, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Liveness {
    /// No valid suspicion.
    Up,
    /// At least one valid suspicion report (Redis's PFAIL).
    Suspect,
    /// A majority of its monitors reported it within the validity window (Redis's FAIL);
    /// sticky until a newer heartbeat or generation.
    Down,
    /// Tombstoned by an operator.
    Removed,
}

/// Something a subscriber may act on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A node became known (first sight, or rejoin after removal).
    Joined {
        /// The node.
        node: NodeId,
        /// Its generation.
        generation: u64,
    },
    /// A node is up again: after suspicion, after down, or restarted with a newer generation.
    Alive {
        /// The node.
        node: NodeId,
        /// Its generation.
        generation: u64,
    },
    /// A node became suspect.
    Suspect {
        /// The node.
        node: NodeId,
    },
    /// A node was convicted down.
    Down {
        /// The node.
        node: NodeId,
    },
    /// A node was tombstoned (possibly this node itself: it must stop).
    Removed {
        /// The node.
        node: NodeId,
        /// The generation tombstoned.
        generation: u64,
    },
    /// One of a node's application states changed.
    StateChanged {
        /// The node.
        node: NodeId,
        /// The key.
        key: StateKey,
        /// The new version.
        version: u64,
    },
}

/// One member as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    /// UUID form.
    pub node_id: String,
    /// This row is the local node.
    pub is_self: bool,
    /// UP, SUSPECT, DOWN or REMOVED.
    pub liveness: Liveness,
    /// The `Status` state, if set.
    pub status: Option<String>,
    /// Generation.
    pub generation: u64,
    /// Heartbeat as known here.
    pub heartbeat: u64,
    /// Highest version known.
    pub max_version: u64,
    /// Phi, if this node watches it.
    pub phi: Option<f64>,
    /// Valid suspicion reports held.
    pub suspicion_reports: usize,
    /// The address gossip sends to.
    pub cluster_addr: Option<SocketAddr>,
    /// Every application state, as lossy UTF-8.
    pub states: BTreeMap<String, String>,
}

/// Counters of one gossiper. Plain integers: the owner snapshots them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GossipMetrics {
    /// Ticks run.
    pub rounds: u64,
    /// Packets accepted.
    pub packets_in: u64,
    /// Packets emitted.
    pub packets_out: u64,
    /// Bytes accepted (whole datagrams).
    pub bytes_in: u64,
    /// Bytes emitted.
    pub bytes_out: u64,
    /// Packets dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Deltas cut short by the byte budget.
    pub deltas_truncated: u64,
    /// Candidate deltas left for a later round by the byte budget.
    pub deltas_deferred: u64,
    /// Stale gossip ignored (older generation, or a removed node at its tombstone's
    /// generation).
    pub stale_ignored: u64,
    /// Rumors currently being spread.
    pub rumors_active: u64,
    /// Rumors evicted because the rumor queue was full.
    pub rumors_evicted: u64,
    /// Events dropped because nobody drained the queue.
    pub events_dropped: u64,
    /// Local suspicions raised by the phi detector.
    pub local_suspicions: u64,
}

/// What the parts of the state machine report besides their results: events for the
/// subscriber, in the order they happened, and counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Effects {
    /// Pending events, oldest first, at most [`MAX_PENDING_EVENTS`].
    pub(crate) events: VecDeque<Event>,
    /// Counters (`rumors_active` and `rumors_evicted` are the rumor queue's).
    pub(crate) metrics: GossipMetrics,
}

impl Effects {
    /// Queues an event, dropping (and counting) the oldest when full.
    pub(crate) fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.metrics.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Counts a dropped packet.
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        *self
            .metrics
            .dropped
            .entry(format!("{reason:?}"))
            .or_insert(0) += 1;
    }
}
