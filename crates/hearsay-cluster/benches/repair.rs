//! Repair cost (issue 20, item 8): `cargo bench -p hearsay-cluster --bench repair`
//! (`REPAIR_BENCH_KEYS=N` to change the size; default 1,000,000;
//! `REPAIR_BENCH_BUDGET_ONLY=1` for the budgeted row alone).
//!
//! Three in-process nodes on 127.0.0.1 (real TCP RPC, engine `SyncMode::None`), RF=3, the
//! same N keys × 100-byte values loaded straight into every replica's engine. For each
//! difference rate (0%, 0.1%, 1%, 10%) a fresh newer version of that share of keys is written
//! to two replicas only (the third is stale for them), then one repair job from node A
//! covers every range; beside each, the same differences are made again and repaired by the
//! naive full comparison (every cell of every replica read and shipped, no trees). A last
//! row runs the 10% case under a byte budget to show the budget holds.
//!
//! Columns: wall time; bytes on the wire (every node's RPC requests and responses);
//! bytes the repair read from the engines (the repair's own count of what the engine's
//! scans returned, over all nodes); CPU seconds of the process (all three nodes); cells
//! and bytes moved. Loaded timestamps lie minutes in the past, so a repair's snapshot
//! (which leaves out writes younger than the write timeout) covers them all.

use bytes::Bytes;
use hearsay_cluster::node::repair::RepairRequest;
use hearsay_cluster::node::{Node, NodeConfig};
use hearsay_ring::token_of;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, SyncMode};
use hearsay_types::{ConsistencyLevel, SystemClock, Timestamp};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bound for the ring to form on a busy 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);
/// Value size, bytes (the 100 B).
const VALUE_BYTES: usize = 100;
/// Cells per engine batch while loading.
const LOAD_BATCH: usize = 1_000;
/// The budget of the last row, bytes per second: the default `[cluster.repair]
/// bytes_per_sec`, which paces a 10% repair of the default size (the row that also measures
/// a foreground workload's latency before and during the repair).
const BUDGET_BYTES_PER_SEC: u64 = 16 << 20;
/// Concurrent callers of the foreground workload.
const FG_CALLERS: usize = 4;
/// Pause between a caller's pairs: a steady moderate load, not a saturating one (a
/// saturated 2-core machine measures the queue, not the repair's impact).
const FG_PAUSE: Duration = Duration::from_millis(2);
/// How long the foreground load runs alone before the repair, for its baseline.
const FG_BASELINE: Duration = Duration::from_secs(10);
/// "Unlimited" for the measured rows: the CPU is the bottleneck.
const UNLIMITED: u64 = 1 << 40;

fn config(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: data.to_path_buf(),
        cluster_addr: addr,
        seeds,
        cluster_name: "repair-bench".into(),
        secret: "s3cret".into(),
        join_wait_ms: 5_000,
        ..NodeConfig::default()
    };
    c.gossip.interval_ms = 100;
    c.repair.enabled = false;
    c.repair.bytes_per_sec = UNLIMITED;
    c
}

async fn start(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>, budget: u64) -> Arc<Node> {
    let mut ec = EngineConfig::new(data.join("engine"));
    ec.sync_mode = SyncMode::None;
    let engine = Arc::new(Engine::open(ec).expect("engine opens"));
    let mut cfg = config(data, addr, seeds);
    cfg.repair.bytes_per_sec = budget;
    let node = Node::start(cfg, engine, Arc::new(SystemClock))
        .await
        .expect("node starts");
    Arc::new(node)
}

