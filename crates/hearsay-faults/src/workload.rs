//! Client workloads over the `redis` crate (sync API), each operation recorded in the
//! history.
//!
//! - **Unique-key writers** write keys `w:<worker>:<n>` once each: they probe durability
//!   (P1).
//! - **Registers** `r:<writer>:<j>`: each written by exactly one writer with increasing
//!   integers and read by every reader: they probe recency (P2) and monotonicity (P3).
//! - Values are `<seq>:<payload>:<crc32c hex>` with the checksum over
//!   `<key>:<seq>:<payload>`, so a value that was corrupted, or belongs to another key, fails
//!   its checksum (P4). Unique keys have `seq` 1; a register's `seq` is its integer.

use crate::history::{History, Op, OpKind, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Client connect timeout. Clients reach nodes over the bridge or loopback, so a connect
/// either succeeds at once, is refused at once (node down), or hangs only when the node is
/// paused and its accept queue is full; 1 s bounds that.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Client read/write timeout: above the nodes' 2 s coordinator deadlines plus a blocking
/// read repair, so a slow cluster answers `-TIMEOUT` rather than the client giving up; a
/// paused node (SIGSTOP) costs a worker this long per operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// After a connect to a node fails, a worker avoids that node this long: a dead node would
/// otherwise turn every worker into a tight loop of refused connects (and history lines).
const DOWN_NODE_BACKOFF: Duration = Duration::from_millis(200);
/// Payload length range of values, in bytes (hex characters): small, so a run writes tens
/// of thousands of keys without filling disks, yet varied.
const PAYLOAD_LEN: std::ops::Range<usize> = 8..48;
/// Most acknowledged unique keys remembered for readers (a bounded ring: readers want
/// recent keys, the checkers read the history).
const MAX_REMEMBERED_KEYS: usize = 50_000;

/// CRC32C of a value's checked part, as 8 hex digits.
fn checksum(key: &str, seq: u64, payload: &str) -> String {
    format!(
        "{:08x}",
        crc32c::crc32c(format!("{key}:{seq}:{payload}").as_bytes())
    )
}

/// The value of `key` at sequence `seq` with `payload`.
pub fn make_value(key: &str, seq: u64, payload: &str) -> String {
    format!("{seq}:{payload}:{}", checksum(key, seq, payload))
}

/// The sequence number a value of `key` carries, or why it is corrupt.
pub fn parse_value(key: &str, value: &str) -> Result<u64, String> {
    let mut parts = value.splitn(3, ':');
    let (Some(seq), Some(payload), Some(crc)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("not <seq>:<payload>:<crc>: {value:?}"));
    };
    let seq: u64 = seq
        .parse()
        .map_err(|_| format!("bad sequence number in {value:?}"))?;
    if crc != checksum(key, seq, payload) {
        return Err(format!("checksum mismatch in {value:?} (key {key})"));
    }
    Ok(seq)
}

/// Whether `key` is a register (single writer, many values) rather than a unique key.
pub fn is_register(key: &str) -> bool {
    key.starts_with("r:")
}

/// A random payload of hex characters.
pub fn payload(rng: &mut impl Rng) -> String {
    let n = rng.random_range(PAYLOAD_LEN);
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

/// Why an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// The client could not connect (or set its level): nothing was sent.
    Connect(String),
    /// The node answered an error: `code` is its first word (`UNAVAILABLE`, `TIMEOUT`,
    /// `FAILURE`, `ERR`, ...).
    Server { code: String, text: String },
    /// An I/O error or timeout after the request may have been sent.
    Io(String),
}

impl OpError {
    pub fn text(&self) -> String {
        match self {
            OpError::Connect(t) => format!("connect: {t}"),
            OpError::Server { text, .. } => text.clone(),
            OpError::Io(t) => format!("io: {t}"),
        }
    }
}

