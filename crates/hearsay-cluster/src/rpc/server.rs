//! The answering side: accepts connections, runs the handshake, and dispatches requests to
//! their handlers concurrently (bounded per connection), answering each as it completes.

use super::config::MAX_HANDSHAKE_FRAME_BYTES;
use super::conn::{
    ConnState, FrameReader, HandshakeReadError, RpcContext, read_handshake, send_handshake,
    spawn_writer,
};
use super::frame::{Frame, FrameKind, RejectReason, encode_to_bytes};
use super::handshake::{HandshakeMsg, ServerHandshake, ServerStep};
use super::message::{BoxFuture, CallContext, Ping, Pong, Registry, RemoteError, RemoteErrorCode};
use super::stats::{ServerPeerStats, ServerStats};
use super::transport::{BoxedRead, BoxedWrite, Listener, TcpListener};
use bytes::Bytes;
use hearsay_types::{NodeId, Timestamp};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct ServerShared {
    ctx: Arc<RpcContext>,
    registry: Registry,
    stats: Arc<ServerStats>,
}

/// A running RPC server. Dropping it stops accepting and closes its connections;
/// [`RpcServer::shutdown`] also waits for that to finish.
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    stats: Arc<ServerStats>,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl RpcServer {
    /// Binds `addr` on TCP and starts serving `registry` (plus the built-in [`Ping`]).
    pub async fn bind(
        ctx: Arc<RpcContext>,
        addr: SocketAddr,
        registry: Registry,
    ) -> std::io::Result<RpcServer> {
        let listener = TcpListener::bind(addr).await?;
        RpcServer::serve(ctx, Box::new(listener), registry)
    }

    /// Serves `registry` (plus the built-in [`Ping`]) on connections from `listener`.
    /// Must be called within a tokio runtime.
    pub fn serve(
        ctx: Arc<RpcContext>,
        listener: Box<dyn Listener>,
        mut registry: Registry,
    ) -> std::io::Result<RpcServer> {
        let local_addr = listener.local_addr();
        if !registry.contains(<Ping as super::message::Rpc>::METHOD) {
            let node = ctx.identity.node_id;
            registry
                .register_fn::<Ping, _, _>(move |_, ping| async move {
                    Ok(Pong {
                        payload: ping.payload,
                        node,
                    })
                })
                .map_err(std::io::Error::other)?;
        }
        let stats = Arc::new(ServerStats::default());
        let shared = Arc::new(ServerShared {
            ctx,
            registry,
            stats: stats.clone(),
        });
        let token = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared, token.clone()));
        Ok(RpcServer {
            local_addr,
            stats,
            token,
            task: Some(task),
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Stops accepting, closes every connection, and waits until the listener and all
    /// connection tasks are gone (so the port can be bound again).
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn accept_loop(
    mut listener: Box<dyn Listener>,
    shared: Arc<ServerShared>,
    token: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(shared.ctx.config.max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (r, w, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the open
                        // connections, retry accepting shortly.
                        tracing::warn!(error = %e, "rpc accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.stats.connections_accepted.fetch_add(1, Relaxed);
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    shared.stats.connections_refused_limit.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, limit = shared.ctx.config.max_connections, "rpc connection limit reached; closing");
                    drop((r, w));
                    continue;
                };
                let shared = shared.clone();
                let token = token.child_token();
                conns.spawn(async move {
                    let _permit = permit;
                    shared.stats.connections_open.fetch_add(1, Relaxed);
                    serve_connection(&shared, r, w, peer, token).await;
                    shared.stats.connections_open.fetch_sub(1, Relaxed);
                });
            }
        }
    }
    drop(listener);
    // Connection tasks watch child tokens of `token`, so they are ending; wait for them.
    while conns.join_next().await.is_some() {}
}

async fn handshake(
    shared: &ServerShared,
    reader: &mut FrameReader,
    w: &mut BoxedWrite,
    peer: SocketAddr,
) -> Result<(NodeId, Timestamp), String> {
    let ctx = &shared.ctx;
    let mut hs = ServerHandshake::new(ctx.identity.clone(), rand::random());
    let mut first_hlc = None;
    loop {
        let (msg, hlc) = match read_handshake(reader).await {
            Ok(m) => m,
            Err(HandshakeReadError::Io(reason)) => return Err(reason),
            Err(HandshakeReadError::Rejected(r, reason)) => {
                shared.stats.frames_rejected.inc(r);
                return Err(reason);
            }
        };
        first_hlc.get_or_insert(hlc);
        match hs.on_message(msg) {
            Ok(ServerStep::Send(m)) => send_handshake(ctx, w, &m).await?,
            Ok(ServerStep::Established { client_id, welcome }) => {
                send_handshake(ctx, w, &welcome).await?;
                return Ok((client_id, first_hlc.unwrap_or(hlc)));
            }
            Err(e) => {
                shared.stats.handshakes_refused.fetch_add(1, Relaxed);
                if let Some(reason) = e.reason_for_peer() {
                    let _ = send_handshake(ctx, w, &HandshakeMsg::Refused { reason }).await;
                }
                tracing::warn!(%peer, error = %e, "rpc handshake refused");
                return Err(e.to_string());
            }
        }
    }
}

