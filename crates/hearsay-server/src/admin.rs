//! The HTTP admin API of a node: JSON views under `/v1/...` and Prometheus metrics on
//! `/metrics`, served on `[server] admin_listen` (default port 7380).
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /v1/health` | `{"status":"ok"}` |
//! | `GET /v1/status` | the members as `hearsay status` shows them (`mode`: `cluster` or `single`) |
//! | `GET /v1/membership` | gossip's membership view (status, generation, heartbeat, phi, addresses); 404 in single mode |
//! | `GET /v1/stats` | server, store, storage-engine and cluster counters |
//! | `GET /v1/endpoints?keyspace=K&key=KEY` | the key's token and its replicas |
//! | `GET /v1/local/scan?keyspace=K&from=T&limit=N` | this node's own stored cells from token `T` (inclusive), in token order, tombstones included, at most [`MAX_LOCAL_SCAN_CELLS`] |
//! | `GET /v1/local/get?keyspace=K&key=HEX` | this node's own stored cell of one key, or `null` |
//! | `GET /metrics` | the same figures in the Prometheus/OpenMetrics text format |
//! | `POST /v1/repair?keyspace=K&full=1&start=T&end=T` | starts a repair job over this node's ranges (all keyspaces when none is named; `full` compares every cell without trees; `start`/`end` limit it to the ranges within `(start, end]`): `202 {"job": id}` |
//! | `GET /v1/repair` | repair counters, primary ranges' repair ages and recent jobs |
//! | `GET /v1/repair/{id}` | one job's progress: ranges done and failed of all, cells and bytes moved, finished or not |
//!
//! The same JSON shapes are served in cluster mode (a [`hearsay_cluster::node::Node`] runs)
//! and in single-node mode (a plain `LocalStore`: one member, itself, owning everything), so
//! the CLI (`hearsay status`, `hearsay getendpoints`, see [`client`]) works against both.
//!
//! Bounds: only GET (and HEAD) requests, except the few that start work ([`MUTATING_PATHS`],
//! POST from a loopback address only: the operator runs `hearsay repair` on the node's host,
//! as `nodetool` talks to a local JMX port), no request bodies, query strings of at most
//! [`MAX_QUERY_BYTES`], at most [`MAX_ADMIN_CONNECTIONS`] connections at once, and a
//! connection must deliver each request within [`ADMIN_REQUEST_TIMEOUT`] of opening or of its
//! previous response. Handlers only read snapshots (counters, the ring view); none blocks on
//! I/O on the async runtime: the two `/v1/local/...` views read the engine (SSTables may
//! be on disk) on the blocking pool, a bounded page at a time. The module is documented for
//! operators in `docs/admin.md`.
//!
//! The `/v1/local/...` views exist for fault tests (`hearsay-faults`) and operators who must
//! see what one replica holds: a read through the coordinator at any level compares and
//! repairs replicas, so it can never show that one of them lacks a write.

pub mod client;
mod listener;
mod metrics;
#[cfg(test)]
mod tests;

use crate::cmd::ServerState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hearsay_cluster::node::{KeyspaceDef, MemberRow, Node, NodeStatus, SYSTEM_KEYSPACE};
use hearsay_ring::ReplicationStrategy;
use hearsay_storage::{Cell, CellKey, Engine, EngineStats};
use hearsay_types::{Timestamp, Token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest query string accepted, in bytes: a keyspace name and a key (percent-encoded, so
/// up to three bytes per key byte) fit; anything longer is refused with 414 instead of being
/// parsed.
pub const MAX_QUERY_BYTES: usize = 4_096;
/// Most admin connections served at once; more wait in the kernel's accept queue. The API
/// is for operators, scrapers and the CLI, a handful of clients, and each holds memory.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// A connection must deliver a complete request within this long of opening or of its
/// previous response, or it is closed: bounds slow (slowloris) and idle keep-alive clients.
/// Longer than Prometheus's default 15 s scrape interval, so a scraper keeps its connection.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Host id shown in single-node mode when the data directory holds no `node_id` file (a
/// cluster node creates one at its first start).
const SINGLE_NODE_ID: &str = "local";
/// Most cells one `/v1/local/scan` page returns (a page may exceed it only to finish the
/// cells of its last token). As many as a replica returns to a `ScanRange` request
/// (`hearsay_cluster::node::messages::MAX_SCAN_CELLS`): a few MB of JSON, built in one
/// blocking task without holding up other requests.
pub const MAX_LOCAL_SCAN_CELLS: usize = 10_000;

/// Paths that start work; POST is accepted on them only, and only from a loopback peer
/// (the admin port may listen on a LAN address for scrapers, which must not start repairs).
pub const MUTATING_PATHS: &[&str] = &["/v1/repair"];

/// The address a request came from (what the loopback check of [`MUTATING_PATHS`] reads).
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, listener::BoundedListener>,
    > for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, listener::BoundedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// What the admin API reads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub server: Arc<ServerState>,
    pub engine: Arc<Engine>,
    /// The cluster node, in cluster mode.
    pub cluster: Option<Arc<Node>>,
}

/// The state handlers see: the caller's state plus the admin port actually bound.
#[derive(Debug, Clone)]
struct Ctx {
    state: AdminState,
    admin_addr: Option<SocketAddr>,
}

/// Serves the admin API on `listener` until `shutdown` resolves, then lets requests in
/// flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin_addr = listener.local_addr().ok();
    let app = router(Ctx { state, admin_addr });
    let listener =
        listener::BoundedListener::new(listener, MAX_ADMIN_CONNECTIONS, ADMIN_REQUEST_TIMEOUT);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/membership", get(membership))
        .route("/v1/stats", get(stats))
        .route("/v1/endpoints", get(endpoints))
        .route("/v1/local/scan", get(local_scan))
        .route("/v1/local/get", get(local_get))
        .route("/v1/repair", get(repair_status).post(repair_start))
        .route("/v1/repair/{id}", get(repair_job))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(guard))
        .with_state(ctx)
}

/// A JSON error body with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// Refuses what the API never needs before any handler runs: other methods, bodies, long
/// query strings.
async fn guard(req: Request, next: Next) -> Response {
    let mutating = req.method() == Method::POST && MUTATING_PATHS.contains(&req.uri().path());
    if mutating {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<PeerAddr>>()
            .map(|c| c.0.0);
        if !peer.is_some_and(|p| p.ip().is_loopback()) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} is accepted from a loopback address only (run the command on the node's host)",
                    req.method(),
                    req.uri().path()
                ),
            );
        }
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} not allowed: the admin API is read-only",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let query_len = req.uri().query().map_or(0, str::len);
    if query_len > MAX_QUERY_BYTES {
        return error(
            StatusCode::URI_TOO_LONG,
            format!("query string of {query_len} bytes exceeds the limit of {MAX_QUERY_BYTES}"),
        );
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted",
        );
    }
    next.run(req).await
}

/// The 404 a repair endpoint answers in single-node mode.
fn not_a_cluster() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "repair needs cluster mode: a single node has no replicas to compare",
    )
}

/// Starts a repair job: `202 {"job": id}`.
async fn repair_start(State(ctx): State<Ctx>, req: Request) -> Response {
    let Some(node) = ctx.state.cluster.as_ref() else {
        return not_a_cluster();
    };
    let params = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let text = |name: &str| {
        params
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let token = |name: &str| -> Result<Option<i64>, String> {
        text(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    format!("'{name}' must be a token (a signed 64-bit integer), not '{v}'")
                })
            })
            .transpose()
    };
    let range = match (token("start"), token("end")) {
        (Ok(Some(s)), Ok(Some(e))) => Some((s, e)),
        (Ok(None), Ok(None)) => None,
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'start' and 'end' go together: the range (start, end]",
            );
        }
    };
    let full = match text("full").as_deref() {
        None | Some("0" | "false") => false,
        Some("" | "1" | "true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("'full' is true or false, not '{other}'"),
            );
        }
    };
    let request = hearsay_cluster::node::repair::RepairRequest {
        keyspace: text("keyspace"),
        range,
        full,
    };
    match node.start_repair(request).await {
        Ok(id) => (StatusCode::ACCEPTED, axum::Json(json!({ "job": id }))).into_response(),
        Err(e) => {
            let status = match &e {
                hearsay_cluster::node::NodeError::NoSuchKeyspace(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, e.to_string())
        }
    }
}

async fn repair_status(State(ctx): State<Ctx>) -> Response {
    match ctx.state.cluster.as_ref() {
        Some(node) => json_ok(serde_json::to_value(node.repair_stats()).unwrap_or(Value::Null)),
        None => not_a_cluster(),
    }
}

async fn repair_job(
    State(ctx): State<Ctx>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(node) = ctx.state.cluster.as_ref() else {
        return not_a_cluster();
    };
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("'{id}' is not a job id"));
    };
    match node.repair_stats().jobs.into_iter().find(|j| j.id == id) {
        Some(job) => json_ok(serde_json::to_value(job).unwrap_or(Value::Null)),
        None => error(StatusCode::NOT_FOUND, format!("no repair job {id}")),
    }
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", req.uri().path()),
    )
}

/// 200 `{"status":"ok"}` when the node is ready and healthy; 503 with the reasons when it
/// has not heard from a peer yet, its clock is off, or its storage cannot take writes
/// (`node::health`), so a load balancer or orchestrator takes it out of rotation.
async fn health(State(ctx): State<Ctx>) -> Response {
    let h = match &ctx.state.cluster {
        Some(node) => node.health(),
        None => {
            let storage = ctx.state.engine.health();
            hearsay_cluster::node::NodeHealth {
                ready: true,
                storage_poisoned: storage.poisoned,
                disk_full: storage
                    .disk_full
                    .filter(|d| d.writes_failing)
                    .map(|d| d.to_string()),
                ..Default::default()
            }
        }
    };
    if h.is_ok() {
        return json_ok(json!({ "status": "ok" }));
    }
    let status = if h.ready { "sick" } else { "not_ready" };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "status": status,
            "codes": h.codes(),
            "reasons": h.reasons(),
        })),
    )
        .into_response()
}

async fn status(State(ctx): State<Ctx>) -> Response {
    let (mode, status) = match &ctx.state.cluster {
        Some(node) => ("cluster", node.status()),
        None => ("single", single_node_status(&ctx)),
    };
    let mut v = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("mode".into(), Value::from(mode));
    }
    json_ok(v)
}

async fn membership(State(ctx): State<Ctx>) -> Response {
    let Some(node) = &ctx.state.cluster else {
        return error(
            StatusCode::NOT_FOUND,
            "no gossip membership: this node runs in single-node mode (no [cluster] seeds)",
        );
    };
    match node.membership_json() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "gossip is not running (the node is starting or stopping)",
        ),
    }
}

async fn stats(State(ctx): State<Ctx>) -> Response {
    let st = &ctx.state;
    let cluster = st.cluster.as_ref().map_or(Value::Null, |n| {
        serde_json::to_value(n.stats()).unwrap_or(Value::Null)
    });
    json_ok(json!({
        "mode": if st.cluster.is_some() { "cluster" } else { "single" },
        "server": server_stats_json(&st.server),
        "store": store_info_json(&st.server),
        "storage": engine_stats_json(&st.engine.stats()),
        "cluster": cluster,
        "repair": st.cluster.as_ref().map_or(Value::Null, |n| {
            serde_json::to_value(n.repair_stats()).unwrap_or(Value::Null)
        }),
    }))
}

async fn endpoints(State(ctx): State<Ctx>, req: Request) -> Response {
    let params = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let keyspace = match params.get("keyspace") {
        Some(k) => String::from_utf8_lossy(k).into_owned(),
        None => hearsay_cluster::node::DEFAULT_KEYSPACE.to_string(),
    };
    let Some(key) = params.get("key") else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter 'key'");
    };
    let (token, replicas) = match &ctx.state.cluster {
        Some(node) => match node.endpoints(&keyspace, key) {
            Ok((token, eps)) => {
                let view = node.view();
                let replicas = eps
                    .iter()
                    .map(|(id, addr)| {
                        let m = view.membership.members.get(id);
                        json!({
                            "node_id": id.to_string(),
                            "cluster_addr": addr.map(|a| a.to_string()),
                            "client_addr": m.and_then(|m| m.client_addr).map(|a| a.to_string()),
                            "dc": m.map(|m| m.dc.clone()),
                            "rack": m.map(|m| m.rack.clone()),
                        })
                    })
                    .collect::<Vec<_>>();
                (token, replicas)
            }
            Err(hearsay_cluster::node::NodeError::NoSuchKeyspace(k)) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("keyspace '{k}' does not exist"),
                );
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => {
            if keyspace == SYSTEM_KEYSPACE || !ctx.state.engine.keyspaces().contains(&keyspace) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("keyspace '{keyspace}' does not exist"),
                );
            }
            let me = single_member(&ctx, &[]);
            let replica = json!({
                "node_id": me.node_id,
                "cluster_addr": me.cluster_addr,
                "client_addr": me.client_addr,
                "dc": me.dc,
                "rack": me.rack,
            });
            (hearsay_ring::token_of(key), vec![replica])
        }
    };
    json_ok(json!({
        "keyspace": keyspace,
        "key": String::from_utf8_lossy(key),
        "token": token.0,
        "replicas": replicas,
    }))
}

/// The keyspace a `/v1/local/...` request names (`default` if none), if this node serves
/// it: routed by the cluster node, or an engine keyspace of a single node (never the
/// internal `system` keyspace, which has no placement). Else the `404` to answer.
fn local_keyspace(ctx: &Ctx, params: &BTreeMap<String, Vec<u8>>) -> Result<String, String> {
    let keyspace = match params.get("keyspace") {
        Some(k) => String::from_utf8_lossy(k).into_owned(),
        None => hearsay_cluster::node::DEFAULT_KEYSPACE.to_string(),
    };
    let known = match &ctx.state.cluster {
        Some(node) => node.view().routes.contains_key(&keyspace),
        None => keyspace != SYSTEM_KEYSPACE && ctx.state.engine.keyspaces().contains(&keyspace),
    };
    if known {
        Ok(keyspace)
    } else {
        Err(format!("keyspace '{keyspace}' does not exist"))
    }
}

/// Computes the natural replicas of a token as this node's ring view does at the moment of
/// the request (one snapshot for a whole page), or just this node when it runs alone.
enum ReplicaLookup {
    Ring(Arc<hearsay_cluster::node::RingView>, String),
    Single(String),
}

impl ReplicaLookup {
    fn new(ctx: &Ctx, keyspace: &str) -> ReplicaLookup {
        match &ctx.state.cluster {
            Some(node) => ReplicaLookup::Ring(node.view(), keyspace.to_string()),
            None => ReplicaLookup::Single(single_node_id(&ctx.state.server)),
        }
    }

    fn replicas(&self, token: Token) -> Vec<String> {
        match self {
            ReplicaLookup::Ring(view, keyspace) => {
                view.routes.get(keyspace).map_or_else(Vec::new, |route| {
                    route
                        .map
                        .read_replicas(token)
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                })
            }
            ReplicaLookup::Single(me) => vec![me.clone()],
        }
    }
}

/// One stored cell as the `/v1/local/...` views show it: the key in hex (keys are bytes),
/// the value only as its length and CRC32C (enough to compare replicas and check a client's
/// value without shipping it).
fn local_cell_json(key: &CellKey, cell: &Cell, replicas: Vec<String>) -> Value {
    let value = cell.value.as_deref().unwrap_or(&[]);
    json!({
        "key": hex(&key.key),
        "token": key.token.0,
        "timestamp": cell.timestamp.0,
        "tombstone": cell.value.is_none(),
        "expires_at_ms": cell.expires_at_ms,
        "value_len": value.len(),
        "value_crc32c": crc32c(value),
        "replicas": replicas,
    })
}

/// `GET /v1/local/scan`: this node's own cells from `from` (inclusive) in token order,
/// tombstones and expired values included, read from the engine directly (no coordinator,
/// no digest comparison, no repair). The page rule is the replicas' `ScanRange` rule: at
/// most `limit` cells, except that a page never ends inside a token (it finishes the cells
/// of its last token), so `next` (the token to resume from, or `null` at the end) never
/// skips or repeats a cell.
async fn local_scan(State(ctx): State<Ctx>, req: Request) -> Response {
    let params = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let keyspace = match local_keyspace(&ctx, &params) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    let from = match params.get("from") {
        None => Token::MIN,
        Some(t) => match std::str::from_utf8(t)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
        {
            Some(t) => Token(t),
            None => return error(StatusCode::BAD_REQUEST, "'from' must be an i64 token"),
        },
    };
    let limit = match params.get("limit") {
        None => MAX_LOCAL_SCAN_CELLS,
        Some(n) => match std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n >= 1 => n.min(MAX_LOCAL_SCAN_CELLS),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "'limit' must be a positive integer",
                );
            }
        },
    };
    let lookup = ReplicaLookup::new(&ctx, &keyspace);
    let engine = ctx.state.engine.clone();
    let page = tokio::task::spawn_blocking(move || {
        use std::ops::Bound;
        let lower = Bound::Included(CellKey::new(from, bytes::Bytes::new()));
        let iter = engine
            .scan(&keyspace, lower, Bound::Unbounded)
            .map_err(|e| e.to_string())?;
        let mut cells: Vec<Value> = Vec::new();
        let mut last: Option<Token> = None;
        for item in iter {
            let (k, c) = item.map_err(|e| e.to_string())?;
            if cells.len() >= limit && last != Some(k.token) {
                return Ok((cells, Some(k.token)));
            }
            last = Some(k.token);
            let replicas = lookup.replicas(k.token);
            cells.push(local_cell_json(&k, &c, replicas));
        }
        Ok::<_, String>((cells, None))
    })
    .await;
    match page {
        Ok(Ok((cells, next))) => json_ok(json!({
            "cells": cells,
            "next": next.map(|t| t.0),
        })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scan task failed: {e}"),
        ),
    }
}

/// `GET /v1/local/get`: this node's own stored cell of `key` (hex), as `/v1/local/scan`
/// shows it, or `null` if it holds nothing for the key.
async fn local_get(State(ctx): State<Ctx>, req: Request) -> Response {
    let params = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let keyspace = match local_keyspace(&ctx, &params) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    let Some(key_hex) = params.get("key") else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter 'key'");
    };
    let Some(key) = unhex(key_hex) else {
        return error(
            StatusCode::BAD_REQUEST,
            "'key' must be hex (two digits per byte)",
        );
    };
    let key = CellKey::new(hearsay_ring::token_of(&key), key);
    let lookup = ReplicaLookup::new(&ctx, &keyspace);
    let engine = ctx.state.engine.clone();
    let cell = tokio::task::spawn_blocking(move || {
        let cell = engine.get(&keyspace, &key).map_err(|e| e.to_string())?;
        Ok::<_, String>(cell.map(|c| local_cell_json(&key, &c, lookup.replicas(key.token))))
    })
    .await;
    match cell {
        Ok(Ok(v)) => json_ok(v.unwrap_or(Value::Null)),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read task failed: {e}"),
        ),
    }
}

/// Lower-case hex of `b`.
fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// Bytes of a hex string (either case), or `None` if it is not hex of whole bytes.
fn unhex(h: &[u8]) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks(2)
        .map(|p| {
            let digit = |c: u8| char::from(c).to_digit(16);
            Some((digit(p[0])? * 16 + digit(p[1])?) as u8)
        })
        .collect()
}

/// CRC32C (Castagnoli) of `data`, bit by bit: the same checksum the engine and the fault
/// harness use (`crc32c` crate), written out here because this crate does not depend on
/// that crate and the views only checksum values a page at a time (a bounded cost).
fn crc32c(data: &[u8]) -> u32 {
    /// The reflected Castagnoli polynomial.
    const POLY: u32 = 0x82F6_3B78;
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (POLY & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

async fn prometheus(State(ctx): State<Ctx>) -> Response {
    match metrics::render(&ctx.state) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        ),
    }
}

/// Splits `a=b&c=d` into percent-decoded pairs (values as bytes: keys may be binary). A
/// repeated name keeps its last value.
fn parse_query(q: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name = String::from_utf8(percent_decode(name)?)
            .map_err(|_| "query parameter names must be UTF-8".to_string())?;
        out.insert(name, percent_decode(value)?);
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in query at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// The host id in single-node mode: the data directory's `node_id` if a cluster node ever
/// created one there, else [`SINGLE_NODE_ID`].
fn single_node_id(server: &ServerState) -> String {
    let path = server.config.storage.data_dir.join("node_id");
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .unwrap_or_else(|| SINGLE_NODE_ID.to_string())
}

/// User keyspaces of a single node (the engine's, without the internal `system`).
fn single_keyspaces(engine: &Engine) -> Vec<String> {
    engine
        .keyspaces()
        .into_iter()
        .filter(|k| k != SYSTEM_KEYSPACE)
        .collect()
}

/// This node as the only member of a one-node "cluster": up, normal, owning everything.
fn single_member(ctx: &Ctx, keyspaces: &[String]) -> MemberRow {
    let server = &ctx.state.server;
    let client = server
        .bound_listen
        .lock()
        .unwrap_or(server.config.server.listen);
    let load: u64 = ctx
        .state
        .engine
        .stats()
        .keyspaces
        .values()
        .map(|k| k.sstable_bytes + k.memtable_bytes)
        .sum();
    let defaults = hearsay_cluster::node::NodeConfig::default();
    MemberRow {
        code: "UN".into(),
        node_id: single_node_id(server),
        is_self: true,
        cluster_addr: None,
        client_addr: Some(client.to_string()),
        admin_addr: ctx.admin_addr.map(|a| a.to_string()),
        load_bytes: Some(load),
        tokens: 0,
        owns_effective: keyspaces.iter().map(|k| (k.clone(), 1.0)).collect(),
        dc: defaults.dc,
        rack: defaults.rack,
        liveness: "UP".into(),
        status: "NORMAL".into(),
        generation: 0,
        heartbeat: 0,
        phi: None,
        schema_version: None,
        clock_skew_us: None,
        health: Vec::new(),
    }
}

/// The cluster node's `NodeStatus` shape for a single node.
fn single_node_status(ctx: &Ctx) -> NodeStatus {
    let keyspaces = single_keyspaces(&ctx.state.engine);
    let member = single_member(ctx, &keyspaces);
    NodeStatus {
        node_id: member.node_id.clone(),
        node_name: String::new(),
        cluster_name: String::new(),
        generation: 0,
        cluster_addr: String::new(),
        ready: true,
        health: hearsay_cluster::node::NodeHealth {
            ready: true,
            ..Default::default()
        },
        schema_version: String::new(),
        keyspaces: keyspaces
            .iter()
            .map(|name| KeyspaceDef {
                name: name.clone(),
                strategy: ReplicationStrategy::Simple { rf: 1 },
                default_consistency: None,
                timestamp: Timestamp(0),
                dropped: false,
                options: Default::default(),
            })
            .collect(),
        members: vec![member],
    }
}

/// The RESP server's counters.
fn server_stats_json(server: &ServerState) -> Value {
    let s = &server.stats;
    let g = |c| s.get(c);
    json!({
        "uptime_secs": server.started.elapsed().as_secs(),
        "run_id": server.run_id,
        "connected_clients": g(&s.connected_clients),
        "connections_received": g(&s.connections_received),
        "connections_rejected": g(&s.connections_rejected),
        "commands_processed": g(&s.commands_processed),
        "net_input_bytes": g(&s.net_input_bytes),
        "net_output_bytes": g(&s.net_output_bytes),
        "protocol_errors": g(&s.protocol_errors),
        "idle_disconnects": g(&s.idle_disconnects),
        "slow_request_disconnects": g(&s.slow_request_disconnects),
        "output_limit_disconnects": g(&s.output_limit_disconnects),
        "request_limit_disconnects": g(&s.request_limit_disconnects),
        "busy_poll": busy_poll_json(),
    })
}

/// The event loops' busy-polling (see `server/busy_poll.rs`).
fn busy_poll_json() -> Value {
    let bp = &crate::server::busy_poll::STATS;
    let ld = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "max_us": ld(&bp.max_us),
        "windows": ld(&bp.windows),
        "caught_reads": ld(&bp.caught),
        "timeouts": ld(&bp.timeouts),
        "yielded": ld(&bp.yielded),
        "polled_us": ld(&bp.polled_us),
    })
}

/// The store's INFO lines (the writer's queue and groups, ...) by section; numeric values
/// as numbers.
fn store_info_json(server: &ServerState) -> Value {
    let mut sections: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for (section, name, value) in server.store.info() {
        let v = value
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| value.parse::<f64>().map(Value::from))
            .unwrap_or(Value::String(value));
        sections.entry(section).or_default().insert(name, v);
    }
    serde_json::to_value(sections).unwrap_or(Value::Null)
}

/// The engine's statistics (the engine type is not serde).
fn engine_stats_json(s: &EngineStats) -> Value {
    let keyspaces: serde_json::Map<String, Value> = s
        .keyspaces
        .iter()
        .map(|(name, k)| {
            (
                name.clone(),
                json!({
                    "memtable_bytes": k.memtable_bytes,
                    "memtables_awaiting_flush": k.memtables_awaiting_flush,
                    "sstable_count": k.sstable_count,
                    "sstable_bytes": k.sstable_bytes,
                    "sstables_per_level": k.sstables_per_level,
                    "sstable_memory_bytes": k.sstable_memory_bytes,
                    "index_bytes": k.index_bytes,
                    "bloom_bytes": k.bloom_bytes,
                    "sstable_entries": k.sstable_entries,
                    "sstable_tombstones": k.sstable_tombstones,
                }),
            )
        })
        .collect();
    let c = &s.block_cache;
    let r = &s.sstable_reads;
    json!({
        "keyspaces": keyspaces,
        "memtable_bytes_total": s.memtable_bytes_total,
        "memtables_awaiting_flush": s.keyspaces.values().map(|k| k.memtables_awaiting_flush).sum::<u64>(),
        "user_bytes_written": s.user_bytes_written,
        "disk_bytes_written": s.disk_bytes_written,
        "commitlog_bytes_written": s.commitlog_bytes_written,
        "sstable_bytes_written": s.sstable_bytes_written,
        "commitlog_segments": s.commitlog_segments,
        "commitlog_syncs": s.commitlog_syncs,
        "commitlog_segments_deleted": s.commitlog_segments_deleted,
        "write_stalls": s.write_stalls,
        "write_stall_ms": s.write_stall_ms,
        "flushes": s.flushes,
        "flush_errors": s.flush_errors,
        "compactions": s.compactions,
        "compaction_errors": s.compaction_errors,
        "compactions_background": s.compactions_background,
        "compactions_promoted": s.compactions_promoted,
        "compaction_background_running": s.compaction_background_running,
        "compaction_bytes_read": s.compaction_bytes_read,
        "compaction_blocks_warmed": s.compaction_blocks_warmed,
        "flush_blocks_warmed": s.flush_blocks_warmed,
        "compaction_bytes_written": s.compaction_bytes_written,
        "tombstones_purged": s.tombstones_purged,
        "expired_converted": s.expired_converted,
        "replayed_records": s.replayed_records,
        "replay_torn_tails": s.replay_torn_tails,
        "block_cache": {
            "hits": c.hits,
            "misses": c.misses,
            "inserts": c.inserts,
            "evictions": c.evictions,
            "bytes_used": c.bytes_used,
            "capacity_bytes": c.capacity_bytes,
            "hit_rate": c.hit_rate(),
        },
        "sstable_reads": {
            "bloom_negatives": r.bloom_negatives,
            "bloom_true_positives": r.bloom_true_positives,
            "bloom_false_positives": r.bloom_false_positives,
            "blocks_read": r.blocks_read,
            "bytes_read": r.bytes_read,
        },
        "poisoned": s.poisoned,
        "last_background_error": s.last_background_error,
    })
}
