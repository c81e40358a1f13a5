//! A node that is sick gets out of the way: it knows what is wrong with it, says so (gossip,
//! status, the admin API), and its peers route around it.
//!
//! What can be wrong, each with a short code gossiped in the `x-health` state:
//! - `clock_skew`: our clock is more than `max_clock_offset_ms` from the majority's
//!   ([`super::clock`]); we refuse to coordinate writes (we would mint timestamps that reorder
//!   them) but still serve as a replica and coordinate reads.
//! - `storage_poisoned`: the engine stopped accepting writes for good after a durability
//!   failure (a failed fsync); reads still work but miss every write since.
//! - `disk_full`: the engine's writes fail with ENOSPC until space returns.
//!
//! The storage states make a replica *unfit*: coordinators leave it out of reads and writes
//! while the other replicas can meet the level, and hint its writes instead (see
//! `RingView::unfit` and the coordinator). Clock skew does not: such a node still applies
//! mutations (it judges their timestamps against the cluster's time, not its own clock).

use super::clock::{CLOCK_PROBE_INTERVAL_MS, ClockVerdict, judge};
use super::{Inner, NodeError};
use hearsay_gossip::StateKey;
use hearsay_types::NodeId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The gossip state (`x-health`) that carries a node's health codes.
pub const HEALTH_STATE: &str = "health";
/// Health code: the node's clock is off (it refuses to coordinate writes).
pub const CLOCK_SKEW: &str = "clock_skew";
/// Health code: the storage engine is poisoned (refuses writes for good).
pub const STORAGE_POISONED: &str = "storage_poisoned";
/// Health code: the data disk is full (writes fail until space returns).
pub const DISK_FULL: &str = "disk_full";
/// Health code: the node lost its data and serves no reads until a repair restores it.
pub const NEEDS_REPAIR: &str = "needs_repair";
/// Longest a clock probe waits for one peer's Pong, in ms: a peer slower than this gives no
/// usable measurement anyway (the estimate is off by half the round trip).
const CLOCK_PROBE_TIMEOUT_MS: u64 = 1_000;

/// Whether a node with these health codes should be left out of writes when the other
/// replicas can serve (its storage cannot take them; it is hinted instead).
pub fn unfit_replica(codes: &[String]) -> bool {
    codes
        .iter()
        .any(|c| c == STORAGE_POISONED || c == DISK_FULL)
}

/// Whether a node with these health codes should be read only when the other replicas
/// cannot meet the level: it misses writes (storage) or lost its data (needs repair).
pub fn unfit_for_reads(codes: &[String]) -> bool {
    unfit_replica(codes) || codes.iter().any(|c| c == NEEDS_REPAIR)
}

/// What is wrong with this node, as `/v1/health`, `hearsay status` and metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeHealth {
    /// The node coordinates requests (it heard from a peer since it started).
    pub ready: bool,
    /// Why the node refuses to coordinate writes for its clock, if it does.
    pub clock_skew: Option<String>,
    /// Why the storage engine refuses writes for good, if it does.
    pub storage_poisoned: Option<String>,
    /// Why the storage engine's writes fail for lack of space, if they do.
    pub disk_full: Option<String>,
    /// The node lost its data and serves no reads until a repair restores it.
    pub needs_repair: bool,
}

impl NodeHealth {
    /// The short codes gossiped for this health (empty when healthy).
    pub fn codes(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.clock_skew.is_some() {
            c.push(CLOCK_SKEW);
        }
        if self.storage_poisoned.is_some() {
            c.push(STORAGE_POISONED);
        }
        if self.disk_full.is_some() {
            c.push(DISK_FULL);
        }
        if self.needs_repair {
            c.push(NEEDS_REPAIR);
        }
        c
    }

    /// Healthy and ready.
    pub fn is_ok(&self) -> bool {
        self.ready && self.codes().is_empty()
    }

    /// Every problem, as sentences (for `/v1/health`).
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.ready {
            r.push("not ready: has not heard from any peer since it started".to_string());
        }
        if let Some(s) = &self.clock_skew {
            r.push(format!("clock skew: {s}; refusing to coordinate writes"));
        }
        if let Some(s) = &self.storage_poisoned {
            r.push(format!("storage poisoned: {s}"));
        }
        if let Some(s) = &self.disk_full {
            r.push(format!("disk full: {s}"));
        }
        if self.needs_repair {
            r.push("lost its data: serves no reads until a repair of its ranges completes".into());
        }
        r
    }
}

