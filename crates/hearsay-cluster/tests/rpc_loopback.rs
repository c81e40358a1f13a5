//! Client and server over real loopback TCP: round trips, multiplexing, deadlines, bounds,
//! reconnection.

mod common;

use common::{Gates, client, fast_config, server, wait_until};
use hearsay_cluster::rpc::{
    CallContext, Handler, HandlerError, Ping, Registry, Rpc, RpcClient, RpcConfig, RpcError,
    RpcErrorKind, RpcServer,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

const SECOND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Echo {
    id: u64,
    text: String,
}
impl Rpc for Echo {
    const METHOD: u16 = 100;
    const NAME: &'static str = "Echo";
    type Response = Echo;
}

/// Blocks in the handler until the test releases it; answers with its id.
#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    id: u64,
}
impl Rpc for Parked {
    const METHOD: u16 = 101;
    const NAME: &'static str = "Parked";
    type Response = u64;
}

#[derive(Debug, Serialize, Deserialize)]
struct Fail;
impl Rpc for Fail {
    const METHOD: u16 = 102;
    const NAME: &'static str = "Fail";
    type Response = ();
}

#[derive(Debug, Serialize, Deserialize)]
struct NotRegistered;
impl Rpc for NotRegistered {
    const METHOD: u16 = 103;
    const NAME: &'static str = "NotRegistered";
    type Response = ();
}

#[derive(Debug, Serialize, Deserialize)]
struct Big {
    data: Vec<u8>,
}
impl Rpc for Big {
    const METHOD: u16 = 104;
    const NAME: &'static str = "Big";
    type Response = u64;
}

/// A small request whose answer may be big: declared LARGE, so it takes the bulk lane.
#[derive(Debug, Serialize, Deserialize)]
struct Scan {
    bytes: u32,
}
impl Rpc for Scan {
    const METHOD: u16 = 106;
    const NAME: &'static str = "Scan";
    type Response = Vec<u8>;
    const LARGE: bool = true;
}

/// Panics in the handler: before returning its future, or while it runs.
#[derive(Debug, Serialize, Deserialize)]
struct Boom {
    in_future: bool,
}
impl Rpc for Boom {
    const METHOD: u16 = 105;
    const NAME: &'static str = "Boom";
    type Response = ();
}

/// A handler object (rather than a closure), as the coordinator's will be.
struct EchoHandler;

impl Handler<Echo> for EchoHandler {
    async fn handle(&self, ctx: CallContext, e: Echo) -> Result<Echo, HandlerError> {
        assert!(
            ctx.deadline > tokio::time::Instant::now(),
            "runs before its deadline"
        );
        Ok(e)
    }
}

fn registry(gates: &Gates) -> Registry {
    let mut r = Registry::new();
    r.register::<Echo, _>(Arc::new(EchoHandler)).unwrap();
    let dup = r.register_fn::<Echo, _, _>(|_, e| async move { Ok(e) });
    assert!(dup.unwrap_err().to_string().contains("already registered"));
    r.register_fn::<Boom, _, _>(|_, b| {
        if !b.in_future {
            panic!("sync boom");
        }
        async move {
            if b.in_future {
                panic!("async boom");
            }
            Ok(())
        }
    })
    .unwrap();
    let g = gates.clone();
    r.register_fn::<Parked, _, _>(move |_, p| {
        let g = g.clone();
        async move {
            g.park(p.id).await;
            Ok(p.id)
        }
    })
    .unwrap();
    r.register_fn::<Fail, _, _>(|_, _| async { Err(HandlerError::new("disk on fire")) })
        .unwrap();
    r.register_fn::<Scan, _, _>(|_, s| async move { Ok(vec![1; s.bytes as usize]) })
        .unwrap();
    r.register_fn::<Big, _, _>(|_, b| async move { Ok(b.data.len() as u64) })
        .unwrap();
    r
}

async fn setup() -> (RpcServer, RpcClient, Gates) {
    let gates = Gates::default();
    let srv = server(1, registry(&gates)).await;
    (srv, client(2), gates)
}

