//! Where the nodes live, and the network faults between them.
//!
//! **As root** ([`Mode::Netns`]): a Linux bridge `hsf<k>br` holding `10.213.<k>.1/24` in the
//! root namespace, and per node a network namespace `hsf<k>n<i>` with a veth pair into the
//! bridge (`eth0` = `10.213.<k>.<10+i>/24` inside). The harness's client workers run in the
//! root namespace and reach every node over the bridge. Each namespace holds an nftables
//! table `inet hsf` with an `input` and an `output` chain: a partition is drop rules there
//! (to and from peers' addresses only, so clients still reach every node), a heal flushes
//! the table. An optional extra namespace (`hsf<k>x`, `.250`) plays a hostile host.
//!
//! `<k>` (0..=255) is chosen per run and claimed by creating the state file
//! `/run/hearsay-faults/<k>.json` exclusively, before anything is created, so two runs
//! never share a subnet or names; a subnet that already has a route on this machine is
//! skipped. The state file lists what the run created (and its tmpfs mounts); at start every
//! run removes what earlier runs left behind when their process is gone (crash, `kill -9`,
//! Ctrl-C), and [`Topology`]'s `Drop` removes its own (also when unwinding from a panic).
//!
//! **Not root** ([`Mode::Loopback`]): nodes bind distinct loopback addresses
//! `127.<a>.<b>.<10+i>` (all of 127/8 is local on Linux) and network faults are refused with
//! an error that says so; crashes, pauses, clock skew and fsync EIO still work.

use crate::util::{is_root, pid_alive, run, run_quiet};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where state files of runs live (tmpfs: gone after a reboot, as the namespaces are).
pub const STATE_DIR: &str = "/run/hearsay-faults";
/// Name prefix of everything a run creates (bridges, namespaces, veths).
const PREFIX: &str = "hsf";
/// First two octets of the runs' subnets: a private range rarely used by hosts or
/// container runtimes (Docker takes 172.17/16 and 10.0-ish pools, Kubernetes 10.96/12).
const SUBNET_OCTETS: [u8; 2] = [10, 213];
/// Host part of node `i`'s address: `10 + i` (1 is the bridge, 250 the hostile host).
const NODE_HOST_BASE: u8 = 10;
/// Host part of the hostile namespace's address.
const ATTACKER_HOST: u8 = 250;
/// Most nodes a topology holds: host parts 10..=249 stay below the attacker's.
pub const MAX_NODES: usize = 64;
/// RESP, admin and cluster ports; each node has its own address, so they can be fixed.
pub const CLIENT_PORT: u16 = 7379;
pub const ADMIN_PORT: u16 = 7380;
pub const CLUSTER_PORT: u16 = 7381;
/// Candidate loopback subnets tried in loopback mode before giving up.
const LOOPBACK_ATTEMPTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Namespaces and a bridge; network faults available.
    Netns,
    /// Loopback addresses; no network faults.
    Loopback,
}

/// What a run created, as recorded in its state file (for cleanup by a later run).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    pid: u32,
    k: u8,
    namespaces: Vec<String>,
    /// Host-side veth ends. Deleted explicitly: a namespace lives on (with its veth pair)
    /// after `ip netns del` while anything still references it, e.g. orphaned TCP
    /// sockets of a killed node finishing their retransmissions, which takes minutes.
    #[serde(default)]
    links: Vec<String>,
    bridge: Option<String>,
    mounts: Vec<PathBuf>,
}

/// The run's network: node addresses and, as root, namespaces and a bridge.
#[derive(Debug)]
pub struct Topology {
    pub mode: Mode,
    node_ips: Vec<Ipv4Addr>,
    namespaces: Vec<String>,
    attacker: Option<(String, Ipv4Addr)>,
    bridge: Option<String>,
    state: State,
    state_path: Option<PathBuf>,
}

/// One direction of a blocked link: packets from `from` to `to` are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    pub from: usize,
    pub to: usize,
}

