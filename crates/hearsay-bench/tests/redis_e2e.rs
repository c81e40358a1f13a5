//! End to end against a real `redis-server` started on a free port. Without `redis-server` on
//! PATH the tests print a message and pass on a developer's machine, but fail under `CI=true`:
//! CI (`.ci/run`) installs `redis-server`, so a missing one there is a broken setup, not a
//! reason to skip.

use clap::Parser;
use hearsay_bench::{BenchArgs, BenchReport, CorruptValue, verify_value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(extra: &[&str]) -> BenchArgs {
    let mut v = vec!["bench", "--no-progress", "--seed", "7"];
    v.extend_from_slice(extra);
    Cli::try_parse_from(v).expect("valid arguments").args
}

/// Whether this runs in CI (`CI=true`, as `.ci/run` and most CI services set it).
fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A `redis-server` child on a free loopback port, killed (by its own PID) on drop.
struct RedisServer {
    child: Child,
    addr: String,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let available = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                !running_in_ci(),
                "redis-server is not on PATH, and CI=true: CI must run these tests \
                 (`.ci/run` installs redis-server)"
            );
            eprintln!("redis-server not on PATH: skipping the end-to-end test");
            return None;
        }
        // Ask the kernel for a free port; a race with another process is possible but the
        // readiness poll below then fails loudly rather than testing the wrong server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            // Two loopback addresses, so tests can spread connections over two "hosts".
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "127.0.0.2",
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = RedisServer {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&server.addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}/", self.addr))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_populated(report: &BenchReport, op: &str) {
    let r = report
        .run
        .operations
        .get(op)
        .unwrap_or_else(|| panic!("no {op} figures in {:?}", report.run.operations));
    assert!(r.ops > 0, "{op}: no ops");
    assert!(
        r.p50_us > 0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us,
        "{r:?}"
    );
    assert!(r.mean_us > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_against_redis_server() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = server.addr.as_str();

    // Workload A after a load: exactly the requested ops, all verified, none missing.
    let report = hearsay_bench::run(args(&[
        "--hosts",
        host,
        "--load",
        "--record-count",
        "500",
        "--concurrency",
        "4",
        "--pipeline",
        "4",
        "--operations",
        "2000",
        "--workload",
        "a",
        "--key-prefix",
        "a:",
    ]))
    .await
    .expect("workload a");
    let load = report.load.as_ref().expect("load phase");
    assert_eq!((load.ops, load.errors), (500, 0), "{load:?}");
    assert_eq!(report.run.ops, 2000, "{:?}", report.run);
    assert_eq!(report.run.by_host.len(), 1);
    assert_eq!(report.run.by_host[host].connections, 4);
    assert_eq!(report.run.by_host[host].ops, 2000);
    assert_eq!(report.run.errors, 0, "{:?}", report.run.errors_by_kind);
    assert_eq!(report.run.not_found, 0, "loaded keys must all be found");
    assert_populated(&report, "read");
    assert_populated(&report, "update");
    assert!(report.run.ops_per_s > 0.0);
    let mut con = server.client().await;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut con)
        .await
        .expect("dbsize");
    assert_eq!(dbsize, 500, "the load wrote record-count keys");
    // A value the benchmark wrote passes the verifier, read through an independent client.
    let v: Vec<u8> = redis::cmd("GET")
        .arg("a:42")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(verify_value(b"a:42", &v), Ok(()));
    // JSON report parses and carries the figures.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["run"]["ops"], 2000);
    assert!(report.to_text().contains("p99.9_us"));

    // Workload F (pipelined: a read's reply queues its write) with the latest distribution,
    // duration-bound with a warm-up.
    let report = hearsay_bench::run(args(&[
        "--hosts",
        host,
        "--record-count",
        "500",
        "--concurrency",
        "2",
        "--pipeline",
        "8",
        "--workload",
        "f",
        "--distribution",
        "latest",
        "--duration",
        "0.4",
        "--warmup",
        "0.2",
        "--key-prefix",
        "a:",
    ]))
    .await
    .expect("workload f");
    assert_eq!(report.run.errors, 0, "{:?}", report.run.errors_by_kind);
    assert_populated(&report, "read");
    assert_populated(&report, "read-modify-write");
    // 0.6 s in all: no whole second yet, so no timeline point.
    assert!(report.run.timeline.is_empty(), "{:?}", report.run.timeline);
    assert!(report.run.warmup_ops > 0, "warm-up ops are counted apart");
    assert!(
        report.run.elapsed_s >= 0.4 && report.run.elapsed_s < 5.0,
        "{}",
        report.run.elapsed_s
    );

    // Custom mix with inserts: new keys land past the loaded range. Two host names for the
    // same server: connections alternate between them.
    let second = host.replace("127.0.0.1", "127.0.0.2");
    let both = format!("{host},{second}");
    let report = hearsay_bench::run(args(&[
        "--hosts",
        &both,
        "--record-count",
        "500",
        "--concurrency",
        "2",
        "--workload",
        "custom",
        "--insert-proportion",
        "1",
        "--operations",
        "100",
        "--key-prefix",
        "a:",
        "--distribution",
        "uniform",
    ]))
    .await
    .expect("inserts");
    assert_eq!(report.run.operations["insert"].ops, 100);
    assert_eq!(report.run.by_host.len(), 2, "{:?}", report.run.by_host);
    for h in [host, second.as_str()] {
        assert_eq!(report.run.by_host[h].connections, 1, "round-robin: {h}");
    }
    assert_eq!(report.run.by_host.values().map(|h| h.ops).sum::<u64>(), 100);
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut con)
        .await
        .expect("dbsize");
    assert_eq!(dbsize, 600);
}

