//! The restart-safety scenarios: what a node does between `kill -9` and rejoining.
//!
//! - `isolated-restart` reproduces the bug: a restarted node that cannot reach its peers
//!   must not acknowledge QUORUM writes on its own, nor answer nil for keys it missed.
//! - `restart-under-load` is its acceptance test under load: ten crash/restart cycles,
//!   each restarted node probed from the first moment it accepts a connection.
//! - `ring-stable-on-restart`: a restarted node never disappears from its peers' rings.

use super::{Audit, Ctx, KEYSPACE, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::{Check, Guards};
use crate::faults::{self, Partition, PartitionKind};
use crate::history::Outcome;
use crate::node::{FORM_TIMEOUT, START_TIMEOUT};
use crate::replicas;
use crate::workload::{self, Client, Workload, make_value, payload};
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Keys written (at QUORUM) before the crash in `isolated-restart`.
const PRELOAD_KEYS: usize = 200;
/// QUORUM SETs and GETs sent through the isolated node (TESTING.md / the bug report).
const ISOLATED_OPS: usize = 30;
/// Replicas a QUORUM write must be on at RF 3.
const QUORUM_OF_3: usize = 2;
/// Probe operations each restarted node must serve within its first second of accepting
/// connections (`restart-under-load`'s guard): below it, the probe did not really probe.
const MIN_PROBE_OPS_FIRST_SECOND: usize = 20;
/// Restart cycles of `restart-under-load` (the bug's acceptance test).
const RESTARTS: usize = 10;
/// Acknowledged writes `restart-under-load` needs (its acceptance criterion).
const MIN_ACKED_RESTART: usize = 2_000;
/// Successful operations in quiet windows the restart scenarios need.
const MIN_QUIET_OK: usize = 100;
/// Between RING samples of one peer: TESTING.md asks for at least every 100 ms; half that
/// leaves room for a slow answer.
const RING_SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Samples each peer must contribute to `ring-stable-on-restart` (a 2 s outage at one
/// sample per 100 ms gives 20).
const MIN_RING_SAMPLES: usize = 20;
/// Gaps between samples of a peer longer than this count against the 100 ms promise.
const RING_MAX_GAP: Duration = Duration::from_millis(100);
/// Share of gaps allowed above [`RING_MAX_GAP`] (a loaded 2-core machine stalls now and
/// then; more than this and the sampling did not do what the scenario promises).
const RING_LATE_SHARE: f64 = 0.1;

/// `isolated-restart`.
pub fn isolated_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.opts.nodes < 3 {
        anyhow::bail!("isolated-restart needs at least 3 nodes");
    }
    if !ctx.network_faults_possible() {
        ctx.report.skipped =
            Some("needs root: the restarted node is cut off from its peers with nftables".into());
        return Ok(());
    }
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.client).collect();
    let h = ctx.history.clone();

    // Keys acknowledged before the crash.
    let mut client = Client::new(addrs.clone(), "QUORUM");
    let mut acked = Vec::new();
    for i in 0..PRELOAD_KEYS {
        let key = format!("pre:{i}");
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        if workload::recorded_set(&h, &mut client, "pre", i % n, &key, &value) == Outcome::Ok {
            acked.push((key, value));
        }
    }
    if acked.len() < PRELOAD_KEYS / 2 {
        anyhow::bail!(
            "only {} of {PRELOAD_KEYS} preload writes were acknowledged on a healthy cluster",
            acked.len()
        );
    }
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;

    // Crash a non-seed node, cut it off from its peers (clients still reach it), restart.
    let victim = ctx.rng.random_range(2..n);
    let kill = h.fault_start("kill", &format!("kill -9 n{victim}"), &[victim]);
    cluster.kill9(victim);
    let part = Partition::isolate(victim, n);
    let part_id = part.apply(&cluster, &h)?;
    let spawned = Instant::now();
    cluster.spawn(victim)?;
    h.note(&format!("n{victim} restarted while isolated"));

    // As soon as it accepts a connection: 30 QUORUM SETs and 30 QUORUM GETs through it.
    let mut iso = Client::new(addrs.clone(), "QUORUM");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match iso.connect(victim) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => anyhow::bail!(
                "n{victim} never accepted a connection: {}\n{}",
                e.text(),
                cluster.nodes[victim].log_tail()
            ),
        }
    }
    ctx.report.lines.push(format!(
        "n{victim} (isolated) accepted a client {} ms after it was started",
        spawned.elapsed().as_millis()
    ));
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for j in 0..ISOLATED_OPS {
        let key = format!("iso:{j}");
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        let o = workload::recorded_set(&h, &mut iso, "iso", victim, &key, &value);
        sets.push((key, value, o));
        let (k, v) = acked[ctx.rng.random_range(0..acked.len())].clone();
        let (o, got) = workload::recorded_get(&h, &mut iso, "iso", victim, &k);
        gets.push((k, v, o, got));
    }
    let ready = cluster.nodes[victim].wait_ready(Duration::from_secs(10));
    ctx.report.lines.push(match &ready {
        Ok(()) => format!(
            "n{victim} printed `hearsay listening` {} ms after it was started",
            spawned.elapsed().as_millis()
        ),
        Err(_) => format!("n{victim} did not print `hearsay listening` within 10 s while isolated"),
    });

    // While still cut off (no hint can have reached the others): every acknowledged SET
    // must already be on a quorum of its replicas.
    let mut set_check = Check::new("isolated-set-quorum");
    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    for (key, value, o) in &sets {
        match o {
            Outcome::Ok => ok += 1,
            Outcome::Fail => failed += 1,
            Outcome::Unknown => unknown += 1,
        }
        if *o != Outcome::Ok {
            continue;
        }
        let reps = placement.replicas(key);
        let mut have = Vec::new();
        for r in &reps {
            if let Ok(Some(c)) = replicas::local_get(&cluster, *r, KEYSPACE, key)
                && c.holds(value)
            {
                have.push(*r);
            }
        }
        if have.len() < QUORUM_OF_3 {
            set_check.violation(format!(
                "{key}: QUORUM SET acknowledged by the isolated n{victim} but stored on only \
                 {:?} of its replicas {reps:?}",
                have
            ));
        }
    }
    set_check.summary = format!(
        "{} SETs through the isolated node: ok {ok}, fail {failed}, unknown {unknown}",
        sets.len()
    );
    let first_errors: Vec<String> = ctx
        .history
        .ops()
        .iter()
        .filter(|o| o.worker == "iso" && o.error.is_some())
        .filter_map(|o| o.error.clone())
        .take(2)
        .collect();
    if !first_errors.is_empty() {
        ctx.report
            .lines
            .push(format!("isolated node's errors, e.g.: {first_errors:?}"));
    }
    ctx.report.checks.push(set_check);

    let mut get_check = Check::new("isolated-get-nil");
    let (mut values, mut nils, mut errors) = (0, 0, 0);
    for (k, v, o, got) in &gets {
        match (o, got) {
            (Outcome::Ok, Some(g)) if g == v => values += 1,
            (Outcome::Ok, Some(g)) => {
                values += 1;
                get_check.violation(format!("{k}: read {g:?}, wrote {v:?}"));
            }
            (Outcome::Ok, None) => {
                nils += 1;
                get_check.violation(format!(
                    "{k}: QUORUM GET through the isolated n{victim} answered nil for a key \
                     acknowledged before the crash"
                ));
            }
            _ => errors += 1,
        }
    }
    get_check.summary = format!(
        "{} GETs of acknowledged keys: value {values}, nil {nils}, error {errors}",
        gets.len()
    );
    ctx.report.checks.push(get_check);

    // Heal; once the cluster has re-formed and hints drained, every acknowledged SET must
    // be on a quorum of its replicas too (the audit then asks for all of them).
    faults::heal(&cluster, &h, &[part_id])?;
    if ready.is_err() {
        cluster.nodes[victim].wait_ready(START_TIMEOUT)?;
    }
    h.fault_end(kill);
    let last_heal = end_faults(ctx, &mut cluster)?;
    cluster.wait_formed(FORM_TIMEOUT)?;
    let _ = cluster.wait_hints_drained(super::HINTS_WITHIN);
    let mut after = Check::new("isolated-set-quorum-healed");
    for (key, value, _) in sets.iter().filter(|(_, _, o)| *o == Outcome::Ok) {
        let reps = placement.replicas(key);
        let have: Vec<usize> = reps
            .iter()
            .copied()
            .filter(|r| {
                replicas::local_get(&cluster, *r, KEYSPACE, key)
                    .ok()
                    .flatten()
                    .is_some_and(|c| c.holds(value))
            })
            .collect();
        if have.len() < QUORUM_OF_3 {
            after.violation(format!(
                "{key}: after the heal on only {have:?} of its replicas {reps:?}"
            ));
        }
    }
    after.summary = format!("{ok} acknowledged SETs checked after the heal and hint replay");
    ctx.report.checks.push(after);
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: false,
            converge_within: super::CONVERGE_REPORT_WITHIN,
            hints_within: super::HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: PRELOAD_KEYS / 2,
                min_faults: 2,
                min_quiet_ok: PRELOAD_KEYS / 2,
            },
        },
    )
}

