//! The scenarios (TESTING.md's B1–B6 and the restart-safety regressions), the context they
//! run in, and the end-of-run audit they share.
//!
//! A scenario is a function of a [`Ctx`]: it takes every random choice from `ctx.rng`
//! (seeded, printed at the start), records operations and faults in `ctx.history`, and
//! puts its figures and checks into `ctx.report`. An `Err` is a harness-level failure (the
//! cluster did not form, a node did not restart) and fails the scenario with its message.

mod b1;
mod b2;
mod b3;
mod b4;
mod b5;
mod b6;
mod restart;
mod skew;

pub use b6::forge_gossip;

use crate::checkers::{self, Check, Counts, Guards};
use crate::history::{History, OpKind, Outcome};
use crate::node::{Cluster, ClusterOptions, FORM_TIMEOUT};
use crate::replicas;
use crate::report::Report;
use crate::workload::{self, WorkloadSpec};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keyspace every workload uses.
pub const KEYSPACE: &str = "default";
/// P5's bound: replicas agree within this long after the last heal (TESTING.md B1).
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
/// How long scenarios that only report convergence wait for it: anti-entropy repair is not
/// built, so replicas a write missed without a hint never agree, and waiting the full
/// bound for that would cost each run a minute.
pub const CONVERGE_REPORT_WITHIN: Duration = Duration::from_secs(15);
/// Hints drain within this long after the last heal (TESTING.md B4 says 30 s for one
/// partitioned node; a run with many faults gets the convergence bound).
pub const HINTS_WITHIN: Duration = Duration::from_secs(60);
/// Between convergence snapshots: a full scan of every node costs a few hundred ms of
/// node CPU at tens of thousands of keys, so polling faster would slow what it measures.
const CONVERGE_POLL: Duration = Duration::from_secs(1);
/// Parallel clients of the final read at ALL (tens of thousands of keys).
const ALL_READ_THREADS: usize = 4;
/// Attempts per key of the final read at ALL before it counts as failed (a replica that
/// just restarted may still be in RPC backoff).
const ALL_READ_ATTEMPTS: usize = 3;
/// Quiet time at the end of a run before the workload stops: successes in a quiet window
/// are what the quiet-window guard counts.
pub const QUIET_TAIL: Duration = Duration::from_secs(5);

/// Options from the command line, shared by every scenario of a run or suite.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub nodes: usize,
    /// Overrides the scenario's own duration (B1, B2, B4 and the soak).
    pub duration: Option<Duration>,
    /// Overrides the scenario's minimum of acknowledged writes.
    pub min_acked: Option<usize>,
    /// Overrides the number of restart cycles (restart-under-load).
    pub restarts: Option<usize>,
    pub bin: PathBuf,
    pub loopback: bool,
    /// Keep the nodes' data directories of passing scenarios (failing ones are kept).
    pub keep_data: bool,
    /// The short CI variants (durations and minimums sized for ≤ 10 minutes in all).
    pub ci: bool,
    /// Pause between each worker's operations (`ZERO`: as fast as the cluster answers).
    pub think: Duration,
    /// `--set TABLE.KEY=VALUE`: node configuration keys set in every cluster of the run,
    /// after the scenario's own (so they win).
    pub config_overrides: Vec<crate::node::ConfigOverride>,
}

/// What a scenario runs with.
#[derive(Debug)]
pub struct Ctx {
    pub seed: u64,
    pub rng: StdRng,
    pub dir: PathBuf,
    pub history: Arc<History>,
    pub opts: RunOptions,
    pub report: Report,
}

