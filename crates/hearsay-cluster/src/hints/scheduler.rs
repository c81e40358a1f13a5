//! The replay policy, sans-IO: given `now`, the targets gossip shows UP and how much each has
//! pending, decide which target to replay next and how much; pace each target to a byte
//! rate; back off after failures. The driver owns the store, the RPCs and the timer.

use hearsay_types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Default replay rate per target: 1 MiB/s, Cassandra's `hinted_handoff_throttle` (1024 KiB/s),
/// so a recovering node is not flattened by every coordinator replaying at once.
pub const DEFAULT_MAX_BYTES_PER_SEC_PER_TARGET: u64 = 1024 * 1024;
/// Default batch size: 256 KiB, a quarter second at the default rate, so pacing stays smooth.
pub const DEFAULT_BATCH_BYTES: u64 = 256 * 1024;
/// Default first retry delay after a failed replay (10 s, as Cassandra's hint dispatcher).
pub const DEFAULT_RETRY_INITIAL_MS: u64 = 10_000;
/// Default cap on the retry delay.
pub const DEFAULT_RETRY_MAX_MS: u64 = 5 * 60 * 1000;
/// Default number of targets replayed at once (Cassandra's `max_hints_delivery_threads`: 2).
pub const DEFAULT_MAX_CONCURRENT_TARGETS: usize = 2;

/// Replay pacing and retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintSchedulerConfig {
    pub max_bytes_per_sec_per_target: u64,
    pub batch_bytes: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub max_concurrent_targets: usize,
}

impl Default for HintSchedulerConfig {
    fn default() -> Self {
        HintSchedulerConfig {
            max_bytes_per_sec_per_target: DEFAULT_MAX_BYTES_PER_SEC_PER_TARGET,
            batch_bytes: DEFAULT_BATCH_BYTES,
            retry_initial_ms: DEFAULT_RETRY_INITIAL_MS,
            retry_max_ms: DEFAULT_RETRY_MAX_MS,
            max_concurrent_targets: DEFAULT_MAX_CONCURRENT_TARGETS,
        }
    }
}

/// What the driver should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintAction {
    /// Read `HintStore::replay_batch(target, max_bytes)`, send it, then report the outcome
    /// with [`HintScheduler::on_replay_result`].
    Replay { target: NodeId, max_bytes: u64 },
}

/// How a replay went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayResult {
    /// The target acknowledged hints up to `acked_id`, `bytes` of them.
    Ok { acked_id: u64, bytes: u64 },
    /// The replay failed (timeout, error, target went down).
    Err,
}

#[derive(Clone, Debug, Default)]
struct TargetState {
    in_flight: bool,
    /// Not before this instant (pacing or backoff).
    next_at: Option<Instant>,
    failures: u32,
    last_served: Option<Instant>,
    was_up: bool,
    last_acked_id: u64,
}

/// Decides replay order and pace. Pure: the caller passes `now` and the facts.
#[derive(Clone, Debug)]
pub struct HintScheduler {
    config: HintSchedulerConfig,
    targets: BTreeMap<NodeId, TargetState>,
}

impl HintScheduler {
    pub fn new(config: HintSchedulerConfig) -> HintScheduler {
        HintScheduler {
            config,
            targets: BTreeMap::new(),
        }
    }

    /// The replays to start now. `up`: targets gossip shows UP; `pending_bytes`: undelivered
    /// hint bytes per target (from the store). At most `max_concurrent_targets` replays are in
    /// flight; among eligible targets the one served longest ago goes first (fair round robin).
    pub fn poll(
        &mut self,
        now: Instant,
        up: &BTreeSet<NodeId>,
        pending_bytes: &BTreeMap<NodeId, u64>,
    ) -> Vec<HintAction> {
        // Forget targets with nothing pending and nothing in flight: the map stays bounded by
        // the store's targets.
        self.targets
            .retain(|n, s| s.in_flight || pending_bytes.get(n).is_some_and(|b| *b > 0));
        for (n, bytes) in pending_bytes {
            if *bytes > 0 {
                self.targets.entry(*n).or_default();
            }
        }
        for (n, s) in self.targets.iter_mut() {
            let is_up = up.contains(n);
            if is_up && !s.was_up {
                // Gossip just saw it come back: the reason for any backoff is gone.
                s.failures = 0;
                s.next_at = None;
            }
            s.was_up = is_up;
        }
        let in_flight = self.targets.values().filter(|s| s.in_flight).count();
        let room = self.config.max_concurrent_targets.saturating_sub(in_flight);
        let mut eligible: Vec<(Option<Instant>, NodeId)> = self
            .targets
            .iter()
            .filter(|(n, s)| !s.in_flight && up.contains(n) && s.next_at.is_none_or(|t| t <= now))
            .map(|(n, s)| (s.last_served, *n))
            .collect();
        // `None` (never served) sorts first.
        eligible.sort();
        let mut actions = Vec::new();
        for (_, n) in eligible.into_iter().take(room) {
            if let Some(s) = self.targets.get_mut(&n) {
                s.in_flight = true;
                s.last_served = Some(now);
            }
            actions.push(HintAction::Replay {
                target: n,
                max_bytes: self.config.batch_bytes,
            });
        }
        actions
    }

    /// Reports a replay's outcome. Success paces the target by the bytes sent
    /// (`bytes / rate`); failure backs off exponentially from `retry_initial_ms` to
    /// `retry_max_ms`.
    pub fn on_replay_result(&mut self, target: NodeId, now: Instant, result: ReplayResult) {
        let Some(s) = self.targets.get_mut(&target) else {
            return;
        };
        s.in_flight = false;
        match result {
            ReplayResult::Ok { acked_id, bytes } => {
                s.failures = 0;
                s.last_acked_id = s.last_acked_id.max(acked_id);
                let rate = self.config.max_bytes_per_sec_per_target.max(1);
                let pause_us = bytes.saturating_mul(1_000_000) / rate;
                s.next_at = Some(now + Duration::from_micros(pause_us));
            }
            ReplayResult::Err => {
                let shift = s.failures.min(20);
                let delay_ms = self
                    .config
                    .retry_initial_ms
                    .saturating_mul(1u64 << shift)
                    .min(self.config.retry_max_ms);
                s.failures = s.failures.saturating_add(1);
                s.next_at = Some(now + Duration::from_millis(delay_ms));
            }
        }
    }

    /// When the driver should call [`HintScheduler::poll`] again at the latest (the earliest
    /// pacing or backoff deadline); `None` when only new facts (gossip, new hints) can
    /// change anything.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter(|s| !s.in_flight)
            .filter_map(|s| s.next_at)
            .min()
    }

    /// Consecutive failures for `target` (0 if unknown).
    pub fn failures(&self, target: NodeId) -> u32 {
        self.targets.get(&target).map_or(0, |s| s.failures)
    }

    /// Targets with a replay in flight.
    pub fn in_flight(&self) -> Vec<NodeId> {
        self.targets
            .iter()
            .filter(|(_, s)| s.in_flight)
            .map(|(n, _)| *n)
            .collect()
    }
}
