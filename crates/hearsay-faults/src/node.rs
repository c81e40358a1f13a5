//! `hearsay server` processes: configuration, start, readiness, crash, pause, restart on
//! the same data directory, and the node's admin API.

use crate::http;
use crate::topology::Topology;
use crate::util::{poll, tail};
use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to print `hearsay listening on`: engine open and commit-log
/// replay, and at first start joining (up to `join_wait_ms` = 10 s plus three JOINING gossip
/// rounds), on a 2-core machine shared with builds and four other nodes.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the cluster forming or re-forming (every node sees all members UN at their
/// current generation): 1–2 s at 200 ms gossip rounds when idle, far more under load.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// A graceful stop (SIGTERM) drains clients, stops the node and flushes the engine; after
/// this long the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's log printed when something about it fails.
pub const TAIL_LINES: usize = 30;

/// The node configuration every node of a run reads (flags add addresses, seeds, data dir).
///
/// - `[cluster.gossip] interval_ms = 200`: DOWN verdicts in ~1–2 s instead of 5–10 s.
/// - `[cluster.hints] retry_*`: a replay attempted just before a restarted node answers
///   would otherwise stall 10 s; `sync_interval_ms = 100` narrows what a crash can take.
/// - `[cluster.rpc] backoff_max_ms = 300`: the default 5 s reconnect backoff would delay the
///   first request to a restarted node (the same values as the process tests' clusters).
/// - `[server] io_threads = 1`, `busy_poll_us = 0`: five nodes and the harness share two
///   cores; busy polling would burn them.
/// - `[limits] request_timeout_ms = 5000`: slowloris connections are cut within a test.
///
/// `opts.overrides` (`--set TABLE.KEY=VALUE`, and scenarios' own) replace a key of these
/// tables or add keys and tables; `opts.extra_toml` is appended last, verbatim.
pub fn config_toml(opts: &ClusterOptions) -> String {
    let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let base: &[(&str, &[(&str, String)])] = &[
        (
            "server",
            &[
                ("io_threads", "1".into()),
                ("busy_poll_us", "0".into()),
                ("shutdown_timeout_ms", "5000".into()),
            ],
        ),
        (
            "storage",
            &[
                ("sync_mode", format!("{:?}", opts.sync_mode)),
                ("sync_interval_ms", "1000".into()),
                ("block_cache_bytes", "33554432".into()),
            ],
        ),
        ("limits", &[("request_timeout_ms", "5000".into())]),
        (
            "cluster",
            &[
                ("enabled", "true".into()),
                ("name", "\"hearsay-faults\"".into()),
                ("secret", "\"hearsay-faults-secret\"".into()),
                ("replication_factor", opts.rf.to_string()),
                ("write_timeout_ms", "2000".into()),
                ("read_timeout_ms", "2000".into()),
                ("join_wait_ms", "10000".into()),
            ],
        ),
        ("cluster.gossip", &[("interval_ms", "200".into())]),
        (
            "cluster.hints",
            &[
                ("enabled", "true".into()),
                ("sync_interval_ms", "100".into()),
                ("retry_initial_ms", "200".into()),
                ("retry_max_ms", "1000".into()),
            ],
        ),
        (
            "cluster.rpc",
            &[
                ("connect_timeout_ms", "500".into()),
                ("backoff_max_ms", "300".into()),
            ],
        ),
    ];
    for (t, kvs) in base {
        tables.push((
            t.to_string(),
            kvs.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ));
    }
    for o in &opts.overrides {
        match tables.iter_mut().find(|(t, _)| *t == o.table) {
            Some((_, kvs)) => match kvs.iter_mut().find(|(k, _)| *k == o.key) {
                Some(kv) => kv.1 = o.value.clone(),
                None => kvs.push((o.key.clone(), o.value.clone())),
            },
            None => tables.push((o.table.clone(), vec![(o.key.clone(), o.value.clone())])),
        }
    }
    let mut out = String::new();
    for (i, (t, kvs)) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("[{t}]\n"));
        for (k, v) in kvs {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out.push_str(&opts.extra_toml);
    out
}