async fn serve_connection(
    shared: &Arc<ServerShared>,
    r: BoxedRead,
    mut w: BoxedWrite,
    peer: SocketAddr,
    token: CancellationToken,
) {
    let ctx = &shared.ctx;
    let stats = &shared.stats;
    let mut reader = FrameReader::new(r, MAX_HANDSHAKE_FRAME_BYTES);
    let hs_timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
    let hs = tokio::select! {
        _ = token.cancelled() => return,
        r = tokio::time::timeout(hs_timeout, handshake(shared, &mut reader, &mut w, peer)) => r,
    };
    let (client_id, client_hlc) = match hs {
        Ok(Ok(x)) => x,
        Ok(Err(reason)) => {
            tracing::info!(%peer, %reason, "rpc connection closed during handshake");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, timeout_ms = ctx.config.handshake_timeout_ms, "rpc handshake timed out");
            return;
        }
    };
    stats.handshakes_ok.fetch_add(1, Relaxed);
    let clock = ctx.clocks.entry(client_id);
    ctx.observe(&clock, client_hlc, &client_id);
    reader.set_max_frame_bytes(ctx.config.max_frame_bytes);

    let state = Arc::new(ConnState::new(token));
    let (tx, rx) = mpsc::channel::<Bytes>(ctx.config.write_queue_frames);
    spawn_writer(w, rx, state.clone());
    let peer_stats = stats.peer(client_id);
    peer_stats.connections.fetch_add(1, Relaxed);
    let link = Arc::new(Link {
        shared: shared.clone(),
        tx,
        limiter: Arc::new(Semaphore::new(
            ctx.config.max_concurrent_requests_per_connection,
        )),
        peer: peer_stats.clone(),
        from: client_id,
        peer_addr: peer,
    });
    tracing::debug!(%peer, %client_id, "rpc connection established");

    let silence = Duration::from_millis(ctx.config.peer_silence_timeout_ms);
    loop {
        let next = tokio::select! {
            _ = state.token.cancelled() => break,
            n = tokio::time::timeout(silence, reader.next()) => n,
        };
        // Our clients send keepalives, so silence means the peer is gone (or is not ours).
        let Ok(next) = next else {
            stats.closed_silent.fetch_add(1, Relaxed);
            tracing::warn!(%peer, %client_id, silence_ms = ctx.config.peer_silence_timeout_ms, "rpc client silent; closing connection");
            state.close("peer silent");
            break;
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                state.close("connection closed by peer");
                break;
            }
            Err(e) => {
                if let Some(r) = e.reject_reason() {
                    stats.frames_rejected.inc(r);
                    tracing::warn!(%peer, %client_id, error = %e, "bad rpc frame; closing connection");
                }
                state.close(e.to_string());
                break;
            }
        };
        stats
            .bytes_in
            .fetch_add(frame.encoded_len() as u64, Relaxed);
        peer_stats
            .bytes_in
            .fetch_add(frame.encoded_len() as u64, Relaxed);
        ctx.observe(&clock, frame.hlc, &client_id);
        match frame.kind {
            FrameKind::Ping => {
                stats.pings.fetch_add(1, Relaxed);
                let pong = ctx.frame(
                    FrameKind::Pong,
                    frame.request_id,
                    ctx.pong_body(&frame.body),
                );
                link.send(&pong).await;
            }
            FrameKind::Request => {
                if let Err(reason) = dispatch(&link, frame) {
                    stats.frames_rejected.inc(RejectReason::Undecodable);
                    tracing::warn!(%peer, %client_id, %reason, "undecodable request; closing connection");
                    state.close(reason);
                    break;
                }
            }
            other => {
                stats.frames_rejected.inc(RejectReason::Unexpected);
                tracing::warn!(%peer, %client_id, kind = ?other, "unexpected frame kind from client; closing connection");
                state.close(format!("unexpected {other:?} frame"));
                break;
            }
        }
    }
    tracing::debug!(%peer, %client_id, reason = %state.reason(), "rpc connection closed");
}

/// One authenticated connection, as its request tasks see it.
struct Link {
    shared: Arc<ServerShared>,
    tx: mpsc::Sender<Bytes>,
    limiter: Arc<Semaphore>,
    peer: Arc<ServerPeerStats>,
    from: NodeId,
    peer_addr: SocketAddr,
}

impl Link {
    fn error_frame(&self, id: u64, err: RemoteError) -> Frame {
        self.shared.stats.responses_error.fetch_add(1, Relaxed);
        self.peer.responses_error.fetch_add(1, Relaxed);
        // A RemoteError is a code and a string; postcard cannot fail on it.
        let body = postcard::to_allocvec(&err).unwrap_or_default();
        self.shared
            .ctx
            .frame(FrameKind::Error, id, Bytes::from(body))
    }

    fn count_out(&self, len: u64) {
        self.shared.stats.bytes_out.fetch_add(len, Relaxed);
        self.peer.bytes_out.fetch_add(len, Relaxed);
    }

