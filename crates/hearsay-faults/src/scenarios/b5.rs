//! B5: a node's data wiped (its disk replaced). TESTING.md: "anti-entropy repairs it within
//! 60 s; bytes moved ≤ 2× the missing data".
//!
//! Under the QUORUM workload, one non-seed node is killed (`kill -9`), its engine's files
//! are deleted while its identity stays (node id, generation, saved tokens and peers: the
//! node's `cluster/` directory), and it is started again. The node must see that it lost
//! its data (`needs_repair`: `/v1/health` 503 naming it, no reads served from its empty
//! replica), repair every range it replicates by itself, and serve again:
//!
//! | check | violation |
//! |---|---|
//! | `needs-repair-health` | the restarted node never answers `/v1/health` non-200 with `needs_repair`, answers 200 before it did, or says `needs_repair` again after its first 200 |
//! | `wiped-reads` | a QUORUM read (through any node, the wiped one too) while it said `needs_repair` returns nil or another value for a key whose write was acknowledged before the read started; guard: ≥ [`MIN_WINDOW_READS_VIA_VICTIM`] such reads through the wiped node |
//! | `wiped-restored` | within 60 s of the restart, an acknowledged unique-key write (acknowledged before the restart) whose replicas include the wiped node is not in its own data (`/v1/local/scan`); guard: ≥ [`MIN_RESTORED_KEYS`] such writes |
//! | `repair-bytes` | the bytes every node's repair moved (key + value, `/v1/repair` `bytes_moved`, counted from before the wipe) exceed 2 × the missing data: the key + value bytes of the newest cell of every key of the wiped node's ranges, from the other replicas' scans just before the restart; guard: ≥ [`MIN_MISSING_CELLS`] missing cells and some bytes moved |
//! | `wiped-healthy` | the node is not 200 within 60 s of its restart, or not `U…` in every node's `MEMBERS` within 5 s after |
//!
//! then the usual audit (hints, ring, convergence within 60 s, lost, replicas-missing,
//! stale, backwards, corrupt, all-read, guards).

