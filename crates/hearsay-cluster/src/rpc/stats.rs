//! Counters: per peer on the client side, per server, and clock skew per node. Plain atomics,
//! written on the hot path with relaxed ordering (each counter is independent) and read by
//! `snapshot()` for the admin API and tests.

use super::error::RpcErrorKind;
use super::frame::RejectReason;
use hearsay_types::NodeId;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A counter per frame rejection reason.
#[derive(Debug, Default)]
pub struct RejectCounters([AtomicU64; RejectReason::ALL.len()]);

impl RejectCounters {
    pub(crate) fn inc(&self, reason: RejectReason) {
        self.0[reason as usize].fetch_add(1, Relaxed);
    }
    /// Reasons with a non-zero count.
    pub fn snapshot(&self) -> BTreeMap<RejectReason, u64> {
        RejectReason::ALL
            .into_iter()
            .map(|r| (r, self.0[r as usize].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Client-side counters for one peer address.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub(crate) requests: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) errors: [AtomicU64; RpcErrorKind::ALL.len()],
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) fast_failures_backoff: AtomicU64,
    pub(crate) late_responses: AtomicU64,
    pub(crate) closed_silent: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) frames_rejected: RejectCounters,
    /// The peer's node id once a handshake proved it (`None` before).
    pub(crate) node_id: Mutex<Option<NodeId>>,
}

/// A point-in-time copy of [`PeerStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatsSnapshot {
    pub node_id: Option<NodeId>,
    /// Calls started (including those failed fast).
    pub requests: u64,
    pub successes: u64,
    /// Failed calls by kind (kinds with a zero count are left out).
    pub errors: BTreeMap<RpcErrorKind, u64>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Calls currently waiting for an answer.
    pub in_flight: u64,
    /// Handshakes completed (first connection included).
    pub connects: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Calls failed without a connect attempt because the peer is in backoff.
    pub fast_failures_backoff: u64,
    /// Answers that arrived after their caller gave up; discarded.
    pub late_responses: u64,
    /// Connections closed because the peer sent nothing for `peer_silence_timeout_ms`.
    pub closed_silent: u64,
    pub handshakes_refused: u64,
    pub frames_rejected: BTreeMap<RejectReason, u64>,
}

impl PeerStatsSnapshot {
    /// Failed calls of one kind.
    pub fn errors_of(&self, kind: RpcErrorKind) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }
}

impl PeerStats {
    pub(crate) fn error(&self, kind: RpcErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy (each counter is read once; counters are independent).
    pub fn snapshot(&self) -> PeerStatsSnapshot {
        PeerStatsSnapshot {
            node_id: *self.node_id.lock(),
            requests: self.requests.load(Relaxed),
            successes: self.successes.load(Relaxed),
            errors: RpcErrorKind::ALL
                .into_iter()
                .map(|k| (k, self.errors[k as usize].load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            bytes_out: self.bytes_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            connects: self.connects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            fast_failures_backoff: self.fast_failures_backoff.load(Relaxed),
            late_responses: self.late_responses.load(Relaxed),
            closed_silent: self.closed_silent.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            frames_rejected: self.frames_rejected.snapshot(),
        }
    }
}

/// Server-side counters (all connections).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused_limit: AtomicU64,
    pub(crate) handshakes_ok: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) responses_ok: AtomicU64,
    pub(crate) responses_error: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) deadline_dropped: AtomicU64,
    pub(crate) pings: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) closed_silent: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames_rejected: RejectCounters,
    /// Per authenticated client node. Bounded by the cluster's size: entries are made only
    /// after a handshake proved the node knows the cluster secret.
    pub(crate) peers: Mutex<BTreeMap<NodeId, Arc<ServerPeerStats>>>,
}