/// `restart-under-load`.
pub fn restart_under_load(ctx: &mut Ctx) -> anyhow::Result<()> {
    let restarts = ctx.opts.restarts.unwrap_or(RESTARTS);
    let min_acked = ctx.opts.min_acked.unwrap_or(MIN_ACKED_RESTART);
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let spec = ctx.workload_spec(&cluster);
    let h = ctx.history.clone();
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;

    let mut done = 0;
    let mut probe_check = Check::new("guard-probe");
    for cycle in 0..restarts {
        if cluster.topo.network_faults() && cycle % 2 == 1 {
            let kind = PartitionKind::ALL[ctx.rng.random_range(0..PartitionKind::ALL.len())];
            let p = Partition::random(kind, n, &mut ctx.rng);
            let id = p.apply(&cluster, &h)?;
            let d = ctx.random_ms(1500, 3000);
            ctx.hold(&mut cluster, d)?;
            faults::heal(&cluster, &h, &[id])?;
            ctx.report
                .lines
                .push(format!("cycle {cycle}: {} {}", p.kind.name(), p.detail));
        }
        let d = ctx.random_ms(1000, 2500);
        ctx.hold(&mut cluster, d)?;
        let victim = ctx.rng.random_range(0..n);
        let kill = h.fault_start("kill", &format!("kill -9 n{victim}, restart"), &[victim]);
        cluster.kill9(victim);
        let d = ctx.random_ms(500, 2000);
        ctx.hold(&mut cluster, d)?;
        let spawned = h.now_ns();
        cluster.spawn(victim)?;
        let probe = {
            let (h, addrs, acked) = (h.clone(), spec.addrs.clone(), w.acked.clone());
            let seed = ctx.rng.random();
            let name = format!("probe{cycle}");
            std::thread::spawn(move || {
                workload::probe(
                    &h,
                    addrs,
                    victim,
                    &name,
                    &acked,
                    seed,
                    Instant::now() + START_TIMEOUT,
                )
            })
        };
        let ready = cluster.nodes[victim].wait_ready(START_TIMEOUT);
        let res = probe.join().unwrap_or_default();
        h.fault_end(kill);
        ready?;
        done += 1;
        let accepted_ms = res
            .accepted_ns
            .map(|t| format!("{} ms", (t.saturating_sub(spawned)) / 1_000_000))
            .unwrap_or_else(|| "never".into());
        ctx.report.lines.push(format!(
            "restart {cycle}: n{victim} accepted a client {accepted_ms} after start; probe: {} ops \
             in its first second, {} in all (ok {}, fail {}, unknown {})",
            res.ops_first_second, res.ops_total, res.ok, res.failed, res.unknown
        ));
        if res.ops_first_second < MIN_PROBE_OPS_FIRST_SECOND {
            probe_check.violation(format!(
                "restart {cycle} (n{victim}): only {} probe operations within the first second \
                 of accepting connections (minimum {MIN_PROBE_OPS_FIRST_SECOND})",
                res.ops_first_second
            ));
        }
        if let Err(e) = cluster.wait_formed(FORM_TIMEOUT) {
            ctx.report
                .errors
                .push(format!("after restart {cycle}: {e:#}"));
            break;
        }
    }
    probe_check.summary = format!(
        "each restart served ≥ {MIN_PROBE_OPS_FIRST_SECOND} probe operations in its first second"
    );
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w.stop();
    let mut restarts_check = Check::new("guard-restarts");
    restarts_check.summary = format!("{done} restarts (minimum {restarts})");
    if done < restarts {
        restarts_check.violation(format!(
            "only {done} of {restarts} kill -9/restart cycles happened"
        ));
    }
    ctx.report.checks.push(restarts_check);
    ctx.report.checks.push(probe_check);
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
                min_acked_writes: min_acked,
                min_faults: restarts,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}

