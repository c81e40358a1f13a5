//! The durability seam: the few file-system operations whose failure or reordering changes
//! what survives a crash (fsync of a file, fsync of a directory, rename), and the creation of
//! every file the engine writes (where a full disk shows first). Production uses [`RealFs`];
//! fault tests use [`FaultyFs`] to make fsync fail and check that the engine poisons itself
//! rather than carrying on, or to make the disk look full and check that it does not.
//!
//! Law for implementations: an operation that returns `Ok` has done what the real one would;
//! an `Err` may have done any part of it (as a real failed fsync may have).

use parking_lot::Mutex;
use std::fmt;
use std::fs::{File, OpenOptions};
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
    /// Opens `path` with `options` to write a file the engine creates (a commit-log segment,
    /// an SSTable, the manifest's temporary file, `LOCK`). On a full disk this, or a write to
    /// the file it returns, fails with `ENOSPC`.
    fn create_file(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        options.open(path)
    }
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

/// Where a full disk simulated by [`FaultyFs::no_space`] strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSpace {
    /// Creating the file fails (no inode or directory block left).
    Create,
    /// The file is created, but every write to it fails (it is written through a handle on
    /// `/dev/full`, so nothing reaches the file).
    Write,
    /// Writes succeed, the fsync fails (a file system that allocates blocks at writeback).
    Sync,
}

/// A file system whose fsyncs can be made to fail, and whose disk can be made to look full,
/// for fault tests.
#[derive(Debug, Default)]
pub struct FaultyFs {
    fail_sync: AtomicBool,
    syncs: AtomicU64,
    /// (file name fragment, where) pairs: a file whose name contains the fragment is out of
    /// space at that step.
    no_space: Mutex<Vec<(String, NoSpace)>>,
    no_space_hits: AtomicU64,
}

/// The error a full disk gives: `ENOSPC`, whose kind is `StorageFull`.
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
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
    /// From now on, files whose name contains `name_contains` (`""`: every file) are out of
    /// space at step `at`, with `ENOSPC`. [`NoSpace::Write`] affects files created from now on.
    pub fn no_space(&self, name_contains: &str, at: NoSpace) {
        self.no_space.lock().push((name_contains.to_string(), at));
    }
    /// Space is back: removes every [`Self::no_space`] rule.
    pub fn clear_no_space(&self) {
        self.no_space.lock().clear();
    }
    /// How many operations failed with a simulated full disk.
    pub fn no_space_hits(&self) -> u64 {
        self.no_space_hits.load(Ordering::SeqCst)
    }
    fn out_of_space(&self, path: &Path, at: NoSpace) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hit = self
            .no_space
            .lock()
            .iter()
            .any(|(frag, a)| *a == at && name.contains(frag.as_str()));
        if hit {
            self.no_space_hits.fetch_add(1, Ordering::SeqCst);
        }
        hit
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
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check()?;
        if self.out_of_space(path, NoSpace::Sync) {
            return Err(enospc());
        }
        file.sync_data()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn create_file(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        if self.out_of_space(path, NoSpace::Create) {
            return Err(enospc());
        }
        let file = options.open(path)?;
        if self.out_of_space(path, NoSpace::Write) {
            return OpenOptions::new().write(true).open("/dev/full");
        }
        Ok(file)
    }
}
