//! Whether this node's clock can be trusted to mint write timestamps.
//!
//! Every node measures each live peer's *physical* wall-clock offset from its own with
//! RPC pings (NTP-style; see `rpc::stats::PeerClock`), every [`CLOCK_PROBE_INTERVAL_MS`].
//! [`judge`] turns the fresh measurements into a verdict: when our clock is more than
//! `max_offset` away from a strict majority of the peers measured, *we* are the node that is
//! off (a single peer that is off is far from one peer, not from a majority), and the node
//! refuses to coordinate writes until its clock is back. The verdict also gives the
//! correction to the cluster's time (the median offset), which a skewed node uses to judge
//! timestamps it receives (see `docs/cluster.md`, "Clocks").
//!
//! Pure: measurements and `now` in, verdict out.

use crate::rpc::OffsetSample;
use hearsay_types::NodeId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often every live peer is pinged for a clock measurement, in ms: a clock that jumps
/// while the node runs is noticed within this (plus one round trip).
pub const CLOCK_PROBE_INTERVAL_MS: u64 = 500;
/// A measurement older than this does not count: the peer may be gone, or its clock may
/// have moved. Several probe intervals, so that one lost ping does not drop a peer.
pub const OFFSET_SAMPLE_MAX_AGE: Duration = Duration::from_secs(5);
/// Default largest offset of a node's clock from the majority's before it refuses to
/// coordinate writes, in ms. CockroachDB's default `max-offset` is the same 500 ms: far above
/// what NTP keeps on a LAN (single milliseconds) and what a VM's clock drifts between syncs,
/// far below the skew that reorders human-scale sequences of writes.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// What the measurements say about our clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockVerdict {
    /// Peers with a fresh measurement.
    pub measured: usize,
    /// Of those, peers whose clock is more than `max_offset` from ours (beyond the
    /// measurement's own uncertainty, half its round trip).
    pub far: usize,
    /// The median of the peers' offsets from us, in microseconds (positive: they are ahead,
    /// so we are behind). 0 with no measurement.
    pub median_offset_us: i64,
    /// Whether our clock is off: far from a strict majority of the peers measured.
    pub skewed: bool,
}

impl ClockVerdict {
    /// What to add to our wall clock to get the cluster's time: the median offset when our
    /// clock is off, else nothing (within the bound, our own clock is as good as any).
    pub fn correction_us(&self) -> i64 {
        if self.skewed {
            self.median_offset_us
        } else {
            0
        }
    }

    /// Human text for errors, logs and health: "120.0 s ahead of 2 of 2 peers".
    pub fn describe(&self, max_offset_us: u64) -> String {
        let ours = -self.median_offset_us;
        let dir = if ours >= 0 { "ahead of" } else { "behind" };
        format!(
            "this node's clock is {:.3} s {dir} {} of {} peers measured (max offset {} ms)",
            ours.unsigned_abs() as f64 / 1e6,
            self.far,
            self.measured,
            max_offset_us / 1_000
        )
    }
}

/// Judges `samples` (each live peer's latest measurement) at `now`.
pub fn judge(
    samples: &BTreeMap<NodeId, OffsetSample>,
    max_offset_us: u64,
    now: Instant,
) -> ClockVerdict {
    let fresh: Vec<&OffsetSample> = samples
        .values()
        .filter(|s| now.saturating_duration_since(s.at) <= OFFSET_SAMPLE_MAX_AGE)
        .collect();
    if fresh.is_empty() {
        return ClockVerdict::default();
    }
    let far = fresh
        .iter()
        .filter(|s| s.offset_us.unsigned_abs().saturating_sub(s.rtt_us / 2) > max_offset_us)
        .count();
    let mut offsets: Vec<i64> = fresh.iter().map(|s| s.offset_us).collect();
    offsets.sort_unstable();
    let mid = offsets.len() / 2;
    let median_offset_us = if offsets.len() % 2 == 1 {
        offsets[mid]
    } else {
        ((i128::from(offsets[mid - 1]) + i128::from(offsets[mid])) / 2) as i64
    };
    ClockVerdict {
        measured: fresh.len(),
        far,
        median_offset_us,
        skewed: far * 2 > fresh.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(offset_ms: i64, rtt_us: u64, at: Instant) -> OffsetSample {
        OffsetSample {
            offset_us: offset_ms * 1_000,
            rtt_us,
            at,
        }
    }

    fn samples(list: &[(u128, OffsetSample)]) -> BTreeMap<NodeId, OffsetSample> {
        list.iter().map(|(n, s)| (NodeId(*n), *s)).collect()
    }

    const MAX: u64 = 500_000;

    #[test]
    fn a_node_far_from_a_majority_is_the_skewed_one() {
        let now = Instant::now();
        // We are 120 s ahead: both peers read -120 s.
        let v = judge(
            &samples(&[(2, s(-120_000, 200, now)), (3, s(-119_999, 300, now))]),
            MAX,
            now,
        );
        assert!(v.skewed);
        assert_eq!((v.far, v.measured), (2, 2));
        assert_eq!(v.correction_us(), -119_999_500);
        assert!(
            v.describe(MAX).contains("119.999 s ahead of 2 of 2"),
            "{}",
            v.describe(MAX)
        );
        // A healthy node with one skewed peer: far from one of two, not a majority.
        let v = judge(
            &samples(&[(1, s(120_000, 200, now)), (3, s(1, 200, now))]),
            MAX,
            now,
        );
        assert!(!v.skewed);
        assert_eq!(v.correction_us(), 0);
        // Behind by 2 s with a 3 s bound: within it.
        let v = judge(
            &samples(&[(2, s(2_000, 200, now)), (3, s(2_000, 200, now))]),
            3_000_000,
            now,
        );
        assert!(!v.skewed);
        assert!(v.describe(3_000_000).contains("2.000 s behind 0 of 2"));
    }

    #[test]
    fn stale_and_uncertain_measurements_do_not_convict() {
        let now = Instant::now();
        let old = now - OFFSET_SAMPLE_MAX_AGE - Duration::from_secs(1);
        let v = judge(&samples(&[(2, s(-120_000, 200, old))]), MAX, now);
        assert_eq!(v, ClockVerdict::default());
        // 700 ms measured over a 600 ms round trip: possibly within 400 ms; not far.
        let v = judge(&samples(&[(2, s(700, 600_000, now))]), MAX, now);
        assert_eq!((v.far, v.skewed), (0, false));
    }

    #[test]
    fn one_peer_decides_a_two_node_cluster_and_ties_convict_nobody() {
        let now = Instant::now();
        let v = judge(&samples(&[(2, s(-60_000, 100, now))]), MAX, now);
        assert!(
            v.skewed,
            "two nodes 60 s apart both stop coordinating writes"
        );
        let v = judge(
            &samples(&[
                (2, s(-60_000, 100, now)),
                (3, s(-60_000, 100, now)),
                (4, s(0, 100, now)),
                (5, s(0, 100, now)),
            ]),
            MAX,
            now,
        );
        assert!(!v.skewed, "2 of 4 is not a majority");
        assert_eq!(v.median_offset_us, -30_000_000);
    }
}