async fn cluster(dir: &Path, budget: u64) -> Vec<Arc<Node>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = start(&dir.join("a"), any, vec![], budget).await;
    let seed = a.cluster_addr();
    let b = start(&dir.join("b"), any, vec![seed], budget).await;
    let c = start(&dir.join("c"), any, vec![seed], budget).await;
    let nodes = vec![a, b, c];
    let t = Instant::now();
    while !nodes.iter().all(|n| {
        let v = n.view();
        v.ring.len() == 3 && v.alive.len() == 3
    }) {
        assert!(t.elapsed() < CONVERGE, "the ring did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

fn key(i: usize) -> CellKey {
    let k = format!("key-{i:09}");
    CellKey::new(token_of(k.as_bytes()), Bytes::from(k))
}

fn value(i: usize, version: u64) -> Bytes {
    let mut v = format!("{i:09}-{version:04}-").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    Bytes::from(v)
}

/// Writes `version` of every key `i` with `pick(i)` into the given engines, at `ts`.
fn load(
    engines: &[&Arc<Engine>],
    n: usize,
    version: u64,
    ts: Timestamp,
    pick: impl Fn(usize) -> bool,
) {
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    for i in (0..n).filter(|i| pick(*i)) {
        batch.push((key(i), Cell::value(value(i, version), ts)));
        if batch.len() == LOAD_BATCH {
            for e in engines {
                e.apply("default", &batch).expect("load");
            }
            batch.clear();
        }
    }
    if !batch.is_empty() {
        for e in engines {
            e.apply("default", &batch).expect("load");
        }
    }
}

/// CPU seconds (user + system) of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

struct Row {
    wall: Duration,
    wire: u64,
    read: u64,
    cpu: f64,
    /// Bytes read by the node that read the most (each node has its own budget).
    busiest_read: u64,
    /// Bytes charged to the budget of the node charged the most.
    busiest_charged: u64,
    cells_moved: u64,
    bytes_moved: u64,
}

async fn repair(nodes: &[Arc<Node>], full: bool) -> Row {
    let wire0: u64 = nodes
        .iter()
        .map(|n| n.rpc_bytes().0 + n.rpc_bytes().1)
        .sum();
    let reads0: Vec<u64> = nodes.iter().map(|n| n.repair_stats().bytes_read).collect();
    let charged0: Vec<u64> = nodes
        .iter()
        .map(|n| n.repair_stats().bytes_charged)
        .collect();
    let read0: u64 = reads0.iter().sum();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let id = nodes[0]
        .start_repair(RepairRequest {
            keyspace: Some("default".into()),
            range: None,
            full,
        })
        .await
        .expect("repair starts");
    let job = loop {
        if let Some(j) = nodes[0]
            .repair_stats()
            .jobs
            .into_iter()
            .find(|j| j.id == id && j.finished_ms.is_some())
        {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = t.elapsed();
    assert_eq!(job.failed, 0, "{:?}", job.last_error);
    Row {
        wall,
        wire: nodes
            .iter()
            .map(|n| n.rpc_bytes().0 + n.rpc_bytes().1)
            .sum::<u64>()
            - wire0,
        read: nodes
            .iter()
            .map(|n| n.repair_stats().bytes_read)
            .sum::<u64>()
            - read0,
        cpu: cpu_seconds() - cpu0,
        busiest_charged: nodes
            .iter()
            .zip(&charged0)
            .map(|(n, c0)| n.repair_stats().bytes_charged - c0)
            .max()
            .unwrap_or(0),
        busiest_read: nodes
            .iter()
            .zip(&reads0)
            .map(|(n, r0)| n.repair_stats().bytes_read - r0)
            .max()
            .unwrap_or(0),
        cells_moved: job.totals.cells_moved,
        bytes_moved: job.totals.bytes_moved,
    }
}

/// Foreground QUORUM load: `FG_CALLERS` callers, each alternating a write and a read of its
/// own keys through nodes B and C, until `stop`; returns every call's latency in µs.
async fn foreground(nodes: &[Arc<Node>], stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut tasks = Vec::new();
    for c in 0..FG_CALLERS {
        let node = nodes[1 + c % 2].clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let k = format!("fg-{c}-{}", i % 1_000);
                let t = Instant::now();
                let (ck, cell) = (
                    CellKey::new(token_of(k.as_bytes()), Bytes::from(k.clone())),
                    Cell::value(value(i as usize, 0), node.hlc().now()),
                );
                node.write("default", vec![(ck, cell)], ConsistencyLevel::Quorum)
                    .await
                    .expect("foreground write");
                lat.push(t.elapsed().as_micros() as u64);
                let t = Instant::now();
                node.read("default", k.as_bytes(), ConsistencyLevel::Quorum)
                    .await
                    .expect("foreground read");
                lat.push(t.elapsed().as_micros() as u64);
                i += 1;
                tokio::time::sleep(FG_PAUSE).await;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1_000.0
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}

async fn bench() {
    let n: usize = std::env::var("REPAIR_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // `REPAIR_BENCH_BUDGET_ONLY=1`: only the budgeted row (with the foreground workload).
    let budget_only = std::env::var_os("REPAIR_BENCH_BUDGET_ONLY").is_some();
    let dir = tempfile::tempdir().unwrap();
    for (budget, rates) in [
        (UNLIMITED, vec![0.0_f64, 0.001, 0.01, 0.1]),
        (BUDGET_BYTES_PER_SEC, vec![0.1_f64]),
    ] {
        if budget_only && budget == UNLIMITED {
            continue;
        }
        let nodes = cluster(&dir.path().join(format!("b{budget}")), budget).await;
        let engines: Vec<&Arc<Engine>> = nodes.iter().map(|n| n.engine()).collect();
        // Ten minutes ago, in µs: older than any snapshot's in-flight window.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
            - 600_000_000;
        let t = Instant::now();
        load(&engines, n, 0, Timestamp(base), |_| true);
        let data_bytes = (n * (VALUE_BYTES + 13)) as u64;
        eprintln!(
            "loaded {n} keys x {VALUE_BYTES} B on 3 replicas in {:.1}s ({:.0} MiB per replica)",
            t.elapsed().as_secs_f64(),
            mib(data_bytes)
        );
        if budget == UNLIMITED {
            println!(
                "| diff | mode | wall s | wire MiB | wire % of data | engine read MiB | CPU s | cells moved | moved MiB | moved / differing |"
            );
            println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        let mut version = 0;
        for rate in rates {
            for full in [false, true] {
                if budget != UNLIMITED && full {
                    continue;
                }
                version += 1;
                let every = if rate > 0.0 {
                    (1.0 / rate).round() as usize
                } else {
                    0
                };
                // A newer version on A and B only: C is stale for `rate` of the keys.
                load(
                    &engines[..2],
                    n,
                    version,
                    Timestamp(base + version * 1_000),
                    |i| every > 0 && i % every == 0,
                );
                let measure_fg = budget != UNLIMITED;
                let mut baseline = Vec::new();
                let mut fg = None;
                if measure_fg {
                    let stop = Arc::new(AtomicBool::new(false));
                    let (n2, s2) = (nodes.clone(), stop.clone());
                    let before = tokio::spawn(async move { foreground(&n2, s2).await });
                    tokio::time::sleep(FG_BASELINE).await;
                    stop.store(true, Relaxed);
                    baseline = before.await.expect("baseline");
                    let stop = Arc::new(AtomicBool::new(false));
                    let (n2, s2) = (nodes.clone(), stop.clone());
                    fg = Some((stop, tokio::spawn(async move { foreground(&n2, s2).await })));
                }
                let r = repair(&nodes, full).await;
                if let Some((stop, during)) = fg {
                    stop.store(true, Relaxed);
                    let during = during.await.expect("during");
                    println!(
                        "foreground QUORUM ({FG_CALLERS} callers, write+read pairs): before the repair p50 {:.2} ms p99 {:.2} ms ({} calls); during it p50 {:.2} ms p99 {:.2} ms ({} calls); p99 ratio {:.2}",
                        pct(&baseline, 0.5),
                        pct(&baseline, 0.99),
                        baseline.len(),
                        pct(&during, 0.5),
                        pct(&during, 0.99),
                        during.len(),
                        pct(&during, 0.99) / pct(&baseline, 0.99).max(0.001)
                    );
                }
                let differing = if every > 0 {
                    n.div_ceil(every) as u64 * (VALUE_BYTES + 13) as u64
                } else {
                    0
                };
                let label = if budget == UNLIMITED {
                    format!("{:.1}%", rate * 100.0)
                } else {
                    format!(
                        "{:.1}%, budget {} MiB/s per node: busiest node charged {:.1} MiB/s, read {:.1} MiB/s",
                        rate * 100.0,
                        budget >> 20,
                        mib(r.busiest_charged) / r.wall.as_secs_f64(),
                        mib(r.busiest_read) / r.wall.as_secs_f64()
                    )
                };
                println!(
                    "| {label} | {} | {:.2} | {:.1} | {:.2}% | {:.1} | {:.1} | {} | {:.2} | {} |",
                    if full { "naive full" } else { "trees" },
                    r.wall.as_secs_f64(),
                    mib(r.wire),
                    100.0 * r.wire as f64 / data_bytes as f64,
                    mib(r.read),
                    r.cpu,
                    r.cells_moved,
                    mib(r.bytes_moved),
                    if differing > 0 {
                        format!("{:.2}", r.bytes_moved as f64 / differing as f64)
                    } else {
                        "-".into()
                    },
                );
            }
        }
        for node in &nodes {
            node.shutdown().await;
        }
    }
}