/// Parses a gossiped `x-health` value into its codes.
pub fn parse_codes(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != "ok")
        .map(str::to_string)
        .collect()
}

impl Inner {
    /// This node's health now.
    pub(crate) fn health(&self) -> NodeHealth {
        let verdict = self.clock_verdict.lock().clone();
        let max_us = self.config.max_clock_offset_ms * 1_000;
        let storage = self.engine.health();
        NodeHealth {
            ready: self.ready.load(Relaxed),
            clock_skew: verdict
                .skewed
                .then(|| verdict.describe(max_us))
                .or_else(|| self.hlc_lead_text()),
            storage_poisoned: storage.poisoned,
            // Only a disk that refuses writes makes the replica unfit: flushes failing alone
            // still leave every write acknowledged (it is in the commit log).
            disk_full: storage
                .disk_full
                .filter(|d| d.writes_failing)
                .map(|d| d.to_string()),
            needs_repair: self.needs_repair.load(Relaxed),
        }
    }

    /// Gossips the health codes when they change.
    pub(crate) fn publish_health(&self) {
        let codes = self.health().codes().join(",");
        let value = if codes.is_empty() {
            "ok".to_string()
        } else {
            codes
        };
        let mut last = self.published_health.lock();
        if *last == value {
            return;
        }
        if let Some(g) = self.gossip.lock().clone()
            && g.set_local_state(
                StateKey::Custom(HEALTH_STATE.into()),
                value.clone().into_bytes(),
            )
            .is_ok()
        {
            if value != "ok" {
                tracing::warn!(node = %self.id, health = %value, "node health changed");
            } else {
                tracing::info!(node = %self.id, "node healthy again");
            }
            *last = value;
        }
    }

    /// One round of clock measurement: pings every live peer (concurrently, each bounded),
    /// then judges our clock from the fresh measurements of the live peers.
    pub(crate) async fn probe_clocks(self: &Arc<Self>) {
        let view = self.current_view();
        let peers: Vec<(NodeId, std::net::SocketAddr)> = view
            .alive
            .iter()
            .filter(|n| **n != self.id)
            .filter_map(|n| view.addr_of(*n).map(|a| (*n, a)))
            .collect();
        let mut pings = tokio::task::JoinSet::new();
        for (_, addr) in &peers {
            let rpc = self.rpc.clone();
            let addr = *addr;
            pings.spawn(async move {
                let _ = rpc
                    .ping(addr, Duration::from_millis(CLOCK_PROBE_TIMEOUT_MS))
                    .await;
            });
        }
        while pings.join_next().await.is_some() {}
        let live: BTreeMap<_, _> = self
            .rpc
            .context()
            .clocks
            .offsets()
            .into_iter()
            .filter(|(n, _)| peers.iter().any(|(p, _)| p == n))
            .collect();
        let max_us = self.config.max_clock_offset_ms * 1_000;
        let verdict = judge(&live, max_us, self.clock.monotonic());
        self.set_clock_verdict(verdict);
    }

    fn set_clock_verdict(&self, verdict: ClockVerdict) {
        let max_us = self.config.max_clock_offset_ms * 1_000;
        if !verdict.skewed {
            self.clock_baseline_us
                .store(self.wall_minus_monotonic_us(), Relaxed);
        }
        let was = self.clock_skewed.swap(verdict.skewed, Relaxed);
        self.rpc
            .context()
            .clock_correction_us
            .store(verdict.correction_us(), Relaxed);
        if verdict.skewed && !was {
            tracing::error!(
                node = %self.id,
                offset_ms = -verdict.median_offset_us / 1_000,
                far = verdict.far,
                measured = verdict.measured,
                "{}; refusing to coordinate writes until it is back",
                verdict.describe(max_us)
            );
        } else if !verdict.skewed && was {
            match self.hlc_lead_text() {
                Some(lead) => {
                    tracing::warn!(node = %self.id, "clock back within the maximum offset, but {lead}")
                }
                None => {
                    tracing::info!(node = %self.id, "clock back within the maximum offset; coordinating writes again")
                }
            }
        }
        *self.clock_verdict.lock() = verdict;
    }
}

