//! Adaptive busy-polling of an idle client event loop, as the KVM guest's `haltpoll` idle
//! governor does for a vCPU: when requests arrive closer together than a sleep and a wake-up
//! cost, the loop polls its sockets for a short window before it sleeps.
//!
//! Why: when the loop sleeps in `epoll_wait`, the client whose request arrives next pays
//! for waking it. On loopback that wake-up runs inside the client's own `send` (the
//! socket's data-ready callback wakes the sleeping thread: an inter-processor interrupt,
//! a VM exit on a virtual machine), and the loop pays a context switch back in. With
//! `redis-benchmark -P 1` on a 2-vCPU VM, waking the server was ~8 % of the client's CPU
//! (`perf record`, `sock_def_readable` under `sendto`), and the client is the bottleneck.
//!
//! How: a spinner task on each loop. After the connections go quiet it yields to the
//! scheduler, which then polls the reactor with a zero timeout instead of sleeping, until no
//! read has completed for `window`; then it lets the loop sleep. The window adapts like
//! `haltpoll`'s: it grows (doubling, up to the configured maximum) when the loop, having
//! slept, was woken within the maximum, i.e. a longer poll would have caught the request; it
//! shrinks (halving, to zero) when a sleep lasted longer, so a lightly loaded server does
//! not spin at all. The loop never polls while a connection waits on another thread (a read
//! handed to the reader pool, a write queued for the writer, a cluster read or write waiting
//! for replicas): those threads need the CPU.
//!
//! The sleep the window adapts to is measured from the end of the last window to the next
//! read, so it includes time the loop spent on other connections: a loop busy with long
//! pipelined batches (more than the maximum between two reads) does not poll, which is what
//! it should do, since it is not idle.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Largest configurable poll window: far beyond this a loop only burns CPU that background
/// work (flushes, compaction, reader threads) could use.
pub const MAX_BUSY_POLL_US: u64 = 1_000;
/// Smallest non-zero window: one zero-timeout poll of the reactor costs about a microsecond,
/// so a shorter window would hold almost none.
pub const MIN_WINDOW: Duration = Duration::from_micros(8);