impl Topology {
    /// Builds the topology for `n` nodes: namespaces as root (unless `force_loopback`),
    /// loopback otherwise. Cleans up what crashed earlier runs left behind first.
    pub fn create(n: usize, force_loopback: bool) -> anyhow::Result<Topology> {
        if n == 0 || n > MAX_NODES {
            bail!("node count must be in 1..={MAX_NODES}, got {n}");
        }
        if is_root() && !force_loopback {
            clean_stale()?;
            Topology::create_netns(n)
        } else {
            if !is_root() {
                println!(
                    "NOTE: not running as root: nodes use loopback addresses and NETWORK FAULTS \
                     (partitions, the hostile host, tmpfs disk-full) ARE DISABLED; crashes, pauses, \
                     clock skew and fsync EIO still run."
                );
            } else {
                println!("NOTE: --loopback: network faults are disabled for this run.");
            }
            Topology::create_loopback(n)
        }
    }

    fn create_loopback(n: usize) -> anyhow::Result<Topology> {
        // Distinct per run (pid and time), checked free before use.
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        for attempt in 0..LOOPBACK_ATTEMPTS as u64 {
            let x = seed.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (a, b) = (100 + (x % 150) as u8, ((x >> 8) % 256) as u8);
            let ips: Vec<Ipv4Addr> = (0..n)
                .map(|i| Ipv4Addr::new(127, a, b, NODE_HOST_BASE + i as u8))
                .collect();
            if ips.iter().all(|ip| ports_free(*ip)) {
                return Ok(Topology {
                    mode: Mode::Loopback,
                    node_ips: ips,
                    namespaces: Vec::new(),
                    attacker: None,
                    bridge: None,
                    state: State::default(),
                    state_path: None,
                });
            }
        }
        bail!("no free loopback subnet found in {LOOPBACK_ATTEMPTS} attempts")
    }