/// One `TABLE.KEY=VALUE` override of the node configuration (`--set`): the key `KEY` of
/// the table `[TABLE]` (dotted for nested tables: `cluster.hints.enabled=false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigOverride {
    pub table: String,
    pub key: String,
    /// A TOML value, as written into the file.
    pub value: String,
}

impl std::str::FromStr for ConfigOverride {
    type Err = String;

    /// `TABLE.KEY=VALUE`. VALUE is taken as TOML when it is an integer, a float, a boolean,
    /// a quoted string or an array; anything else becomes a string (`sync_mode=batch`).
    fn from_str(s: &str) -> Result<ConfigOverride, String> {
        let (path, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected TABLE.KEY=VALUE"))?;
        let (table, key) = path
            .trim()
            .rsplit_once('.')
            .ok_or_else(|| format!("{s:?}: expected TABLE.KEY=VALUE (no table in {path:?})"))?;
        let ok_name = |n: &str| {
            !n.is_empty()
                && n.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                })
        };
        if !ok_name(table) || !ok_name(key) || key.contains('.') {
            return Err(format!("{s:?}: bad table or key name"));
        }
        let v = value.trim();
        let literal = v.parse::<i64>().is_ok()
            || v.parse::<f64>().is_ok_and(f64::is_finite)
            || v == "true"
            || v == "false"
            || (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
            || (v.starts_with('[') && v.ends_with(']'));
        let value = if literal {
            v.to_string()
        } else {
            format!("{v:?}")
        };
        Ok(ConfigOverride {
            table: table.to_string(),
            key: key.to_string(),
            value,
        })
    }
}

/// How a run's cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub rf: usize,
    /// `periodic` (the product default) or `batch`.
    pub sync_mode: String,
    /// Appended to every node's TOML.
    pub extra_toml: String,
    /// Keys set in the TOML's tables, in order (a later one wins): the scenario's, then
    /// `--set`'s.
    pub overrides: Vec<ConfigOverride>,
    /// The `hearsay` binary.
    pub bin: PathBuf,
    /// Use loopback addresses even as root.
    pub loopback: bool,
    /// Per node: extra environment (LD_PRELOAD shims, libfaketime).
    pub env: BTreeMap<usize, Vec<(String, String)>>,
    /// Per node: put the data directory on a tmpfs of this many bytes (root only).
    pub tmpfs_bytes: BTreeMap<usize, u64>,
}

/// What a starting node prints on stdout.
enum Announce {
    Member(String),
    Listening(SocketAddr),
}

