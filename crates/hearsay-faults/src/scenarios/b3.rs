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

    // Off, and restart the node (a poisoned engine needs its operator to restart it).
    faults::eio_off(&flag)?;
    h.fault_end(id);
    let kill = h.fault_start("kill", &format!("kill -9 n{victim}, restart"), &[victim]);
    cluster.kill9(victim);
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
            hints_within: super::HINTS_WITHIN,
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
    let freed_ns = h.now_ns();
    ctx.report
        .checks
        .push(others_keep_writing(ctx, victim, full_ns, freed_ns));

    // Space returns: writes through it must be accepted again.
    std::fs::remove_file(&filler)?;
    h.fault_end(id);
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
    if poisoned.is_some() {
        // Only a restart brings a poisoned engine back; the audit needs every node.
        let kill = h.fault_start(
            "kill",
            &format!("kill -9 n{victim} (poisoned), restart"),
            &[victim],
        );
        cluster.kill9(victim);
        cluster.restart(victim)?;
        h.fault_end(kill);
    }
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
