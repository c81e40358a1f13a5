//! The load driver: one tokio task per connection, each keeping up to `pipeline` requests in
//! flight over its own socket, recording into its own histograms (no locks on the hot path);
//! the histograms are merged when the phase ends.

use crate::cpu::cpu_seconds;
use crate::generator::KeyChooser;
use crate::report::{BenchReport, HostReport, OpReport, PhaseReport, TimelinePoint};
use crate::resp::{self, Reply};
use crate::value::{encode_value, verify_value};
use crate::workload::{OpChooser, OpKind, OpMix};
use crate::{BenchArgs, MAX_TIMEOUT_MS};
use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Time allowed to open a connection and get the answer to `CONSISTENCY`.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// First pause before re-opening a failed connection; doubles up to the maximum.
const RECONNECT_BACKOFF_MIN_MS: u64 = 50;
/// Longest pause between reconnection attempts.
const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
/// Consecutive failed reconnections after which a worker gives up (about 30 s of trying), so
/// an `--operations` run against a dead server ends instead of retrying forever.
const MAX_RECONNECT_ATTEMPTS: u32 = 35;

/// Distinct error kinds kept per worker; further kinds are folded into `other`, so a server
/// sending many different messages cannot grow the map without bound.
const MAX_ERROR_KINDS: usize = 64;

/// Longest error code kept as an error kind (`-UNAVAILABLE ...` → `server:UNAVAILABLE`);
/// a server sending a huge first word cannot make the report huge.
const MAX_ERROR_WORD_BYTES: usize = 32;

/// Seconds of per-second throughput kept in a report (one day): bounds the timeline of a run
/// left going for a long time.
const MAX_TIMELINE_POINTS: usize = 24 * 3600;

/// Refresh period of the progress bar and its live ops/s.
const PROGRESS_TICK_MS: u64 = 250;

/// Highest latency the histograms can hold: nothing waits longer than the largest timeout.
const HISTOGRAM_MAX_US: u64 = MAX_TIMEOUT_MS * 1_000 + 1_000_000;

/// Read buffer compaction threshold: consumed bytes are dropped from the front once they
/// exceed this, so the buffer stays about one pipeline of replies long.
const READ_BUFFER_COMPACT_BYTES: usize = 64 * 1024;

/// Settings every worker reads.
#[derive(Debug)]
struct Config {
    key_prefix: Vec<u8>,
    filler: Vec<u8>,
    pipeline: usize,
    timeout: Duration,
    record_count: u64,
    setup: Vec<SetupCommand>,
    ops: OpChooser,
    kinds_used: [bool; 4],
    /// Open loop (`--rate`): each worker schedules one operation per interval.
    interval: Option<Duration>,
    /// Set by Ctrl-C: workers stop issuing, drain what is in flight, and the report covers
    /// what ran.
    interrupted: AtomicBool,
}

/// Counters every worker of a phase shares (relaxed atomics: they are claims and gauges).
#[derive(Debug, Default)]
struct Shared {
    /// Next key number the load phase writes.
    load_next: AtomicU64,
    /// Next key number an insert creates.
    insert_next: AtomicU64,
    /// Highest key number known to be written (for the latest distribution).
    latest: AtomicU64,
    /// Measured operations claimed so far (for `--operations`).
    ops_claimed: AtomicU64,
    /// Replies handled, warm-up included, for the progress bar.
    completed: AtomicU64,
    /// Failures, warm-up included, for the progress bar.
    failed: AtomicU64,
    /// Set when the phase's workers are all done.
    finished: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Run,
}

/// When a phase's workers stop issuing requests and which ones count.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_start: Instant,
    end: Option<Instant>,
    ops_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Get,
    Set,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    kind: OpKind,
    stage: Stage,
    key: u64,
    /// Latency is measured from here: when queued (closed loop) or scheduled (open loop).
    start: Instant,
    /// When the request was written; the timeout runs from here.
    sent: Instant,
    measured: bool,
}