#[tokio::test]
async fn round_trip_over_loopback() {
    let (srv, cli, _) = setup().await;
    let addr = srv.local_addr();
    let echo = Echo {
        id: 7,
        text: "hello".into(),
    };
    let back = cli.call(addr, &echo, SECOND).await.unwrap();
    assert_eq!(back, echo);
    let pong = cli.call(addr, &Ping { payload: 99 }, SECOND).await.unwrap();
    assert_eq!(pong.payload, 99);
    assert_eq!(
        pong.node,
        common::identity(1, "", "").node_id,
        "server proves its id"
    );
    // An unbounded timeout is clamped, not an arithmetic overflow.
    cli.ping(addr, Duration::MAX).await.unwrap();

    let stats = cli.peer_stats(addr).unwrap();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.successes, 3);
    assert_eq!(stats.connects, 1, "all calls share one connection");
    assert_eq!(stats.node_id, Some(pong.node));
    assert!(stats.bytes_out > 0 && stats.bytes_in > 0);
    assert_eq!(stats.in_flight, 0);
    let s = srv.stats().snapshot();
    assert_eq!(s.handshakes_ok, 1);
    assert_eq!(s.requests, 2);
    assert!(s.pings >= 1, "the frame-level ping (plus any keepalive)");
    assert_eq!(s.responses_ok, 2);
    // The server counts per authenticated client node too.
    let client_node = common::identity(2, "", "").node_id;
    let per_node = &s.peers[&client_node];
    assert_eq!(
        (
            per_node.connections,
            per_node.requests,
            per_node.responses_ok
        ),
        (1, 2, 2)
    );
    assert_eq!(per_node.running, 0);
    assert!(per_node.bytes_in > 0 && per_node.bytes_out > 0);
    assert_eq!(s.peers.len(), 1);
    // Both sides saw the other's clock.
    assert!(cli.context().clocks.skew_us(pong.node).is_some());
}

#[tokio::test]
async fn many_concurrent_requests_multiplex_on_one_connection_and_complete_out_of_order() {
    const N: u64 = 200;
    let (srv, cli, gates) = setup().await;
    let addr = srv.local_addr();
    // Connect first, so every request goes over the one connection.
    cli.ping(addr, SECOND).await.unwrap();
    let mut calls = JoinSet::new();
    for id in 0..N {
        let cli = cli.clone();
        calls.spawn(async move { cli.call(addr, &Parked { id }, LONG).await });
    }
    wait_until("all requests parked in handlers", LONG, || {
        gates.parked() == N as usize
    })
    .await;
    assert_eq!(cli.peer_stats(addr).unwrap().in_flight, N);
    let client_node = common::identity(2, "", "").node_id;
    assert_eq!(srv.stats().snapshot().peers[&client_node].running, N);
    // Release in reverse order of sending; each answer must arrive before the next release,
    // so completion order is exactly the reverse of request order.
    for id in (0..N).rev() {
        gates.release(id);
        let got = calls.join_next().await.unwrap().unwrap().unwrap();
        assert_eq!(got, id);
    }
    let stats = cli.peer_stats(addr).unwrap();
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.successes, N + 1);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn handler_errors_and_unknown_methods_come_back_as_remote() {
    let (srv, cli, _) = setup().await;
    let addr = srv.local_addr();
    let err = cli.call(addr, &Fail, SECOND).await.unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Remote);
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let err = cli.call(addr, &NotRegistered, SECOND).await.unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Remote);
    assert!(
        err.to_string().contains("no handler for method 103"),
        "{err}"
    );
    // The connection survives handler errors.
    cli.ping(addr, SECOND).await.unwrap();
    assert_eq!(cli.peer_stats(addr).unwrap().connects, 1);
}