/// One node: its process (if running) and what survives restarts.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub name: String,
    pub client: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    pub data_dir: PathBuf,
    config: PathBuf,
    log_dir: PathBuf,
    seeds: Vec<SocketAddr>,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    announcements: Option<mpsc::Receiver<Announce>>,
    /// The node id (learned at first start; a restart must keep it).
    pub node_id: String,
    /// Starts so far (the log file of incarnation `n` is `<name>.<n>.log`).
    pub incarnation: u32,
    /// When the current incarnation printed `hearsay listening on`.
    pub ready_at: Option<Instant>,
    /// Whether the process is stopped by SIGSTOP.
    pub paused: bool,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file (stderr) of incarnation `n`.
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.log_dir.join(format!("{}.{n}.log", self.name))
    }

    /// The current incarnation's log tail.
    pub fn log_tail(&self) -> String {
        format!(
            "----- {} ({}), last {TAIL_LINES} lines -----\n{}",
            self.name,
            self.log_path(self.incarnation).display(),
            tail(&self.log_path(self.incarnation), TAIL_LINES)
        )
    }

    /// Starts the process (a new incarnation) without waiting for it to be ready.
    pub fn spawn(&mut self, topo: &Topology, bin: &Path) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("node {} is already running", self.name);
        }
        self.incarnation += 1;
        self.ready_at = None;
        self.paused = false;
        let log_path = self.log_path(self.incarnation);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        writeln!(
            log,
            "===== hearsay-faults: start {} of node {} =====",
            self.incarnation, self.name
        )?;
        let seeds: Vec<String> = self.seeds.iter().map(ToString::to_string).collect();
        let mut cmd = topo.command(self.index, bin);
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.client.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .arg("--cluster-listen")
            .arg(self.cluster.to_string())
            .arg("--seeds")
            .arg(seeds.join(","))
            .arg("--node-name")
            .arg(&self.name)
            .env("RUST_LOG", "info")
            // Plain text in the log files.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn node {}", self.name))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after the announcements, so the node never blocks on a
        // full pipe; ends when the process exits.
        std::thread::Builder::new()
            .name(format!("{}-stdout", self.name))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let ann = if let Some(rest) = line.strip_prefix("hearsay cluster member ") {
                        rest.split_once(" on ")
                            .map(|(id, _)| Announce::Member(id.to_string()))
                    } else {
                        line.strip_prefix("hearsay listening on ")
                            .and_then(|a| a.trim().parse().ok())
                            .map(Announce::Listening)
                    };
                    if let Some(a) = ann {
                        let _ = tx.send(a);
                    }
                }
            })?;
        self.child = Some(child);
        self.announcements = Some(rx);
        Ok(())
    }

    /// Waits for `hearsay listening on` of the current incarnation; checks the node id.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let rx = self.announcements.take().context("node was not spawned")?;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Announce::Member(id)) => {
                    if self.node_id.is_empty() {
                        self.node_id = id;
                    } else if self.node_id != id {
                        bail!(
                            "node {} changed its id on restart: {} -> {id}",
                            self.name,
                            self.node_id
                        );
                    }
                }
                Ok(Announce::Listening(addr)) => {
                    if addr != self.client {
                        bail!("node {} listens on {addr}, not {}", self.name, self.client);
                    }
                    self.ready_at = Some(Instant::now());
                    return Ok(());
                }
                Err(_) => {
                    if let Some(st) = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        self.child = None;
                        bail!(
                            "node {} exited ({st}) before listening\n{}",
                            self.name,
                            self.log_tail()
                        );
                    }
                    if start.elapsed() > timeout {
                        bail!(
                            "node {} did not print its address within {timeout:?}\n{}",
                            self.name,
                            self.log_tail()
                        );
                    }
                }
            }
        }
    }

    /// Whether the process has exited on its own (reaps it); the status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten();
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// SIGKILL and reap: the process is gone when this returns.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                // A stopped process dies of SIGKILL too; CONT keeps the bookkeeping honest.
                let _ = signal(c.id(), nix::sys::signal::Signal::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM (a graceful stop: clients drained, engine flushed), then wait; SIGKILL after
    /// [`STOP_TIMEOUT`]. Returns whether it stopped on its own.
    pub fn stop(&mut self) -> anyhow::Result<bool> {
        Ok(self.terminate(STOP_TIMEOUT)?.is_some())
    }

    /// SIGTERM, then wait up to `timeout`; SIGKILL after it. Returns the exit status when
    /// the process ended on its own (`None`: it had to be killed, or was not running).
    pub fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        if self.paused {
            signal(c.id(), nix::sys::signal::Signal::SIGCONT)?;
            self.paused = false;
        }
        signal(c.id(), nix::sys::signal::Signal::SIGTERM)?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = c.try_wait()? {
                return Ok(Some(st));
            }
            std::thread::sleep(crate::util::POLL_EVERY);
        }
        let _ = c.kill();
        let _ = c.wait();
        Ok(None)
    }

    /// SIGSTOP: the process freezes (its sockets stay open, nothing answers).
    pub fn pause(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("node not running")?;
        signal(pid, nix::sys::signal::Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            signal(pid, nix::sys::signal::Signal::SIGCONT)?;
        }
        self.paused = false;
        Ok(())
    }

    /// `GET /v1/status` of this node.
    pub fn status(&self) -> anyhow::Result<Value> {
        http::get_json(self.admin, "/v1/status")
    }

    /// `GET /v1/stats` of this node.
    pub fn stats(&self) -> anyhow::Result<Value> {
        http::get_json(self.admin, "/v1/stats")
    }

    /// Undelivered hints on this node (`cluster.hints.pending_total` of `/v1/stats`).
    pub fn hints_pending(&self) -> anyhow::Result<u64> {
        let v = self.stats()?;
        v["cluster"]["hints"]["pending_total"]
            .as_u64()
            .context("no cluster.hints.pending_total in /v1/stats")
    }
}

