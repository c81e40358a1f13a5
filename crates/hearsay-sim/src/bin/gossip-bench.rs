//! Gossip simulation benchmark (not run in CI). Build with `--release`.
//!
//! `gossip-bench [--nodes 100,1000,10000] [--modes push,pull,pushpull] [--loss 0,0.1]
//!               [--trials 20] [--crashes 5] [--seed 1]`
//!
//! For each configuration, from a converged cluster: rounds until a new state is known by
//! every node (full protocol, and anti-entropy only), bytes per node per round (quiet and
//! while disseminating), false DOWN per node-hour, crash detection time (SUSPECT and DOWN
//! everywhere). Ideal epidemics (synchronous rounds, one random partner, no byte budget) of
//! the same mode and of push-pull run alongside as references. Prints Markdown.

use std::time::Instant;

use hearsay_gossip::{GossipMode, Liveness, StateKey};
use hearsay_sim::{NetConfig, Sim, SimOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const USAGE: &str = "\
gossip-bench [--nodes 100,1000,10000] [--modes push,pull,pushpull] [--loss 0,0.1]
             [--trials 20] [--crashes 5] [--seed 1]

From a converged cluster, per configuration: rounds until a new state is known by every
node (full protocol, and anti-entropy only), bytes per node per round, false DOWN per
node-hour, crash detection time. Prints a Markdown table; build with --release.
Probes instead of the table: GOSSIP_BENCH_IDEALS=1, GOSSIP_BENCH_SPREAD_PROBE=<n>,
GOSSIP_BENCH_MONITOR_PROBE=<n>, GOSSIP_BENCH_CRASH_PROBE=<n>, GOSSIP_BENCH_MEMORY_PROBE=<n>.";

struct Args {
    nodes: Vec<usize>,
    modes: Vec<GossipMode>,
    losses: Vec<f64>,
    trials: usize,
    crashes: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: vec![100, 1_000, 10_000],
        modes: vec![GossipMode::Push, GossipMode::Pull, GossipMode::PushPull],
        losses: vec![0.0, 0.1],
        trials: 20,
        crashes: 5,
        seed: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        // Without this a lone `--help` was ignored and the full default run (up to 10 000
        // nodes, ~8 GiB) started.
        println!("{USAGE}");
        std::process::exit(0);
    }
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = &argv[i + 1];
        match argv[i].as_str() {
            "--nodes" => a.nodes = v.split(',').filter_map(|x| x.parse().ok()).collect(),
            "--modes" => {
                a.modes = v
                    .split(',')
                    .filter_map(|m| match m {
                        "push" => Some(GossipMode::Push),
                        "pull" => Some(GossipMode::Pull),
                        "pushpull" => Some(GossipMode::PushPull),
                        _ => None,
                    })
                    .collect()
            }
            "--loss" => a.losses = v.split(',').filter_map(|x| x.parse().ok()).collect(),
            "--trials" => a.trials = v.parse().unwrap_or(a.trials),
            "--crashes" => a.crashes = v.parse().unwrap_or(a.crashes),
            "--seed" => a.seed = v.parse().unwrap_or(a.seed),
            other => eprintln!("ignoring {other}"),
        }
        i += 2;
    }
    a
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// Ideal epidemic of one mode: synchronous rounds, each node contacts one uniformly random
/// partner, a contact succeeds with probability 1 - loss, no byte limit. Push: informed
/// nodes inform their partner. Pull: uninformed nodes learn from an informed partner.
/// Push-pull: either side of a successful exchange informs the other. Rounds until all know.
fn ideal_rounds(
    mode: GossipMode,
    n: usize,
    loss: f64,
    trials: usize,
    rng: &mut StdRng,
) -> Vec<f64> {
    (0..trials)
        .map(|_| {
            let mut informed = vec![false; n];
            informed[rng.random_range(0..n)] = true;
            let mut count = 1;
            let mut rounds = 0;
            while count < n && rounds < 1_000 {
                rounds += 1;
                let snap = informed.clone();
                for i in 0..n {
                    let mut j = rng.random_range(0..n - 1);
                    if j >= i {
                        j += 1;
                    }
                    let useful = match mode {
                        GossipMode::Push => snap[i] && !informed[j],
                        GossipMode::Pull => snap[j] && !informed[i],
                        GossipMode::PushPull => snap[i] || snap[j],
                    };
                    if useful && !rng.random_bool(loss) {
                        for k in [i, j] {
                            if !informed[k] {
                                informed[k] = true;
                                count += 1;
                            }
                        }
                    }
                }
            }
            rounds as f64
        })
        .collect()
}

