//! The connection loop over real sockets and raw RESP bytes: pipelines that mix the
//! coalesced GET and SET runs with other commands and errors must answer exactly as one
//! command after another would.

use super::*;
use crate::config::NodeConfig;
use crate::store::{KeyspaceSpec, LocalStore, WriterConfig};
use hearsay_storage::{Engine, EngineConfig, SyncMode};
use hearsay_types::SystemClock;
use tokio::sync::oneshot;

/// Bound on waiting for replies on a busy shared machine.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(configure: impl FnOnce(&mut NodeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut ec = EngineConfig::new(dir.path());
        ec.sync_mode = SyncMode::None;
        let engine = Arc::new(Engine::open(ec).unwrap());
        let store = Arc::new(LocalStore::new(
            engine,
            Arc::new(SystemClock),
            WriterConfig {
                batch_max: 64,
                queue_max: 64,
                inline_when_idle: true,
            },
        ));
        let mut config = NodeConfig::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.data_dir = dir.path().to_path_buf();
        configure(&mut config);
        let state = Arc::new(ServerState::new(store, config));
        let server = RespServer::bind(state.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// One RESP request as bytes.
fn req(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Sends `input` in one write and reads until exactly `expected` arrived (or fails).
async fn exchange(stream: &mut TcpStream, input: &[u8], expected: &[u8]) {
    stream.write_all(input).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while got.len() < expected.len() {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => break,
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "replies differ"
    );
}

/// Reads until the server closes the connection; returns what arrived.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut buf = [0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_pipeline_answers_in_order() {
    let server = TestServer::start(|_| {}).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut step = |args: &[&[u8]], reply: &[u8]| {
        input.extend(req(args));
        expected.extend_from_slice(reply);
    };
    step(&[b"GET", b"a"], b"$-1\r\n");
    step(&[b"SET", b"a", b"1"], b"+OK\r\n");
    step(&[b"get", b"a"], b"$1\r\n1\r\n");
    step(&[b"GET", b"missing"], b"$-1\r\n");
    step(&[b"SET", b"b", b"22"], b"+OK\r\n");
    step(&[b"SET", b"a", b"333"], b"+OK\r\n");
    step(&[b"GeT", b"a"], b"$3\r\n333\r\n");
    step(&[b"GET", b"b"], b"$2\r\n22\r\n");
    step(
        &[b"GET"],
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    step(&[b"GET", b"b"], b"$2\r\n22\r\n");
    step(
        &[b"GET", b"a", b"b"],
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    step(
        &[b"SET", b"c"],
        b"-ERR wrong number of arguments for 'set' command\r\n",
    );
    step(&[b"GET", b"c"], b"$-1\r\n");
    // SET with an option takes the general path; a GET right after must see it.
    step(&[b"SET", b"c", b"x", b"XX"], b"$-1\r\n");
    step(&[b"SET", b"c", b"x", b"NX"], b"+OK\r\n");
    step(&[b"GET", b"c"], b"$1\r\nx\r\n");
    step(&[b"PING"], b"+PONG\r\n");
    step(&[b"DEL", b"a"], b":1\r\n");
    step(&[b"GET", b"a"], b"$-1\r\n");
    step(&[b"GET", b""], b"$-1\r\n");
    exchange(&mut s, &input, &expected).await;

    // A run longer than the coalescing bound, then the same keys over RESP3.
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..(GET_COALESCE_MAX + 10) {
        input.extend(req(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
        expected.extend_from_slice(b"+OK\r\n");
    }
    for i in 0..(GET_COALESCE_MAX + 10) {
        input.extend(req(&[b"GET", format!("k{i}").as_bytes()]));
        let v = format!("v{i}");
        expected.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
    exchange(&mut s, &input, &expected).await;
    let mut input = req(&[b"HELLO", b"3"]);
    input.extend(req(&[b"GET", b"k1"]));
    input.extend(req(&[b"GET", b"nope"]));
    s.write_all(&input).await.unwrap();
    // HELLO's map is long; the two GET replies must be its tail, in order.
    let mut got = Vec::new();
    let tail = b"$2\r\nv1\r\n_\r\n";
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !got.ends_with(tail) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => panic!("RESP3 replies: got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(got.starts_with(b"%"), "HELLO 3 answers with a map");
    let commands = server
        .state
        .stats
        .commands_processed
        .load(Ordering::Relaxed);
    assert_eq!(commands, 20 + 2 * (GET_COALESCE_MAX as u64 + 10) + 3);
    drop(s);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_before_auth_are_refused_and_read_errors_reach_each_get() {
    let server = TestServer::start(|c| c.server.password = Some("pw".into())).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut input = req(&[b"GET", b"a"]);
    input.extend(req(&[b"SET", b"a", b"1"]));
    input.extend(req(&[b"AUTH", b"pw"]));
    input.extend(req(&[b"SET", b"a", b"1"]));
    input.extend(req(&[b"GET", b"a"]));
    exchange(
        &mut s,
        &input,
        b"-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n$1\r\n1\r\n",
    )
    .await;

    // Reads of a keyspace dropped under the connection fail, each GET with its own error.
    let spec = KeyspaceSpec {
        name: "gone".into(),
        strategy: hearsay_ring::ReplicationStrategy::Simple { rf: 1 },
        default_consistency: None,
        options: Default::default(),
    };
    server.state.store.create_keyspace(spec).await.unwrap();
    exchange(&mut s, &req(&[b"USE", b"gone"]), b"+OK\r\n").await;
    server.state.store.drop_keyspace("gone").await.unwrap();
    let err = b"-ERR keyspace 'gone' does not exist\r\n";
    let mut input = req(&[b"GET", b"a"]);
    input.extend(req(&[b"GET", b"b"]));
    input.extend(req(&[b"PING"]));
    let mut expected = err.to_vec();
    expected.extend_from_slice(err);
    expected.extend_from_slice(b"+PONG\r\n");
    exchange(&mut s, &input, &expected).await;
    drop(s);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_gets_over_the_output_limit_closes_the_connection() {
    const LIMIT_BYTES: usize = 64 * 1024;
    let server = TestServer::start(|c| c.limits.output_buffer_limit_bytes = LIMIT_BYTES).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let value = vec![b'v'; 10_000];
    exchange(&mut s, &req(&[b"SET", b"big", &value]), b"+OK\r\n").await;
    // 100 replies would be 15x the limit.
    let mut input = Vec::new();
    for _ in 0..100 {
        input.extend(req(&[b"GET", b"big"]));
    }
    s.write_all(&input).await.unwrap();
    let got = read_to_close(&mut s).await;
    // The limit is checked after every reply, before the 64 KiB streaming flush, so the
    // seventh reply (~70 KB pending) closes the connection before anything is written.
    assert!(got.is_empty(), "got {} bytes", got.len());
    assert_eq!(
        server
            .state
            .stats
            .output_limit_disconnects
            .load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}
