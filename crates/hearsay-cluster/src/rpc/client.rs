//! The calling side: one multiplexed connection per peer address, typed calls with
//! deadlines, a bound on in-flight requests, and reconnection with capped, jittered
//! exponential backoff that fails fast instead of hammering a dead peer.

use super::config::MAX_HANDSHAKE_FRAME_BYTES;
use super::conn::{
    ConnState, FrameReader, HandshakeReadError, RpcContext, read_handshake, send_handshake,
    spawn_writer,
};
use super::error::RpcError;
use super::frame::{FrameKind, RejectReason, encode_to_bytes};
use super::handshake::{ClientHandshake, ClientStep, HandshakeError, HandshakeMsg};
use super::message::{RemoteError, RemoteErrorCode, Rpc};
use super::stats::{PeerClock, PeerStats, PeerStatsSnapshot};
use super::transport::{TcpTransport, Transport};
use bytes::Bytes;
use hearsay_types::NodeId;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

/// The longest a call may wait. No internode call legitimately waits an hour; clamping keeps
/// the deadline arithmetic from overflowing on `Duration::MAX` and fits `deadline_ms` (u32).
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3_600);

/// What the reader hands a waiting caller.
enum Reply {
    Response(Bytes),
    Error(RemoteError),
    Pong,
}

struct Pending {
    /// Set when the connection closed: no new waiter may register.
    closed: bool,
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
}

/// One established, authenticated connection.
struct Conn {
    server_id: NodeId,
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<Pending>,
    next_request_id: AtomicU64,
    state: Arc<ConnState>,
}

impl Conn {
    fn register(&self) -> Option<(u64, oneshot::Receiver<Reply>)> {
        let mut p = self.pending.lock();
        if p.closed {
            return None;
        }
        let id = self.next_request_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        p.waiters.insert(id, tx);
        Some((id, rx))
    }

    fn forget(&self, id: u64) {
        self.pending.lock().waiters.remove(&id);
    }
}

/// Removes a waiter however the call ends (answer, timeout, or the caller dropping the
/// future), so a late answer finds no one and is counted and discarded.
struct WaiterGuard<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

/// Which of a peer's connections a request travels on. Bulk transfers get their own, so
/// small, latency-sensitive messages (mutations, digests, acks) never queue behind megabytes
/// of a range scan on the same socket (Cassandra 4 splits small and large messages the same
/// way). The large lane is dialed only when first needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Small = 0,
    Large = 1,
}

struct Backoff {
    /// Consecutive failed connection attempts.
    failures: u32,
    /// No attempt before this instant.
    retry_at: Option<Instant>,
    last_error: String,
    /// Whether each lane has connected before (a later connect is a reconnect).
    connected_before: [bool; 2],
}

struct Peer {
    addr: SocketAddr,
    stats: Arc<PeerStats>,
    in_flight: Arc<Semaphore>,
    /// One connection per lane (see [`Lane`]).
    conns: [Mutex<Option<Arc<Conn>>>; 2],
    /// Serialises connection attempts (one dial per peer at a time) and holds the backoff.
    dialing: tokio::sync::Mutex<Backoff>,
}

