//! B3: disk faults on one node.
//!
//! - `b3-eio`: its fsyncs fail with EIO (an `LD_PRELOAD` shim). The engine must poison
//!   itself: stop acknowledging writes, and say why (errors name the fsync failure);
//!   QUORUM writes through the other nodes go on. Off again and restarted, nothing
//!   acknowledged is missing.
//! - `b3-disk-full`: its data directory (a small tmpfs) fills up. Writes through it get a
//!   clear error, and are accepted again once space returns.
//! - `b3-bitflip`: bits flipped in its SSTables while it is stopped. The corruption is
//!   detected by checksum on restart (log or error), never served, and every acknowledged
//!   value is still read from the other replicas.

use super::{Audit, Ctx, KEYSPACE, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::{self, Check, Guards};
use crate::faults::{self, EioShim};
use crate::health;
use crate::history::{OpKind, Outcome};
use crate::node::{Cluster, START_TIMEOUT};
use crate::replicas::{self, Placement};
use crate::util::poll;
use crate::workload::{self, Client, Workload, make_value, payload};
use rand::Rng;
use std::time::{Duration, Instant};

/// How long the node may take to notice a failed fsync: its commit log syncs every
/// `sync_interval_ms` (1 s), flushes and the hint store (100 ms) sooner.
const POISON_WITHIN: Duration = Duration::from_secs(5);
/// How long EIO stays on.
const EIO_HOLD: Duration = Duration::from_secs(8);
/// Writes at ALL sent through the faulty node (keys it is a replica of), to see its errors.
const PROBE_WRITES: usize = 20;
/// Writes through the other nodes must keep succeeding while one node's disk is faulty:
/// at least this share of them (the rest may meet the faulty node as coordinator-local
/// replica and time out)...
const OTHERS_MIN_OK_SHARE: f64 = 0.9;
/// ... and at least this many.
const OTHERS_MIN_OK: usize = 50;
/// Writes acknowledged after poisoning that the faulty node must not hold (a sample).
const REFUSAL_SAMPLE: usize = 50;
/// Size of the faulty node's tmpfs in `b3-disk-full`: room for the commit log and a few
/// SSTables of a short run, small enough to fill in a moment.
const DISK_BYTES: u64 = 64 << 20;
/// How long writes through a full node may keep succeeding before its error must show
/// (buffers and the current memtable may absorb a little).
const FULL_ERROR_WITHIN: Duration = Duration::from_secs(15);
/// How long after space returns the node must accept writes again.
const RECOVER_WITHIN: Duration = Duration::from_secs(15);
/// Bits flipped in the stopped node's SSTables.
const FLIPS: usize = 16;
/// An SSTable's footer (64 bytes) is left alone so the flips land in checksummed blocks
/// the node reads for data, not only in the part it checks at open.
const SSTABLE_FOOTER_BYTES: u64 = 64;
/// Writing phase of `b3-bitflip` before the node is stopped.
const BITFLIP_WRITES: Duration = Duration::from_secs(10);
/// From the poisoning (or full disk) being visible in `/v1/stats` to `/v1/health` saying so
/// (issue 17's acceptance: within 1 s; the handler reads the engine's state directly).
const HEALTH_WITHIN: Duration = Duration::from_secs(1);
/// From the faulty node's health changing to every node's `MEMBERS` showing it sick (`S…`):
/// the node publishes its health after each 500 ms probe round (`CLOCK_PROBE_INTERVAL_MS`,
/// plus up to 1 s of clock pings), gossip spreads it in 200 ms rounds (five nodes: a few
/// rounds); the rest is margin for two shared cores under the workload.
const SICK_GOSSIP_WITHIN: Duration = Duration::from_secs(5);
/// QUORUM writes, then QUORUM reads of them, through the healthy nodes while one node is
/// poisoned: every one must succeed (issue 17: the healthy nodes route around it).
const HEALTHY_OPS: usize = 500;
/// Hints for the poisoned node drain within this long after its restart (TESTING.md B4's
/// bound for one node that missed writes).
const EIO_HINTS_WITHIN: Duration = Duration::from_secs(30);
/// A SIGTERM'd node with a full disk exits within this: `shutdown_timeout_ms` (5 s) to drain
/// clients, then a flush that fails at once for lack of space; margin for two shared cores.
const CLEAN_STOP_WITHIN: Duration = Duration::from_secs(15);
/// Acknowledged keys read through the node restarted on its full disk.
const FULL_START_READS: usize = 100;
/// How long the node restarted on its full disk may take to coordinate a first read (it
/// must hear from a peer first: one or two gossip rounds).
const FULL_START_READY_WITHIN: Duration = Duration::from_secs(10);
/// After the first write through the node on its full disk is refused, this many more must
/// be refused too, each naming the full disk (it stays out of the way).
const FULL_REFUSALS: usize = 10;

/// After writes through the node are accepted again, the workload runs this long before the
/// node's last restart: the recovered node takes writes under load, and the restart is not a
/// crash loop (two starts in one second share a generation when the first could not save it:
/// see docs/testing.md).
const RECOVERED_HOLD: Duration = Duration::from_secs(3);
/// Acknowledged writes each B3 case needs.
const MIN_ACKED: usize = 1_000;
/// Quiet successes each B3 case needs.
const MIN_QUIET_OK: usize = 100;

/// Words a disk error names, in the node's messages (`poisoned`, the OS's
/// "Input/output error", "No space left on device").
fn names_any(text: &str, words: &[&str]) -> bool {
    let t = text.to_ascii_lowercase();
    words.iter().any(|w| t.contains(w))
}

/// A fresh key (with `prefix`) whose natural replicas include `node`.
fn key_on(placement: &Placement, node: usize, prefix: &str, from: &mut usize) -> String {
    loop {
        let key = format!("{prefix}:{from}");
        *from += 1;
        if placement.replicas(&key).contains(&node) {
            return key;
        }
    }
}

/// Writes through nodes other than `faulty` invoked in `[from_ns, to_ns]`: checks that
/// enough were acknowledged.
fn others_keep_writing(ctx: &Ctx, faulty: usize, from_ns: u64, to_ns: u64) -> Check {
    let ops = ctx.history.ops();
    let window: Vec<_> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.node != faulty)
        .filter(|o| o.invoke_ns >= from_ns && o.invoke_ns <= to_ns)
        .collect();
    let ok = window.iter().filter(|o| o.outcome == Outcome::Ok).count();
    let mut c = Check::new("others-keep-writing");
    c.summary = format!(
        "{ok} of {} writes through the other nodes acknowledged during the fault",
        window.len()
    );
    if ok < OTHERS_MIN_OK || (ok as f64) < OTHERS_MIN_OK_SHARE * window.len() as f64 {
        c.violation(format!(
            "only {ok} of {} writes through the healthy nodes were acknowledged (need ≥ {} % \
             and ≥ {OTHERS_MIN_OK})",
            window.len(),
            OTHERS_MIN_OK_SHARE * 100.0
        ));
    }
    c
}