/// What one worker measured; merged across workers at the end of a phase.
#[derive(Debug)]
struct WorkerStats {
    hist: [Option<Histogram<u64>>; 4],
    errors: [u64; 4],
    not_found: [u64; 4],
    error_kinds: BTreeMap<String, u64>,
    warmup_ops: u64,
}

impl WorkerStats {
    fn new(kinds_used: [bool; 4]) -> anyhow::Result<Self> {
        let mut hist: [Option<Histogram<u64>>; 4] = [None, None, None, None];
        for (h, used) in hist.iter_mut().zip(kinds_used) {
            if used {
                *h = Some(Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?);
            }
        }
        Ok(WorkerStats {
            hist,
            errors: [0; 4],
            not_found: [0; 4],
            error_kinds: BTreeMap::new(),
            warmup_ops: 0,
        })
    }

    fn count_error(&mut self, kind: OpKind, what: &str) {
        self.errors[kind.index()] += 1;
        self.count_error_kind(what);
    }

    fn count_error_kind(&mut self, what: &str) {
        if let Some(n) = self.error_kinds.get_mut(what) {
            *n += 1;
        } else if self.error_kinds.len() < MAX_ERROR_KINDS {
            self.error_kinds.insert(what.to_string(), 1);
        } else {
            *self.error_kinds.entry("other".to_string()).or_default() += 1;
        }
    }

    fn merge(&mut self, other: WorkerStats) -> anyhow::Result<()> {
        for (mine, theirs) in self.hist.iter_mut().zip(other.hist) {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs) {
                m.add(t)?;
            }
        }
        for i in 0..4 {
            self.errors[i] += other.errors[i];
            self.not_found[i] += other.not_found[i];
        }
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        self.warmup_ops += other.warmup_ops;
        Ok(())
    }
}

/// One connection's socket and read buffer.
#[derive(Debug)]
struct Io {
    host: String,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    rpos: usize,
}

/// A connection-level failure: every request in flight on it fails with this kind.
#[derive(Debug)]
struct ConnFailure(&'static str);

impl Io {
    fn new(host: String) -> Self {
        Io {
            host,
            stream: None,
            rbuf: Vec::with_capacity(16 * 1024),
            rpos: 0,
        }
    }

    /// Opens the socket and runs the setup commands (`CONSISTENCY`, `--init-command`). A
    /// server error to any of them is reported with the server's text.
    async fn connect(&mut self, setup: &[SetupCommand]) -> anyhow::Result<()> {
        self.stream = None;
        self.rbuf.clear();
        self.rpos = 0;
        let deadline = Instant::now() + Duration::from_millis(CONNECT_TIMEOUT_MS);
        let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(&self.host))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.host))?
            .with_context(|| format!("cannot connect to {}", self.host))?;
        stream.set_nodelay(true)?;
        for command in setup {
            let shown = command.shown();
            let args: Vec<&[u8]> = command.args.iter().map(|a| a.as_bytes()).collect();
            let mut cmd = Vec::new();
            resp::encode_command(&mut cmd, &args);
            stream.write_all(&cmd).await?;
            loop {
                let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut self.rbuf))
                    .await
                    .map_err(|_| anyhow!("{} did not answer `{shown}` in time", self.host))??;
                if n == 0 {
                    bail!("{} closed the connection after `{shown}`", self.host);
                }
                match resp::parse_reply(&self.rbuf)? {
                    None => continue,
                    Some((Reply::Error(e), _)) => bail!(
                        "{} rejected `{shown}`: {}{}",
                        self.host,
                        String::from_utf8_lossy(e),
                        command.hint
                    ),
                    Some((_, used)) => {
                        self.rbuf.drain(..used);
                        break;
                    }
                }
            }
        }
        self.stream = Some(stream);
        Ok(())
    }
}

/// A command sent on every connection before any operation.
#[derive(Debug, Clone)]
struct SetupCommand {
    args: Vec<String>,
    /// Appended to the error if the server rejects the command.
    hint: &'static str,
}

impl SetupCommand {
    fn shown(&self) -> String {
        self.args.join(" ")
    }
}

/// One worker: a connection and the requests in flight on it.
struct Worker {
    io: Io,
    st: State,
}