    /// Queues an error answer without blocking the reader; if the queue is full the peer is
    /// not reading and the answer would be late anyway.
    fn answer_error_now(&self, id: u64, err: RemoteError) {
        let frame = self.error_frame(id, err);
        if let Ok(bytes) = encode_to_bytes(&frame, self.shared.ctx.config.max_frame_bytes) {
            let len = bytes.len() as u64;
            if self.tx.try_send(bytes).is_ok() {
                self.count_out(len);
            }
        }
    }

    async fn send(&self, frame: &Frame) {
        match encode_to_bytes(frame, self.shared.ctx.config.max_frame_bytes) {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                if self.tx.send(bytes).await.is_ok() {
                    self.count_out(len);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode rpc answer"),
        }
    }
}

/// Decrements a peer's running-handler gauge when its task ends, however it ends.
struct Running(Arc<ServerPeerStats>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Relaxed);
    }
}

/// Starts one request. Fails only when the body does not decode (the connection must close);
/// every other failure is answered with an `Error` frame.
fn dispatch(link: &Arc<Link>, frame: Frame) -> Result<(), String> {
    let stats = &link.shared.stats;
    stats.requests.fetch_add(1, Relaxed);
    link.peer.requests.fetch_add(1, Relaxed);
    let id = frame.request_id;
    if frame.deadline_ms == 0 {
        // The caller already gave up; nothing to answer.
        stats.deadline_dropped.fetch_add(1, Relaxed);
        link.peer.deadline_dropped.fetch_add(1, Relaxed);
        return Ok(());
    }
    let Some(reg) = link.shared.registry.handlers.get(&frame.method) else {
        let err = RemoteError::new(
            RemoteErrorCode::UnknownMethod,
            format!("no handler for method {}", frame.method),
        );
        link.answer_error_now(id, err);
        return Ok(());
    };
    let Ok(permit) = link.limiter.clone().try_acquire_owned() else {
        stats.overloaded.fetch_add(1, Relaxed);
        link.peer.overloaded.fetch_add(1, Relaxed);
        let err = RemoteError::new(
            RemoteErrorCode::Overloaded,
            format!(
                "{} requests already running on this connection (max_concurrent_requests_per_connection)",
                link.shared
                    .ctx
                    .config
                    .max_concurrent_requests_per_connection
            ),
        );
        link.answer_error_now(id, err);
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_millis(u64::from(frame.deadline_ms));
    let rctx = CallContext {
        from: link.from,
        peer_addr: link.peer_addr,
        request_id: id,
        deadline,
    };
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| reg.handler.call(rctx, &frame.body)));
    let fut = match called {
        Ok(r) => r.map_err(|e| format!("request body for {} does not decode: {e}", reg.name))?,
        Err(panic) => {
            stats.handler_panics.fetch_add(1, Relaxed);
            let msg = panic_message(&panic);
            tracing::error!(method = reg.name, %msg, "rpc handler panicked");
            drop(permit);
            link.answer_error_now(
                id,
                RemoteError::new(
                    RemoteErrorCode::Handler,
                    format!("{} handler panicked: {msg}", reg.name),
                ),
            );
            return Ok(());
        }
    };
    let name = reg.name;
    let link = link.clone();
    link.peer.running.fetch_add(1, Relaxed);
    let running = Running(link.peer.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let _running = running;
        let shared = &link.shared;
        let outcome = match tokio::time::timeout_at(deadline, CatchPanic(fut)).await {
            Err(_) => {
                shared.stats.deadline_dropped.fetch_add(1, Relaxed);
                link.peer.deadline_dropped.fetch_add(1, Relaxed);
                return;
            }
            Ok(Ok(o)) => o,
            Ok(Err(msg)) => {
                shared.stats.handler_panics.fetch_add(1, Relaxed);
                tracing::error!(method = name, %msg, "rpc handler panicked");
                Err(RemoteError::new(
                    RemoteErrorCode::Handler,
                    format!("{name} handler panicked: {msg}"),
                ))
            }
        };
        let frame = match outcome {
            Ok(body) => {
                let f = shared.ctx.frame(FrameKind::Response, id, body);
                if f.encoded_len() > shared.ctx.config.max_frame_bytes as usize {
                    link.error_frame(
                        id,
                        RemoteError::new(
                            RemoteErrorCode::Handler,
                            format!(
                                "response of {} bytes exceeds max_frame_bytes ({})",
                                f.encoded_len(),
                                shared.ctx.config.max_frame_bytes
                            ),
                        ),
                    )
                } else {
                    shared.stats.responses_ok.fetch_add(1, Relaxed);
                    link.peer.responses_ok.fetch_add(1, Relaxed);
                    f
                }
            }
            Err(e) => link.error_frame(id, e),
        };
        link.send(&frame).await;
    });
    Ok(())
}

/// Polls a handler's future and turns a panic into an error: one buggy handler must neither
/// leave its caller waiting out the deadline nor take the connection down.
struct CatchPanic(BoxFuture<Result<Bytes, RemoteError>>);

impl Future for CatchPanic {
    type Output = Result<Result<Bytes, RemoteError>, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(panic) => Poll::Ready(Err(panic_message(&panic))),
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
