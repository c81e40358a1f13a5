//! Hinted handoff: mutations kept on the coordinator's disk for replicas that missed them,
//! replayed when gossip shows the replica up again.
//!
//! - [`HintStore`]: per-target segment files of checksummed, versioned records
//!   ([`format`]); bounded per target, in total and by age; a full store never fails a
//!   write (the hint is dropped, counted by reason, and its tokens are marked dirty for
//!   repair); replay by cursor, deletion on acknowledgement.
//! - [`HintScheduler`]: the sans-IO replay policy: which UP target to replay next, how much,
//!   paced per target, with backoff after failures.
//!
//! Invariants: nothing from disk can make the store panic or replay bytes whose checksum
//! failed; a hint is handed out for replay only while younger than the max age; hint ids
//! only grow (across restarts too), so an acknowledgement can never delete a newer hint.
//! Depends on `hearsay-storage` only for `Cell`/`CellKey`; never on the RPC layer or tokio.

mod config;
pub mod format;
mod scheduler;
mod store;

pub use config::{
    DEFAULT_MAX_BYTES_PER_TARGET, DEFAULT_MAX_DIRTY_ENTRIES, DEFAULT_MAX_HINT_AGE_MS,
    DEFAULT_MAX_TOTAL_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_SYNC_INTERVAL_MS, HintConfig,
    HintConfigError, HintSyncPolicy, MAX_REMOVED_TARGETS_REMEMBERED,
};
pub use scheduler::{
    DEFAULT_BATCH_BYTES, DEFAULT_MAX_BYTES_PER_SEC_PER_TARGET, DEFAULT_MAX_CONCURRENT_TARGETS,
    DEFAULT_RETRY_INITIAL_MS, DEFAULT_RETRY_MAX_MS, HintAction, HintScheduler, HintSchedulerConfig,
    ReplayResult,
};
pub use store::{
    DirtyRanges, DropReason, Hint, HintError, HintOutcome, HintStats, HintStore, TargetStats,
};
