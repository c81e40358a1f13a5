//! Throughput probe of three in-process nodes (a bench binary, `harness = false`; moved from
//! the ignored test `throughput_probe` of `tests/node_cluster.rs`):
//! `cargo bench -p hearsay-cluster --bench node_throughput`. Three nodes on 127.0.0.1 in one
//! process (real TCP RPC and UDP gossip, engine `SyncMode::None`), RF=3; 16 concurrent callers
//! spread over the three coordinators, 4,000 writes then 4,000 reads of 16-byte values at ONE,
//! QUORUM and ALL; prints ops/s per row. Indicative only: `hearsay bench` against real
//! processes (`bench/cluster_matrix.sh`) is the measurement that counts. Figures:
//! `docs/cluster.md`, "Throughput probe".

use bytes::Bytes;
use hearsay_cluster::node::{Node, NodeConfig};
use hearsay_ring::token_of;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, SyncMode};
use hearsay_types::{ConsistencyLevel, SystemClock, Timestamp};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUORUM: ConsistencyLevel = ConsistencyLevel::Quorum;
const ONE: ConsistencyLevel = ConsistencyLevel::One;
const ALL: ConsistencyLevel = ConsistencyLevel::All;
/// Generous bound for the ring to form on a busy 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);

/// The configuration of `tests/node_cluster.rs`: 100 ms gossip rounds, short timeouts.
fn config(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: data.to_path_buf(),
        cluster_addr: addr,
        seeds,
        cluster_name: "node-bench".into(),
        secret: "s3cret".into(),
        write_timeout_ms: 1_000,
        read_timeout_ms: 1_000,
        join_wait_ms: 5_000,
        ..NodeConfig::default()
    };
    c.gossip.interval_ms = 100;
    c.rpc.backoff_max_ms = 200;
    c.rpc.connect_timeout_ms = 500;
    c.hints.retry_initial_ms = 100;
    c.hints.retry_max_ms = 500;
    c.hints.sync_interval_ms = 100;
    c
}

async fn start(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>) -> Arc<Node> {
    let mut ec = EngineConfig::new(data.join("engine"));
    ec.sync_mode = SyncMode::None;
    let engine = Arc::new(Engine::open(ec).expect("engine opens"));
    let node = Node::start(config(data, addr, seeds), engine, Arc::new(SystemClock))
        .await
        .expect("node starts");
    Arc::new(node)
}

/// Three nodes, A the seed; returns once every node routes by a ring of three members.
async fn cluster(dir: &Path) -> Vec<Arc<Node>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = start(&dir.join("a"), any, vec![]).await;
    let seed = a.cluster_addr();
    let b = start(&dir.join("b"), any, vec![seed]).await;
    let c = start(&dir.join("c"), any, vec![seed]).await;
    let nodes = vec![a, b, c];
    for n in &nodes {
        n.refresh_view();
    }
    let t = Instant::now();
    while !nodes.iter().all(|n| {
        let v = n.view();
        v.ring.len() == 3 && v.alive.len() == 3
    }) {
        assert!(
            t.elapsed() < CONVERGE,
            "the ring did not form within {CONVERGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

fn cell(key: &str, value: &str) -> (CellKey, Cell) {
    (
        CellKey::new(
            token_of(key.as_bytes()),
            Bytes::copy_from_slice(key.as_bytes()),
        ),
        Cell::value(Bytes::copy_from_slice(value.as_bytes()), Timestamp(0)),
    )
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this probe has no options.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(probe());
}

async fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    const CALLERS: usize = 16;
    const OPS_PER_CALLER: usize = 250;
    for level in [ONE, QUORUM, ALL] {
        for write in [true, false] {
            let t = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..CALLERS {
                let node = nodes[c % 3].clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..OPS_PER_CALLER {
                        let k = format!("bench-{c}-{i}");
                        if write {
                            node.write("default", vec![cell(&k, "0123456789abcdef")], level)
                                .await
                                .unwrap();
                        } else {
                            node.read("default", k.as_bytes(), level).await.unwrap();
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let ops = (CALLERS * OPS_PER_CALLER) as f64;
            eprintln!(
                "{} {level}: {:.0} ops/s ({CALLERS} callers over 3 coordinators)",
                if write { "write" } else { "read " },
                ops / t.elapsed().as_secs_f64()
            );
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
