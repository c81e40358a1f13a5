//! The gossip wire format (documented in `docs/gossip.md`).
//!
//! ```text
//! offset 0        version byte (WIRE_VERSION)
//! offset 1..9     cluster id: first 8 bytes of SHA-256(cluster name)
//! offset 9..n-16  postcard(Message)
//! offset n-16..n  HMAC-SHA256(secret, bytes[0..n-16]) truncated to 16 bytes
//! ```
//! Decoding checks, in order: length bounds, version, cluster id, MAC, postcard, then
//! the named count and size limits. Each failure is a distinct [`DropReason`].

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use hearsay_types::NodeId;

/// Version of the packet layout; bumped on any incompatible change.
pub const WIRE_VERSION: u8 = 1;
/// Bytes of the cluster id in the header.
pub const CLUSTER_ID_BYTES: usize = 8;
/// Bytes of the truncated HMAC tag. 128 bits: a forger needs ~2^128 tries per packet, and
/// tags are checked online (no offline oracle), so the full 256 bits would only cost 16
/// bytes of every datagram's budget.
pub const MAC_TAG_BYTES: usize = 16;
/// Version byte plus cluster id.
pub const HEADER_BYTES: usize = 1 + CLUSTER_ID_BYTES;
/// The largest payload of one IPv4 UDP datagram; nothing larger can be a gossip packet.
pub const MAX_PACKET_BYTES: usize = 65_507;
/// Smallest configurable packet budget: one node's digest plus a few entries must fit.
pub const MIN_PACKET_BUDGET_BYTES: usize = 512;
/// Most digest entries one packet may carry (a 64 KiB packet holds ~2 400 of ~27 bytes).
pub const MAX_DIGEST_ENTRIES: usize = 4_096;
/// Most node deltas in one packet.
pub const MAX_DELTAS: usize = 4_096;
/// Most versioned entries in one node delta.
pub const MAX_ENTRIES_PER_DELTA: usize = 4_096;
/// Most rumors in one packet.
pub const MAX_RUMORS: usize = 1_024;
/// Longest free-form state key: keys are names, not data.
pub const MAX_KEY_BYTES: usize = 128;
/// Largest state value. A value must also fit one packet with its headers, so the usable
/// limit is `min(MAX_VALUE_BYTES, max_packet_bytes - VALUE_OVERHEAD_BYTES)`.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Bytes a packet spends around one value (header, sender, delta fields, MAC), rounded up.
pub const VALUE_OVERHEAD_BYTES: usize = 160;

/// A node id on the wire: 16 fixed bytes (postcard would spend up to 19 on a varint u128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WireId(pub [u8; 16]);

impl From<NodeId> for WireId {
    fn from(id: NodeId) -> WireId {
        WireId(id.0.to_be_bytes())
    }
}

impl From<WireId> for NodeId {
    fn from(id: WireId) -> NodeId {
        NodeId(u128::from_be_bytes(id.0))
    }
}

/// The key of one application state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateKey {
    /// [`crate::MemberStatus`] as text: JOINING, NORMAL, LEAVING, LEFT, REMOVED.
    Status,
    /// The node's ring tokens (encoding owned by the ring crate).
    Tokens,
    /// Data-centre name.
    Dc,
    /// Rack name.
    Rack,
    /// RESP client address.
    ClientAddr,
    /// HTTP admin address.
    AdminAddr,
    /// Cluster (gossip/RPC) address; the gossip layer sends to it.
    ClusterAddr,
    /// Load (bytes stored), as text.
    Load,
    /// Schema version.
    SchemaVersion,
    /// A wall-clock reading (microseconds), for skew estimation.
    Clock,
    /// Free-form keys for later features.
    Custom(String),
}

impl StateKey {
    /// The name shown in the membership view.
    pub fn name(&self) -> String {
        match self {
            StateKey::Status => "status".into(),
            StateKey::Tokens => "tokens".into(),
            StateKey::Dc => "dc".into(),
            StateKey::Rack => "rack".into(),
            StateKey::ClientAddr => "client_addr".into(),
            StateKey::AdminAddr => "admin_addr".into(),
            StateKey::ClusterAddr => "cluster_addr".into(),
            StateKey::Load => "load".into(),
            StateKey::SchemaVersion => "schema_version".into(),
            StateKey::Clock => "clock".into(),
            StateKey::Custom(s) => format!("x-{s}"),
        }
    }
}

/// Who sent a packet. Every packet is also a heartbeat of its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's id.
    pub node: WireId,
    /// The sender's generation.
    pub generation: u64,
    /// The sender's heartbeat counter at send time.
    pub heartbeat: u64,
}

/// What a node knows about one node: `(node, generation, heartbeat, max version)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The node described.
    pub node: WireId,
    /// Its generation as known.
    pub generation: u64,
    /// Its heartbeat as known.
    pub heartbeat: u64,
    /// Highest version up to which every entry is known.
    pub max_version: u64,
    /// The node is tombstoned at `generation`.
    pub removed: bool,
}