#[tokio::test]
async fn deadline_expiry_is_a_timeout_and_the_server_drops_the_work() {
    let (srv, cli, gates) = setup().await;
    let addr = srv.local_addr();
    cli.ping(addr, SECOND).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = cli
        .call(addr, &Parked { id: 1 }, Duration::from_millis(100))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < 5 * SECOND, "timeout took {elapsed:?}");
    // The server gives up on the handler at the deadline the request carried, instead of
    // finishing work nobody waits for; the handler future is dropped (its gate with it).
    wait_until("server dropped the expired request", LONG, || {
        srv.stats().snapshot().deadline_dropped == 1
    })
    .await;
    assert_eq!(gates.parked(), 1, "the handler had started");
    assert_eq!(srv.stats().snapshot().responses_ok, 0, "no answer was sent");
    // The connection is still good.
    cli.ping(addr, SECOND).await.unwrap();
    let stats = cli.peer_stats(addr).unwrap();
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.errors_of(RpcErrorKind::Timeout), 1);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn in_flight_bound_fails_fast_with_overloaded() {
    let gates = Gates::default();
    let srv = server(1, registry(&gates)).await;
    let addr = srv.local_addr();
    let cli = RpcClient::new(common::context(
        2,
        common::CLUSTER,
        common::SECRET,
        RpcConfig {
            max_in_flight_per_peer: 4,
            ..fast_config()
        },
    ));
    let mut calls = JoinSet::new();
    for id in 0..4 {
        let cli = cli.clone();
        calls.spawn(async move { cli.call(addr, &Parked { id }, LONG).await });
    }
    wait_until("4 requests parked", LONG, || gates.parked() == 4).await;
    let start = tokio::time::Instant::now();
    let err = cli
        .call(addr, &Ping { payload: 0 }, LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Overloaded { .. }), "{err}");
    assert!(err.to_string().contains("max_in_flight_per_peer"), "{err}");
    assert!(
        start.elapsed() < 2 * SECOND,
        "must fail fast, not queue for {LONG:?}"
    );
    assert_eq!(
        srv.stats().snapshot().requests,
        4,
        "the 5th never left the client"
    );
    for id in 0..4 {
        gates.release(id);
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    // Capacity is back.
    cli.call(addr, &Ping { payload: 1 }, SECOND).await.unwrap();
    let stats = cli.peer_stats(addr).unwrap();
    assert_eq!(stats.errors_of(RpcErrorKind::Overloaded), 1);
    assert_eq!(stats.successes, 5);
}

