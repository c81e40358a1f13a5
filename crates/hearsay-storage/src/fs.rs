//! The durability seam: the few file-system operations whose failure or reordering changes
//! what survives a crash (fsync of a file, fsync of a directory, rename). Production uses
//! [`RealFs`]; fault tests use [`FaultyFs`] to make fsync fail and check that the engine
//! poisons itself rather than carrying on.
//!
//! Law for implementations: an operation that returns `Ok` has done what the real one would;
//! an `Err` may have done any part of it (as a real failed fsync may have).

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Durability operations.
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    /// `fdatasync` (or `fsync`) of an open file.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// `fsync` of a directory, making renames and creations in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomic rename within a file system.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Fs for RealFs {
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// A file system whose fsyncs can be made to fail, for fault tests.
#[derive(Debug, Default)]
pub struct FaultyFs {
    fail_sync: AtomicBool,
    syncs: AtomicU64,
}

impl FaultyFs {
    pub fn new() -> Arc<FaultyFs> {
        Arc::new(FaultyFs::default())
    }
    /// From now on every fsync (file or directory) fails with EIO.
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_sync.store(fail, Ordering::SeqCst);
    }
    /// How many syncs were attempted.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
    fn check(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            Err(io::Error::other("injected fsync failure (EIO)"))
        } else {
            Ok(())
        }
    }
}

impl Fs for FaultyFs {
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        self.check()?;
        file.sync_data()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}
