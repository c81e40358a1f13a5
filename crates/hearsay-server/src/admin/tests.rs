//! The admin API over real sockets: single-node mode over a `LocalStore`, cluster mode over
//! two in-process cluster nodes, the request bounds, and the CLI's rendering.

use super::client::{self, HttpResponse};
use super::*;
use crate::config::NodeConfig;
use crate::store::{LocalStore, Mutation, RequestContext, WriterConfig};
use bytes::Bytes;
use hearsay_storage::{EngineConfig, SyncMode};
use hearsay_types::{Clock, SystemClock};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

/// Bound on anything that waits for gossip on a busy shared machine.
const CONVERGE: Duration = Duration::from_secs(20);

fn open_engine(dir: &Path) -> Arc<Engine> {
    let mut ec = EngineConfig::new(dir);
    ec.sync_mode = SyncMode::None;
    Arc::new(Engine::open(ec).expect("engine opens"))
}

/// A server state the way `node.rs` builds it, over a `LocalStore` on `engine`.
fn server_state(engine: Arc<Engine>, data_dir: &Path) -> Arc<ServerState> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(LocalStore::new(
        engine,
        clock,
        WriterConfig {
            batch_max: 64,
            queue_max: 64,
            inline_when_idle: true,
        },
    ));
    let mut config = NodeConfig::default();
    config.storage.data_dir = data_dir.to_path_buf();
    Arc::new(ServerState::new(store, config))
}

/// A running admin server; dropping it stops the server.
struct Admin {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Admin {
    async fn start(state: AdminState) -> Admin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        Admin {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and checks it returned cleanly.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let r = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("admin server stops after shutdown");
        r.unwrap().unwrap();
    }

    /// `GET path` with the CLI's blocking client (a raw HTTP/1.1 request over `TcpStream`).
    async fn get(&self, path: &str) -> HttpResponse {
        let (addr, path) = (self.addr.clone(), path.to_string());
        tokio::task::spawn_blocking(move || client::get(&addr, &path))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("GET failed: {e}"))
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let v = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {:?}", r.body));
        (r.status, v)
    }

    /// Sends `request` verbatim and returns everything the server answered until it closed.
    async fn raw(&self, request: Vec<u8>) -> String {
        let addr = self.addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&request).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
        .await
        .unwrap()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Single {
    _dir: tempfile::TempDir,
    server: Arc<ServerState>,
    admin: Admin,
}

async fn single() -> Single {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("engine"));
    let server = server_state(engine.clone(), dir.path());
    *server.bound_listen.lock() = Some("127.0.0.1:17379".parse().unwrap());
    let admin = Admin::start(AdminState {
        server: server.clone(),
        engine,
        cluster: None,
    })
    .await;
    Single {
        _dir: dir,
        server,
        admin,
    }
}

#[tokio::test]
async fn health_answers_ok() {
    let s = single().await;
    let (code, v) = s.admin.json("/v1/health").await;
    assert_eq!(code, 200);
    assert_eq!(v, json!({"status": "ok"}));
    s.admin.stop().await;
}

#[tokio::test]
async fn single_node_status_has_one_up_member_owning_everything() {
    let s = single().await;
    let (code, v) = s.admin.json("/v1/status").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["mode"], "single");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{v}");
    let m = &members[0];
    assert_eq!(m["code"], "UN");
    assert_eq!(m["is_self"], true);
    assert_eq!(m["tokens"], 0);
    assert_eq!(m["owns_effective"]["default"], 1.0);
    assert_eq!(m["client_addr"], "127.0.0.1:17379");
    assert_eq!(m["admin_addr"], s.admin.addr.as_str());
    assert!(
        v["keyspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "default"),
        "{v}"
    );

    let table = client::render_status(&v, "default");
    let row = table
        .lines()
        .find(|l| l.starts_with("UN "))
        .unwrap_or_else(|| panic!("no UN row in\n{table}"));
    assert!(
        row.contains("127.0.0.1:17379") && row.contains("100.0%"),
        "{table}"
    );
    s.admin.stop().await;
}

#[tokio::test]
async fn single_node_has_no_membership_view() {
    let s = single().await;
    let (code, v) = s.admin.json("/v1/membership").await;
    assert_eq!(code, 404);
    assert!(v["error"].as_str().unwrap().contains("single-node"), "{v}");
    s.admin.stop().await;
}