/// What a failed write means for the history.
///
/// A write is known not to have happened only when nothing was sent: the client could not
/// connect, the coordinator refused it up front (`UNAVAILABLE`: too few replicas alive,
/// checked before anything is sent, see docs/cluster.md), or the request was invalid.
/// Everything else — `-TIMEOUT` and `-FAILURE` (some replicas may have applied it),
/// storage errors of the coordinator's own replica (the others may have applied it), an I/O
/// error or timeout after sending — is unknown.
pub fn classify_write_error(e: &OpError) -> Outcome {
    match e {
        OpError::Connect(_) => Outcome::Fail,
        OpError::Server { code, text } => {
            let pre_send = code == "UNAVAILABLE"
                || (code == "ERR"
                    && (text.contains("wrong number of arguments")
                        || text.contains("syntax error")
                        || text.contains("Improper CONSISTENCY")
                        || is_coordinator_refusal(text)));
            if pre_send {
                Outcome::Fail
            } else {
                Outcome::Unknown
            }
        }
        OpError::Io(_) => Outcome::Unknown,
    }
}

/// Whether a write error is a node refusing to coordinate writes at all, checked before it
/// sends anything to a replica (issue 17's `check_write_coordinator`): its clock is off
/// (`clock skew: ...; refusing to coordinate writes until it is back`) or its storage cannot
/// take writes (`storage poisoned: ...` / `disk full: ...; this node does not coordinate
/// writes ... (write through another node)`). Such a write is known not to have happened.
pub fn is_coordinator_refusal(text: &str) -> bool {
    text.contains("refusing to coordinate writes") || text.contains("does not coordinate writes")
}

/// What a failed read means: an error answer is a failure; an I/O error or timeout is
/// unknown (it may have repaired replicas). Checkers only look at answered reads.
pub fn classify_read_error(e: &OpError) -> Outcome {
    match e {
        OpError::Connect(_) | OpError::Server { .. } => Outcome::Fail,
        OpError::Io(_) => Outcome::Unknown,
    }
}

fn from_redis(e: redis::RedisError) -> OpError {
    if let Some(code) = e.code() {
        let text = match e.detail() {
            Some(d) => format!("{code} {d}"),
            None => code.to_string(),
        };
        return OpError::Server {
            code: code.to_string(),
            text,
        };
    }
    OpError::Io(e.to_string())
}

/// One client: a lazily opened connection per node, each set to `level` with
/// `CONSISTENCY` when it opens.
pub struct Client {
    addrs: Vec<SocketAddr>,
    level: String,
    conns: Vec<Option<redis::Connection>>,
    down_until: Vec<Option<Instant>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.addrs)
            .field("level", &self.level)
            .field("open", &self.conns.iter().filter(|c| c.is_some()).count())
            .finish()
    }
}

impl Client {
    pub fn new(addrs: Vec<SocketAddr>, level: &str) -> Client {
        let n = addrs.len();
        Client {
            addrs,
            level: level.to_string(),
            conns: (0..n).map(|_| None).collect(),
            down_until: vec![None; n],
        }
    }

    pub fn level(&self) -> &str {
        &self.level
    }

    /// Whether a recent connect to `node` failed (workers skip it for a while).
    pub fn backing_off(&self, node: usize) -> bool {
        self.down_until[node].is_some_and(|t| Instant::now() < t)
    }

    /// Opens (or reuses) the connection to `node`.
    pub fn connect(&mut self, node: usize) -> Result<&mut redis::Connection, OpError> {
        if self.conns[node].is_none() {
            let c = open(self.addrs[node], &self.level).inspect_err(|_| {
                self.down_until[node] = Some(Instant::now() + DOWN_NODE_BACKOFF);
            })?;
            self.down_until[node] = None;
            self.conns[node] = Some(c);
        }
        Ok(self.conns[node].as_mut().expect("just opened"))
    }

    /// Drops the connection to `node` (after an I/O error its state is unknown).
    pub fn disconnect(&mut self, node: usize) {
        self.conns[node] = None;
    }

    fn run<T: redis::FromRedisValue>(
        &mut self,
        node: usize,
        cmd: &redis::Cmd,
    ) -> Result<T, OpError> {
        let c = self.connect(node)?;
        match cmd.query::<T>(c) {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = from_redis(e);
                if matches!(e, OpError::Io(_)) {
                    self.disconnect(node);
                }
                Err(e)
            }
        }
    }

    /// `SET key value` through `node`.
    pub fn set(&mut self, node: usize, key: &str, value: &str) -> Result<(), OpError> {
        let v: redis::Value = self.run(node, redis::cmd("SET").arg(key).arg(value))?;
        match v {
            redis::Value::Okay => Ok(()),
            redis::Value::SimpleString(s) if s == "OK" => Ok(()),
            other => Err(OpError::Server {
                code: "UNEXPECTED".into(),
                text: format!("SET answered {other:?}"),
            }),
        }
    }

    /// `GET key` through `node`.
    pub fn get(&mut self, node: usize, key: &str) -> Result<Option<String>, OpError> {
        self.run(node, redis::cmd("GET").arg(key))
    }

    /// Any command through `node`, as a raw value.
    pub fn raw(&mut self, node: usize, cmd: &redis::Cmd) -> Result<redis::Value, OpError> {
        self.run(node, cmd)
    }
}

