//! The RPC layer over the in-memory network seam: same protocol, no sockets, links that can
//! be cut — the way the coordinator's partition tests will drive it.

mod common;

use common::{CLUSTER, Gates, SECRET, context, fast_config, wait_until};
use hearsay_cluster::rpc::{MemNetwork, Ping, Registry, Rpc, RpcClient, RpcErrorKind, RpcServer};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    id: u64,
}
impl Rpc for Parked {
    const METHOD: u16 = 101;
    const NAME: &'static str = "Parked";
    type Response = u64;
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 7381))
}

fn serve(net: &MemNetwork, node: u8, gates: &Gates) -> RpcServer {
    let mut registry = Registry::new();
    let g = gates.clone();
    registry
        .register_fn::<Parked, _, _>(move |_, p| {
            let g = g.clone();
            async move {
                g.park(p.id).await;
                Ok(p.id)
            }
        })
        .unwrap();
    let listener = net.bind(addr(node)).unwrap();
    RpcServer::serve(
        context(u128::from(node), CLUSTER, SECRET, fast_config()),
        Box::new(listener),
        registry,
    )
    .unwrap()
}

fn client(net: &MemNetwork, node: u8) -> RpcClient {
    RpcClient::with_transport(
        context(u128::from(node), CLUSTER, SECRET, fast_config()),
        Arc::new(net.transport(addr(node))),
    )
}

#[tokio::test]
async fn round_trip_over_the_in_memory_network() {
    let net = MemNetwork::new();
    let gates = Gates::default();
    let _srv = serve(&net, 1, &gates);
    let cli = client(&net, 2);
    let pong = cli
        .call(addr(1), &Ping { payload: 3 }, SECOND)
        .await
        .unwrap();
    assert_eq!(pong.payload, 3);
    cli.ping(addr(1), SECOND).await.unwrap();
    // Nothing listens on 127.0.0.9: refused at once, not after a timeout.
    let err = cli.ping(addr(9), LONG).await.unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable);
    assert!(err.to_string().contains("nothing listens"), "{err}");
}

#[tokio::test]
async fn a_partition_fails_waiting_calls_at_once_and_healing_reconnects() {
    let net = MemNetwork::new();
    let gates = Gates::default();
    let _srv = serve(&net, 1, &gates);
    let cli = client(&net, 2);
    cli.ping(addr(1), SECOND).await.unwrap();

    let waiting = {
        let cli = cli.clone();
        tokio::spawn(async move { cli.call(addr(1), &Parked { id: 1 }, LONG).await })
    };
    wait_until("request parked on the server", LONG, || gates.parked() == 1).await;
    let start = tokio::time::Instant::now();
    net.cut(addr(1), addr(2));
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable, "{err}");
    assert!(
        start.elapsed() < SECOND,
        "waited {:?} despite the cut",
        start.elapsed()
    );

    // While partitioned: the redial fails, then calls fail fast under backoff.
    let err = cli.ping(addr(1), SECOND).await.unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    let err = cli.ping(addr(1), SECOND).await.unwrap_err();
    assert!(err.to_string().contains("not retrying"), "{err}");

    net.heal();
    let start = tokio::time::Instant::now();
    while cli.ping(addr(1), SECOND).await.is_err() {
        assert!(start.elapsed() < LONG, "never reconnected after heal");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = cli.peer_stats(addr(1)).unwrap();
    assert_eq!((s.connects, s.reconnects), (2, 1), "{s:?}");
}

#[tokio::test]
async fn a_restarted_peer_is_found_again() {
    let net = MemNetwork::new();
    let gates = Gates::default();
    let srv = serve(&net, 1, &gates);
    let cli = client(&net, 2);
    cli.ping(addr(1), SECOND).await.unwrap();
    srv.shutdown().await;
    assert!(cli.ping(addr(1), SECOND).await.is_err());
    let _srv = serve(&net, 1, &gates);
    let start = tokio::time::Instant::now();
    while cli.ping(addr(1), SECOND).await.is_err() {
        assert!(start.elapsed() < LONG, "never reconnected after restart");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cli.peer_stats(addr(1)).unwrap().reconnects, 1);
}

#[tokio::test]
async fn forgetting_a_peer_closes_its_connection_and_drops_its_state() {
    let net = MemNetwork::new();
    let gates = Gates::default();
    let srv = serve(&net, 1, &gates);
    let cli = client(&net, 2);
    cli.ping(addr(1), SECOND).await.unwrap();
    assert!(cli.peer_stats(addr(1)).is_some());
    cli.forget(addr(1));
    assert!(cli.peer_stats(addr(1)).is_none());
    assert!(!cli.is_connected(addr(1)));
    wait_until("server sees the connection end", LONG, || {
        srv.stats().snapshot().connections_open == 0
    })
    .await;
    // Calling again starts afresh.
    cli.ping(addr(1), SECOND).await.unwrap();
    assert_eq!(cli.peer_stats(addr(1)).unwrap().connects, 1);
}