#[tokio::test]
async fn server_concurrency_bound_answers_overloaded() {
    let gates = Gates::default();
    let ctx = common::context(
        1,
        common::CLUSTER,
        common::SECRET,
        RpcConfig {
            max_concurrent_requests_per_connection: 2,
            ..fast_config()
        },
    );
    let srv = common::server_with(ctx, registry(&gates)).await;
    let addr = srv.local_addr();
    let cli = client(2);
    let mut calls = JoinSet::new();
    for id in 0..2 {
        let cli = cli.clone();
        calls.spawn(async move { cli.call(addr, &Parked { id }, LONG).await });
    }
    wait_until("2 requests parked", LONG, || gates.parked() == 2).await;
    let err = cli
        .call(
            addr,
            &Echo {
                id: 3,
                text: String::new(),
            },
            LONG,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Overloaded { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("max_concurrent_requests_per_connection")
    );
    // Frame-level pings bypass handlers and are still answered.
    cli.ping(addr, SECOND).await.unwrap();
    gates.release(0);
    gates.release(1);
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(srv.stats().snapshot().overloaded, 1);
}

#[tokio::test]
async fn oversized_request_is_rejected_before_sending() {
    let (srv, cli, _) = setup().await;
    let addr = srv.local_addr();
    let max = RpcConfig::default().max_frame_bytes as usize;
    let err = cli
        .call(addr, &Big { data: vec![0; max] }, LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // Just under the limit goes through.
    let n = cli
        .call(
            addr,
            &Big {
                data: vec![1; max - 64],
            },
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(n as usize, max - 64);
    assert_eq!(srv.stats().snapshot().frames_rejected.len(), 0);
}

#[tokio::test]
async fn peer_restart_reconnects_after_backoff() {
    let gates = Gates::default();
    let srv = server(1, registry(&gates)).await;
    let addr = srv.local_addr();
    let cli = client(2);
    cli.ping(addr, SECOND).await.unwrap();

    srv.shutdown().await;
    wait_until("client notices the closed connection", LONG, || {
        !cli.is_connected(addr)
    })
    .await;
    // The peer is down: the first call tries to connect and fails; the calls after it fail
    // fast while the client backs off, without dialing.
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable, "{err}");
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("not retrying"), "{err}");
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!(s.connect_failures, 1);
    assert_eq!(s.fast_failures_backoff, 1);

    // Bring the peer back on the same address; the client finds it once backoff expires.
    let srv = RpcServer::bind(
        common::context(1, common::CLUSTER, common::SECRET, fast_config()),
        addr,
        registry(&gates),
    )
    .await
    .expect("rebind the same port");
    let start = tokio::time::Instant::now();
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match cli.ping(addr, SECOND).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.kind(), RpcErrorKind::Unreachable, "{e}");
                assert!(start.elapsed() < LONG, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!(s.connects, 2);
    assert_eq!(s.reconnects, 1);
    // Backoff bounded the dialing: calls every ~5 ms, dials every few hundred ms.
    assert!(
        s.connect_failures <= 2 + attempts / 10,
        "{} dials for {attempts} calls: {s:?}",
        s.connect_failures
    );
    assert!(s.fast_failures_backoff >= 1);
    let echo = cli
        .call(
            addr,
            &Echo {
                id: 1,
                text: "back".into(),
            },
            SECOND,
        )
        .await
        .unwrap();
    assert_eq!(echo.text, "back");
    srv.shutdown().await;
}

#[tokio::test]
async fn keepalives_keep_an_idle_connection_open() {
    let config = RpcConfig {
        keepalive_interval_ms: 25,
        peer_silence_timeout_ms: 400,
        ..fast_config()
    };
    let srv = common::server_with(
        common::context(1, common::CLUSTER, common::SECRET, config.clone()),
        Registry::new(),
    )
    .await;
    let addr = srv.local_addr();
    let cli = RpcClient::new(common::context(2, common::CLUSTER, common::SECRET, config));
    cli.ping(addr, SECOND).await.unwrap();
    // Forty keepalive periods (1 s) is well past the silence timeout on both sides.
    wait_until("40 keepalives answered", LONG, || {
        srv.stats().snapshot().pings >= 41
    })
    .await;
    assert!(cli.is_connected(addr));
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!(
        (s.connects, s.closed_silent, s.late_responses),
        (1, 0, 0),
        "{s:?}"
    );
    assert_eq!(srv.stats().snapshot().closed_silent, 0);
    cli.ping(addr, SECOND).await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_is_an_error_answer_not_a_dead_connection() {
    let (srv, cli, _) = setup().await;
    let addr = srv.local_addr();
    for (in_future, text) in [(true, "async boom"), (false, "sync boom")] {
        // A long deadline: printing a panic's backtrace (RUST_BACKTRACE=1, debug symbols) can
        // take seconds on a loaded machine.
        let err = cli.call(addr, &Boom { in_future }, LONG).await.unwrap_err();
        assert_eq!(err.kind(), RpcErrorKind::Remote, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("Boom handler panicked: {text}")),
            "{err}"
        );
    }
    cli.ping(addr, SECOND).await.unwrap();
    assert_eq!(cli.peer_stats(addr).unwrap().connects, 1);
    assert_eq!(srv.stats().snapshot().handler_panics, 2);
}

#[tokio::test]
async fn bulk_calls_travel_on_a_second_connection() {
    let (srv, cli, _) = setup().await;
    let addr = srv.local_addr();
    cli.ping(addr, SECOND).await.unwrap();
    let small = cli
        .call(addr, &Big { data: vec![0; 100] }, SECOND)
        .await
        .unwrap();
    assert_eq!(small, 100);
    assert_eq!(
        cli.peer_stats(addr).unwrap().connects,
        1,
        "small calls share one connection"
    );
    // Above large_message_bytes (64 KiB): the bulk lane is dialed.
    let big = cli
        .call(
            addr,
            &Big {
                data: vec![0; 100_000],
            },
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(big, 100_000);
    // A small request declared LARGE (its answer is big) uses the same bulk lane.
    let scanned = cli
        .call(addr, &Scan { bytes: 200_000 }, LONG)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 200_000);
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!((s.connects, s.reconnects), (2, 0), "{s:?}");
    assert_eq!(srv.stats().snapshot().handshakes_ok, 2);
    // Small calls still go over the first connection.
    cli.call(addr, &Big { data: vec![0; 10] }, SECOND)
        .await
        .unwrap();
    assert_eq!(cli.peer_stats(addr).unwrap().connects, 2);
}
