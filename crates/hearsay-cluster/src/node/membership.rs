//! The node's view of the cluster: a [`Membership`] snapshot (built from gossip, or by hand in
//! tests) and the [`RingView`] every request routes by, computed from it as a pure function.
//!
//! Every node that holds the same member states computes the same ring: only NORMAL members
//! with tokens form the ring; JOINING members with tokens are `Transition::Join`; LEAVING
//! members are `Transition::Leave`. Liveness does not change placement (a down replica stays
//! a replica; the coordinator hints it instead).

use super::schema::{KeyspaceDef, Schema};
use hearsay_ring::{Member, ReplicaMap, Ring, Transition};
use hearsay_types::{NodeId, Token};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// Most tokens one member may announce in gossip: 11 characters each (see
/// [`encode_tokens`]) within the gossip layer's ~1 240-byte value limit at the default
/// 1 400-byte datagram.
pub const MAX_GOSSIP_TOKENS: usize = 112;

/// Bytes per encoded token: 8 bytes in unpadded base64url.
const TOKEN_TEXT_BYTES: usize = 11;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes tokens for the gossip `Tokens` state: each token's 8 big-endian bytes (offset so
/// that the text sorts like the tokens) as 11 base64url characters, concatenated. Text, so
/// the gossip membership view shows it faithfully; fixed width, so no separators.
pub fn encode_tokens(tokens: &[Token]) -> String {
    let mut out = String::with_capacity(tokens.len() * TOKEN_TEXT_BYTES);
    for t in tokens {
        let v = (t.0 as u64) ^ (1 << 63);
        // 64 bits as 11 six-bit digits, most significant first (the first digit holds 4 bits).
        for i in (0..TOKEN_TEXT_BYTES).rev() {
            let digit = ((v >> (6 * i)) & 63) as usize;
            out.push(B64[digit] as char);
        }
    }
    out
}

/// Decodes [`encode_tokens`]; `None` on any malformed input (wrong length, bad digit, a
/// value over 64 bits, too many tokens).
pub fn decode_tokens(text: &str) -> Option<Vec<Token>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(TOKEN_TEXT_BYTES)
        || bytes.len() / TOKEN_TEXT_BYTES > MAX_GOSSIP_TOKENS
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / TOKEN_TEXT_BYTES);
    for chunk in bytes.chunks(TOKEN_TEXT_BYTES) {
        let mut v: u128 = 0;
        for &c in chunk {
            let d = B64.iter().position(|&b| b == c)? as u128;
            v = (v << 6) | d;
        }
        let v = u64::try_from(v).ok()?;
        out.push(Token((v ^ (1 << 63)) as i64));
    }
    Some(out)
}

/// A member's ring status, from its gossip `Status` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum RingStatus {
    /// No status yet (still choosing tokens): not in the ring.
    Unknown,
    Joining,
    Normal,
    Leaving,
    Left,
    Removed,
}

impl RingStatus {
    /// Parses gossip's status text.
    pub fn parse(s: &str) -> RingStatus {
        match s {
            "JOINING" => RingStatus::Joining,
            "NORMAL" => RingStatus::Normal,
            "LEAVING" => RingStatus::Leaving,
            "LEFT" => RingStatus::Left,
            "REMOVED" => RingStatus::Removed,
            _ => RingStatus::Unknown,
        }
    }

    /// The second letter of `nodetool status`: N, J, L (M for moving is not used).
    pub fn letter(self) -> char {
        match self {
            RingStatus::Joining => 'J',
            RingStatus::Normal => 'N',
            RingStatus::Leaving | RingStatus::Left => 'L',
            RingStatus::Removed => 'R',
            RingStatus::Unknown => '?',
        }
    }
}

/// Liveness as the coordinator uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Live {
    Up,
    /// Suspected by some monitor, not yet convicted: still counted alive (see docs/cluster.md).
    Suspect,
    Down,
    Removed,
}

