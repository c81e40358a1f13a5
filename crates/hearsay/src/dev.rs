//! `hearsay dev`: a local cluster on loopback with one command.
//!
//! Node `i` (1-based) runs as a child process of this one on `127.0.0.i`, with the default
//! ports (client 7379, admin 7380, cluster 7381), so every node looks like a separate host, and
//! its own data directory under `--data-dir`. Every node gets the first node's cluster address
//! as its seed (`--seeds`), which puts `hearsay server` in cluster mode; the nodes join, choose
//! their tokens and gossip until each sees all of them. `hearsay dev` waits for that — every
//! node's admin API (`/v1/status`) showing all N members `UN` — before it prints "cluster
//! ready" and how to connect. Ctrl-C (or SIGTERM) forwards SIGTERM to every node, which shuts
//! down gracefully (flushing its engine); a node that has not exited after
//! [`NODE_STOP_TIMEOUT`] is killed.

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Largest cluster `hearsay dev` starts: one loopback address per node in 127.0.0.1–127.0.0.254,
/// and a practical bound on processes sharing one machine.
pub const MAX_DEV_NODES: usize = 32;
/// How long a node may take to open its client port before `hearsay dev` gives up.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take, once their client ports are open, until every node sees all
/// of them up and normal: a newcomer waits for the seed's ring (5 s at most), stays JOINING
/// for three gossip rounds, and the news spreads in a few more; generous for a busy laptop.
const CLUSTER_FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two rounds of asking every node for its status.
const CLUSTER_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a node may take to stop after SIGTERM before it is killed.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Default ports, as in the architecture: client (RESP), admin (HTTP), cluster (RPC + gossip).
pub const CLIENT_PORT: u16 = 7379;
pub const ADMIN_PORT: u16 = 7380;
pub const CLUSTER_PORT: u16 = 7381;

/// Arguments of `hearsay dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Parent of the nodes' data directories (node i uses `<data-dir>/node-i`).
    #[arg(long, default_value = "data/dev")]
    pub data_dir: PathBuf,
    /// Delete the nodes' data directories before starting.
    #[arg(long)]
    pub fresh: bool,
    /// Sync mode for every node: periodic, batch or none.
    #[arg(long, default_value = "periodic")]
    pub sync_mode: String,
}

/// One node of the dev cluster.
#[derive(Debug)]
pub struct DevNode {
    pub index: usize,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    child: Child,
}

impl DevNode {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLIENT_PORT))
    }
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }
    pub fn cluster_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLUSTER_PORT))
    }
}

/// The loopback address of node `index` (1-based).
pub fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, index as u8)
}

