//! A deterministic simulation of Hearsay's data path (scenario A of the fault suite): a
//! cluster of nodes in one thread, on a simulated network and simulated clocks, seeded.
//!
//! What is real and what is modelled:
//! - **Real**: the consistency core the coordinators run (`hearsay_cluster::quorum`: the
//!   required counts from the keyspace's RF, `WriteTracker`, `ReadPlan`, `ReadResolver`,
//!   blocking `ReadRepair` with spares), the conflict rule (`hearsay_storage::Cell`), the
//!   HLC (`hearsay_types::Hlc` over each node's skewed clock), the ring and placement
//!   (`hearsay_ring`), the repair core (`hearsay_cluster::repair`: trees and the sync
//!   plan), and the fault suite's checkers and value format (`hearsay_faults`).
//! - **Modelled**: the node's async driver around them (fan-out, deadlines, hints and their
//!   replay, superseded retries, read repair rounds), each replica's engine (a map with the
//!   conflict rule; writes are durable once applied, as with `batch` sync), gossip's
//!   liveness (a peer is counted down after it has been crashed or unreachable for
//!   [`DETECT_MS`]), and the network (per-message latency, loss, partitions, refused
//!   connections to a crashed node).
//!
//! A run: workers issue unique-key QUORUM writes and register writes (one writer per key,
//! increasing values) and QUORUM reads through random nodes while faults come and go
//! (crash/restart, partitions, message loss, clock offsets within the bound); then every
//! fault heals, hints drain, one anti-entropy repair runs over every range, and the
//! checkers judge the history and every replica's contents: lost, replicas-missing, stale,
//! backwards, corrupt, converged. Everything derives from the seed: a failing seed replays.
//!
//! [`Bugs`] plant faults in the modelled driver to show that the checkers catch them.

use hearsay_cluster::quorum::{
    FailureReason, ReadPlan, ReadRepair, ReadResolver, ReadStatus, RepairStatus, WriteStatus,
    WriteTracker, cell_digest,
};
use hearsay_cluster::repair::{Snapshot, plan_sync};
use hearsay_faults::checkers::{self, Check};
use hearsay_faults::history::{Op, OpKind, Outcome};
use hearsay_faults::replicas::{CellInfo, Placement as CheckPlacement, Snapshot as Contents};
use hearsay_faults::workload::make_value;
use hearsay_ring::{Member, Placement, ReplicationStrategy, Ring, TokenRange, token_of};
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{Clock, ConsistencyLevel, Hlc, NodeId, Timestamp, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long a peer must be crashed or unreachable before a node counts it down (gossip's
/// phi detector and monitors, at a few rounds).
pub const DETECT_MS: u64 = 2_000;
/// Coordinator deadline for a write or a read phase, in simulated ms.
pub const TIMEOUT_MS: u64 = 1_000;
/// Hint replay period, in simulated ms.
const HINT_REPLAY_MS: u64 = 300;
/// Most times a write is re-sent above a newer version (as the node does).
const MAX_SUPERSEDED_RETRIES: u32 = 3;
/// Simulated wall-clock origin (µs since the epoch), so timestamps look like real ones.
const EPOCH_US: u64 = 1_800_000_000_000_000;

/// Bugs planted in the modelled driver, each of which some checker must catch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A replica acknowledges one mutation in five without applying it.
    pub ack_without_apply: bool,
    /// Reads never repair stale replicas.
    pub skip_read_repair: bool,
    /// Coordinators store no hints.
    pub drop_hints: bool,
    /// A stored hint counts as an acknowledgement at every level (a sloppy quorum).
    pub hints_count_for_quorum: bool,
}

/// A run's shape.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub nodes: usize,
    pub rf: usize,
    /// Simulated ms of workload with faults.
    pub duration_ms: u64,
    /// Concurrent clients: unique-key writers, register writers, readers.
    pub writers: usize,
    pub register_writers: usize,
    pub readers: usize,
    /// Message loss probability while faults run.
    pub loss: f64,
    /// Largest clock offset of a node, in ms (within the node's maximum offset).
    pub max_clock_offset_ms: i64,
    /// Crash/restart and partition faults while the workload runs.
    pub faults: bool,
    /// Repair every range at the end (P5 needs it for writes whose hint died with a crashed
    /// coordinator).
    pub final_repair: bool,
    pub bugs: Bugs,
}

impl Config {
    /// The default scenario for `seed`.
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            nodes: 5,
            rf: 3,
            duration_ms: 20_000,
            writers: 3,
            register_writers: 2,
            readers: 3,
            loss: 0.02,
            max_clock_offset_ms: 100,
            faults: true,
            final_repair: true,
            bugs: Bugs::default(),
        }
    }
}

/// A node's clock: simulated time plus the node's offset.
#[derive(Debug)]
struct SimClock {
    now_us: Arc<AtomicU64>,
    offset_us: AtomicI64,
}

impl Clock for SimClock {
    fn wall_micros(&self) -> u64 {
        (EPOCH_US + self.now_us.load(Relaxed)).saturating_add_signed(self.offset_us.load(Relaxed))
    }
    fn monotonic(&self) -> Instant {
        // Nothing in the simulated driver reads monotonic time.
        Instant::now()
    }
}