/// One member's facts, as gossip (or a test) states them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub status: RingStatus,
    pub live: Live,
    pub dc: String,
    pub rack: String,
    pub weight: u32,
    pub tokens: Vec<Token>,
    pub cluster_addr: Option<SocketAddr>,
    pub client_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub schema_version: Option<String>,
    /// Bytes stored, as the member announces it.
    pub load_bytes: Option<u64>,
    pub generation: u64,
    pub heartbeat: u64,
    pub phi: Option<f64>,
    /// Health codes the member gossips (see `node::health`); empty when healthy.
    pub health: Vec<String>,
}

impl MemberInfo {
    /// A NORMAL, UP member (for tests).
    pub fn normal(id: NodeId, addr: SocketAddr, tokens: Vec<Token>) -> MemberInfo {
        MemberInfo {
            id,
            status: RingStatus::Normal,
            live: Live::Up,
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            tokens,
            cluster_addr: Some(addr),
            client_addr: None,
            admin_addr: None,
            schema_version: None,
            load_bytes: None,
            generation: 1,
            heartbeat: 0,
            phi: None,
            health: Vec::new(),
        }
    }

    /// Counted alive by the coordinator: anything but DOWN or REMOVED.
    pub fn is_alive(&self) -> bool {
        matches!(self.live, Live::Up | Live::Suspect)
    }
}

/// Every member this node knows, itself included.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, MemberInfo>,
}

impl Membership {
    /// From the gossip driver's membership view. Members whose states do not parse keep
    /// defaults (no tokens, unknown status): they simply stay out of the ring.
    pub fn from_gossip(view: &hearsay_gossip::driver::MembershipView) -> Membership {
        let mut members = BTreeMap::new();
        for m in &view.members {
            let Some(id) = NodeId::parse(&m.node_id) else {
                continue;
            };
            let st = |k: &str| m.states.get(k).map(String::as_str);
            let addr = |k: &str| st(k).and_then(|s| s.parse::<SocketAddr>().ok());
            let live = match m.liveness {
                hearsay_gossip::Liveness::Up => Live::Up,
                hearsay_gossip::Liveness::Suspect => Live::Suspect,
                hearsay_gossip::Liveness::Down => Live::Down,
                hearsay_gossip::Liveness::Removed => Live::Removed,
            };
            let status = if live == Live::Removed {
                RingStatus::Removed
            } else {
                m.status
                    .as_deref()
                    .map_or(RingStatus::Unknown, RingStatus::parse)
            };
            members.insert(
                id,
                MemberInfo {
                    id,
                    status,
                    live,
                    dc: st("dc").unwrap_or("dc1").to_string(),
                    rack: st("rack").unwrap_or("rack1").to_string(),
                    weight: st("x-weight").and_then(|w| w.parse().ok()).unwrap_or(1),
                    tokens: st("tokens").and_then(decode_tokens).unwrap_or_default(),
                    cluster_addr: m.cluster_addr.or_else(|| addr("cluster_addr")),
                    client_addr: addr("client_addr"),
                    admin_addr: addr("admin_addr"),
                    schema_version: st("schema_version").map(str::to_string),
                    load_bytes: st("load").and_then(|l| l.parse().ok()),
                    generation: m.generation,
                    heartbeat: m.heartbeat,
                    phi: m.phi,
                    health: st("x-health")
                        .map(super::health::parse_codes)
                        .unwrap_or_default(),
                },
            );
        }
        Membership { members }
    }