impl Drop for Node {
    /// A node never outlives the harness's handle on it (a scenario that fails half-way,
    /// a panic): in loopback mode nothing else would stop it.
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .with_context(|| format!("kill -{sig} {pid}"))
}

/// N nodes of one run, with the topology they live in.
#[derive(Debug)]
pub struct Cluster {
    // Declared before `topo`: nodes are killed before namespaces and mounts go.
    pub nodes: Vec<Node>,
    pub topo: Topology,
    pub run_dir: PathBuf,
    pub opts: ClusterOptions,
}

impl Cluster {
    /// Creates the topology, writes configs, starts every node (seeds = the first two) and
    /// waits until each sees all N members UN.
    pub fn start(opts: ClusterOptions, run_dir: &Path) -> anyhow::Result<Cluster> {
        if !opts.bin.exists() {
            bail!(
                "hearsay binary {} not found: build it with `cargo build --release -p hearsay` \
                 or pass --hearsay-bin / HEARSAY_BIN",
                opts.bin.display()
            );
        }
        let mut topo = Topology::create(opts.nodes, opts.loopback)?;
        std::fs::create_dir_all(run_dir.join("logs"))?;
        let config = run_dir.join("node.toml");
        std::fs::write(&config, config_toml(&opts))?;
        let seeds: Vec<SocketAddr> = (0..opts.nodes.min(2))
            .map(|i| topo.cluster_addr(i))
            .collect();
        let mut nodes = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            let data_dir = run_dir.join(format!("n{i}"));
            std::fs::create_dir_all(&data_dir)?;
            if let Some(bytes) = opts.tmpfs_bytes.get(&i) {
                topo.mount_tmpfs(&data_dir, *bytes)?;
            }
            nodes.push(Node {
                index: i,
                name: format!("n{i}"),
                client: topo.client_addr(i),
                admin: topo.admin_addr(i),
                cluster: topo.cluster_addr(i),
                data_dir,
                config: config.clone(),
                log_dir: run_dir.join("logs"),
                seeds: seeds.clone(),
                env: opts.env.get(&i).cloned().unwrap_or_default(),
                child: None,
                announcements: None,
                node_id: String::new(),
                incarnation: 0,
                ready_at: None,
                paused: false,
            });
        }
        let mut cluster = Cluster {
            nodes,
            topo,
            run_dir: run_dir.to_path_buf(),
            opts,
        };
        // All at once, as `hearsay dev` does: the seeds wait for each other, the others for
        // a seed; concurrent joiners resolve token clashes themselves.
        for i in 0..cluster.nodes.len() {
            let Cluster {
                nodes, topo, opts, ..
            } = &mut cluster;
            nodes[i].spawn(topo, &opts.bin)?;
        }
        for n in &mut cluster.nodes {
            n.wait_ready(START_TIMEOUT)?;
        }
        cluster.wait_formed(FORM_TIMEOUT)?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node index of a node id.
    pub fn index_of(&self, node_id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node_id == node_id)
    }

    /// Node index of a cluster address.
    pub fn index_of_cluster_addr(&self, addr: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.cluster.to_string() == addr)
    }

    /// kill -9 node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts node `i` again on its data directory without waiting.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let Cluster {
            nodes, topo, opts, ..
        } = self;
        nodes[i].spawn(topo, &opts.bin)
    }

    /// Starts node `i` again and waits for it to accept clients.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.nodes[i].wait_ready(START_TIMEOUT)
    }

    /// Waits until every running node sees exactly the N members, all `UN`, each at the
    /// generation that member reports for itself (so a restarted node is seen as its new
    /// incarnation, not the dead one).
    pub fn wait_formed(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let ids: Vec<String> = self.nodes.iter().map(|n| n.node_id.clone()).collect();
        let nodes = &self.nodes;
        let r = poll("every node to see all members UN", timeout, || {
            let mut own_generation = BTreeMap::new();
            let mut views = Vec::new();
            for n in nodes {
                if !n.is_running() {
                    return Err(format!("{} is not running", n.name));
                }
                let v = n.status().map_err(|e| format!("{}: {e:#}", n.name))?;
                if let Some(g) = v["generation"].as_u64() {
                    own_generation.insert(n.node_id.clone(), g);
                }
                views.push((n, v));
            }
            for (n, v) in &views {
                let members = v["members"].as_array().cloned().unwrap_or_default();
                let mut seen: Vec<String> = members
                    .iter()
                    .filter_map(|m| m["node_id"].as_str().map(str::to_string))
                    .collect();
                seen.sort();
                let mut want = ids.clone();
                want.sort();
                if seen != want {
                    return Err(format!("{} sees members {seen:?}", n.name));
                }
                for m in &members {
                    let id = m["node_id"].as_str().unwrap_or("");
                    let code = m["code"].as_str().unwrap_or("");
                    let g = m["generation"].as_u64();
                    if code != "UN" || g != own_generation.get(id).copied() {
                        return Err(format!(
                            "{} sees {id} as {code} at generation {g:?} (it is at {:?})",
                            n.name,
                            own_generation.get(id)
                        ));
                    }
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(start.elapsed()),
            Err(e) => Err(e.context(self.log_tails())),
        }
    }

    /// Waits until no node holds undelivered hints; how long it took.
    pub fn wait_hints_drained(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        poll("every node's hints to drain", timeout, || {
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let p = n
                    .hints_pending()
                    .map_err(|e| format!("{}: {e:#}", n.name))?;
                if p > 0 {
                    return Err(format!("{} holds {p} undelivered hints", n.name));
                }
            }
            Ok(())
        })?;
        Ok(start.elapsed())
    }

    /// Every node's current log tail.
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(Node::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(overrides: &[&str]) -> ClusterOptions {
        ClusterOptions {
            nodes: 3,
            rf: 3,
            sync_mode: "periodic".into(),
            extra_toml: String::new(),
            overrides: overrides.iter().map(|o| o.parse().unwrap()).collect(),
            bin: PathBuf::new(),
            loopback: true,
            env: BTreeMap::new(),
            tmpfs_bytes: BTreeMap::new(),
        }
    }

    /// The lines of `[table]` in a rendered config.
    fn table<'a>(toml: &'a str, name: &str) -> Vec<&'a str> {
        let head = format!("[{name}]");
        toml.lines()
            .skip_while(|l| *l != head)
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn overrides_replace_keys_add_keys_and_add_tables() {
        let t = config_toml(&opts(&[]));
        assert!(
            table(&t, "cluster").contains(&"replication_factor = 3"),
            "{t}"
        );
        assert!(!t.contains("max_clock_offset_ms"));
        let t = config_toml(&opts(&[
            "cluster.max_clock_offset_ms=5000",
            "cluster.gossip.interval_ms=100",
            "storage.sync_mode=batch",
            "cluster.testing.plant=\"drop-hints\"",
            "cluster.max_clock_offset_ms=4000",
        ]));
        let cluster = table(&t, "cluster");
        // The later override wins, in the [cluster] table itself (a second [cluster] header
        // would be a TOML error).
        assert!(cluster.contains(&"max_clock_offset_ms = 4000"), "{t}");
        assert_eq!(t.matches("[cluster]\n").count(), 1, "{t}");
        assert_eq!(table(&t, "cluster.gossip"), vec!["interval_ms = 100"]);
        assert!(
            table(&t, "storage").contains(&"sync_mode = \"batch\""),
            "{t}"
        );
        assert_eq!(table(&t, "cluster.testing"), vec!["plant = \"drop-hints\""]);
    }

    #[test]
    fn overrides_must_name_a_table_and_a_key() {
        for bad in [
            "x=1",
            "cluster.=1",
            ".x=1",
            "cluster.max",
            "clu ster.x=1",
            "a..b=1",
        ] {
            assert!(bad.parse::<ConfigOverride>().is_err(), "{bad}");
        }
        let o: ConfigOverride = "cluster.hints.enabled=false".parse().unwrap();
        assert_eq!(
            (o.table.as_str(), o.key.as_str(), o.value.as_str()),
            ("cluster.hints", "enabled", "false")
        );
    }
}