/// A stored hint: a cell for a replica that missed it.
#[derive(Clone, Debug)]
struct Hint {
    target: usize,
    key: CellKey,
    cell: Cell,
}

#[derive(Debug)]
struct SimNode {
    up: bool,
    store: BTreeMap<CellKey, Cell>,
    hints: Vec<Hint>,
    clock: Arc<SimClock>,
    hlc: Hlc,
    /// Mutations received, for the `ack_without_apply` bug.
    mutations: u64,
}

/// What travels between nodes.
#[derive(Clone, Debug)]
enum Msg {
    Mutate {
        op: u64,
        phase: u32,
        cells: Vec<(CellKey, Cell)>,
        report_superseded: bool,
    },
    MutateAck {
        op: u64,
        phase: u32,
        superseded_newest: Option<Timestamp>,
    },
    Read {
        op: u64,
        key: CellKey,
        digest: bool,
        full_phase: bool,
    },
    ReadReply {
        op: u64,
        cell: Option<Cell>,
        digest: Option<u64>,
        full_phase: bool,
    },
    /// A connection to a crashed node is refused at once.
    Refused {
        op: u64,
        phase: u32,
        full_phase: bool,
    },
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Msg,
        ts: Timestamp,
    },
    Deadline {
        op: u64,
        phase: u32,
    },
    ClientTurn {
        worker: usize,
    },
    HintReplay,
    Fault,
    Heal {
        fault: u64,
    },
    Restart {
        node: usize,
    },
}

/// A write in flight at its coordinator.
#[derive(Debug)]
struct WriteOp {
    history: Op,
    coordinator: usize,
    tracker: WriteTracker,
    cells: Vec<(CellKey, Cell)>,
    natural: Vec<NodeId>,
    retries: u32,
    superseded_newest: Option<Timestamp>,
    phase: u32,
    answered: bool,
    worker: usize,
}

/// A read in flight at its coordinator.
#[derive(Debug)]
struct ReadOp {
    history: Op,
    coordinator: usize,
    key: CellKey,
    resolver: ReadResolver<Cell>,
    repair: Option<(ReadRepair, Option<Cell>)>,
    full_phase: bool,
    phase: u32,
    worker: usize,
}

#[derive(Debug)]
enum InFlight {
    Write(WriteOp),
    Read(ReadOp),
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome2 {
    pub seed: u64,
    pub checks: Vec<Check>,
    pub acked_writes: usize,
    pub reads_ok: usize,
    pub faults: usize,
    pub messages: u64,
}

impl Outcome2 {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The failing checks' names.
    pub fn failed(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name.clone())
            .collect()
    }
}

/// The simulation.
pub struct Sim {
    cfg: Config,
    rng: StdRng,
    now_ms: u64,
    now_us: Arc<AtomicU64>,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    payloads: BTreeMap<usize, Event>,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    placement: Placement,
    strategy: ReplicationStrategy,
    /// `cut[a][b]`: messages from a to b are dropped (a partition).
    cut: Vec<Vec<bool>>,
    /// Since when (ms) each node has been unreachable from each other one, or crashed.
    down_since: Vec<Vec<Option<u64>>>,
    in_flight: BTreeMap<u64, InFlight>,
    next_op: u64,
    history: Vec<Op>,
    faults: usize,
    active_faults: BTreeMap<u64, String>,
    worker_seq: BTreeMap<usize, u64>,
    acked_keys: Vec<String>,
    messages: u64,
    stop_workers: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("seed", &self.cfg.seed).finish()
    }
}

fn level_name(l: ConsistencyLevel) -> String {
    l.name().to_string()
}

impl Sim {
    /// A cluster for `cfg`.
    pub fn new(cfg: Config) -> Sim {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let now_us = Arc::new(AtomicU64::new(0));
        let ids: Vec<NodeId> = (0..cfg.nodes).map(|i| NodeId(i as u128 + 1)).collect();
        let members: Vec<Member> = ids
            .iter()
            .map(|id| Member {
                id: *id,
                dc: "dc1".into(),
                rack: "rack1".into(),
                weight: 1,
                tokens: (0..8).map(|_| Token(rng.random())).collect(),
            })
            .collect();
        let ring = Ring::new(members).expect("a valid ring");
        let strategy = ReplicationStrategy::simple(cfg.rf);
        let placement = Placement::new(&ring, &strategy);
        let nodes = (0..cfg.nodes)
            .map(|_| {
                let offset_ms =
                    rng.random_range(-cfg.max_clock_offset_ms..=cfg.max_clock_offset_ms);
                let clock = Arc::new(SimClock {
                    now_us: now_us.clone(),
                    offset_us: AtomicI64::new(offset_ms * 1_000),
                });
                SimNode {
                    up: true,
                    store: BTreeMap::new(),
                    hints: Vec::new(),
                    hlc: Hlc::new(clock.clone()),
                    clock,
                    mutations: 0,
                }
            })
            .collect();
        let n = cfg.nodes;
        Sim {
            rng,
            now_ms: 0,
            now_us,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            nodes,
            ids,
            placement,
            strategy,
            cut: vec![vec![false; n]; n],
            down_since: vec![vec![None; n]; n],
            in_flight: BTreeMap::new(),
            next_op: 1,
            history: Vec::new(),
            faults: 0,
            active_faults: BTreeMap::new(),
            worker_seq: BTreeMap::new(),
            acked_keys: Vec::new(),
            messages: 0,
            stop_workers: false,
            cfg,
        }
    }

