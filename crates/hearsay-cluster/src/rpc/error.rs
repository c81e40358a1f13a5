//! The error model: one error per failed call. (What a client sees when a consistency level
//! is missed is the coordinator's `crate::quorum::ConsistencyError`.)

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
}