#[tokio::test]
async fn stats_show_server_store_and_engine_counters() {
    let s = single().await;
    let ctx = RequestContext::default();
    s.server
        .store
        .write(
            &ctx,
            vec![Mutation::put(
                Bytes::from_static(b"k"),
                Bytes::from_static(b"v"),
            )],
        )
        .await
        .unwrap();
    let (code, v) = s.admin.json("/v1/stats").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["mode"], "single");
    assert_eq!(v["server"]["connected_clients"], 0);
    for field in [
        "max_us",
        "windows",
        "caught_reads",
        "timeouts",
        "yielded",
        "polled_us",
    ] {
        assert!(v["server"]["busy_poll"][field].is_u64(), "{field}: {v}");
    }
    assert!(
        v["storage"]["user_bytes_written"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert!(v["storage"]["keyspaces"]["default"].is_object(), "{v}");
    assert_eq!(v["store"]["stats"]["write_requests"], 1, "{v}");
    assert!(v["cluster"].is_null());
    s.admin.stop().await;
}

#[tokio::test]
async fn single_node_endpoints_give_the_cassandra_token_and_self() {
    let s = single().await;
    let (code, v) = s
        .admin
        .json("/v1/endpoints?keyspace=default&key=test")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["token"], -6017608668500074083i64);
    assert_eq!(v["key"], "test");
    let replicas = v["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["client_addr"], "127.0.0.1:17379");
    assert_eq!(
        client::render_endpoints(&v),
        "Token: -6017608668500074083\n127.0.0.1:17379\n"
    );

    // Percent-encoded keys decode to the same bytes; the keyspace defaults to `default`.
    let (_, v2) = s.admin.json("/v1/endpoints?key=%74es%74").await;
    assert_eq!(v2["token"], v["token"]);

    let (code, v) = s.admin.json("/v1/endpoints?keyspace=nope&key=x").await;
    assert_eq!(code, 404);
    assert_eq!(v["error"], "keyspace 'nope' does not exist");
    let (code, v) = s.admin.json("/v1/endpoints?keyspace=default").await;
    assert_eq!(code, 400, "{v}");
    let (code, _) = s.admin.json("/v1/endpoints?key=%zz").await;
    assert_eq!(code, 400);
    s.admin.stop().await;
}

/// A single node whose engine the test writes to directly (cells with chosen timestamps,
/// tombstones and expiries, as a replica stores them).
async fn single_with_engine() -> (Single, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("engine"));
    let server = server_state(engine.clone(), dir.path());
    let admin = Admin::start(AdminState {
        server: server.clone(),
        engine: engine.clone(),
        cluster: None,
    })
    .await;
    (
        Single {
            _dir: dir,
            server,
            admin,
        },
        engine,
    )
}

fn cell_key(key: &[u8]) -> CellKey {
    CellKey::new(hearsay_ring::token_of(key), Bytes::copy_from_slice(key))
}

