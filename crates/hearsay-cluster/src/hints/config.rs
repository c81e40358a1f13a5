//! Hint store configuration: every bound is here, with its default and the reason for it.

/// Default cap on one target's hint files. Cassandra bounds hints per host too; 128 MiB holds
/// about ten minutes of a 200 KiB/s write stream to one replica, and past that a repair is
/// the better tool than an ever-growing replay.
pub const DEFAULT_MAX_BYTES_PER_TARGET: u64 = 128 * 1024 * 1024;
/// Default cap on all hint files together, so a long outage of several nodes cannot fill the
/// coordinator's disk (which would stop its own writes).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
/// Default maximum hint age: 3 hours, Cassandra's `max_hint_window`. An older hint is
/// dropped (its range marked for repair): after that long, anti-entropy repair moves less
/// data than replaying every missed mutation.
pub const DEFAULT_MAX_HINT_AGE_MS: u64 = 3 * 60 * 60 * 1000;
/// Default segment size. Segments are deleted whole once delivered, so smaller segments free
/// disk sooner; 8 MiB keeps the file count low (16 per full target).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default periodic fsync interval, the commit log's default.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1_000;
/// Default bound on the `(target, token)` pairs remembered for repair after hints were
/// dropped (24 bytes each: under 1 MiB). Past it a target is marked wholly dirty.
pub const DEFAULT_MAX_DIRTY_ENTRIES: usize = 32 * 1024;
/// How many removed targets are remembered, so late hints for them are refused and counted
/// rather than stored forever. Removals are rare operator actions.
pub const MAX_REMOVED_TARGETS_REMEMBERED: usize = 1024;

/// When hint appends are made durable, with the same three modes as the commit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintSyncPolicy {
    /// fsync before `store` returns. A stored hint survives power loss.
    Batch,
    /// fsync at most every `interval_ms` (on the next store after the interval, or when the
    /// driver calls `HintStore::sync` from a timer). A power loss may lose the hints of the
    /// last interval; a process crash loses nothing (the bytes reached the kernel).
    Periodic { interval_ms: u64 },
    /// Never fsync appends (segment creation and cursor updates still sync their directory
    /// entries in `Batch` only). For tests and throwaway clusters.
    None,
}

/// Configuration of a [`super::HintStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintConfig {
    pub max_bytes_per_target: u64,
    pub max_total_bytes: u64,
    pub max_hint_age_ms: u64,
    pub segment_bytes: u64,
    pub sync: HintSyncPolicy,
    pub max_dirty_entries: usize,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            max_bytes_per_target: DEFAULT_MAX_BYTES_PER_TARGET,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_hint_age_ms: DEFAULT_MAX_HINT_AGE_MS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync: HintSyncPolicy::Periodic {
                interval_ms: DEFAULT_SYNC_INTERVAL_MS,
            },
            max_dirty_entries: DEFAULT_MAX_DIRTY_ENTRIES,
        }
    }
}

/// A contradictory configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid hint configuration: {0}")]
pub struct HintConfigError(pub String);

impl HintConfig {
    /// Rejects contradictions with a message naming the fields.
    pub fn validate(&self) -> Result<(), HintConfigError> {
        let bad = |m: &str| Err(HintConfigError(m.to_string()));
        if self.max_bytes_per_target == 0 || self.max_total_bytes == 0 {
            return bad("max_bytes_per_target and max_total_bytes must be positive");
        }
        if self.max_bytes_per_target > self.max_total_bytes {
            return bad("max_bytes_per_target must not exceed max_total_bytes");
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes must be at least 4096");
        }
        if self.max_hint_age_ms == 0 {
            return bad("max_hint_age_ms must be positive");
        }
        if let HintSyncPolicy::Periodic { interval_ms: 0 } = self.sync {
            return bad("sync interval_ms must be positive (use Batch to sync every hint)");
        }
        Ok(())
    }
}
