//! The tokio driver of the RESP front end: accepts connections (at most `maxclients`), reads
//! requests, runs them through the command layer, writes replies, and shuts down gracefully.
//!
//! Each connection is its own task and owns its buffers, so a slow or hostile client can only
//! stall itself: its input is bounded by `max_request_bytes`, its pending output by
//! `output_buffer_limit_bytes`, a request must arrive within `request_timeout_ms` of its first
//! byte, and writes that make no progress for as long close the connection.

use crate::cmd::{self, After, ClientInfo, ServerState, Session};
use crate::resp::{Parsed, Reply, parse_request};
use crate::store::Mutation;
use bytes::{Buf, Bytes, BytesMut};
use io_threads::IoThreads;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Bytes reserved for each read: large enough that a pipelined burst of small commands is
/// one syscall, small enough that 10k idle-ish clients cost little.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Replies are written once this much is pending, even mid-pipeline, so a long pipeline of
/// large replies streams out instead of accumulating up to the output limit.
const WRITE_FLUSH_BYTES: usize = 64 * 1024;

/// A bound listener plus the shared state, ready to run.
#[derive(Debug)]
pub struct RespServer {
    state: Arc<ServerState>,
    listener: TcpListener,
}

impl RespServer {
    /// Binds `state.config.server.listen`.
    pub async fn bind(state: Arc<ServerState>) -> io::Result<RespServer> {
        let listener = TcpListener::bind(state.config.server.listen).await?;
        *state.bound_listen.lock() = Some(listener.local_addr()?);
        Ok(RespServer { state, listener })
    }

    /// Serves on an already bound listener (the node binds early to advertise the address).
    pub fn from_listener(state: Arc<ServerState>, listener: TcpListener) -> RespServer {
        if let Ok(a) = listener.local_addr() {
            *state.bound_listen.lock() = Some(a);
        }
        RespServer { state, listener }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets every connection finish
    /// the requests it has already received, waits up to `shutdown_timeout_ms` for them, and
    /// finally makes the store durable ([`crate::store::Store::shutdown`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let state = self.state;
        let maxclients = state.config.server.maxclients;
        let slots = Arc::new(Semaphore::new(maxclients));
        let (stop_tx, stop_rx) = watch::channel(false);
        let io = IoThreads::get(
            state.config.server.io_threads,
            state.config.server.busy_poll_us,
        )?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    state.stats.connections_received.fetch_add(1, Ordering::Relaxed);
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        state.stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let mut stream = stream;
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                stream.write_all(b"-ERR max number of clients reached\r\n"),
                            )
                            .await;
                        });
                        continue;
                    };
                    // Deregister from this runtime; the event loop re-registers it.
                    let stream = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not hand a connection over");
                            continue;
                        }
                    };
                    let state = state.clone();
                    let stop = stop_rx.clone();
                    state.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
                    io.spawn_connection(move || async move {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                let _ = handle(state.clone(), stream, addr, stop).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "could not register a connection"),
                        }
                        state.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let deadline = Duration::from_millis(state.config.server.shutdown_timeout_ms);
        if tokio::time::timeout(deadline, slots.acquire_many(maxclients as u32))
            .await
            .is_err()
        {
            tracing::warn!("connections still busy after shutdown_timeout_ms; closing anyway");
        }
        state
            .store
            .shutdown()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Most plain SETs coalesced into one store write (bounds the batch a single client builds).
const SET_COALESCE_MAX: usize = 256;
/// Most plain GETs read in one run (bounds the keys and results one client holds at once).
const GET_COALESCE_MAX: usize = 256;

/// A run of consecutive plain commands of one kind, executed together when the run ends
/// (another command, the end of the buffered input, or the run's bound). Only one kind is
/// pending at a time, so replies keep request order and a GET sees every SET before it.
#[derive(Debug, Default)]
struct Runs {
    sets: Vec<Mutation>,
    /// Keys of pending GETs; the vector is reused from run to run.
    gets: Vec<Bytes>,
}

impl Runs {
    fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.gets.is_empty()
    }
}