/// Everything of a worker but its socket, so replies borrowed from the read buffer can be
/// handled while the rest is mutated.
struct State {
    id: u64,
    phase: Phase,
    rng: SmallRng,
    chooser: KeyChooser,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    window: Window,
    inflight: VecDeque<InFlight>,
    wbuf: Vec<u8>,
    key_buf: Vec<u8>,
    nonce: u64,
    stats: WorkerStats,
    completed_unreported: u64,
    /// Open loop: when the next operation is scheduled.
    next_due: Option<Instant>,
}

impl State {
    fn format_key(&mut self, key: u64) {
        self.key_buf.clear();
        self.key_buf.extend_from_slice(&self.cfg.key_prefix);
        resp::push_decimal(&mut self.key_buf, key);
    }

    fn encode_get(&mut self, key: u64) {
        self.format_key(key);
        self.wbuf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
        resp::push_bulk_header(&mut self.wbuf, self.key_buf.len());
        self.wbuf.extend_from_slice(&self.key_buf);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn encode_set(&mut self, key: u64) {
        self.format_key(key);
        self.nonce += 1;
        let nonce = (self.id << 48) | (self.nonce & ((1 << 48) - 1));
        self.wbuf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        resp::push_bulk_header(&mut self.wbuf, self.key_buf.len());
        self.wbuf.extend_from_slice(&self.key_buf);
        self.wbuf.extend_from_slice(b"\r\n");
        resp::push_bulk_header(
            &mut self.wbuf,
            crate::value::VALUE_HEADER_BYTES + self.cfg.filler.len(),
        );
        encode_value(&self.key_buf, nonce, &self.cfg.filler, &mut self.wbuf);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Issues new operations until the pipeline is full, the phase is over (returns `true`),
    /// or, in open-loop mode, no further operation is due yet.
    fn fill(&mut self, now: Instant) -> bool {
        while self.inflight.len() < self.cfg.pipeline {
            // Open loop: an operation's clock starts at its scheduled time, even if the
            // pipeline was full then, so a stalled server shows in the latencies.
            let start = match (self.phase, self.cfg.interval, self.next_due) {
                (Phase::Run, Some(interval), Some(due)) => {
                    if due > now {
                        return false;
                    }
                    self.next_due = Some(due + interval);
                    due
                }
                _ => now,
            };
            let Some((kind, key, measured)) = self.next_op(start) else {
                return true;
            };
            let stage = match kind {
                OpKind::Read | OpKind::ReadModifyWrite => {
                    self.encode_get(key);
                    Stage::Get
                }
                OpKind::Update | OpKind::Insert => {
                    self.encode_set(key);
                    Stage::Set
                }
            };
            self.inflight.push_back(InFlight {
                kind,
                stage,
                key,
                start,
                sent: now,
                measured,
            });
        }
        false
    }

    fn next_op(&mut self, now: Instant) -> Option<(OpKind, u64, bool)> {
        if self.cfg.interrupted.load(Ordering::Relaxed) {
            return None;
        }
        match self.phase {
            Phase::Load => {
                let key = self.shared.load_next.fetch_add(1, Ordering::Relaxed);
                (key < self.cfg.record_count).then_some((OpKind::Insert, key, true))
            }
            Phase::Run => {
                if self.window.end.is_some_and(|end| now >= end) {
                    return None;
                }
                let measured = now >= self.window.measure_start;
                if measured
                    && let Some(limit) = self.window.ops_limit
                    && self.shared.ops_claimed.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    return None;
                }
                let kind = self.cfg.ops.next(&mut self.rng);
                let key = if kind == OpKind::Insert {
                    self.shared.insert_next.fetch_add(1, Ordering::Relaxed)
                } else {
                    let latest = self.shared.latest.load(Ordering::Relaxed);
                    self.chooser.next(&mut self.rng, latest)
                };
                Some((kind, key, measured))
            }
        }
    }

    fn complete(&mut self, op: InFlight, now: Instant) {
        self.completed_unreported += 1;
        if !op.measured {
            self.stats.warmup_ops += 1;
            return;
        }
        let us = now.saturating_duration_since(op.start).as_micros();
        if let Some(h) = self.stats.hist[op.kind.index()].as_mut() {
            h.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
        }
    }

    fn fail(&mut self, op: InFlight, what: &str) {
        self.completed_unreported += 1;
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        if op.measured {
            self.stats.count_error(op.kind, what);
        } else {
            self.stats.warmup_ops += 1;
        }
    }

    fn fail_all(&mut self, what: &'static str) {
        while let Some(op) = self.inflight.pop_front() {
            self.fail(op, what);
        }
        self.wbuf.clear();
    }

    /// Handles the reply to the oldest request in flight.
    fn handle(&mut self, reply: Reply<'_>, now: Instant) -> Result<(), ConnFailure> {
        if reply == Reply::Push {
            return Ok(());
        }
        let Some(op) = self.inflight.pop_front() else {
            return Err(ConnFailure("unexpected_reply"));
        };
        match (op.stage, reply) {
            (_, Reply::Error(e)) => {
                let word = e.split(|&b| b == b' ').next().unwrap_or_default();
                let word = word.get(..MAX_ERROR_WORD_BYTES).unwrap_or(word);
                let what = format!("server:{}", String::from_utf8_lossy(word));
                self.fail(op, &what);
            }
            (Stage::Get, Reply::Bulk(value)) => {
                if let Some(v) = value {
                    self.format_key(op.key);
                    if verify_value(&self.key_buf, v).is_err() {
                        self.fail(op, "corrupt");
                        return Ok(());
                    }
                } else if op.measured {
                    self.stats.not_found[op.kind.index()] += 1;
                }
                if op.kind == OpKind::ReadModifyWrite {
                    self.encode_set(op.key);
                    self.inflight.push_back(InFlight {
                        stage: Stage::Set,
                        sent: now,
                        ..op
                    });
                } else {
                    self.complete(op, now);
                }
            }
            (Stage::Set, Reply::Simple(_)) => {
                if op.kind == OpKind::Insert {
                    self.shared.latest.fetch_max(op.key, Ordering::Relaxed);
                }
                self.complete(op, now);
            }
            _ => self.fail(op, "unexpected_reply"),
        }
        Ok(())
    }

    fn report_progress(&mut self) {
        if self.completed_unreported > 0 {
            self.shared
                .completed
                .fetch_add(self.completed_unreported, Ordering::Relaxed);
            self.completed_unreported = 0;
        }
    }

    fn phase_over(&self, now: Instant) -> bool {
        if self.cfg.interrupted.load(Ordering::Relaxed) {
            return true;
        }
        match self.phase {
            Phase::Load => self.shared.load_next.load(Ordering::Relaxed) >= self.cfg.record_count,
            Phase::Run => {
                self.window.end.is_some_and(|end| now >= end)
                    || self
                        .window
                        .ops_limit
                        .is_some_and(|l| self.shared.ops_claimed.load(Ordering::Relaxed) >= l)
            }
        }
    }
}

impl Worker {
    async fn run(mut self) -> (Io, WorkerStats) {
        let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
        let mut attempts = 0u32;
        loop {
            if self.io.stream.is_none() {
                let now = Instant::now();
                if self.st.phase_over(now) || attempts >= MAX_RECONNECT_ATTEMPTS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                attempts += 1;
                match self.io.connect(&self.st.cfg.setup).await {
                    Ok(()) => {
                        backoff_ms = RECONNECT_BACKOFF_MIN_MS;
                        attempts = 0;
                    }
                    Err(_) => {
                        if Instant::now() >= self.st.window.measure_start {
                            self.st.stats.count_error_kind("connect");
                        }
                        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
                        continue;
                    }
                }
            }
            let exhausted = self.st.fill(Instant::now());
            if self.st.inflight.is_empty() {
                match self.st.next_due {
                    Some(due) if !exhausted => {
                        tokio::time::sleep_until(due).await;
                        continue;
                    }
                    _ => break,
                }
            }
            if let Err(ConnFailure(what)) = self.round_trip().await {
                self.st.fail_all(what);
                self.io.stream = None;
            }
            self.st.report_progress();
        }
        self.st.report_progress();
        (self.io, self.st.stats)
    }

