//! Pieces shared by both ends of a connection: the shared context, the writer task, the
//! connection's close state, handshake frame I/O and clock observation.

use super::config::{ConfigError, RpcConfig};
use super::frame::{Frame, FrameError, FrameKind, decode_frame, encode_to_bytes};
use super::handshake::{HandshakeMsg, Identity};
use super::stats::{PeerClock, PeerClocks};
use super::transport::{BoxedRead, BoxedWrite};
use bytes::{Bytes, BytesMut};
use hearsay_types::{Hlc, Timestamp};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything both the client and the server of one node share.
#[derive(Debug)]
pub struct RpcContext {
    pub identity: Identity,
    pub config: RpcConfig,
    /// The node's clock: every frame sent carries a reading; every frame received advances it.
    pub hlc: Arc<Hlc>,
    /// Skew estimate per peer node.
    pub clocks: PeerClocks,
    /// What to add to our wall clock to get the cluster's time, in microseconds: 0 while our
    /// clock agrees with the majority's, the median peer offset when it does not (set by the
    /// node's clock check). HLC readings are judged against the corrected time.
    pub clock_correction_us: std::sync::atomic::AtomicI64,
    /// Test-only injected delay and loss of calls (see `hearsay_types::faults`).
    pub net_faults: Arc<hearsay_types::faults::NetFaults>,
}

impl RpcContext {
    /// Validates `config` and bundles the node's RPC identity and clock.
    pub fn new(
        identity: Identity,
        config: RpcConfig,
        hlc: Arc<Hlc>,
    ) -> Result<Arc<RpcContext>, ConfigError> {
        config.validate()?;
        Ok(Arc::new(RpcContext {
            identity,
            config,
            hlc,
            clocks: PeerClocks::default(),
            clock_correction_us: std::sync::atomic::AtomicI64::new(0),
            net_faults: Arc::default(),
        }))
    }

    /// The cluster's time as this node estimates it: its wall clock, corrected when it is
    /// known to be off, in microseconds.
    pub fn cluster_now_us(&self) -> u64 {
        let wall = self.hlc.clock().wall_micros();
        let c = self
            .clock_correction_us
            .load(std::sync::atomic::Ordering::Relaxed);
        wall.saturating_add_signed(c)
    }

    /// Advances our HLC past an authenticated peer's reading and records the skew sample.
    ///
    /// A reading more than `max_clock_ahead_us` ahead of our wall clock is recorded as skew
    /// but not observed: an HLC never goes back, so one node with a clock set a year ahead
    /// would otherwise drag every node's timestamps a year ahead, for good.
    pub(crate) fn observe(&self, clock: &PeerClock, seen: Timestamp, peer: &dyn std::fmt::Display) {
        let wall = self.cluster_now_us();
        let skew_us = i128::from(seen.0) - i128::from(wall);
        let skew_us = skew_us.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        if skew_us > 0 && skew_us.unsigned_abs() > self.config.max_clock_ahead_us {
            clock
                .ignored_ahead
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.hlc.observe(seen);
        }
        if clock.record(skew_us, self.config.clock_skew_warn_us) {
            tracing::warn!(
                %peer,
                skew_ms = skew_us / 1_000,
                threshold_ms = self.config.clock_skew_warn_us / 1_000,
                not_observed = skew_us > 0 && skew_us.unsigned_abs() > self.config.max_clock_ahead_us,
                "clock skew to peer above threshold"
            );
        }
    }

    /// The body of a Ping: our wall clock now (8 bytes, big-endian), echoed in the Pong so
    /// that the answer alone measures the peer's clock offset (see [`PeerClock`]).
    pub(crate) fn ping_body(&self) -> Bytes {
        Bytes::copy_from_slice(&self.hlc.clock().wall_micros().to_be_bytes())
    }

    /// The body of the Pong answering a Ping with body `ping`: the Ping's clock reading
    /// echoed, then our wall clock (16 bytes). A Ping without a reading (an older peer) gets
    /// an empty Pong, as before.
    pub(crate) fn pong_body(&self, ping: &[u8]) -> Bytes {
        if ping.len() != 8 {
            return Bytes::new();
        }
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(ping);
        b.extend_from_slice(&self.hlc.clock().wall_micros().to_be_bytes());
        Bytes::from(b)
    }

    /// Records the clock offset a Pong's body measures (nothing for an empty body).
    pub(crate) fn observe_pong(&self, clock: &PeerClock, body: &[u8]) {
        let Ok(b) = <[u8; 16]>::try_from(body) else {
            return;
        };
        let t0 = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let t1 = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let c = self.hlc.clock();
        if let Some(s) = super::stats::OffsetSample::measure(t0, t1, c.wall_micros(), c.monotonic())
        {
            clock.record_offset(s);
        }
    }

