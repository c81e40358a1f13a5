//! Threads that run multi-key point reads (a pipelined run of GETs, an MGET) off the client
//! event loop.
//!
//! Why: a client event loop ([`crate::server::io_threads`]) is one thread, and a point read
//! that misses the memtable decodes SSTable blocks: a run of 16 GETs is tens of microseconds
//! of engine work. Handed to these threads, it runs in parallel with the loop, which goes on
//! parsing and answering its other connections. A single-key read stays on the loop: the
//! hand-off (a wake of a reader, a wake of the task) would cost more than the read.
//!
//! The pool is per process, like the event loops, and sized to the cores. Its queue is
//! bounded; when it is full the caller reads inline, so a burst never waits for a slot and
//! never grows memory.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads of at least this many keys are handed to the pool. Below it the two thread
/// hand-offs (about 5–10 µs together on these machines) exceed the reads' own time.
pub const OFFLOAD_MIN_KEYS: usize = 4;
/// Read jobs queued before callers read inline instead: one pipelined run per client for
/// a thousand clients, each job a few hundred bytes.
pub const READ_QUEUE_JOBS: usize = 1024;
/// Most reader threads.
const MAX_READ_THREADS: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// Counters of the read pool, exported through INFO and metrics.
#[derive(Debug, Default)]
pub struct ReadPoolStats {
    /// Read jobs run by the pool.
    pub offloaded: AtomicU64,
    /// Jobs read inline because the queue was full.
    pub queue_full: AtomicU64,
}

/// The process's reader threads.
#[derive(Debug)]
pub struct ReadPool {
    tx: crossbeam_channel::Sender<Job>,
    threads: usize,
    pub stats: ReadPoolStats,
}

static POOL: OnceLock<ReadPool> = OnceLock::new();

impl ReadPool {
    /// The process's pool, started on first use with one thread per available core.
    pub fn get() -> &'static ReadPool {
        POOL.get_or_init(|| {
            let n = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_READ_THREADS);
            let (tx, rx) = crossbeam_channel::bounded::<Job>(READ_QUEUE_JOBS);
            let mut started = 0;
            for i in 0..n {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("hearsay-read-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::warn!(error = %e, "could not start a reader thread"),
                }
            }
            ReadPool {
                tx,
                threads: started,
                stats: ReadPoolStats::default(),
            }
        })
    }

    /// The pool, if a read has started it.
    pub fn running() -> Option<&'static ReadPool> {
        POOL.get()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs waiting for a reader now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Runs `job` on a reader, or right here when the queue is full or no reader runs.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if self.threads == 0 {
            return job();
        }
        match self.tx.try_send(Box::new(job)) {
            Ok(()) => {
                self.stats.offloaded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                (e.into_inner())()
            }
        }
    }
}