    /// Sends what `fill` queued and handles at least one reply. Sending and reading proceed
    /// together: a server that stops reading while its replies are not being read (TCP
    /// backpressure) would otherwise deadlock with a client blocked writing a large pipeline.
    async fn round_trip(&mut self) -> Result<(), ConnFailure> {
        let Some(stream) = self.io.stream.as_mut() else {
            return Err(ConnFailure("io"));
        };
        let deadline = match self.st.inflight.front() {
            Some(op) => op.sent + self.st.cfg.timeout,
            None => return Ok(()),
        };
        // Replies may queue new requests (read-modify-write) into `st.wbuf` while this batch
        // is being sent; they go out on the next round.
        let out = std::mem::take(&mut self.st.wbuf);
        let result = exchange(
            stream,
            &out,
            &mut self.io.rbuf,
            &mut self.io.rpos,
            &mut self.st,
            deadline,
        )
        .await;
        if self.st.wbuf.is_empty() {
            // Keep the larger allocation.
            self.st.wbuf = out;
            self.st.wbuf.clear();
        }
        result
    }
}

enum Event {
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
    Timeout,
}

async fn exchange(
    stream: &mut TcpStream,
    out: &[u8],
    rbuf: &mut Vec<u8>,
    rpos: &mut usize,
    st: &mut State,
    deadline: Instant,
) -> Result<(), ConnFailure> {
    let (mut rd, mut wr) = stream.split();
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut written = 0usize;
    let mut handled = 0usize;
    loop {
        if written == out.len() && handled > 0 {
            return Ok(());
        }
        let event = tokio::select! {
            biased;
            r = wr.write(out.get(written..).unwrap_or_default()), if written < out.len() => {
                Event::Wrote(r)
            }
            r = rd.read_buf(rbuf) => Event::Read(r),
            () = &mut timer => Event::Timeout,
        };
        match event {
            Event::Timeout => return Err(ConnFailure("timeout")),
            Event::Wrote(Ok(0)) => return Err(ConnFailure("closed")),
            Event::Wrote(Ok(n)) => written += n,
            Event::Wrote(Err(_)) | Event::Read(Err(_)) => return Err(ConnFailure("io")),
            Event::Read(Ok(0)) => return Err(ConnFailure("closed")),
            Event::Read(Ok(_)) => {
                let now = Instant::now();
                loop {
                    match resp::parse_reply(rbuf.get(*rpos..).unwrap_or_default()) {
                        Ok(Some((reply, used))) => {
                            st.handle(reply, now)?;
                            *rpos += used;
                            handled += 1;
                        }
                        Ok(None) => break,
                        Err(_) => return Err(ConnFailure("protocol")),
                    }
                }
                if *rpos == rbuf.len() {
                    rbuf.clear();
                    *rpos = 0;
                } else if *rpos > READ_BUFFER_COMPACT_BYTES {
                    rbuf.drain(..*rpos);
                    *rpos = 0;
                }
            }
        }
    }
}

/// Opens one connection per worker, spread round-robin over the hosts; fails on the first
/// host that cannot be reached or rejects a setup command.
async fn connect_all(
    hosts: &[String],
    concurrency: usize,
    cfg: &Arc<Config>,
) -> anyhow::Result<Vec<Io>> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let host = hosts[i % hosts.len()].trim().to_string();
        let cfg = Arc::clone(cfg);
        set.spawn(async move {
            let mut io = Io::new(host);
            io.connect(&cfg.setup).await.map(|()| (i, io))
        });
    }
    let mut ios: Vec<Option<Io>> = (0..concurrency).map(|_| None).collect();
    while let Some(res) = set.join_next().await {
        let (i, io) = res??;
        ios[i] = Some(io);
    }
    Ok(ios.into_iter().flatten().collect())
}

