//! The engine's errors. Split as the style guide asks: most variants fail one request;
//! [`Error::Poisoned`] means the engine has stopped accepting writes for good.

use std::io;
use std::path::PathBuf;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file. A full disk is one of these, of kind `StorageFull`
    /// (`ENOSPC`) or `QuotaExceeded` (`EDQUOT`): see [`Error::is_disk_full`].
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk failed a checksum or do not parse. Never silently skipped: the read or
    /// open fails, naming the file and offset.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A file written by a newer (or unknown) format version.
    #[error("unsupported format version {found} in {path} (this build reads up to {supported})")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// An earlier fsync (or other durability operation) failed. After that the engine cannot
    /// know what reached the disk, so it refuses every write from then on (as PostgreSQL and
    /// fjall do after "fsyncgate") and says why.
    #[error("storage engine is poisoned and refuses writes: {0}")]
    Poisoned(String),

    #[error("keyspace '{0}' does not exist")]
    NoSuchKeyspace(String),

    #[error("keyspace '{0}' already exists")]
    KeyspaceExists(String),

    /// Caller error: bad argument, oversize key or value, invalid configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The engine is shutting down.
    #[error("storage engine is closed")]
    Closed,
}

impl Error {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this is a full disk: an I/O error of kind `StorageFull` (`ENOSPC`) or
    /// `QuotaExceeded` (`EDQUOT`). An operating condition that passes once space is freed;
    /// the engine never poisons itself for it (see `docs/storage-engine.md`, "Full disk").
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_disk_full(source))
    }

    /// A corruption error.
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Whether an `io::Error` is a full disk (`ENOSPC` or `EDQUOT`).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