use super::{Audit, Ctx, KEYSPACE, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::{Check, Guards};
use crate::health::{self, Health};
use crate::history::{History, Op, OpKind, Outcome};
use crate::http;
use crate::node::START_TIMEOUT;
use crate::replicas::{self, CellInfo, Placement};
use crate::workload::{self, Client, Workload};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Acknowledged writes before the wipe (and the run's acknowledged-writes guard): enough
/// data that the repair has something to move and takes long enough to be observed.
const MIN_ACKED_BEFORE_WIPE: u64 = 10_000;
/// How long the workload may take to reach [`MIN_ACKED_BEFORE_WIPE`].
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the node stays down (wiped) before its restart, in ms: the other replicas
/// take writes for it meanwhile (hinted).
const DOWN_MS: std::ops::Range<u64> = 1_000..3_000;
/// TESTING.md B5: anti-entropy repairs the node within 60 s (of its restart).
const REPAIR_WITHIN: Duration = Duration::from_secs(60);
/// TESTING.md B5: bytes moved ≤ 2 × the missing data.
const MAX_MOVED_RATIO: u64 = 2;
/// Between `/v1/health` samples of the restarted node.
const HEALTH_SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Between scans of the wiped node's own data while waiting for it to be restored (a full
/// scan costs the node a few hundred ms of CPU at tens of thousands of keys).
const RESTORED_POLL: Duration = Duration::from_secs(1);
/// From the node's first 200 to every `MEMBERS` showing it up (health is gossiped after
/// each 500 ms probe round, spread in 200 ms rounds; margin for two shared cores).
const UP_GOSSIP_WITHIN: Duration = Duration::from_secs(5);
/// The vacuous-pass guards: missing cells counted on the other replicas, acknowledged
/// writes the wiped node must get back, QUORUM reads through it while it says
/// `needs_repair`.
const MIN_MISSING_CELLS: usize = 1_000;
const MIN_RESTORED_KEYS: usize = 1_000;
const MIN_WINDOW_READS_VIA_VICTIM: usize = 10;
/// Successful operations in quiet windows the run needs.
const MIN_QUIET_OK: usize = 500;
/// The probe's worker name in the history.
const PROBE_WORKER: &str = "wiped-probe";
/// What the wipe keeps in the node's data directory: its identity (`cluster/`: node id,
/// generation, saved tokens and peers, hints it holds for others), whatever layout the
/// engine has (its own `engine/` directory, or its files beside `cluster/`).
const IDENTITY: &[&str] = &["cluster", "node_id", "generation", "tokens", "peers"];
/// Identity files that must survive the wipe (found anywhere under the kept entries).
const IDENTITY_FILES: &[&str] = &["node_id", "generation", "tokens", "peers"];

/// One `/v1/health` sample of the restarted node (`Err`: no answer).
#[derive(Clone, Debug)]
pub struct HealthSample {
    pub at_ns: u64,
    pub health: Result<Health, String>,
}

/// What the health samples say: the check, when the node first said `needs_repair` and
/// when it was first 200 after that (history ns).
#[derive(Clone, Debug)]
pub struct HealthVerdict {
    pub check: Check,
    pub needs_repair_from: Option<u64>,
    pub healthy_at: Option<u64>,
    pub needs_repair_samples: usize,
}

/// Judges the restarted node's `/v1/health` samples (in time order): it must say
/// `needs_repair` (non-200) before it is ever 200, and never again after its first 200.
pub fn judge_health(samples: &[HealthSample]) -> HealthVerdict {
    let mut c = Check::new("needs-repair-health");
    let (mut from, mut healthy) = (None, None);
    let mut count = 0;
    let mut example = String::new();
    for s in samples {
        let Ok(h) = &s.health else { continue };
        let t = s.at_ns as f64 / 1e9;
        let says = h.has(health::NEEDS_REPAIR);
        if says && h.status == 200 {
            c.violation(format!("{t:.3} s: 200 while naming needs_repair"));
        }
        if says && h.status != 200 {
            count += 1;
            if from.is_none() {
                from = Some(s.at_ns);
                example = h.describe();
            }
            if healthy.is_some() {
                c.violation(format!(
                    "{t:.3} s: needs_repair again after it was healthy: {}",
                    h.describe()
                ));
            }
        }
        if h.status == 200 && healthy.is_none() {
            if from.is_none() {
                c.violation(format!(
                    "{t:.3} s: 200 before it ever said needs_repair (it serves with an empty \
                     engine)"
                ));
            } else {
                healthy = Some(s.at_ns);
            }
        }
    }
    if from.is_none() {
        c.violation("never answered /v1/health non-200 with needs_repair".into());
    }
    c.summary = format!(
        "{} samples, {count} non-200 naming needs_repair (first: {example:?}), then {}",
        samples.len(),
        match (from, healthy) {
            (Some(f), Some(h)) => {
                format!("200 after {:.2} s", h.saturating_sub(f) as f64 / 1e9)
            }
            (_, Some(_)) => "200".to_string(),
            (_, None) => "never 200".to_string(),
        }
    );
    HealthVerdict {
        check: c,
        needs_repair_from: from,
        healthy_at: healthy,
        needs_repair_samples: count,
    }
}

/// QUORUM reads invoked in `[from_ns, to_ns)` of unique keys whose replicas include
/// `victim` and whose write was acknowledged before the read started: each answered read
/// must return the acknowledged value (nil is stale). Guard: at least `min_via_victim` of
/// them answered through the victim itself.
pub fn judge_window_reads(
    ops: &[Op],
    placement: &Placement,
    victim: usize,
    from_ns: u64,
    to_ns: u64,
    min_via_victim: usize,
) -> Check {
    let mut c = Check::new("wiped-reads");
    let mut acked: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for o in ops.iter().filter(|o| {
        o.kind == OpKind::Write && o.outcome == Outcome::Ok && !workload::is_register(&o.key)
    }) {
        if let Some(v) = o.value.as_deref() {
            acked.insert(o.key.as_str(), (v, o.complete_ns));
        }
    }
    let (mut ok, mut via_victim, mut failed) = (0, 0, 0);
    for o in ops.iter().filter(|o| {
        o.kind == OpKind::Read
            && matches!(o.level.as_str(), "QUORUM" | "ALL")
            && o.invoke_ns >= from_ns
            && o.invoke_ns < to_ns
    }) {
        let Some((value, acked_ns)) = acked.get(o.key.as_str()) else {
            continue;
        };
        if *acked_ns > o.invoke_ns || !placement.replicas(&o.key).contains(&victim) {
            continue;
        }
        if o.outcome != Outcome::Ok {
            failed += 1;
            continue;
        }
        ok += 1;
        if o.node == victim {
            via_victim += 1;
        }
        if o.value.as_deref() != Some(*value) {
            c.violation(format!(
                "{}: {} read {:?} through n{} at {:.3} s while n{victim} said needs_repair; \
                 acknowledged {value:?} at {:.3} s",
                o.key,
                o.worker,
                o.value,
                o.node,
                o.invoke_ns as f64 / 1e9,
                *acked_ns as f64 / 1e9
            ));
        }
    }
    if via_victim < min_via_victim {
        c.violation(format!(
            "vacuous: only {via_victim} answered QUORUM reads through n{victim} while it said \
             needs_repair (minimum {min_via_victim})"
        ));
    }
    c.summary = format!(
        "{ok} QUORUM reads of acknowledged keys n{victim} replicates answered while it said \
         needs_repair ({via_victim} through it), {failed} failed or timed out"
    );
    c
}

/// For every key whose natural replicas include `victim`, the newest cell the other
/// replicas hold (`scans`: each other node's scan).
pub fn expected_on(
    scans: &[(usize, Vec<(String, CellInfo)>)],
    victim: usize,
    placement: &Placement,
) -> BTreeMap<String, CellInfo> {
    let mut out: BTreeMap<String, CellInfo> = BTreeMap::new();
    for (node, cells) in scans {
        if *node == victim {
            continue;
        }
        for (key, cell) in cells {
            if !placement.replicas(key).contains(&victim) {
                continue;
            }
            match out.get(key) {
                Some(have) if have.timestamp >= cell.timestamp => {}
                _ => {
                    out.insert(key.clone(), cell.clone());
                }
            }
        }
    }
    out
}

/// Key + value bytes of `cells` (what the node's repair counts as moved per cell).
pub fn bytes_of(cells: &BTreeMap<String, CellInfo>) -> u64 {
    cells
        .iter()
        .map(|(k, c)| k.len() as u64 + c.value_len)
        .sum()
}

/// The `(key, value)`s of `expected` that `held` lacks or holds with another value.
pub fn not_restored(
    expected: &[(String, String)],
    held: &BTreeMap<String, CellInfo>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(k, v)| match held.get(k) {
            Some(c) if c.holds(v) => None,
            Some(c) => Some(format!(
                "{k}: holds another value (len {}, tombstone {})",
                c.value_len, c.tombstone
            )),
            None => Some(format!("{k}: absent")),
        })
        .collect()
}

/// Judges the bytes repair moved (`moved`: per node, since before the wipe) against the
/// missing data.
pub fn judge_bytes(moved: &[(usize, u64)], missing_cells: usize, missing_bytes: u64) -> Check {
    let mut c = Check::new("repair-bytes");
    let total: u64 = moved.iter().map(|m| m.1).sum();
    if missing_cells < MIN_MISSING_CELLS {
        c.violation(format!(
            "vacuous: only {missing_cells} missing cells (minimum {MIN_MISSING_CELLS})"
        ));
    }
    if total == 0 {
        c.violation(
            "no node's repair reports any byte moved, yet the node lost its data".to_string(),
        );
    }
    if total > MAX_MOVED_RATIO * missing_bytes {
        c.violation(format!(
            "repair moved {total} bytes, more than {MAX_MOVED_RATIO} × the {missing_bytes} \
             bytes missing"
        ));
    }
    c.summary = format!(
        "moved {total} bytes ({}) for {missing_bytes} missing bytes in {missing_cells} cells: \
         ratio {:.2} (bound {MAX_MOVED_RATIO})",
        moved
            .iter()
            .map(|(i, b)| format!("n{i} {b}"))
            .collect::<Vec<_>>()
            .join(", "),
        if missing_bytes == 0 {
            f64::INFINITY
        } else {
            total as f64 / missing_bytes as f64
        }
    );
    c
}

/// Deletes a stopped node's engine from its data directory, keeping its identity: the
/// `engine/` directory if the node has one, else every entry but [`IDENTITY`]. Returns the
/// names removed and kept.
pub fn wipe_engine(data_dir: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let engine = data_dir.join("engine");
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let remove = |p: &Path| -> anyhow::Result<()> {
        if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
        .with_context(|| format!("remove {}", p.display()))
    };
    let mut entries: Vec<_> = std::fs::read_dir(data_dir)
        .with_context(|| format!("read {}", data_dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let has_engine_dir = engine.is_dir();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let wipe = if has_engine_dir {
            name == "engine"
        } else {
            !IDENTITY.contains(&name.as_str())
        };
        if wipe {
            remove(&e.path())?;
            removed.push(name);
        } else {
            kept.push(name);
        }
    }
    Ok((removed, kept))
}

/// Whether every identity file is still somewhere under `dir` (at most two levels down).
fn identity_kept(dir: &Path) -> Result<(), String> {
    fn find(dir: &Path, name: &str, depth: usize) -> bool {
        if dir.join(name).is_file() {
            return true;
        }
        depth > 0
            && std::fs::read_dir(dir).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.path().is_dir() && find(&e.path(), name, depth - 1))
            })
    }
    let lacking: Vec<&str> = IDENTITY_FILES
        .iter()
        .copied()
        .filter(|f| !find(dir, f, 2))
        .collect();
    if lacking.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "identity files {lacking:?} not found in {}",
            dir.display()
        ))
    }
}