    fn schedule(&mut self, at_ms: u64, e: Event) {
        self.seq += 1;
        let slot = self.seq as usize;
        self.payloads.insert(slot, e);
        self.events.push(Reverse((at_ms, self.seq, slot)));
    }

    fn idx(&self, id: NodeId) -> usize {
        (id.0 - 1) as usize
    }

    /// Whether `from` counts `to` alive (gossip's view): up and reachable, or not for long.
    fn counts_alive(&self, from: usize, to: usize) -> bool {
        from == to
            || self.down_since[from][to].is_none_or(|s| self.now_ms.saturating_sub(s) < DETECT_MS)
    }

    fn alive_view(&self, from: usize) -> BTreeSet<NodeId> {
        (0..self.nodes.len())
            .filter(|i| self.counts_alive(from, *i))
            .map(|i| self.ids[i])
            .collect()
    }

    fn refresh_reachability(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                let reachable = self.nodes[b].up && !self.cut[a][b] && !self.cut[b][a];
                if reachable {
                    self.down_since[a][b] = None;
                } else if self.down_since[a][b].is_none() {
                    self.down_since[a][b] = Some(self.now_ms);
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.messages += 1;
        let ts = self.nodes[from].hlc.now();
        if from == to {
            self.schedule(self.now_ms, Event::Deliver { from, to, msg, ts });
            return;
        }
        if self.cut[from][to] || (self.cfg.faults && self.rng.random_bool(self.cfg.loss)) {
            return;
        }
        if !self.nodes[to].up {
            // Connection refused: the sender learns at once.
            let refused = match msg {
                Msg::Mutate { op, phase, .. } => Some(Msg::Refused {
                    op,
                    phase,
                    full_phase: false,
                }),
                Msg::Read { op, full_phase, .. } => Some(Msg::Refused {
                    op,
                    phase: 0,
                    full_phase,
                }),
                _ => None,
            };
            if let Some(r) = refused {
                let at = self.now_ms + 1;
                self.schedule(
                    at,
                    Event::Deliver {
                        from: to,
                        to: from,
                        msg: r,
                        ts,
                    },
                );
            }
            return;
        }
        let latency = self.rng.random_range(1..=10);
        self.schedule(self.now_ms + latency, Event::Deliver { from, to, msg, ts });
    }

    /// Runs the scenario and judges it.
    pub fn run(mut self) -> Outcome2 {
        let workers = self.cfg.writers + self.cfg.register_writers + self.cfg.readers;
        for w in 0..workers {
            let at = self.rng.random_range(0..50);
            self.schedule(at, Event::ClientTurn { worker: w });
        }
        self.schedule(HINT_REPLAY_MS, Event::HintReplay);
        if self.cfg.faults {
            self.schedule(1_000, Event::Fault);
        }
        let end = self.cfg.duration_ms;
        self.run_until(end);
        // Heal everything, let the workload finish, hints drain.
        self.stop_workers = true;
        let ends: Vec<u64> = self.active_faults.keys().copied().collect();
        for f in ends {
            self.heal(f);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        self.cfg.loss = 0.0;
        let drain_by = self.now_ms + 30_000;
        while self.now_ms < drain_by
            && (!self.in_flight.is_empty() || self.nodes.iter().any(|n| !n.hints.is_empty()))
        {
            let t = self.now_ms + 100;
            self.run_until(t);
        }
        let hints_left: usize = self.nodes.iter().map(|n| n.hints.len()).sum();
        let mut checks = Vec::new();
        let mut hints = Check::new("hints-drained");
        if hints_left > 0 {
            hints.violation(format!("{hints_left} hints left 30 s after the last heal"));
        }
        checks.push(hints);
        if self.cfg.final_repair {
            self.repair_everything();
        }
        let (contents, place) = self.contents();
        let (lost, missing, _) = checkers::lost(&self.history, &contents, &place);
        checks.push(lost);
        checks.push(missing);
        checks.push(checkers::stale(&self.history));
        checks.push(checkers::backwards(&self.history));
        checks.push(checkers::corrupt(&self.history));
        if self.cfg.final_repair {
            checks.push(checkers::converged(&contents, &place));
        }
        let acked = self
            .history
            .iter()
            .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
            .count();
        let reads_ok = self
            .history
            .iter()
            .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok)
            .count();
        let mut guard = Check::new("guard-acked");
        if acked < 100 {
            guard.violation(format!("only {acked} acknowledged writes"));
        }
        checks.push(guard);
        Outcome2 {
            seed: self.cfg.seed,
            checks,
            acked_writes: acked,
            reads_ok,
            faults: self.faults,
            messages: self.messages,
        }
    }

    fn run_until(&mut self, end_ms: u64) {
        while let Some(Reverse((at, _, slot))) = self.events.peek().copied() {
            if at > end_ms {
                break;
            }
            self.events.pop();
            self.now_ms = at;
            self.now_us.store(at * 1_000, Relaxed);
            self.refresh_reachability();
            if let Some(e) = self.payloads.remove(&slot) {
                self.handle(e);
            }
        }
        self.now_ms = end_ms;
        self.now_us.store(end_ms * 1_000, Relaxed);
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, msg, ts } => {
                if !self.nodes[to].up {
                    return;
                }
                self.nodes[to].hlc.observe(ts);
                self.on_message(from, to, msg);
            }
            Event::Deadline { op, phase } => self.on_deadline(op, phase),
            Event::ClientTurn { worker } => self.client_turn(worker),
            Event::HintReplay => {
                self.replay_hints();
                self.schedule(self.now_ms + HINT_REPLAY_MS, Event::HintReplay);
            }
            Event::Fault => {
                if !self.stop_workers {
                    self.inject_fault();
                    let next = self.now_ms + self.rng.random_range(1_500..4_000);
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Heal { fault } => self.heal(fault),
            Event::Restart { node } => self.restart(node),
        }
    }

    // ---------------------------------------------------------------------------------
    // Faults

    fn inject_fault(&mut self) {
        let n = self.nodes.len();
        self.faults += 1;
        let id = self.faults as u64;
        match self.rng.random_range(0..3) {
            0 => {
                let victim = self.rng.random_range(0..n);
                if self.nodes[victim].up {
                    self.crash(victim);
                    let back = self.now_ms + self.rng.random_range(500..3_000);
                    self.schedule(back, Event::Restart { node: victim });
                }
            }
            1 => {
                // Isolate one node.
                let victim = self.rng.random_range(0..n);
                for o in 0..n {
                    if o != victim {
                        self.cut[victim][o] = true;
                        self.cut[o][victim] = true;
                    }
                }
                self.active_faults.insert(id, format!("isolate {victim}"));
                let heal = self.now_ms + self.rng.random_range(500..3_000);
                self.schedule(heal, Event::Heal { fault: id });
            }
            _ => {
                // A split: a random minority against the rest.
                let k = self.rng.random_range(1..=n / 2);
                let mut side: Vec<usize> = (0..n).collect();
                for i in 0..n {
                    let j = self.rng.random_range(i..n);
                    side.swap(i, j);
                }
                let minority: BTreeSet<usize> = side.into_iter().take(k).collect();
                for a in 0..n {
                    for b in 0..n {
                        if minority.contains(&a) != minority.contains(&b) {
                            self.cut[a][b] = true;
                        }
                    }
                }
                self.active_faults.insert(id, format!("split {minority:?}"));
                let heal = self.now_ms + self.rng.random_range(500..3_000);
                self.schedule(heal, Event::Heal { fault: id });
            }
        }
    }

    fn heal(&mut self, fault: u64) {
        if self.active_faults.remove(&fault).is_some() {
            // Partitions do not overlap in time in this model: heal all cuts.
            for row in &mut self.cut {
                row.iter_mut().for_each(|c| *c = false);
            }
        }
    }

    fn crash(&mut self, node: usize) {
        self.nodes[node].up = false;
        // Operations it coordinated end unknown for their clients (the connection closed).
        let ops: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| match f {
                InFlight::Write(w) => w.coordinator == node,
                InFlight::Read(r) => r.coordinator == node,
            })
            .map(|(id, _)| *id)
            .collect();
        for op in ops {
            if let Some(f) = self.in_flight.remove(&op) {
                match f {
                    InFlight::Write(w) => {
                        // An answered write's client has moved on already.
                        if !w.answered {
                            self.finish(
                                w.history,
                                Outcome::Unknown,
                                None,
                                Some("coordinator crashed"),
                            );
                            self.schedule_client(w.worker);
                        }
                    }
                    InFlight::Read(r) => {
                        self.finish(r.history, Outcome::Fail, None, Some("coordinator crashed"));
                        self.schedule_client(r.worker);
                    }
                }
            }
        }
    }