/// One peer's RING samples: `(time, Ok(victim listed) | Err(why))`.
type Samples = Vec<(u64, Result<bool, String>)>;

/// `ring-stable-on-restart`.
pub fn ring_stable_on_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let mut spec = ctx.workload_spec(&cluster);
    // A light load: the scenario is about membership, not throughput.
    spec.unique_writers = 1;
    spec.register_writers = 1;
    spec.register_readers = 1;
    spec.unique_readers = 0;
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 50, Duration::from_secs(30))?;

    let victim = ctx.rng.random_range(0..n);
    let victim_addr = cluster.nodes[victim].cluster.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let samplers: Vec<(usize, std::thread::JoinHandle<Samples>)> = (0..n)
        .filter(|p| *p != victim)
        .map(|p| {
            let (stop, h, addr, victim_addr) = (
                stop.clone(),
                h.clone(),
                cluster.nodes[p].client,
                victim_addr.clone(),
            );
            let t = std::thread::spawn(move || sample_ring(&h, addr, &victim_addr, &stop));
            (p, t)
        })
        .collect();
    // Some samples of the healthy ring first.
    ctx.hold(&mut cluster, Duration::from_millis(500))?;
    let kill = h.fault_start("kill", &format!("kill -9 n{victim}, restart"), &[victim]);
    cluster.kill9(victim);
    let d = ctx.random_ms(1000, 3000);
    ctx.hold(&mut cluster, d)?;
    cluster.restart(victim)?;
    let back = cluster.wait_formed(FORM_TIMEOUT);
    h.fault_end(kill);
    stop.store(true, Ordering::Release);
    let mut check = Check::new("ring-stable");
    let mut guard = Check::new("guard-ring-samples");
    let mut total = 0;
    for (p, t) in samplers {
        let samples = t.join().unwrap_or_default();
        let ok: Vec<&(u64, Result<bool, String>)> =
            samples.iter().filter(|(_, r)| r.is_ok()).collect();
        total += samples.len();
        let errors = samples.len() - ok.len();
        for (at, r) in &samples {
            if let Ok(false) = r {
                check.violation(format!(
                    "n{p}'s RING at {:.3} s does not list n{victim} ({victim_addr})",
                    *at as f64 / 1e9
                ));
            }
        }
        let gaps: Vec<u64> = samples.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let late = gaps
            .iter()
            .filter(|g| **g > RING_MAX_GAP.as_nanos() as u64)
            .count();
        let max_gap_ms = gaps.iter().max().copied().unwrap_or(0) / 1_000_000;
        ctx.report.lines.push(format!(
            "n{p}: {} RING samples ({errors} errors), max gap {max_gap_ms} ms, {late} gaps over {} ms",
            samples.len(),
            RING_MAX_GAP.as_millis()
        ));
        if ok.len() < MIN_RING_SAMPLES {
            guard.violation(format!(
                "n{p}: only {} answered RING samples (minimum {MIN_RING_SAMPLES})",
                ok.len()
            ));
        }
        if !gaps.is_empty() && late as f64 > RING_LATE_SHARE * gaps.len() as f64 {
            guard.violation(format!(
                "n{p}: {late} of {} gaps between samples exceeded {} ms",
                gaps.len(),
                RING_MAX_GAP.as_millis()
            ));
        }
    }
    check.summary = format!("{total} samples from {} peers", n - 1);
    guard.summary = format!(
        "≥ {MIN_RING_SAMPLES} answered samples per peer, ≥ {:.0} % of gaps ≤ {} ms",
        (1.0 - RING_LATE_SHARE) * 100.0,
        RING_MAX_GAP.as_millis()
    );
    ctx.report.checks.push(check);
    ctx.report.checks.push(guard);
    back?;
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
                min_acked_writes: 50,
                min_faults: 1,
                min_quiet_ok: 50,
            },
        },
    )
}

/// Samples `RING` on one peer until `stop`: whether it lists `victim_addr`.
fn sample_ring(
    h: &crate::history::History,
    addr: std::net::SocketAddr,
    victim_addr: &str,
    stop: &AtomicBool,
) -> Samples {
    let mut out = Vec::new();
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Acquire) {
        let next = Instant::now() + RING_SAMPLE_EVERY;
        let at = h.now_ns();
        let r = (|| -> Result<bool, String> {
            if con.is_none() {
                con = Some(workload::open(addr, "ONE").map_err(|e| e.text())?);
            }
            let c = con.as_mut().expect("just opened");
            let v: redis::Value = redis::cmd("RING")
                .arg(KEYSPACE)
                .query(c)
                .map_err(|e| e.to_string())?;
            let p = replicas::parse_ring(&v, |a| Some(usize::from(a == victim_addr)))
                .map_err(|e| e.to_string())?;
            Ok(p.ranges.iter().any(|(_, rs)| rs.contains(&1)))
        })();
        if r.is_err() {
            con = None;
        }
        out.push((at, r));
        // Pacing to the sampling period, not synchronisation.
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    out
}
