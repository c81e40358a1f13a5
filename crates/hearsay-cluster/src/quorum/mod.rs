//! The coordinator's consistency logic, as pure synchronous types (sans-IO): no sockets, no
//! clock, no disk. The async driver sends RPCs, feeds the answers in, and acts on the status.
//!
//! - [`WriteTracker`]: counts a write's acks against its level over natural + pending
//!   replicas (Cassandra's rule for pending replicas, see [`requirement`]), reports
//!   `Unavailable` before sending, says when the write is satisfied or why it failed, and lists
//!   the replicas that need a hint. Hints count for ANY only.
//! - [`ReadPlan`] / [`ReadResolver`]: pick the closest live replicas for a read level, one
//!   data read plus digest reads; on a digest mismatch, full reads from every contacted
//!   replica, newest wins by the storage engine's conflict rule (reached through
//!   [`VersionedCell`]), and the stale replicas are listed for a blocking read-repair write.
//! - [`ReadRepair`]: waits until enough contacted replicas hold the newest cell again (those
//!   already current plus repaired stale ones) before the client is answered.
//!
//! Invariants: a replica is counted at most once (its first answer wins); only replicas in
//! the preference list count; no level is ever satisfied by zero answers.

mod cell;
mod error;
mod read;
pub mod requirement;
mod write;

pub use cell::VersionedCell;
pub use error::{ConsistencyError, FailureReason, Failures, OpKind};
pub use read::{
    DIGEST_VERSION, Digest, ReadPlan, ReadRepair, ReadResolver, ReadStatus, RepairStatus,
    Resolution, cell_digest, resolve_full, visible_value,
};
pub use requirement::{DcInfo, UNKNOWN_DC};
pub use write::{WriteStatus, WriteTracker};