#[tokio::test]
async fn local_scan_shows_this_nodes_cells_in_token_order_with_tombstones() {
    let (s, engine) = single_with_engine().await;
    let mut batch = vec![
        (cell_key(b"alive"), Cell::value("123456789", Timestamp(7))),
        (cell_key(b"gone"), Cell::tombstone(Timestamp(8))),
        (
            cell_key(b"brief"),
            Cell::expiring("x", Timestamp(9), 1_700_000_000_000),
        ),
    ];
    for i in 0..20 {
        let k = format!("k{i}");
        batch.push((
            cell_key(k.as_bytes()),
            Cell::value(k.clone(), Timestamp(10)),
        ));
    }
    engine.apply("default", &batch).unwrap();

    let (code, v) = s.admin.json("/v1/local/scan?keyspace=default").await;
    assert_eq!(code, 200, "{v}");
    assert!(v["next"].is_null(), "{v}");
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), batch.len(), "{v}");
    let tokens: Vec<i64> = cells.iter().map(|c| c["token"].as_i64().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "{tokens:?}");
    let by_key = |k: &str| -> Value {
        cells
            .iter()
            .find(|c| c["key"] == hex(k.as_bytes()).as_str())
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
            .clone()
    };
    // CRC32C("123456789") is the standard check value 0xE3069283.
    assert_eq!(
        by_key("alive"),
        json!({"key": hex(b"alive"), "token": hearsay_ring::token_of(b"alive").0,
               "timestamp": 7, "tombstone": false, "expires_at_ms": null,
               "value_len": 9, "value_crc32c": 0xE306_9283u32, "replicas": ["local"]})
    );
    let gone = by_key("gone");
    assert_eq!(gone["tombstone"], true);
    assert_eq!(gone["value_len"], 0);
    assert_eq!(gone["timestamp"], 8);
    assert_eq!(by_key("brief")["expires_at_ms"], 1_700_000_000_000u64);

    // Pages of one cell: `next` resumes exactly where the page stopped, every cell once.
    let mut seen = Vec::new();
    let mut from: Option<i64> = None;
    for _ in 0..=batch.len() {
        let path = match from {
            Some(t) => format!("/v1/local/scan?limit=1&from={t}"),
            None => "/v1/local/scan?limit=1".to_string(),
        };
        let (code, page) = s.admin.json(&path).await;
        assert_eq!(code, 200, "{page}");
        for c in page["cells"].as_array().unwrap() {
            seen.push(c["key"].as_str().unwrap().to_string());
        }
        match page["next"].as_i64() {
            Some(t) => from = Some(t),
            None => break,
        }
    }
    let all: Vec<String> = cells
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, all);

    // `from` is inclusive: starting at a cell's token returns it first.
    let third = tokens[2];
    let (_, page) = s
        .admin
        .json(&format!("/v1/local/scan?from={third}&limit=1"))
        .await;
    assert_eq!(page["cells"][0]["token"], third, "{page}");

    // Bad input is a clear 4xx; the system keyspace has no placement and is not served.
    for (path, want) in [
        ("/v1/local/scan?from=abc", 400),
        ("/v1/local/scan?limit=0", 400),
        ("/v1/local/scan?keyspace=nope", 404),
        ("/v1/local/scan?keyspace=system", 404),
    ] {
        let (code, v) = s.admin.json(path).await;
        assert_eq!(code, want, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    s.admin.stop().await;
}

#[tokio::test]
async fn local_scan_pages_never_end_inside_a_token_and_are_bounded() {
    let (s, engine) = single_with_engine().await;
    // Two keys sharing one token (cells are ordered by token, then key).
    let t = Token(42);
    engine
        .apply(
            "default",
            &[
                (
                    CellKey::new(t, Bytes::from_static(b"a")),
                    Cell::value("1", Timestamp(1)),
                ),
                (
                    CellKey::new(t, Bytes::from_static(b"b")),
                    Cell::value("2", Timestamp(1)),
                ),
                (
                    CellKey::new(Token(43), Bytes::from_static(b"c")),
                    Cell::value("3", Timestamp(1)),
                ),
            ],
        )
        .unwrap();
    let (_, page) = s.admin.json("/v1/local/scan?from=42&limit=1").await;
    assert_eq!(page["cells"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["next"], 43, "{page}");

    // A limit above the bound is clamped, not refused.
    let many: Vec<(CellKey, Cell)> = (0..MAX_LOCAL_SCAN_CELLS + 5)
        .map(|i| {
            let k = format!("m{i}");
            (cell_key(k.as_bytes()), Cell::value("v", Timestamp(1)))
        })
        .collect();
    engine.apply("default", &many).unwrap();
    let (code, page) = s
        .admin
        .json(&format!(
            "/v1/local/scan?limit={}",
            MAX_LOCAL_SCAN_CELLS * 10
        ))
        .await;
    assert_eq!(code, 200);
    let n = page["cells"].as_array().unwrap().len();
    // At most the bound plus the rest of the last token's cells (here: one key per token).
    assert!(
        (MAX_LOCAL_SCAN_CELLS..=MAX_LOCAL_SCAN_CELLS + 1).contains(&n),
        "{n}"
    );
    assert!(page["next"].is_i64(), "more cells remain");
    s.admin.stop().await;
}

#[tokio::test]
async fn local_get_answers_one_cell_or_null() {
    let (s, engine) = single_with_engine().await;
    engine
        .apply(
            "default",
            &[
                (cell_key(b"k\x00bin"), Cell::value("v", Timestamp(3))),
                (cell_key(b"dead"), Cell::tombstone(Timestamp(4))),
            ],
        )
        .unwrap();
    let (code, v) = s
        .admin
        .json(&format!("/v1/local/get?key={}", hex(b"k\x00bin")))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["key"], hex(b"k\x00bin"));
    assert_eq!(v["timestamp"], 3);
    assert_eq!(v["value_len"], 1);
    assert_eq!(v["value_crc32c"], crc32c(b"v"));
    assert_eq!(v["replicas"], json!(["local"]));
    // Upper-case hex is the same key.
    let (_, upper) = s
        .admin
        .json(&format!(
            "/v1/local/get?keyspace=default&key={}",
            hex(b"k\x00bin").to_ascii_uppercase()
        ))
        .await;
    assert_eq!(upper, v);

    let (_, dead) = s
        .admin
        .json(&format!("/v1/local/get?key={}", hex(b"dead")))
        .await;
    assert_eq!(dead["tombstone"], true, "{dead}");
    let (code, none) = s
        .admin
        .json(&format!("/v1/local/get?key={}", hex(b"never")))
        .await;
    assert_eq!((code, none), (200, Value::Null));

    for (path, want) in [
        ("/v1/local/get", 400),
        ("/v1/local/get?key=abc", 400),
        ("/v1/local/get?key=zz", 400),
        ("/v1/local/get?keyspace=nope&key=00", 404),
    ] {
        let (code, v) = s.admin.json(path).await;
        assert_eq!(code, want, "{path}: {v}");
    }
    s.admin.stop().await;
}

#[test]
fn crc32c_and_hex_match_their_references() {
    // RFC 3720's CRC32C check value and test vectors.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    assert_eq!(crc32c(b""), 0);
    assert_eq!(hex(&[0x00, 0xAB, 0x7F]), "00ab7f");
    assert_eq!(unhex(b"00aB7f"), Some(vec![0x00, 0xAB, 0x7F]));
    assert_eq!(unhex(b"0"), None);
    assert_eq!(unhex(b"0g"), None);
}

#[tokio::test]
async fn metrics_are_openmetrics_text_with_server_and_engine_figures() {
    let s = single().await;
    let r = s.admin.get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    for needle in [
        "hearsay_server_connected_clients 0",
        "hearsay_server_commands_processed_total 0",
        "hearsay_storage_flush_queue_memtables{keyspace=\"default\"} 0",
        "hearsay_storage_block_cache_hits_total",
        "hearsay_storage_bloom_checks_total{outcome=\"negative\"}",
        "hearsay_storage_write_stalls_total 0",
        "hearsay_storage_compactions_promoted_total 0",
        "hearsay_storage_compaction_background_running 0",
        "hearsay_store_info{section=\"stats\",field=\"write_requests\"}",
        "hearsay_cluster_mode 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    let raw = s
        .admin
        .raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
        .await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{raw}"
    );
    s.admin.stop().await;
}

#[tokio::test]
async fn only_bodiless_gets_with_short_queries_are_served() {
    let s = single().await;
    let post = s
        .admin
        .raw(b"POST /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec())
        .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // POST is accepted on the paths that start work (from this loopback client); a single
    // node has nothing to repair and says so.
    let repair = s
        .admin
        .raw(b"POST /v1/repair HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec())
        .await;
    assert!(repair.starts_with("HTTP/1.1 404"), "{repair}");
    assert!(repair.contains("repair needs cluster mode"), "{repair}");
    let (code, _) = s.admin.json("/v1/repair").await;
    assert_eq!(code, 404);
    let body = s
        .admin
        .raw(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec())
        .await;
    assert!(body.starts_with("HTTP/1.1 413"), "{body}");
    let long = format!("/v1/endpoints?key={}", "a".repeat(MAX_QUERY_BYTES));
    let r = s.admin.get(&long).await;
    assert_eq!(r.status, 414);
    let (code, v) = s.admin.json("/v1/nothing").await;
    assert_eq!(code, 404);
    assert_eq!(v["error"], "no such endpoint: /v1/nothing");
    // The server still answers after all that.
    assert_eq!(s.admin.get("/v1/health").await.status, 200);
    s.admin.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("engine"));
    let server = server_state(engine.clone(), dir.path());
    let ctx = Ctx {
        state: AdminState {
            server,
            engine,
            cluster: None,
        },
        admin_addr: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection at a time, 300 ms to send a request.
    let bounded = listener::BoundedListener::new(listener, 1, Duration::from_millis(300));
    let task = tokio::spawn(async move { axum::serve(bounded, router(ctx)).await });

    let outcome = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // A second client queues behind the idle one (the only slot) ...
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second
            .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        // ... until the server closes the idle one.
        let mut buf = Vec::new();
        let closed = idle.read_to_end(&mut buf);
        let idle_closed_after = started.elapsed();
        let mut answer = Vec::new();
        second.read_to_end(&mut answer).unwrap();
        (closed.map(|_| buf.len()), idle_closed_after, answer)
    })
    .await
    .unwrap();
    task.abort();
    let (closed, after, answer) = outcome;
    assert!(
        matches!(closed, Ok(0)) || closed.is_err(),
        "idle connection got data: {closed:?}"
    );
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(8),
        "idle connection closed after {after:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn status_table_looks_like_nodetool() {
    let v = json!({
        "mode": "cluster",
        "keyspaces": [{"name": "default"}],
        "members": [
            {"code": "UN", "node_id": "bbbb", "client_addr": "127.0.0.2:7379", "cluster_addr": "127.0.0.2:7381",
             "load_bytes": 1536, "tokens": 16, "owns_effective": {"default": 0.6667}, "dc": "dc1", "rack": "rack1"},
            {"code": "DN", "node_id": "aaaa", "client_addr": null, "cluster_addr": "127.0.0.1:7381",
             "load_bytes": null, "tokens": 16, "owns_effective": {"default": 1.0}, "dc": "dc1", "rack": "rack2"},
            {"code": "UJ", "node_id": "cccc", "client_addr": "10.0.0.1:7379", "cluster_addr": "10.0.0.1:7381",
             "load_bytes": 500, "tokens": 8, "owns_effective": {}, "dc": "dc2", "rack": "r1"}
        ]
    });
    let expected = "\
Datacenter: dc1
===============
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address         Load      Tokens  Owns (effective)  Host ID  Rack
DN  127.0.0.1:7381  ?         16      100.0%            aaaa     rack2
UN  127.0.0.2:7379  1.50 KiB  16      66.7%             bbbb     rack1

Datacenter: dc2
===============
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address        Load   Tokens  Owns (effective)  Host ID  Rack
UJ  10.0.0.1:7379  500 B  8       ?                 cccc     r1
";
    assert_eq!(client::render_status(&v, "default"), expected);
    assert!(client::render_status(&v, "nope").contains("keyspace 'nope' does not exist"));
}

#[test]
fn http_answers_parse_with_length_or_chunks() {
    let r = client::parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    let r = client::parse_response(
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (404, &b"{\"a\":1}"[..]));
    assert!(client::parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
    assert!(client::parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(client::parse_response(b"garbage").is_err());
}

#[test]
fn query_values_round_trip_through_percent_encoding() {
    let key: Vec<u8> = (0..=255u8).collect();
    let q = format!("key={}&keyspace=a+b", client::percent_encode(&key));
    let p = parse_query(&q).unwrap();
    assert_eq!(p["key"], key);
    assert_eq!(p["keyspace"], b"a b");
    assert!(parse_query("key=%4").is_err());
    assert_eq!(client::human_bytes(0), "0 B");
    assert_eq!(client::human_bytes(5 << 30), "5.00 GiB");
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client::status(&format!("127.0.0.1:{port}"), "default").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cannot reach the admin API"), "{msg}");
}

// ---- cluster mode ----

struct ClusterNode {
    node: Arc<Node>,
    engine: Arc<Engine>,
}

async fn start_node(dir: &Path, seeds: Vec<SocketAddr>) -> ClusterNode {
    let mut c = hearsay_cluster::node::NodeConfig {
        data_dir: dir.to_path_buf(),
        cluster_addr: "127.0.0.1:0".parse().unwrap(),
        seeds,
        cluster_name: "admin-tests".into(),
        secret: "s3cret".into(),
        default_replication_factor: 2,
        client_addr: Some("127.0.0.1:17379".parse().unwrap()),
        ..hearsay_cluster::node::NodeConfig::default()
    };
    c.gossip.interval_ms = 100;
    let engine = open_engine(&dir.join("engine"));
    let node = Node::start(c, engine.clone(), Arc::new(SystemClock))
        .await
        .expect("node starts");
    ClusterNode {
        node: Arc::new(node),
        engine,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_mode_serves_status_membership_endpoints_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(&dir.path().join("a"), vec![]).await;
    let b = start_node(&dir.path().join("b"), vec![a.node.cluster_addr()]).await;
    let server = server_state(a.engine.clone(), &dir.path().join("a"));
    let admin = Admin::start(AdminState {
        server,
        engine: a.engine.clone(),
        cluster: Some(a.node.clone()),
    })
    .await;

    // Status: both members UN, as the node itself reports them.
    let start = Instant::now();
    let status = loop {
        let (code, v) = admin.json("/v1/status").await;
        assert_eq!(code, 200, "{v}");
        let members = v["members"].as_array().cloned().unwrap_or_default();
        if members.len() == 2 && members.iter().all(|m| m["code"] == "UN") {
            break v;
        }
        assert!(start.elapsed() < CONVERGE, "members never all UN: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["mode"], "cluster");
    assert_eq!(status["node_id"], a.node.id().to_string());
    let ids: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&b.node.id().to_string().as_str()), "{status}");
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["tokens"], 16, "{m}");
        // RF 2 on two nodes: each holds a replica of everything.
        assert!((m["owns_effective"]["default"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    }
    let table = client::render_status(&status, "default");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("UN ")).count(),
        2,
        "{table}"
    );

    // Membership: gossip's view with generation, heartbeat, phi and addresses.
    let (code, m) = admin.json("/v1/membership").await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["node_id"], a.node.id().to_string());
    let members = m["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{m}");
    let peer = members
        .iter()
        .find(|x| x["node_id"] == b.node.id().to_string().as_str())
        .expect("b in a's membership");
    assert_eq!(peer["liveness"], "UP");
    assert_eq!(peer["generation"], b.node.generation());
    assert!(peer["heartbeat"].as_u64().unwrap() > 0, "{peer}");
    assert!(peer.get("phi").is_some(), "{peer}");
    assert_eq!(
        peer["cluster_addr"],
        b.node.cluster_addr().to_string().as_str()
    );

    // Endpoints: the node's own answer, with addresses.
    let (code, e) = admin.json("/v1/endpoints?keyspace=default&key=test").await;
    assert_eq!(code, 200, "{e}");
    let (token, replicas) = a.node.endpoints("default", b"test").unwrap();
    assert_eq!(e["token"], token.0);
    assert_eq!(token.0, -6017608668500074083);
    let got: Vec<&str> = e["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = replicas.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(got, want);
    for r in e["replicas"].as_array().unwrap() {
        assert!(r["cluster_addr"].is_string(), "{r}");
    }
    let (code, e) = admin.json("/v1/endpoints?keyspace=nope&key=x").await;
    assert_eq!(code, 404);
    assert_eq!(e["error"], "keyspace 'nope' does not exist");

    // The local views: a key written at ALL is on this node, listed with the replicas the
    // node's ring view gives (the same as `endpoints`).
    a.node
        .write(
            "default",
            vec![(cell_key(b"test"), Cell::value("v", Timestamp(0)))],
            hearsay_types::ConsistencyLevel::All,
        )
        .await
        .unwrap();
    let (code, cell) = admin
        .json(&format!("/v1/local/get?key={}", hex(b"test")))
        .await;
    assert_eq!(code, 200, "{cell}");
    let listed: Vec<&str> = cell["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(listed, want, "{cell}");
    assert!(
        cell["timestamp"].as_u64().unwrap() > 0,
        "the coordinator minted it"
    );
    let (code, page) = admin.json("/v1/local/scan").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page["cells"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == hex(b"test").as_str() && c["replicas"] == cell["replicas"]),
        "{page}"
    );

    // Stats and metrics include the cluster's figures.
    let (_, st) = admin.json("/v1/stats").await;
    assert_eq!(st["cluster"]["node_id"], a.node.id().to_string());
    let text = String::from_utf8(admin.get("/metrics").await.body).unwrap();
    for needle in [
        "hearsay_cluster_mode 1",
        "hearsay_gossip_rounds_total",
        "hearsay_gossip_members{liveness=\"UP\"} 2",
        "hearsay_cluster_members{code=\"UN\"} 2",
        "hearsay_hints_pending 0",
        "hearsay_hint_replays_ok_total",
        "hearsay_coordinator_scans_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    admin.stop().await;
    b.node.shutdown().await;
    a.node.shutdown().await;
}
