//! RPC limits and timings, with documented defaults and cross-field validation.

use super::frame::{HEADER_BYTES, MAX_FRAME_BYTES, MAX_FRAME_BYTES_CEILING};

/// Default bound on requests a client has in flight to one peer.
///
/// Why 1024: by Little's law, 1024 in flight at a 1 ms round trip is ~1M requests/s to one
/// peer, far beyond what a peer serves; when a peer is that far behind, queueing more only
/// adds latency to every request behind them. Each in-flight request costs a pending-map entry
/// and at most one queued frame, so the bound also caps memory per peer.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 1024;

/// Default bound on requests a server runs concurrently for one connection.
///
/// Why equal to `MAX_IN_FLIGHT_PER_PEER`: a well-behaved client never exceeds its own bound,
/// so it is never refused; a client configured higher (or a misbehaving one) is answered
/// `Overloaded` instead of growing our task count without limit.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 1024;

/// Default bound on accepted internode connections held open at once. A cluster of N nodes
/// needs about N (one per peer); the rest of the headroom absorbs reconnect churn, while a
/// flood of strangers is turned away at accept time.
pub const MAX_CONNECTIONS: usize = 1024;

/// Largest frame accepted before the handshake completes, in bytes. Handshake messages are a
/// few hundred bytes; an unauthenticated peer must not make us buffer `max_frame_bytes`.
pub const MAX_HANDSHAKE_FRAME_BYTES: u32 = 4 * 1024;

/// Limits and timings of the internode RPC layer. Every field has a documented default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    /// Largest frame sent or accepted, in bytes (default [`MAX_FRAME_BYTES`]).
    pub max_frame_bytes: u32,
    /// Client: requests in flight per peer before `call` fails with `Overloaded`
    /// (default [`MAX_IN_FLIGHT_PER_PEER`]).
    pub max_in_flight_per_peer: usize,
    /// Server: concurrent requests per connection before it answers `Overloaded`
    /// (default [`MAX_CONCURRENT_REQUESTS_PER_CONNECTION`]).
    pub max_concurrent_requests_per_connection: usize,
    /// Server: open connections accepted at once (default [`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Client: TCP connect, in ms. Default 1000: a LAN connect takes well under a millisecond,
    /// so a second means the peer is down or the network is partitioned.
    pub connect_timeout_ms: u64,
    /// Both sides: the whole handshake, in ms. Default 2000, so a peer that connects and then
    /// stays silent holds a connection slot only briefly.
    pub handshake_timeout_ms: u64,
    /// Client: first reconnect delay after a failed attempt, in ms. Default 50.
    pub backoff_base_ms: u64,
    /// Client: the cap the delay doubles up to, in ms. Default 5000: a restarted peer is
    /// found within about five seconds, while a dead one costs one connect attempt per
    /// ~5 s per node instead of one per request.
    pub backoff_max_ms: u64,
    /// Frames queued for one connection's writer. Requests are already bounded by
    /// `max_in_flight_per_peer`, responses by `max_concurrent_requests_per_connection`;
    /// this bound is their sum by default, so a send never waits for a slot that a
    /// bounded request does not hold.
    pub write_queue_frames: usize,
    /// Clock skew to a peer above which a warning is logged, in microseconds. Default
    /// 500 ms: beyond that, last-write-wins between writes a person considers sequential
    /// starts to depend on which coordinator took them.
    pub clock_skew_warn_us: u64,
    /// A peer's HLC reading further ahead of our wall clock than this, in microseconds, is
    /// not observed (only recorded as skew). Default 60 s: far beyond any NTP-synced skew,
    /// so it only stops a badly broken clock from dragging the cluster's timestamps forward
    /// for good (an HLC never goes back).
    pub max_clock_ahead_us: u64,
    /// Both sides: a client sends a frame-level Ping on each connection this often, in ms.
    /// Default 1000: one 32-byte frame per second per peer is nothing, and it lets both ends
    /// tell a quiet connection from a dead one.
    pub keepalive_interval_ms: u64,
    /// Both sides: a connection on which nothing (not even a Pong) has arrived for this long
    /// is closed, in ms. Default 5000 (five missed keepalives). Without it, a peer that
    /// vanished (power loss, partition) keeps a half-open connection for the kernel's
    /// retransmission timeout (~15 min), and every call to it waits out its full deadline
    /// instead of failing fast under reconnect backoff.
    pub peer_silence_timeout_ms: u64,
    /// Client: requests with a body above this many bytes (and every call of an `Rpc` with
    /// `LARGE = true`) travel on a second connection to the peer, so small messages never
    /// wait behind a bulk transfer. Default 64 KiB: about half a millisecond on a 1 Gbit/s
    /// link, below which head-of-line delay does not matter.
    pub large_message_bytes: u32,
}