    fn create_netns(n: usize) -> anyhow::Result<Topology> {
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let routes = run("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default();
        let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
        // Start somewhere different for every topology (pid and time), so scenarios run one
        // after another in one process do not reuse a subnet whose leftovers may linger.
        let start = (std::process::id() as u128
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)) as usize;
        let mut claimed = None;
        for j in 0..256 {
            let k = ((start + j * 37) % 256) as u8;
            let subnet = format!("{}.{}.{k}.", SUBNET_OCTETS[0], SUBNET_OCTETS[1]);
            if routes.contains(&subnet) || links_of(&links, k) {
                continue;
            }
            let path = Path::new(STATE_DIR).join(format!("{k}.json"));
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .is_ok()
            {
                claimed = Some((k, path));
                break;
            }
        }
        let Some((k, state_path)) = claimed else {
            bail!("no free 10.213.k.0/24 subnet (all 256 claimed or routed)");
        };
        let mut topo = Topology {
            mode: Mode::Netns,
            node_ips: (0..n)
                .map(|i| subnet_ip(k, NODE_HOST_BASE + i as u8))
                .collect(),
            namespaces: Vec::new(),
            attacker: None,
            bridge: None,
            state: State {
                pid: std::process::id(),
                k,
                ..State::default()
            },
            state_path: Some(state_path),
        };
        topo.save_state()?;
        // From here on, Drop undoes whatever was created if a step fails.
        let bridge = format!("{PREFIX}{k}br");
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        topo.bridge = Some(bridge.clone());
        topo.state.bridge = Some(bridge.clone());
        topo.save_state()?;
        let host = format!("{}/24", subnet_ip(k, 1));
        run("ip", &["addr", "add", &host, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{PREFIX}{k}n{i}");
            topo.add_namespace(&ns, &format!("{PREFIX}{k}v{i}"), topo.node_ips[i])?;
            topo.namespaces.push(ns);
        }
        Ok(topo)
    }

    /// Adds a namespace wired into the bridge with address `ip`, with the nftables table
    /// that partitions go into.
    fn add_namespace(&mut self, ns: &str, veth: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        let bridge = self.bridge.clone().context("no bridge")?;
        run("ip", &["netns", "add", ns])?;
        self.state.namespaces.push(ns.to_string());
        self.save_state()?;
        let peer = format!("{veth}p");
        run(
            "ip",
            &["link", "add", veth, "type", "veth", "peer", "name", &peer],
        )?;
        self.state.links.push(veth.to_string());
        self.save_state()?;
        run("ip", &["link", "set", &peer, "netns", ns])?;
        run("ip", &["link", "set", veth, "master", &bridge, "up"])?;
        run("ip", &["-n", ns, "link", "set", &peer, "name", "eth0"])?;
        run(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        nft(
            ns,
            "table inet hsf {\n\
             chain input { type filter hook input priority 0; policy accept; }\n\
             chain output { type filter hook output priority 0; policy accept; }\n\
             }\n",
        )?;
        Ok(())
    }

    fn save_state(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.state_path {
            let text = serde_json::to_string_pretty(&self.state)?;
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.node_ips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.node_ips.is_empty()
    }

    pub fn ip(&self, node: usize) -> Ipv4Addr {
        self.node_ips[node]
    }

    pub fn client_addr(&self, node: usize) -> SocketAddr {
        SocketAddr::from((self.node_ips[node], CLIENT_PORT))
    }

    pub fn admin_addr(&self, node: usize) -> SocketAddr {
        SocketAddr::from((self.node_ips[node], ADMIN_PORT))
    }

    pub fn cluster_addr(&self, node: usize) -> SocketAddr {
        SocketAddr::from((self.node_ips[node], CLUSTER_PORT))
    }

    /// Whether partitions, the hostile host and tmpfs mounts are available.
    pub fn network_faults(&self) -> bool {
        self.mode == Mode::Netns
    }

    /// A command that runs `program` as node `node` (inside its namespace as root).
    /// `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn command(&self, node: usize, program: &Path) -> Command {
        match self.mode {
            Mode::Netns => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.namespaces[node]])
                    .arg(program);
                c
            }
            Mode::Loopback => Command::new(program),
        }
    }

    /// Installs exactly `cuts` (replacing any earlier rules): for each, node `from` drops
    /// its packets to `to` (output chain) and `to` drops packets from `from` (input
    /// chain), so the link is cut in that direction whichever side's rules run first.
    pub fn apply_cuts(&self, cuts: &[Cut]) -> anyhow::Result<()> {
        if !self.network_faults() {
            bail!("network faults need root (this run uses loopback addresses)");
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let mut script = String::from("flush table inet hsf\n");
            for c in cuts {
                if c.from == i {
                    script.push_str(&format!(
                        "add rule inet hsf output ip daddr {} drop\n",
                        self.node_ips[c.to]
                    ));
                }
                if c.to == i {
                    script.push_str(&format!(
                        "add rule inet hsf input ip saddr {} drop\n",
                        self.node_ips[c.from]
                    ));
                }
            }
            nft(ns, &script)?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        if !self.network_faults() {
            return Ok(());
        }
        for ns in &self.namespaces {
            nft(ns, "flush table inet hsf\n")?;
        }
        Ok(())
    }

    /// The hostile host's namespace and address (created on first use; root only).
    pub fn attacker(&mut self) -> anyhow::Result<(String, Ipv4Addr)> {
        if let Some(a) = &self.attacker {
            return Ok(a.clone());
        }
        if !self.network_faults() {
            bail!("the hostile host needs root (this run uses loopback addresses)");
        }
        let k = self.state.k;
        let ns = format!("{PREFIX}{k}x");
        let ip = subnet_ip(k, ATTACKER_HOST);
        self.add_namespace(&ns, &format!("{PREFIX}{k}vx"), ip)?;
        self.attacker = Some((ns.clone(), ip));
        Ok((ns, ip))
    }

    /// Mounts a tmpfs of `size_bytes` on `dir` (root only), unmounted on drop.
    pub fn mount_tmpfs(&mut self, dir: &Path, size_bytes: u64) -> anyhow::Result<()> {
        if !is_root() {
            bail!("a size-limited tmpfs needs root");
        }
        std::fs::create_dir_all(dir)?;
        let dir_text = dir.to_str().context("tmpfs path not UTF-8")?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes}"),
                "hsf-tmpfs",
                dir_text,
            ],
        )?;
        self.state.mounts.push(dir.to_path_buf());
        self.save_state()?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove(&self.state);
        if let Some(p) = &self.state_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn subnet_ip(k: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET_OCTETS[0], SUBNET_OCTETS[1], k, host)
}

/// Runs an nftables script inside a namespace.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether the RESP, admin and cluster ports (TCP and UDP) are free on `ip`.
fn ports_free(ip: Ipv4Addr) -> bool {
    [CLIENT_PORT, ADMIN_PORT, CLUSTER_PORT]
        .iter()
        .all(|p| TcpListener::bind((ip, *p)).is_ok())
        && UdpSocket::bind((ip, CLUSTER_PORT)).is_ok()
}

