//! Real `hearsay server` processes forming a three-node cluster on loopback, for
//! `cluster_processes.rs`. Each cluster lives in its own temporary directory, every listen
//! address uses port 0 (so clusters of tests running in parallel never collide), each node's
//! stderr goes to a file in that directory, and every child is killed when the cluster is
//! dropped, also when a test panics (then the tail of each node's stderr is printed).

#![allow(dead_code)]

use redis::Value;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to print `hearsay listening on`: engine open, commit-log replay
/// and joining (up to `join_wait_ms` plus three JOINING gossip rounds) in a debug build on a
/// 2-core machine shared with other builds.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on anything gossip has to spread (a join, a restart, a DOWN verdict) under load; at
/// 200 ms rounds these take one to two seconds when the machine is idle.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period of every wait: short against the 200 ms gossip round, so waits measure the
/// cluster and not the poller, and cheap (one RESP round trip on loopback).
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// Client socket timeouts: above the 2 s coordinator deadlines, so a slow cluster shows up as
/// a `-TIMEOUT` reply rather than a client-side I/O error.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node's stderr printed when a test fails.
const TAIL_LINES: usize = 40;

/// The cluster configuration every node of a test cluster reads.
///
/// `[cluster.gossip] interval_ms = 200`: gossip's phi-accrual detector needs several silent
/// rounds before a node's monitors convict it, so with the default 1 s round DOWN takes
/// about 5–10 s; at 200 ms it takes about 1–2 s, which keeps the tests short.
/// `[cluster.hints] retry_*`: the default first retry after a failed replay is 10 s (a replay
/// attempted just before a restarted node answers would stall the test that long).
/// `[cluster.rpc] backoff_max_ms`: the default 5 s reconnect backoff would likewise delay
/// the first request to a restarted node.
fn config_toml(hints: bool) -> String {
    format!(
        r#"[cluster]
enabled = true
name = "cluster-processes"
secret = "cluster-processes-secret"
replication_factor = 3
write_timeout_ms = 2000
read_timeout_ms = 2000
join_wait_ms = 10000

[cluster.gossip]
interval_ms = 200

[cluster.hints]
enabled = {hints}
sync_interval_ms = 100
retry_initial_ms = 200
retry_max_ms = 1000

[cluster.rpc]
connect_timeout_ms = 500
backoff_max_ms = 300
"#
    )
}

/// Polls `f` every [`POLL_EVERY`] until it returns `Ok`, or panics after `timeout` with the
/// last `Err` (what was seen instead).
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// What a starting node prints on stdout.
enum Announce {
    Member(String, SocketAddr),
    Admin(SocketAddr),
    Listening(SocketAddr),
}

/// One `hearsay server` process (or its last incarnation, when killed).
pub struct Node {
    pub name: &'static str,
    child: Option<Child>,
    /// RESP address of the running incarnation (port 0 picks a new one at every start).
    pub client: SocketAddr,
    /// Admin HTTP address of the running incarnation.
    pub admin: SocketAddr,
    /// Internode address; kept across restarts (peers and the restarted node agree on it).
    pub cluster_addr: SocketAddr,
    pub node_id: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    seed: Option<SocketAddr>,
    stderr_path: PathBuf,
    starts: u32,
}

