//! The history of a run: every client operation (invoke time, completion time, outcome,
//! the node it went through) and every fault (start and end), in memory for the checkers
//! and as JSON lines in the run directory.
//!
//! Times are nanoseconds on the monotonic clock since the history was created, so they
//! order events across the harness's threads whatever the nodes' (possibly skewed) wall
//! clocks say.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What became of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged (a write) or answered (a read).
    Ok,
    /// Known not to have happened (a write refused before anything was sent, a client that
    /// could not connect) or a read that answered an error.
    Fail,
    /// May or may not have happened: a timeout, an I/O error after sending, a coordinator
    /// timeout or failure after replicas were asked. Checkers allow both.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Write,
    Read,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    /// Which client did it (`w3`, `rw1`, `rr0`, `probe2`, ...): per-reader checks use it.
    pub worker: String,
    pub kind: OpKind,
    pub key: String,
    /// A write: the value written. A read: the value returned (`None`: nil, or no answer).
    pub value: Option<String>,
    /// Consistency level (`QUORUM`, `ONE`, ...).
    pub level: String,
    /// Index of the node the client sent it to.
    pub node: usize,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    /// The error text, for failed and unknown operations.
    pub error: Option<String>,
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub id: u64,
    /// `partition-isolate`, `partition-split`, `partition-bridge`, `partition-oneway`,
    /// `kill`, `pause`, `skew`, `disk-full`, `fsync-eio`, `bitflip`, `hostile`, ...
    pub kind: String,
    pub detail: String,
    pub nodes: Vec<usize>,
    pub start_ns: u64,
    /// `None` while the fault is active.
    pub end_ns: Option<u64>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Op(&'a Op),
    FaultStart(&'a Fault),
    FaultEnd { id: u64, end_ns: u64 },
    Note { at_ns: u64, text: &'a str },
}

#[derive(Debug)]
struct Inner {
    ops: Vec<Op>,
    faults: Vec<Fault>,
    next_id: u64,
    out: Option<BufWriter<File>>,
}

/// The run's history; shared by every worker (`Arc`).
#[derive(Debug)]
pub struct History {
    t0: Instant,
    inner: Mutex<Inner>,
}

impl History {
    /// A history, also written as JSON lines to `path` when given.
    pub fn new(path: Option<&Path>) -> anyhow::Result<Arc<History>> {
        let out = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Arc::new(History {
            t0: Instant::now(),
            inner: Mutex::new(Inner {
                ops: Vec::new(),
                faults: Vec::new(),
                next_id: 0,
                out,
            }),
        }))
    }

    /// Nanoseconds since the history began.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// The instant `ns` nanoseconds after the history began.
    pub fn instant_of(&self, ns: u64) -> Instant {
        self.t0 + std::time::Duration::from_nanos(ns)
    }

    /// When the most recent fault ended, if any did.
    pub fn last_fault_end_ns(&self) -> Option<u64> {
        self.lock().faults.iter().filter_map(|f| f.end_ns).max()
    }

    /// Nanoseconds of `t` since the history began (0 for earlier instants).
    pub fn ns_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_nanos() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A worker that panicked mid-record leaves consistent data (pushes are atomic).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a completed operation (its id is assigned here).
    pub fn record(&self, mut op: Op) {
        let mut g = self.lock();
        op.id = g.next_id;
        g.next_id += 1;
        if let Some(out) = g.out.as_mut() {
            let _ = serde_json::to_writer(&mut *out, &Line::Op(&op));
            let _ = out.write_all(b"\n");
        }
        g.ops.push(op);
    }

    /// Records the start of a fault; returns its id for [`History::fault_end`].
    pub fn fault_start(&self, kind: &str, detail: &str, nodes: &[usize]) -> u64 {
        let at = self.now_ns();
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        let f = Fault {
            id,
            kind: kind.to_string(),
            detail: detail.to_string(),
            nodes: nodes.to_vec(),
            start_ns: at,
            end_ns: None,
        };
        if let Some(out) = g.out.as_mut() {
            let _ = serde_json::to_writer(&mut *out, &Line::FaultStart(&f));
            let _ = out.write_all(b"\n");
        }
        g.faults.push(f);
        id
    }

    /// Records the end of fault `id`.
    pub fn fault_end(&self, id: u64) {
        let at = self.now_ns();
        let mut g = self.lock();
        if let Some(f) = g.faults.iter_mut().find(|f| f.id == id) {
            f.end_ns = Some(at);
        }
        if let Some(out) = g.out.as_mut() {
            let _ = serde_json::to_writer(&mut *out, &Line::FaultEnd { id, end_ns: at });
            let _ = out.write_all(b"\n");
        }
    }

    /// Ends every fault still active (the scenario healed everything at once).
    pub fn end_all_faults(&self) {
        let open: Vec<u64> = self
            .lock()
            .faults
            .iter()
            .filter(|f| f.end_ns.is_none())
            .map(|f| f.id)
            .collect();
        for id in open {
            self.fault_end(id);
        }
    }

    /// A free-form line in the JSON history (what the scenario did, for a reader).
    pub fn note(&self, text: &str) {
        let at = self.now_ns();
        let mut g = self.lock();
        if let Some(out) = g.out.as_mut() {
            let _ = serde_json::to_writer(&mut *out, &Line::Note { at_ns: at, text });
            let _ = out.write_all(b"\n");
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Flushes the JSON lines to disk.
    pub fn flush(&self) {
        if let Some(out) = self.lock().out.as_mut() {
            let _ = out.flush();
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.flush();
    }
}