/// Writes the coalesced SETs and appends one reply per SET.
async fn flush_sets(
    state: &ServerState,
    session: &Session,
    pending: &mut Vec<Mutation>,
    out: &mut Reply,
) {
    if pending.is_empty() {
        return;
    }
    let n = pending.len();
    match state
        .store
        .write(&session.ctx, std::mem::take(pending))
        .await
    {
        Ok(_) => (0..n).for_each(|_| out.ok()),
        Err(e) => (0..n).for_each(|_| cmd::store_error(out, &e)),
    }
}

/// Reads the coalesced GETs and appends one reply per GET, exactly as `GET` would (one
/// result per key, so one failing read fails only its own GET). The output bounds are
/// checked after every reply, as they would be after every command.
async fn flush_gets(
    state: &ServerState,
    session: &Session,
    keys: &mut Vec<Bytes>,
    stream: &mut TcpStream,
    out: &mut Reply,
    request_timeout: Duration,
) -> io::Result<Option<Close>> {
    if keys.is_empty() {
        return Ok(None);
    }
    let results = state.store.get_each(&session.ctx, keys).await;
    debug_assert_eq!(results.len(), keys.len());
    keys.clear();
    for r in results {
        match r {
            Ok(Some(e)) => out.bulk(&e.value),
            Ok(None) => out.null(),
            Err(e) => cmd::store_error(out, &e),
        }
        if out.buf.len() > state.config.limits.output_buffer_limit_bytes {
            return Ok(Some(Close::OutputLimit));
        }
        if out.buf.len() >= WRITE_FLUSH_BYTES {
            write_out(stream, out, state, request_timeout).await?;
        }
    }
    Ok(None)
}

/// Runs whatever run is pending (see [`Runs`]).
async fn flush_runs(
    state: &ServerState,
    session: &Session,
    runs: &mut Runs,
    stream: &mut TcpStream,
    out: &mut Reply,
    request_timeout: Duration,
) -> io::Result<Option<Close>> {
    flush_sets(state, session, &mut runs.sets, out).await;
    flush_gets(state, session, &mut runs.gets, stream, out, request_timeout).await
}

/// Why a connection ended (for counters and logs).
#[derive(Debug, PartialEq, Eq)]
enum Close {
    Eof,
    Quit,
    Protocol,
    Idle,
    SlowRequest,
    OutputLimit,
    RequestLimit,
    Shutdown,
}

async fn write_out(
    stream: &mut TcpStream,
    out: &mut Reply,
    state: &ServerState,
    timeout: Duration,
) -> io::Result<()> {
    if out.buf.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, stream.write_all(&out.buf)).await {
        Ok(r) => r?,
        Err(_) => {
            state
                .stats
                .output_limit_disconnects
                .fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client not reading",
            ));
        }
    }
    state
        .stats
        .net_output_bytes
        .fetch_add(out.buf.len() as u64, Ordering::Relaxed);
    out.buf.clear();
    Ok(())
}

