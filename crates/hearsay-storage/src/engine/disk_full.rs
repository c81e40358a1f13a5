//! The engine's "out of space" state: set while writes, commit-log segment creations or
//! flushes fail because the disk is full (`ENOSPC`, `EDQUOT`), cleared when they succeed
//! again. Unlike [`super::poison::Poison`] it is an operating condition, not a fault: the
//! engine keeps serving reads and retries on its own once space is freed. The node shows it
//! (gossip, admin API) so that operators and peers can tell a full disk from a dead node.
//!
//! Two sources are tracked, so that the state does not flap while only one of them fails: the
//! write path (appends and segment creations; a successful append clears it) and flushes (a
//! completed flush clears both, since it needed more space than an append). Writes can
//! succeed for a while after flushes started failing; the disk is still too full to keep
//! going, and the state says so.

use crate::error::Error;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The engine is out of space: what failed last, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFull {
    /// The last error that found the disk full (it names the file and says "No space left on
    /// device" or "Disk quota exceeded").
    pub error: String,
    /// When the engine first found the disk full, in wall-clock milliseconds since the Unix
    /// epoch (the engine's clock). Later failures do not move it.
    pub since_unix_ms: u64,
    /// Whether writes (commit-log appends or segment creations) are failing for it, as
    /// opposed to only flushes.
    pub writes_failing: bool,
    /// Whether flushes are failing for it.
    pub flushes_failing: bool,
}

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (self.writes_failing, self.flushes_failing) {
            (true, true) => "writes and flushes fail",
            (true, false) => "writes fail",
            _ => "flushes fail",
        };
        write!(
            f,
            "disk full since unix ms {} ({what}): {}",
            self.since_unix_ms, self.error
        )
    }
}

/// What found the disk full (or succeeded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activity {
    /// A commit-log append or segment creation.
    Write,
    /// A flush (its SSTable or the manifest update installing it).
    Flush,
}

#[derive(Debug, Default)]
pub(crate) struct DiskFullLatch {
    /// Whether `state` is `Some`, so the write path checks with one load.
    set: AtomicBool,
    state: Mutex<Option<DiskFull>>,
}

impl DiskFullLatch {
    /// Records `e` if it is a full disk; returns whether it was.
    pub fn note(&self, activity: Activity, e: &Error, now_unix_ms: u64) -> bool {
        if !e.is_disk_full() {
            return false;
        }
        let mut st = self.state.lock();
        let s = st.get_or_insert_with(|| {
            tracing::warn!(error = %e, "storage disk full: writes fail (reads keep working) until space is freed");
            DiskFull {
                error: String::new(),
                since_unix_ms: now_unix_ms,
                writes_failing: false,
                flushes_failing: false,
            }
        });
        s.error = e.to_string();
        match activity {
            Activity::Write => s.writes_failing = true,
            Activity::Flush => s.flushes_failing = true,
        }
        self.set.store(true, Ordering::Release);
        true
    }

    /// `activity` succeeded. A write clears the write side; a flush clears both.
    pub fn clear(&self, activity: Activity) {
        if !self.set.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock();
        let Some(s) = st.as_mut() else {
            return;
        };
        match activity {
            Activity::Write => s.writes_failing = false,
            Activity::Flush => {
                s.writes_failing = false;
                s.flushes_failing = false;
            }
        }
        if !s.writes_failing && !s.flushes_failing {
            tracing::info!(
                since_unix_ms = s.since_unix_ms,
                "storage disk no longer full: writes and flushes succeed again"
            );
            *st = None;
            self.set.store(false, Ordering::Release);
        }
    }

    pub fn get(&self) -> Option<DiskFull> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> Error {
        Error::io("f", std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    #[test]
    fn set_by_full_disk_only_and_cleared_per_source() {
        let l = DiskFullLatch::default();
        assert!(!l.note(
            Activity::Write,
            &Error::io("f", std::io::Error::other("x")),
            1
        ));
        assert_eq!(l.get(), None);
        assert!(l.note(Activity::Write, &enospc(), 5));
        assert!(l.note(Activity::Flush, &enospc(), 9));
        let s = l.get().unwrap();
        assert_eq!(
            (s.since_unix_ms, s.writes_failing, s.flushes_failing),
            (5, true, true)
        );
        assert!(s.to_string().contains("No space left on device"), "{s}");
        // A write succeeding does not hide flushes that still fail.
        l.clear(Activity::Write);
        assert!(l.get().unwrap().flushes_failing);
        assert_eq!(l.get().unwrap().since_unix_ms, 5);
        l.clear(Activity::Flush);
        assert_eq!(l.get(), None);
        // EDQUOT counts too.
        let quota = Error::io("f", std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(l.note(Activity::Write, &quota, 7));
        l.clear(Activity::Flush);
        assert_eq!(l.get(), None);
    }
}
