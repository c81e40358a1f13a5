//! The engine's named background workers: `hearsay-flush` (memtables → SSTables),
//! `hearsay-compaction` (strategy-chosen merges, rate-limited), `hearsay-idle-compaction`
//! (the same merges at the OS's idle priority, see [`idle_compaction_loop`]) and, in periodic
//! sync mode, `hearsay-commitlog-sync`. Each checks the shutdown flag at least every second.

use super::{Inner, Keyspace, TableHandle, Version, table_records};
use crate::cache::CacheTally;
use crate::cell::{Cell, CellKey};
use crate::compaction::{self, CompactionTask, PurgeTime, TombstoneGc};
use crate::config::SyncMode;
use crate::engine::merge::{MergeIter, Source};
use crate::error::{Error, Result};
use crate::memtable::{Memtable, MemtableIter};
use crate::sstable::{Sstable, SstableMeta, SstableOptions, SstableWriter};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often idle workers re-check for work and shutdown.
const IDLE_POLL_MS: u64 = 1_000;

/// A caller of `Engine::compact` waiting for its major compaction.
pub(crate) struct MajorRequest {
    pub keyspace: String,
    pub reply: std::sync::mpsc::SyncSender<Result<()>>,
}

pub(crate) fn start(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| Error::io(name.to_string(), e))
    };
    let i = inner.clone();
    handles.push(spawn("hearsay-flush", Box::new(move || flush_loop(i)))?);
    let handoff = if inner.config.compaction_background_priority {
        let (to_idle, idle_rx) = std::sync::mpsc::sync_channel(1);
        let (idle_tx, from_idle) = std::sync::mpsc::sync_channel(1);
        let promote = Arc::new(AtomicBool::new(false));
        let (i, p) = (inner.clone(), promote.clone());
        handles.push(spawn(
            "hearsay-idle-compaction",
            Box::new(move || idle_compaction_loop(i, idle_rx, idle_tx, p)),
        )?);
        Some(Handoff {
            to_idle,
            from_idle,
            promote,
        })
    } else {
        None
    };
    let i = inner.clone();
    handles.push(spawn(
        "hearsay-compaction",
        Box::new(move || compaction_loop(i, handoff)),
    )?);
    if let SyncMode::Periodic { .. } = inner.config.sync_mode {
        let i = inner.clone();
        handles.push(spawn(
            "hearsay-commitlog-sync",
            Box::new(move || sync_loop(i)),
        )?);
    }
    Ok(handles)
}

/// An I/O error while writing an SSTable (its fsync, rename or directory fsync included)
/// poisons the engine, as a commit-log fsync failure does: after a failed fsync nothing about
/// the file system's state can be trusted. A full disk is the exception — it is an operating
/// condition, not a lie about durability: nothing was installed (the manifest still names
/// only complete tables; see `Inner::store_manifest`), the memtables and the commit log still
/// hold the data, and the flush is retried until space is freed.
fn poison_if_durability_failure(inner: &Inner, what: &str, e: &Error) {
    if let Error::Io { .. } = e
        && !e.is_disk_full()
    {
        inner.poison.poison(format!("{what} failed: {e}"));
    }
}

fn stopping(inner: &Inner) -> bool {
    inner.shutdown.load(Ordering::SeqCst)
}

/// Periodic mode: fsync whatever was appended since the last sync, every interval.
fn sync_loop(inner: Arc<Inner>) {
    let SyncMode::Periodic { interval_ms } = inner.config.sync_mode else {
        return;
    };
    let interval = Duration::from_millis(interval_ms);
    let mut next = Instant::now() + interval;
    while !stopping(&inner) {
        let now = Instant::now();
        if now < next {
            let seen = inner.sync_wake.generation();
            inner.sync_wake.wait_after(seen, next - now);
            continue;
        }
        next = now + interval;
        let pos = inner.log.written_pos();
        if pos > inner.log.synced_pos()
            && let Err(e) = inner.log.sync_to(pos)
        {
            // sync_to has poisoned the engine; nothing more to do here.
            tracing::error!(error = %e, "periodic commit-log sync failed");
        }
    }
}