/// Opens a connection with the harness's timeouts and sets its consistency level.
pub fn open(addr: SocketAddr, level: &str) -> Result<redis::Connection, OpError> {
    let client = redis::Client::open(format!("redis://{addr}/"))
        .map_err(|e| OpError::Connect(e.to_string()))?;
    let mut con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| OpError::Connect(e.to_string()))?;
    con.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| OpError::Connect(e.to_string()))?;
    con.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| OpError::Connect(e.to_string()))?;
    let answer: String = redis::cmd("CONSISTENCY")
        .arg(level)
        .query(&mut con)
        .map_err(|e| OpError::Connect(format!("CONSISTENCY {level}: {e}")))?;
    let want = format!("Consistency level set to {level}.");
    if answer != want {
        return Err(OpError::Connect(format!(
            "CONSISTENCY {level} answered {answer:?}"
        )));
    }
    Ok(con)
}

/// A write through `client` to `node`, recorded in `history`.
pub fn recorded_set(
    history: &History,
    client: &mut Client,
    worker: &str,
    node: usize,
    key: &str,
    value: &str,
) -> Outcome {
    recorded_set_err(history, client, worker, node, key, value).0
}

/// [`recorded_set`], also returning the error text.
pub fn recorded_set_err(
    history: &History,
    client: &mut Client,
    worker: &str,
    node: usize,
    key: &str,
    value: &str,
) -> (Outcome, Option<String>) {
    let invoke_ns = history.now_ns();
    let r = client.set(node, key, value);
    let complete_ns = history.now_ns();
    let (outcome, error) = match &r {
        Ok(()) => (Outcome::Ok, None),
        Err(e) => (classify_write_error(e), Some(e.text())),
    };
    history.record(Op {
        id: 0,
        worker: worker.to_string(),
        kind: OpKind::Write,
        key: key.to_string(),
        value: Some(value.to_string()),
        level: client.level().to_string(),
        node,
        invoke_ns,
        complete_ns,
        outcome,
        error: error.clone(),
    });
    (outcome, error)
}

/// A read through `client` from `node`, recorded in `history`; the value if it answered.
pub fn recorded_get(
    history: &History,
    client: &mut Client,
    worker: &str,
    node: usize,
    key: &str,
) -> (Outcome, Option<String>) {
    let invoke_ns = history.now_ns();
    let r = client.get(node, key);
    let complete_ns = history.now_ns();
    let (outcome, value, error) = match r {
        Ok(v) => (Outcome::Ok, v, None),
        Err(e) => (classify_read_error(&e), None, Some(e.text())),
    };
    history.record(Op {
        id: 0,
        worker: worker.to_string(),
        kind: OpKind::Read,
        key: key.to_string(),
        value: value.clone(),
        level: client.level().to_string(),
        node,
        invoke_ns,
        complete_ns,
        outcome,
        error,
    });
    (outcome, value)
}

/// Acknowledged unique keys and their values, for readers and probes.
#[derive(Debug, Default)]
pub struct AckedKeys {
    keys: Mutex<std::collections::VecDeque<(String, String)>>,
}

impl AckedKeys {
    pub fn push(&self, key: String, value: String) {
        let mut g = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= MAX_REMEMBERED_KEYS {
            g.pop_front();
        }
        g.push_back((key, value));
    }