/// Measures clocks every [`CLOCK_PROBE_INTERVAL_MS`] and gossips the node's health.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(CLOCK_PROBE_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = inner.clock_probe_wake.notified() => {}
        }
        inner.load_net_faults().await;
        inner.probe_clocks().await;
        inner.probe_disk().await;
        inner.publish_health();
    }
}

/// Injected network faults, as the test-only `net_faults_file` holds them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NetFaultsFile {
    delay_ms: u64,
    jitter_ms: u64,
    loss: f64,
}

/// Largest net-faults file read, in bytes: three numbers.
const MAX_NET_FAULTS_FILE_BYTES: u64 = 4 * 1024;

/// Key of the local write that tests whether a full disk has room again.
const DISK_PROBE_KEY: &[u8] = b"health/disk-probe";

impl Inner {
    /// While the engine reports a full disk, tries one small write to the local `system`
    /// keyspace: it clears the state as soon as the disk has room again. Nothing else would:
    /// a full node coordinates no writes and its peers send it none.
    /// Applies the test-only net-faults file (see `TestingSettings::net_faults_file`).
    async fn load_net_faults(&self) {
        let Some(path) = self.config.testing.net_faults_file.clone() else {
            return;
        };
        let text = tokio::task::spawn_blocking(move || {
            match std::fs::metadata(&path) {
                Ok(m) if m.len() <= MAX_NET_FAULTS_FILE_BYTES => {}
                _ => return String::new(),
            }
            std::fs::read_to_string(&path).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let f: NetFaultsFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable net-faults file; no faults");
                NetFaultsFile::default()
            }
        };
        let faults = &self.rpc.context().net_faults;
        let was = faults.is_active();
        faults.set(f.delay_ms, f.jitter_ms, f.loss);
        if faults.is_active() != was {
            tracing::warn!(
                delay_ms = f.delay_ms,
                jitter_ms = f.jitter_ms,
                loss = f.loss,
                "test-only network faults {}",
                if was { "cleared" } else { "injected" }
            );
        }
    }

    async fn probe_disk(self: &Arc<Self>) {
        if self.engine.health().disk_full.is_none() {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let ts = this.hlc.now();
            let cell = hearsay_storage::Cell::value(
                bytes::Bytes::copy_from_slice(&ts.0.to_be_bytes()),
                ts,
            );
            let key = hearsay_storage::CellKey::new(
                hearsay_types::Token(0),
                bytes::Bytes::from_static(DISK_PROBE_KEY),
            );
            this.engine.apply(super::SYSTEM_KEYSPACE, &[(key, cell)])
        })
        .await;
    }
}

/// Requests this node refuses to coordinate, and timestamps it refuses to apply.
impl Inner {
    /// Fails a request while the node is not ready (see [`Inner::await_contact`]).
    pub(crate) fn check_coordinator(&self) -> Result<(), NodeError> {
        if self.shutdown.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        if self.check_ready() {
            return Ok(());
        }
        Err(NodeError::NotReady(format!(
            "node {} has not heard from any peer since it started; it will not coordinate requests on a view of the cluster it cannot trust",
            self.id
        )))
    }

    /// Fails a write (or schema change) this node must not coordinate: not ready, or its
    /// clock is off (it would mint timestamps that reorder writes).
    /// Why this node's timestamps cannot be used, when its hybrid clock runs ahead of the
    /// cluster's time by more than twice the maximum offset: its wall clock was ahead (and
    /// the clock followed it) and has come back. Replicas refuse cells stamped that far
    /// ahead, so it refuses writes itself, with the reason, until the cluster's time
    /// catches up. (Twice, as the replicas' bound: two healthy clocks may each be the offset
    /// away from the majority's, on opposite sides, and the HLC follows the one ahead.)
    pub(crate) fn hlc_lead_text(&self) -> Option<String> {
        let max_us = 2 * self.config.max_clock_offset_ms * 1_000;
        let cluster_now =
            self.clock.wall_micros() as i64 + self.rpc.context().clock_correction_us.load(Relaxed);
        let lead_us = self.hlc.peek().0 as i64 - cluster_now;
        (lead_us > max_us as i64).then(|| {
            format!(
                "this node's timestamps run {:.3} s ahead of the cluster's time (its wall clock was ahead and has come back; max offset {} ms); writes through it resume when the cluster's time catches up",
                lead_us as f64 / 1e6,
                self.config.max_clock_offset_ms
            )
        })
    }