/// A digest: entries plus, optionally, an id range for which the digest is complete (a node
/// in that range and absent from the entries is unknown to the sender).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Inclusive `(lo, hi)` range of ids, wrapping when `lo > hi`.
    pub complete_range: Option<(WireId, WireId)>,
    /// The entries.
    pub entries: Vec<DigestEntry>,
}

/// One versioned application state on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The key.
    pub key: StateKey,
    /// The origin node's version of this write.
    pub version: u64,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// Part of a node's state: every entry with a version in `(from_version, to_version]`, in
/// version order. A receiver that already holds everything up to `from_version` may
/// advance its max version to `to_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDelta {
    /// The node described.
    pub node: WireId,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat as known by the sender.
    pub heartbeat: u64,
    /// A REMOVED tombstone for every generation up to `generation` (entries are empty).
    pub removed: bool,
    /// Exclusive lower bound of the versions covered.
    pub from_version: u64,
    /// Inclusive upper bound of the versions covered.
    pub to_version: u64,
    /// The entries, ascending by version.
    pub entries: Vec<WireEntry>,
}

/// A new fact pushed by rumor mongering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rumor {
    /// A state change, a heartbeat refutation (no entries) or a tombstone.
    Delta(NodeDelta),
    /// `reporter` suspects `target` as of `(generation, heartbeat)`.
    Suspicion {
        /// The suspected node.
        target: WireId,
        /// Its generation as known by the reporter.
        generation: u64,
        /// Its heartbeat as known by the reporter.
        heartbeat: u64,
        /// The node whose failure detector fired.
        reporter: WireId,
    },
    /// A DOWN verdict: a majority of `target`'s monitors reported it as of `heartbeat`.
    /// Spread so that nodes that missed reports still converge; refuted by any newer
    /// heartbeat.
    Down {
        /// The convicted node.
        target: WireId,
        /// Its generation.
        generation: u64,
        /// The newest heartbeat of it known at conviction.
        heartbeat: u64,
    },
}

/// The body of a packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Opens an exchange (pull and push-pull).
    Syn {
        /// What the initiator knows.
        digest: Digest,
    },
    /// Answers a Syn: what the initiator lacks, plus (push-pull) what the responder lacks.
    Ack {
        /// Entries newer than the initiator's.
        deltas: Vec<NodeDelta>,
        /// The responder's own versions where the initiator is newer (push-pull only).
        request: Vec<DigestEntry>,
    },
    /// Final push of a push-pull exchange.
    Ack2 {
        /// Entries newer than the responder's.
        deltas: Vec<NodeDelta>,
    },
    /// Push mode: unsolicited states; no answer.
    Push {
        /// The pushed states.
        deltas: Vec<NodeDelta>,
    },
    /// A bare heartbeat to a monitor (rumors may ride along).
    Ping,
}

/// A whole gossip message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub sender: Sender,
    /// What it says.
    pub body: Body,
    /// Rumors riding along.
    pub rumors: Vec<Rumor>,
}

/// Why a received packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than header plus tag.
    #[error("packet too short")]
    TooShort,
    /// Longer than any UDP payload.
    #[error("packet too long")]
    TooLong,
    /// Unknown version byte.
    #[error("unknown wire version")]
    BadVersion,
    /// Cluster id of another cluster.
    #[error("packet from another cluster")]
    OtherCluster,
    /// MAC mismatch: wrong secret or tampered bytes.
    #[error("bad MAC")]
    BadMac,
    /// The body does not decode.
    #[error("malformed body")]
    Malformed,
    /// A count or size exceeds its named limit.
    #[error("limit exceeded")]
    LimitExceeded,
    /// Sent by this very node (a loop or a seed list naming ourselves).
    #[error("packet from self")]
    FromSelf,
}

/// Encodes and authenticates packets for one cluster.
#[derive(Clone)]
pub struct Codec {
    cluster_id: [u8; CLUSTER_ID_BYTES],
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Codec")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// The 8-byte cluster id of a cluster name.
pub fn cluster_id(cluster_name: &str) -> [u8; CLUSTER_ID_BYTES] {
    let h = Sha256::digest(cluster_name.as_bytes());
    let mut id = [0u8; CLUSTER_ID_BYTES];
    id.copy_from_slice(&h[..CLUSTER_ID_BYTES]);
    id
}

impl Codec {
    /// A codec for `cluster_name` keyed by `secret`.
    pub fn new(cluster_name: &str, secret: &[u8]) -> Codec {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key
        // rather than panic should that ever change.
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(&[]).expect("empty key"));
        Codec {
            cluster_id: cluster_id(cluster_name),
            mac,
        }
    }