    /// A frame stamped with a fresh HLC reading.
    pub(crate) fn frame(&self, kind: FrameKind, request_id: u64, body: Bytes) -> Frame {
        Frame::new(kind, request_id, self.hlc.now(), body)
    }
}

/// How a connection ends: a token its tasks watch, and the first reason given.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) token: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl ConnState {
    pub(crate) fn new(token: CancellationToken) -> ConnState {
        ConnState {
            token,
            reason: Mutex::new(None),
        }
    }

    /// Closes the connection (idempotent; the first reason wins).
    pub(crate) fn close(&self, reason: impl Into<String>) {
        {
            let mut r = self.reason.lock();
            if r.is_none() {
                *r = Some(reason.into());
            }
        }
        self.token.cancel();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .lock()
            .clone()
            .unwrap_or_else(|| "connection closed".to_string())
    }
}

/// Largest batch the writer hands the kernel in one `write_all`, in bytes: big enough to
/// coalesce many small frames into one syscall, small enough not to copy a lot at once.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Writes queued frames until the connection closes; coalesces whatever is queued into one
/// write so many concurrent small requests cost few syscalls.
pub(crate) fn spawn_writer(
    mut w: BoxedWrite,
    mut rx: mpsc::Receiver<Bytes>,
    state: Arc<ConnState>,
) {
    tokio::spawn(async move {
        let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
        loop {
            let first = tokio::select! {
                _ = state.token.cancelled() => break,
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
            };
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(f) => batch.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            let res = tokio::select! {
                _ = state.token.cancelled() => break,
                r = w.write_all(&batch) => r,
            };
            if let Err(e) = res {
                state.close(format!("write failed: {e}"));
                break;
            }
            batch.clear();
            if batch.capacity() > 4 * WRITE_BATCH_BYTES {
                // One huge frame went through; do not keep its buffer for the connection's life.
                batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
            }
        }
        let _ = w.shutdown().await;
    });
}

/// Writes one handshake frame directly (before the writer task exists).
pub(crate) async fn send_handshake(
    ctx: &RpcContext,
    w: &mut BoxedWrite,
    msg: &HandshakeMsg,
) -> Result<(), String> {
    let body = postcard::to_allocvec(msg).map_err(|e| format!("cannot encode handshake: {e}"))?;
    let frame = ctx.frame(FrameKind::Handshake, 0, Bytes::from(body));
    let bytes = encode_to_bytes(&frame, ctx.config.max_frame_bytes).map_err(|e| e.to_string())?;
    w.write_all(&bytes)
        .await
        .map_err(|e| format!("write failed during handshake: {e}"))
}

/// Why reading a handshake message failed.
#[derive(Debug)]
pub(crate) enum HandshakeReadError {
    /// The bytes were bad: count under this frame-rejection reason.
    Rejected(super::frame::RejectReason, String),
    /// The stream closed or failed.
    Io(String),
}

/// Reads one handshake message; returns it with the frame's HLC reading, to be observed only
/// once the peer has proven itself.
pub(crate) async fn read_handshake(
    reader: &mut FrameReader,
) -> Result<(HandshakeMsg, Timestamp), HandshakeReadError> {
    use super::frame::RejectReason;
    match reader.next().await {
        Ok(None) => Err(HandshakeReadError::Io(
            "connection closed during handshake".into(),
        )),
        Err(e) => Err(frame_error(e)),
        Ok(Some(frame)) if frame.kind != FrameKind::Handshake => Err(HandshakeReadError::Rejected(
            RejectReason::Unexpected,
            format!("{:?} frame before the handshake completed", frame.kind),
        )),
        Ok(Some(frame)) => match postcard::from_bytes::<HandshakeMsg>(&frame.body) {
            Ok(msg) => Ok((msg, frame.hlc)),
            Err(e) => Err(HandshakeReadError::Rejected(
                RejectReason::Undecodable,
                format!("undecodable handshake message: {e}"),
            )),
        },
    }
}

fn frame_error(e: FrameError) -> HandshakeReadError {
    match e.reject_reason() {
        Some(r) => HandshakeReadError::Rejected(r, e.to_string()),
        None => HandshakeReadError::Io(e.to_string()),
    }
}

/// Bytes read from the socket at a time when no frame is in progress.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Reads frames from a socket into a buffer whose size never exceeds
/// `max(max_frame_bytes, READ_CHUNK_BYTES + header)`: the decoder sizes the buffer for a
/// frame only after checking its declared length, and this reader only grows an empty (or
/// header-only) buffer by one chunk.
#[derive(Debug)]
pub(crate) struct FrameReader<R = BoxedRead> {
    r: R,
    buf: BytesMut,
    max_frame_bytes: u32,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(r: R, max_frame_bytes: u32) -> FrameReader<R> {
        FrameReader {
            r,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            max_frame_bytes,
        }
    }

