//! The error model: one error per failed call, and a quorum error that says how many
//! replicas answered and why the others did not.

use hearsay_types::{ConsistencyLevel, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Why one call failed. Each variant is a different thing for the caller to do: retry
/// elsewhere (Timeout, Unreachable), back off (Overloaded), fix configuration (Refused),
/// report (Remote, Protocol).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No answer before the deadline. The request may or may not have been applied.
    #[error("timed out after {elapsed_ms} ms waiting for {peer}")]
    Timeout { peer: SocketAddr, elapsed_ms: u64 },
    /// No connection: connect failed, the connection dropped, or we are backing off.
    /// The request was not applied, except when the connection dropped after sending it.
    #[error("{peer} unreachable: {reason}")]
    Unreachable { peer: SocketAddr, reason: String },
    /// Shed before it ran, here (in-flight bound) or at the peer; safe to retry later.
    #[error("{peer} overloaded: {reason}")]
    Overloaded { peer: SocketAddr, reason: String },
    /// The handshake failed: wrong cluster secret or name, on either side.
    #[error("handshake with {peer} refused: {reason}")]
    Refused { peer: SocketAddr, reason: String },
    /// The peer's handler ran and failed.
    #[error("{peer} failed the request: {message}")]
    Remote { peer: SocketAddr, message: String },
    /// The peer has no handler for the method (an older node): nothing was applied.
    #[error("{peer} does not know the method: {message}")]
    UnknownMethod { peer: SocketAddr, message: String },
    /// Bytes that break the protocol (ours too big, theirs undecodable); the connection is closed.
    #[error("protocol error with {peer}: {reason}")]
    Protocol { peer: SocketAddr, reason: String },
}

/// The variant of an [`RpcError`] without its details, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RpcErrorKind {
    Timeout,
    Unreachable,
    Overloaded,
    Refused,
    Remote,
    Protocol,
}

impl RpcErrorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RpcErrorKind; 6] = [
        RpcErrorKind::Timeout,
        RpcErrorKind::Unreachable,
        RpcErrorKind::Overloaded,
        RpcErrorKind::Refused,
        RpcErrorKind::Remote,
        RpcErrorKind::Protocol,
    ];

    /// A short stable name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RpcErrorKind::Timeout => "timeout",
            RpcErrorKind::Unreachable => "unreachable",
            RpcErrorKind::Overloaded => "overloaded",
            RpcErrorKind::Refused => "refused",
            RpcErrorKind::Remote => "remote",
            RpcErrorKind::Protocol => "protocol",
        }
    }
}

impl RpcError {
    /// The variant, without details.
    pub fn kind(&self) -> RpcErrorKind {
        match self {
            RpcError::Timeout { .. } => RpcErrorKind::Timeout,
            RpcError::Unreachable { .. } => RpcErrorKind::Unreachable,
            RpcError::Overloaded { .. } => RpcErrorKind::Overloaded,
            RpcError::Refused { .. } => RpcErrorKind::Refused,
            RpcError::Remote { .. } | RpcError::UnknownMethod { .. } => RpcErrorKind::Remote,
            RpcError::Protocol { .. } => RpcErrorKind::Protocol,
        }
    }

    /// The peer the call went to.
    pub fn peer(&self) -> SocketAddr {
        match self {
            RpcError::Timeout { peer, .. }
            | RpcError::Unreachable { peer, .. }
            | RpcError::Overloaded { peer, .. }
            | RpcError::Refused { peer, .. }
            | RpcError::Remote { peer, .. }
            | RpcError::UnknownMethod { peer, .. }
            | RpcError::Protocol { peer, .. } => *peer,
        }
    }

    /// The reason without the peer address (quorum errors name the node instead).
    fn short(&self) -> String {
        match self {
            RpcError::Timeout { elapsed_ms, .. } => format!("timed out after {elapsed_ms} ms"),
            RpcError::Unreachable { reason, .. } => format!("unreachable ({reason})"),
            RpcError::Overloaded { reason, .. } => format!("overloaded ({reason})"),
            RpcError::Refused { reason, .. } => format!("refused ({reason})"),
            RpcError::Remote { message, .. } => format!("failed ({message})"),
            RpcError::UnknownMethod { message, .. } => format!("unknown method ({message})"),
            RpcError::Protocol { reason, .. } => format!("protocol error ({reason})"),
        }
    }
}

/// Whether a quorum was missed for lack of live replicas before anything was sent, or for
/// lack of answers afterwards. Cassandra reports these differently (Unavailable vs Timeout),
/// and so do we: the first means nothing was written, the second that it may have been.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumFailure {
    /// Too few replicas alive to try.
    Unavailable,
    /// Tried; too few answered in time or successfully.
    NotEnoughAnswers,
}

/// Too few replicas answered: how many were required, how many answered, and what happened
/// to each of the others. Formatted like Cassandra's errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumError {
    pub failure: QuorumFailure,
    /// "write", "read", "repair", ...
    pub operation: &'static str,
    pub consistency: ConsistencyLevel,
    pub required: usize,
    /// For `Unavailable`: replicas alive; for `NotEnoughAnswers`: replicas that answered.
    pub answered: usize,
    /// Replicas in the preference list.
    pub replicas: usize,
    /// Each replica that failed, by node id (ordered, so the message is stable).
    pub failures: BTreeMap<NodeId, RpcError>,
    /// Replicas contacted that had neither answered nor failed when the coordinator stopped
    /// waiting.
    pub pending: Vec<NodeId>,
}