    /// The ring (NORMAL members with tokens) and the transitions in progress. Members whose
    /// facts the ring refuses (bad weight, oversized names) are left out and logged.
    pub fn ring_and_transitions(&self) -> (Ring, Vec<Transition>) {
        let as_member = |m: &MemberInfo| Member {
            id: m.id,
            dc: m.dc.clone(),
            rack: m.rack.clone(),
            weight: m.weight,
            tokens: m.tokens.clone(),
        };
        let mut normal = Vec::new();
        let mut transitions = Vec::new();
        for m in self.members.values() {
            if m.tokens.is_empty() {
                continue;
            }
            match m.status {
                RingStatus::Normal => normal.push(as_member(m)),
                RingStatus::Leaving => {
                    normal.push(as_member(m));
                    transitions.push(Transition::Leave(m.id));
                }
                RingStatus::Joining => transitions.push(Transition::Join(as_member(m))),
                _ => {}
            }
        }
        let ring = match Ring::new(normal.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "invalid member in gossip; building the ring without the invalid ones");
                Ring::new(
                    normal
                        .into_iter()
                        .filter(|m| Ring::new([m.clone()]).is_ok()),
                )
                .unwrap_or_default()
            }
        };
        transitions.retain(|t| match t {
            Transition::Join(m) => Ring::new([m.clone()]).is_ok(),
            Transition::Leave(id) => ring.member(*id).is_some(),
        });
        (ring, transitions)
    }
}

/// Routing for one keyspace.
#[derive(Clone, Debug)]
pub struct KeyspaceRoute {
    pub def: KeyspaceDef,
    pub map: Arc<ReplicaMap>,
}

/// Everything a request needs, swapped atomically as a whole when gossip or the schema
/// changes: the membership, the ring, per-keyspace replica maps, addresses and liveness.
#[derive(Clone, Debug)]
pub struct RingView {
    pub local: NodeId,
    pub membership: Membership,
    pub ring: Ring,
    pub routes: BTreeMap<String, KeyspaceRoute>,
    /// Members counted alive for consistency (not DOWN, not REMOVED).
    pub alive: BTreeSet<NodeId>,
    /// Members gossip shows UP (hint replay waits for UP, not merely not-DOWN).
    pub up: BTreeSet<NodeId>,
    /// Members whose storage cannot take writes (poisoned, disk full; see `node::health`):
    /// left out of writes (hinted) while other replicas can serve.
    pub unfit: BTreeSet<NodeId>,
    /// Members read only when the others cannot meet the level: `unfit` ones, and those
    /// that lost their data and are not repaired yet.
    pub read_unfit: BTreeSet<NodeId>,
}