/// A spawned process that has not announced its client address yet.
struct Starting {
    name: &'static str,
    child: Option<Child>,
    rx: mpsc::Receiver<Announce>,
    stderr_path: PathBuf,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(
    name: &'static str,
    data_dir: &Path,
    config: &Path,
    cluster_listen: SocketAddr,
    seed: Option<SocketAddr>,
    stderr_path: &Path,
    start_no: u32,
) -> Starting {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .expect("open the stderr file");
    writeln!(log, "===== start {start_no} of node {name} =====").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearsay"));
    cmd.arg("server")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--cluster-listen")
        .arg(cluster_listen.to_string())
        // Batch sync: a write a node acknowledged survives its SIGKILL, so the only way for
        // a restarted node to lack a write is to have missed it.
        .args(["--sync-mode", "batch"])
        .args(["--node-name", name])
        .env("RUST_LOG", "info")
        // Plain text in the stderr files (tracing-subscriber colours output otherwise).
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    match seed {
        Some(s) => {
            cmd.arg("--seeds").arg(s.to_string());
        }
        None => {
            cmd.args(["--cluster", "true"]);
        }
    }
    let mut child = cmd.spawn().expect("spawn hearsay server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the announcements, so the node never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ann = if let Some(a) = line.strip_prefix("hearsay admin on ") {
                Some(Announce::Admin(a.trim().parse().expect("admin addr")))
            } else if let Some(rest) = line.strip_prefix("hearsay cluster member ") {
                rest.split_once(" on ").map(|(id, addr)| {
                    Announce::Member(id.to_string(), addr.trim().parse().expect("cluster addr"))
                })
            } else {
                line.strip_prefix("hearsay listening on ")
                    .map(|a| Announce::Listening(a.trim().parse().expect("client addr")))
            };
            if let Some(a) = ann {
                let _ = tx.send(a);
            }
        }
    });
    Starting {
        name,
        child: Some(child),
        rx,
        stderr_path: stderr_path.to_path_buf(),
    }
}