    pub(crate) fn check_write_coordinator(&self) -> Result<(), NodeError> {
        self.check_coordinator()?;
        if self.clock_skewed.load(Relaxed) {
            let v = self.clock_verdict.lock().clone();
            return Err(NodeError::ClockSkew(
                v.describe(self.config.max_clock_offset_ms * 1_000),
            ));
        }
        // A wall clock that stepped since it was last checked against the peers (an operator
        // or NTP set it) is not trusted until the next check: without this, a clock set ahead
        // would mint future timestamps until the next probe noticed.
        let jump_us = self.clock_jump_us();
        if jump_us.unsigned_abs() > self.config.max_clock_offset_ms * 1_000 / 2 {
            self.clock_probe_wake.notify_one();
            return Err(NodeError::ClockSkew(format!(
                "this node's wall clock moved {:+.3} s against its monotonic clock since it was last checked against its peers (max offset {} ms); checking it again",
                jump_us as f64 / 1e6,
                self.config.max_clock_offset_ms
            )));
        }
        if let Some(lead) = self.hlc_lead_text() {
            return Err(NodeError::ClockSkew(lead));
        }
        let storage = self.engine.health();
        if let Some(reason) = storage.poisoned {
            return Err(NodeError::Unhealthy(format!(
                "storage poisoned: {reason}; this node does not coordinate writes until it is restarted (write through another node)"
            )));
        }
        if let Some(full) = storage.disk_full.filter(|d| d.writes_failing) {
            return Err(NodeError::Unhealthy(format!(
                "disk full: {full}; this node does not coordinate writes until space is freed (write through another node)"
            )));
        }
        Ok(())
    }

    /// Wall clock minus monotonic clock now, in µs since this node started: constant while
    /// the wall clock runs at the monotonic clock's rate, changed by a step.
    pub(crate) fn wall_minus_monotonic_us(&self) -> i64 {
        let mono = self
            .clock
            .monotonic()
            .saturating_duration_since(self.started_mono)
            .as_micros() as i64;
        self.clock.wall_micros() as i64 - mono
    }

    /// How far the wall clock stepped since the last clock check found it fine, in µs.
    fn clock_jump_us(&self) -> i64 {
        self.wall_minus_monotonic_us() - self.clock_baseline_us.load(Relaxed)
    }

    /// Refuses cells timestamped further ahead of the cluster's time (as this node knows
    /// it) than `max_timestamp_lead_us`: a coordinator whose clock runs ahead must not plant
    /// timestamps that would make every later write lose.
    pub(crate) fn check_timestamps(
        &self,
        cells: &[(hearsay_storage::CellKey, hearsay_storage::Cell)],
    ) -> Result<(), String> {
        let now = self.rpc.context().cluster_now_us();
        let limit = self.config.max_timestamp_lead_us();
        let Some(max) = cells.iter().map(|(_, c)| c.timestamp.0).max() else {
            return Ok(());
        };
        let lead = max.saturating_sub(now);
        if lead > limit {
            self.counters.future_mutations_refused.fetch_add(1, Relaxed);
            return Err(format!(
                "timestamp {max} is {} ms ahead of this replica's clock (limit {} ms, twice max_clock_offset_ms); the coordinator's clock is ahead",
                lead / 1_000,
                limit / 1_000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_storage_codes_make_a_replica_unfit() {
        let h = NodeHealth {
            ready: true,
            clock_skew: Some("x".into()),
            storage_poisoned: None,
            disk_full: Some("y".into()),
            needs_repair: false,
        };
        assert_eq!(h.codes(), vec![CLOCK_SKEW, DISK_FULL]);
        assert!(!h.is_ok());
        let parsed = parse_codes(&h.codes().join(","));
        assert_eq!(parsed, vec!["clock_skew", "disk_full"]);
        assert!(unfit_replica(&parsed));
        assert!(!unfit_replica(&parse_codes("clock_skew")));
        assert!(!unfit_replica(&parse_codes("needs_repair")));
        assert!(unfit_for_reads(&parse_codes("needs_repair")));
        assert!(unfit_for_reads(&parse_codes("storage_poisoned")));
        assert!(!unfit_for_reads(&parse_codes("clock_skew")));
        assert!(parse_codes("ok").is_empty());
        assert!(parse_codes("").is_empty());
        assert!(
            NodeHealth {
                ready: true,
                ..NodeHealth::default()
            }
            .is_ok()
        );
        assert_eq!(NodeHealth::default().reasons().len(), 1, "not ready");
    }
}
