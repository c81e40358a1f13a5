//! Gossip configuration: every field has a documented default and `validate()` rejects
//! contradictions with a message that names the field.

use std::net::SocketAddr;

use crate::GossipError;

/// How two nodes reconcile in one exchange (see `docs/gossip.md`).
/// In config files: `"push"`, `"pull"`, `"push-pull"` (the Rust names are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GossipMode {
    /// The initiator pushes its freshest node states; the peer does not answer.
    #[serde(alias = "Push")]
    Push,
    /// The initiator sends a digest; the peer answers with what the initiator lacks.
    #[serde(alias = "Pull")]
    Pull,
    /// Digest → reply with what the initiator lacks plus a request → final push (default).
    #[serde(alias = "PushPull", alias = "pushpull")]
    PushPull,
}

/// The part of the node configuration the gossip layer owns.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Cluster name: packets from another cluster are dropped and counted.
    pub cluster_name: String,
    /// Shared secret keying the HMAC over every packet. Empty is allowed for development
    /// but still authenticates against the cluster name.
    pub secret: Vec<u8>,
    /// This node's gossip address (UDP). Advertised as `ClusterAddr` and used to recognise
    /// itself in the seed list.
    pub cluster_addr: SocketAddr,
    /// Seed addresses shared by every node of the cluster.
    pub seeds: Vec<SocketAddr>,
    /// Gossip round length. Default 1 000 ms.
    pub interval_ms: u64,
    /// Exchange mode. Default push-pull.
    pub mode: GossipMode,
    /// Byte budget of one packet, MAC and header included. Default 1 400: an Ethernet MTU of
    /// 1 500 minus IPv6 (40) and UDP (8) headers leaves 1 452; 1 400 keeps ~50 bytes for
    /// tunnel encapsulation (WireGuard, VXLAN) so a gossip datagram is never IP-fragmented
    /// (a lost fragment loses the whole datagram, multiplying the loss rate).
    pub max_packet_bytes: usize,
    /// Peers a rumor is pushed to each round. Default 3.
    pub fanout: usize,
    /// A rumor lives for `ceil(retransmit_mult × log10(N + 1))` rounds (at least 2).
    /// Default 1: 3 rounds at N = 100, 4 at 1 000, 5 at 10 000 — each to `fanout` peers, on
    /// top of the eager first hop. A higher value mostly resends what eager forwarding
    /// already delivered: at 10% loss and N = 1 000, 3 doubled bytes per round (see
    /// docs/benchmarks.md (Gossip section)).
    pub retransmit_mult: f64,
    /// Nodes that watch each node's heartbeats directly (its successors in id order).
    /// Default 5: a crash is convicted by a majority of them (3).
    pub monitors: usize,
    /// Phi above which a watched node is locally suspected. Default 8 (P(false) ≈ 1e-8 per
    /// check under the assumed normal distribution).
    pub phi_threshold: f64,
    /// Heartbeat inter-arrival samples kept per watched node. Default 100.
    pub phi_window: usize,
    /// Floor on the standard deviation of inter-arrival times, so that a perfectly regular
    /// history does not make one late heartbeat look fatal. Default `interval_ms / 4`.
    pub phi_min_std_dev_ms: u64,
    /// Silence beyond the mean interval tolerated before phi starts to climb (Akka's
    /// acceptable pause). Default one interval: one lost heartbeat is never suspicious,
    /// and at 10% loss a false suspicion needs four in a row (p = 1e-4 per heartbeat).
    pub phi_acceptable_pause_ms: u64,
    /// A suspicion report counts toward DOWN for this long after it was received. Default
    /// 30 × interval.
    pub suspicion_validity_ms: u64,
    /// Rounds a state change counts as "hot": its node is put first in digests and pushed
    /// speculatively. Default 10. Push mode keeps a change hot for at least
    /// `ceil(3 ln(N + 1))` rounds (see docs/gossip.md, "Exchange").
    pub hot_rounds: u64,
    /// Forward newly learned rumors at once instead of waiting for the next round. Default
    /// true: a crash report then reaches every node in network latency, not rounds.
    pub eager_rumors: bool,
}

impl GossipConfig {
    /// Defaults for everything but identity and addresses.
    pub fn new(cluster_name: &str, secret: &[u8], cluster_addr: SocketAddr) -> GossipConfig {
        let interval_ms = 1_000;
        GossipConfig {
            cluster_name: cluster_name.to_string(),
            secret: secret.to_vec(),
            cluster_addr,
            seeds: Vec::new(),
            interval_ms,
            mode: GossipMode::PushPull,
            max_packet_bytes: 1_400,
            fanout: 3,
            retransmit_mult: 1.0,
            monitors: 5,
            phi_threshold: 8.0,
            phi_window: 100,
            phi_min_std_dev_ms: interval_ms / 4,
            phi_acceptable_pause_ms: interval_ms,
            suspicion_validity_ms: 30 * interval_ms,
            hot_rounds: 10,
            eager_rumors: true,
        }
    }

    /// Sets the interval and the fields whose defaults derive from it.
    pub fn with_interval_ms(mut self, interval_ms: u64) -> GossipConfig {
        self.interval_ms = interval_ms;
        self.phi_min_std_dev_ms = interval_ms / 4;
        self.phi_acceptable_pause_ms = interval_ms;
        self.suspicion_validity_ms = 30 * interval_ms;
        self
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |m: &str| Err(GossipError::Config(m.to_string()));
        if self.cluster_name.is_empty() || self.cluster_name.len() > 256 {
            return bad("cluster_name must be 1..=256 bytes");
        }
        if self.interval_ms == 0 {
            return bad("interval_ms must be > 0");
        }
        if !(crate::wire::MIN_PACKET_BUDGET_BYTES..=crate::wire::MAX_PACKET_BYTES)
            .contains(&self.max_packet_bytes)
        {
            return bad("max_packet_bytes must be within 512..=65507");
        }
        if self.fanout == 0 || self.fanout > 16 {
            return bad("fanout must be within 1..=16");
        }
        if !(self.retransmit_mult > 0.0 && self.retransmit_mult <= 20.0) {
            return bad("retransmit_mult must be within (0, 20]");
        }
        if self.monitors == 0 || self.monitors > 16 {
            return bad("monitors must be within 1..=16");
        }
        if !(self.phi_threshold >= 1.0 && self.phi_threshold <= 32.0) {
            return bad("phi_threshold must be within 1..=32");
        }
        if self.phi_window < 2 || self.phi_window > 10_000 {
            return bad("phi_window must be within 2..=10000");
        }
        if self.phi_min_std_dev_ms == 0 {
            return bad("phi_min_std_dev_ms must be > 0");
        }
        if self.suspicion_validity_ms < 2 * self.interval_ms {
            return bad("suspicion_validity_ms must be at least 2 × interval_ms");
        }
        if self.seeds.len() > 1_000 {
            return bad("at most 1000 seeds");
        }
        Ok(())
    }
}