impl Starting {
    /// Waits for `hearsay listening on`; returns (child, node id, cluster addr, client addr,
    /// admin addr).
    fn wait_ready(mut self) -> (Child, String, SocketAddr, SocketAddr, SocketAddr) {
        let start = Instant::now();
        let (mut member, mut admin) = (None, None);
        loop {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Announce::Member(id, addr)) => member = Some((id, addr)),
                Ok(Announce::Admin(a)) => admin = Some(a),
                Ok(Announce::Listening(client)) => {
                    let (id, addr) = member.expect("cluster member line before listening");
                    let admin = admin.expect("admin line before listening");
                    let child = self.child.take().expect("child");
                    return (child, id, addr, client, admin);
                }
                Err(_) => {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    if let Some(st) = exited {
                        panic!(
                            "node {} exited ({st}) before listening; stderr tail:\n{}",
                            self.name,
                            tail(&self.stderr_path, TAIL_LINES)
                        );
                    }
                    if start.elapsed() > START_TIMEOUT {
                        panic!(
                            "node {} did not print its address within {START_TIMEOUT:?}; stderr tail:\n{}",
                            self.name,
                            tail(&self.stderr_path, TAIL_LINES)
                        );
                    }
                }
            }
        }
    }
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap: the process is gone when this returns.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client connection to this node at `level` (sets it with `CONSISTENCY`).
    pub fn conn(&self, level: &str) -> Conn {
        let mut c = self.conn_raw();
        c.set_level(level);
        c
    }

    /// A client connection that has not chosen a consistency level.
    pub fn conn_raw(&self) -> Conn {
        assert!(self.is_running(), "node {} is not running", self.name);
        let client = redis::Client::open(format!("redis://{}/", self.client)).expect("url");
        let con = client
            .get_connection_with_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.name));
        con.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        con.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Conn {
            con,
            node: self.name,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A RESP connection to one node.
pub struct Conn {
    con: redis::Connection,
    pub node: &'static str,
}

/// Text of a RESP value (bulk, simple or integer), for maps of member fields.
fn text_of(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

impl Conn {
    pub fn cmd<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> redis::RedisResult<T> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.con)
    }

    /// `CONSISTENCY level`, checking cqlsh's answer.
    pub fn set_level(&mut self, level: &str) {
        let r: String = self.cmd(&["CONSISTENCY", level]).unwrap();
        assert_eq!(r, format!("Consistency level set to {level}."));
    }

    pub fn set(&mut self, key: &str, value: &str) -> redis::RedisResult<()> {
        let v: Value = self.cmd(&["SET", key, value])?;
        assert_eq!(v, Value::Okay, "SET {key} through {}", self.node);
        Ok(())
    }

    pub fn get(&mut self, key: &str) -> redis::RedisResult<Option<String>> {
        self.cmd(&["GET", key])
    }

    /// One pipeline of `SET key value` per pair, each checked for `OK`.
    pub fn pipelined_sets(&mut self, pairs: &[(String, String)]) -> redis::RedisResult<()> {
        let mut p = redis::pipe();
        for (k, v) in pairs {
            p.cmd("SET").arg(k).arg(v);
        }
        let answers: Vec<Value> = p.query(&mut self.con)?;
        assert!(answers.iter().all(|a| *a == Value::Okay), "{answers:?}");
        Ok(())
    }

    /// One pipeline of `DEL key` per key; returns how many existed.
    pub fn pipelined_dels(&mut self, keys: &[String]) -> redis::RedisResult<i64> {
        let mut p = redis::pipe();
        for k in keys {
            p.cmd("DEL").arg(k);
        }
        let answers: Vec<i64> = p.query(&mut self.con)?;
        Ok(answers.iter().sum())
    }

    /// One pipeline of `GET key` for every key (a run the server reads in one go).
    pub fn pipelined_gets(&mut self, keys: &[String]) -> redis::RedisResult<Vec<Option<String>>> {
        let mut p = redis::pipe();
        for k in keys {
            p.cmd("GET").arg(k);
        }
        p.query(&mut self.con)
    }

    /// `MEMBERS` as one map of fields per member, keyed by node id.
    pub fn members(&mut self) -> BTreeMap<String, BTreeMap<String, String>> {
        let v: Value = self.cmd(&["MEMBERS"]).unwrap();
        let Value::Array(rows) = v else {
            panic!("MEMBERS on {}: not an array: {v:?}", self.node)
        };
        let mut out = BTreeMap::new();
        for row in rows {
            let pairs: Vec<(String, String)> = match row {
                Value::Map(m) => m.iter().map(|(k, v)| (text_of(k), text_of(v))).collect(),
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|kv| (text_of(&kv[0]), text_of(&kv[1])))
                    .collect(),
                other => panic!("MEMBERS row on {}: {other:?}", self.node),
            };
            let fields: BTreeMap<String, String> = pairs.into_iter().collect();
            out.insert(fields["node_id"].clone(), fields);
        }
        out
    }

    /// One field of `INFO section` (`name:value` lines).
    pub fn info_field(&mut self, section: &str, field: &str) -> Option<String> {
        let text: String = self.cmd(&["INFO", section]).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    /// `hints_pending` from `INFO cluster`: undelivered hints on this coordinator.
    pub fn hints_pending(&mut self) -> u64 {
        self.info_field("cluster", "hints_pending")
            .unwrap_or_else(|| panic!("INFO cluster on {} has no hints_pending", self.node))
            .parse()
            .unwrap()
    }
}

/// Three nodes A, B, C; A is the seed (a one-node cluster at first), B and C join it.
pub struct Cluster {
    // Declared before `dir`: the nodes are killed before their directory is removed.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

pub const A: usize = 0;
pub const B: usize = 1;
pub const C: usize = 2;

impl Cluster {
    /// Starts A, then B and C concurrently (as `hearsay dev` does), and waits until every node
    /// sees all three as UN.
    pub fn start(hints: bool) -> Cluster {
        Cluster::start_with(hints, "")
    }