impl Ctx {
    /// A random duration in `[lo, hi)` milliseconds, from the run's RNG.
    pub fn random_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..hi))
    }

    /// Whether this run can inject network faults (root, and not `--loopback`): scenarios
    /// that need them skip before starting a cluster.
    pub fn network_faults_possible(&self) -> bool {
        crate::util::is_root() && !self.opts.loopback
    }

    /// The cluster options every scenario starts from.
    pub fn cluster_options(&self) -> ClusterOptions {
        ClusterOptions {
            nodes: self.opts.nodes,
            rf: 3.min(self.opts.nodes),
            sync_mode: "periodic".into(),
            extra_toml: String::new(),
            overrides: self.opts.config_overrides.clone(),
            bin: self.opts.bin.clone(),
            loopback: self.opts.loopback,
            env: BTreeMap::new(),
            tmpfs_bytes: BTreeMap::new(),
        }
    }

    /// Starts a cluster in this scenario's directory.
    pub fn start_cluster(&mut self, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let dir = self.dir.clone();
        self.start_cluster_in(opts, &dir)
    }

    /// Starts a cluster in `dir` (a scenario that runs several clusters, one after the
    /// other, gives each its own directory: node data, logs, `node.toml`).
    pub fn start_cluster_in(
        &mut self,
        opts: ClusterOptions,
        dir: &Path,
    ) -> anyhow::Result<Cluster> {
        let t = Instant::now();
        let c = Cluster::start(opts, dir).context("starting the cluster")?;
        self.history.note("cluster formed");
        self.report.lines.push(format!(
            "cluster: {} nodes ({}), formed in {:.1} s",
            c.len(),
            match c.topo.mode {
                crate::topology::Mode::Netns => "network namespaces",
                crate::topology::Mode::Loopback => "loopback, no network faults",
            },
            t.elapsed().as_secs_f64()
        ));
        Ok(c)
    }

    /// The standard workload: QUORUM unique-key writers, registers, readers, spread over
    /// every node.
    pub fn workload_spec(&self, cluster: &Cluster) -> WorkloadSpec {
        WorkloadSpec {
            addrs: cluster.nodes.iter().map(|n| n.client).collect(),
            unique_writers: 3,
            write_level: "QUORUM".into(),
            registers_per_writer: 4,
            register_writers: 2,
            register_readers: 2,
            unique_readers: 1,
            read_level: "QUORUM".into(),
            think: self.opts.think,
            seed: self.seed,
            tag: String::new(),
        }
    }

    /// Sleeps `d`, failing early if a node died on its own meanwhile (its log tail says
    /// why). Spacing of the fault schedule, not synchronisation.
    pub fn hold(&mut self, cluster: &mut Cluster, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            for n in &mut cluster.nodes {
                if let Some(st) = n.exited() {
                    let msg = format!(
                        "node {} exited on its own ({st}) at {:.1} s\n{}",
                        n.name,
                        self.history.now_ns() as f64 / 1e9,
                        n.log_tail()
                    );
                    self.history.note(&msg);
                    anyhow::bail!(msg);
                }
            }
            std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
        }
        Ok(())
    }
}

/// Waits until the workload has `n` acknowledged writes (warm-up), or `timeout`.
pub fn wait_acked(w: &workload::Workload, n: u64, timeout: Duration) -> anyhow::Result<()> {
    crate::util::poll("the workload's first acknowledged writes", timeout, || {
        let have = w
            .progress
            .acked_writes
            .load(std::sync::atomic::Ordering::Relaxed);
        if have >= n {
            Ok(())
        } else {
            Err(format!("{have} of {n} acknowledged"))
        }
    })
}

/// Ends every fault: heals partitions, resumes paused nodes, restarts dead ones, ends the
/// faults in the history. Returns when the last fault ended: now if one was still active,
/// else the end the history recorded last (convergence is timed from there).
pub fn end_faults(ctx: &mut Ctx, cluster: &mut Cluster) -> anyhow::Result<Instant> {
    let active = ctx.history.faults().iter().any(|f| f.end_ns.is_none())
        || cluster.nodes.iter().any(|n| n.paused || !n.is_running());
    let last_end = ctx.history.last_fault_end_ns();
    cluster.topo.heal()?;
    for n in &mut cluster.nodes {
        if n.paused {
            n.resume()?;
        }
    }
    for i in 0..cluster.len() {
        if !cluster.nodes[i].is_running() {
            cluster.restart(i)?;
        }
    }
    ctx.history.end_all_faults();
    ctx.history.note("all faults ended");
    Ok(match (active, last_end) {
        (false, Some(ns)) => ctx.history.instant_of(ns),
        _ => Instant::now(),
    })
}