fn progress_bar(hidden: bool, len: u64, template: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// CPU seconds of this process and of the server processes (summed), if readable.
fn cpu_snapshot(server_pids: &[u32]) -> (Option<f64>, Option<f64>) {
    let server = if server_pids.is_empty() {
        None
    } else {
        server_pids
            .iter()
            .map(|&p| cpu_seconds(Some(p)))
            .sum::<Option<f64>>()
    };
    (cpu_seconds(None), server)
}

struct PhaseSpec {
    phase: Phase,
    window: Window,
    bar: ProgressBar,
    /// `true`: the bar counts operations; `false`: it counts elapsed seconds.
    bar_counts_ops: bool,
}

async fn run_phase(
    ios: Vec<Io>,
    spec: PhaseSpec,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    chooser: &KeyChooser,
    seed: u64,
    server_pids: &[u32],
) -> anyhow::Result<(Vec<Io>, WorkerStats, PhaseReport)> {
    let phase_start = Instant::now();
    let cpu_at_measure = Arc::new(std::sync::Mutex::new(None));
    {
        let cpu_at_measure = Arc::clone(&cpu_at_measure);
        let pids = server_pids.to_vec();
        let at = spec.window.measure_start;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Ok(mut g) = cpu_at_measure.lock() {
                *g = Some(cpu_snapshot(&pids));
            }
        });
    }
    let ticker = {
        let shared = Arc::clone(shared);
        let bar = spec.bar.clone();
        let counts_ops = spec.bar_counts_ops;
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut timeline = Vec::new();
            let mut second_start = (0u64, 0u64);
            let mut interval = tokio::time::interval(Duration::from_millis(PROGRESS_TICK_MS));
            while !shared.finished.load(Ordering::Relaxed) {
                interval.tick().await;
                let now = Instant::now();
                let done = shared.completed.load(Ordering::Relaxed);
                let failed = shared.failed.load(Ordering::Relaxed);
                let second = timeline.len() as u64;
                if now.duration_since(phase_start) >= Duration::from_secs(second + 1)
                    && timeline.len() < MAX_TIMELINE_POINTS
                {
                    timeline.push(TimelinePoint {
                        second,
                        replies: done.saturating_sub(second_start.0),
                        failed: failed.saturating_sub(second_start.1),
                    });
                    second_start = (done, failed);
                }
                let dt = now.duration_since(last.0).as_secs_f64();
                if dt > 0.0 {
                    let rate = (done - last.1) as f64 / dt;
                    bar.set_message(format!(
                        "{rate:.0} ops/s, {} errors",
                        shared.failed.load(Ordering::Relaxed)
                    ));
                }
                last = (now, done);
                bar.set_position(if counts_ops {
                    done
                } else {
                    now.duration_since(phase_start).as_secs()
                });
            }
            timeline
        })
    };

    let n_workers = ios.len();
    let mut handles = Vec::with_capacity(n_workers);
    for (i, io) in ios.into_iter().enumerate() {
        let st = State {
            id: i as u64,
            phase: spec.phase,
            // Each worker gets its own stream, derived from the run's seed.
            rng: SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            chooser: chooser.clone(),
            cfg: Arc::clone(cfg),
            shared: Arc::clone(shared),
            window: spec.window,
            inflight: VecDeque::with_capacity(cfg.pipeline),
            wbuf: Vec::with_capacity(cfg.pipeline * (cfg.filler.len() + 128)),
            key_buf: Vec::with_capacity(cfg.key_prefix.len() + 20),
            nonce: 0,
            stats: WorkerStats::new(cfg.kinds_used)?,
            completed_unreported: 0,
            // Workers' schedules are staggered so the aggregate rate is smooth.
            next_due: cfg
                .interval
                .map(|iv| phase_start + iv.mul_f64(i as f64 / n_workers as f64)),
        };
        handles.push(tokio::spawn(Worker { io, st }.run()));
    }
    let mut ios = Vec::with_capacity(handles.len());
    let mut total = WorkerStats::new(cfg.kinds_used)?;
    let mut by_host: BTreeMap<String, HostReport> = BTreeMap::new();
    for h in handles {
        let (io, stats) = h.await.context("benchmark worker panicked")?;
        let host = by_host.entry(io.host.clone()).or_default();
        host.connections += 1;
        host.ops += stats.hist.iter().flatten().map(Histogram::len).sum::<u64>();
        host.errors += stats.errors.iter().sum::<u64>();
        ios.push(io);
        total.merge(stats)?;
    }
    let end = Instant::now();
    let cpu_end = cpu_snapshot(server_pids);
    shared.finished.store(true, Ordering::Relaxed);
    let timeline = ticker.await.unwrap_or_default();
    spec.bar.finish_and_clear();

    let cpu_start = cpu_at_measure.lock().ok().and_then(|g| *g);
    let elapsed_s = end
        .saturating_duration_since(spec.window.measure_start)
        .as_secs_f64();
    let mut report = WorkerStatsSummary(&total).phase_report(elapsed_s, cpu_start, cpu_end);
    report.by_host = by_host;
    report.timeline = timeline;
    Ok((ios, total, report))
}