thread_local! {
    /// Reads completed on this thread's connections (wraps; only compared for change).
    static READS: Cell<u64> = const { Cell::new(0) };
    /// Connections of this thread now waiting on another thread. Shared with each
    /// [`Handoff`], which may be dropped on another thread than the one it started on.
    static HANDOFFS: Arc<AtomicU32> = Arc::new(AtomicU32::new(0));
    /// The spinner, while it waits for the next read.
    static SPINNER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Counters of the spinners, for INFO, metrics and the admin API.
#[derive(Debug, Default)]
pub struct BusyPollStats {
    /// The configured longest window, microseconds (0: no spinner runs).
    pub max_us: AtomicU64,
    /// Poll windows started.
    pub windows: AtomicU64,
    /// Reads that completed during a poll window (the loop may also have been busy with
    /// other connections then, so this bounds the wake-ups saved from above).
    pub caught: AtomicU64,
    /// Windows that ran out with no read (the loop then slept).
    pub timeouts: AtomicU64,
    /// Windows cut short because a connection waited on another thread.
    pub yielded: AtomicU64,
    /// Microseconds spent polling, in all.
    pub polled_us: AtomicU64,
}

/// The process's spinners' counters.
pub static STATS: BusyPollStats = BusyPollStats {
    max_us: AtomicU64::new(0),
    windows: AtomicU64::new(0),
    caught: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    yielded: AtomicU64::new(0),
    polled_us: AtomicU64::new(0),
};

/// Called by a connection after each completed read on its event loop.
#[inline]
pub fn note_read() {
    READS.with(|r| r.set(r.get().wrapping_add(1)));
    let waiting = SPINNER.try_with(|s| s.borrow_mut().take()).ok().flatten();
    if let Some(w) = waiting {
        w.wake();
    }
}

/// Held while a connection waits for another thread's work (see the module docs).
#[derive(Debug)]
pub struct Handoff(Arc<AtomicU32>);

impl Handoff {
    pub fn start() -> Handoff {
        let count = HANDOFFS.with(Arc::clone);
        count.fetch_add(1, Ordering::Relaxed);
        Handoff(count)
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a connection of this thread waits on another thread now.
fn handing_off() -> bool {
    HANDOFFS.with(|h| h.load(Ordering::Relaxed) > 0)
}

/// The next window after the loop slept for `slept`: doubled (at least `min`, at most `max`)
/// if polling that long would have caught the read that woke it, else halved (to zero below
/// `min`).
pub fn next_window(window: Duration, slept: Duration, min: Duration, max: Duration) -> Duration {
    let min = min.min(max);
    if max.is_zero() {
        Duration::ZERO
    } else if slept <= max {
        (window * 2).clamp(min, max)
    } else if window / 2 < min {
        Duration::ZERO
    } else {
        window / 2
    }
}

/// Waits until a read completes on this thread.
async fn next_read(seen: u64) {
    poll_fn(|cx| {
        if READS.with(Cell::get) != seen {
            return Poll::Ready(());
        }
        SPINNER.with(|s| *s.borrow_mut() = Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// The spinner of one event loop (spawned on it); runs forever. Windows are between `min`
/// ([`MIN_WINDOW`] but in tests) and `max`; counts go to `stats`.
pub async fn spinner(min: Duration, max: Duration, stats: &'static BusyPollStats) {
    let mut window = Duration::ZERO;
    loop {
        let slept_at = Instant::now();
        next_read(READS.with(Cell::get)).await;
        window = next_window(window, slept_at.elapsed(), min, max);
        if window.is_zero() || handing_off() {
            continue;
        }
        stats.windows.fetch_add(1, Ordering::Relaxed);
        let mut seen = READS.with(Cell::get);
        let started = Instant::now();
        let mut last = started;
        let ended = loop {
            // Every task the loop has runs before this one again; with none left, the
            // scheduler polls the reactor without blocking rather than sleeping.
            tokio::task::yield_now().await;
            let now = Instant::now();
            let reads = READS.with(Cell::get);
            if handing_off() {
                break &stats.yielded;
            }
            if reads != seen {
                stats
                    .caught
                    .fetch_add(reads.wrapping_sub(seen), Ordering::Relaxed);
                seen = reads;
                last = now;
            } else if now - last >= window {
                break &stats.timeouts;
            }
        };
        ended.fetch_add(1, Ordering::Relaxed);
        stats
            .polled_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);
    /// Windows of a second: no test thread is preempted for that long, so which way a
    /// window ends does not depend on the machine's speed.
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_window_grows_while_sleeps_are_short_and_falls_to_zero_when_they_are_long() {
        let short = Duration::from_micros(30);
        let long = Duration::from_millis(2);
        let mut w = Duration::ZERO;
        let mut grown = Vec::new();
        for _ in 0..5 {
            w = next_window(w, short, MIN_WINDOW, MAX);
            grown.push(w.as_micros());
        }
        assert_eq!(grown, [8, 16, 32, 50, 50]);
        let mut shrunk = Vec::new();
        for _ in 0..4 {
            w = next_window(w, long, MIN_WINDOW, MAX);
            shrunk.push(w.as_micros());
        }
        assert_eq!(shrunk, [25, 12, 0, 0]);
        assert_eq!(
            next_window(MAX, short, MIN_WINDOW, Duration::ZERO),
            Duration::ZERO
        );
        // A maximum below the minimum is still honoured.
        let tiny = Duration::from_micros(3);
        assert_eq!(
            next_window(Duration::ZERO, Duration::ZERO, MIN_WINDOW, tiny),
            tiny
        );
    }

    #[test]
    fn a_handoff_dropped_on_another_thread_releases_the_thread_it_started_on() {
        let h = Handoff::start();
        let h2 = Handoff::start();
        assert!(handing_off());
        std::thread::spawn(move || {
            assert!(!handing_off());
            drop(h);
        })
        .join()
        .unwrap();
        assert!(handing_off());
        drop(h2);
        assert!(!handing_off());
    }

    fn leak_stats() -> &'static BusyPollStats {
        Box::leak(Box::default())
    }

    /// Lets the spinner and the reactor run a few times.
    async fn let_run() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_that_follow_closely_are_caught_while_polling() {
        let stats = leak_stats();
        tokio::spawn(spinner(SECOND, SECOND, stats));
        let_run().await;
        for _ in 0..20 {
            note_read();
            let_run().await;
        }
        // The first read wakes the spinner; the others arrive while it polls.
        assert_eq!(get(&stats.windows), 1);
        assert!(get(&stats.caught) >= 15, "caught {}", get(&stats.caught));
        assert_eq!(get(&stats.timeouts), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_handoff_stops_the_polling() {
        let stats = leak_stats();
        tokio::spawn(spinner(SECOND, SECOND, stats));
        let_run().await;
        note_read();
        let_run().await;
        assert_eq!(get(&stats.windows), 1);
        let waiting = Handoff::start();
        let_run().await;
        assert_eq!(get(&stats.yielded), 1);
        // While the hand-off lasts, reads do not start a window.
        for _ in 0..3 {
            note_read();
            let_run().await;
        }
        assert_eq!(get(&stats.windows), 1);
        drop(waiting);
        note_read();
        let_run().await;
        assert_eq!(get(&stats.windows), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_further_apart_than_the_maximum_are_never_polled_for() {
        let stats = leak_stats();
        tokio::spawn(spinner(MIN_WINDOW, Duration::from_micros(20), stats));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            note_read();
            let_run().await;
        }
        assert_eq!(get(&stats.windows), 0);
        assert_eq!(get(&stats.polled_us), 0);
    }
}