    /// Serialises and seals a message.
    pub fn encode(&self, msg: &Message) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        buf.push(WIRE_VERSION);
        buf.extend_from_slice(&self.cluster_id);
        // Serialising into a Vec cannot fail for these types.
        let mut buf = postcard::to_extend(msg, buf).unwrap_or_else(|_| {
            let mut b = vec![WIRE_VERSION];
            b.extend_from_slice(&self.cluster_id);
            b
        });
        let mut mac = self.mac.clone();
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        buf.extend_from_slice(&tag[..MAC_TAG_BYTES]);
        buf
    }

    /// Seals arbitrary body bytes with a valid header and MAC. For fuzzing and tests: it
    /// lets random bodies reach the postcard decoder past the MAC check.
    pub fn seal_raw(&self, body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEADER_BYTES + body.len() + MAC_TAG_BYTES);
        buf.push(WIRE_VERSION);
        buf.extend_from_slice(&self.cluster_id);
        buf.extend_from_slice(body);
        let mut mac = self.mac.clone();
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        buf.extend_from_slice(&tag[..MAC_TAG_BYTES]);
        buf
    }

    /// Checks and decodes a packet; never panics on any input.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, DropReason> {
        if bytes.len() < HEADER_BYTES + MAC_TAG_BYTES + 1 {
            return Err(DropReason::TooShort);
        }
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(DropReason::TooLong);
        }
        if bytes[0] != WIRE_VERSION {
            return Err(DropReason::BadVersion);
        }
        if bytes[1..HEADER_BYTES] != self.cluster_id {
            return Err(DropReason::OtherCluster);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_TAG_BYTES);
        let mut mac = self.mac.clone();
        mac.update(signed);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag)
            .map_err(|_| DropReason::BadMac)?;
        let (msg, rest) = postcard::take_from_bytes::<Message>(&signed[HEADER_BYTES..])
            .map_err(|_| DropReason::Malformed)?;
        if !rest.is_empty() {
            return Err(DropReason::Malformed);
        }
        check_limits(&msg)?;
        Ok(msg)
    }
}

fn check_delta(d: &NodeDelta) -> Result<(), DropReason> {
    if d.entries.len() > MAX_ENTRIES_PER_DELTA || d.from_version > d.to_version {
        return Err(DropReason::LimitExceeded);
    }
    let mut prev = d.from_version;
    for e in &d.entries {
        if let StateKey::Custom(k) = &e.key
            && k.len() > MAX_KEY_BYTES
        {
            return Err(DropReason::LimitExceeded);
        }
        if e.value.len() > MAX_VALUE_BYTES {
            return Err(DropReason::LimitExceeded);
        }
        // Entries must ascend strictly inside (from, to]; anything else is a forged or
        // broken delta and would corrupt the max-version invariant.
        if e.version <= prev || e.version > d.to_version {
            return Err(DropReason::Malformed);
        }
        prev = e.version;
    }
    if d.removed && !d.entries.is_empty() {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

fn check_limits(msg: &Message) -> Result<(), DropReason> {
    if msg.rumors.len() > MAX_RUMORS {
        return Err(DropReason::LimitExceeded);
    }
    for r in &msg.rumors {
        if let Rumor::Delta(d) = r {
            check_delta(d)?;
        }
    }
    match &msg.body {
        Body::Syn { digest } => {
            if digest.entries.len() > MAX_DIGEST_ENTRIES {
                return Err(DropReason::LimitExceeded);
            }
        }
        Body::Ack { deltas, request } => {
            if deltas.len() > MAX_DELTAS || request.len() > MAX_DIGEST_ENTRIES {
                return Err(DropReason::LimitExceeded);
            }
            deltas.iter().try_for_each(check_delta)?;
        }
        Body::Ack2 { deltas } | Body::Push { deltas } => {
            if deltas.len() > MAX_DELTAS {
                return Err(DropReason::LimitExceeded);
            }
            deltas.iter().try_for_each(check_delta)?;
        }
        Body::Ping => {}
    }
    Ok(())
}

/// Encoded size of a value in bytes (postcard), for budgeting.
pub fn encoded_len<T: Serialize>(v: &T) -> usize {
    postcard::experimental::serialized_size(v).unwrap_or(usize::MAX / 4)
}

/// Slack for varint length prefixes growing as a message's vectors fill.
pub(crate) const LEN_PREFIX_SLACK_BYTES: usize = 8;

/// Bytes left for contents in a packet of at most `max_packet_bytes` from `sender` whose
/// body is `empty_body` (its vectors empty). Depends on the sender: its heartbeat is a
/// varint that grows.
pub(crate) fn budget_left(max_packet_bytes: usize, sender: Sender, empty_body: &Body) -> usize {
    let empty = Message {
        sender,
        body: empty_body.clone(),
        rumors: Vec::new(),
    };
    let base = encoded_len(&empty) + HEADER_BYTES + MAC_TAG_BYTES + LEN_PREFIX_SLACK_BYTES;
    max_packet_bytes.saturating_sub(base)
}