struct WorkerStatsSummary<'a>(&'a WorkerStats);

impl WorkerStatsSummary<'_> {
    fn phase_report(
        &self,
        elapsed_s: f64,
        cpu_start: Option<(Option<f64>, Option<f64>)>,
        cpu_end: (Option<f64>, Option<f64>),
    ) -> PhaseReport {
        let s = self.0;
        let mut operations = BTreeMap::new();
        let mut ops = 0;
        for kind in OpKind::ALL {
            let i = kind.index();
            if let Some(h) = &s.hist[i]
                && (!h.is_empty() || s.errors[i] > 0)
            {
                ops += h.len();
                operations.insert(
                    kind.name().to_string(),
                    OpReport::from_histogram(h, s.errors[i], s.not_found[i]),
                );
            }
        }
        let errors = s.errors.iter().sum::<u64>();
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let (client_cpu_s, server_cpu_s) = match cpu_start {
            Some((c0, s0)) => (
                c0.zip(cpu_end.0).map(|(a, b)| (b - a).max(0.0)),
                s0.zip(cpu_end.1).map(|(a, b)| (b - a).max(0.0)),
            ),
            None => (None, None),
        };
        let per_core = |cpu: Option<f64>| cpu.filter(|&c| c > 0.0).map(|c| ops as f64 / c);
        PhaseReport {
            elapsed_s,
            ops,
            ops_per_s: per_s(ops),
            errors,
            errors_by_kind: s.error_kinds.clone(),
            not_found: s.not_found.iter().sum(),
            operations,
            warmup_ops: s.warmup_ops,
            client_cpu_s,
            client_cores_busy: client_cpu_s
                .filter(|_| elapsed_s > 0.0)
                .map(|c| c / elapsed_s),
            ops_per_client_core_s: per_core(client_cpu_s),
            server_cpu_s,
            ops_per_server_core_s: per_core(server_cpu_s),
            by_host: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }
}

