//! `hearsay status` and `hearsay getendpoints` against real `hearsay server` processes: a
//! single node, and a two-node cluster on loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to start (engine open, and in cluster mode joining) in a debug
/// build on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on two nodes seeing each other UP and NORMAL through gossip.
const CONVERGE: Duration = Duration::from_secs(60);

/// A `hearsay server` child and the addresses it reported on stdout.
struct Server {
    child: Child,
    client: SocketAddr,
    admin: SocketAddr,
    /// `hearsay cluster member <id> on <addr>`, in cluster mode.
    cluster: Option<SocketAddr>,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearsay"))
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--cluster-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hearsay server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut admin, mut cluster) = (None, None);
        let client = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("hearsay server did not report its address within {START_TIMEOUT:?}");
            };
            let addr = |s: &str| s.trim().parse::<SocketAddr>().expect("an address");
            if let Some(a) = line.strip_prefix("hearsay admin on ") {
                admin = Some(addr(a));
            } else if let Some(rest) = line.strip_prefix("hearsay cluster member ") {
                cluster = rest.split(" on ").nth(1).map(addr);
            } else if let Some(a) = line.strip_prefix("hearsay listening on ") {
                break addr(a);
            }
        };
        Server {
            child,
            client,
            admin: admin.expect("the server printed its admin address"),
            cluster,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hearsay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hearsay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_and_getendpoints_on_a_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = server.admin.to_string();

    let out = hearsay(&["status", "--admin", &admin]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("Datacenter: dc1\n"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("UN ")).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains(&server.client.to_string()), "{stdout}");
    assert!(rows[0].contains("100.0%"), "{stdout}");

    let out = hearsay(&["getendpoints", "default", "test", "--admin", &admin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Token: -6017608668500074083\n{}\n", server.client)
    );

    let out = hearsay(&["getendpoints", "nope", "test", "--admin", &admin]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("keyspace 'nope' does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_says_so_when_the_node_is_unreachable() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = hearsay(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn status_shows_every_member_of_a_two_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // RF 2 on both (the `default` keyspace's RF must agree): every key on both nodes.
    let a = Server::start(
        &dir.path().join("a"),
        &["--cluster", "true", "--replication-factor", "2"],
    );
    let seed = a
        .cluster
        .expect("a cluster member prints its cluster address");
    let b = Server::start(
        &dir.path().join("b"),
        &["--seeds", &seed.to_string(), "--replication-factor", "2"],
    );

    let start = Instant::now();
    let stdout = loop {
        let out = hearsay(&["status", "--admin", &a.admin.to_string()]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if stdout.lines().filter(|l| l.starts_with("UN ")).count() == 2 {
            break stdout;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "two UN rows never appeared:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(stdout.contains(&a.client.to_string()), "{stdout}");
    assert!(stdout.contains(&b.client.to_string()), "{stdout}");

    let out = hearsay(&[
        "getendpoints",
        "default",
        "k",
        "--admin",
        &b.admin.to_string(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("Token: "), "{stdout}");
    let mut replicas: Vec<String> = lines.map(str::to_string).collect();
    replicas.sort();
    let mut both = vec![a.client.to_string(), b.client.to_string()];
    both.sort();
    assert_eq!(replicas, both, "{stdout}");
}