    fn restart(&mut self, node: usize) {
        if !self.nodes[node].up {
            self.nodes[node].up = true;
            // The HLC starts again from the clock and what it stores.
            let max = self.nodes[node]
                .store
                .values()
                .map(|c| c.timestamp)
                .max()
                .unwrap_or(Timestamp(0));
            let clock = self.nodes[node].clock.clone();
            self.nodes[node].hlc = Hlc::new(clock);
            self.nodes[node].hlc.observe(max);
        }
    }

    // ---------------------------------------------------------------------------------
    // Clients

    fn schedule_client(&mut self, worker: usize) {
        if !self.stop_workers {
            let at = self.now_ms + self.rng.random_range(1..20);
            self.schedule(at, Event::ClientTurn { worker });
        }
    }

    fn client_turn(&mut self, worker: usize) {
        if self.stop_workers {
            return;
        }
        let coordinator = self.rng.random_range(0..self.nodes.len());
        if !self.nodes[coordinator].up {
            // The client could not connect: nothing happened; it tries another node.
            self.schedule_client(worker);
            return;
        }
        let (w, rw) = (self.cfg.writers, self.cfg.register_writers);
        if worker < w {
            let seq = self.bump(worker);
            let key = format!("w:{worker}:{seq}");
            let value = make_value(&key, 1, &format!("{:x}", self.rng.random::<u32>()));
            self.start_write(worker, coordinator, key, value);
        } else if worker < w + rw {
            let seq = self.bump(worker);
            let key = format!("r:{worker}:{}", seq % 4);
            let value = make_value(&key, seq, "v");
            self.start_write(worker, coordinator, key, value);
        } else {
            let key = if self.rng.random_bool(0.5) && !self.acked_keys.is_empty() {
                let i = self.rng.random_range(0..self.acked_keys.len());
                self.acked_keys[i].clone()
            } else {
                let writer = w + self.rng.random_range(0..rw.max(1));
                format!("r:{writer}:{}", self.rng.random_range(0..4))
            };
            self.start_read(worker, coordinator, key);
        }
    }