/// `CONSISTENCY <level>` if asked for, then each `--init-command`, split on whitespace.
fn setup_commands(args: &BenchArgs) -> Vec<SetupCommand> {
    let mut setup = Vec::new();
    if let Some(level) = args.consistency {
        setup.push(SetupCommand {
            args: vec!["CONSISTENCY".to_string(), level.name().to_string()],
            hint: " (is it a Hearsay node? leave out --consistency to benchmark a plain \
                   Redis server)",
        });
    }
    for line in &args.init_command {
        setup.push(SetupCommand {
            args: line.split_whitespace().map(str::to_string).collect(),
            hint: "",
        });
    }
    setup
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let mix: OpMix = args.mix()?;
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mut filler_rng = SmallRng::seed_from_u64(seed);
    let filler_len = args.value_size - crate::value::VALUE_HEADER_BYTES;
    // Printable filler keeps values readable in redis-cli while debugging.
    let filler: Vec<u8> = (0..filler_len)
        .map(|_| filler_rng.random_range(b'a'..=b'z'))
        .collect();
    let kinds_used = [
        mix.read > 0.0,
        mix.update > 0.0,
        mix.insert > 0.0 || args.load,
        mix.read_modify_write > 0.0,
    ];
    let cfg = Arc::new(Config {
        key_prefix: args.key_prefix.clone().into_bytes(),
        filler,
        pipeline: args.pipeline,
        timeout: Duration::from_millis(args.timeout_ms),
        record_count: args.record_count,
        setup: setup_commands(&args),
        ops: mix.chooser(),
        kinds_used,
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.concurrency as f64 / r)),
        interrupted: AtomicBool::new(false),
    });
    let ctrl_c = {
        let cfg = Arc::clone(&cfg);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cfg.interrupted.store(true, Ordering::Relaxed);
            }
        })
    };
    let result = run_with(&args, mix, seed, &cfg).await;
    ctrl_c.abort();
    result
}