/// Checks that `victim`'s `/v1/health` answers non-200 naming `code` (and `reason` in its
/// reasons) within [`HEALTH_WITHIN`], and that every node's `MEMBERS` shows it, and only
/// it, sick within [`SICK_GOSSIP_WITHIN`] after that.
fn says_sick(
    cluster: &Cluster,
    victim: usize,
    code: &str,
    reason: &str,
    addrs: &[std::net::SocketAddr],
) -> Check {
    let mut c = Check::new(&format!("{}-health", code.replace('_', "-")));
    let at = Instant::now();
    let h = poll(
        &format!("n{victim}'s /v1/health to say {code}"),
        HEALTH_WITHIN,
        || {
            let h = health::health(&cluster.nodes[victim]).map_err(|e| format!("{e:#}"))?;
            if h.status != 200 && h.has(code) && h.reasons.iter().any(|r| r.contains(reason)) {
                Ok(h)
            } else {
                Err(h.describe())
            }
        },
    );
    let health_in = at.elapsed();
    let h = match h {
        Ok(h) => h,
        Err(e) => {
            c.violation(format!("{e:#}"));
            c.summary = format!("n{victim}'s /v1/health did not say {code}");
            return c;
        }
    };
    let mut client = Client::new(addrs.to_vec(), "ONE");
    let at = Instant::now();
    let shown = poll(
        &format!("every node's MEMBERS to show n{victim} sick"),
        SICK_GOSSIP_WITHIN,
        || health::members_show_sick(cluster, &mut client, &[victim]),
    );
    if let Err(e) = &shown {
        c.violation(format!("{e:#}"));
    }
    c.summary = format!(
        "n{victim}'s /v1/health {} in {:.2} s (bound {} s): {:?}; {}",
        h.status,
        health_in.as_secs_f64(),
        HEALTH_WITHIN.as_secs(),
        h.reasons
            .iter()
            .find(|r| r.contains(reason))
            .cloned()
            .unwrap_or_default(),
        match shown {
            Ok(()) => format!(
                "S in every node's MEMBERS {:.1} s later (bound {} s), no other node S",
                at.elapsed().as_secs_f64(),
                SICK_GOSSIP_WITHIN.as_secs()
            ),
            Err(_) => "not S in every MEMBERS".to_string(),
        }
    );
    c
}