    fn bump(&mut self, worker: usize) -> u64 {
        let s = self.worker_seq.entry(worker).or_insert(0);
        *s += 1;
        *s
    }

    fn new_op(
        &mut self,
        worker: usize,
        kind: OpKind,
        key: String,
        value: Option<String>,
        node: usize,
    ) -> Op {
        let id = self.next_op;
        self.next_op += 1;
        Op {
            id,
            worker: format!("sim{worker}"),
            kind,
            key,
            value,
            level: level_name(ConsistencyLevel::Quorum),
            node,
            invoke_ns: self.now_ms * 1_000_000,
            complete_ns: 0,
            outcome: Outcome::Unknown,
            error: None,
        }
    }

    fn finish(&mut self, mut op: Op, outcome: Outcome, value: Option<String>, error: Option<&str>) {
        op.complete_ns = self.now_ms * 1_000_000 + 1;
        op.outcome = outcome;
        if op.kind == OpKind::Read {
            op.value = value;
        }
        op.error = error.map(str::to_string);
        if op.kind == OpKind::Write && outcome == Outcome::Ok && op.key.starts_with("w:") {
            self.acked_keys.push(op.key.clone());
        }
        self.history.push(op);
    }

    fn cell_key(key: &str) -> CellKey {
        CellKey::new(
            token_of(key.as_bytes()),
            bytes::Bytes::copy_from_slice(key.as_bytes()),
        )
    }

    fn natural(&self, key: &CellKey) -> Vec<NodeId> {
        self.placement.replicas(key.token).to_vec()
    }

    // ---------------------------------------------------------------------------------
    // Writes

    fn start_write(&mut self, worker: usize, coordinator: usize, key: String, value: String) {
        let history = self.new_op(
            worker,
            OpKind::Write,
            key.clone(),
            Some(value.clone()),
            coordinator,
        );
        let ck = Self::cell_key(&key);
        let ts = self.nodes[coordinator].hlc.now();
        let cell = Cell::value(bytes::Bytes::from(value.into_bytes()), ts);
        let natural = self.natural(&ck);
        let op = history.id;
        let alive = self.alive_view(coordinator);
        let tracker = WriteTracker::new(
            ConsistencyLevel::Quorum,
            &natural,
            &[],
            &self.strategy,
            None,
            &alive,
        );
        if let Err(e) = tracker.check_availability() {
            self.finish(history, Outcome::Fail, None, Some(&e.to_string()));
            self.schedule_client(worker);
            return;
        }
        let w = WriteOp {
            history,
            coordinator,
            tracker,
            cells: vec![(ck, cell)],
            natural,
            retries: 0,
            superseded_newest: None,
            phase: 0,
            answered: false,
            worker,
        };
        self.in_flight.insert(op, InFlight::Write(w));
        self.send_write(op);
    }

    fn send_write(&mut self, op: u64) {
        let Some(InFlight::Write(w)) = self.in_flight.get(&op) else {
            return;
        };
        let (coordinator, phase) = (w.coordinator, w.phase);
        let cells = w.cells.clone();
        let targets: Vec<usize> = w.tracker.send_to().iter().map(|n| self.idx(*n)).collect();
        for t in targets {
            let unreachable =
                !self.nodes[t].up || self.cut[coordinator][t] || self.cut[t][coordinator];
            if self.cfg.bugs.hints_count_for_quorum && unreachable {
                // Planted: a sloppy quorum — a hint for an unreachable replica counts as its
                // acknowledgement.
                let id = self.ids[t];
                for (k, c) in &cells {
                    self.nodes[coordinator].hints.push(Hint {
                        target: t,
                        key: k.clone(),
                        cell: c.clone(),
                    });
                }
                if let Some(InFlight::Write(w)) = self.in_flight.get_mut(&op) {
                    w.tracker.on_ack(id);
                }
                continue;
            }
            self.send(
                coordinator,
                t,
                Msg::Mutate {
                    op,
                    phase,
                    cells: cells.clone(),
                    report_superseded: true,
                },
            );
        }
        self.schedule(self.now_ms + TIMEOUT_MS, Event::Deadline { op, phase });
        self.settle_write(op);
    }