/// How the end-of-run audit judges a run.
#[derive(Clone, Copy, Debug)]
pub struct Audit {
    /// When the last fault ended (convergence is timed from here).
    pub last_heal: Instant,
    /// Whether convergence within `converge_within` is a check (else a reported figure).
    pub require_convergence: bool,
    /// How long after the last heal replicas may take to agree (the snapshot the loss
    /// checker reads is taken when they agree or this passes).
    pub converge_within: Duration,
    pub hints_within: Duration,
    pub guards: Guards,
}

/// The end-of-run audit, with the workload stopped and every fault ended: the cluster
/// re-forms, hints drain, replicas converge (or the bound passes), then the checkers run
/// on the history and on each replica's own data, and last every acknowledged unique key
/// is read once at ALL (after the replica check, so its repairs cannot hide a gap).
pub fn audit(ctx: &mut Ctx, cluster: &mut Cluster, a: Audit) -> anyhow::Result<()> {
    cluster
        .wait_formed(FORM_TIMEOUT)
        .context("the cluster did not re-form after the faults ended")?;
    ctx.report.lines.push(format!(
        "re-formed {:.1} s after the last fault ended",
        a.last_heal.elapsed().as_secs_f64()
    ));
    // Hints.
    let mut hints = Check::new("hints-drained");
    match cluster.wait_hints_drained(a.hints_within.saturating_sub(a.last_heal.elapsed())) {
        Ok(_) => {
            hints.summary = format!(
                "drained {:.1} s after the last heal (bound {} s)",
                a.last_heal.elapsed().as_secs_f64(),
                a.hints_within.as_secs()
            )
        }
        Err(e) => {
            hints.violation(format!("{e:#}"));
            hints.summary = format!("not drained within {} s", a.hints_within.as_secs());
        }
    }
    ctx.report.checks.push(hints);

    // Placement, and whether every node computes the same one.
    let placement = replicas::placement(cluster, 0, KEYSPACE)?;
    let mut ring = Check::new("ring-agreement");
    for i in 1..cluster.len() {
        match replicas::placement(cluster, i, KEYSPACE) {
            Ok(p) if p == placement => {}
            Ok(_) => ring.violation(format!("n{i}'s RING differs from n0's")),
            Err(e) => ring.violation(format!("RING on n{i}: {e:#}")),
        }
    }
    ring.summary = format!(
        "{} vnode ranges; every node's RING compared",
        placement.ranges.len()
    );
    ctx.report.checks.push(ring);

    // Convergence, replica by replica.
    let deadline = a.last_heal + a.converge_within;
    let (snap, mut conv) = loop {
        let snap = replicas::snapshot(cluster, KEYSPACE);
        let c = checkers::converged(&snap, &placement);
        if (c.passed() && snap.unreachable.is_empty()) || Instant::now() >= deadline {
            break (snap, c);
        }
        std::thread::sleep(CONVERGE_POLL);
    };
    if !snap.unreachable.is_empty() {
        conv.violation(format!("nodes not scanned: {:?}", snap.unreachable));
    }
    let took = a.last_heal.elapsed();
    if conv.passed() {
        conv.summary = format!(
            "{}; converged {:.1} s after the last heal (bound {} s)",
            conv.summary,
            took.as_secs_f64(),
            a.converge_within.as_secs()
        );
    } else {
        conv.summary = format!(
            "{}; NOT converged {:.1} s after the last heal",
            conv.summary,
            took.as_secs_f64()
        );
    }
    if a.require_convergence {
        ctx.report.checks.push(conv);
    } else {
        ctx.report.lines.push(format!(
            "convergence (not required here): {} diverged keys; {}",
            conv.violations, conv.summary
        ));
        for d in conv.details.iter().take(5) {
            ctx.report.lines.push(format!("    {d}"));
        }
    }

    // The history and the replicas.
    let ops = ctx.history.ops();
    let (lost, missing, summary) = checkers::lost(&ops, &snap, &placement);
    let stale = checkers::stale(&ops);
    ctx.report.lines.push(format!(
        "acknowledged unique writes {}, unknown {}, lost {}, under-replicated {}, stale QUORUM reads {}",
        summary.acked, summary.unknown, summary.lost, summary.under_replicated, stale.violations
    ));
    ctx.report.checks.push(lost);
    ctx.report.checks.push(missing);
    ctx.report.checks.push(stale);
    ctx.report.checks.push(checkers::backwards(&ops));
    ctx.report.checks.push(checkers::corrupt(&ops));

    // Last: every acknowledged unique key once at ALL.
    let acked: Vec<(String, String)> = {
        let mut m = BTreeMap::new();
        for o in ops.iter().filter(|o| {
            o.kind == OpKind::Write && o.outcome == Outcome::Ok && !workload::is_register(&o.key)
        }) {
            if let Some(v) = &o.value {
                m.insert(o.key.clone(), v.clone());
            }
        }
        m.into_iter().collect()
    };
    ctx.report.checks.push(read_all_at_all(cluster, &acked));
    let faults = ctx.history.faults();
    ctx.report
        .checks
        .extend(checkers::guards(&ops, &faults, &a.guards));
    Ok(())
}