struct ClientInner {
    ctx: Arc<RpcContext>,
    transport: Arc<dyn Transport>,
    peers: Mutex<BTreeMap<SocketAddr, Arc<Peer>>>,
    /// Parent of every connection's token: dropping the client closes its connections.
    token: CancellationToken,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The internode RPC client of one node. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("node_id", &self.inner.ctx.identity.node_id)
            .field("peers", &self.inner.peers.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Decrements the in-flight gauge when a call ends, however it ends.
struct InFlight<'a>(&'a PeerStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl RpcClient {
    /// A TCP client with no connections yet; they are made on first use.
    pub fn new(ctx: Arc<RpcContext>) -> RpcClient {
        RpcClient::with_transport(ctx, Arc::new(TcpTransport))
    }

    /// A client that connects through `transport` (e.g. an in-memory network in tests).
    pub fn with_transport(ctx: Arc<RpcContext>, transport: Arc<dyn Transport>) -> RpcClient {
        RpcClient {
            inner: Arc::new(ClientInner {
                ctx,
                transport,
                peers: Mutex::new(BTreeMap::new()),
                token: CancellationToken::new(),
            }),
        }
    }

    /// The shared context (identity, config, clock).
    pub fn context(&self) -> &Arc<RpcContext> {
        &self.inner.ctx
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        let mut peers = self.inner.peers.lock();
        peers
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Peer {
                    addr,
                    stats: Arc::new(PeerStats::default()),
                    in_flight: Arc::new(Semaphore::new(
                        self.inner.ctx.config.max_in_flight_per_peer,
                    )),
                    conns: [Mutex::new(None), Mutex::new(None)],
                    dialing: tokio::sync::Mutex::new(Backoff {
                        failures: 0,
                        retry_at: None,
                        last_error: String::new(),
                        connected_before: [false; 2],
                    }),
                })
            })
            .clone()
    }

    /// Sends `request` to `peer` and waits at most `timeout` (capped at [`MAX_CALL_TIMEOUT`])
    /// for its typed response.
    ///
    /// Fails fast with `Overloaded` when `max_in_flight_per_peer` calls are already waiting
    /// on this peer, and with `Unreachable` while the peer is in reconnect backoff. The
    /// deadline covers connecting, the handshake, queueing and the answer; the remaining time
    /// travels with the request so the peer drops work nobody waits for.
    pub async fn call<M: Rpc>(
        &self,
        peer: SocketAddr,
        request: &M,
        timeout: Duration,
    ) -> Result<M::Response, RpcError> {
        let body = postcard::to_allocvec(request).map_err(|e| RpcError::Protocol {
            peer,
            reason: format!("cannot encode {}: {e}", M::NAME),
        })?;
        let lane = if M::LARGE || body.len() > self.inner.ctx.config.large_message_bytes as usize {
            Lane::Large
        } else {
            Lane::Small
        };
        let reply = self
            .round_trip(
                peer,
                lane,
                FrameKind::Request,
                M::METHOD,
                Bytes::from(body),
                timeout,
            )
            .await;
        let p = self.peer(peer);
        let result = match reply {
            Ok((Reply::Response(body), conn)) => postcard::from_bytes::<M::Response>(&body)
                .map_err(|e| {
                    p.stats.frames_rejected.inc(RejectReason::Undecodable);
                    let reason = format!("undecodable {} response: {e}", M::NAME);
                    tracing::warn!(%peer, %reason, "closing connection");
                    conn.state.close(reason.clone());
                    RpcError::Protocol { peer, reason }
                }),
            Ok((Reply::Pong, _)) => Err(RpcError::Protocol {
                peer,
                reason: "Pong frame in answer to a request".into(),
            }),
            Ok((Reply::Error(e), _)) => Err(remote_error(peer, e)),
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => p.stats.successes.fetch_add(1, Relaxed),
            Err(e) => {
                p.stats.error(e.kind());
                0
            }
        };
        result
    }

    /// A connection-level ping (no handler involved); returns the round-trip time.
    pub async fn ping(&self, peer: SocketAddr, timeout: Duration) -> Result<Duration, RpcError> {
        let start = Instant::now();
        let p = self.peer(peer);
        let result = match self
            .round_trip(
                peer,
                Lane::Small,
                FrameKind::Ping,
                0,
                self.inner.ctx.ping_body(),
                timeout,
            )
            .await
        {
            Ok((Reply::Pong, _)) => Ok(start.elapsed()),
            Ok((Reply::Error(e), _)) => Err(remote_error(peer, e)),
            Ok(_) => Err(RpcError::Protocol {
                peer,
                reason: "unexpected answer to Ping".into(),
            }),
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => p.stats.successes.fetch_add(1, Relaxed),
            Err(e) => {
                p.stats.error(e.kind());
                0
            }
        };
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn round_trip(
        &self,
        addr: SocketAddr,
        lane: Lane,
        kind: FrameKind,
        method: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(Reply, Arc<Conn>), RpcError> {
        // Test-only injected faults: a lost call is one whose answer never comes; a delayed
        // one leaves later (and calls sent after it may overtake it).
        match self.inner.ctx.net_faults.fate() {
            hearsay_types::faults::Fate::Deliver => {}
            hearsay_types::faults::Fate::Delay(d) => tokio::time::sleep(d.min(timeout)).await,
            hearsay_types::faults::Fate::Drop => {
                let capped = timeout.min(MAX_CALL_TIMEOUT);
                tokio::time::sleep(capped).await;
                return Err(RpcError::Timeout {
                    peer: addr,
                    elapsed_ms: capped.as_millis() as u64,
                });
            }
        }
        let start = Instant::now();
        let deadline = start + timeout.min(MAX_CALL_TIMEOUT);
        let peer = self.peer(addr);
        peer.stats.requests.fetch_add(1, Relaxed);
        let limit = self.inner.ctx.config.max_in_flight_per_peer;
        let _permit =
            peer.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| RpcError::Overloaded {
                    peer: addr,
                    reason: format!(
                        "{limit} requests already in flight to this peer (max_in_flight_per_peer)"
                    ),
                })?;
        peer.stats.in_flight.fetch_add(1, Relaxed);
        let _gauge = InFlight(&peer.stats);
        let timed_out = || RpcError::Timeout {
            peer: addr,
            elapsed_ms: start.elapsed().as_millis() as u64,
        };

        let conn = self.connection(&peer, lane, deadline).await?;
        let Some((id, rx)) = conn.register() else {
            return Err(RpcError::Unreachable {
                peer: addr,
                reason: conn.state.reason(),
            });
        };
        let _waiter = WaiterGuard { conn: &conn, id };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        let mut frame = self.inner.ctx.frame(kind, id, body);
        frame.method = method;
        // Round up, so a caller with 0.4 ms left does not send "already expired".
        frame.deadline_ms =
            u32::try_from(remaining.as_micros().div_ceil(1_000)).unwrap_or(u32::MAX);
        let bytes =
            encode_to_bytes(&frame, self.inner.ctx.config.max_frame_bytes).map_err(|e| {
                RpcError::Protocol {
                    peer: addr,
                    reason: e.to_string(),
                }
            })?;
        let len = bytes.len() as u64;
        match timeout_at(deadline, conn.tx.send(bytes)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => {
                return Err(RpcError::Unreachable {
                    peer: addr,
                    reason: conn.state.reason(),
                });
            }
            Ok(Ok(())) => {
                peer.stats.bytes_out.fetch_add(len, Relaxed);
            }
        }
        match timeout_at(deadline, rx).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(RpcError::Unreachable {
                peer: addr,
                reason: format!("connection lost while waiting: {}", conn.state.reason()),
            }),
            Ok(Ok(reply)) => Ok((reply, conn.clone())),
        }
    }

    /// The live connection to `peer`, dialing if there is none and the peer is not in backoff.
    async fn connection(
        &self,
        peer: &Arc<Peer>,
        lane: Lane,
        deadline: Instant,
    ) -> Result<Arc<Conn>, RpcError> {
        let slot = &peer.conns[lane as usize];
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        let addr = peer.addr;
        let start = Instant::now();
        // Callers queue here while one of them dials; each gives up at its own deadline.
        let mut backoff = timeout_at(deadline, peer.dialing.lock())
            .await
            .map_err(|_| RpcError::Timeout {
                peer: addr,
                elapsed_ms: start.elapsed().as_millis() as u64,
            })?;
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        let now = Instant::now();
        if let Some(at) = backoff.retry_at
            && now < at
        {
            peer.stats.fast_failures_backoff.fetch_add(1, Relaxed);
            return Err(RpcError::Unreachable {
                peer: addr,
                reason: format!(
                    "not retrying for another {} ms after {} failed connection attempts; last: {}",
                    (at - now).as_millis(),
                    backoff.failures,
                    backoff.last_error
                ),
            });
        }
        let cfg = &self.inner.ctx.config;
        let dial_deadline = deadline
            .min(now + Duration::from_millis(cfg.connect_timeout_ms + cfg.handshake_timeout_ms));
        let attempt = match timeout_at(dial_deadline, self.dial(peer)).await {
            Ok(r) => r,
            Err(_) if dial_deadline < deadline => Err(RpcError::Unreachable {
                peer: addr,
                reason: "connect and handshake timed out".into(),
            }),
            // The caller's deadline came first: say Timeout, and do not blame the peer with
            // a backoff for a dial we cut short.
            Err(_) => {
                return Err(RpcError::Timeout {
                    peer: addr,
                    elapsed_ms: start.elapsed().as_millis() as u64,
                });
            }
        };
        match attempt {
            Ok(conn) => {
                peer.stats.connects.fetch_add(1, Relaxed);
                if std::mem::replace(&mut backoff.connected_before[lane as usize], true) {
                    peer.stats.reconnects.fetch_add(1, Relaxed);
                }
                *peer.stats.node_id.lock() = Some(conn.server_id);
                backoff.failures = 0;
                backoff.retry_at = None;
                *slot.lock() = Some(conn.clone());
                tracing::debug!(peer = %addr, server_id = %conn.server_id, "rpc connection established");
                Ok(conn)
            }
            Err(e) => {
                peer.stats.connect_failures.fetch_add(1, Relaxed);
                backoff.failures = backoff.failures.saturating_add(1);
                let delay =
                    backoff_delay(cfg.backoff_base_ms, cfg.backoff_max_ms, backoff.failures);
                backoff.retry_at = Some(Instant::now() + delay);
                backoff.last_error = e.to_string();
                tracing::debug!(peer = %addr, error = %e, retry_in_ms = delay.as_millis() as u64, "rpc connect failed");
                Err(e)
            }
        }
    }

    /// Connects, runs the handshake, and starts the connection's reader and writer tasks.
    async fn dial(&self, peer: &Arc<Peer>) -> Result<Arc<Conn>, RpcError> {
        let ctx = &self.inner.ctx;
        let addr = peer.addr;
        let unreachable = |reason: String| RpcError::Unreachable { peer: addr, reason };
        let (r, mut w) = tokio::time::timeout(
            Duration::from_millis(ctx.config.connect_timeout_ms),
            self.inner.transport.connect(addr),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "connect timed out after {} ms",
                ctx.config.connect_timeout_ms
            ))
        })?
        .map_err(|e| unreachable(format!("connect failed: {e}")))?;
        let mut reader = FrameReader::new(r, MAX_HANDSHAKE_FRAME_BYTES);

        let (mut hs, hello) = ClientHandshake::start(ctx.identity.clone(), rand::random());
        send_handshake(ctx, &mut w, &hello)
            .await
            .map_err(unreachable)?;
        let (server_id, server_hlc) = loop {
            let (msg, hlc) = match read_handshake(&mut reader).await {
                Ok(m) => m,
                Err(HandshakeReadError::Io(reason)) => return Err(unreachable(reason)),
                Err(HandshakeReadError::Rejected(r, reason)) => {
                    peer.stats.frames_rejected.inc(r);
                    tracing::warn!(peer = %addr, %reason, "bad frame in handshake; closing");
                    return Err(RpcError::Protocol { peer: addr, reason });
                }
            };
            match hs.on_message(msg) {
                Ok(ClientStep::Send(m)) => {
                    send_handshake(ctx, &mut w, &m).await.map_err(unreachable)?
                }
                Ok(ClientStep::Established { server_id }) => break (server_id, hlc),
                Err(e) => {
                    if let Some(reason) = e.reason_for_peer() {
                        let _ =
                            send_handshake(ctx, &mut w, &HandshakeMsg::Refused { reason }).await;
                    }
                    peer.stats.handshakes_refused.fetch_add(1, Relaxed);
                    tracing::warn!(peer = %addr, error = %e, "rpc handshake refused");
                    return Err(match e {
                        HandshakeError::Protocol(reason) => {
                            RpcError::Protocol { peer: addr, reason }
                        }
                        other => RpcError::Refused {
                            peer: addr,
                            reason: other.to_string(),
                        },
                    });
                }
            }
        };
        let clock = ctx.clocks.entry(server_id);
        ctx.observe(&clock, server_hlc, &addr);
        reader.set_max_frame_bytes(ctx.config.max_frame_bytes);

        let state = Arc::new(ConnState::new(self.inner.token.child_token()));
        let (tx, rx) = mpsc::channel(ctx.config.write_queue_frames);
        spawn_writer(w, rx, state.clone());
        let conn = Arc::new(Conn {
            server_id,
            tx,
            pending: Mutex::new(Pending {
                closed: false,
                waiters: HashMap::new(),
            }),
            next_request_id: AtomicU64::new(1),
            state,
        });
        spawn_keepalive(ctx.clone(), conn.tx.clone(), conn.state.clone());
        tokio::spawn(read_loop(
            ctx.clone(),
            addr,
            reader,
            conn.clone(),
            peer.stats.clone(),
            clock,
        ));
        Ok(conn)
    }

    /// Counters for one peer, if it was ever called.
    pub fn peer_stats(&self, peer: SocketAddr) -> Option<PeerStatsSnapshot> {
        self.inner
            .peers
            .lock()
            .get(&peer)
            .map(|p| p.stats.snapshot())
    }

    /// Counters for every peer called so far, by address.
    pub fn stats(&self) -> BTreeMap<SocketAddr, PeerStatsSnapshot> {
        self.inner
            .peers
            .lock()
            .iter()
            .map(|(a, p)| (*a, p.stats.snapshot()))
            .collect()
    }

    /// Whether a live connection to `peer` exists now.
    pub fn is_connected(&self, peer: SocketAddr) -> bool {
        self.inner
            .peers
            .lock()
            .get(&peer)
            .is_some_and(|p| p.conns.iter().any(|slot| live(slot).is_some()))
    }

    /// Closes the connection to `peer` and drops its state and counters, e.g. once the node
    /// has been removed from the cluster: the peer table then stays as large as the
    /// membership instead of growing with every address ever called.
    pub fn forget(&self, peer: SocketAddr) {
        if let Some(p) = self.inner.peers.lock().remove(&peer) {
            for slot in &p.conns {
                if let Some(c) = slot.lock().take() {
                    c.state.close("peer forgotten by this node");
                }
            }
        }
    }

    /// Closes every connection. Later calls reconnect.
    pub fn close_all(&self) {
        for p in self.inner.peers.lock().values() {
            for slot in &p.conns {
                if let Some(c) = slot.lock().take() {
                    c.state.close("closed by this node");
                }
            }
        }
    }
}