/// [`HEALTHY_OPS`] QUORUM writes of fresh keys that `victim` is a replica of, through the
/// other nodes in turn, then a QUORUM read of each through another of them: every one must
/// succeed (and the reads return what was written) while `victim` is sick.
fn healthy_nodes_serve(
    ctx: &mut Ctx,
    placement: &Placement,
    victim: usize,
    addrs: &[std::net::SocketAddr],
) -> Check {
    let h = ctx.history.clone();
    let others: Vec<usize> = (0..addrs.len()).filter(|i| *i != victim).collect();
    let mut q = Client::new(addrs.to_vec(), "QUORUM");
    let mut c = Check::new("healthy-nodes-serve");
    let mut next = 0;
    let mut written = Vec::new();
    let start = Instant::now();
    let (mut w_ok, mut r_ok) = (0, 0);
    for i in 0..HEALTHY_OPS {
        let key = key_on(placement, victim, "sick", &mut next);
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        let node = others[i % others.len()];
        match workload::recorded_set_err(&h, &mut q, "sick-q", node, &key, &value) {
            (Outcome::Ok, _) => w_ok += 1,
            (_, e) => c.violation(format!(
                "QUORUM write of {key} through n{node} failed: {}",
                e.unwrap_or_default()
            )),
        }
        written.push((key, value));
    }
    for (i, (key, value)) in written.iter().enumerate() {
        let node = others[(i + 1) % others.len()];
        match workload::recorded_get(&h, &mut q, "sick-q", node, key) {
            (Outcome::Ok, Some(v)) if &v == value => r_ok += 1,
            (Outcome::Ok, got) => c.violation(format!(
                "QUORUM read of {key} through n{node} answered {got:?}, wrote {value:?}"
            )),
            (_, _) => c.violation(format!("QUORUM read of {key} through n{node} failed")),
        }
    }
    c.summary = format!(
        "while n{victim} is sick: {w_ok} of {HEALTHY_OPS} QUORUM writes (keys it is a replica of) and {r_ok} of {HEALTHY_OPS} QUORUM reads of them through the other nodes succeeded, in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    c
}

/// `b3-eio`.
pub fn eio(ctx: &mut Ctx) -> anyhow::Result<()> {
    let shim = EioShim::build(&ctx.dir.join("shim"))?;
    let mut opts = ctx.cluster_options();
    let victim = ctx.rng.random_range(0..opts.nodes);
    let flag = ctx.dir.join(format!("eio-n{victim}.flag"));
    faults::eio_off(&flag)?;
    opts.env.insert(victim, shim.env(&flag));
    let mut cluster = ctx.start_cluster(opts)?;
    let h = ctx.history.clone();
    let spec = ctx.workload_spec(&cluster);
    let addrs = spec.addrs.clone();
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;
    ctx.hold(&mut cluster, Duration::from_secs(2))?;
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;

    let id = h.fault_start(
        "fsync-eio",
        &format!("fsync/fdatasync/sync_file_range/syncfs fail with EIO on n{victim}"),
        &[victim],
    );
    faults::eio_on(&flag)?;
    let on_ns = h.now_ns();
    let on = Instant::now();

    // The engine must notice and say why.
    let mut poisoned = Check::new("eio-poisoned");
    let reason = poll("the node's engine to poison itself", POISON_WITHIN, || {
        let v = cluster.nodes[victim]
            .stats()
            .map_err(|e| format!("{e:#}"))?;
        match v["storage"]["poisoned"].as_str() {
            Some(r) => Ok(r.to_string()),
            None => Err("storage.poisoned is null".into()),
        }
    });
    let poisoned_ns = h.now_ns();
    match &reason {
        Ok(r) => {
            poisoned.summary = format!(
                "poisoned {:.1} s after EIO: {r}",
                on.elapsed().as_secs_f64()
            );
            if !names_any(r, &["fsync", "sync", "input/output", "eio"]) {
                poisoned.violation(format!(
                    "the poison reason does not name the fsync failure: {r}"
                ));
            }
        }
        Err(e) => poisoned.violation(format!("{e:#}")),
    }
    ctx.report.checks.push(poisoned);
    if reason.is_ok() {
        let c = says_sick(
            &cluster,
            victim,
            "storage_poisoned",
            "storage poisoned",
            &addrs,
        );
        ctx.report.checks.push(c);
    }

    // Writes at ALL through the faulty node, of keys it holds: refused, naming the cause.
    let mut says_why = Check::new("eio-says-why");
    let mut all = Client::new(addrs.clone(), "ALL");
    let mut next = 0;
    let mut errors = Vec::new();
    for _ in 0..PROBE_WRITES {
        let key = key_on(&placement, victim, "eio", &mut next);
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        let (o, text) = workload::recorded_set_err(&h, &mut all, "eio-all", victim, &key, &value);
        match (o, text) {
            (Outcome::Ok, _) => says_why.violation(format!(
                "{key}: a write at ALL through n{victim} was acknowledged after its fsyncs \
                 started failing"
            )),
            (_, Some(t)) if !names_any(&t, &["poison", "fsync", "input/output", "eio"]) => {
                says_why.violation(format!("{key}: the error does not say why: {t}"))
            }
            (_, Some(t)) => errors.push(t),
            (_, None) => {}
        }
    }
    says_why.summary = format!(
        "{PROBE_WRITES} writes at ALL through n{victim}; e.g. {:?}",
        errors.first().cloned().unwrap_or_default()
    );
    ctx.report.checks.push(says_why);
    let serve = healthy_nodes_serve(ctx, &placement, victim, &addrs);
    ctx.report.checks.push(serve);
    // Those writes are hinted for the poisoned replica: the audit's hints-drained check
    // must have something to drain.
    let mut hinted = Check::new("eio-hinted");
    let pending: Vec<(usize, u64)> = (0..cluster.len())
        .filter(|i| *i != victim)
        .map(|i| (i, cluster.nodes[i].hints_pending().unwrap_or(0)))
        .collect();
    let total: u64 = pending.iter().map(|p| p.1).sum();
    if total == 0 {
        hinted.violation(format!(
            "no healthy node holds a hint for n{victim} after {HEALTHY_OPS} QUORUM writes of its keys"
        ));
    }
    hinted.summary = format!(
        "hints pending on the healthy nodes while n{victim} is poisoned: {total} ({})",
        pending
            .iter()
            .map(|(i, p)| format!("n{i} {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    ctx.report.checks.push(hinted);

    if let Some(rest) = (on + EIO_HOLD).checked_duration_since(Instant::now()) {
        ctx.hold(&mut cluster, rest)?;
    }
    let off_ns = h.now_ns();
    ctx.report
        .checks
        .push(others_keep_writing(ctx, victim, on_ns, off_ns));

    // The poisoned node must not have applied writes acknowledged after it was poisoned.
    if reason.is_ok() {
        let mut refuses = Check::new("eio-refuses");
        let ops = h.ops();
        let sample: Vec<_> = ops
            .iter()
            .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
            .filter(|o| !workload::is_register(&o.key) && o.invoke_ns > poisoned_ns)
            .filter(|o| o.complete_ns < off_ns && placement.replicas(&o.key).contains(&victim))
            .take(REFUSAL_SAMPLE)
            .collect();
        for o in &sample {
            if let Ok(Some(c)) = replicas::local_get(&cluster, victim, KEYSPACE, &o.key)
                && o.value.as_deref().is_some_and(|v| c.holds(v))
            {
                refuses.violation(format!(
                    "{}: written at {:.3} s after n{victim} was poisoned, yet it stores it",
                    o.key,
                    o.invoke_ns as f64 / 1e9
                ));
            }
        }
        refuses.summary = format!(
            "{} writes acknowledged after poisoning checked on n{victim}",
            sample.len()
        );
        ctx.report.checks.push(refuses);
    }

    // Off, and restart the node without the shim (a poisoned engine needs its operator to
    // restart it).
    faults::eio_off(&flag)?;
    h.fault_end(id);
    let kill = h.fault_start(
        "kill",
        &format!("kill -9 n{victim}, restart without the EIO shim"),
        &[victim],
    );
    cluster.kill9(victim);
    cluster.nodes[victim].env.clear();
    cluster.restart(victim)?;
    h.fault_end(kill);
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w.stop();
    let last_heal = end_faults(ctx, &mut cluster)?;
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: false,
            converge_within: super::CONVERGE_REPORT_WITHIN,
            hints_within: EIO_HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: MIN_ACKED,
                min_faults: 1,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}

/// `b3-disk-full`.
pub fn disk_full(ctx: &mut Ctx) -> anyhow::Result<()> {
    if !ctx.network_faults_possible() {
        ctx.report.skipped = Some("needs root: the node's data directory is a small tmpfs".into());
        return Ok(());
    }
    let mut opts = ctx.cluster_options();
    let victim = ctx.rng.random_range(0..opts.nodes);
    opts.tmpfs_bytes.insert(victim, DISK_BYTES);
    let mut cluster = ctx.start_cluster(opts)?;
    let h = ctx.history.clone();
    let spec = ctx.workload_spec(&cluster);
    let addrs = spec.addrs.clone();
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;
    ctx.hold(&mut cluster, Duration::from_secs(2))?;
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;

    let data_dir = cluster.nodes[victim].data_dir.clone();
    let id = h.fault_start(
        "disk-full",
        &format!("n{victim}'s {} MiB tmpfs filled", DISK_BYTES >> 20),
        &[victim],
    );
    let full_ns = h.now_ns();
    let (filler, bytes) = faults::fill_disk(&data_dir)?;
    ctx.report.lines.push(format!(
        "filled n{victim}'s {} MiB tmpfs with a {:.1} MiB filler",
        DISK_BYTES >> 20,
        bytes as f64 / (1 << 20) as f64
    ));

    // Writes at ALL through the full node, of keys it holds, until one fails: its error
    // must say the disk is full.
    let mut clear = Check::new("disk-full-error");
    let mut all = Client::new(addrs.clone(), "ALL");
    let mut next = 0;
    let start = Instant::now();
    let (mut acked_while_full, mut first_error) = (0usize, None);
    while start.elapsed() < FULL_ERROR_WITHIN && first_error.is_none() {
        let key = key_on(&placement, victim, "full", &mut next);
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        match workload::recorded_set_err(&h, &mut all, "full-all", victim, &key, &value) {
            (Outcome::Ok, _) => acked_while_full += 1,
            (_, e) => first_error = Some(e.unwrap_or_default()),
        }
    }
    match &first_error {
        None => clear.violation(format!(
            "{acked_while_full} writes at ALL through n{victim} were acknowledged over {} s \
             with its disk full, and none failed",
            FULL_ERROR_WITHIN.as_secs()
        )),
        Some(t) if !names_any(t, &["no space", "enospc", "disk full", "space left"]) => {
            clear.violation(format!("the error does not say the disk is full: {t}"))
        }
        Some(_) => {}
    }
    clear.summary = format!(
        "{acked_while_full} writes acknowledged before the first error: {:?}",
        first_error.clone().unwrap_or_default()
    );
    ctx.report.checks.push(clear);
    ctx.hold(&mut cluster, Duration::from_secs(3))?;
    let stop_ns = h.now_ns();
    ctx.report
        .checks
        .push(others_keep_writing(ctx, victim, full_ns, stop_ns));
    let sick = says_sick(&cluster, victim, "disk_full", "disk full", &addrs);
    ctx.report.checks.push(sick);

    // A clean stop on the full disk, then a start on it (issue 17): it serves reads and
    // refuses writes, saying why.
    let mut clean_stop = Check::new("disk-full-clean-stop");
    let mut generations = vec![generation_of(&cluster, victim)];
    let stop = h.fault_start(
        "stop",
        &format!("SIGTERM n{victim} on its full disk, start it again on it"),
        &[victim],
    );
    let stopped = clean_stop_of(&mut cluster, victim, &mut clean_stop, "on its full disk")?;
    // Whatever the node freed as it stopped (a flush, a commit-log segment) is taken again.
    let (filler2, topped) = faults::fill_disk_with(&data_dir, "hsf-filler-2")?;
    ctx.report.lines.push(format!(
        "n{victim} stopped in {:.1} s; its disk topped up with {:.1} MiB more",
        stopped.as_secs_f64(),
        topped as f64 / (1 << 20) as f64
    ));
    let mut start = Check::new("disk-full-start");
    match cluster.restart(victim) {
        Ok(()) => {
            generations.push(generation_of(&cluster, victim));
            let (reads, writes) = full_start_serves(ctx, &cluster, &placement, victim, &mut start);
            start.summary = format!("started on the full disk; {reads}; {writes}");
        }
        Err(e) => {
            start.violation(format!(
                "n{victim} did not start on its full disk: {}",
                e.to_string()
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
            start.summary = "did not start on the full disk".into();
        }
    }
    ctx.report.checks.push(start);
    h.fault_end(stop);

    // Space returns: writes through it must be accepted again.
    std::fs::remove_file(&filler)?;
    std::fs::remove_file(&filler2)?;
    h.fault_end(id);
    if !cluster.nodes[victim].is_running() {
        // It did not start on the full disk (reported above); with space it must.
        cluster.restart(victim)?;
    }
    let mut recovers = Check::new("disk-full-recovers");
    let freed = Instant::now();
    let r = poll(
        "writes through the node to be accepted again",
        RECOVER_WITHIN,
        || {
            let key = key_on(&placement, victim, "full", &mut next);
            let value = make_value(&key, 1, "recovered");
            match workload::recorded_set_err(&h, &mut all, "full-all", victim, &key, &value) {
                (Outcome::Ok, _) => Ok(()),
                (_, e) => Err(e.unwrap_or_default()),
            }
        },
    );
    match r {
        Ok(()) => {
            recovers.summary = format!(
                "writes at ALL through n{victim} accepted again {:.1} s after space returned",
                freed.elapsed().as_secs_f64()
            )
        }
        Err(e) => recovers.violation(format!("{e:#}")),
    }
    let poisoned = cluster.nodes[victim]
        .stats()
        .ok()
        .and_then(|v| v["storage"]["poisoned"].as_str().map(str::to_string));
    if let Some(p) = &poisoned {
        recovers.violation(format!(
            "n{victim}'s engine poisoned itself on the full disk: {p}"
        ));
    }
    ctx.report.checks.push(recovers);
    // It takes its share of the workload again for a while (every worker writes through it)
    // before the last restart.
    ctx.hold(&mut cluster, RECOVERED_HOLD)?;
    // Every acknowledged write must survive a restart (checked replica by replica by the
    // audit): a clean one, which must exit 0 again.
    let restart = h.fault_start(
        "stop",
        &format!("SIGTERM n{victim} after space returned, restart"),
        &[victim],
    );
    clean_stop_of(
        &mut cluster,
        victim,
        &mut clean_stop,
        "after space returned",
    )?;
    cluster.restart(victim)?;
    generations.push(generation_of(&cluster, victim));
    h.fault_end(restart);
    // Each start must gossip a newer generation than the last, or peers keep the old
    // incarnation's state (its `disk_full` health among it). The start on the full disk
    // cannot save its generation.
    let mut gens = Check::new("generation-increases");
    let known: Vec<u64> = generations.iter().flatten().copied().collect();
    if known.len() != generations.len() {
        gens.violation(format!(
            "n{victim}'s /v1/status had no generation: {generations:?}"
        ));
    }
    for w in known.windows(2) {
        if w[1] <= w[0] {
            gens.violation(format!(
                "n{victim} restarted with generation {} after {} (generations of its starts: {known:?})",
                w[1], w[0]
            ));
        }
    }
    gens.summary = format!("n{victim}'s generations over its starts: {known:?}");
    ctx.report.checks.push(gens);
    clean_stop.summary = format!(
        "SIGTERM of n{victim}: exit 0 within {} s, on the full disk and after",
        CLEAN_STOP_WITHIN.as_secs()
    );
    ctx.report.checks.push(clean_stop);
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w.stop();
    let last_heal = end_faults(ctx, &mut cluster)?;
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: false,
            converge_within: super::CONVERGE_REPORT_WITHIN,
            hints_within: super::HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: MIN_ACKED,
                min_faults: 1,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}

/// Node `i`'s generation, from its `/v1/status`.
fn generation_of(cluster: &Cluster, i: usize) -> Option<u64> {
    cluster.nodes[i]
        .status()
        .ok()
        .and_then(|v| v["generation"].as_u64())
}

/// SIGTERMs node `i` and counts a violation in `check` unless it exits 0 within
/// [`CLEAN_STOP_WITHIN`] (killed then); how long it took.
fn clean_stop_of(
    cluster: &mut Cluster,
    i: usize,
    check: &mut Check,
    when: &str,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = cluster.nodes[i].terminate(CLEAN_STOP_WITHIN)?;
    let took = t.elapsed();
    let log = cluster.nodes[i].log_path(cluster.nodes[i].incarnation);
    match st {
        Some(s) if s.success() => {}
        Some(s) => check.violation(format!(
            "n{i} {when}: SIGTERM ended it with {s} after {:.1} s (log {})",
            took.as_secs_f64(),
            log.display()
        )),
        None => check.violation(format!(
            "n{i} {when}: still running {} s after SIGTERM, killed (log {})",
            CLEAN_STOP_WITHIN.as_secs(),
            log.display()
        )),
    }
    Ok(took)
}

/// Node `victim`, just started on its full disk: QUORUM reads of keys acknowledged before
/// are served through it, and QUORUM writes through it are refused, naming the full disk,
/// from the first refusal on. Returns the two halves' summaries.
fn full_start_serves(
    ctx: &mut Ctx,
    cluster: &Cluster,
    placement: &Placement,
    victim: usize,
    check: &mut Check,
) -> (String, String) {
    let h = ctx.history.clone();
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.client).collect();
    let mut q = Client::new(addrs, "QUORUM");
    // Keys it holds, acknowledged before the disk filled up.
    let ops = h.ops();
    let fault_start = h
        .faults()
        .iter()
        .find(|f| f.kind == "disk-full")
        .map_or(0, |f| f.start_ns);
    let keys: Vec<(String, String)> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .filter(|o| !workload::is_register(&o.key) && o.complete_ns < fault_start)
        .filter(|o| placement.replicas(&o.key).contains(&victim))
        .filter_map(|o| o.value.clone().map(|v| (o.key.clone(), v)))
        .take(FULL_START_READS)
        .collect();
    if keys.len() < FULL_START_READS {
        check.violation(format!(
            "only {} acknowledged keys of n{victim} to read (need {FULL_START_READS})",
            keys.len()
        ));
    }
    // The first read waits for the node to be ready (it must hear from a peer).
    let first = keys.first().cloned();
    let ready = match &first {
        Some((key, _)) => poll(
            "the node to serve a first read",
            FULL_START_READY_WITHIN,
            || match workload::recorded_get(&h, &mut q, "fullstart", victim, key) {
                (Outcome::Ok, _) => Ok(()),
                (_, _) => Err("read failed".into()),
            },
        )
        .map_err(|e| format!("{e:#}")),
        None => Err("nothing to read".into()),
    };
    if let Err(e) = &ready {
        check.violation(format!("n{victim} served no read: {e}"));
    }
    let mut served = 0;
    for (key, value) in &keys {
        match workload::recorded_get(&h, &mut q, "fullstart", victim, key) {
            (Outcome::Ok, Some(v)) if &v == value => served += 1,
            (Outcome::Ok, got) => check.violation(format!(
                "QUORUM read of {key} through n{victim} answered {got:?}, wrote {value:?}"
            )),
            (_, _) => check.violation(format!(
                "QUORUM read of {key} through n{victim} (on its full disk) failed"
            )),
        }
    }
    let reads = format!("{served} of {} QUORUM reads through it served", keys.len());

    // Writes through it: acknowledged ones may come first (the engine learns that the disk
    // is full from a failed write); from the first refusal on, every one is refused.
    let mut next = 0;
    let mut acked_before = 0;
    let mut refused = Vec::new();
    let start = Instant::now();
    while refused.is_empty() && start.elapsed() < FULL_ERROR_WITHIN {
        let key = key_on(placement, victim, "fullstart", &mut next);
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        match workload::recorded_set_err(&h, &mut q, "fullstart", victim, &key, &value) {
            (Outcome::Ok, _) => acked_before += 1,
            (_, e) => refused.push(e.unwrap_or_default()),
        }
    }
    if refused.is_empty() {
        check.violation(format!(
            "{acked_before} QUORUM writes through n{victim} on its full disk acknowledged over {} s, none refused",
            FULL_ERROR_WITHIN.as_secs()
        ));
    } else {
        for _ in 0..FULL_REFUSALS {
            let key = key_on(placement, victim, "fullstart", &mut next);
            let value = make_value(&key, 1, &payload(&mut ctx.rng));
            match workload::recorded_set_err(&h, &mut q, "fullstart", victim, &key, &value) {
                (Outcome::Ok, _) => check.violation(format!(
                    "{key}: a QUORUM write through n{victim} acknowledged after it had refused one for its full disk"
                )),
                (_, e) => refused.push(e.unwrap_or_default()),
            }
        }
    }
    for e in &refused {
        if !names_any(e, &["disk full", "no space", "enospc"]) {
            check.violation(format!("a refusal does not name the full disk: {e}"));
        }
    }
    let writes = format!(
        "QUORUM writes through it: {acked_before} acknowledged before the first refusal, then {} refused, e.g. {:?}",
        refused.len(),
        refused.first().cloned().unwrap_or_default()
    );
    (reads, writes)
}

/// `b3-bitflip`.
pub fn bitflip(ctx: &mut Ctx) -> anyhow::Result<()> {
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let mut spec = ctx.workload_spec(&cluster);
    spec.register_readers = 0;
    spec.unique_readers = 0;
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;
    ctx.hold(&mut cluster, BITFLIP_WRITES)?;
    w.stop();
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;

    // A graceful stop flushes the memtables: the data is in SSTables.
    let victim = ctx.rng.random_range(0..n);
    let stop = h.fault_start(
        "stop",
        &format!("SIGTERM n{victim} (flush), flip bits, restart"),
        &[victim],
    );
    if !cluster.nodes[victim].stop()? {
        ctx.report.lines.push(format!(
            "n{victim} did not stop within the bound and was killed"
        ));
    }
    let data_dir = cluster.nodes[victim].data_dir.clone();
    let flips = faults::flip_bits(&data_dir, ".sst", FLIPS, SSTABLE_FOOTER_BYTES, &mut ctx.rng)?;
    let files: std::collections::BTreeSet<_> = flips.iter().map(|f| f.0.clone()).collect();
    let flip_id = h.fault_start(
        "bitflip",
        &format!(
            "{} bits in {} SSTables of n{victim}",
            flips.len(),
            files.len()
        ),
        &[victim],
    );
    ctx.report.lines.push(format!(
        "flipped {} bits in {} SSTable files of n{victim}",
        flips.len(),
        files.len()
    ));

    // Restart: either it refuses to start naming the corruption, or it starts and never
    // serves a corrupt value.
    cluster.spawn(victim)?;
    let started = cluster.nodes[victim].wait_ready(START_TIMEOUT);
    let mut detected = Check::new("bitflip-detected");
    let log =
        std::fs::read_to_string(cluster.nodes[victim].log_path(cluster.nodes[victim].incarnation))
            .unwrap_or_default();
    let mut evidence = Vec::new();
    if names_any(&log, &["corrupt", "checksum"]) {
        evidence.push("its log names the corruption".to_string());
    }
    let acked: Vec<(String, String)> = h
        .ops()
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .filter(|o| !workload::is_register(&o.key))
        .filter_map(|o| o.value.clone().map(|v| (o.key.clone(), v)))
        .collect();
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.client).collect();
    match &started {
        Ok(()) => {
            // ONE reads through it of keys it holds are served by its own engine.
            let mut one = Client::new(addrs.clone(), "ONE");
            let mut read_errors = 0;
            for (key, _) in acked
                .iter()
                .filter(|(k, _)| placement.replicas(k).contains(&victim))
            {
                let (o, _) = workload::recorded_get(&h, &mut one, "flip-one", victim, key);
                if o != Outcome::Ok {
                    read_errors += 1;
                }
            }
            let named = h
                .ops()
                .iter()
                .filter(|o| o.worker == "flip-one")
                .filter_map(|o| o.error.clone())
                .filter(|e| names_any(e, &["corrupt", "checksum"]))
                .count();
            if named > 0 {
                evidence.push(format!(
                    "{named} ONE reads through it failed naming the corruption"
                ));
            }
            ctx.report.lines.push(format!(
                "n{victim} restarted; ONE reads through it: {read_errors} errors"
            ));
        }
        Err(e) => {
            ctx.report.lines.push(format!(
                "n{victim} did not start with its corrupted SSTables: {}",
                e.to_string().lines().next().unwrap_or("")
            ));
        }
    }
    detected.summary = if evidence.is_empty() {
        "no sign of detection".into()
    } else {
        evidence.join("; ")
    };
    if evidence.is_empty() {
        detected.violation(format!(
            "n{victim} gave no sign of detecting {} flipped bits (log: {})",
            flips.len(),
            cluster.nodes[victim]
                .log_path(cluster.nodes[victim].incarnation)
                .display()
        ));
    }
    ctx.report.checks.push(detected);

    // Every acknowledged value is still served, through the other nodes, at QUORUM.
    let others: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    let mut quorum = Client::new(addrs, "QUORUM");
    let mut served = Check::new("bitflip-served");
    for (i, (key, value)) in acked.iter().enumerate() {
        let node = others[i % others.len()];
        let (o, got) = workload::recorded_get(&h, &mut quorum, "flip-q", node, key);
        match (o, got) {
            (Outcome::Ok, Some(g)) if &g == value => {}
            (Outcome::Ok, g) => {
                served.violation(format!("{key}: QUORUM read {g:?}, wrote {value:?}"))
            }
            (_, _) => served.violation(format!("{key}: QUORUM read through n{node} failed")),
        }
    }
    served.summary = format!(
        "{} acknowledged keys read at QUORUM through the other nodes",
        acked.len()
    );
    ctx.report.checks.push(served);
    h.fault_end(flip_id);
    h.fault_end(stop);

    let ops = h.ops();
    if started.is_ok() {
        let last_heal = Instant::now();
        audit(
            ctx,
            &mut cluster,
            Audit {
                last_heal,
                require_convergence: false,
                converge_within: super::CONVERGE_REPORT_WITHIN,
                hints_within: super::HINTS_WITHIN,
                guards: Guards {
                    min_acked_writes: MIN_ACKED,
                    min_faults: 1,
                    min_quiet_ok: MIN_QUIET_OK,
                },
            },
        )
    } else {
        // The node refused to start: its replicas cannot be audited, the history can.
        ctx.report.checks.push(checkers::stale(&ops));
        ctx.report.checks.push(checkers::corrupt(&ops));
        ctx.report.checks.extend(checkers::guards(
            &ops,
            &h.faults(),
            &Guards {
                min_acked_writes: MIN_ACKED,
                min_faults: 1,
                min_quiet_ok: MIN_QUIET_OK,
            },
        ));
        stop_quietly(&mut cluster, victim);
        Ok(())
    }
}

/// Leaves a node that failed to start down (its process is gone already).
fn stop_quietly(cluster: &mut Cluster, i: usize) {
    cluster.nodes[i].kill9();
}
