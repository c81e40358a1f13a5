//! Deterministic simulation of many gossip nodes in one thread.
//!
//! Owns a virtual clock, a simulated datagram network (per-link loss, delay and jitter,
//! partitions between sets of nodes) and node lifecycles (crash, restart with a newer
//! generation). Every node is the real [`hearsay_gossip::Gossiper`]; only I/O is simulated.
//! One seed drives all randomness and events are processed in `(time, sequence)` order, so
//! the same seed gives the same trace ([`Sim::trace_hash`]). It must not depend on tokio,
//! wall time or any Hearsay crate above `hearsay-gossip`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hearsay_gossip::{Event, GossipConfig, GossipMode, Gossiper, MemberStatus};
use hearsay_types::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Port every simulated node listens on.
pub const SIM_PORT: u16 = 7381;
/// Most nodes one simulation may hold (addresses are 10.x.y.z with 24 bits of index).
pub const MAX_SIM_NODES: usize = 1 << 24;

/// The simulated network's default behaviour.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// One-way delay.
    pub delay_ms: u64,
    /// Extra uniformly random delay in `0..=jitter_ms`.
    pub jitter_ms: u64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            loss: 0.0,
            delay_ms: 1,
            jitter_ms: 4,
        }
    }
}

/// Parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed of all randomness.
    pub seed: u64,
    /// The first `seeds` nodes are the seed list.
    pub seeds: usize,
    /// Network behaviour.
    pub net: NetConfig,
    /// Gossip round length.
    pub interval_ms: u64,
    /// Exchange mode.
    pub mode: GossipMode,
    /// Packet budget.
    pub max_packet_bytes: usize,
    /// Rumor mongering on (fanout 3) or off (anti-entropy only).
    pub rumors: bool,
    /// Keep every event in [`Sim::events`] (tests); the trace hash is kept regardless.
    pub record_events: bool,
}

impl SimOptions {
    /// Defaults: 1 s rounds, push-pull, 1 400-byte budget, 3 seeds, rumors on.
    pub fn new(nodes: usize, seed: u64) -> SimOptions {
        SimOptions {
            nodes,
            seed,
            seeds: 3,
            net: NetConfig::default(),
            interval_ms: 1_000,
            mode: GossipMode::PushPull,
            max_packet_bytes: 1_400,
            rumors: true,
            record_events: false,
        }
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad options.
    #[error("invalid simulation options: {0}")]
    Options(String),
    /// The gossip layer refused.
    #[error(transparent)]
    Gossip(#[from] hearsay_gossip::GossipError),
}

#[derive(Debug)]
struct SimNode {
    id: NodeId,
    addr: SocketAddr,
    generation: u64,
    /// Bumped at each crash so stale ticks are ignored.
    incarnation: u64,
    gossiper: Option<Gossiper>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        to: usize,
        from: SocketAddr,
        packet: Vec<u8>,
    },
}

/// A whole simulated cluster.
#[derive(Debug)]
pub struct Sim {
    opts: SimOptions,
    now_ms: u64,
    seq: u64,
    rng: StdRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64, Work)>>,
    /// Group per node while partitioned; packets between different groups are lost.
    partition: Option<Vec<u32>>,
    link_loss: BTreeMap<(usize, usize), f64>,
    trace: DefaultHasher,
    events: Vec<(u64, usize, Event)>,
    /// Suspect and Down events seen by any node, per subject node.
    suspect_events: BTreeMap<NodeId, u64>,
    down_events: BTreeMap<NodeId, u64>,
    /// Datagrams handed to the network, and their bytes.
    pub packets_sent: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Datagrams lost to loss, partitions or crashed receivers.
    pub packets_lost: u64,
}

/// Simulated address of node `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    let n = i as u32;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        SIM_PORT,
    ))
}

fn index_of(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) if a.port() == SIM_PORT => {
            let o = a.ip().octets();
            (o[0] == 10).then(|| ((o[1] as usize) << 16) | ((o[2] as usize) << 8) | o[3] as usize)
        }
        _ => None,
    }
}

impl Sim {
    /// Creates the nodes (not yet started).
    pub fn new(opts: SimOptions) -> Result<Sim, SimError> {
        if opts.nodes == 0 || opts.nodes > MAX_SIM_NODES {
            return Err(SimError::Options(format!("nodes = {}", opts.nodes)));
        }
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let nodes = (0..opts.nodes)
            .map(|i| SimNode {
                id: NodeId(rng.random()),
                addr: sim_addr(i),
                generation: 1,
                incarnation: 0,
                gossiper: None,
            })
            .collect();
        Ok(Sim {
            now_ms: 0,
            seq: 0,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            partition: None,
            link_loss: BTreeMap::new(),
            trace: DefaultHasher::new(),
            events: Vec::new(),
            suspect_events: BTreeMap::new(),
            down_events: BTreeMap::new(),
            packets_sent: 0,
            bytes_sent: 0,
            packets_lost: 0,
            opts,
        })
    }