impl Default for RpcConfig {
    fn default() -> RpcConfig {
        RpcConfig {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_in_flight_per_peer: MAX_IN_FLIGHT_PER_PEER,
            max_concurrent_requests_per_connection: MAX_CONCURRENT_REQUESTS_PER_CONNECTION,
            max_connections: MAX_CONNECTIONS,
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 2_000,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
            write_queue_frames: MAX_IN_FLIGHT_PER_PEER + MAX_CONCURRENT_REQUESTS_PER_CONNECTION,
            clock_skew_warn_us: 500_000,
            max_clock_ahead_us: 60_000_000,
            keepalive_interval_ms: 1_000,
            peer_silence_timeout_ms: 5_000,
            large_message_bytes: 64 * 1024,
        }
    }
}

/// A configuration that contradicts itself or a hard limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid rpc config: {0}")]
pub struct ConfigError(pub String);

impl RpcConfig {
    /// Checks each field and the rules between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if (self.max_frame_bytes as usize) < HEADER_BYTES + 1024 {
            return fail(format!(
                "max_frame_bytes = {} is too small to carry any real message (minimum {})",
                self.max_frame_bytes,
                HEADER_BYTES + 1024
            ));
        }
        if self.max_frame_bytes > MAX_FRAME_BYTES_CEILING {
            return fail(format!(
                "max_frame_bytes = {} is above the ceiling of {MAX_FRAME_BYTES_CEILING}",
                self.max_frame_bytes
            ));
        }
        if self.max_frame_bytes < MAX_HANDSHAKE_FRAME_BYTES {
            return fail("max_frame_bytes must be at least the handshake frame limit".into());
        }
        for (name, v) in [
            ("max_in_flight_per_peer", self.max_in_flight_per_peer),
            (
                "max_concurrent_requests_per_connection",
                self.max_concurrent_requests_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("write_queue_frames", self.write_queue_frames),
        ] {
            if v == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        for (name, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("backoff_base_ms", self.backoff_base_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
        ] {
            if v == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return fail(format!(
                "backoff_max_ms ({}) is below backoff_base_ms ({})",
                self.backoff_max_ms, self.backoff_base_ms
            ));
        }
        if self.large_message_bytes > self.max_frame_bytes {
            return fail(format!(
                "large_message_bytes ({}) exceeds max_frame_bytes ({})",
                self.large_message_bytes, self.max_frame_bytes
            ));
        }
        if self.max_clock_ahead_us < self.clock_skew_warn_us {
            return fail(format!(
                "max_clock_ahead_us ({}) is below clock_skew_warn_us ({}): clocks would be \
                 ignored before anyone is warned",
                self.max_clock_ahead_us, self.clock_skew_warn_us
            ));
        }
        if self.peer_silence_timeout_ms <= self.keepalive_interval_ms {
            return fail(format!(
                "peer_silence_timeout_ms ({}) must exceed keepalive_interval_ms ({}), or \
                 healthy idle connections would be closed",
                self.peer_silence_timeout_ms, self.keepalive_interval_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_contradictions_are_named() {
        RpcConfig::default().validate().unwrap();
        let c = RpcConfig {
            backoff_max_ms: 1,
            ..RpcConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("backoff_max_ms"));
        let c = RpcConfig {
            max_frame_bytes: u32::MAX,
            ..RpcConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("ceiling"));
        let c = RpcConfig {
            max_in_flight_per_peer: 0,
            ..RpcConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .0
                .contains("max_in_flight_per_peer")
        );
    }
}