    /// Raises (or lowers) the frame limit, e.g. once the handshake has authenticated the peer.
    pub(crate) fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The next frame; `Ok(None)` on a clean end of stream (between frames). Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, self.max_frame_bytes)? {
                return Ok(Some(frame));
            }
            if self.buf.len() == self.buf.capacity() {
                // Only reached with an empty buffer or a partial length prefix: a partial
                // frame already has exactly its size reserved by the decoder.
                let mut fresh = BytesMut::with_capacity(self.buf.len() + READ_CHUNK_BYTES);
                fresh.extend_from_slice(&self.buf);
                self.buf = fresh;
            }
            if self.r.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::TruncatedAtEof {
                    buffered_bytes: self.buf.len(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::frame::{HEADER_BYTES, LENGTH_PREFIX_BYTES};
    use crate::rpc::handshake::ClusterSecret;
    use hearsay_types::{ManualClock, NodeId};
    use proptest::prelude::*;

    #[test]
    fn observed_clocks_advance_ours_unless_absurdly_far_ahead() {
        let wall = 1_700_000_000_000_000;
        let ctx = RpcContext::new(
            Identity {
                node_id: NodeId(1),
                cluster_name: "c".into(),
                secret: ClusterSecret::new(b"s".to_vec()),
            },
            RpcConfig::default(),
            Arc::new(Hlc::new(ManualClock::new(wall))),
        )
        .unwrap();
        let peer = ctx.clocks.entry(NodeId(2));
        // 2 s ahead: observed, so our next timestamp follows it; skew recorded.
        ctx.observe(&peer, Timestamp(wall + 2_000_000), &"peer");
        assert!(ctx.hlc.now().0 > wall + 2_000_000);
        assert_eq!(ctx.clocks.skew_us(NodeId(2)), Some(2_000_000));
        // Behind: nothing to advance; negative skew.
        ctx.observe(&peer, Timestamp(wall - 3_000), &"peer");
        assert_eq!(peer.skew_us(), -3_000);
        // An hour ahead: recorded, counted, not observed.
        let hour_us = 3_600_000_000;
        ctx.observe(&peer, Timestamp(wall + hour_us), &"peer");
        assert_eq!(peer.skew_us(), hour_us as i64);
        assert_eq!(peer.ignored_ahead(), 1);
        assert!(ctx.hlc.now().0 < wall + 3_000_000);
        assert_eq!(peer.samples(), 3);
    }

    const MAX: u32 = 4096;

    fn valid_frame(body_len: usize) -> Vec<u8> {
        let frame = Frame::new(
            FrameKind::Ping,
            9,
            Timestamp(1),
            Bytes::from(vec![7u8; body_len]),
        );
        encode_to_bytes(&frame, u32::MAX).unwrap().to_vec()
    }

    /// Reads everything `bytes` holds, checking the buffer bound after every step.
    async fn drain(bytes: &[u8]) -> (usize, Option<String>) {
        let mut reader = FrameReader::new(bytes, MAX);
        let bound = (MAX as usize).max(READ_CHUNK_BYTES + LENGTH_PREFIX_BYTES);
        let mut frames = 0;
        loop {
            let r = reader.next().await;
            assert!(
                reader.buf.capacity() <= bound,
                "buffer grew to {} bytes, bound {bound}",
                reader.buf.capacity()
            );
            match r {
                Ok(Some(_)) => frames += 1,
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn reads_back_to_back_frames_and_stops_cleanly() {
        let mut bytes = valid_frame(10);
        bytes.extend(valid_frame(MAX as usize - HEADER_BYTES));
        bytes.extend(valid_frame(0));
        assert_eq!(block_on(drain(&bytes)), (3, None));
        let mut cut = valid_frame(100);
        cut.truncate(50);
        let (n, err) = block_on(drain(&cut));
        assert_eq!(n, 0);
        assert!(err.unwrap().contains("ended inside a frame"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes, alone or after valid frames, never panic the reader and never make
        /// its buffer exceed the bound.
        #[test]
        fn random_bytes_never_panic_or_overallocate(
            prefix_frames in 0usize..3,
            body_len in 0usize..5000,
            junk in proptest::collection::vec(any::<u8>(), 0..10_000),
        ) {
            let mut bytes = Vec::new();
            for _ in 0..prefix_frames {
                bytes.extend(valid_frame(body_len.min(MAX as usize - HEADER_BYTES)));
            }
            bytes.extend(&junk);
            let (frames, _) = block_on(drain(&bytes));
            prop_assert!(frames >= prefix_frames);
        }
    }
}