    /// The seed that replays this run.
    pub fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// Virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Number of nodes (up or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a simulation has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// Node `i`'s gossiper, if it is up.
    pub fn node(&self, i: usize) -> Option<&Gossiper> {
        self.nodes.get(i).and_then(|n| n.gossiper.as_ref())
    }

    /// Node `i`'s gossiper, if it is up.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut Gossiper> {
        self.nodes.get_mut(i).and_then(|n| n.gossiper.as_mut())
    }

    /// Indices of nodes that are up.
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].gossiper.is_some())
            .collect()
    }

    /// Recorded events (only with `record_events`).
    pub fn events(&self) -> &[(u64, usize, Event)] {
        &self.events
    }

    /// Suspect events so far (summed over observers) about `node`, or about all nodes.
    pub fn suspect_events(&self, node: Option<NodeId>) -> u64 {
        match node {
            Some(n) => self.suspect_events.get(&n).copied().unwrap_or(0),
            None => self.suspect_events.values().sum(),
        }
    }

    /// Down events so far (summed over observers) about `node`, or about all nodes.
    pub fn down_events(&self, node: Option<NodeId>) -> u64 {
        match node {
            Some(n) => self.down_events.get(&n).copied().unwrap_or(0),
            None => self.down_events.values().sum(),
        }
    }

    /// Down events about nodes that are up (false convictions), summed over observers.
    pub fn false_down_events(&self) -> u64 {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].gossiper.is_some())
            .map(|i| self.down_events(Some(self.nodes[i].id)))
            .sum()
    }

    /// Hash of every event so far with its time and node: equal seeds, equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace.clone().finish()
    }

    fn config_for(&self, i: usize) -> GossipConfig {
        let mut cfg = GossipConfig::new("sim", b"sim-secret", self.nodes[i].addr)
            .with_interval_ms(self.opts.interval_ms);
        cfg.seeds = (0..self.opts.seeds.min(self.nodes.len()))
            .map(sim_addr)
            .collect();
        cfg.mode = self.opts.mode;
        cfg.max_packet_bytes = self.opts.max_packet_bytes;
        if !self.opts.rumors {
            // Anti-entropy only: rumors still exist for suspicions, but are neither
            // forwarded eagerly nor pushed to extra peers.
            cfg.eager_rumors = false;
            cfg.fanout = 1;
            cfg.retransmit_mult = 0.1;
        }
        cfg
    }

    /// Starts node `i` (fresh state, current generation) and schedules its first tick at a
    /// random phase within one interval.
    pub fn start(&mut self, i: usize) -> Result<(), SimError> {
        let cfg = self.config_for(i);
        let mut g = Gossiper::new(cfg, self.nodes[i].id, self.nodes[i].generation, self.now_ms)?;
        g.set_status(MemberStatus::Normal)?;
        self.nodes[i].gossiper = Some(g);
        self.drain(i);
        let at = self.now_ms + self.rng.random_range(0..self.opts.interval_ms);
        let incarnation = self.nodes[i].incarnation;
        self.schedule(
            at,
            Work::Tick {
                node: i,
                incarnation,
            },
        );
        Ok(())
    }

    /// Starts every node; they find each other through the seeds.
    pub fn start_all(&mut self) -> Result<(), SimError> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// Starts every node already knowing every other node's initial state (a converged
    /// cluster), without sending a packet.
    pub fn start_converged(&mut self) -> Result<(), SimError> {
        self.start_all()?;
        let snaps: Vec<hearsay_gossip::SelfSnapshot> = self
            .nodes
            .iter()
            .filter_map(|n| n.gossiper.as_ref().map(|g| g.self_snapshot()))
            .collect();
        for n in &mut self.nodes {
            if let Some(g) = n.gossiper.as_mut() {
                g.learn_from_all(&snaps);
            }
        }
        Ok(())
    }

    /// Crashes node `i`: its state is lost and packets to it vanish.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].gossiper = None;
        self.nodes[i].incarnation += 1;
    }

    /// Restarts a crashed node with a newer generation.
    pub fn restart(&mut self, i: usize) -> Result<(), SimError> {
        self.nodes[i].generation += 1;
        self.start(i)
    }

    /// Splits the nodes into groups that cannot reach each other; nodes in no group form
    /// one more group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut g = vec![groups.len() as u32; self.nodes.len()];
        for (k, members) in groups.iter().enumerate() {
            for &i in members {
                g[i] = k as u32;
            }
        }
        self.partition = Some(g);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// Sets the default loss probability.
    pub fn set_loss(&mut self, loss: f64) {
        self.opts.net.loss = loss;
    }

    /// Sets the loss probability of the directed link `from → to`.
    pub fn set_link_loss(&mut self, from: usize, to: usize, loss: f64) {
        self.link_loss.insert((from, to), loss);
    }

    /// Delivers raw bytes to node `to` as if sent from `from` (forged or stale traffic).
    pub fn inject(&mut self, to: usize, from: SocketAddr, packet: Vec<u8>) {
        let at = self.now_ms + self.opts.net.delay_ms;
        self.schedule(at, Work::Deliver { to, from, packet });
    }

    fn schedule(&mut self, at: u64, w: Work) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, w)));
    }

    fn drain(&mut self, i: usize) {
        let Some(g) = self.nodes[i].gossiper.as_mut() else {
            return;
        };
        for e in g.drain_events() {
            (self.now_ms, i, &e).hash(&mut self.trace);
            match &e {
                Event::Suspect { node } => *self.suspect_events.entry(*node).or_insert(0) += 1,
                Event::Down { node } => *self.down_events.entry(*node).or_insert(0) += 1,
                _ => {}
            }
            if self.opts.record_events {
                self.events.push((self.now_ms, i, e));
            }
        }
    }

    fn send(&mut self, from: usize, out: Vec<hearsay_gossip::Outgoing>) {
        for o in out {
            self.packets_sent += 1;
            self.bytes_sent += o.packet.len() as u64;
            let Some(to) = index_of(o.to).filter(|t| *t < self.nodes.len()) else {
                self.packets_lost += 1;
                continue;
            };
            if let Some(p) = &self.partition
                && p[from] != p[to]
            {
                self.packets_lost += 1;
                continue;
            }
            let loss = self
                .link_loss
                .get(&(from, to))
                .copied()
                .unwrap_or(self.opts.net.loss);
            if loss > 0.0 && self.rng.random_bool(loss.min(1.0)) {
                self.packets_lost += 1;
                continue;
            }
            let delay = self.opts.net.delay_ms + self.rng.random_range(0..=self.opts.net.jitter_ms);
            let from_addr = self.nodes[from].addr;
            self.schedule(
                self.now_ms + delay,
                Work::Deliver {
                    to,
                    from: from_addr,
                    packet: o.packet,
                },
            );
        }
    }

    /// Processes everything scheduled up to `until_ms`, then sets the clock to it.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until_ms {
                break;
            }
            let Some(Reverse((at, _, work))) = self.queue.pop() else {
                break;
            };
            self.now_ms = at;
            match work {
                Work::Tick { node, incarnation } => {
                    if self.nodes[node].incarnation != incarnation {
                        continue;
                    }
                    let now = self.now_ms;
                    let Some(g) = self.nodes[node].gossiper.as_mut() else {
                        continue;
                    };
                    let out = g.tick(now, &mut self.rng);
                    self.drain(node);
                    self.send(node, out);
                    let next = now + self.opts.interval_ms;
                    self.schedule(next, Work::Tick { node, incarnation });
                }
                Work::Deliver { to, from, packet } => {
                    let now = self.now_ms;
                    let Some(g) = self.nodes[to].gossiper.as_mut() else {
                        self.packets_lost += 1;
                        continue;
                    };
                    let out = g.handle_packet(from, &packet, now, &mut self.rng);
                    self.drain(to);
                    self.send(to, out);
                }
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now_ms + ms;
        self.run_until(t);
    }

    /// Runs until `pred` holds (checked every `step_ms`) or `deadline_ms` passes; returns
    /// the virtual time at which it first held.
    pub fn run_until_pred(
        &mut self,
        deadline_ms: u64,
        step_ms: u64,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        loop {
            if pred(self) {
                return Some(self.now_ms);
            }
            if self.now_ms >= deadline_ms {
                return None;
            }
            let t = (self.now_ms + step_ms).min(deadline_ms);
            self.run_until(t);
        }
    }

    /// True when every up node other than those in `except` satisfies `f`.
    pub fn all_up(&self, except: &[usize], mut f: impl FnMut(usize, &Gossiper) -> bool) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .all(|(i, n)| except.contains(&i) || n.gossiper.as_ref().is_none_or(|g| f(i, g)))
    }
}

/// The seed for a randomized test: `HEARSAY_SIM_SEED` if set, else `default`. Printed, so a
/// failing run (whose output cargo shows) names the seed that replays it.
pub fn test_seed(default: u64) -> u64 {
    let seed = std::env::var("HEARSAY_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("simulation seed = {seed} (replay with HEARSAY_SIM_SEED={seed})");
    seed
}
