//! A test-only seam: delay, loss and reordering injected inside a node's own network code
//! (RPC calls and gossip packets), because the machines Hearsay is tested on have no
//! `tc netem`. Production never sets it (every rate is zero, and [`NetFaults::fate`] is one
//! relaxed load then).

use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Largest delay the seam injects, in ms: a fault test wants messages late, not lost to a
/// typo; beyond a minute every deadline has passed anyway.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Sent as usual.
    Deliver,
    /// Sent after this long (messages sent after it may overtake it: reordering).
    Delay(Duration),
    /// Never sent.
    Drop,
}

/// Injected network faults: each message is dropped with probability `loss`, otherwise
/// delayed by `delay_ms` plus a uniform `0..=jitter_ms`. Shared by a node's RPC client and
/// gossip driver, changed while the node runs.
#[derive(Debug, Default)]
pub struct NetFaults {
    active: AtomicBool,
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
    /// Loss probability in parts per million.
    loss_ppm: AtomicU32,
}

impl NetFaults {
    /// Sets the faults (all zero: none). Delays are capped at [`MAX_FAULT_DELAY_MS`], the
    /// loss probability to `0.0..=1.0`.
    pub fn set(&self, delay_ms: u64, jitter_ms: u64, loss: f64) {
        let loss_ppm = (loss.clamp(0.0, 1.0) * 1e6) as u32;
        self.delay_ms
            .store(delay_ms.min(MAX_FAULT_DELAY_MS), Relaxed);
        self.jitter_ms
            .store(jitter_ms.min(MAX_FAULT_DELAY_MS), Relaxed);
        self.loss_ppm.store(loss_ppm, Relaxed);
        self.active
            .store(delay_ms > 0 || jitter_ms > 0 || loss_ppm > 0, Relaxed);
    }

    /// Whether any fault is set.
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// The fate of one message.
    pub fn fate(&self) -> Fate {
        if !self.active.load(Relaxed) {
            return Fate::Deliver;
        }
        let mut rng = rand::rng();
        let loss = self.loss_ppm.load(Relaxed);
        if loss > 0 && rng.random_range(0..1_000_000) < loss {
            return Fate::Drop;
        }
        let delay = self.delay_ms.load(Relaxed);
        let jitter = self.jitter_ms.load(Relaxed);
        let ms = delay
            + if jitter > 0 {
                rng.random_range(0..=jitter)
            } else {
                0
            };
        if ms == 0 {
            Fate::Deliver
        } else {
            Fate::Delay(Duration::from_millis(ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_settings() {
        let f = NetFaults::default();
        assert_eq!(f.fate(), Fate::Deliver);
        assert!(!f.is_active());
        f.set(0, 0, 1.0);
        assert_eq!(f.fate(), Fate::Drop);
        f.set(5, 0, 0.0);
        assert_eq!(f.fate(), Fate::Delay(Duration::from_millis(5)));
        f.set(5, 10, 0.0);
        for _ in 0..100 {
            let Fate::Delay(d) = f.fate() else {
                panic!("delayed")
            };
            assert!((5..=15).contains(&(d.as_millis() as u64)));
        }
        f.set(0, 0, 0.3);
        let drops = (0..10_000).filter(|_| f.fate() == Fate::Drop).count();
        assert!((2_000..4_000).contains(&drops), "{drops} of 10000 at 30%");
        f.set(u64::MAX, 0, 0.0);
        assert_eq!(
            f.fate(),
            Fate::Delay(Duration::from_millis(MAX_FAULT_DELAY_MS))
        );
        f.set(0, 0, 0.0);
        assert!(!f.is_active());
    }
}