/// Removes what a run created: kills processes left in its namespaces (nodes of a run that
/// crashed), deletes the namespaces and the bridge, unmounts its tmpfs mounts.
fn remove(state: &State) {
    for l in &state.links {
        run_quiet("ip", &["link", "del", l]);
    }
    for ns in &state.namespaces {
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        run_quiet("ip", &["netns", "del", ns]);
    }
    if let Some(b) = &state.bridge {
        run_quiet("ip", &["link", "del", b]);
    }
    for m in &state.mounts {
        if let Some(m) = m.to_str() {
            // Lazy: a node's private mount namespace copy may still hold it briefly.
            run_quiet("umount", &["-l", m]);
        }
    }
}

/// Whether `ip -o link show` output lists an interface of subnet `k` (`hsf<k>…`).
fn links_of(links: &str, k: u8) -> bool {
    let prefix = format!("{PREFIX}{k}");
    links.lines().any(|l| {
        l.split(':')
            .nth(1)
            .map(|name| name.trim().split('@').next().unwrap_or(""))
            .and_then(|name| name.strip_prefix(&prefix))
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Whether `pid` is a live `hearsay-faults` process (not a recycled pid).
fn is_live_harness(pid: u32) -> bool {
    pid_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("hearsay-faults"))
}

/// Removes what earlier runs left behind: every state file whose process is gone, and
/// every `hsf<k>…` namespace or bridge whose `<k>` no live run claims.
pub fn clean_stale() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    std::fs::create_dir_all(STATE_DIR)?;
    let mut live = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(STATE_DIR)? {
        let path = entry?.path();
        let Some(k) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u8>().ok())
        else {
            continue;
        };
        let state: Option<State> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match state {
            Some(s) if is_live_harness(s.pid) => {
                live.insert(k);
            }
            Some(s) => {
                println!(
                    "cleaning up after an earlier run (pid {} is gone): subnet {}.{}.{k}.0/24",
                    s.pid, SUBNET_OCTETS[0], SUBNET_OCTETS[1]
                );
                remove(&s);
                let _ = std::fs::remove_file(&path);
            }
            None => {
                // Empty or partial: a run between claiming and writing, or one that died
                // there. Young files may belong to a run starting right now.
                let young = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() < 60);
                if young {
                    live.insert(k);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    // Leftovers without a state file (removed by hand, or a crash before it was written).
    let owned_k = |name: &str| -> Option<u8> {
        let rest = name.strip_prefix(PREFIX)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        let ours = tail == "br" || tail == "x" || tail.starts_with('n') || tail.starts_with('v');
        if ours { digits.parse().ok() } else { None }
    };
    let netns = run("ip", &["netns", "list"]).unwrap_or_default();
    for line in netns.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(k) = owned_k(name)
            && !live.contains(&k)
        {
            println!("removing stale namespace {name}");
            remove(&State {
                namespaces: vec![name.to_string()],
                ..State::default()
            });
        }
    }
    let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: hsf7br: <BROADCAST,...", "190: hsf202v1@if189: <...": bridges and host-side
        // veth ends of runs that are gone.
        let name = line
            .split(':')
            .nth(1)
            .unwrap_or("")
            .trim()
            .split('@')
            .next()
            .unwrap_or("");
        if let Some(k) = owned_k(name)
            && !live.contains(&k)
        {
            println!("removing stale interface {name}");
            run_quiet("ip", &["link", "del", name]);
        }
    }
    // tmpfs mounts of ours whose run is gone (named `hsf-tmpfs` by `mount_tmpfs`).
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let live_mounts: Vec<PathBuf> = live
        .iter()
        .filter_map(|k| {
            std::fs::read_to_string(Path::new(STATE_DIR).join(format!("{k}.json"))).ok()
        })
        .filter_map(|t| serde_json::from_str::<State>(&t).ok())
        .flat_map(|s| s.mounts)
        .collect();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("hsf-tmpfs")
            && let Some(dir) = f.next()
            && !live_mounts.iter().any(|m| m.as_os_str() == dir)
        {
            println!("unmounting stale tmpfs {dir}");
            run_quiet("umount", &["-l", dir]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_of_a_subnet_are_recognised_by_name() {
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                     190: hsf202v1@if189: <BROADCAST> mtu 1500\n\
                     12: hsf7br: <BROADCAST> mtu 1500\n";
        assert!(links_of(links, 202));
        assert!(links_of(links, 7));
        // hsf20… is not subnet 202's, nor 202's subnet 20's.
        assert!(!links_of(links, 20));
        assert!(!links_of(links, 2));
        assert!(!links_of(links, 9));
    }
}