fn flush_loop(inner: Arc<Inner>) {
    while !stopping(&inner) {
        let seen = inner.flush_wake.generation();
        let work: Option<(Arc<Keyspace>, Arc<Memtable>)> =
            inner.keyspaces.read().values().find_map(|ks| {
                ks.version()
                    .immutable
                    .first()
                    .map(|m| (ks.clone(), m.clone()))
            });
        match work {
            Some((ks, mem)) => {
                if let Err(e) = flush_memtable(&inner, &ks, &mem) {
                    if ks.dropped.load(Ordering::SeqCst) {
                        // Its directory went away under the flush: nothing to retry.
                        inner.flush_done.notify();
                        continue;
                    }
                    poison_if_durability_failure(&inner, "flush", &e);
                    inner.note_disk_full(super::disk_full::Activity::Flush, &e);
                    *inner.last_flush_error_kind.lock() = match &e {
                        Error::Io { source, .. } => source.kind(),
                        _ => std::io::ErrorKind::Other,
                    };
                    inner.counters.flush_errors.fetch_add(1, Ordering::AcqRel);
                    inner.record_error(&format!("flush of keyspace '{}'", ks.name), &e);
                    inner.flush_done.notify();
                    let s = inner.shutdown_wait_gen();
                    inner
                        .flush_wake
                        .wait_after(s, Duration::from_millis(super::BACKGROUND_RETRY_MS));
                } else {
                    inner.disk_full.clear(super::disk_full::Activity::Flush);
                    inner.flush_done.notify();
                    inner.compaction_wake.notify();
                }
            }
            None => inner
                .flush_wake
                .wait_after(seen, Duration::from_millis(IDLE_POLL_MS)),
        }
    }
}

impl Inner {
    fn shutdown_wait_gen(&self) -> u64 {
        self.flush_wake.generation()
    }

    fn sstable_options(&self, ks: &Keyspace) -> SstableOptions {
        SstableOptions {
            block_size_bytes: self.config.sstable_block_size_bytes,
            compression: ks.options().compression,
            bloom_bits_per_key: self.config.bloom_bits_per_key,
            ..SstableOptions::default()
        }
    }

    /// Allocates a table id (persisted with the next manifest update; an id used by a file
    /// that never made it into the manifest is cleaned up on open before reuse).
    fn next_table_id(&self) -> u64 {
        let mut m = self.manifest.lock();
        let id = m.next_table_id;
        m.next_table_id += 1;
        id
    }

    /// Replaces `remove` tables by `add` in the keyspace, in the manifest first (durably),
    /// then in memory. Returns false (and installs nothing) if the keyspace was dropped.
    fn install(
        &self,
        ks: &Keyspace,
        remove_tables: &[u64],
        remove_memtable: Option<u64>,
        add: Vec<TableHandle>,
    ) -> Result<bool> {
        let mut m = self.manifest.lock();
        if ks.dropped.load(Ordering::SeqCst) || m.keyspace(ks.id).is_none() {
            return Ok(false);
        }
        let mut st = ks.state.write();
        let mut v: Version = (**st).clone();
        v.tables
            .retain(|t| !remove_tables.contains(&t.table.meta().id));
        v.tables.extend(add);
        super::sort_tables(&mut v.tables);
        if let Some(mid) = remove_memtable {
            v.immutable.retain(|mm| mm.id != mid);
        }
        let mut next = m.clone();
        if let Some(rec) = next.keyspace_mut(ks.id) {
            rec.tables = table_records(&v.tables);
        }
        self.store_manifest(&next)?;
        *m = next;
        let old = std::mem::replace(&mut *st, Arc::new(v));
        for t in &old.tables {
            if remove_tables.contains(&t.table.meta().id) {
                t.table.mark_obsolete();
            }
        }
        Ok(true)
    }
}

impl Inner {
    /// [`Inner::install`], deleting the new tables if that fails without poisoning the
    /// engine (a full disk while writing the manifest): `MANIFEST` then still names only the
    /// old tables, and the retry writes new ones, so these would only take space until the
    /// next start. After a poisoning failure the manifest on disk may name them: they stay.
    fn install_or_discard(
        &self,
        ks: &Keyspace,
        remove_tables: &[u64],
        remove_memtable: Option<u64>,
        add: &[TableHandle],
    ) -> Result<bool> {
        let r = self.install(ks, remove_tables, remove_memtable, add.to_vec());
        if r.is_err() && !self.poison.is_poisoned() {
            for t in add {
                t.table.mark_obsolete();
            }
        }
        r
    }
}

