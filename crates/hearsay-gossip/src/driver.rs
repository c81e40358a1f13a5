//! A thin tokio UDP driver for [`Gossiper`]: binds the cluster address, ticks every
//! interval, feeds received datagrams, sends what the core emits, and publishes events on a
//! bounded broadcast channel. All protocol logic stays in the core.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hearsay_types::faults::{Fate, NetFaults};
use hearsay_types::{Clock, NodeId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::wire::MAX_PACKET_BYTES;
use crate::{Event, GossipConfig, GossipError, GossipMetrics, Gossiper, MemberView, StateKey};

/// Events buffered per subscriber; a slower subscriber sees `Lagged` rather than growing
/// memory.
pub const EVENT_CHANNEL_CAPACITY: usize = 4_096;

/// The membership view served by the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct MembershipView {
    /// This node.
    pub node_id: String,
    /// This node's generation.
    pub generation: u64,
    /// Every member, this node included, ascending by id.
    pub members: Vec<MemberView>,
    /// Counters.
    pub metrics: GossipMetrics,
}

#[derive(Debug)]
struct Shared {
    gossiper: Mutex<Gossiper>,
    rng: Mutex<StdRng>,
    clock: Arc<dyn Clock>,
    start: std::time::Instant,
    events: broadcast::Sender<Event>,
    send_errors: AtomicU64,
    /// Test-only injected delay and loss of outgoing packets.
    faults: Arc<NetFaults>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.clock
            .monotonic()
            .saturating_duration_since(self.start)
            .as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Gossiper> {
        // A panic while holding the lock cannot leave the gossiper half-updated in a way
        // that matters more than stopping gossip would, so keep serving.
        self.gossiper.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, g: &mut Gossiper) {
        for e in g.drain_events() {
            // No subscriber is fine.
            let _ = self.events.send(e);
        }
    }
}

/// A running gossip driver. Dropping it stops gossip.
#[derive(Debug)]
pub struct GossipHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GossipHandle {
    /// Binds `cfg.cluster_addr` and starts gossiping as `id` at `generation`.
    pub async fn spawn(
        cfg: GossipConfig,
        id: NodeId,
        generation: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<GossipHandle, GossipError> {
        Self::spawn_with_states(cfg, id, generation, clock, Vec::new()).await
    }

    /// As [`GossipHandle::spawn`], with `initial` states set before the first packet goes
    /// out: a restarting node's first gossip must already carry its tokens and status, or
    /// peers, which replace a restarted member's state wholesale, would see it without a
    /// place in the ring until a later round.
    pub async fn spawn_with_states(
        cfg: GossipConfig,
        id: NodeId,
        generation: u64,
        clock: Arc<dyn Clock>,
        initial: Vec<(StateKey, Vec<u8>)>,
    ) -> Result<GossipHandle, GossipError> {
        Self::spawn_with(cfg, id, generation, clock, initial, Arc::default()).await
    }

    /// As [`GossipHandle::spawn_with_states`], with outgoing packets subject to `faults`
    /// (a test-only seam: delay and loss injected in the driver).
    pub async fn spawn_with(
        cfg: GossipConfig,
        id: NodeId,
        generation: u64,
        clock: Arc<dyn Clock>,
        initial: Vec<(StateKey, Vec<u8>)>,
        faults: Arc<NetFaults>,
    ) -> Result<GossipHandle, GossipError> {
        let socket = UdpSocket::bind(cfg.cluster_addr).await?;
        let local_addr = socket.local_addr()?;
        let interval = Duration::from_millis(cfg.interval_ms);
        let start = clock.monotonic();
        let mut g = Gossiper::new(cfg, id, generation, 0)?;
        for (k, v) in initial {
            g.set_local_state(k, v)?;
        }
        // Events of the initial states describe no change anyone waits for.
        g.drain_events();
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            gossiper: Mutex::new(g),
            rng: Mutex::new(StdRng::from_os_rng()),
            clock,
            start,
            events,
            send_errors: AtomicU64::new(0),
            faults,
        });
        let task = tokio::spawn(run(Arc::clone(&shared), Arc::new(socket), interval));
        Ok(GossipHandle {
            shared,
            local_addr,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A new event subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Sets one of this node's states.
    pub fn set_local_state(&self, key: StateKey, value: Vec<u8>) -> Result<u64, GossipError> {
        let mut g = self.shared.lock();
        let r = g.set_local_state(key, value);
        self.shared.publish(&mut g);
        r
    }

    /// Operator removal of `node`.
    pub fn remove(&self, node: NodeId) -> Result<(), GossipError> {
        let mut g = self.shared.lock();
        let r = g.remove(node);
        self.shared.publish(&mut g);
        r
    }

    /// The membership view (`Serialize`: the admin API encodes it as JSON).
    pub fn membership(&self) -> MembershipView {
        let now = self.shared.now_ms();
        let g = self.shared.lock();
        let mut metrics = g.metrics();
        *metrics.dropped.entry("SendError".to_string()).or_insert(0) +=
            self.shared.send_errors.load(Ordering::Relaxed);
        MembershipView {
            node_id: g.node_id().to_string(),
            generation: g.generation(),
            members: g.members(now),
            metrics,
        }
    }

    /// True once this node learned it was removed.
    pub fn is_removed(&self) -> bool {
        self.shared.lock().is_removed()
    }
}

async fn send_all(shared: &Arc<Shared>, socket: &Arc<UdpSocket>, out: Vec<crate::Outgoing>) {
    for o in out {
        match shared.faults.fate() {
            Fate::Deliver => {
                if socket.send_to(&o.packet, o.to).await.is_err() {
                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Fate::Drop => {}
            Fate::Delay(d) => {
                let (shared, socket) = (Arc::clone(shared), Arc::clone(socket));
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if socket.send_to(&o.packet, o.to).await.is_err() {
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
}

async fn run(shared: Arc<Shared>, socket: Arc<UdpSocket>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One datagram's worth; anything longer is truncated by the kernel and then fails the
    // MAC check.
    let mut buf = vec![0u8; MAX_PACKET_BYTES + 1];
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = shared.now_ms();
                let out = {
                    let mut g = shared.lock();
                    let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
                    let out = g.tick(now, &mut *rng);
                    shared.publish(&mut g);
                    out
                };
                send_all(&shared, &socket, out).await;
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else {
                    // ICMP port-unreachable surfaces here on some systems; keep going.
                    continue;
                };
                let now = shared.now_ms();
                let out = {
                    let mut g = shared.lock();
                    let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
                    let out = g.handle_packet(from, &buf[..n], now, &mut *rng);
                    shared.publish(&mut g);
                    out
                };
                send_all(&shared, &socket, out).await;
            }
        }
    }
}