    /// A random remembered key, if any.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<(String, String)> {
        let g = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_empty() {
            return None;
        }
        g.get(rng.random_range(0..g.len())).cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<(String, String)> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What a workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Client addresses of the nodes (workers spread operations over all of them).
    pub addrs: Vec<SocketAddr>,
    pub unique_writers: usize,
    pub write_level: String,
    /// Register keys per register writer.
    pub registers_per_writer: usize,
    pub register_writers: usize,
    pub register_readers: usize,
    /// Readers of acknowledged unique keys (nil after an acknowledged write is stale).
    pub unique_readers: usize,
    pub read_level: String,
    /// Pause between a worker's operations (`ZERO`: as fast as the cluster answers). Spacing,
    /// not synchronisation: it keeps a long run from saturating two shared cores.
    pub think: Duration,
    /// Seed of the workers' RNGs (each worker derives its own).
    pub seed: u64,
    /// Prefix of worker names and of the writer part of keys, so that two workloads of one
    /// run (say, one at ONE and one at ANY) never write the same key.
    pub tag: String,
}

/// Counters the scenario can watch while the workload runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub acked_writes: AtomicU64,
    pub ops: AtomicU64,
}

/// Running worker threads; [`Workload::stop`] ends them.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    pub acked: Arc<AckedKeys>,
    pub progress: Arc<Progress>,
}

impl Workload {
    pub fn start(spec: &WorkloadSpec, history: Arc<History>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AckedKeys::default());
        let progress = Arc::new(Progress::default());
        let mut handles = Vec::new();
        let mut spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            handles.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(f)
                    .expect("spawn worker thread"),
            );
        };
        let tag = &spec.tag;
        for w in 0..spec.unique_writers {
            let (spec, h, stop, acked, progress) = (
                spec.clone(),
                history.clone(),
                stop.clone(),
                acked.clone(),
                progress.clone(),
            );
            spawn(
                format!("{tag}w{w}"),
                Box::new(move || unique_writer(w, &spec, &h, &stop, &acked, &progress)),
            );
        }
        for w in 0..spec.register_writers {
            let (spec, h, stop, progress) = (
                spec.clone(),
                history.clone(),
                stop.clone(),
                progress.clone(),
            );
            spawn(
                format!("{tag}rw{w}"),
                Box::new(move || register_writer(w, &spec, &h, &stop, &progress)),
            );
        }
        for r in 0..spec.register_readers {
            let (spec, h, stop, progress) = (
                spec.clone(),
                history.clone(),
                stop.clone(),
                progress.clone(),
            );
            spawn(
                format!("{tag}rr{r}"),
                Box::new(move || register_reader(r, &spec, &h, &stop, &progress)),
            );
        }
        for r in 0..spec.unique_readers {
            let (spec, h, stop, acked, progress) = (
                spec.clone(),
                history.clone(),
                stop.clone(),
                acked.clone(),
                progress.clone(),
            );
            spawn(
                format!("{tag}ur{r}"),
                Box::new(move || unique_reader(r, &spec, &h, &stop, &acked, &progress)),
            );
        }
        Workload {
            stop,
            handles,
            acked,
            progress,
        }
    }

    /// Stops every worker and waits for them (each finishes its operation in flight,
    /// bounded by the client timeouts). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }

    /// Acknowledged writes so far.
    pub fn acked_writes(&self) -> u64 {
        self.progress.acked_writes.load(Ordering::Relaxed)
    }
}

impl Drop for Workload {
    /// A scenario that fails half-way still stops its workers (they hold the history).
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node to send the next operation to: random, skipping nodes whose connect just failed
/// (unless all are).
fn pick_node(rng: &mut StdRng, client: &Client, n: usize) -> usize {
    for _ in 0..n * 2 {
        let i = rng.random_range(0..n);
        if !client.backing_off(i) {
            return i;
        }
    }
    rng.random_range(0..n)
}

fn think(spec: &WorkloadSpec, stop: &AtomicBool) {
    if !spec.think.is_zero() && !stop.load(Ordering::Acquire) {
        std::thread::sleep(spec.think);
    }
}

/// Seed of worker `salt`: distinct per worker kind and index, derived from the run's seed.
fn worker_rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn unique_writer(
    w: usize,
    spec: &WorkloadSpec,
    history: &History,
    stop: &AtomicBool,
    acked: &AckedKeys,
    progress: &Progress,
) {
    let mut rng = worker_rng(spec.seed, 1000 + w as u64);
    let mut client = Client::new(spec.addrs.clone(), &spec.write_level);
    let name = format!("{}w{w}", spec.tag);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let node = pick_node(&mut rng, &client, spec.addrs.len());
        let key = format!("w:{}{w}:{n}", spec.tag);
        n += 1;
        let value = make_value(&key, 1, &payload(&mut rng));
        let outcome = recorded_set(history, &mut client, &name, node, &key, &value);
        progress.ops.fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Ok {
            progress.acked_writes.fetch_add(1, Ordering::Relaxed);
            acked.push(key, value);
        }
        think(spec, stop);
    }
}