/// A flush warms the block cache ([`SstableWriter::warm_cache_all`]) only when its memtable
/// is at most this share of the cache, so that one flush of cold data can never push out
/// most of the hot set. A third: the default memtable, flushed at a little over 64 MiB,
/// qualifies in the default 256 MiB cache.
const FLUSH_WARM_CACHE_SHARE: u64 = 3;

fn flush_memtable(inner: &Arc<Inner>, ks: &Arc<Keyspace>, mem: &Arc<Memtable>) -> Result<()> {
    let mut added = Vec::new();
    if !mem.is_empty() {
        let id = inner.next_table_id();
        let opts = inner.sstable_options(ks);
        let mut w = SstableWriter::create(
            &ks.dir,
            id,
            &opts,
            inner.config.fs.clone(),
            mem.entry_count() as usize,
        )?;
        let uid = inner.cache.next_table_uid();
        if inner.config.flush_warm_cache
            && mem.size_bytes() <= inner.cache.capacity_bytes() / FLUSH_WARM_CACHE_SHARE
        {
            w.warm_cache_all(inner.cache.clone(), uid);
        }
        for (k, c) in MemtableIter::new(mem.clone(), Bound::Unbounded, Bound::Unbounded) {
            if let Err(e) = w.add(&k, &c) {
                w.abandon();
                return Err(e);
            }
        }
        let (meta, warmed) = w.finish_counting_warmed()?;
        inner
            .counters
            .sstable_bytes_written
            .fetch_add(meta.size_bytes, Ordering::Relaxed);
        inner
            .counters
            .flush_blocks_warmed
            .fetch_add(warmed, Ordering::Relaxed);
        let table = Sstable::open_as(
            &ks.dir,
            id,
            inner.cache.clone(),
            inner.read_stats.clone(),
            uid,
        )?;
        added.push(TableHandle {
            table,
            level: 0,
            compression: opts.compression,
        });
    }
    let installed = inner.install_or_discard(ks, &[], Some(mem.id), &added)?;
    if !installed {
        for t in added {
            t.table.mark_obsolete();
        }
        return Ok(());
    }
    inner
        .counters
        .memtable_bytes
        .fetch_sub(mem.size_bytes(), Ordering::AcqRel);
    inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
    let _w = inner.write.lock();
    inner.release_segments_locked();
    Ok(())
}

fn compaction_loop(inner: Arc<Inner>, handoff: Option<Handoff>) {
    while !stopping(&inner) {
        let seen = inner.compaction_wake.generation();
        let request = {
            let mut q = inner.compaction_requests.lock();
            if q.is_empty() {
                None
            } else {
                Some(q.remove(0))
            }
        };
        if let Some(r) = request {
            let result = run_major(&inner, &r.keyspace);
            let dropped = inner.keyspace(&r.keyspace).is_err();
            if let Err(e) = &result
                && !dropped
            {
                poison_if_durability_failure(&inner, "compaction", e);
                inner.record_error(&format!("major compaction of '{}'", r.keyspace), e);
            }
            let _ = r.reply.send(result);
            continue;
        }
        let now_ms = inner.config.clock.wall_millis();
        let work = inner.keyspaces.read().values().find_map(|ks| {
            let infos: Vec<_> = ks.version().tables.iter().map(|t| t.info()).collect();
            compaction::pick(&ks.options().compaction, &infos, now_ms).map(|t| (ks.clone(), t))
        });
        match work {
            Some((ks, task)) => {
                let result = match &handoff {
                    Some(h) => run_in_background(&inner, h, &ks, &task),
                    None => run_compaction(&inner, &ks, &task),
                };
                if let Err(e) = result {
                    if ks.dropped.load(Ordering::SeqCst) {
                        continue;
                    }
                    poison_if_durability_failure(&inner, "compaction", &e);
                    inner
                        .counters
                        .compaction_errors
                        .fetch_add(1, Ordering::Relaxed);
                    inner.record_error(&format!("compaction of '{}'", ks.name), &e);
                    let s = inner.compaction_wake.generation();
                    inner
                        .compaction_wake
                        .wait_after(s, Duration::from_millis(super::BACKGROUND_RETRY_MS));
                }
            }
            None => inner
                .compaction_wake
                .wait_after(seen, Duration::from_millis(IDLE_POLL_MS)),
        }
    }
}

