//! The benchmark report: what was run, and per phase the throughput, latency percentiles per
//! operation kind, errors by kind and CPU time. Serialisable for `--json`.

use crate::generator::Distribution;
use crate::workload::OpMix;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency and counts for one operation kind, over the measured window. Latencies are in
/// microseconds, from the request being queued to its (last) reply being parsed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpReport {
    /// Operations that succeeded (reads of absent keys included).
    pub ops: u64,
    /// Operations that failed (server errors, timeouts, I/O, corrupt values).
    pub errors: u64,
    /// Successful reads that found no value.
    pub not_found: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest latency seen.
    pub max_us: u64,
}

impl OpReport {
    pub(crate) fn from_histogram(h: &Histogram<u64>, errors: u64, not_found: u64) -> Self {
        OpReport {
            ops: h.len(),
            errors,
            not_found,
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One phase (`load` or `run`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseReport {
    /// Measured wall time: from the end of the warm-up to the last reply.
    pub elapsed_s: f64,
    /// Successful operations in the measured window.
    pub ops: u64,
    /// `ops / elapsed_s`.
    pub ops_per_s: f64,
    /// Failed operations in the measured window.
    pub errors: u64,
    /// Failures by kind: `server:<first word of the error>`, `corrupt`, `timeout`, `io`,
    /// `closed`, `protocol`, `connect`, `unexpected_reply`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Reads that found no value (expected without `--load`; after it, a lost write).
    pub not_found: u64,
    /// Per operation kind, by YCSB name.
    pub operations: BTreeMap<String, OpReport>,
    /// Operations completed during the warm-up and excluded from everything above.
    pub warmup_ops: u64,
    /// CPU seconds (user + system) the benchmark process used in the measured window.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s / elapsed_s`: cores the client kept busy.
    pub client_cores_busy: Option<f64>,
    /// `ops / client_cpu_s`.
    pub ops_per_client_core_s: Option<f64>,
    /// CPU seconds the `--server-pid` processes used in the measured window.
    pub server_cpu_s: Option<f64>,
    /// `ops / server_cpu_s`: operations per server core-second.
    pub ops_per_server_core_s: Option<f64>,
    /// Successes and failures per host (which node a failure came through).
    pub by_host: BTreeMap<String, HostReport>,
    /// Replies per whole second since the phase started, warm-up included: shows stalls
    /// and recoveries (a node killed, hints replaying) that an average hides.
    pub timeline: Vec<TimelinePoint>,
}

/// One second of a phase.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct TimelinePoint {
    /// Seconds since the phase started (this point covers `second..second + 1`).
    pub second: u64,
    /// Replies handled in that second, failures included.
    pub replies: u64,
    /// Operations that failed in that second.
    pub failed: u64,
}

/// One host's share of a phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HostReport {
    /// Connections to it.
    pub connections: usize,
    /// Successful operations through it.
    pub ops: u64,
    /// Failed operations through it.
    pub errors: u64,
}

/// Everything `hearsay bench` measured, with the settings that produced it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Servers the connections went to.
    pub hosts: Vec<String>,
    /// The workload's name (`a`, `b`, `c`, `f`, `custom`).
    pub workload: String,
    /// The operation proportions used.
    pub mix: OpMix,
    /// Key choice.
    pub distribution: Distribution,
    /// Keys in the data set.
    pub record_count: u64,
    /// Bytes per value.
    pub value_size_bytes: usize,
    /// Connections.
    pub concurrency: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// The level sent with `CONSISTENCY`, if any.
    pub consistency: Option<String>,
    /// The seed that replays the key and operation choice.
    pub seed: u64,
    /// Warm-up seconds excluded from the run figures.
    pub warmup_s: f64,
    /// Target ops/s of an open-loop run (`--rate`); `None` for closed loop.
    pub rate: Option<f64>,
    /// Stopped early by Ctrl-C: the figures cover only what ran.
    pub interrupted: bool,
    /// The `--load` phase, if run.
    pub load: Option<PhaseReport>,
    /// The measured run.
    pub run: PhaseReport,
    /// Whether `render` gives JSON (from `--json`).
    #[serde(skip)]
    pub json_output: bool,
}

impl BenchReport {
    /// The report as `--json` asked: pretty JSON, or a table for people.
    pub fn render(&self) -> String {
        if self.json_output {
            self.to_json()
        } else {
            self.to_text()
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"report not serialisable: {e}\"}}"))
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let m = &self.mix;
        let _ = writeln!(
            s,
            "hearsay bench: workload {} (read {:.2}, update {:.2}, insert {:.2}, rmw {:.2}), \
             {} keys over {} records, {}-byte values",
            self.workload,
            m.read,
            m.update,
            m.insert,
            m.read_modify_write,
            format!("{:?}", self.distribution).to_lowercase(),
            self.record_count,
            self.value_size_bytes
        );
        let _ = writeln!(
            s,
            "  hosts {} | {} connections x pipeline {} | consistency {} | seed {}",
            self.hosts.join(","),
            self.concurrency,
            self.pipeline,
            self.consistency.as_deref().unwrap_or("(server default)"),
            self.seed
        );
        if let Some(rate) = self.rate {
            let _ = writeln!(
                s,
                "  open loop at {rate:.0} ops/s: latencies timed from each operation's schedule"
            );
        }
        if let Some(load) = &self.load {
            render_phase(&mut s, "load", load);
        }
        if self.warmup_s > 0.0 {
            let _ = writeln!(
                s,
                "  warm-up {:.1} s excluded ({} ops)",
                self.warmup_s, self.run.warmup_ops
            );
        }
        render_phase(&mut s, "run", &self.run);
        if self.interrupted {
            let _ = writeln!(s, "  (interrupted by Ctrl-C: figures cover only what ran)");
        }
        s
    }
}