/// The `hearsay server` arguments for node `index` of an `n`-node dev cluster.
pub fn server_args(index: usize, data_dir: &Path, sync_mode: &str) -> Vec<String> {
    let ip = node_ip(index);
    let seed = SocketAddr::from((node_ip(1), CLUSTER_PORT));
    vec![
        "server".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        SocketAddr::from((ip, CLIENT_PORT)).to_string(),
        "--admin-listen".into(),
        SocketAddr::from((ip, ADMIN_PORT)).to_string(),
        "--cluster-listen".into(),
        SocketAddr::from((ip, CLUSTER_PORT)).to_string(),
        "--seeds".into(),
        seed.to_string(),
        "--sync-mode".into(),
        sync_mode.into(),
    ]
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > MAX_DEV_NODES {
        bail!(
            "--nodes must be between 1 and {MAX_DEV_NODES} (got {})",
            args.nodes
        );
    }
    let exe = std::env::current_exe().context("cannot find the hearsay executable")?;
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("cannot remove {}", args.data_dir.display()))?;
    }
    let mut nodes = Vec::with_capacity(args.nodes);
    for index in 1..=args.nodes {
        let data_dir = args.data_dir.join(format!("node-{index}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log_path = data_dir.join("hearsay.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args(server_args(index, &data_dir, &args.sync_mode))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {index}"))?;
        nodes.push(DevNode {
            index,
            ip: node_ip(index),
            data_dir,
            child,
        });
    }

    let started = wait_for_clients(&mut nodes).and_then(|()| {
        println!(
            "Hearsay dev: {} node(s) started; waiting for every node to see all of them up...",
            nodes.len()
        );
        wait_for_cluster(&mut nodes)
    });
    if let Err(e) = started {
        stop_all(&mut nodes);
        return Err(e);
    }
    println!(
        "Hearsay dev: cluster ready: {} node(s), all UN.",
        nodes.len()
    );
    println!();
    println!("  node    client (RESP)      admin (HTTP)       cluster            data");
    for n in &nodes {
        println!(
            "  node-{:<2} {:<18} {:<18} {:<18} {}",
            n.index,
            n.client_addr().to_string(),
            n.admin_addr().to_string(),
            n.cluster_addr().to_string(),
            n.data_dir.display()
        );
    }
    println!();
    let first = nodes[0].client_addr();
    println!(
        "Connect with: redis-cli -h {} -p {}   (any node coordinates any key)",
        first.ip(),
        first.port()
    );
    println!(
        "Cluster view: hearsay status   (asks {}; --admin ADDR for another node)",
        nodes[0].admin_addr()
    );
    println!("Key placement: hearsay getendpoints default <key>");
    println!("Logs are in each node's data directory (hearsay.log). Ctrl-C stops the cluster.");

    wait_for_signal_or_exit(&mut nodes)?;
    stop_all(&mut nodes);
    Ok(())
}

/// Polls every node's client port until it accepts a connection, or fails naming the node.
fn wait_for_clients(nodes: &mut [DevNode]) -> anyhow::Result<()> {
    let deadline = Instant::now() + NODE_START_TIMEOUT;
    for n in nodes.iter_mut() {
        loop {
            if TcpStream::connect_timeout(&n.client_addr(), Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "node-{} exited during start ({status}); see {}",
                    n.index,
                    n.data_dir.join("hearsay.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node-{} did not open {} within {:?}; see {}",
                    n.index,
                    n.client_addr(),
                    NODE_START_TIMEOUT,
                    n.data_dir.join("hearsay.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Polls every node's admin `/v1/status` until each one shows all the nodes as members and
/// every member `UN`, or fails naming the node that is not there yet and what it sees.
fn wait_for_cluster(nodes: &mut [DevNode]) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLUSTER_FORM_TIMEOUT;
    let want = nodes.len();
    let mut ready = vec![false; want];
    loop {
        let mut last_problem = None;
        for (i, n) in nodes.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "node-{} exited while the cluster formed ({status}); see {}",
                    n.index,
                    n.data_dir.join("hearsay.log").display()
                );
            }
            let admin = n.admin_addr().to_string();
            match hearsay_server::admin::client::get_json(&admin, "/v1/status") {
                Ok(v) => {
                    if v["mode"].as_str() == Some("single") {
                        bail!(
                            "node-{} runs in single-node mode although it was given --seeds; see {}",
                            n.index,
                            n.data_dir.join("hearsay.log").display()
                        );
                    }
                    let members = v["members"].as_array().cloned().unwrap_or_default();
                    let up = members.iter().filter(|m| m["code"] == "UN").count();
                    if members.len() == want && up == want {
                        ready[i] = true;
                    } else {
                        last_problem = Some(format!(
                            "node-{} sees {} member(s), {up} of them UN (want {want} UN)",
                            n.index,
                            members.len()
                        ));
                    }
                }
                Err(e) => last_problem = Some(format!("node-{}: {e}", n.index)),
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster did not form within {CLUSTER_FORM_TIMEOUT:?}: {}; see the nodes' hearsay.log",
                last_problem.unwrap_or_default()
            );
        }
        std::thread::sleep(CLUSTER_POLL_INTERVAL);
    }
}

/// Blocks until SIGINT/SIGTERM arrives or every node has exited on its own.
fn wait_for_signal_or_exit(nodes: &mut [DevNode]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { println!("\nStopping the cluster..."); return Ok(()); }
                _ = term.recv() => { println!("Stopping the cluster..."); return Ok(()); }
                _ = tick.tick() => {
                    let mut alive = 0;
                    for n in nodes.iter_mut() {
                        match n.child.try_wait()? {
                            None => alive += 1,
                            Some(status) => report_exit(n, status),
                        }
                    }
                    if alive == 0 {
                        anyhow::bail!("every node has exited");
                    }
                }
            }
        }
    })
}

fn report_exit(n: &DevNode, status: ExitStatus) {
    // Printed each tick while the node stays down; rare enough in development to be useful.
    eprintln!(
        "node-{} has exited ({status}); see {}",
        n.index,
        n.data_dir.join("hearsay.log").display()
    );
}

/// SIGTERM to every node, then waits; kills what is still running after the timeout.
fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter_mut() {
        if matches!(n.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(n.child.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + NODE_STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(status)) => {
                    println!("node-{} stopped ({status})", n.index);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    eprintln!("node-{} did not stop in time; killing it", n.index);
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
            }
        }
    }
}
