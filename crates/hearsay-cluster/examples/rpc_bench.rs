//! Micro-benchmark: typed `Ping` round trips per second over one loopback connection, with
//! 1, 16 and 64 concurrent callers (client and server in one process).
//!
//! `cargo run --release -p hearsay-cluster --example rpc_bench -- [seconds_per_step]`

use hearsay_cluster::rpc::{
    ClusterSecret, Identity, Ping, Registry, RpcClient, RpcConfig, RpcContext, RpcServer,
};
use hearsay_types::{Hlc, NodeId, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let server = RpcServer::bind(
        ctx(1),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Registry::new(),
    )
    .await?;
    let addr = server.local_addr();
    let client = RpcClient::new(ctx(2));
    client.ping(addr, Duration::from_secs(1)).await?;
    println!("typed Ping round trips over one connection, {seconds} s per step");
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "callers", "calls/s", "mean_us", "max_us"
    );
    for callers in [1usize, 16, 64] {
        let stop = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let (mut n, mut total_us, mut max_us) = (0u64, 0u128, 0u128);
                while Instant::now() < stop {
                    let t = Instant::now();
                    client
                        .call(addr, &Ping { payload: n }, Duration::from_secs(5))
                        .await
                        .expect("ping");
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
        println!(
            "{callers:>8} {:>12.0} {:>10.1} {:>10}",
            n as f64 / secs,
            total_us as f64 / n.max(1) as f64,
            max_us
        );
    }
    let s = client.peer_stats(addr).unwrap_or_default();
    println!(
        "connections: {}, errors: {:?}, bytes out/in: {}/{}",
        s.connects, s.errors, s.bytes_out, s.bytes_in
    );
    server.shutdown().await;
    Ok(())
}