    /// Stores hints the tracker asks for, then answers the client if the level is decided.
    fn settle_write(&mut self, op: u64) {
        let Some(InFlight::Write(mut w)) = self.in_flight.remove(&op) else {
            return;
        };
        for n in w.tracker.needs_hint() {
            let t = self.idx(n);
            if self.cfg.bugs.drop_hints || t == w.coordinator {
                w.tracker.on_hint_dropped(n);
                continue;
            }
            for (k, c) in &w.cells {
                self.nodes[w.coordinator].hints.push(Hint {
                    target: t,
                    key: k.clone(),
                    cell: c.clone(),
                });
            }
            w.tracker.on_hint_stored(n);
        }
        match w.tracker.status() {
            WriteStatus::Pending => {}
            WriteStatus::Satisfied if !w.answered => {
                if let Some(newest) = w.superseded_newest
                    && w.retries < MAX_SUPERSEDED_RETRIES
                {
                    // A counted replica held a newer version: re-send above it.
                    let coordinator = w.coordinator;
                    self.nodes[coordinator].hlc.observe(newest);
                    let ts = self.nodes[coordinator].hlc.now();
                    for (_, c) in w.cells.iter_mut() {
                        c.timestamp = ts;
                    }
                    let alive = self.alive_view(coordinator);
                    w.tracker = WriteTracker::new(
                        ConsistencyLevel::Quorum,
                        &w.natural,
                        &[],
                        &self.strategy,
                        None,
                        &alive,
                    );
                    w.retries += 1;
                    w.superseded_newest = None;
                    w.phase += 1;
                    if let Err(e) = w.tracker.check_availability() {
                        let h = w.history.clone();
                        self.finish(h, Outcome::Unknown, None, Some(&e.to_string()));
                        self.schedule_client(w.worker);
                        return;
                    }
                    self.in_flight.insert(op, InFlight::Write(w));
                    self.send_write(op);
                    return;
                }
                w.answered = true;
                let h = w.history.clone();
                self.finish(h, Outcome::Ok, None, None);
                self.schedule_client(w.worker);
            }
            WriteStatus::Satisfied => {}
            WriteStatus::Failed(e) => {
                if !w.answered {
                    w.answered = true;
                    let h = w.history.clone();
                    // Some replicas may have applied it.
                    self.finish(h, Outcome::Unknown, None, Some(&e.to_string()));
                    self.schedule_client(w.worker);
                }
            }
        }
        // Kept until every replica answered or was hinted (the deadline settles the rest).
        if w.answered && w.tracker.send_to().is_empty() {
            return;
        }
        self.in_flight.insert(op, InFlight::Write(w));
    }

    // ---------------------------------------------------------------------------------
    // Reads

    fn start_read(&mut self, worker: usize, coordinator: usize, key: String) {
        let history = self.new_op(worker, OpKind::Read, key.clone(), None, coordinator);
        let ck = Self::cell_key(&key);
        let natural = self.natural(&ck);
        // Closest first: the coordinator itself when it is a replica.
        let me = self.ids[coordinator];
        let mut order = natural.clone();
        order.sort_by_key(|n| *n != me);
        let alive = self.alive_view(coordinator);
        let plan = match ReadPlan::new(
            ConsistencyLevel::Quorum,
            &order,
            &self.strategy,
            None,
            &alive,
        ) {
            Ok(p) => p,
            Err(e) => {
                self.finish(history, Outcome::Fail, None, Some(&e.to_string()));
                self.schedule_client(worker);
                return;
            }
        };
        let op = history.id;
        let data = plan.data_replica();
        let digests: Vec<NodeId> = plan.digest_replicas().to_vec();
        let r = ReadOp {
            history,
            coordinator,
            key: ck.clone(),
            resolver: ReadResolver::new(plan),
            repair: None,
            full_phase: false,
            phase: 0,
            worker,
        };
        self.in_flight.insert(op, InFlight::Read(r));
        if let Some(d) = data {
            let t = self.idx(d);
            self.send(
                coordinator,
                t,
                Msg::Read {
                    op,
                    key: ck.clone(),
                    digest: false,
                    full_phase: false,
                },
            );
        }
        for d in digests {
            let t = self.idx(d);
            self.send(
                coordinator,
                t,
                Msg::Read {
                    op,
                    key: ck.clone(),
                    digest: true,
                    full_phase: false,
                },
            );
        }
        self.schedule(self.now_ms + TIMEOUT_MS, Event::Deadline { op, phase: 0 });
    }