impl RingView {
    /// Builds the view. Pure: the same inputs give the same routes on every node.
    pub fn build(local: NodeId, membership: Membership, schema: &Schema) -> RingView {
        let (ring, transitions) = membership.ring_and_transitions();
        let mut routes = BTreeMap::new();
        for def in schema.live_defs() {
            match ReplicaMap::new(&ring, &def.strategy, &transitions) {
                Ok(map) => {
                    routes.insert(
                        def.name.clone(),
                        KeyspaceRoute {
                            def: def.clone(),
                            map: Arc::new(map),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(keyspace = %def.name, error = %e, "cannot route keyspace");
                }
            }
        }
        let alive = membership
            .members
            .values()
            .filter(|m| m.is_alive() || m.id == local)
            .map(|m| m.id)
            .collect();
        let up = membership
            .members
            .values()
            .filter(|m| m.live == Live::Up || m.id == local)
            .map(|m| m.id)
            .collect();
        let unfit = membership
            .members
            .values()
            .filter(|m| super::health::unfit_replica(&m.health))
            .map(|m| m.id)
            .collect();
        let read_unfit = membership
            .members
            .values()
            .filter(|m| super::health::unfit_for_reads(&m.health))
            .map(|m| m.id)
            .collect();
        RingView {
            local,
            membership,
            ring,
            routes,
            alive,
            up,
            unfit,
            read_unfit,
        }
    }

    /// Alive members whose storage can take writes.
    pub fn fit_alive(&self) -> BTreeSet<NodeId> {
        self.alive.difference(&self.unfit).copied().collect()
    }

    /// `replicas` with the unfit ones moved to the end (order otherwise kept), so that a read
    /// plan takes them only when the others cannot meet the level.
    pub fn by_fitness(&self, mut replicas: Vec<NodeId>) -> Vec<NodeId> {
        if !self.read_unfit.is_empty() {
            replicas.sort_by_key(|n| self.read_unfit.contains(n));
        }
        replicas
    }

    /// A member's internode address.
    pub fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.membership
            .members
            .get(&node)
            .and_then(|m| m.cluster_addr)
    }

    /// Data-centre placement for the DC-aware levels.
    pub fn dc_info(&self) -> crate::quorum::DcInfo {
        crate::quorum::DcInfo {
            dc_of: self
                .membership
                .members
                .values()
                .map(|m| (m.id, m.dc.clone()))
                .collect(),
            local_dc: self
                .membership
                .members
                .get(&self.local)
                .map_or_else(|| "dc1".to_string(), |m| m.dc.clone()),
        }
    }

    /// `replicas` ordered closest first: this node, then its rack, then its DC, then the
    /// rest, each group in preference-list order (a stable order, so the data read goes to
    /// the same replica and its cache stays warm).
    pub fn by_proximity(&self, replicas: &[NodeId]) -> Vec<NodeId> {
        let me = self.membership.members.get(&self.local);
        let distance = |n: &NodeId| -> u8 {
            if *n == self.local {
                return 0;
            }
            match (me, self.membership.members.get(n)) {
                (Some(a), Some(b)) if a.dc == b.dc && a.rack == b.rack => 1,
                (Some(a), Some(b)) if a.dc == b.dc => 2,
                _ => 3,
            }
        };
        let mut out = replicas.to_vec();
        out.sort_by_key(distance);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tokens_round_trip_and_garbage_is_rejected(
            raw in proptest::collection::vec(any::<i64>(), 0..MAX_GOSSIP_TOKENS),
            junk in ".{0,40}",
        ) {
            let tokens: Vec<Token> = raw.into_iter().map(Token).collect();
            let text = encode_tokens(&tokens);
            prop_assert_eq!(text.len(), tokens.len() * TOKEN_TEXT_BYTES);
            prop_assert_eq!(decode_tokens(&text), Some(tokens));
            // Never panics on anything.
            let _ = decode_tokens(&junk);
        }
    }

    #[test]
    fn token_text_sorts_like_tokens_and_rejects_overflow() {
        let a = encode_tokens(&[Token(i64::MIN)]);
        let b = encode_tokens(&[Token(-1)]);
        let c = encode_tokens(&[Token(0)]);
        let d = encode_tokens(&[Token(i64::MAX)]);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        // 11 digits of 6 bits hold 66 bits: a first digit above 15 overflows 64 bits.
        assert_eq!(decode_tokens("_AAAAAAAAAA"), None);
        assert_eq!(decode_tokens("AAAA"), None);
        assert_eq!(decode_tokens("AAAAAAAAAA*"), None);
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn ring_has_normal_members_and_joining_ones_are_pending() {
        let a = NodeId(1);
        let b = NodeId(2);
        let c = NodeId(3);
        let mut ms = Membership::default();
        ms.members.insert(
            a,
            MemberInfo::normal(a, addr(1), vec![Token(-100), Token(100)]),
        );
        ms.members
            .insert(b, MemberInfo::normal(b, addr(2), vec![Token(0)]));
        let mut joining = MemberInfo::normal(c, addr(3), vec![Token(50)]);
        joining.status = RingStatus::Joining;
        ms.members.insert(c, joining);
        let mut down = MemberInfo::normal(NodeId(4), addr(4), vec![]);
        down.live = Live::Down;
        ms.members.insert(NodeId(4), down);
        let schema = Schema::with_default(1);
        let view = RingView::build(a, ms, &schema);
        assert_eq!(view.ring.len(), 2);
        let route = &view.routes["default"];
        // Token 50 belongs to a (next token clockwise is 100); c joins at 50 and takes (0, 50].
        let ep = route.map.write_endpoints(Token(40));
        assert_eq!(ep.natural, &[a]);
        assert_eq!(ep.pending, &[c]);
        assert!(!view.alive.contains(&NodeId(4)));
        assert!(view.alive.contains(&a));
        assert_eq!(view.by_proximity(&[b, a]), vec![a, b]);
    }
}