/// Server-side counters for one client node (all its connections).
#[derive(Debug, Default)]
pub struct ServerPeerStats {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) responses_ok: AtomicU64,
    pub(crate) responses_error: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) deadline_dropped: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// A point-in-time copy of [`ServerPeerStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerPeerStatsSnapshot {
    /// Authenticated connections from this node so far.
    pub connections: u64,
    pub requests: u64,
    pub responses_ok: u64,
    pub responses_error: u64,
    pub overloaded: u64,
    pub deadline_dropped: u64,
    /// Handlers running now for this node.
    pub running: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ServerPeerStats {
    /// A copy of every counter.
    pub fn snapshot(&self) -> ServerPeerStatsSnapshot {
        ServerPeerStatsSnapshot {
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
            responses_ok: self.responses_ok.load(Relaxed),
            responses_error: self.responses_error.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
            deadline_dropped: self.deadline_dropped.load(Relaxed),
            running: self.running.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

/// A point-in-time copy of [`ServerStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStatsSnapshot {
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Closed at accept because `max_connections` were open.
    pub connections_refused_limit: u64,
    pub handshakes_ok: u64,
    pub handshakes_refused: u64,
    pub requests: u64,
    pub responses_ok: u64,
    pub responses_error: u64,
    /// Requests answered `Overloaded` because the connection's concurrency bound was reached.
    pub overloaded: u64,
    /// Requests dropped because their caller's deadline passed (no answer sent).
    pub deadline_dropped: u64,
    pub pings: u64,
    /// Handlers that panicked (answered with an error; the connection stays up).
    pub handler_panics: u64,
    /// Connections closed because the client sent nothing for `peer_silence_timeout_ms`.
    pub closed_silent: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_rejected: BTreeMap<RejectReason, u64>,
    /// Per authenticated client node.
    pub peers: BTreeMap<NodeId, ServerPeerStatsSnapshot>,
}

impl ServerStats {
    pub(crate) fn peer(&self, node: NodeId) -> Arc<ServerPeerStats> {
        self.peers.lock().entry(node).or_default().clone()
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> ServerStatsSnapshot {
        ServerStatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused_limit: self.connections_refused_limit.load(Relaxed),
            handshakes_ok: self.handshakes_ok.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            requests: self.requests.load(Relaxed),
            responses_ok: self.responses_ok.load(Relaxed),
            responses_error: self.responses_error.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
            deadline_dropped: self.deadline_dropped.load(Relaxed),
            pings: self.pings.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            closed_silent: self.closed_silent.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            frames_rejected: self.frames_rejected.snapshot(),
            peers: self
                .peers
                .lock()
                .iter()
                .map(|(n, p)| (*n, p.snapshot()))
                .collect(),
        }
    }
}

/// Clock estimates for one peer node.
///
/// Two different measures:
/// - **The physical offset** of the peer's wall clock from ours, NTP-style: a Ping carries
///   our wall clock at send (`t0`), the Pong echoes it with the peer's wall clock when it
///   answered (`t1`), and we read ours at receipt (`t3`): `offset = t1 - (t0 + t3) / 2`, off
///   by at most half the round trip. It names the node whose clock is wrong, because it reads
///   wall clocks, not HLCs (which carry a skewed node's time from node to node).
/// - **The HLC lead**: each frame carries the sender's HLC reading, and `hlc - our wall` at
///   receipt is recorded (`skew_us`): how far the sender's timestamps run ahead of our
///   clock, whoever pushed them there.
#[derive(Debug, Default)]
pub struct PeerClock {
    pub(crate) ignored_ahead: AtomicU64,
    last_skew_us: AtomicI64,
    samples: AtomicU64,
    above_threshold: std::sync::atomic::AtomicBool,
    offset: Mutex<Option<OffsetSample>>,
    offset_samples: AtomicU64,
}

/// One physical clock-offset measurement of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetSample {
    /// The peer's wall clock minus ours, in microseconds (positive: the peer is ahead).
    pub offset_us: i64,
    /// The round trip it was measured over, in microseconds: the estimate is off by at most
    /// half of it.
    pub rtt_us: u64,
    /// When it was taken (our monotonic clock).
    pub at: std::time::Instant,
}

impl OffsetSample {
    /// From the Ping's send time `t0`, the peer's answer time `t1` and our receipt time `t3`
    /// (wall microseconds); `None` when the times are inconsistent (our clock jumped back).
    pub fn measure(t0: u64, t1: u64, t3: u64, at: std::time::Instant) -> Option<OffsetSample> {
        if t3 < t0 {
            return None;
        }
        let mid = i128::from(t0) + (i128::from(t3) - i128::from(t0)) / 2;
        let offset = (i128::from(t1) - mid).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        Some(OffsetSample {
            offset_us: offset as i64,
            rtt_us: t3 - t0,
            at,
        })
    }
}

impl PeerClock {
    /// The latest sample, in microseconds (positive: the peer is ahead of us).
    pub fn skew_us(&self) -> i64 {
        self.last_skew_us.load(Relaxed)
    }
    /// Readings not observed because they were more than `max_clock_ahead_us` ahead.
    pub fn ignored_ahead(&self) -> u64 {
        self.ignored_ahead.load(Relaxed)
    }
    /// How many samples were taken.
    pub fn samples(&self) -> u64 {
        self.samples.load(Relaxed)
    }

    /// The latest physical offset measurement, if any.
    pub fn offset(&self) -> Option<OffsetSample> {
        *self.offset.lock()
    }

    /// How many physical offset measurements were taken.
    pub fn offset_samples(&self) -> u64 {
        self.offset_samples.load(Relaxed)
    }

    /// Records a physical offset measurement.
    pub(crate) fn record_offset(&self, sample: OffsetSample) {
        *self.offset.lock() = Some(sample);
        self.offset_samples.fetch_add(1, Relaxed);
    }

    /// Records a sample; returns true when it crosses `warn_us` (above it, and the previous
    /// sample was not), so the caller warns once per excursion rather than per frame.
    pub(crate) fn record(&self, skew_us: i64, warn_us: u64) -> bool {
        self.last_skew_us.store(skew_us, Relaxed);
        self.samples.fetch_add(1, Relaxed);
        let above = skew_us.unsigned_abs() > warn_us;
        let was = self.above_threshold.swap(above, Relaxed);
        above && !was
    }
}

/// Skew per peer node, shared by the client and server sides. Entries are created only for
/// nodes that passed the handshake, so its size is bounded by the cluster's.
#[derive(Debug, Default)]
pub struct PeerClocks {
    by_node: Mutex<BTreeMap<NodeId, Arc<PeerClock>>>,
}

impl PeerClocks {
    pub(crate) fn entry(&self, node: NodeId) -> Arc<PeerClock> {
        self.by_node.lock().entry(node).or_default().clone()
    }

    /// The latest skew estimate for every peer seen, in microseconds.
    pub fn snapshot(&self) -> BTreeMap<NodeId, i64> {
        self.by_node
            .lock()
            .iter()
            .map(|(n, c)| (*n, c.skew_us()))
            .collect()
    }

    /// The latest physical offset measurement of every peer measured.
    pub fn offsets(&self) -> BTreeMap<NodeId, OffsetSample> {
        self.by_node
            .lock()
            .iter()
            .filter_map(|(n, c)| c.offset().map(|o| (*n, o)))
            .collect()
    }

    /// The latest skew estimate for one peer, if any frame from it was seen.
    pub fn skew_us(&self, node: NodeId) -> Option<i64> {
        self.by_node.lock().get(&node).map(|c| c.skew_us())
    }
}