/// A node's repair counters and jobs (`GET /v1/repair`).
#[derive(Clone, Debug, Default)]
struct RepairView {
    cells_moved: u64,
    bytes_moved: u64,
    bytes_read: u64,
    jobs: Vec<Value>,
}

fn repair_view(admin: SocketAddr) -> anyhow::Result<RepairView> {
    let v = http::get_json(admin, "/v1/repair")?;
    let n = |k: &str| {
        v[k].as_u64()
            .with_context(|| format!("/v1/repair without {k}"))
    };
    Ok(RepairView {
        cells_moved: n("cells_moved")?,
        bytes_moved: n("bytes_moved")?,
        bytes_read: n("bytes_read")?,
        jobs: v["jobs"].as_array().cloned().unwrap_or_default(),
    })
}

/// One line about a repair job.
fn describe_job(j: &Value) -> String {
    let ranges = j["ranges"].as_array().map_or(0, Vec::len);
    let t = &j["totals"];
    format!(
        "job {}: {} of {ranges} ranges done, {} failed, {} cells / {} bytes moved, {} cells \
         compared, {}{}",
        j["id"],
        j["done"],
        j["failed"],
        t["cells_moved"],
        t["bytes_moved"],
        t["cells_compared"],
        match (j["started_ms"].as_u64(), j["finished_ms"].as_u64()) {
            (Some(s), Some(f)) => format!("finished in {:.2} s", f.saturating_sub(s) as f64 / 1e3),
            _ => "not finished".to_string(),
        },
        j["last_error"]
            .as_str()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    )
}

