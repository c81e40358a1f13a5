//! The engine's fail-stop latch: set once by the first failed fsync (or other durability
//! operation whose outcome is unknown), never cleared while the process lives.

use crate::error::Error;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Poison {
    set: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Poison {
    /// Latches the engine into the poisoned state. The first reason wins: it is the root cause.
    pub fn poison(&self, reason: String) {
        let mut r = self.reason.lock();
        if r.is_none() {
            tracing::error!(%reason, "storage engine poisoned; refusing all further writes");
            *r = Some(reason);
        }
        self.set.store(true, Ordering::SeqCst);
    }

    pub fn is_poisoned(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// `Err(Error::Poisoned)` once poisoned.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_poisoned() {
            Err(Error::Poisoned(self.reason().unwrap_or_default()))
        } else {
            Ok(())
        }
    }
}