/// Open loop: the number of operations follows the schedule, not the server's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_follows_the_schedule() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let report = hearsay_bench::run(args(&[
        "--hosts",
        &server.addr,
        "--record-count",
        "100",
        "--concurrency",
        "4",
        "--pipeline",
        "4",
        "--rate",
        "2000",
        "--duration",
        "0.5",
    ]))
    .await
    .expect("open loop");
    assert_eq!(report.run.errors, 0, "{:?}", report.run.errors_by_kind);
    // 2000/s for 0.5 s, four staggered schedules: 1000 operations, give or take one each.
    assert!(
        (990..=1008).contains(&report.run.ops),
        "{} ops for a 1000-op schedule",
        report.run.ops
    );
    assert_eq!(report.rate, Some(2000.0));
    assert!(report.to_text().contains("open loop at 2000 ops/s"));
}

/// Large values and a deep pipeline: writes and reads of many partial socket chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_deep_pipeline() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let report = hearsay_bench::run(args(&[
        "--hosts",
        &server.addr,
        "--load",
        "--record-count",
        "40",
        "--value-size",
        "262144",
        "--concurrency",
        "2",
        "--pipeline",
        "16",
        "--operations",
        "300",
        "--workload",
        "a",
        "--distribution",
        "uniform",
    ]))
    .await
    .expect("large values");
    assert_eq!(report.run.errors, 0, "{:?}", report.run.errors_by_kind);
    assert_eq!(report.run.ops, 300);
    assert_populated(&report, "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_are_counted_as_errors() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = server.addr.as_str();
    hearsay_bench::run(args(&[
        "--hosts",
        host,
        "--load",
        "--record-count",
        "2",
        "--concurrency",
        "1",
        "--workload",
        "c",
        "--operations",
        "1",
        "--key-prefix",
        "c:",
    ]))
    .await
    .expect("load");
    // Damage one key with a raw client: one byte flipped, and one value from another key.
    let mut con = server.client().await;
    let mut good: Vec<u8> = redis::cmd("GET")
        .arg("c:0")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(verify_value(b"c:0", &good), Ok(()));
    assert_eq!(
        verify_value(b"c:1", &good),
        Err(CorruptValue::ChecksumMismatch),
        "a value under the wrong key is a phantom"
    );
    if let Some(b) = good.last_mut() {
        *b ^= 1;
    }
    let () = redis::cmd("SET")
        .arg("c:0")
        .arg(&good)
        .query_async(&mut con)
        .await
        .expect("set");
    let bad: Vec<u8> = redis::cmd("GET")
        .arg("c:0")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(
        verify_value(b"c:0", &bad),
        Err(CorruptValue::ChecksumMismatch)
    );

    // Read-only uniform over both keys: reads of c:0 fail as corrupt, c:1 succeed.
    let report = hearsay_bench::run(args(&[
        "--hosts",
        host,
        "--record-count",
        "2",
        "--concurrency",
        "2",
        "--workload",
        "c",
        "--distribution",
        "uniform",
        "--operations",
        "400",
        "--key-prefix",
        "c:",
    ]))
    .await
    .expect("run with a corrupt key still reports");
    let corrupt = report
        .run
        .errors_by_kind
        .get("corrupt")
        .copied()
        .unwrap_or(0);
    assert!(corrupt > 100, "corrupt reads counted: {:?}", report.run);
    assert_eq!(report.run.errors, corrupt);
    assert!(report.run.ops > 100, "good reads still succeed");
    assert_eq!(report.run.operations["read"].errors, corrupt);

    // Only the corrupt key: every op fails, and the run says so instead of reporting.
    let err = hearsay_bench::run(args(&[
        "--hosts",
        host,
        "--record-count",
        "1",
        "--concurrency",
        "1",
        "--workload",
        "c",
        "--operations",
        "20",
        "--key-prefix",
        "c:",
    ]))
    .await
    .expect_err("all failed");
    assert!(
        format!("{err:#}").contains("every operation failed"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_and_connect_errors_are_clear() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let err = hearsay_bench::run(args(&[
        "--hosts",
        &server.addr,
        "--consistency",
        "QUORUM",
        "--operations",
        "1",
    ]))
    .await
    .expect_err("redis has no CONSISTENCY");
    let msg = format!("{err:#}");
    assert!(msg.contains("rejected `CONSISTENCY QUORUM`"), "{msg}");

    // Init commands run on every connection: here they choose database 2.
    let report = hearsay_bench::run(args(&[
        "--hosts",
        &server.addr,
        "--init-command",
        "SELECT 2",
        "--load",
        "--record-count",
        "10",
        "--operations",
        "10",
        "--concurrency",
        "3",
    ]))
    .await
    .expect("init command");
    assert_eq!(report.run.errors, 0);
    let mut db2 = redis::Client::open(format!("redis://{}/2", server.addr))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut db2)
        .await
        .expect("dbsize");
    assert_eq!(dbsize, 10);
    let err = hearsay_bench::run(args(&[
        "--hosts",
        &server.addr,
        "--init-command",
        "BOGUS x",
        "--operations",
        "1",
    ]))
    .await
    .expect_err("unknown command");
    assert!(format!("{err:#}").contains("rejected `BOGUS x`"), "{err:#}");

    // A port nobody listens on (bound then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = format!("127.0.0.1:{port}");
    let err = hearsay_bench::run(args(&["--hosts", &dead, "--operations", "1"]))
        .await
        .expect_err("nothing listens");
    assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");

    let err = hearsay_bench::run(args(&["--workload", "a", "--read-proportion", "1"]))
        .await
        .expect_err("proportions need custom");
    assert!(format!("{err:#}").contains("custom"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dying_mid_run_is_counted_not_fatal() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let host = server.addr.clone();
    let bench = tokio::spawn(async move {
        hearsay_bench::run(args(&[
            "--hosts",
            &host,
            "--record-count",
            "100",
            "--concurrency",
            "3",
            "--pipeline",
            "2",
            "--duration",
            "1.5",
            "--timeout-ms",
            "500",
        ]))
        .await
    });
    // Kill the server once the run has demonstrably made progress.
    let mut con = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut con)
            .await
            .expect("info");
        let processed = info
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if processed > 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the bench made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().expect("kill our redis-server");
    let report = bench
        .await
        .expect("join")
        .expect("a partial failure still reports");
    assert!(report.run.ops > 0, "{:?}", report.run);
    let connection_errors: u64 = ["io", "closed", "connect", "timeout"]
        .iter()
        .filter_map(|k| report.run.errors_by_kind.get(*k))
        .sum();
    assert!(connection_errors > 0, "{:?}", report.run.errors_by_kind);
    // 1.5 s run: the first whole second is in the timeline, with the work done in it.
    let first = report.run.timeline.first().expect("a timeline point");
    assert_eq!(first.second, 0);
    assert!(first.replies > 0, "{:?}", report.run.timeline);
}

/// A server that answers garbage: every operation fails as `protocol`, each failure drops the
/// connection, and a run in which nothing succeeds is an error naming the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_replies_are_protocol_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(b"?garbage\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let err = hearsay_bench::run(args(&[
        "--hosts",
        &addr,
        "--concurrency",
        "2",
        "--duration",
        "0.3",
    ]))
    .await
    .expect_err("nothing can succeed");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("every operation failed") && msg.contains("protocol"),
        "{msg}"
    );
    server.abort();
}