/// Reads every `(key, value)` once at ALL (several clients in parallel, each key through
/// some node), counting keys that come back nil or with another value, or cannot be read.
pub fn read_all_at_all(cluster: &Cluster, acked: &[(String, String)]) -> Check {
    let addrs: Vec<std::net::SocketAddr> = cluster.nodes.iter().map(|n| n.client).collect();
    let results: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ALL_READ_THREADS)
            .map(|t| {
                let addrs = addrs.clone();
                s.spawn(move || {
                    let mut client = workload::Client::new(addrs.clone(), "ALL");
                    let mut bad = Vec::new();
                    for (i, (key, value)) in
                        acked.iter().enumerate().skip(t).step_by(ALL_READ_THREADS)
                    {
                        let mut last = None;
                        for attempt in 0..ALL_READ_ATTEMPTS {
                            let node = (i + attempt) % addrs.len();
                            match client.get(node, key) {
                                Ok(v) => {
                                    last = Some(Ok(v));
                                    break;
                                }
                                Err(e) => {
                                    last = Some(Err(e));
                                    std::thread::sleep(Duration::from_millis(200));
                                }
                            }
                        }
                        match last {
                            Some(Ok(Some(v))) if &v == value => {}
                            Some(Ok(Some(v))) => {
                                bad.push(format!("{key}: ALL read {v:?}, wrote {value:?}"))
                            }
                            Some(Ok(None)) => bad.push(format!("{key}: ALL read nil")),
                            Some(Err(e)) => {
                                bad.push(format!("{key}: ALL read failed: {}", e.text()))
                            }
                            None => {}
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["reader thread panicked".into()])
            })
            .collect()
    });
    let mut c = Check::new("all-read");
    for b in results.into_iter().flatten() {
        c.violation(b);
    }
    c.summary = format!("{} acknowledged unique keys read once at ALL", acked.len());
    c
}

/// A scenario: its name, what it checks, and its function.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

