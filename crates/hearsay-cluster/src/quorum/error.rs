//! The errors a coordinator returns to a client, worded like Cassandra's so that operators
//! recognise them, and always saying how many replicas answered and why the others did not.

use hearsay_types::{ConsistencyLevel, NodeId};
use std::fmt;

/// Why a replica did not acknowledge (or answer) a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The deadline passed without an answer.
    Timeout,
    /// Gossip had the replica down, so nothing was sent to it.
    Down,
    /// The replica refused the work because it was overloaded.
    Overloaded,
    /// The replica (or the RPC layer) answered with an error.
    Error(String),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Timeout => f.write_str("timeout"),
            FailureReason::Down => f.write_str("down"),
            FailureReason::Overloaded => f.write_str("overloaded"),
            FailureReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The replicas that did not answer, with their reasons, in `NodeId` order. Displays as
/// ` (node A: timeout, node B: down)`, or as nothing when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures(pub Vec<(NodeId, FailureReason)>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" (")?;
        for (i, (node, reason)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "node {node}: {reason}")?;
        }
        f.write_str(")")
    }
}

/// Whether a timeout or failure happened on a read or a write (Cassandra distinguishes
/// `ReadTimeout` from `WriteTimeout`; clients retry them differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
}

/// A request-level error from the coordinator. The `Display` text is what the client sees
/// (the RESP layer prefixes `-UNAVAILABLE ` / `-TIMEOUT ` / `-ERR `).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// Too few replicas are alive to even try; nothing was sent.
    #[error(
        "Cannot achieve consistency level {level}{}: {alive} of {required} replicas alive",
        InDc(dc)
    )]
    Unavailable {
        level: ConsistencyLevel,
        required: usize,
        alive: usize,
        /// For LOCAL_QUORUM / EACH_QUORUM: the data centre that lacks replicas.
        dc: Option<String>,
    },
    /// The ring places fewer distinct replicas than the keyspace's replication factor asks
    /// for (too few nodes, or too few in a data centre), and too few to meet the level:
    /// the bar is never lowered to what the ring can place.
    #[error(
        "Cannot achieve consistency level {level}{}: {alive} of {required} replicas alive; the ring places only {replicas} replicas where the replication factor is {rf} (add nodes or lower the replication factor)",
        InDc(dc)
    )]
    TooFewReplicas {
        level: ConsistencyLevel,
        required: usize,
        alive: usize,
        /// Natural replicas the ring placed.
        replicas: usize,
        /// Replicas the keyspace asks for.
        rf: usize,
        dc: Option<String>,
    },
    /// The deadline passed before enough replicas answered.
    #[error(
        "Operation timed out - received only {received} of {required} required responses{}{failures}",
        InDc(dc)
    )]
    Timeout {
        kind: OpKind,
        level: ConsistencyLevel,
        received: usize,
        required: usize,
        dc: Option<String>,
        /// For reads: whether the full-data response arrived (Cassandra's `data_present`).
        data_present: bool,
        failures: Failures,
    },
    /// Enough replicas answered with errors that the level can no longer be met.
    #[error(
        "Operation failed - received only {received} of {required} required responses{}{failures}",
        InDc(dc)
    )]
    Failed {
        kind: OpKind,
        level: ConsistencyLevel,
        received: usize,
        required: usize,
        dc: Option<String>,
        failures: Failures,
    },
    /// The level makes no sense for this operation (ANY on a read).
    #[error("{level} ConsistencyLevel is only supported for writes")]
    WriteOnlyLevel { level: ConsistencyLevel },
}

impl ConsistencyError {
    /// Nothing was sent: too few replicas alive, or too few placed (`UNAVAILABLE` to clients).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ConsistencyError::Unavailable { .. } | ConsistencyError::TooFewReplicas { .. }
        )
    }
}

/// Formats ` in DC name` for data-centre-scoped errors.
struct InDc<'a>(&'a Option<String>);

impl fmt::Display for InDc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(dc) => write!(f, " in DC {dc}"),
            None => Ok(()),
        }
    }
}