    /// As [`Cluster::start`], with `extra` (TOML tables absent from the common
    /// configuration) appended to every node's configuration file.
    pub fn start_with(hints: bool, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, format!("{}\n{extra}", config_toml(hints))).unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = cluster.launch("A", any, None, &config);
        cluster.adopt("A", a, None, &config);
        let seed = Some(cluster.nodes[A].cluster_addr);
        let b = cluster.launch("B", any, seed, &config);
        let c = cluster.launch("C", any, seed, &config);
        cluster.adopt("B", b, seed, &config);
        cluster.adopt("C", c, seed, &config);
        cluster.wait_converged();
        cluster
    }

    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let lower = name.to_ascii_lowercase();
        (
            self.dir.path().join(&lower),
            self.dir.path().join(format!("{lower}.stderr")),
        )
    }

    fn launch(
        &self,
        name: &'static str,
        listen: SocketAddr,
        seed: Option<SocketAddr>,
        config: &Path,
    ) -> Starting {
        let (data, stderr) = self.paths(name);
        File::create(&stderr).unwrap();
        spawn(name, &data, config, listen, seed, &stderr, 1)
    }

    fn adopt(&mut self, name: &'static str, s: Starting, seed: Option<SocketAddr>, config: &Path) {
        let (data_dir, stderr_path) = self.paths(name);
        let (child, node_id, cluster_addr, client, admin) = s.wait_ready();
        self.nodes.push(Node {
            name,
            child: Some(child),
            client,
            admin,
            cluster_addr,
            node_id,
            data_dir,
            config: config.to_path_buf(),
            seed,
            stderr_path,
            starts: 1,
        });
    }

    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts a killed node again on the same data directory and cluster address (so the same
    /// node id, tokens and address; a new generation). Returns once it prints its address.
    pub fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(!n.is_running(), "node {} is still running", n.name);
        n.starts += 1;
        let s = spawn(
            n.name,
            &n.data_dir,
            &n.config,
            n.cluster_addr,
            n.seed,
            &n.stderr_path,
            n.starts,
        );
        let (child, node_id, cluster_addr, client, admin) = s.wait_ready();
        assert_eq!(
            node_id, n.node_id,
            "node {} changed its id on restart",
            n.name
        );
        assert_eq!(cluster_addr, n.cluster_addr);
        n.child = Some(child);
        n.client = client;
        n.admin = admin;
    }

    pub fn conn(&self, i: usize, level: &str) -> Conn {
        self.nodes[i].conn(level)
    }

    /// Waits until every running node sees exactly the three members, all `UN`, each at the
    /// generation that member reports for itself (so a restarted node is seen as its new
    /// incarnation, not the dead one).
    pub fn wait_converged(&self) {
        let ids: Vec<&String> = self.nodes.iter().map(|n| &n.node_id).collect();
        let mut conns: Vec<Conn> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.conn("ONE"))
            .collect();
        assert_eq!(conns.len(), self.nodes.len(), "a node is not running");
        poll(
            "every node to see three UN members",
            CONVERGE_TIMEOUT,
            || {
                let views: Vec<_> = conns.iter_mut().map(|c| c.members()).collect();
                let own_generation: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&views)
                    .map(|(n, v)| {
                        v.get(&n.node_id)
                            .map(|m| m["generation"].clone())
                            .unwrap_or_default()
                    })
                    .collect();
                for (n, view) in self.nodes.iter().zip(&views) {
                    let seen: Vec<&String> = view.keys().collect();
                    let mut want = ids.clone();
                    want.sort();
                    if seen != want {
                        return Err(format!("{} sees members {seen:?}", n.name));
                    }
                    for (m, own) in self.nodes.iter().zip(&own_generation) {
                        let row = &view[&m.node_id];
                        if row["code"] != "UN" || &row["generation"] != own {
                            return Err(format!(
                                "{} sees {} as {} at generation {} (it is at {own})",
                                n.name, m.name, row["code"], row["generation"]
                            ));
                        }
                    }
                }
                Ok(())
            },
        );
    }

    /// Tail of every node's stderr, for failure messages.
    pub fn stderr_tails(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!(
                "----- node {} ({}) stderr, last {TAIL_LINES} lines -----\n{}\n",
                n.name,
                n.stderr_path.display(),
                tail(&n.stderr_path, TAIL_LINES)
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.stderr_tails());
        }
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}