/// Every scenario, in the order `suite full` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "isolated-restart",
        about: "kill -9 a non-seed node, cut it off from its peers, restart it: QUORUM must not succeed alone nor read nil",
        run: restart::isolated_restart,
    },
    Scenario {
        name: "restart-under-load",
        about: "10 kill -9/restart cycles under QUORUM load, probing each restarted node from its first accepted connection",
        run: restart::restart_under_load,
    },
    Scenario {
        name: "ring-stable-on-restart",
        about: "a restarted node never disappears from any peer's RING",
        run: restart::ring_stable_on_restart,
    },
    Scenario {
        name: "b1-mixed",
        about: "B1: a partition (isolate, 2|3, bridge, one-way) or kill -9 + restart every ~10 s",
        run: b1::mixed,
    },
    Scenario {
        name: "b2-pause-skew",
        about: "B2: SIGSTOP 1-8 s of random nodes; wall clocks skewed ±2 s on some nodes",
        run: b2::pause_skew,
    },
    Scenario {
        name: "skew-writes",
        about: "issue 17: one node's wall clock ±120 s / ±2 s / ±100 ms while writes alternate through it and a healthy node: it refuses beyond max_clock_offset_ms, is named sick, no acknowledged write lost",
        run: skew::skew_writes,
    },
    Scenario {
        name: "b3-eio",
        about: "B3 (i): fsync EIO on one node: it stops acknowledging and says why; others go on",
        run: b3::eio,
    },
    Scenario {
        name: "b3-disk-full",
        about: "B3 (ii): one node's disk full: a clear error through it, writes accepted again once space returns",
        run: b3::disk_full,
    },
    Scenario {
        name: "b3-bitflip",
        about: "B3 (iii): bit flips in a stopped node's SSTables: detected by checksum, values served from replicas",
        run: b3::bitflip,
    },
    Scenario {
        name: "b4-hints",
        about: "B4: a node partitioned away while writing at ONE and ANY; hints drain ≤ 30 s; hints never count toward QUORUM",
        run: b4::hints,
    },
    Scenario {
        name: "b5-wiped",
        about: "B5: a node's data wiped (disk replaced) under QUORUM load: it says needs_repair and serves no stale reads, anti-entropy restores it within 60 s moving ≤ 2× the missing bytes",
        run: b5::wiped,
    },
    Scenario {
        name: "b6-hostile",
        about: "B6: malformed RESP, huge lengths, floods, slowloris, forged gossip: no crash, errors ≤ 1 s, RSS +≤ 32 MiB, membership unchanged",
        run: b6::hostile,
    },
];

/// Scenarios `suite ci` runs (≤ 10 minutes on 2 cores).
pub const CI_SUITE: &[&str] = &[
    "b1-mixed",
    "b3-eio",
    "b3-disk-full",
    "b5-wiped",
    "b6-hostile",
];

/// Aliases: names that run several scenarios.
pub fn expand(name: &str) -> Vec<&'static str> {
    match name {
        "b3-disk" => vec!["b3-eio", "b3-disk-full", "b3-bitflip"],
        _ => SCENARIOS
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.name)
            .collect(),
    }
}

/// Runs one scenario in `base/<name>-<seed>` and returns its report (printed as it ends).
pub fn run_one(name: &str, seed: u64, opts: &RunOptions, base: &Path) -> Report {
    let dir = base.join(format!("{name}-{seed}"));
    let mut report = Report::new(name, seed, dir.clone());
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == name) else {
        report.errors.push(format!("no scenario named {name}"));
        return report;
    };
    println!("=== {name} (seed {seed}) ===\n{}", scenario.about);
    let start = Instant::now();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report
            .errors
            .push(format!("cannot create {}: {e}", dir.display()));
        return report;
    }
    let history = match History::new(Some(&dir.join("history.jsonl"))) {
        Ok(h) => h,
        Err(e) => {
            report
                .errors
                .push(format!("cannot create the history: {e:#}"));
            return report;
        }
    };
    let mut ctx = Ctx {
        seed,
        rng: StdRng::seed_from_u64(seed),
        dir: dir.clone(),
        history: history.clone(),
        opts: opts.clone(),
        report,
    };
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (scenario.run)(&mut ctx)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ctx.report.errors.push(format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            ctx.report.errors.push(format!("panicked: {msg}"));
        }
    }
    history.flush();
    let mut report = ctx.report;
    report.counts = Counts::of(&history.ops(), &history.faults());
    report.elapsed = start.elapsed();
    if report.passed() && !opts.keep_data {
        // Node data directories are large and only interesting when something failed;
        // logs and the history stay.
        for i in 0..opts.nodes {
            let d = dir.join(format!("n{i}"));
            if std::fs::remove_dir_all(&d).is_err() {
                // A tmpfs mount point cannot be removed; its content went with the unmount.
            }
        }
    }
    print!("{}", report.render());
    report
}