fn live(slot: &Mutex<Option<Arc<Conn>>>) -> Option<Arc<Conn>> {
    let mut slot = slot.lock();
    match &*slot {
        Some(c) if !c.state.is_closed() => Some(c.clone()),
        Some(_) => {
            *slot = None;
            None
        }
        None => None,
    }
}

fn remote_error(peer: SocketAddr, e: RemoteError) -> RpcError {
    match e.code() {
        RemoteErrorCode::Overloaded => RpcError::Overloaded {
            peer,
            reason: e.message,
        },
        RemoteErrorCode::Handler => RpcError::Remote {
            peer,
            message: e.message,
        },
        RemoteErrorCode::UnknownMethod => RpcError::UnknownMethod {
            peer,
            message: e.message,
        },
    }
}

/// The delay before attempt `failures + 1`: `base · 2^(failures-1)`, capped at `max`, then
/// drawn uniformly from its upper half so that nodes that lost the same peer at the same
/// moment do not all redial in lockstep.
pub(crate) fn backoff_delay(base_ms: u64, max_ms: u64, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let capped = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let low = capped / 2;
    Duration::from_millis(rand::rng().random_range(low..=capped))
}

/// Request id of keepalive Pings. Calls use ids from 1, so a Pong with this id is never an
/// answer anyone waits for (and is not counted as late).
const KEEPALIVE_REQUEST_ID: u64 = 0;