fn register_writer(
    w: usize,
    spec: &WorkloadSpec,
    history: &History,
    stop: &AtomicBool,
    progress: &Progress,
) {
    let mut rng = worker_rng(spec.seed, 2000 + w as u64);
    let mut client = Client::new(spec.addrs.clone(), &spec.write_level);
    let name = format!("{}rw{w}", spec.tag);
    let mut seq = vec![0u64; spec.registers_per_writer.max(1)];
    while !stop.load(Ordering::Acquire) {
        let node = pick_node(&mut rng, &client, spec.addrs.len());
        let j = rng.random_range(0..seq.len());
        // Increasing whatever the outcome: a failed or unknown write's value is never
        // reused, so every value names exactly one write.
        seq[j] += 1;
        let key = format!("r:{}{w}:{j}", spec.tag);
        let value = make_value(&key, seq[j], &payload(&mut rng));
        if recorded_set(history, &mut client, &name, node, &key, &value) == Outcome::Ok {
            progress.acked_writes.fetch_add(1, Ordering::Relaxed);
        }
        progress.ops.fetch_add(1, Ordering::Relaxed);
        think(spec, stop);
    }
}

fn register_reader(
    r: usize,
    spec: &WorkloadSpec,
    history: &History,
    stop: &AtomicBool,
    progress: &Progress,
) {
    let mut rng = worker_rng(spec.seed, 3000 + r as u64);
    let mut client = Client::new(spec.addrs.clone(), &spec.read_level);
    let name = format!("{}rr{r}", spec.tag);
    while !stop.load(Ordering::Acquire) {
        if spec.register_writers == 0 {
            return;
        }
        let node = pick_node(&mut rng, &client, spec.addrs.len());
        let w = rng.random_range(0..spec.register_writers);
        let j = rng.random_range(0..spec.registers_per_writer.max(1));
        recorded_get(
            history,
            &mut client,
            &name,
            node,
            &format!("r:{}{w}:{j}", spec.tag),
        );
        progress.ops.fetch_add(1, Ordering::Relaxed);
        think(spec, stop);
    }
}