impl std::error::Error for QuorumError {}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            QuorumFailure::Unavailable => write!(
                f,
                "Cannot achieve consistency level {}: {} of {} replicas alive, {} required",
                self.consistency, self.answered, self.replicas, self.required
            )?,
            QuorumFailure::NotEnoughAnswers => write!(
                f,
                "Operation failed for {} at consistency {}: {} of {} replicas answered, {} required",
                self.operation, self.consistency, self.answered, self.replicas, self.required
            )?,
        }
        let mut sep = "; others: ";
        for (node, err) in &self.failures {
            write!(f, "{sep}{node} {}", err.short())?;
            sep = ", ";
        }
        for node in &self.pending {
            write!(f, "{sep}{node} no answer yet")?;
            sep = ", ";
        }
        Ok(())
    }
}

/// Sans-IO bookkeeping for one quorum request: feed it each replica's outcome, ask whether
/// the quorum is reached, impossible, or still open.
#[derive(Clone, Debug)]
pub struct QuorumTracker {
    operation: &'static str,
    consistency: ConsistencyLevel,
    required: usize,
    replicas: Vec<NodeId>,
    answered: Vec<NodeId>,
    failures: BTreeMap<NodeId, RpcError>,
}

/// Where a quorum request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumStatus {
    /// Enough answers: reply to the client.
    Reached,
    /// Not yet decided.
    Waiting,
    /// Too many failures for `required` answers ever to arrive.
    Failed(QuorumError),
}

impl QuorumTracker {
    /// A request to `replicas` that needs `required` successful answers.
    pub fn new(
        operation: &'static str,
        consistency: ConsistencyLevel,
        required: usize,
        replicas: Vec<NodeId>,
    ) -> QuorumTracker {
        QuorumTracker {
            operation,
            consistency,
            required,
            replicas,
            answered: Vec::new(),
            failures: BTreeMap::new(),
        }
    }

    fn is_open(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
            && !self.answered.contains(&node)
            && !self.failures.contains_key(&node)
    }

    /// Records a successful answer. A node outside the preference list, or one already
    /// counted, is ignored: duplicates must never inflate a quorum.
    pub fn on_success(&mut self, node: NodeId) -> QuorumStatus {
        if self.is_open(node) {
            self.answered.push(node);
        }
        self.status()
    }

    /// Records a failed call.
    pub fn on_failure(&mut self, node: NodeId, error: RpcError) -> QuorumStatus {
        if self.is_open(node) {
            self.failures.insert(node, error);
        }
        self.status()
    }

    /// Replicas that answered successfully, in answer order.
    pub fn answered(&self) -> &[NodeId] {
        &self.answered
    }

    /// The current status.
    pub fn status(&self) -> QuorumStatus {
        if self.answered.len() >= self.required {
            return QuorumStatus::Reached;
        }
        let still_possible = self.replicas.len() - self.failures.len();
        if still_possible < self.required {
            return QuorumStatus::Failed(self.error());
        }
        QuorumStatus::Waiting
    }

    /// The error to report if the coordinator stops waiting now (its deadline passed).
    pub fn error(&self) -> QuorumError {
        QuorumError {
            failure: QuorumFailure::NotEnoughAnswers,
            operation: self.operation,
            consistency: self.consistency,
            required: self.required,
            answered: self.answered.len(),
            replicas: self.replicas.len(),
            failures: self.failures.clone(),
            pending: self
                .replicas
                .iter()
                .copied()
                .filter(|n| self.is_open(*n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn quorum_tracker_reaches_fails_and_explains() {
        let (a, b, c) = (NodeId(1 << 96), NodeId(2 << 96), NodeId(3 << 96));
        let mut t = QuorumTracker::new("write", ConsistencyLevel::Quorum, 2, vec![a, b, c]);
        assert_eq!(t.on_success(a), QuorumStatus::Waiting);
        // A duplicate answer must not count twice.
        assert_eq!(t.on_success(a), QuorumStatus::Waiting);
        assert_eq!(
            t.on_failure(
                b,
                RpcError::Timeout {
                    peer: addr(1),
                    elapsed_ms: 500
                }
            ),
            QuorumStatus::Waiting
        );
        let status = t.on_failure(
            c,
            RpcError::Unreachable {
                peer: addr(2),
                reason: "connection refused".into(),
            },
        );
        let QuorumStatus::Failed(err) = status else {
            panic!("expected failure, got {status:?}");
        };
        assert_eq!(
            err.to_string(),
            "Operation failed for write at consistency QUORUM: 1 of 3 replicas answered, 2 \
             required; others: 00000002-0000-0000-0000-000000000000 timed out after 500 ms, \
             00000003-0000-0000-0000-000000000000 unreachable (connection refused)"
        );

        let mut t = QuorumTracker::new("read", ConsistencyLevel::One, 1, vec![a, b]);
        assert_eq!(t.on_success(c), QuorumStatus::Waiting, "c is not a replica");
        assert_eq!(t.on_success(b), QuorumStatus::Reached);
        let pending = QuorumTracker::new("read", ConsistencyLevel::All, 2, vec![a, b]).error();
        assert!(pending.to_string().ends_with("no answer yet"), "{pending}");
    }

    #[test]
    fn unavailable_reads_like_cassandra() {
        let err = QuorumError {
            failure: QuorumFailure::Unavailable,
            operation: "write",
            consistency: ConsistencyLevel::All,
            required: 3,
            answered: 2,
            replicas: 3,
            failures: BTreeMap::new(),
            pending: Vec::new(),
        };
        assert_eq!(
            err.to_string(),
            "Cannot achieve consistency level ALL: 2 of 3 replicas alive, 3 required"
        );
    }
}