/// Sends a frame-level Ping every `keepalive_interval_ms`, so the server's silence timer and
/// ours (reset by its Pong) only fire when the other side is really gone.
fn spawn_keepalive(ctx: Arc<RpcContext>, tx: mpsc::Sender<Bytes>, state: Arc<ConnState>) {
    tokio::spawn(async move {
        let period = Duration::from_millis(ctx.config.keepalive_interval_ms);
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let frame = ctx.frame(FrameKind::Ping, KEEPALIVE_REQUEST_ID, ctx.ping_body());
            if let Ok(bytes) = encode_to_bytes(&frame, ctx.config.max_frame_bytes) {
                // A full queue means frames are flowing anyway; skip this beat.
                let _ = tx.try_send(bytes);
            }
        }
    });
}

async fn read_loop(
    ctx: Arc<RpcContext>,
    addr: SocketAddr,
    mut reader: FrameReader,
    conn: Arc<Conn>,
    stats: Arc<PeerStats>,
    clock: Arc<PeerClock>,
) {
    let silence = Duration::from_millis(ctx.config.peer_silence_timeout_ms);
    loop {
        let next = tokio::select! {
            _ = conn.state.token.cancelled() => break,
            n = tokio::time::timeout(silence, reader.next()) => n,
        };
        let Ok(next) = next else {
            stats.closed_silent.fetch_add(1, Relaxed);
            tracing::warn!(peer = %addr, silence_ms = ctx.config.peer_silence_timeout_ms, "rpc peer silent; closing connection");
            conn.state.close(format!(
                "peer sent nothing for {} ms (peer_silence_timeout_ms)",
                ctx.config.peer_silence_timeout_ms
            ));
            break;
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                conn.state.close("connection closed by peer");
                break;
            }
            Err(e) => {
                if let Some(r) = e.reject_reason() {
                    stats.frames_rejected.inc(r);
                    tracing::warn!(peer = %addr, error = %e, "bad frame from rpc server; closing");
                }
                conn.state.close(e.to_string());
                break;
            }
        };
        stats
            .bytes_in
            .fetch_add(frame.encoded_len() as u64, Relaxed);
        ctx.observe(&clock, frame.hlc, &addr);
        if frame.kind == FrameKind::Pong {
            ctx.observe_pong(&clock, &frame.body);
            if frame.request_id == KEEPALIVE_REQUEST_ID {
                continue;
            }
        }
        let reply = match frame.kind {
            FrameKind::Response => Reply::Response(frame.body),
            FrameKind::Pong => Reply::Pong,
            FrameKind::Error => match postcard::from_bytes::<RemoteError>(&frame.body) {
                Ok(e) => Reply::Error(e),
                Err(e) => {
                    stats.frames_rejected.inc(RejectReason::Undecodable);
                    tracing::warn!(peer = %addr, error = %e, "undecodable error frame; closing");
                    conn.state.close(format!("undecodable error frame: {e}"));
                    break;
                }
            },
            other => {
                stats.frames_rejected.inc(RejectReason::Unexpected);
                tracing::warn!(peer = %addr, kind = ?other, "unexpected frame kind from server; closing");
                conn.state
                    .close(format!("unexpected {other:?} frame from server"));
                break;
            }
        };
        let waiter = conn.pending.lock().waiters.remove(&frame.request_id);
        let delivered = match waiter {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        };
        if !delivered {
            stats.late_responses.fetch_add(1, Relaxed);
        }
    }
    // Wake every waiter: dropping their senders makes them fail as Unreachable at once
    // instead of waiting out their deadlines.
    let waiters = {
        let mut p = conn.pending.lock();
        p.closed = true;
        std::mem::take(&mut p.waiters)
    };
    drop(waiters);
    tracing::debug!(peer = %addr, reason = %conn.state.reason(), "rpc connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        for failures in 1..40 {
            let d = backoff_delay(50, 5_000, failures).as_millis() as u64;
            let full = (50u64 << (failures - 1).min(32)).min(5_000);
            assert!(
                d >= full / 2 && d <= full,
                "failures={failures} delay={d} full={full}"
            );
        }
        assert!(backoff_delay(50, 5_000, u32::MAX) <= Duration::from_millis(5_000));
    }
}