    fn settle_read(&mut self, op: u64) {
        let Some(InFlight::Read(mut r)) = self.in_flight.remove(&op) else {
            return;
        };
        if let Some((repair, newest)) = &r.repair {
            match repair.status() {
                RepairStatus::Pending => {
                    self.in_flight.insert(op, InFlight::Read(r));
                }
                RepairStatus::Satisfied => {
                    let v = visible(newest.as_ref());
                    let h = r.history.clone();
                    self.finish(h, Outcome::Ok, v, None);
                    self.schedule_client(r.worker);
                }
                RepairStatus::Failed(e) => {
                    let h = r.history.clone();
                    self.finish(h, Outcome::Fail, None, Some(&e.to_string()));
                    self.schedule_client(r.worker);
                }
            }
            return;
        }
        match r.resolver.status() {
            ReadStatus::Pending => {
                self.in_flight.insert(op, InFlight::Read(r));
            }
            ReadStatus::Match(cell) => {
                let v = visible(cell.as_ref());
                let h = r.history.clone();
                self.finish(h, Outcome::Ok, v, None);
                self.schedule_client(r.worker);
            }
            ReadStatus::Mismatch => {
                r.full_phase = true;
                r.phase += 1;
                let phase = r.phase;
                let targets = r.resolver.begin_full_read();
                let (c, key) = (r.coordinator, r.key.clone());
                self.in_flight.insert(op, InFlight::Read(r));
                for n in targets {
                    let t = self.idx(n);
                    self.send(
                        c,
                        t,
                        Msg::Read {
                            op,
                            key: key.clone(),
                            digest: false,
                            full_phase: true,
                        },
                    );
                }
                self.schedule(self.now_ms + TIMEOUT_MS, Event::Deadline { op, phase });
            }
            ReadStatus::Resolved(res) => {
                if res.newest.is_none() || res.stale.is_empty() || self.cfg.bugs.skip_read_repair {
                    let v = visible(res.newest.as_ref());
                    let h = r.history.clone();
                    self.finish(h, Outcome::Ok, v, None);
                    self.schedule_client(r.worker);
                    return;
                }
                let repair = r.resolver.read_repair(&res);
                let newest = res.newest.clone();
                let (c, key) = (r.coordinator, r.key.clone());
                let stale = repair.send_to();
                r.phase += 1;
                let phase = r.phase;
                r.repair = Some((repair, newest.clone()));
                self.in_flight.insert(op, InFlight::Read(r));
                if let Some(cell) = newest {
                    for n in stale {
                        let t = self.idx(n);
                        self.send(
                            c,
                            t,
                            Msg::Mutate {
                                op,
                                phase,
                                cells: vec![(key.clone(), cell.clone())],
                                report_superseded: false,
                            },
                        );
                    }
                }
                self.schedule(self.now_ms + TIMEOUT_MS, Event::Deadline { op, phase });
            }
            ReadStatus::Failed(e) => {
                let h = r.history.clone();
                self.finish(h, Outcome::Fail, None, Some(&e.to_string()));
                self.schedule_client(r.worker);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Messages

    fn on_message(&mut self, from: usize, to: usize, msg: Msg) {
        match msg {
            Msg::Mutate {
                op,
                phase,
                cells,
                report_superseded,
            } => {
                let node = &mut self.nodes[to];
                node.mutations += 1;
                let drop = self.cfg.bugs.ack_without_apply && node.mutations.is_multiple_of(5);
                let mut newest: Option<Timestamp> = None;
                for (k, c) in cells {
                    node.hlc.observe(c.timestamp);
                    match node.store.get(&k) {
                        Some(stored) if stored.reconcile_cmp(&c) == std::cmp::Ordering::Greater => {
                            if report_superseded {
                                newest = Some(
                                    newest.map_or(stored.timestamp, |n| n.max(stored.timestamp)),
                                );
                            }
                        }
                        _ => {
                            if !drop {
                                node.store.insert(k, c);
                            }
                        }
                    }
                }
                self.send(
                    to,
                    from,
                    Msg::MutateAck {
                        op,
                        phase,
                        superseded_newest: newest,
                    },
                );
            }
            Msg::MutateAck {
                op,
                phase,
                superseded_newest,
            } => self.on_mutate_ack(op, phase, self.ids[from], superseded_newest),
            Msg::Read {
                op,
                key,
                digest,
                full_phase,
            } => {
                let cell = self.nodes[to].store.get(&key).cloned();
                let (cell, d) = if digest {
                    (None, Some(cell_digest(cell.as_ref())))
                } else {
                    (cell, None)
                };
                self.send(
                    to,
                    from,
                    Msg::ReadReply {
                        op,
                        cell,
                        digest: d,
                        full_phase,
                    },
                );
            }
            Msg::ReadReply {
                op,
                cell,
                digest,
                full_phase,
            } => {
                let node = self.ids[from];
                if let Some(InFlight::Read(r)) = self.in_flight.get_mut(&op) {
                    if r.repair.is_some() || r.full_phase != full_phase {
                        return;
                    }
                    match digest {
                        Some(d) => {
                            r.resolver.on_digest(node, d);
                        }
                        None => {
                            r.resolver.on_data(node, cell);
                        }
                    }
                    self.settle_read(op);
                }
            }
            Msg::Refused {
                op,
                phase,
                full_phase,
            } => {
                let node = self.ids[from];
                match self.in_flight.get_mut(&op) {
                    Some(InFlight::Write(w)) => {
                        if w.phase == phase {
                            w.tracker
                                .on_failure(node, FailureReason::Error("refused".into()));
                        }
                        self.settle_write(op);
                    }
                    Some(InFlight::Read(r)) => {
                        let (c, key) = (r.coordinator, r.key.clone());
                        if let Some((repair, newest)) = &mut r.repair {
                            let rphase = r.phase;
                            repair.on_failure(node, FailureReason::Error("refused".into()));
                            if let Some(spare) = repair.take_spare()
                                && let Some(newest) = newest.clone()
                            {
                                let t = self.idx(spare);
                                self.send(
                                    c,
                                    t,
                                    Msg::Mutate {
                                        op,
                                        phase: rphase,
                                        cells: vec![(key, newest)],
                                        report_superseded: false,
                                    },
                                );
                            }
                        } else if r.full_phase == full_phase
                            && r.resolver
                                .on_failure(node, FailureReason::Error("refused".into()))
                            && let Some(spare) = r.resolver.take_spare()
                        {
                            let t = self.idx(spare);
                            self.send(
                                c,
                                t,
                                Msg::Read {
                                    op,
                                    key,
                                    digest: false,
                                    full_phase,
                                },
                            );
                        }
                        self.settle_read(op);
                    }
                    None => {}
                }
            }
        }
    }

    fn on_mutate_ack(&mut self, op: u64, phase: u32, node: NodeId, superseded: Option<Timestamp>) {
        match self.in_flight.get_mut(&op) {
            Some(InFlight::Write(w)) => {
                if w.phase != phase {
                    return; // an answer to an earlier attempt at this write
                }
                let counted = w.tracker.on_ack(node);
                if counted
                    && !w.answered
                    && let Some(s) = superseded
                {
                    w.superseded_newest = Some(w.superseded_newest.map_or(s, |n| n.max(s)));
                }
                self.settle_write(op);
            }
            Some(InFlight::Read(r)) => {
                if r.phase == phase
                    && let Some((repair, _)) = &mut r.repair
                {
                    repair.on_ack(node);
                }
                self.settle_read(op);
            }
            None => {}
        }
    }

    fn on_deadline(&mut self, op: u64, phase: u32) {
        match self.in_flight.get_mut(&op) {
            Some(InFlight::Write(w)) if w.phase == phase => {
                w.tracker.on_timeout();
                self.settle_write(op);
                // After the deadline every replica is answered or hinted: done.
                if let Some(InFlight::Write(w)) = self.in_flight.get(&op)
                    && w.answered
                {
                    self.in_flight.remove(&op);
                }
            }
            Some(InFlight::Read(r)) if r.phase == phase => {
                match &mut r.repair {
                    Some((repair, _)) => repair.on_timeout(),
                    None => r.resolver.on_timeout(),
                }
                self.settle_read(op);
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // Hints and repair

    fn replay_hints(&mut self) {
        for c in 0..self.nodes.len() {
            if !self.nodes[c].up || self.nodes[c].hints.is_empty() {
                continue;
            }
            let hints = std::mem::take(&mut self.nodes[c].hints);
            let (ready, wait): (Vec<Hint>, Vec<Hint>) = hints.into_iter().partition(|h| {
                self.nodes[h.target].up && !self.cut[c][h.target] && !self.cut[h.target][c]
            });
            self.nodes[c].hints = wait;
            for h in ready {
                // Delivered directly: a reachable, up target applies it (the node's replay
                // acknowledges a batch only after the target applied it).
                let node = &mut self.nodes[h.target];
                node.hlc.observe(h.cell.timestamp);
                match node.store.get(&h.key) {
                    Some(s) if s.reconcile_cmp(&h.cell) != std::cmp::Ordering::Less => {}
                    _ => {
                        node.store.insert(h.key.clone(), h.cell.clone());
                    }
                }
                self.messages += 1;
            }
        }
    }

    /// One anti-entropy pass over every vnode range, with the real sync plan.
    fn repair_everything(&mut self) {
        let snap = Snapshot {
            now_ms: u64::MAX / 2,
            max_timestamp: Timestamp(u64::MAX),
            purge_before_ms: 0,
        };
        let ranges: Vec<(TokenRange, Vec<usize>)> = self
            .placement
            .ranges()
            .map(|(r, reps)| (r, reps.iter().map(|n| self.idx(*n)).collect()))
            .collect();
        for (range, reps) in ranges {
            let held: Vec<Vec<(CellKey, Cell)>> = reps
                .iter()
                .map(|r| {
                    self.nodes[*r]
                        .store
                        .iter()
                        .filter(|(k, _)| range.contains(k.token))
                        .map(|(k, c)| (k.clone(), c.clone()))
                        .collect()
                })
                .collect();
            let plan = plan_sync(&held, &snap);
            for (r, cells) in reps.iter().zip(plan) {
                for (k, c) in cells {
                    self.nodes[*r].store.insert(k, c);
                }
            }
        }
    }

    /// Every replica's contents in the checkers' shape.
    fn contents(&self) -> (Contents, CheckPlacement) {
        let mut cells: BTreeMap<String, BTreeMap<usize, CellInfo>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, c) in &n.store {
                let key = String::from_utf8_lossy(&k.key).into_owned();
                let value = c.value.clone().unwrap_or_default();
                cells.entry(key).or_default().insert(
                    i,
                    CellInfo {
                        timestamp: c.timestamp.0,
                        tombstone: c.value.is_none(),
                        value_len: value.len() as u64,
                        value_crc32c: crc32(&value),
                        replicas: self.natural(k).iter().map(|n| self.idx(*n)).collect(),
                    },
                );
            }
        }
        let ranges = self
            .placement
            .ranges()
            .map(|(r, reps)| (r.end.0, reps.iter().map(|n| self.idx(*n)).collect()))
            .collect();
        (
            Contents {
                cells,
                unreachable: BTreeMap::new(),
            },
            CheckPlacement { ranges },
        )
    }
}

fn visible(cell: Option<&Cell>) -> Option<String> {
    cell.and_then(|c| c.value.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn crc32(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// Runs `seeds` seeds of `base`, returning every outcome (failures carry their seed).
pub fn run_seeds(base: &Config, seeds: impl IntoIterator<Item = u64>) -> Vec<Outcome2> {
    seeds
        .into_iter()
        .map(|s| {
            let mut cfg = base.clone();
            cfg.seed = s;
            Sim::new(cfg).run()
        })
        .collect()
}

/// How long a simulated run may take to compute (a guard for the tests, not a model time).
pub const WALL_BUDGET: Duration = Duration::from_secs(600);