async fn handle(
    state: Arc<ServerState>,
    mut stream: TcpStream,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Close> {
    let _ = stream.set_nodelay(true);
    let laddr = stream.local_addr()?;
    let info = Arc::new(ClientInfo::new(state.next_client_id(), addr, laddr));
    state.register(info.clone());
    let result = serve_connection(&state, &mut stream, info.clone(), &mut stop).await;
    state.unregister(info.id);
    let stats = &state.stats;
    match &result {
        Ok(Close::Protocol) => stats.protocol_errors.fetch_add(1, Ordering::Relaxed),
        Ok(Close::Idle) => stats.idle_disconnects.fetch_add(1, Ordering::Relaxed),
        Ok(Close::SlowRequest) => stats
            .slow_request_disconnects
            .fetch_add(1, Ordering::Relaxed),
        Ok(Close::OutputLimit) => stats
            .output_limit_disconnects
            .fetch_add(1, Ordering::Relaxed),
        Ok(Close::RequestLimit) => stats
            .request_limit_disconnects
            .fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let _ = stream.shutdown().await;
    if matches!(
        result,
        Ok(Close::Protocol | Close::RequestLimit | Close::SlowRequest)
    ) {
        // Closing a socket with unread input makes the kernel send RST, which can destroy
        // the error reply before the client reads it. Having sent FIN, discard what is
        // still arriving for a moment so the client gets to see why it was disconnected.
        drain(&mut stream).await;
    }
    result
}

/// How long and how much a refused client's remaining input is drained for (see `handle`).
const DRAIN_MS: u64 = 250;
const DRAIN_BYTES_MAX: usize = 1 << 20;

async fn drain(stream: &mut TcpStream) {
    let mut scratch = [0u8; 16 * 1024];
    let mut total = 0usize;
    let deadline = Instant::now() + Duration::from_millis(DRAIN_MS);
    while total < DRAIN_BYTES_MAX {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

async fn serve_connection(
    state: &ServerState,
    stream: &mut TcpStream,
    info: Arc<ClientInfo>,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<Close> {
    let cfg = &state.config;
    let limits = cfg.limits.request_limits();
    let max_request_bytes = cfg.limits.max_request_bytes;
    let output_limit = cfg.limits.output_buffer_limit_bytes;
    let request_timeout = Duration::from_millis(cfg.limits.request_timeout_ms);
    let idle_timeout =
        (cfg.server.idle_timeout_ms > 0).then(|| Duration::from_millis(cfg.server.idle_timeout_ms));
    let mut session = Session::new(info, cfg.server.password.is_some());
    session.ctx.consistency = state.store.default_consistency(&session.ctx.keyspace);
    let mut out = Reply::new(session.proto);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut ranges = Vec::new();
    let mut runs = Runs::default();
    // Do not re-parse before the buffer holds this many bytes (the parser said so).
    let mut need = 0usize;
    let mut last_activity = Instant::now();
    // When the request now at the front of the buffer started arriving.
    let mut partial_since: Option<Instant> = None;
    loop {
        // Run every complete request already buffered (pipelining).
        let mut consumed_any = false;
        while !inbuf.is_empty() && inbuf.len() >= need {
            let args: Vec<Bytes> =
                match parse_request(&inbuf, &limits, session.authenticated, &mut ranges) {
                    Ok(Parsed::Request { consumed }) => {
                        let plain = plain_command(&inbuf, &ranges, session.authenticated);
                        let frame = inbuf.split_to(consumed).freeze();
                        need = 0;
                        consumed_any = true;
                        match plain {
                            Some(Plain::Get) => {
                                // Plain `GET key` runs are read in one store call (same
                                // order, same replies), after any SETs before them.
                                flush_sets(state, &session, &mut runs.sets, &mut out).await;
                                state.stats.inc_commands();
                                session.info.set_last_command(cmd::CmdId::Get);
                                runs.gets.push(frame.slice(ranges[1].clone()));
                                if runs.gets.len() >= GET_COALESCE_MAX
                                    && let Some(close) = flush_gets(
                                        state,
                                        &session,
                                        &mut runs.gets,
                                        stream,
                                        &mut out,
                                        request_timeout,
                                    )
                                    .await?
                                {
                                    return Ok(close);
                                }
                                continue;
                            }
                            Some(Plain::Set) => {
                                // Plain `SET key value` runs are coalesced into one store
                                // write (same order, same replies), so a pipelined burst
                                // costs one trip to the writer.
                                if let Some(close) = flush_gets(
                                    state,
                                    &session,
                                    &mut runs.gets,
                                    stream,
                                    &mut out,
                                    request_timeout,
                                )
                                .await?
                                {
                                    return Ok(close);
                                }
                                state.stats.inc_commands();
                                session.info.set_last_command(cmd::CmdId::Set);
                                runs.sets.push(Mutation::put(
                                    frame.slice(ranges[1].clone()),
                                    frame.slice(ranges[2].clone()),
                                ));
                                if runs.sets.len() >= SET_COALESCE_MAX {
                                    flush_sets(state, &session, &mut runs.sets, &mut out).await;
                                }
                                continue;
                            }
                            None => ranges.iter().map(|r| frame.slice(r.clone())).collect(),
                        }
                    }
                    Ok(Parsed::Inline { consumed, args }) => {
                        inbuf.advance(consumed);
                        args.into_iter().map(Bytes::from).collect()
                    }
                    Ok(Parsed::Skip { consumed }) => {
                        inbuf.advance(consumed);
                        consumed_any = true;
                        continue;
                    }
                    Ok(Parsed::Incomplete { at_least }) => {
                        need = at_least;
                        break;
                    }
                    Err(e) => {
                        if let Some(close) = flush_runs(
                            state,
                            &session,
                            &mut runs,
                            stream,
                            &mut out,
                            request_timeout,
                        )
                        .await?
                        {
                            return Ok(close);
                        }
                        out.error(&format!("ERR {e}"));
                        write_out(stream, &mut out, state, request_timeout).await?;
                        return Ok(Close::Protocol);
                    }
                };
            need = 0;
            consumed_any = true;
            if !runs.is_empty()
                && let Some(close) = flush_runs(
                    state,
                    &session,
                    &mut runs,
                    stream,
                    &mut out,
                    request_timeout,
                )
                .await?
            {
                return Ok(close);
            }
            let after = cmd::execute(state, &mut session, args, &mut out).await;
            if out.buf.len() > output_limit {
                return Ok(Close::OutputLimit);
            }
            if after == After::Close {
                write_out(stream, &mut out, state, request_timeout).await?;
                return Ok(Close::Quit);
            }
            if out.buf.len() >= WRITE_FLUSH_BYTES {
                write_out(stream, &mut out, state, request_timeout).await?;
            }
        }
        if let Some(close) = flush_runs(
            state,
            &session,
            &mut runs,
            stream,
            &mut out,
            request_timeout,
        )
        .await?
        {
            return Ok(close);
        }
        write_out(stream, &mut out, state, request_timeout).await?;
        if need > max_request_bytes || inbuf.len() > max_request_bytes {
            out.error("ERR Protocol error: request larger than limits.max_request_bytes");
            write_out(stream, &mut out, state, request_timeout).await?;
            return Ok(Close::RequestLimit);
        }
        if *stop.borrow() {
            return Ok(Close::Shutdown);
        }
        let now = Instant::now();
        if inbuf.is_empty() {
            partial_since = None;
        } else if consumed_any || partial_since.is_none() {
            partial_since = Some(now);
        }
        let deadline = match (partial_since, idle_timeout) {
            (Some(start), _) => Some((start + request_timeout, Close::SlowRequest)),
            (None, Some(idle)) => Some((last_activity + idle, Close::Idle)),
            (None, None) => None,
        };
        inbuf.reserve(READ_CHUNK_BYTES.min(need.saturating_sub(inbuf.len()).max(1024)));
        let read = async {
            match &deadline {
                Some((at, _)) => tokio::time::timeout_at(*at, stream.read_buf(&mut inbuf))
                    .await
                    .ok(),
                None => Some(stream.read_buf(&mut inbuf).await),
            }
        };
        tokio::select! {
            r = read => match r {
                None => {
                    let why = deadline.map_or(Close::Idle, |(_, why)| why);
                    if why == Close::SlowRequest {
                        out.error("ERR request not received within limits.request_timeout_ms");
                        let _ = write_out(stream, &mut out, state, Duration::from_secs(1)).await;
                    }
                    return Ok(why);
                }
                Some(Ok(0)) => return Ok(Close::Eof),
                Some(Ok(n)) => {
                    last_activity = Instant::now();
                    // Once per read rather than per command: CLIENT LIST's idle time is
                    // whole seconds, and a clock read per command showed in profiles.
                    session.info.touch();
                    busy_poll::note_read();
                    state.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Some(Err(e)) => return Err(e),
            },
            _ = stop.changed() => return Ok(Close::Shutdown),
        }
    }
}

/// A command the connection loop runs in a coalesced run (see [`Runs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plain {
    /// `GET key`
    Get,
    /// `SET key value` without options
    Set,
}

/// Whether the parsed request (`ranges` into `buf`) is a plain GET or SET. Anything else,
/// including either command with the wrong number of arguments or before AUTH, takes the
/// general path, which replies with the right error.
fn plain_command(
    buf: &[u8],
    ranges: &[std::ops::Range<usize>],
    authenticated: bool,
) -> Option<Plain> {
    if !authenticated {
        return None;
    }
    let name = &buf[ranges.first()?.clone()];
    match ranges.len() {
        2 if name.eq_ignore_ascii_case(b"get") => Some(Plain::Get),
        3 if name.eq_ignore_ascii_case(b"set") => Some(Plain::Set),
        _ => None,
    }
}

pub mod busy_poll;
pub mod io_threads;
#[cfg(test)]
mod tests;
