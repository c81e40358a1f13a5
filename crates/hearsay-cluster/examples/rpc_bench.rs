//! Micro-benchmark: typed round trips per second over one loopback connection, with 1, 16
//! and 64 concurrent callers (client and server in one process): `Ping` (a few bytes each
//! way), then a 4 KiB echo (about a small value's mutation and its read).
//!
//! `cargo run --release -p hearsay-cluster --example rpc_bench -- [seconds_per_step]`

use hearsay_cluster::rpc::{
    ClusterSecret, Identity, Ping, Registry, Rpc, RpcClient, RpcConfig, RpcContext, RpcServer,
};
use hearsay_types::{Hlc, NodeId, SystemClock};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct Blob(Vec<u8>);
impl Rpc for Blob {
    const METHOD: u16 = 16;
    const NAME: &'static str = "Blob";
    type Response = Blob;
}

fn ctx(node: u128) -> Arc<RpcContext> {
    RpcContext::new(
        Identity {
            node_id: NodeId(node),
            cluster_name: "bench".into(),
            secret: ClusterSecret::new(b"bench-secret".to_vec()),
        },
        RpcConfig::default(),
        Arc::new(Hlc::new(Arc::new(SystemClock))),
    )
    .expect("default config is valid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let mut registry = Registry::new();
    registry.register_fn::<Blob, _, _>(|_, b| async move { Ok(b) })?;
    let server = RpcServer::bind(ctx(1), SocketAddr::from(([127, 0, 0, 1], 0)), registry).await?;
    let addr = server.local_addr();
    let client = RpcClient::new(ctx(2));
    client.ping(addr, Duration::from_secs(1)).await?;
    println!("round trips over one connection, {seconds} s per step");
    println!(
        "{:>10} {:>8} {:>12} {:>10} {:>10}",
        "message", "callers", "calls/s", "mean_us", "max_us"
    );
    for blob_bytes in [0usize, 4096] {
        for callers in [1usize, 16, 64] {
            let stop = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..callers {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut n, mut total_us, mut max_us) = (0u64, 0u128, 0u128);
                    let blob = Blob(vec![7; blob_bytes]);
                    while Instant::now() < stop {
                        let t = Instant::now();
                        let timeout = Duration::from_secs(5);
                        if blob_bytes == 0 {
                            client
                                .call(addr, &Ping { payload: n }, timeout)
                                .await
                                .expect("ping");
                        } else {
                            client.call(addr, &blob, timeout).await.expect("blob");
                        }
                        let us = t.elapsed().as_micros();
                        total_us += us;
                        max_us = max_us.max(us);
                        n += 1;
                    }
                    (n, total_us, max_us)
                }));
            }
            let start = Instant::now();
            let (mut n, mut total_us, mut max_us) = (0u64, 0u128, 0u128);
            for t in tasks {
                let (a, b, c) = t.await?;
                n += a;
                total_us += b;
                max_us = max_us.max(c);
            }
            let secs = start.elapsed().as_secs_f64();
            let name = if blob_bytes == 0 { "Ping" } else { "echo 4KiB" };
            println!(
                "{name:>10} {callers:>8} {:>12.0} {:>10.1} {:>10}",
                n as f64 / secs,
                total_us as f64 / n.max(1) as f64,
                max_us
            );
        }
    }
    let s = client.peer_stats(addr).unwrap_or_default();
    println!(
        "connections: {}, errors: {:?}, bytes out/in: {}/{}",
        s.connects, s.errors, s.bytes_out, s.bytes_in
    );
    server.shutdown().await;
    Ok(())
}
