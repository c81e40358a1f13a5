//! Peers that misbehave: wrong secret, wrong cluster, forged proofs, malformed frames in both
//! directions, answers that arrive after the caller gave up. Raw peers are built from the
//! crate's public sans-IO pieces (frame codec, handshake state machines) over plain TCP.

mod common;

use bytes::{Bytes, BytesMut};
use common::{CLUSTER, SECRET, client, context, fast_config, identity, server, wait_until};
use hearsay_cluster::rpc::frame::{
    Frame, FrameKind, HEADER_BYTES, MAX_FRAME_BYTES, decode_frame, encode_to_bytes,
};
use hearsay_cluster::rpc::handshake::{
    ClientHandshake, ClientStep, HandshakeMsg, ServerHandshake, ServerStep,
};
use hearsay_cluster::rpc::{
    Identity, Ping, Pong, Registry, RejectReason, Rpc, RpcClient, RpcError, RpcErrorKind,
};
use hearsay_types::{NodeId, Timestamp};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECOND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(10);

/// A peer that speaks frames by hand.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    fn frame_bytes(kind: FrameKind, method: u16, id: u64, body: &[u8]) -> Vec<u8> {
        let mut f = Frame::new(kind, id, Timestamp(1), Bytes::copy_from_slice(body));
        f.method = method;
        f.deadline_ms = 5_000;
        encode_to_bytes(&f, u32::MAX).unwrap().to_vec()
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        // The peer may already have closed on us; that is fine for these tests.
        let _ = self.s.write_all(bytes).await;
    }

    async fn send(&mut self, kind: FrameKind, method: u16, id: u64, body: &[u8]) {
        let b = Raw::frame_bytes(kind, method, id, body);
        self.send_raw(&b).await;
    }

    async fn send_hs(&mut self, msg: &HandshakeMsg) {
        let body = postcard::to_allocvec(msg).unwrap();
        self.send(FrameKind::Handshake, 0, 0, &body).await;
    }

    /// The next frame, or None at end of stream / on error.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Ok(Some(f)) = decode_frame(&mut self.buf, MAX_FRAME_BYTES) {
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(LONG, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("peer neither answered nor closed within {LONG:?}"),
            }
        }
    }

    /// The next Request frame, skipping the client's keepalive Pings.
    async fn recv_request(&mut self) -> Option<Frame> {
        loop {
            let f = self.recv().await?;
            if f.kind == FrameKind::Request {
                return Some(f);
            }
        }
    }

    async fn recv_hs(&mut self) -> Option<HandshakeMsg> {
        let f = self.recv().await?;
        assert_eq!(f.kind, FrameKind::Handshake);
        Some(postcard::from_bytes(&f.body).unwrap())
    }

    /// Asserts the peer closes the connection (within a second), skipping anything it sends
    /// first (e.g. a `Refused`).
    async fn expect_closed(&mut self) {
        let r = tokio::time::timeout(SECOND, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(r.is_ok(), "connection not closed within 1 s");
    }

    /// Runs the client side of the handshake.
    async fn handshake(&mut self, me: Identity) -> Result<NodeId, String> {
        let (mut hs, hello) = ClientHandshake::start(me, [5; 32]);
        self.send_hs(&hello).await;
        loop {
            let msg = self.recv_hs().await.ok_or("closed")?;
            match hs.on_message(msg) {
                Ok(ClientStep::Send(m)) => self.send_hs(&m).await,
                Ok(ClientStep::Established { server_id }) => return Ok(server_id),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A server that accepts one connection, runs the handshake as `me`, and hands the raw
/// connection to `behave`. Returns its address and what the handshake ended with.
async fn fake_server<F, Fut>(
    me: Identity,
    behave: F,
) -> (SocketAddr, oneshot::Receiver<Result<NodeId, String>>)
where
    F: FnOnce(Raw) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut raw = Raw {
            s,
            buf: BytesMut::new(),
        };
        let mut hs = ServerHandshake::new(me, [6; 32]);
        let outcome = loop {
            let Some(msg) = raw.recv_hs().await else {
                break Err("closed".to_string());
            };
            match hs.on_message(msg) {
                Ok(ServerStep::Send(m)) => raw.send_hs(&m).await,
                Ok(ServerStep::Established { client_id, welcome }) => {
                    raw.send_hs(&welcome).await;
                    break Ok(client_id);
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        let ok = outcome.is_ok();
        let _ = done_tx.send(outcome);
        if ok {
            behave(raw).await;
        }
    });
    (addr, done_rx)
}

#[tokio::test]
async fn client_with_wrong_secret_is_refused_and_counted_on_both_sides() {
    let srv = server(1, Registry::new()).await;
    let addr = srv.local_addr();
    let cli = RpcClient::new(context(2, CLUSTER, "not the secret", fast_config()));
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert!(matches!(err, RpcError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("wrong cluster secret"), "{err}");
    assert_eq!(cli.peer_stats(addr).unwrap().handshakes_refused, 1);
    wait_until("server counts the refusal", LONG, || {
        srv.stats().snapshot().handshakes_refused == 1
    })
    .await;
    let s = srv.stats().snapshot();
    assert_eq!(s.handshakes_ok, 0);
    assert_eq!(s.requests + s.pings, 0, "nothing reached a handler");
    // A refused peer is backed off like a dead one, not redialed per call.
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert!(err.to_string().contains("not retrying"), "{err}");
}

#[tokio::test]
async fn client_from_another_cluster_is_refused() {
    let srv = server(1, Registry::new()).await;
    let addr = srv.local_addr();
    let cli = RpcClient::new(context(2, "another-cluster", SECRET, fast_config()));
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert!(matches!(err, RpcError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("wrong cluster name 'another-cluster'"),
        "{err}"
    );
    wait_until("server counts the refusal", LONG, || {
        srv.stats().snapshot().handshakes_refused == 1
    })
    .await;
}

#[tokio::test]
async fn server_refuses_a_client_that_forges_its_proof() {
    let srv = server(1, Registry::new()).await;
    let mut raw = Raw::connect(srv.local_addr()).await;
    raw.send_hs(&HandshakeMsg::Hello {
        cluster_name: CLUSTER.into(),
        node_id: NodeId(66),
        nonce: [1; 32],
    })
    .await;
    assert!(matches!(
        raw.recv_hs().await,
        Some(HandshakeMsg::Challenge { .. })
    ));
    raw.send_hs(&HandshakeMsg::Proof { proof: [0xab; 32] })
        .await;
    match raw.recv_hs().await {
        Some(HandshakeMsg::Refused { reason }) => {
            assert!(reason.contains("wrong cluster secret"), "{reason}")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    raw.expect_closed().await;
    // Requests after a refused handshake go nowhere.
    assert_eq!(srv.stats().snapshot().handshakes_refused, 1);
    assert_eq!(srv.stats().snapshot().handshakes_ok, 0);
}

#[tokio::test]
async fn client_refuses_a_server_without_the_secret() {
    let (addr, done) = fake_server(identity(9, CLUSTER, "impostor"), |_| async {}).await;
    let cli = client(2);
    let err = cli.ping(addr, SECOND).await.unwrap_err();
    assert!(matches!(err, RpcError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("proof does not verify"), "{err}");
    // The impostor is told, and learns nothing it could use (the client never sent a proof).
    let outcome = done.await.unwrap();
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.contains("wrong cluster secret")),
        "{outcome:?}"
    );
    assert_eq!(cli.peer_stats(addr).unwrap().handshakes_refused, 1);
}

fn handshake_hello_bytes() -> Vec<u8> {
    let hello = HandshakeMsg::Hello {
        cluster_name: CLUSTER.into(),
        node_id: NodeId(5),
        nonce: [3; 32],
    };
    Raw::frame_bytes(
        FrameKind::Handshake,
        0,
        0,
        &postcard::to_allocvec(&hello).unwrap(),
    )
}

#[tokio::test]
async fn malformed_frames_close_the_connection_and_the_server_keeps_serving() {
    let srv = server(1, Registry::new()).await;
    let addr = srv.local_addr();
    // A well-behaved peer connected before the attacks must be unaffected by them.
    let bystander = client(2);
    bystander.ping(addr, SECOND).await.unwrap();

    let good = handshake_hello_bytes();
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    let mut bad_kind = good.clone();
    bad_kind[5] = 77;
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 0x55;
    let mut truncated_header = 3u32.to_be_bytes().to_vec();
    truncated_header.extend([1, 1, 1]);
    // Before the handshake the limit is a few KiB, so a modest length is already too big;
    // u32::MAX is too big at any stage.
    let mut oversize_small = 5_000u32.to_be_bytes().to_vec();
    oversize_small.extend([1, 1]);
    let mut oversize_huge = u32::MAX.to_be_bytes().to_vec();
    oversize_huge.extend([1, 1]);
    let random_body = Raw::frame_bytes(FrameKind::Handshake, 0, 0, &[0xff, 0x13, 0x37, 0x00, 0xfe]);
    let request_first = Raw::frame_bytes(FrameKind::Request, Ping::METHOD, 1, &[1]);

    let cases: Vec<(&str, Vec<u8>, RejectReason)> = vec![
        ("bad version", bad_version, RejectReason::BadVersion),
        ("bad kind", bad_kind, RejectReason::BadKind),
        ("bad crc", bad_crc, RejectReason::BadCrc),
        (
            "truncated header",
            truncated_header,
            RejectReason::Truncated,
        ),
        (
            "oversize (handshake limit)",
            oversize_small,
            RejectReason::Oversize,
        ),
        ("oversize (u32::MAX)", oversize_huge, RejectReason::Oversize),
        ("random body", random_body, RejectReason::Undecodable),
        (
            "request before handshake",
            request_first,
            RejectReason::Unexpected,
        ),
    ];
    for (name, bytes, reason) in &cases {
        let before = srv
            .stats()
            .snapshot()
            .frames_rejected
            .get(reason)
            .copied()
            .unwrap_or(0);
        let mut raw = Raw::connect(addr).await;
        raw.send_raw(bytes).await;
        raw.expect_closed().await;
        wait_until(&format!("{name} counted as {reason}"), LONG, || {
            srv.stats()
                .snapshot()
                .frames_rejected
                .get(reason)
                .copied()
                .unwrap_or(0)
                == before + 1
        })
        .await;
    }

    // A frame cut short by the peer closing its side.
    let mut raw = Raw::connect(addr).await;
    raw.send_raw(&good[..good.len() / 2]).await;
    raw.s.shutdown().await.unwrap();
    raw.expect_closed().await;
    wait_until("half frame at EOF counted as truncated", LONG, || {
        srv.stats()
            .snapshot()
            .frames_rejected
            .get(&RejectReason::Truncated)
            == Some(&2)
    })
    .await;

    // After a proper handshake: the full frame limit applies, and bad frames still close.
    let post_handshake: Vec<(&str, Vec<u8>, RejectReason)> = vec![
        (
            "bad crc",
            {
                let mut b = Raw::frame_bytes(FrameKind::Ping, 0, 1, b"xyz");
                b[HEADER_BYTES] ^= 1; // the first body byte
                b
            },
            RejectReason::BadCrc,
        ),
        (
            "oversize",
            {
                let mut b = (MAX_FRAME_BYTES + 1).to_be_bytes().to_vec();
                b.extend([1, 2]);
                b
            },
            RejectReason::Oversize,
        ),
        // A Ping request whose body is not a valid varint.
        (
            "undecodable request",
            Raw::frame_bytes(FrameKind::Request, Ping::METHOD, 1, &[0xff; 12]),
            RejectReason::Undecodable,
        ),
        (
            "response sent to a server",
            Raw::frame_bytes(FrameKind::Response, 0, 1, &[]),
            RejectReason::Unexpected,
        ),
    ];
    for (name, bytes, reason) in &post_handshake {
        let before = srv
            .stats()
            .snapshot()
            .frames_rejected
            .get(reason)
            .copied()
            .unwrap_or(0);
        let mut raw = Raw::connect(addr).await;
        raw.handshake(identity(3, CLUSTER, SECRET)).await.unwrap();
        // Prove the connection works, then break it.
        raw.send(FrameKind::Ping, 0, 77, &[]).await;
        let pong = raw.recv().await.expect("pong");
        assert_eq!((pong.kind, pong.request_id), (FrameKind::Pong, 77));
        raw.send_raw(bytes).await;
        raw.expect_closed().await;
        wait_until(
            &format!("{name} (after handshake) counted as {reason}"),
            LONG,
            || {
                srv.stats()
                    .snapshot()
                    .frames_rejected
                    .get(reason)
                    .copied()
                    .unwrap_or(0)
                    == before + 1
            },
        )
        .await;
    }

    // The server is still serving: the old connection and a new client both work.
    bystander.ping(addr, SECOND).await.unwrap();
    assert_eq!(bystander.peer_stats(addr).unwrap().connects, 1);
    client(4)
        .call(addr, &Ping { payload: 5 }, SECOND)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_late_response_is_discarded_and_does_not_confuse_later_calls() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (addr, _) = fake_server(identity(9, CLUSTER, SECRET), move |mut raw| async move {
        let mut release = Some(release_rx);
        while let Some(f) = raw.recv_request().await {
            let ping: Ping = postcard::from_bytes(&f.body).unwrap();
            if let Some(r) = release.take() {
                // Hold the first answer until the caller has given up on it.
                let _ = r.await;
            }
            let pong = Pong {
                payload: ping.payload,
                node: NodeId(9),
            };
            raw.send(
                FrameKind::Response,
                0,
                f.request_id,
                &postcard::to_allocvec(&pong).unwrap(),
            )
            .await;
        }
    })
    .await;
    let cli = client(2);
    let err = cli
        .call(addr, &Ping { payload: 1 }, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    release_tx.send(()).unwrap();
    wait_until("late answer counted", LONG, || {
        cli.peer_stats(addr).unwrap().late_responses == 1
    })
    .await;
    // The late Pong for payload 1 must not be taken as the answer to this call.
    let pong = cli.call(addr, &Ping { payload: 2 }, SECOND).await.unwrap();
    assert_eq!(pong.payload, 2);
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!((s.connects, s.late_responses, s.successes), (1, 1, 1));
}

#[tokio::test]
async fn bad_frames_from_a_server_close_the_client_connection() {
    let (addr, _) = fake_server(identity(9, CLUSTER, SECRET), |mut raw| async move {
        let f = raw.recv_request().await.unwrap();
        let mut b = Raw::frame_bytes(FrameKind::Response, 0, f.request_id, b"\x01\x02");
        let last = b.len() - 1;
        b[last] ^= 0xff;
        raw.send_raw(&b).await;
        raw.expect_closed().await;
    })
    .await;
    let cli = client(2);
    let err = cli
        .call(addr, &Ping { payload: 1 }, LONG)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!(s.frames_rejected.get(&RejectReason::BadCrc), Some(&1));
    assert!(!cli.is_connected(addr));
}

#[tokio::test]
async fn an_undecodable_response_is_a_protocol_error() {
    let (addr, _) = fake_server(identity(9, CLUSTER, SECRET), |mut raw| async move {
        let f = raw.recv_request().await.unwrap();
        // A Pong needs a payload and a 16-byte node id; two bytes cannot be one.
        raw.send(FrameKind::Response, 0, f.request_id, &[0x01])
            .await;
        raw.expect_closed().await;
    })
    .await;
    let cli = client(2);
    let err = cli
        .call(addr, &Ping { payload: 1 }, LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Protocol { .. }), "{err}");
    let s = cli.peer_stats(addr).unwrap();
    assert_eq!(s.frames_rejected.get(&RejectReason::Undecodable), Some(&1));
    wait_until("client closes the connection", LONG, || {
        !cli.is_connected(addr)
    })
    .await;
}

fn keepalive_config() -> hearsay_cluster::rpc::RpcConfig {
    hearsay_cluster::rpc::RpcConfig {
        keepalive_interval_ms: 20,
        peer_silence_timeout_ms: 150,
        ..fast_config()
    }
}

#[tokio::test]
async fn a_silent_server_is_detected_and_calls_fail_fast() {
    // Completes the handshake, then reads everything and answers nothing (a hung process,
    // or a link that swallows packets).
    let (addr, _) = fake_server(identity(9, CLUSTER, SECRET), |mut raw| async move {
        while raw.recv().await.is_some() {}
    })
    .await;
    let cli = RpcClient::new(context(2, CLUSTER, SECRET, keepalive_config()));
    let start = tokio::time::Instant::now();
    let err = cli
        .call(addr, &Ping { payload: 1 }, LONG)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RpcErrorKind::Unreachable, "{err}");
    assert!(
        err.to_string().contains("peer sent nothing for 150 ms"),
        "{err}"
    );
    assert!(start.elapsed() < 5 * SECOND, "waited {:?}", start.elapsed());
    assert_eq!(cli.peer_stats(addr).unwrap().closed_silent, 1);
    assert!(!cli.is_connected(addr));
}

#[tokio::test]
async fn a_silent_client_is_disconnected_by_the_server() {
    let srv = common::server_with(
        context(1, CLUSTER, SECRET, keepalive_config()),
        Registry::new(),
    )
    .await;
    let mut raw = Raw::connect(srv.local_addr()).await;
    raw.handshake(identity(3, CLUSTER, SECRET)).await.unwrap();
    // Send nothing: no keepalives, no requests.
    raw.expect_closed().await;
    wait_until("server counts the silent close", LONG, || {
        srv.stats().snapshot().closed_silent == 1
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_never_completes_the_handshake_is_cut_off() {
    let srv = common::server_with(
        context(
            1,
            CLUSTER,
            SECRET,
            hearsay_cluster::rpc::RpcConfig {
                handshake_timeout_ms: 200,
                ..fast_config()
            },
        ),
        Registry::new(),
    )
    .await;
    // Connects and says nothing (slowloris), or says Hello and then nothing.
    let mut silent = Raw::connect(srv.local_addr()).await;
    let mut stalled = Raw::connect(srv.local_addr()).await;
    stalled.send_raw(&handshake_hello_bytes()).await;
    silent.expect_closed().await;
    stalled.expect_closed().await;
    assert_eq!(srv.stats().snapshot().handshakes_ok, 0);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_accept() {
    let srv = common::server_with(
        context(
            1,
            CLUSTER,
            SECRET,
            hearsay_cluster::rpc::RpcConfig {
                max_connections: 2,
                ..fast_config()
            },
        ),
        Registry::new(),
    )
    .await;
    let addr = srv.local_addr();
    let held = client(2);
    held.ping(addr, SECOND).await.unwrap();
    let mut squatter = Raw::connect(addr).await; // holds the second slot, mid-handshake
    wait_until("two connections open", LONG, || {
        srv.stats().snapshot().connections_open == 2
    })
    .await;
    let mut third = Raw::connect(addr).await;
    third.expect_closed().await;
    assert_eq!(srv.stats().snapshot().connections_refused_limit, 1);
    // The established connection is unaffected; once a slot frees, newcomers get in.
    held.ping(addr, SECOND).await.unwrap();
    squatter.s.shutdown().await.unwrap();
    squatter.expect_closed().await;
    wait_until("slot freed", LONG, || {
        srv.stats().snapshot().connections_open == 1
    })
    .await;
    client(3).ping(addr, SECOND).await.unwrap();
}