fn render_phase(s: &mut String, name: &str, p: &PhaseReport) {
    let _ = writeln!(
        s,
        "{name}: {:.2} s, {} ops, {:.0} ops/s, {} errors, {} not found",
        p.elapsed_s, p.ops, p.ops_per_s, p.errors, p.not_found
    );
    let _ = writeln!(
        s,
        "  {:<18} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "op",
        "ops",
        "errors",
        "not_found",
        "mean_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "p99.9_us",
        "max_us"
    );
    for (op, r) in &p.operations {
        let _ = writeln!(
            s,
            "  {:<18} {:>10} {:>8} {:>9} {:>8.0} {:>8} {:>8} {:>8} {:>9} {:>9}",
            op,
            r.ops,
            r.errors,
            r.not_found,
            r.mean_us,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us
        );
    }
    if let (Some(cpu), Some(cores), Some(per_core)) =
        (p.client_cpu_s, p.client_cores_busy, p.ops_per_client_core_s)
    {
        let _ = writeln!(
            s,
            "  client CPU {cpu:.2} s ({cores:.2} cores busy): {per_core:.0} ops per client core-second"
        );
    }
    if let (Some(cpu), Some(per_core)) = (p.server_cpu_s, p.ops_per_server_core_s) {
        let _ = writeln!(
            s,
            "  server CPU {cpu:.2} s: {per_core:.0} ops per server core-second"
        );
    }
    if let (Some(min), Some(max)) = (
        p.timeline.iter().map(|t| t.replies).min(),
        p.timeline.iter().map(|t| t.replies).max(),
    ) && p.timeline.len() > 1
    {
        let _ = writeln!(
            s,
            "  per second (warm-up included): min {min}, max {max} replies over {} s",
            p.timeline.len()
        );
    }
    if p.by_host.len() > 1 {
        let hosts: Vec<String> = p
            .by_host
            .iter()
            .map(|(h, r)| format!("{h} {} ok / {} failed", r.ops, r.errors))
            .collect();
        let _ = writeln!(s, "  by host: {}", hosts.join(", "));
    }
    if !p.errors_by_kind.is_empty() {
        let kinds: Vec<String> = p
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "  errors: {}", kinds.join(", "));
    }
}