/// Trials of each ideal epidemic: enough for a stable p99 (10 samples beyond it).
const IDEAL_TRIALS: usize = 1_000;

fn mode_name(m: GossipMode) -> &'static str {
    match m {
        GossipMode::Push => "push",
        GossipMode::Pull => "pull",
        GossipMode::PushPull => "push-pull",
    }
}

fn build(n: usize, mode: GossipMode, loss: f64, rumors: bool, seed: u64) -> Sim {
    let mut o = SimOptions::new(n, seed);
    o.mode = mode;
    o.rumors = rumors;
    o.net = NetConfig {
        loss,
        delay_ms: 1,
        jitter_ms: 4,
    };
    let mut sim = Sim::new(o).expect("sim");
    sim.start_converged().expect("start");
    sim
}

/// Rounds for a fresh state at a random node to reach every up node.
fn dissemination(sim: &mut Sim, trials: usize, rng: &mut StdRng, interval_ms: u64) -> Vec<f64> {
    let mut out = Vec::new();
    for k in 0..trials {
        let ups = sim.up_nodes();
        let origin = ups[rng.random_range(0..ups.len())];
        let x = sim.id(origin);
        let key = StateKey::Custom("bench".into());
        let Some(v) = sim.node_mut(origin).and_then(|g| {
            g.set_local_state(key.clone(), format!("{k}").into_bytes())
                .ok()
        }) else {
            continue;
        };
        let t0 = sim.now_ms();
        let t = sim.run_until_pred(t0 + 300 * interval_ms, interval_ms / 10, |s| {
            s.all_up(&[], |_, g| {
                g.member_state(x, &key).is_some_and(|e| e.version >= v)
            })
        });
        out.push(match t {
            Some(t) => (t - t0) as f64 / interval_ms as f64,
            None => f64::INFINITY,
        });
        // Let the rumor retire before the next trial.
        sim.run_for(2 * interval_ms);
    }
    out
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let args = parse_args();
    if std::env::var("GOSSIP_BENCH_IDEALS").is_ok() {
        // The ideal epidemics alone (no simulation).
        let mut rng = StdRng::seed_from_u64(args.seed);
        println!("| N | loss | ideal push (median / p99) | ideal pull | ideal push-pull |");
        println!("|---|---|---|---|---|");
        for &n in &args.nodes {
            for &loss in &args.losses {
                let cells: Vec<String> = [GossipMode::Push, GossipMode::Pull, GossipMode::PushPull]
                    .into_iter()
                    .map(|m| {
                        let mut v = ideal_rounds(m, n, loss, IDEAL_TRIALS, &mut rng);
                        format!("{:.0} / {:.0}", pct(&mut v, 0.5), pct(&mut v, 0.99))
                    })
                    .collect();
                println!("| {n} | {:.0}% | {} |", loss * 100.0, cells.join(" | "));
            }
        }
        return;
    }
    if let Ok(n) = std::env::var("GOSSIP_BENCH_SPREAD_PROBE") {
        // How a fresh state spreads: nodes that know it, every 250 ms, per trial.
        let n: usize = n.parse().unwrap_or(1_000);
        let loss = args.losses.last().copied().unwrap_or(0.1);
        for &mode in &args.modes {
            let mut sim = build(n, mode, loss, true, args.seed);
            sim.run_for(10_000);
            let mut rng = StdRng::seed_from_u64(args.seed);
            for k in 0..args.trials {
                let origin = rng.random_range(0..n);
                let x = sim.id(origin);
                let key = StateKey::Custom("probe".into());
                let Some(v) = sim.node_mut(origin).and_then(|g| {
                    g.set_local_state(key.clone(), format!("{k}").into_bytes())
                        .ok()
                }) else {
                    continue;
                };
                let mut counts = Vec::new();
                for _ in 0..40 {
                    sim.run_for(250);
                    let c = sim
                        .up_nodes()
                        .iter()
                        .filter(|i| {
                            sim.node(**i)
                                .and_then(|g| g.member_state(x, &key))
                                .is_some_and(|e| e.version >= v)
                        })
                        .count();
                    counts.push(c);
                    if c == n {
                        break;
                    }
                }
                eprintln!("{} trial {k}: known by {counts:?}", mode_name(mode));
                sim.run_for(3_000);
            }
        }
        return;
    }
    if let Ok(n) = std::env::var("GOSSIP_BENCH_MONITOR_PROBE") {
        // Where does the time from crash to DOWN everywhere go? Per crash: when each of the
        // victim's monitors crosses phi, shows it SUSPECT and DOWN; when the first node and
        // every node show DOWN.
        let n: usize = n.parse().unwrap_or(1_000);
        let loss = args.losses.last().copied().unwrap_or(0.1);
        let mut sim = build(n, GossipMode::PushPull, loss, true, args.seed);
        sim.run_for(10_000);
        let mut rng = StdRng::seed_from_u64(args.seed);
        for _ in 0..args.crashes {
            let ups = sim.up_nodes();
            let victim = ups[rng.random_range(3..ups.len())];
            let x = sim.id(victim);
            let mut by_id: Vec<(hearsay_types::NodeId, usize)> =
                ups.iter().map(|i| (sim.id(*i), *i)).collect();
            by_id.sort();
            let pos = by_id.iter().position(|(id, _)| *id == x).unwrap_or(0);
            let monitors: Vec<usize> = (1..=5).map(|k| by_id[(pos + k) % by_id.len()].1).collect();
            sim.crash(victim);
            let t0 = sim.now_ms();
            let mut phi_at = vec![None; 5];
            let mut sus_at = vec![None; 5];
            let mut down_at = vec![None; 5];
            let (mut first_down, mut all_sus, mut all_down) = (None, None, None);
            while sim.now_ms() < t0 + 30_000 && all_down.is_none() {
                sim.run_for(50);
                let now = sim.now_ms();
                for (k, &m) in monitors.iter().enumerate() {
                    let Some(g) = sim.node(m) else { continue };
                    if phi_at[k].is_none() && g.phi(x, now).is_some_and(|p| p > 8.0) {
                        phi_at[k] = Some(now - t0);
                    }
                    let l = g.liveness(x);
                    if sus_at[k].is_none() && l != Some(Liveness::Up) {
                        sus_at[k] = Some(now - t0);
                    }
                    if down_at[k].is_none() && l == Some(Liveness::Down) {
                        down_at[k] = Some(now - t0);
                    }
                }
                if first_down.is_none()
                    && sim
                        .up_nodes()
                        .iter()
                        .any(|i| sim.node(*i).and_then(|g| g.liveness(x)) == Some(Liveness::Down))
                {
                    first_down = Some(now - t0);
                }
                if all_sus.is_none() && sim.all_up(&[], |_, g| g.liveness(x) != Some(Liveness::Up))
                {
                    all_sus = Some(now - t0);
                }
                if sim.all_up(&[], |_, g| g.liveness(x) == Some(Liveness::Down)) {
                    all_down = Some(now - t0);
                }
                if let Some(fd) = first_down
                    && all_down.is_none()
                    && [100, 300, 1_000, 2_000].contains(&(now - t0 - fd))
                {
                    let hb = |i: usize| sim.node(i).and_then(|g| g.member_heartbeat(x));
                    let lag: Vec<(usize, Option<u64>)> = sim
                        .up_nodes()
                        .into_iter()
                        .filter(|i| {
                            sim.node(*i).and_then(|g| g.liveness(x)) != Some(Liveness::Down)
                        })
                        .map(|i| (i, hb(i)))
                        .collect();
                    let mon_hb: Vec<Option<u64>> = monitors.iter().map(|m| hb(*m)).collect();
                    eprintln!(
                        "  +{} ms after first DOWN: {} laggards, e.g. {:?}; monitors' hb {mon_hb:?}",
                        now - t0 - fd,
                        lag.len(),
                        &lag[..lag.len().min(6)]
                    );
                }
            }
            eprintln!(
                "crash {victim}: monitors phi>8 {phi_at:?} suspect {sus_at:?} down {down_at:?}; \
                 first DOWN {first_down:?}, SUSPECT everywhere {all_sus:?}, DOWN everywhere {all_down:?}"
            );
            sim.run_for(5_000);
        }
        return;
    }
    if let Ok(n) = std::env::var("GOSSIP_BENCH_CRASH_PROBE") {
        // Why is a crash not DOWN everywhere? Crash nodes and print the laggards' views.
        let n: usize = n.parse().unwrap_or(300);
        let mut sim = build(n, GossipMode::PushPull, 0.1, true, args.seed);
        sim.run_for(10_000);
        for k in 0..args.crashes {
            let victim = 10 + k * 7;
            let x = sim.id(victim);
            sim.crash(victim);
            let t0 = sim.now_ms();
            let d = sim.run_until_pred(t0 + 60_000, 100, |s| {
                s.all_up(&[], |_, g| g.liveness(x) == Some(Liveness::Down))
            });
            let lag: Vec<(usize, Option<Liveness>)> = sim
                .up_nodes()
                .into_iter()
                .filter_map(|i| {
                    let l = sim.node(i)?.liveness(x);
                    (l != Some(Liveness::Down)).then_some((i, l))
                })
                .collect();
            eprintln!(
                "crash {victim}: down everywhere at {:?}; {} laggards",
                d.map(|t| t - t0),
                lag.len()
            );
            for (i, l) in lag.iter().take(5) {
                let g = sim.node(*i).unwrap();
                let view = g.members(sim.now_ms());
                let v = view.iter().find(|m| m.node_id == x.to_string()).unwrap();
                eprintln!(
                    "  node {i}: {l:?} reports {} hb {} phi {:?}",
                    v.suspicion_reports, v.heartbeat, v.phi
                );
            }
            sim.run_for(5_000);
        }
        return;
    }
    if let Ok(n) = std::env::var("GOSSIP_BENCH_MEMORY_PROBE") {
        // Memory and speed probe: a converged cluster of n nodes, 10 virtual seconds.
        let n: usize = n.parse().unwrap_or(1_000);
        let t = Instant::now();
        let mut sim = build(n, GossipMode::PushPull, 0.0, true, 1);
        eprintln!(
            "converged start: {:.1} s, RSS {} MiB",
            t.elapsed().as_secs_f64(),
            rss_mib()
        );
        let t = Instant::now();
        sim.run_for(10_000);
        eprintln!(
            "10 virtual s: {:.1} s, RSS {} MiB",
            t.elapsed().as_secs_f64(),
            rss_mib()
        );
        return;
    }
    let interval_ms = 1_000;
    let mut rng = StdRng::seed_from_u64(args.seed);
    println!(
        "| N | mode | loss | rounds to all (median / p99), full protocol | rounds, anti-entropy only | ideal of this mode (median / p99) | ideal push-pull (median / p99) | bytes/node/round quiet | bytes/node/round disseminating | SUSPECT everywhere (median s) | DOWN everywhere (median s) | false DOWN per node-hour | false SUSPECT per node-hour | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let trials = if n >= 10_000 {
            args.trials.min(10)
        } else {
            args.trials
        };
        for &loss in &args.losses {
            let mut ideal = ideal_rounds(GossipMode::PushPull, n, loss, IDEAL_TRIALS, &mut rng);
            let (im, ip) = (pct(&mut ideal, 0.5), pct(&mut ideal, 0.99));
            for &mode in &args.modes {
                let (om, op) = if mode == GossipMode::PushPull {
                    (im, ip)
                } else {
                    let mut own = ideal_rounds(mode, n, loss, IDEAL_TRIALS, &mut rng);
                    (pct(&mut own, 0.5), pct(&mut own, 0.99))
                };
                let wall = Instant::now();
                let seed = rng.random();
                // Full protocol.
                let mut sim = build(n, mode, loss, true, seed);
                sim.run_for(10 * interval_ms);
                let ups = n as f64;
                let b0 = sim.bytes_sent;
                let quiet_s = if n >= 10_000 { 20 } else { 60 };
                sim.run_for(quiet_s * interval_ms);
                let quiet = (sim.bytes_sent - b0) as f64 / (ups * quiet_s as f64);
                eprintln!(
                    "[{n} {} {loss}] quiet bytes/node/round {quiet:.0} ({:.0} s)",
                    mode_name(mode),
                    wall.elapsed().as_secs_f64()
                );
                let b1 = sim.bytes_sent;
                let t1 = sim.now_ms();
                let mut full = dissemination(&mut sim, trials, &mut rng, interval_ms);
                let busy = (sim.bytes_sent - b1) as f64
                    / (ups * ((sim.now_ms() - t1) as f64 / interval_ms as f64));
                eprintln!(
                    "[{n} {} {loss}] full-protocol rounds {full:?}, busy bytes/node/round {busy:.0} ({:.0} s)",
                    mode_name(mode),
                    wall.elapsed().as_secs_f64()
                );
                // Crashes.
                let mut sus = Vec::new();
                let mut down = Vec::new();
                let mut victims = Vec::new();
                for _ in 0..args.crashes {
                    let ups = sim.up_nodes();
                    let victim = ups[rng.random_range(args.crashes.min(ups.len() - 1)..ups.len())];
                    let x = sim.id(victim);
                    victims.push(x);
                    sim.crash(victim);
                    let t0 = sim.now_ms();
                    let s = sim.run_until_pred(t0 + 60 * interval_ms, 100, |s| {
                        s.all_up(&[], |_, g| g.liveness(x) != Some(Liveness::Up))
                    });
                    let d = sim.run_until_pred(t0 + 60 * interval_ms, 100, |s| {
                        s.all_up(&[], |_, g| g.liveness(x) == Some(Liveness::Down))
                    });
                    sus.push(s.map_or(f64::INFINITY, |t| (t - t0) as f64 / 1_000.0));
                    down.push(d.map_or(f64::INFINITY, |t| (t - t0) as f64 / 1_000.0));
                    eprintln!(
                        "[{n} {} {loss}] crash: suspect everywhere {:?} s, down {:?} s ({:.0} s)",
                        mode_name(mode),
                        sus.last(),
                        down.last(),
                        wall.elapsed().as_secs_f64()
                    );
                    sim.run_for(5 * interval_ms);
                }
                let hours = sim.now_ms() as f64 / 3_600_000.0;
                let false_down = sim.false_down_events() as f64 / (n as f64 * hours);
                let true_suspects: u64 = victims.iter().map(|v| sim.suspect_events(Some(*v))).sum();
                let false_suspect =
                    (sim.suspect_events(None) - true_suspects) as f64 / (n as f64 * hours);
                drop(sim);
                // Anti-entropy only.
                let mut ae_sim = build(n, mode, loss, false, seed ^ 0x5eed);
                ae_sim.run_for(5 * interval_ms);
                let ae_trials = trials.min(10);
                let mut ae = dissemination(&mut ae_sim, ae_trials, &mut rng, interval_ms);
                drop(ae_sim);
                println!(
                    "| {n} | {} | {:.0}% | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} |",
                    mode_name(mode),
                    loss * 100.0,
                    pct(&mut full, 0.5),
                    pct(&mut full, 0.99),
                    pct(&mut ae, 0.5),
                    pct(&mut ae, 0.99),
                    om,
                    op,
                    im,
                    ip,
                    quiet,
                    busy,
                    pct(&mut sus, 0.5),
                    pct(&mut down, 0.5),
                    false_down,
                    false_suspect,
                    wall.elapsed().as_secs_f64(),
                );
            }
        }
    }
}
