//! Phi-accrual failure detection (Hayashibara et al., 2004), as Akka and Cassandra use it.
//!
//! Heartbeat inter-arrival times are assumed normally distributed with the window's mean and
//! standard deviation (floored at `min_std_dev_ms`). `phi(t) = -log10(P(next arrival later
//! than t))`; phi 8 means the silence would be that long by chance once in 10^8.

use std::collections::VecDeque;

/// The inter-arrival history of one watched node.
#[derive(Clone, Debug)]
pub struct PhiDetector {
    samples_ms: VecDeque<u64>,
    sum_ms: f64,
    sum_sq_ms: f64,
    window: usize,
    last_arrival_ms: u64,
    bootstrap_interval_ms: u64,
}

impl PhiDetector {
    /// Starts watching at `now_ms`, as if a heartbeat had just arrived. Until two samples
    /// exist the expected interval is `bootstrap_interval_ms` (the gossip interval).
    pub fn new(now_ms: u64, window: usize, bootstrap_interval_ms: u64) -> PhiDetector {
        PhiDetector {
            samples_ms: VecDeque::with_capacity(window.min(128)),
            sum_ms: 0.0,
            sum_sq_ms: 0.0,
            window: window.max(2),
            last_arrival_ms: now_ms,
            bootstrap_interval_ms,
        }
    }

    /// Records a heartbeat arrival. `record_gap` false forgets the gap (used after a
    /// suspicion ends, so one long pause does not desensitise the detector for good).
    pub fn heartbeat(&mut self, now_ms: u64, record_gap: bool) {
        let gap = now_ms.saturating_sub(self.last_arrival_ms);
        self.last_arrival_ms = now_ms;
        if !record_gap {
            return;
        }
        if self.samples_ms.len() == self.window
            && let Some(old) = self.samples_ms.pop_front()
        {
            self.sum_ms -= old as f64;
            self.sum_sq_ms -= (old as f64) * (old as f64);
        }
        self.samples_ms.push_back(gap);
        self.sum_ms += gap as f64;
        self.sum_sq_ms += (gap as f64) * (gap as f64);
    }

    /// Time of the last arrival.
    pub fn last_arrival_ms(&self) -> u64 {
        self.last_arrival_ms
    }

    /// Phi at `now_ms`. `pause_ms` is added to the mean: a silence that long beyond the
    /// usual interval is tolerated outright (Akka's "acceptable heartbeat pause").
    pub fn phi(&self, now_ms: u64, min_std_dev_ms: u64, pause_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.last_arrival_ms) as f64;
        let (mean, var) = if self.samples_ms.len() < 2 {
            let b = self.bootstrap_interval_ms as f64;
            (b, 0.0)
        } else {
            let n = self.samples_ms.len() as f64;
            let mean = self.sum_ms / n;
            (mean, (self.sum_sq_ms / n - mean * mean).max(0.0))
        };
        let std = var.sqrt().max(min_std_dev_ms as f64);
        phi(elapsed, mean + pause_ms as f64, std)
    }
}

/// `-log10(1 - F(elapsed))` for a normal distribution, using the logistic approximation of
/// the CDF that Akka uses (error < 1e-4 in phi, and no erf needed).
pub fn phi(elapsed_ms: f64, mean_ms: f64, std_dev_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_dev_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed_ms > mean_ms {
        // 1 - F = e / (1 + e): written this way to stay accurate for large y.
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// Silence after the last heartbeat at which phi crosses `threshold`, for regular arrivals
/// at `interval_ms` with the deviation floored at `min_std_dev_ms` (used by the docs and
/// the benchmark to state the expected detection time).
pub fn detection_time_ms(
    interval_ms: u64,
    min_std_dev_ms: u64,
    pause_ms: u64,
    threshold: f64,
) -> u64 {
    let mut t = interval_ms;
    let mean = (interval_ms + pause_ms) as f64;
    while phi(t as f64, mean, min_std_dev_ms as f64) < threshold {
        t += 1;
        if t > interval_ms * 1_000 {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_grows_with_silence_and_resets_on_heartbeat() {
        let mut d = PhiDetector::new(0, 100, 1_000);
        for i in 1..=20 {
            d.heartbeat(i * 1_000, true);
        }
        let at = 20_000;
        assert!(d.phi(at + 500, 250, 0) < 1.0);
        assert!(d.phi(at + 1_500, 250, 0) < 8.0);
        assert!(d.phi(at + 3_000, 250, 0) > 8.0);
        assert!(d.phi(at + 3_000, 250, 1_000) < 8.0);
        assert!(d.phi(at + 4_000, 250, 1_000) > 8.0);
        d.heartbeat(at + 3_000, false);
        assert!(d.phi(at + 3_100, 250, 0) < 1.0);
    }

    #[test]
    fn detection_time_matches_documented_figure() {
        // docs/gossip.md: interval 1 s, floor 250 ms, pause 1 s, threshold 8 → ~3.4 s of
        // silence after the last heartbeat.
        let t = detection_time_ms(1_000, 250, 1_000, 8.0);
        assert!((3_300..=3_500).contains(&t), "{t}");
    }
}