/// How long a compaction may wait at idle priority before it is promoted (continued on the
/// normal-priority thread). Idle priority is for riding out a burst of requests, not for
/// putting maintenance off while a box stays busy: a read-heavy load that never leaves a core
/// idle would otherwise keep every table it reads through from being merged.
const BACKGROUND_PRIORITY_MAX: Duration = Duration::from_secs(10);

/// How often the normal-priority thread reconsiders a compaction running at idle priority.
const PROMOTE_CHECK: Duration = Duration::from_millis(100);

/// The normal compaction thread's end of the hand-off to `hearsay-idle-compaction`.
struct Handoff {
    to_idle: std::sync::mpsc::SyncSender<CompactionRun>,
    from_idle: std::sync::mpsc::Receiver<(CompactionRun, Result<Step>)>,
    /// Set to make the idle worker hand its run back now.
    promote: Arc<AtomicBool>,
}

/// `hearsay-idle-compaction`: advances the runs it is handed at the OS's idle scheduling
/// priority (Linux `SCHED_IDLE`), so a compaction nothing waits for uses only CPU time that
/// requests leave over, as ScyllaDB runs compaction in a scheduling group with few shares
/// while its backlog is small. Measured on the 2-core bench box: a 27 MB size-tiered
/// compaction during a `redis-benchmark -P 1` GET run took 18-20 % of its throughput and
/// raised its p99 from 0.5 to 2.4 ms at normal priority (`docs/benchmarks.md`).
///
/// A thread cannot raise its own priority back without privilege, so promotion is a hand-off:
/// the run (merge iterators, writer, outputs so far) goes back to `hearsay-compaction`, which
/// continues it where it stopped and always does the install, whose manifest lock and fsync
/// must not wait on a starved thread.
fn idle_compaction_loop(
    inner: Arc<Inner>,
    rx: std::sync::mpsc::Receiver<CompactionRun>,
    tx: std::sync::mpsc::SyncSender<(CompactionRun, Result<Step>)>,
    promote: Arc<AtomicBool>,
) {
    lower_own_priority();
    while !stopping(&inner) {
        match rx.recv_timeout(Duration::from_millis(IDLE_POLL_MS)) {
            Ok(mut run) => {
                let step = run.advance(&inner, &|| promote.load(Ordering::Relaxed));
                if tx.send((run, step)).is_err() {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Puts the calling thread at idle scheduling priority where the OS has one; elsewhere it
/// stays normal and compactions simply run at normal priority.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 names the calling thread; `param` is a valid sched_param.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the idle compaction thread's priority");
        }
    }
}

/// Whether compaction work waits behind the run of `ks` over `inputs`: a major compaction
/// someone asked for, or a task the strategy would pick once those inputs are set aside.
fn backlog_behind(inner: &Inner, ks: &Keyspace, inputs: &[u64]) -> bool {
    if !inner.compaction_requests.lock().is_empty() {
        return true;
    }
    let now_ms = inner.config.clock.wall_millis();
    inner.keyspaces.read().values().any(|k| {
        let infos: Vec<_> = k
            .version()
            .tables
            .iter()
            .filter(|t| k.id != ks.id || !inputs.contains(&t.table.meta().id))
            .map(|t| t.info())
            .collect();
        compaction::pick(&k.options().compaction, &infos, now_ms).is_some()
    })
}

/// Runs a picked compaction on `hearsay-idle-compaction`, promoting it to this thread when
/// work queues behind it or it has waited [`BACKGROUND_PRIORITY_MAX`]; installs it here.
fn run_in_background(
    inner: &Arc<Inner>,
    h: &Handoff,
    ks: &Arc<Keyspace>,
    task: &CompactionTask,
) -> Result<()> {
    let Some(run) = CompactionRun::start(inner, ks, task)? else {
        return Ok(());
    };
    h.promote.store(false, Ordering::Relaxed);
    let since = Instant::now();
    if let Err(std::sync::mpsc::SendError(run)) = h.to_idle.send(run) {
        return run.finish_here(inner); // The idle worker is gone (shutting down).
    }
    inner
        .counters
        .compactions_background
        .fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .compaction_background_running
        .store(true, Ordering::Relaxed);
    let returned = loop {
        match h.from_idle.recv_timeout(PROMOTE_CHECK) {
            Ok(r) => break Some(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !h.promote.load(Ordering::Relaxed)
                    && (since.elapsed() >= BACKGROUND_PRIORITY_MAX
                        || backlog_behind(inner, ks, &task.inputs))
                {
                    h.promote.store(true, Ordering::Relaxed);
                    inner
                        .counters
                        .compactions_promoted
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    inner
        .counters
        .compaction_background_running
        .store(false, Ordering::Relaxed);
    let Some((run, step)) = returned else {
        return Err(Error::Closed);
    };
    match step {
        Ok(Step::Done) => run.install(inner),
        Ok(Step::Yielded) => run.finish_here(inner),
        Err(e) => {
            run.abandon();
            Err(e)
        }
    }
}

fn run_major(inner: &Arc<Inner>, keyspace: &str) -> Result<()> {
    inner.poison.check()?;
    let ks = inner.keyspace(keyspace)?;
    let infos: Vec<_> = ks.version().tables.iter().map(|t| t.info()).collect();
    // The strategy as of now: an `alter_keyspace` meanwhile leaves these tasks as they are.
    for task in compaction::major(&ks.options().compaction, &infos) {
        run_compaction(inner, &ks, &task)?;
    }
    Ok(())
}

/// The compaction limiter sleeps only once it is at least this far ahead of its rate. It is
/// consulted after every cell: sleeping whenever it was ahead at all made thousands of
/// microsecond sleeps a second, each a context switch that preempted request threads on a
/// small box (measured: a P1 GET run during a compaction lost 30 % of its throughput, with
/// 16 % of the loop thread's samples in the scheduler). In 10 ms quanta the writes stay at
/// the configured rate on average and the thread wakes at most 100 times a second.
const RATE_LIMIT_MIN_SLEEP: Duration = Duration::from_millis(10);

/// Bytes between two looks at the clock by the compaction limiter: what one millisecond
/// at the rate writes, within these bounds. It was consulted after every cell, and reading
/// the clock was 9 % of a compaction's CPU (measured, a 27 MB size-tiered compaction);
/// checking every millisecond's worth keeps the rate as well as 10 ms sleep quanta allow.
const RATE_LIMIT_CHECK_BYTES_MIN: u64 = 4 << 10;
const RATE_LIMIT_CHECK_BYTES_MAX: u64 = 1 << 20;

/// Token-bucket-ish limiter: sleeps so that bytes written since `start` do not exceed the rate.
struct RateLimiter {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
    /// `bytes` at which to look at the clock next.
    next_check: u64,
}

impl RateLimiter {
    fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_sec,
            start: Instant::now(),
            bytes: 0,
            next_check: 0,
        }
    }

    fn wrote(&mut self, n: u64, inner: &Inner) {
        self.pace(n, || stopping(inner));
    }

    /// Counts `n` more bytes and sleeps if they put the writer at least
    /// [`RATE_LIMIT_MIN_SLEEP`] ahead of the rate; returns whether it slept.
    fn pace(&mut self, n: u64, stopping: impl FnOnce() -> bool) -> bool {
        if self.bytes_per_sec == 0 {
            return false;
        }
        self.bytes += n;
        if self.bytes < self.next_check {
            return false;
        }
        self.next_check = self.bytes
            + (self.bytes_per_sec / 1000)
                .clamp(RATE_LIMIT_CHECK_BYTES_MIN, RATE_LIMIT_CHECK_BYTES_MAX);
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        let elapsed = self.start.elapsed();
        if due >= elapsed + RATE_LIMIT_MIN_SLEEP && !stopping() {
            // Sleep in short steps so shutdown is not held up.
            std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
            return true;
        }
        false
    }
}

/// Could a table or memtable outside the compaction hold an older version of `key` than
/// `ts`? If so, a tombstone for it must be kept: dropping it would resurrect that version.
fn shadows_something(
    key: &CellKey,
    cell: &Cell,
    others: &[TableHandle],
    mems: &[Arc<Memtable>],
) -> bool {
    others.iter().any(|t| {
        let m = t.table.meta();
        m.min_key <= *key && *key <= m.max_key && m.min_timestamp <= cell.timestamp
    }) || mems
        .iter()
        .any(|m| m.min_timestamp() <= cell.timestamp.0 && m.get(key).is_some())
}

/// A compaction between steps: the merge, its writer and outputs, in a value that can move
/// between the background-priority worker and the normal one (see [`idle_compaction_loop`]).
struct CompactionRun {
    ks: Arc<Keyspace>,
    task: CompactionTask,
    now_ms: u64,
    /// When a tombstone's time has come: `gc_grace` or the purge horizon, as of the start.
    gc: TombstoneGc,
    expected: u64,
    bytes_in: u64,
    opts: SstableOptions,
    /// What could hold older versions of a purgeable tombstone's key: the other tables and
    /// every memtable as of the start. Tables flushed while we run come from these memtables,
    /// which we keep and query live, so nothing present at the start is missed.
    others: Vec<TableHandle>,
    mems: Vec<Arc<Memtable>>,
    merged: MergeIter,
    /// The inputs' block reads and cache hits, which decide what the writer warms.
    tally: Arc<CacheTally>,
    limiter: RateLimiter,
    /// The open output and the cache uid it will be opened under.
    writer: Option<(SstableWriter, u64)>,
    /// Finished outputs, each with its cache uid.
    outputs: Vec<(SstableMeta, u64)>,
    blocks_warmed: u64,
    purged: u64,
    /// Of `purged`, those purged under a purge horizon.
    purged_by_horizon: u64,
    /// Tombstones kept because the horizon of their token had not passed them.
    kept_by_horizon: u64,
    converted: u64,
}

/// Where [`CompactionRun::advance`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The inputs are merged and every output is finished: ready to install.
    Done,
    /// Asked to stop by its caller; `advance` again (on any thread) to go on.
    Yielded,
}

impl CompactionRun {
    /// Opens the inputs' merge, or `None` if the table set changed since `task` was picked.
    fn start(
        inner: &Arc<Inner>,
        ks: &Arc<Keyspace>,
        task: &CompactionTask,
    ) -> Result<Option<CompactionRun>> {
        inner.poison.check()?;
        let v = ks.version();
        let inputs: Vec<TableHandle> = v
            .tables
            .iter()
            .filter(|t| task.inputs.contains(&t.table.meta().id))
            .cloned()
            .collect();
        if inputs.len() != task.inputs.len() || inputs.is_empty() {
            return Ok(None); // The table set changed under us; the next pick re-plans.
        }
        let tally = Arc::new(CacheTally::default());
        let sources: Vec<Source> = inputs
            .iter()
            .map(|t| {
                let it = t
                    .table
                    .iter_for_compaction(Bound::Unbounded, Bound::Unbounded)
                    .tallying(tally.clone());
                Box::new(it) as Source
            })
            .collect();
        // Options and horizon as of now: a change while this runs applies to the next run.
        let now_ms = inner.config.clock.wall_millis();
        let gc = TombstoneGc::new(now_ms, ks.options().gc_grace_ms, ks.purge_horizon());
        Ok(Some(CompactionRun {
            ks: ks.clone(),
            task: task.clone(),
            now_ms,
            gc,
            expected: inputs.iter().map(|t| t.table.meta().entry_count).sum(),
            bytes_in: inputs.iter().map(|t| t.table.meta().size_bytes).sum(),
            opts: inner.sstable_options(ks),
            others: v
                .tables
                .iter()
                .filter(|t| !task.inputs.contains(&t.table.meta().id))
                .cloned()
                .collect(),
            mems: v.memtables().cloned().collect(),
            merged: MergeIter::new(sources),
            tally,
            limiter: RateLimiter::new(inner.config.compaction_bytes_per_sec),
            writer: None,
            outputs: Vec::new(),
            blocks_warmed: 0,
            purged: 0,
            purged_by_horizon: 0,
            kept_by_horizon: 0,
            converted: 0,
        }))
    }

    /// Merges until the inputs are exhausted and the last output is finished, or until
    /// `yield_now` (asked before every cell) returns true. After an error, call `abandon`.
    fn advance(&mut self, inner: &Inner, yield_now: &dyn Fn() -> bool) -> Result<Step> {
        loop {
            if stopping(inner) {
                return Err(Error::Closed);
            }
            if yield_now() {
                return Ok(Step::Yielded);
            }
            let Some(item) = self.merged.next() else {
                self.finish_output()?;
                return Ok(Step::Done);
            };
            let (key, mut cell) = item?;
            if cell.is_expired(self.now_ms) {
                // An expired value reads as a delete: keep it as a tombstone whose deletion
                // time is the expiry, so gc_grace counts from then.
                cell.value = None;
                self.converted += 1;
            }
            if cell.is_tombstone() {
                match self.gc.check(key.token, cell.deletion_time_ms()) {
                    PurgeTime::Due => {
                        if !shadows_something(&key, &cell, &self.others, &self.mems) {
                            self.purged += 1;
                            if self.gc.has_horizon() {
                                self.purged_by_horizon += 1;
                            }
                            continue;
                        }
                    }
                    PurgeTime::HeldByHorizon => self.kept_by_horizon += 1,
                    PurgeTime::WithinGcGrace => {}
                }
            }
            if self.writer.is_none() {
                let id = inner.next_table_id();
                let mut w = SstableWriter::create(
                    &self.ks.dir,
                    id,
                    &self.opts,
                    inner.config.fs.clone(),
                    self.expected as usize,
                )?;
                let uid = inner.cache.next_table_uid();
                w.warm_cache(inner.cache.clone(), uid, self.tally.clone());
                self.writer = Some((w, uid));
            }
            if let Some((w, _)) = self.writer.as_mut() {
                let before = w.bytes_written();
                w.add(&key, &cell)?;
                let after = w.bytes_written();
                self.limiter.wrote(after.saturating_sub(before), inner);
                if self.task.max_output_bytes.is_some_and(|max| after >= max) {
                    self.finish_output()?;
                }
            }
        }
    }

    fn finish_output(&mut self) -> Result<()> {
        if let Some((w, uid)) = self.writer.take() {
            let (meta, warmed) = w.finish_counting_warmed()?;
            self.blocks_warmed += warmed;
            self.outputs.push((meta, uid));
        }
        Ok(())
    }

    /// Deletes what a failed or stopped run wrote.
    fn abandon(mut self) {
        // Blocks it warmed stay in the cache under uids no table will use, until evicted.
        if let Some((w, _)) = self.writer.take() {
            w.abandon();
        }
        for (m, _) in &self.outputs {
            let _ = std::fs::remove_file(crate::sstable::sstable_path(&self.ks.dir, m.id));
        }
    }

    /// Swaps the finished outputs in for the inputs. Runs on the normal-priority thread: it
    /// takes the manifest lock for an fsync, which a thread at idle priority could hold for
    /// as long as the box stays busy while the flush thread waits for it.
    fn install(self, inner: &Arc<Inner>) -> Result<()> {
        let ks = &self.ks;
        let mut added = Vec::with_capacity(self.outputs.len());
        let mut bytes_out = 0;
        for (m, uid) in &self.outputs {
            bytes_out += m.size_bytes;
            let table = Sstable::open_as(
                &ks.dir,
                m.id,
                inner.cache.clone(),
                inner.read_stats.clone(),
                *uid,
            )?;
            added.push(TableHandle {
                table,
                level: self.task.output_level,
                compression: self.opts.compression,
            });
        }
        let installed = inner.install_or_discard(ks, &self.task.inputs, None, &added)?;
        if !installed {
            for t in added {
                t.table.mark_obsolete();
            }
            return Ok(());
        }
        let c = &inner.counters;
        c.compactions.fetch_add(1, Ordering::Relaxed);
        c.compaction_bytes_read
            .fetch_add(self.bytes_in, Ordering::Relaxed);
        c.compaction_bytes_written
            .fetch_add(bytes_out, Ordering::Relaxed);
        c.sstable_bytes_written
            .fetch_add(bytes_out, Ordering::Relaxed);
        c.tombstones_purged
            .fetch_add(self.purged, Ordering::Relaxed);
        c.tombstones_purged_by_horizon
            .fetch_add(self.purged_by_horizon, Ordering::Relaxed);
        c.tombstones_kept_by_horizon
            .fetch_add(self.kept_by_horizon, Ordering::Relaxed);
        let k = &ks.counters;
        k.tombstones_purged
            .fetch_add(self.purged, Ordering::Relaxed);
        k.tombstones_purged_by_horizon
            .fetch_add(self.purged_by_horizon, Ordering::Relaxed);
        k.tombstones_kept_by_horizon
            .fetch_add(self.kept_by_horizon, Ordering::Relaxed);
        c.expired_converted
            .fetch_add(self.converted, Ordering::Relaxed);
        c.compaction_blocks_warmed
            .fetch_add(self.blocks_warmed, Ordering::Relaxed);
        tracing::debug!(keyspace = %ks.name, reason = self.task.reason, inputs = self.task.inputs.len(), outputs = self.outputs.len(), purged = self.purged, kept_by_horizon = self.kept_by_horizon, "compaction done");
        Ok(())
    }

    /// Advances to the end on this thread and installs.
    fn finish_here(mut self, inner: &Arc<Inner>) -> Result<()> {
        match self.advance(inner, &|| false) {
            Ok(_) => self.install(inner),
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }
}

fn run_compaction(inner: &Arc<Inner>, ks: &Arc<Keyspace>, task: &CompactionTask) -> Result<()> {
    match CompactionRun::start(inner, ks, task)? {
        Some(run) => run.finish_here(inner),
        None => Ok(()),
    }
}

#[cfg(test)]
mod rate_limiter_tests {
    use super::*;

    /// Fed a byte at a time, the limiter keeps the average rate (the time taken is at least
    /// what the rate allows, less one quantum and one check interval: it looks at the clock
    /// every `RATE_LIMIT_CHECK_BYTES_MIN` bytes here and sleeps only when a quantum ahead, so
    /// after its last look it may be ahead by both) and sleeps in quanta, not per call: each
    /// sleep lasts at least `RATE_LIMIT_MIN_SLEEP`, so there are at most elapsed ÷ quantum.
    #[test]
    fn keeps_the_rate_in_quanta_not_per_call() {
        const RATE: u64 = 1_000_000;
        let mut l = RateLimiter::new(RATE);
        let total: u64 = 200_000; // 200 ms at the rate
        let mut sleeps = 0u32;
        for _ in 0..total {
            sleeps += u32::from(l.pace(1, || false));
        }
        let elapsed = l.start.elapsed();
        let check_interval =
            Duration::from_secs_f64(RATE_LIMIT_CHECK_BYTES_MIN as f64 / RATE as f64);
        assert!(
            elapsed + RATE_LIMIT_MIN_SLEEP + check_interval >= Duration::from_millis(200),
            "{elapsed:?}"
        );
        assert!(sleeps >= 1);
        let max = (elapsed.as_millis() / RATE_LIMIT_MIN_SLEEP.as_millis()) as u32;
        assert!(sleeps <= max, "{sleeps} sleeps in {elapsed:?}");
        // It looks at the clock once per millisecond's worth of bytes (or 4 KiB), not per
        // call: a write of less than that right after a check neither sleeps nor reads it.
        let mut c = RateLimiter::new(1_000_000);
        assert!(!c.pace(1, || false), "first call checks: not ahead yet");
        assert!(
            !c.pace(100, || false),
            "within a quantum: no check, no sleep"
        );
        assert_eq!(c.next_check, 1 + RATE_LIMIT_CHECK_BYTES_MIN);
        // A stopping engine never sleeps.
        assert!(!l.pace(1_000_000, || true));
        // Rate 0 means unlimited.
        let mut free = RateLimiter::new(0);
        assert!(!free.pace(u64::MAX / 2, || false));
    }
}