async fn run_with(
    args: &BenchArgs,
    mix: OpMix,
    seed: u64,
    cfg: &Arc<Config>,
) -> anyhow::Result<BenchReport> {
    // Summing zeta for the latest distribution is O(record_count): do it once, clone per worker.
    let chooser = KeyChooser::new(args.distribution, args.record_count);
    let hide = args.no_progress;

    let mut ios = connect_all(&args.hosts, args.concurrency, cfg).await?;

    let load = if args.load {
        let shared = Arc::new(Shared::default());
        let now = Instant::now();
        let spec = PhaseSpec {
            phase: Phase::Load,
            window: Window {
                measure_start: now,
                end: None,
                ops_limit: None,
            },
            bar: progress_bar(
                hide,
                args.record_count,
                "load {bar:40} {pos}/{len} [{elapsed_precise}] {msg}",
            ),
            bar_counts_ops: true,
        };
        let (back, _, report) =
            run_phase(ios, spec, cfg, &shared, &chooser, seed, &args.server_pid).await?;
        ios = back;
        if report.ops == 0 {
            bail!(
                "load failed: no insert succeeded ({:?})",
                report.errors_by_kind
            );
        }
        Some(report)
    } else {
        None
    };

    let shared = Arc::new(Shared {
        insert_next: AtomicU64::new(args.record_count),
        latest: AtomicU64::new(args.record_count - 1),
        ..Shared::default()
    });
    let now = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure_start = now + warmup;
    let end = args.run_duration().map(|d| measure_start + d);
    let (bar_len, counts_ops, template) = match (end, args.operations) {
        (Some(e), _) => (
            e.duration_since(now).as_secs().max(1),
            false,
            "run {bar:40} {pos}/{len} s {msg}",
        ),
        (None, Some(n)) => (
            n,
            true,
            "run {bar:40} {pos}/{len} ops [{elapsed_precise}] {msg}",
        ),
        (None, None) => (1, true, "run {msg}"),
    };
    let spec = PhaseSpec {
        phase: Phase::Run,
        window: Window {
            measure_start,
            end,
            ops_limit: args.operations,
        },
        bar: progress_bar(hide, bar_len, template),
        bar_counts_ops: counts_ops,
    };
    let (_ios, _, run) =
        run_phase(ios, spec, cfg, &shared, &chooser, seed, &args.server_pid).await?;
    if run.ops == 0 && (run.errors > 0 || !run.errors_by_kind.is_empty()) {
        bail!(
            "every operation failed ({} errors: {:?})",
            run.errors,
            run.errors_by_kind
        );
    }
    Ok(BenchReport {
        hosts: args.hosts.clone(),
        workload: format!("{:?}", args.workload).to_lowercase(),
        mix,
        distribution: args.distribution,
        record_count: args.record_count,
        value_size_bytes: args.value_size,
        concurrency: args.concurrency,
        pipeline: args.pipeline,
        consistency: args.consistency.map(|c| c.name().to_string()),
        seed,
        warmup_s: args.warmup,
        rate: args.rate,
        interrupted: cfg.interrupted.load(Ordering::Relaxed),
        load,
        run,
        json_output: args.json,
    })
}
