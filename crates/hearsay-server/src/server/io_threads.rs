//! Client connections run on a few dedicated event-loop threads, each a single-threaded tokio
//! runtime that owns its connections, as Redis's event loop or a Seastar shard does.
//!
//! Why not the process's work-stealing runtime: with one request in flight per connection
//! (`redis-benchmark -P 1`), every request is a tiny task. Work-stealing workers on a box with
//! few cores keep waking each other to steal those tasks (a futex wake and a context switch
//! that finds nothing to do), which cost more than the request itself; one worker was 1.2×
//! faster than two at P1, two were 1.4× faster than one at P16 GET. A connection that stays
//! on one event loop never wakes another thread, and there are still as many loops as cores.
//!
//! The pool is per process and lives as long as it: work a request starts (a cluster write's
//! replica sends and hints, which outlive the acknowledgement) is never cancelled because a
//! server stopped, and tests that start many servers in one process share it.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

/// Most event-loop threads (`server.io_threads`): far more than cores only adds switching.
pub const MAX_IO_THREADS: usize = 256;

/// One event-loop thread.
#[derive(Debug)]
struct IoThread {
    handle: Handle,
    /// Connections this thread serves now.
    connections: AtomicU64,
}

/// The process's client event loops.
#[derive(Debug)]
pub struct IoThreads {
    threads: Vec<IoThread>,
    next: AtomicUsize,
}

static POOL: OnceLock<IoThreads> = OnceLock::new();

/// The number of event-loop threads `configured` asks for; 0 means half the available
/// cores, at least one: the other half runs multi-key reads ([`crate::store::read_pool`]),
/// flushes, compaction and, on a small box, the clients themselves.
pub fn resolve_count(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() / 2)
    } else {
        configured
    }
    .clamp(1, MAX_IO_THREADS)
}

impl IoThreads {
    /// The process's pool, started on first use with `resolve_count(configured)` threads;
    /// later callers share it whatever they ask for.
    /// `busy_poll_us` is the longest busy-poll window of each loop (0 = never poll).
    pub fn get(configured: usize, busy_poll_us: u64) -> std::io::Result<&'static IoThreads> {
        if let Some(p) = POOL.get() {
            return Ok(p);
        }
        let pool = IoThreads::start(resolve_count(configured), busy_poll_us)?;
        // A racing caller may have won; its pool is as good (ours only leaks idle threads,
        // and only in that race).
        Ok(POOL.get_or_init(|| pool))
    }

    /// The pool, if a server has started it.
    pub fn running() -> Option<&'static IoThreads> {
        POOL.get()
    }

    fn start(n: usize, busy_poll_us: u64) -> std::io::Result<IoThreads> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            if busy_poll_us > 0 {
                handle.spawn(super::busy_poll::spinner(
                    super::busy_poll::MIN_WINDOW,
                    Duration::from_micros(busy_poll_us),
                    &super::busy_poll::STATS,
                ));
            }
            std::thread::Builder::new()
                .name(format!("hearsay-io-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
            threads.push(IoThread {
                handle,
                connections: AtomicU64::new(0),
            });
        }
        super::busy_poll::STATS
            .max_us
            .store(busy_poll_us, Ordering::Relaxed);
        Ok(IoThreads {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Connections each thread serves now, in thread order.
    pub fn connections(&self) -> Vec<u64> {
        self.threads
            .iter()
            .map(|t| t.connections.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs one connection's future on the least loaded thread (round robin among equals),
    /// built there by `make` so the socket registers with that thread's reactor.
    pub fn spawn_connection<F, Fut>(&'static self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.threads[i].connections.load(Ordering::Relaxed))
            .unwrap_or(0);
        let t = &self.threads[i];
        t.connections.fetch_add(1, Ordering::Relaxed);
        t.handle.spawn(async move {
            struct Leave(&'static AtomicU64);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _leave = Leave(&t.connections);
            make().await;
        });
    }
}