fn unique_reader(
    r: usize,
    spec: &WorkloadSpec,
    history: &History,
    stop: &AtomicBool,
    acked: &AckedKeys,
    progress: &Progress,
) {
    let mut rng = worker_rng(spec.seed, 4000 + r as u64);
    let mut client = Client::new(spec.addrs.clone(), &spec.read_level);
    let name = format!("{}ur{r}", spec.tag);
    while !stop.load(Ordering::Acquire) {
        let Some((key, _)) = acked.pick(&mut rng) else {
            // Nothing acknowledged yet: wait for the writers (bounded by the stop flag).
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let node = pick_node(&mut rng, &client, spec.addrs.len());
        recorded_get(history, &mut client, &name, node, &key);
        progress.ops.fetch_add(1, Ordering::Relaxed);
        think(spec, stop);
    }
}

/// What a probe of a restarted node saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeResult {
    /// When the node first accepted a connection (that also took `CONSISTENCY`).
    pub accepted_ns: Option<u64>,
    /// Operations (any outcome) that started and completed within the first second after
    /// acceptance.
    pub ops_first_second: usize,
    pub ops_total: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

/// How long a probe keeps firing after the node accepted its connection.
pub const PROBE_DURATION: Duration = Duration::from_secs(2);
/// Between connect attempts of a probe: refused connects return in microseconds, so a
/// bare loop would spin a core the restarting node needs; 1 ms still catches the first
/// moment it accepts to within a millisecond.
const PROBE_CONNECT_RETRY: Duration = Duration::from_millis(1);

/// Probes node `node` from the moment it accepts connections: connect-retry until
/// `connect_deadline`, then alternate QUORUM writes of fresh unique keys and QUORUM reads
/// of acknowledged keys for [`PROBE_DURATION`], all recorded as worker `name`.
pub fn probe(
    history: &History,
    addrs: Vec<SocketAddr>,
    node: usize,
    name: &str,
    acked: &AckedKeys,
    seed: u64,
    connect_deadline: Instant,
) -> ProbeResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut res = ProbeResult::default();
    let mut client = Client::new(addrs, "QUORUM");
    loop {
        match client.connect(node) {
            Ok(_) => break,
            Err(_) if Instant::now() < connect_deadline => {
                std::thread::sleep(PROBE_CONNECT_RETRY);
            }
            Err(_) => return res,
        }
    }
    let accepted = history.now_ns();
    res.accepted_ns = Some(accepted);
    let first_second_end = accepted + 1_000_000_000;
    let end = Instant::now() + PROBE_DURATION;
    let mut n = 0u64;
    while Instant::now() < end {
        let start = history.now_ns();
        let outcome = if n.is_multiple_of(2) {
            let key = format!("p:{name}:{n}");
            let value = make_value(&key, 1, &payload(&mut rng));
            let o = recorded_set(history, &mut client, name, node, &key, &value);
            if o == Outcome::Ok {
                acked.push(key, value);
            }
            o
        } else {
            match acked.pick(&mut rng) {
                Some((key, _)) => recorded_get(history, &mut client, name, node, &key).0,
                None => continue,
            }
        };
        n += 1;
        let done = history.now_ns();
        res.ops_total += 1;
        if start < first_second_end && done <= first_second_end {
            res.ops_first_second += 1;
        }
        match outcome {
            Outcome::Ok => res.ok += 1,
            Outcome::Fail => res.failed += 1,
            Outcome::Unknown => res.unknown += 1,
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_sequence_and_a_checksum_bound_to_the_key() {
        let v = make_value("r:0:1", 42, "abc");
        assert_eq!(parse_value("r:0:1", &v), Ok(42));
        // The same value under another key fails: it belongs to r:0:1.
        assert!(parse_value("r:0:2", &v).is_err());
        // One changed character fails.
        let bad = v.replacen("abc", "abd", 1);
        assert!(parse_value("r:0:1", &bad).is_err());
        assert!(parse_value("r:0:1", "garbage").is_err());
        assert!(parse_value("r:0:1", "x:abc:00000000").is_err());
    }

    #[test]
    fn only_refusals_before_sending_are_failed_writes() {
        let server = |code: &str, text: &str| OpError::Server {
            code: code.into(),
            text: text.into(),
        };
        assert_eq!(
            classify_write_error(&OpError::Connect("refused".into())),
            Outcome::Fail
        );
        assert_eq!(
            classify_write_error(&server(
                "UNAVAILABLE",
                "UNAVAILABLE Cannot achieve consistency level QUORUM: 1 of 3 replicas alive"
            )),
            Outcome::Fail
        );
        for (code, text) in [
            (
                "TIMEOUT",
                "TIMEOUT Operation timed out - received only 1 of 2 required responses",
            ),
            ("FAILURE", "FAILURE Operation failed - ..."),
            ("ERR", "ERR storage error: storage engine is poisoned"),
        ] {
            assert_eq!(
                classify_write_error(&server(code, text)),
                Outcome::Unknown,
                "{text}"
            );
        }
        // Issue 17: a node that refuses to coordinate writes says so before sending any.
        for text in [
            "ERR clock skew: this node's clock is 120.000 s ahead of 2 of 2 peers measured \
             (max offset 500 ms); refusing to coordinate writes until it is back",
            "ERR storage poisoned: fsync failed; this node does not coordinate writes until it \
             is restarted (write through another node)",
            "ERR disk full: No space left on device; this node does not coordinate writes \
             until space is freed (write through another node)",
        ] {
            assert_eq!(
                classify_write_error(&server("ERR", text)),
                Outcome::Fail,
                "{text}"
            );
        }
        assert_eq!(
            classify_write_error(&OpError::Io("timed out".into())),
            Outcome::Unknown
        );
        assert_eq!(
            classify_read_error(&server("TIMEOUT", "TIMEOUT ...")),
            Outcome::Fail
        );
        assert_eq!(
            classify_read_error(&OpError::Io("reset".into())),
            Outcome::Unknown
        );
    }
}