/// QUORUM reads of `keys` (acknowledged, the victim among their replicas) until `stop`:
/// every other one through the victim (when it accepts connections), the rest through the
/// other nodes in turn; recorded in the history as [`PROBE_WORKER`].
fn probe_reads(
    h: &History,
    addrs: Vec<SocketAddr>,
    victim: usize,
    keys: &[(String, String)],
    stop: &AtomicBool,
    seed: u64,
) {
    if keys.is_empty() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let others: Vec<usize> = (0..addrs.len()).filter(|i| *i != victim).collect();
    let mut client = Client::new(addrs, "QUORUM");
    let mut i = 0usize;
    while !stop.load(Ordering::Acquire) {
        let key = &keys[rng.random_range(0..keys.len())].0;
        let node = if i.is_multiple_of(2) && !client.backing_off(victim) {
            victim
        } else {
            others[(i / 2) % others.len()]
        };
        i += 1;
        let _ = workload::recorded_get(h, &mut client, PROBE_WORKER, node, key);
    }
}

/// `b5-wiped`.
pub fn wiped(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.opts.nodes < 4 {
        anyhow::bail!("b5-wiped needs at least 4 nodes (a non-seed node to wipe, RF 3)");
    }
    let min_acked = ctx
        .opts
        .min_acked
        .map_or(MIN_ACKED_BEFORE_WIPE, |m| m as u64);
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let spec = ctx.workload_spec(&cluster);
    let addrs = spec.addrs.clone();
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, min_acked, WARM_UP_TIMEOUT)?;
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;
    // Seeds are the first two nodes.
    let victim = ctx.rng.random_range(2..n);
    let before: Vec<RepairView> = (0..n)
        .map(|i| repair_view(cluster.nodes[i].admin))
        .collect::<anyhow::Result<_>>()
        .context("/v1/repair before the wipe")?;

    // kill -9, delete the engine, keep the identity.
    let fault = h.fault_start(
        "wipe",
        &format!("kill -9 n{victim}, its engine deleted (identity kept), restart"),
        &[victim],
    );
    let acked_at_kill = w.acked_writes();
    cluster.kill9(victim);
    let data_dir = cluster.nodes[victim].data_dir.clone();
    let (removed, kept) = wipe_engine(&data_dir)?;
    identity_kept(&data_dir).map_err(|e| anyhow::anyhow!("the wipe took the identity: {e}"))?;
    h.note(&format!(
        "n{victim} killed and wiped: removed {removed:?}, kept {kept:?}"
    ));
    ctx.report.lines.push(format!(
        "n{victim} killed after {acked_at_kill} acknowledged writes; its data directory: \
         removed {removed:?}, kept {kept:?}"
    ));
    let down = ctx.random_ms(DOWN_MS.start, DOWN_MS.end);
    ctx.hold(&mut cluster, down)?;

    // What it should hold: the other replicas' newest cells of its ranges.
    let scan_start = Instant::now();
    let mut scans = Vec::new();
    for i in (0..n).filter(|i| *i != victim) {
        scans.push((
            i,
            replicas::scan_node(&cluster, i, KEYSPACE)
                .with_context(|| format!("scan of n{i} before the restart"))?,
        ));
    }
    let expected_cells = expected_on(&scans, victim, &placement);
    drop(scans);
    let missing_bytes = bytes_of(&expected_cells);
    ctx.report.lines.push(format!(
        "missing data (the other replicas' newest cells of n{victim}'s ranges, scanned in \
         {:.1} s): {} cells, {missing_bytes} bytes of key + value",
        scan_start.elapsed().as_secs_f64(),
        expected_cells.len()
    ));
    // Acknowledged unique writes it must get back.
    let restart_ns = h.now_ns();
    let expected: Vec<(String, String)> = {
        let mut m = BTreeMap::new();
        for o in h.ops().iter().filter(|o| {
            o.kind == OpKind::Write
                && o.outcome == Outcome::Ok
                && o.complete_ns < restart_ns
                && !workload::is_register(&o.key)
        }) {
            if let Some(v) = &o.value
                && placement.replicas(&o.key).contains(&victim)
            {
                m.insert(o.key.clone(), v.clone());
            }
        }
        m.into_iter().collect()
    };

    // Health samples and QUORUM probe reads from before the restart until it is over.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (h, stop, admin) = (h.clone(), stop.clone(), cluster.nodes[victim].admin);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let health = health::health_at(admin).map_err(|e| format!("{e:#}"));
                samples.push(HealthSample {
                    at_ns: h.now_ns(),
                    health,
                });
                std::thread::sleep(HEALTH_SAMPLE_EVERY);
            }
            samples
        })
    };
    let probe = {
        let (h, stop, addrs, keys) = (h.clone(), stop.clone(), addrs.clone(), expected.clone());
        let seed = ctx.rng.random();
        std::thread::spawn(move || probe_reads(&h, addrs, victim, &keys, &stop, seed))
    };
    let restarted = Instant::now();
    cluster.spawn(victim)?;
    cluster.nodes[victim].wait_ready(START_TIMEOUT)?;
    let ready_ns = h.now_ns();
    h.fault_end(fault);
    let ready_after = restarted.elapsed();

    // How every node's MEMBERS shows it while it repairs (sampled with each scan below).
    let mut one = Client::new(addrs.clone(), "ONE");
    let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let victim_id = cluster.nodes[victim].node_id.clone();
    let mut sample_members = |one: &mut Client| {
        for i in 0..n {
            let code = match health::members(one, i) {
                Ok(m) => m
                    .get(&victim_id)
                    .cloned()
                    .unwrap_or_else(|| "absent".into()),
                Err(_) => "?".into(),
            };
            let codes = seen.entry(i).or_default();
            if codes.last() != Some(&code) {
                codes.push(code);
            }
        }
    };

    // Restored: every acknowledged write of its ranges back in its own data.
    let deadline = restarted + REPAIR_WITHIN;
    let mut restored = Check::new("wiped-restored");
    let mut scans_done = 0;
    // Scanned every second, and once more the moment its /v1/health first answers 200
    // (what it still lacks when it serves reads again: a figure, not a check).
    let mut lacking_at_200: Option<usize> = None;
    let (restored_after, lacking) = loop {
        sample_members(&mut one);
        let was_healthy = lacking_at_200.is_none()
            && health::health(&cluster.nodes[victim]).is_ok_and(|hh| hh.status == 200);
        let held: BTreeMap<String, CellInfo> = match replicas::scan_node(&cluster, victim, KEYSPACE)
        {
            Ok(cells) => cells.into_iter().collect(),
            Err(e) => {
                h.note(&format!("scan of n{victim}: {e:#}"));
                BTreeMap::new()
            }
        };
        scans_done += 1;
        let lacking = not_restored(&expected, &held);
        if was_healthy {
            lacking_at_200 = Some(lacking.len());
        }
        if lacking.is_empty() {
            break (Some(restarted.elapsed()), lacking);
        }
        if Instant::now() >= deadline {
            break (None, lacking);
        }
        // Until the next scan, watch for the first 200.
        let next = Instant::now() + RESTORED_POLL;
        while Instant::now() < next && lacking_at_200.is_none() {
            ctx.hold(&mut cluster, HEALTH_SAMPLE_EVERY)?;
            if health::health(&cluster.nodes[victim]).is_ok_and(|hh| hh.status == 200) {
                break;
            }
        }
        if let Some(rest) = next.checked_duration_since(Instant::now())
            && lacking_at_200.is_some()
        {
            ctx.hold(&mut cluster, rest)?;
        }
    };
    for l in &lacking {
        restored.violation(format!(
            "{l} on n{victim} {} s after its restart",
            REPAIR_WITHIN.as_secs()
        ));
    }
    if expected.len() < MIN_RESTORED_KEYS {
        restored.violation(format!(
            "vacuous: only {} acknowledged writes n{victim} replicates (minimum \
             {MIN_RESTORED_KEYS})",
            expected.len()
        ));
    }
    restored.summary = format!(
        "{} acknowledged unique writes of n{victim}'s ranges (acknowledged before its \
         restart): {} back in its own data {} ({scans_done} scans; bound {} s)",
        expected.len(),
        expected.len() - lacking.len(),
        match restored_after {
            Some(d) => format!("{:.1} s after the restart", d.as_secs_f64()),
            None => "at the deadline".to_string(),
        },
        REPAIR_WITHIN.as_secs()
    );

    // Healthy again.
    let mut healthy = Check::new("wiped-healthy");
    let healthy_wait = crate::util::poll(
        &format!("n{victim}'s /v1/health to answer 200"),
        deadline.saturating_duration_since(Instant::now()),
        || match health::health(&cluster.nodes[victim]) {
            Ok(hh) if hh.status == 200 => Ok(()),
            Ok(hh) => Err(hh.describe()),
            Err(e) => Err(format!("{e:#}")),
        },
    );
    let up_in = match healthy_wait {
        Ok(()) => {
            let at = Instant::now();
            crate::util::poll(
                &format!("every node's MEMBERS to show n{victim} up"),
                UP_GOSSIP_WITHIN,
                || health::members_show_sick(&cluster, &mut one, &[]),
            )
            .map(|()| at.elapsed())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &up_in {
        healthy.violation(format!("{e:#}"));
    }

    // The workload goes on a while with the node serving again.
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    stop.store(true, Ordering::Release);
    let samples = sampler.join().unwrap_or_default();
    let _ = probe.join();
    w.stop();

    // Bytes moved, every node, since before the wipe.
    let after: Vec<anyhow::Result<RepairView>> = (0..n)
        .map(|i| repair_view(cluster.nodes[i].admin))
        .collect();
    let mut moved = Vec::new();
    for (i, a) in after.iter().enumerate() {
        match a {
            Ok(a) => {
                // The wiped node's counters started again at its restart.
                let b = if i == victim {
                    RepairView::default()
                } else {
                    before[i].clone()
                };
                moved.push((i, a.bytes_moved.saturating_sub(b.bytes_moved)));
                ctx.report.lines.push(format!(
                    "n{i} repair since the wipe: {} cells / {} bytes moved, {} bytes read{}",
                    a.cells_moved.saturating_sub(b.cells_moved),
                    a.bytes_moved.saturating_sub(b.bytes_moved),
                    a.bytes_read.saturating_sub(b.bytes_read),
                    if i == victim { " (the wiped node)" } else { "" }
                ));
                let old: BTreeSet<String> = b.jobs.iter().map(|j| j["id"].to_string()).collect();
                for j in a
                    .jobs
                    .iter()
                    .filter(|j| !old.contains(&j["id"].to_string()))
                {
                    ctx.report
                        .lines
                        .push(format!("    n{i} {}", describe_job(j)));
                }
            }
            Err(e) => ctx
                .report
                .errors
                .push(format!("/v1/repair of n{i} after the repair: {e:#}")),
        }
    }
    let bytes = judge_bytes(&moved, expected_cells.len(), missing_bytes);

    let hv = judge_health(&samples);
    let window_end = hv.healthy_at.unwrap_or(u64::MAX);
    let window_start = hv.needs_repair_from.unwrap_or(ready_ns).min(ready_ns);
    let reads = judge_window_reads(
        &h.ops(),
        &placement,
        victim,
        window_start,
        window_end,
        MIN_WINDOW_READS_VIA_VICTIM,
    );
    ctx.report.lines.push(format!(
        "n{victim} restarted: listening {:.1} s after start; needs_repair for {} (health \
         samples naming it: {}); its code in each node's MEMBERS while it repaired (sampled every second): {}",
        ready_after.as_secs_f64(),
        match (hv.needs_repair_from, hv.healthy_at) {
            (Some(f), Some(t)) => format!("{:.2} s", (t - f) as f64 / 1e9),
            _ => "?".into(),
        },
        hv.needs_repair_samples,
        seen.iter()
            .map(|(i, c)| format!("n{i}: {}", c.join("→")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ctx.report.lines.push(format!(
        "time to repair: health 200 {:.1} s after the restart; every acknowledged write back \
         {}; acknowledged writes still missing from its data when it first answered 200: {}",
        hv.healthy_at
            .map_or(f64::NAN, |t| (t.saturating_sub(restart_ns)) as f64 / 1e9),
        restored_after.map_or("never".into(), |d| format!(
            "{:.1} s after it (scanned every {} s)",
            d.as_secs_f64(),
            RESTORED_POLL.as_secs()
        )),
        lacking_at_200.map_or("not measured".into(), |n| n.to_string())
    ));
    let healthy_after_s = hv
        .healthy_at
        .map(|t| t.saturating_sub(restart_ns) as f64 / 1e9);
    if healthy_after_s.is_some_and(|t| t > REPAIR_WITHIN.as_secs_f64()) {
        healthy.violation(format!(
            "first 200 sample {:.1} s after the restart (bound {} s)",
            healthy_after_s.unwrap_or_default(),
            REPAIR_WITHIN.as_secs()
        ));
    }
    healthy.summary = match &up_in {
        Ok(d) => format!(
            "first 200 {:.1} s after the restart (bound {} s); U in every MEMBERS {:.1} s \
             after the harness saw the 200",
            healthy_after_s.unwrap_or(f64::NAN),
            REPAIR_WITHIN.as_secs(),
            d.as_secs_f64()
        ),
        Err(_) => "not healthy and up everywhere within the bound".into(),
    };
    ctx.report.checks.push(hv.check);
    ctx.report.checks.push(reads);
    ctx.report.checks.push(restored);
    ctx.report.checks.push(bytes);
    ctx.report.checks.push(healthy);

    let _ = end_faults(ctx, &mut cluster)?;
    let last_heal = h.instant_of(ready_ns);
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: true,
            converge_within: super::CONVERGE_WITHIN,
            hints_within: super::HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: min_acked as usize,
                min_faults: 1,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(status: u16, codes: &[&str]) -> Result<Health, String> {
        Ok(Health {
            status,
            codes: codes.iter().map(|c| c.to_string()).collect(),
            reasons: Vec::new(),
        })
    }

    fn samples(seq: Vec<Result<Health, String>>) -> Vec<HealthSample> {
        seq.into_iter()
            .enumerate()
            .map(|(i, health)| HealthSample {
                at_ns: i as u64 * 50_000_000,
                health,
            })
            .collect()
    }

    #[test]
    fn health_must_say_needs_repair_before_it_is_ever_200() {
        let good = judge_health(&samples(vec![
            Err("refused".into()),
            h(503, &["not_ready"]),
            h(503, &["needs_repair"]),
            h(503, &["needs_repair"]),
            h(200, &[]),
            h(200, &[]),
        ]));
        assert!(good.check.passed(), "{:?}", good.check);
        assert_eq!(good.needs_repair_from, Some(100_000_000));
        assert_eq!(good.healthy_at, Some(200_000_000));
        assert_eq!(good.needs_repair_samples, 2);
        // 200 at once: serving an empty engine.
        let early = judge_health(&samples(vec![
            h(200, &[]),
            h(503, &["needs_repair"]),
            h(200, &[]),
        ]));
        assert_eq!(early.check.violations, 1, "{:?}", early.check);
        // Never says it.
        let never = judge_health(&samples(vec![h(503, &["not_ready"]), h(200, &[])]));
        assert_eq!(never.check.violations, 2, "{:?}", never.check);
        // Flaps back.
        let flap = judge_health(&samples(vec![
            h(503, &["needs_repair"]),
            h(200, &[]),
            h(503, &["needs_repair"]),
        ]));
        assert_eq!(flap.check.violations, 1, "{:?}", flap.check);
        assert!(!judge_health(&[]).check.passed());
    }

    fn placement() -> Placement {
        // Every key on nodes 0, 1, 2.
        Placement {
            ranges: vec![(i64::MAX, vec![0, 1, 2])],
        }
    }

    fn op(kind: OpKind, key: &str, value: Option<&str>, node: usize, t: (u64, u64)) -> Op {
        Op {
            id: 0,
            worker: "x".into(),
            kind,
            key: key.into(),
            value: value.map(str::to_string),
            level: "QUORUM".into(),
            node,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome: Outcome::Ok,
            error: None,
        }
    }

    #[test]
    fn reads_in_the_window_must_return_acknowledged_values() {
        let ops = vec![
            op(OpKind::Write, "w:0:1", Some("v1"), 0, (0, 10)),
            op(OpKind::Write, "w:0:2", Some("v2"), 0, (0, 10)),
            op(OpKind::Read, "w:0:1", Some("v1"), 2, (100, 110)),
            op(OpKind::Read, "w:0:2", Some("v2"), 1, (100, 110)),
            // After the window: not judged.
            op(OpKind::Read, "w:0:1", None, 2, (500, 510)),
        ];
        assert!(judge_window_reads(&ops, &placement(), 2, 50, 400, 1).passed());
        // The guard: not enough reads through the victim.
        assert_eq!(
            judge_window_reads(&ops, &placement(), 2, 50, 400, 2).violations,
            1
        );
        let mut bad = ops.clone();
        bad.push(op(OpKind::Read, "w:0:2", None, 2, (120, 130)));
        bad.push(op(OpKind::Read, "w:0:1", Some("v2"), 0, (120, 130)));
        assert_eq!(
            judge_window_reads(&bad, &placement(), 2, 50, 400, 1).violations,
            2
        );
        // A key the victim does not replicate is not judged.
        assert!(judge_window_reads(&bad, &placement(), 4, 50, 400, 0).passed());
    }

    fn cell(ts: u64, value: &str) -> CellInfo {
        CellInfo {
            timestamp: ts,
            tombstone: false,
            value_len: value.len() as u64,
            value_crc32c: crc32c::crc32c(value.as_bytes()),
            replicas: vec![],
        }
    }

    #[test]
    fn missing_data_is_the_newest_cell_per_key_of_the_victims_ranges() {
        let p = Placement {
            ranges: vec![(0, vec![0, 1, 2]), (i64::MAX, vec![0, 1, 3])],
        };
        let key_with = |want: bool| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| p.replicas(k).contains(&2) == want)
                .unwrap()
        };
        let (on, off) = (key_with(true), key_with(false));
        let scans = vec![
            (
                0,
                vec![(on.clone(), cell(1, "xx")), (off.clone(), cell(1, "y"))],
            ),
            (
                1,
                vec![(on.clone(), cell(2, "xxxx")), (off.clone(), cell(1, "y"))],
            ),
            // The victim's own scan is not what it should hold.
            (2, vec![(on.clone(), cell(9, "zzzzzzzz"))]),
        ];
        let e = expected_on(&scans, 2, &p);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[&on].value_len, 4);
        assert_eq!(bytes_of(&e), on.len() as u64 + 4);
    }

    #[test]
    fn restored_means_present_with_the_value_written() {
        let expected = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string()),
        ];
        let mut held = BTreeMap::new();
        held.insert("a".to_string(), cell(1, "1"));
        held.insert("b".to_string(), cell(1, "x"));
        let lacking = not_restored(&expected, &held);
        assert_eq!(lacking.len(), 2, "{lacking:?}");
        held.insert("b".to_string(), cell(2, "2"));
        held.insert("c".to_string(), cell(2, "3"));
        assert!(not_restored(&expected, &held).is_empty());
    }

    #[test]
    fn bytes_moved_are_bounded_by_twice_the_missing_data() {
        assert!(judge_bytes(&[(2, 1000), (0, 500)], 2000, 1000).passed());
        assert_eq!(
            judge_bytes(&[(2, 1500), (0, 501)], 2000, 1000).violations,
            1
        );
        // Nothing moved, or too little missing to mean anything.
        assert_eq!(judge_bytes(&[(2, 0)], 2000, 1000).violations, 1);
        assert_eq!(judge_bytes(&[(2, 10)], 3, 10).violations, 1);
    }

    #[test]
    fn the_wipe_keeps_the_identity_in_either_layout() {
        let base = std::env::temp_dir().join(format!("hsf-b5-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // The engine beside cluster/.
        let d = base.join("flat");
        std::fs::create_dir_all(d.join("cluster/hints")).unwrap();
        std::fs::create_dir_all(d.join("commitlog")).unwrap();
        std::fs::create_dir_all(d.join("ks-1")).unwrap();
        for f in [
            "cluster/node_id",
            "cluster/generation",
            "cluster/tokens",
            "cluster/peers",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        std::fs::write(d.join("MANIFEST"), "m").unwrap();
        std::fs::write(d.join("LOCK"), "").unwrap();
        let (removed, kept) = wipe_engine(&d).unwrap();
        assert_eq!(removed, vec!["LOCK", "MANIFEST", "commitlog", "ks-1"]);
        assert_eq!(kept, vec!["cluster"]);
        assert!(identity_kept(&d).is_ok());
        // Its own engine/ directory: only that goes.
        let d = base.join("nested");
        std::fs::create_dir_all(d.join("engine/ks-1")).unwrap();
        std::fs::create_dir_all(d.join("cluster")).unwrap();
        for f in [
            "node_id",
            "cluster/generation",
            "cluster/tokens",
            "cluster/peers",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        std::fs::write(d.join("other"), "x").unwrap();
        let (removed, kept) = wipe_engine(&d).unwrap();
        assert_eq!(removed, vec!["engine"]);
        assert_eq!(kept, vec!["cluster", "node_id", "other"]);
        assert!(identity_kept(&d).is_ok());
        std::fs::remove_file(d.join("cluster/tokens")).unwrap();
        assert!(identity_kept(&d).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
