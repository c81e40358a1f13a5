use crate::Timestamp;
use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The seam through which every Hearsay component reads time, so that tests and the
/// simulator can skew, freeze or advance it.
///
/// Laws: `monotonic()` never goes backwards; `wall_micros()` may jump (it is wall time).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Wall-clock microseconds since the Unix epoch.
    fn wall_micros(&self) -> u64;
    /// A monotonic instant, for timeouts and intervals.
    fn monotonic(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch (TTL arithmetic uses milliseconds).
    fn wall_millis(&self) -> u64 {
        self.wall_micros() / 1_000
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    wall_micros: AtomicU64,
    base: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock reading `wall_micros` now.
    pub fn new(wall_micros: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall_micros: AtomicU64::new(wall_micros),
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }
    /// Moves both wall and monotonic time forward.
    pub fn advance(&self, by: Duration) {
        self.wall_micros
            .fetch_add(by.as_micros() as u64, Ordering::SeqCst);
        *self.offset.lock() += by;
    }
    /// Sets wall time (may go backwards, as a real wall clock can).
    pub fn set_wall_micros(&self, micros: u64) {
        self.wall_micros.store(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_micros(&self) -> u64 {
        self.wall_micros.load(Ordering::SeqCst)
    }
    fn monotonic(&self) -> Instant {
        self.base + *self.offset.lock()
    }
}

/// A hybrid logical clock: `next = max(wall, last + 1, max seen + 1)`. Timestamps it mints are
/// strictly increasing, never behind wall time, and never behind any timestamp this node has
/// observed, so causally related writes through different coordinators stay ordered even when
/// wall clocks disagree.
#[derive(Debug)]
pub struct Hlc {
    clock: Arc<dyn Clock>,
    last: AtomicU64,
}

impl Hlc {
    /// A clock reading from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Hlc {
        Hlc {
            clock,
            last: AtomicU64::new(0),
        }
    }

    /// The last timestamp minted or observed, without minting one.
    pub fn peek(&self) -> Timestamp {
        Timestamp(self.last.load(Ordering::Acquire))
    }

    /// Mints a new timestamp.
    pub fn now(&self) -> Timestamp {
        let wall = self.clock.wall_micros();
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = wall.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Timestamp(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// Advances the clock past a timestamp observed from elsewhere (an RPC, a gossip message,
    /// a stored cell). Returns how far `seen` was ahead of local wall time, in microseconds
    /// (0 when behind), so callers can report clock skew.
    pub fn observe(&self, seen: Timestamp) -> u64 {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
        seen.0.saturating_sub(self.clock.wall_micros())
    }

    /// The underlying clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_increasing_and_follows_observed() {
        let clock = ManualClock::new(1_000);
        let hlc = Hlc::new(clock.clone());
        let a = hlc.now();
        let b = hlc.now();
        assert_eq!(a, Timestamp(1_000));
        assert_eq!(b, Timestamp(1_001));
        // A timestamp from a node whose clock is ahead pulls ours forward.
        assert_eq!(hlc.observe(Timestamp(5_000)), 4_000);
        assert_eq!(hlc.now(), Timestamp(5_001));
        // Wall time going backwards never makes timestamps go backwards.
        clock.set_wall_micros(10);
        assert_eq!(hlc.now(), Timestamp(5_002));
        clock.set_wall_micros(9_000);
        assert_eq!(hlc.now(), Timestamp(9_000));
    }
}
