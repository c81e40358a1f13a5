//! The token ring: members with their vnode tokens, sorted into one array.

use crate::range::{RING_SIZE_F64, TokenRange};
use hearsay_types::{NodeId, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most vnode tokens one member may announce. Tokens arrive over gossip, so a bound keeps a
/// confused or hostile peer from making every node build a huge ring; 256 tokens × weight 16
/// is far above any sane configuration.
pub const MAX_TOKENS_PER_NODE: usize = 4096;

/// Largest `weight` a member may have. Weight multiplies `num_tokens`; 16× the smallest
/// machine is already beyond what one ring should mix.
pub const MAX_WEIGHT: u32 = 16;

/// Length limit for data-centre and rack names, in bytes: they travel in gossip and are shown
/// in `hearsay status`.
pub const MAX_LOCATION_NAME_BYTES: usize = 64;

/// One node as the ring sees it: identity, location, capacity and its vnode tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Permanent node id.
    pub id: NodeId,
    /// Data-centre name.
    pub dc: String,
    /// Rack name (scoped by `dc`: rack "r1" in two DCs are two racks).
    pub rack: String,
    /// Relative capacity: the node gets `weight × num_tokens` tokens and about `weight` times
    /// the ownership of a weight-1 node.
    pub weight: u32,
    /// The node's vnode tokens, in any order.
    pub tokens: Vec<Token>,
}

impl Member {
    /// A member with weight 1.
    pub fn new(id: NodeId, dc: &str, rack: &str, tokens: Vec<Token>) -> Member {
        Member {
            id,
            dc: dc.to_owned(),
            rack: rack.to_owned(),
            weight: 1,
            tokens,
        }
    }
}

/// Why a set of members does not make a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The same node id appears twice in the input.
    #[error("node {0} appears more than once")]
    DuplicateNode(NodeId),
    /// A member announced more than [`MAX_TOKENS_PER_NODE`] tokens.
    #[error("node {node} has {count} tokens, more than the limit of {MAX_TOKENS_PER_NODE}")]
    TooManyTokens {
        /// The member.
        node: NodeId,
        /// How many it announced.
        count: usize,
    },
    /// A member has weight 0 or above [`MAX_WEIGHT`].
    #[error("node {node} has weight {weight}; weights must be in 1..={MAX_WEIGHT}")]
    BadWeight {
        /// The member.
        node: NodeId,
        /// Its weight.
        weight: u32,
    },
    /// A DC or rack name is empty or too long.
    #[error(
        "node {0} has an empty data-centre or rack name, or one longer than {MAX_LOCATION_NAME_BYTES} bytes"
    )]
    BadLocation(NodeId),
    /// The node is not in the ring.
    #[error("node {0} is not in the ring")]
    UnknownNode(NodeId),
}

/// Two members announced the same token; `winner` (the smaller node id) owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenConflict {
    /// The contested token.
    pub token: Token,
    /// The member that owns it in this ring (smallest id).
    pub winner: NodeId,
    /// A member whose claim was ignored.
    pub loser: NodeId,
}

/// The ring: every member's vnode tokens merged into one sorted array, each mapped to its
/// owner. Immutable; a membership change builds a new ring.
///
/// Determinism: the ring is a function of the *set* of members (they are keyed by id in a
/// `BTreeMap`, whatever order they were given in). When two members claim the same token the
/// smallest node id owns it and the conflict is recorded ([`Ring::token_conflicts`]), so every
/// node resolves a clash the same way.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    members: BTreeMap<NodeId, Member>,
    /// Sorted, distinct ring tokens.
    tokens: Vec<Token>,
    /// `owners[i]` indexes `node_ids`: the owner of `tokens[i]`.
    owners: Vec<u32>,
    /// Sorted member ids; index = dense node index.
    node_ids: Vec<NodeId>,
    /// Per dense node index: index into `dcs`.
    node_dc: Vec<u32>,
    /// Per dense node index: index into `racks` (a (dc, rack) pair).
    node_rack: Vec<u32>,
    /// Sorted DC names.
    dcs: Vec<String>,
    /// Sorted (dc, rack) pairs.
    racks: Vec<(String, String)>,
    conflicts: Vec<TokenConflict>,
}

impl Ring {
    /// The ring with no members.
    pub fn empty() -> Ring {
        Ring::default()
    }

    /// Builds the ring from members given in any order.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Result<Ring, RingError> {
        let mut map = BTreeMap::new();
        for m in members {
            validate_member(&m)?;
            let id = m.id;
            if map.insert(id, m).is_some() {
                return Err(RingError::DuplicateNode(id));
            }
        }
        Ok(Ring::from_map(map))
    }

    fn from_map(mut members: BTreeMap<NodeId, Member>) -> Ring {
        for m in members.values_mut() {
            m.tokens.sort_unstable();
            m.tokens.dedup();
        }
        let node_ids: Vec<NodeId> = members.keys().copied().collect();
        let mut dcs: Vec<String> = members.values().map(|m| m.dc.clone()).collect();
        dcs.sort();
        dcs.dedup();
        let mut racks: Vec<(String, String)> = members
            .values()
            .map(|m| (m.dc.clone(), m.rack.clone()))
            .collect();
        racks.sort();
        racks.dedup();
        let node_dc = members
            .values()
            .map(|m| dcs.binary_search(&m.dc).unwrap_or(0) as u32)
            .collect();
        let node_rack = members
            .values()
            .map(|m| {
                racks
                    .binary_search_by(|(d, r)| (d.as_str(), r.as_str()).cmp(&(&m.dc, &m.rack)))
                    .unwrap_or(0) as u32
            })
            .collect();

        // (token, node index) sorted: equal tokens end up adjacent with the smallest id first.
        let mut all: Vec<(Token, u32)> = members
            .values()
            .enumerate()
            .flat_map(|(i, m)| m.tokens.iter().map(move |&t| (t, i as u32)))
            .collect();
        all.sort_unstable();
        let mut tokens = Vec::with_capacity(all.len());
        let mut owners = Vec::with_capacity(all.len());
        let mut conflicts = Vec::new();
        for (t, i) in all {
            if tokens.last() == Some(&t) {
                let winner = owners.last().copied().unwrap_or(i);
                conflicts.push(TokenConflict {
                    token: t,
                    winner: node_ids[winner as usize],
                    loser: node_ids[i as usize],
                });
                continue;
            }
            tokens.push(t);
            owners.push(i);
        }
        Ring {
            members,
            tokens,
            owners,
            node_ids,
            node_dc,
            node_rack,
            dcs,
            racks,
            conflicts,
        }
    }

    /// This ring plus `member` (a joining node), or with `member` replacing the member of the
    /// same id.
    pub fn with_member(&self, member: Member) -> Result<Ring, RingError> {
        validate_member(&member)?;
        let mut map = self.members.clone();
        map.insert(member.id, member);
        Ok(Ring::from_map(map))
    }

    /// This ring without `node` (a leaving node). Unknown ids are an error so that a typo in
    /// an operator command does not silently compute nothing.
    pub fn without_member(&self, node: NodeId) -> Result<Ring, RingError> {
        let mut map = self.members.clone();
        map.remove(&node).ok_or(RingError::UnknownNode(node))?;
        Ok(Ring::from_map(map))
    }

    /// Members in id order.
    pub fn members(&self) -> impl DoubleEndedIterator<Item = &Member> + ExactSizeIterator {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The sorted, distinct vnode tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Tokens claimed by two members; see the type docs.
    pub fn token_conflicts(&self) -> &[TokenConflict] {
        &self.conflicts
    }

    /// Owner of the `i`-th ring token. Panics if `i >= tokens().len()`.
    pub fn owner_at(&self, i: usize) -> NodeId {
        self.node_ids[self.owners[i] as usize]
    }

    /// Index into [`Ring::tokens`] of the vnode whose range `(prev, tokens[i]]` holds `t`:
    /// the first token `>= t`, wrapping to 0. `None` on an empty ring.
    #[inline]
    pub fn vnode_index(&self, t: Token) -> Option<usize> {
        vnode_index(&self.tokens, t)
    }

    /// The range `(previous token, tokens[i]]` owned by the `i`-th vnode. Panics if
    /// `i >= tokens().len()`.
    pub fn vnode_range(&self, i: usize) -> TokenRange {
        let prev = if i == 0 {
            self.tokens[self.tokens.len() - 1]
        } else {
            self.tokens[i - 1]
        };
        TokenRange::new(prev, self.tokens[i])
    }

    /// The node whose vnode range holds `t` (the first replica under any strategy).
    pub fn primary_owner(&self, t: Token) -> Option<NodeId> {
        self.vnode_index(t).map(|i| self.owner_at(i))
    }

    /// The ranges `node` owns as primary, in ring order (one per vnode token it won).
    pub fn ranges_of(&self, node: NodeId) -> Vec<TokenRange> {
        (0..self.tokens.len())
            .filter(|&i| self.owner_at(i) == node)
            .map(|i| self.vnode_range(i))
            .collect()
    }

    /// Fraction of the token space `node` owns as primary, in [0, 1].
    pub fn ownership(&self, node: NodeId) -> f64 {
        self.ranges_of(node)
            .iter()
            .map(|r| r.width() as f64)
            .sum::<f64>()
            / RING_SIZE_F64
    }

    /// Primary ownership of every member, in id order.
    pub fn ownerships(&self) -> BTreeMap<NodeId, f64> {
        let mut out: BTreeMap<NodeId, f64> = self.node_ids.iter().map(|&n| (n, 0.0)).collect();
        for i in 0..self.tokens.len() {
            *out.entry(self.owner_at(i)).or_default() += self.vnode_range(i).fraction();
        }
        out
    }

    /// Data-centre names in sorted order.
    pub fn dcs(&self) -> &[String] {
        &self.dcs
    }

    pub(crate) fn dense_owners(&self) -> &[u32] {
        &self.owners
    }
    pub(crate) fn dense_ids(&self) -> &[NodeId] {
        &self.node_ids
    }
    pub(crate) fn dense_dc(&self) -> &[u32] {
        &self.node_dc
    }
    pub(crate) fn dense_rack(&self) -> &[u32] {
        &self.node_rack
    }
    pub(crate) fn rack_count(&self) -> usize {
        self.racks.len()
    }
}

/// First index with `tokens[i] >= t`, wrapping past the end to 0.
#[inline]
pub(crate) fn vnode_index(tokens: &[Token], t: Token) -> Option<usize> {
    if tokens.is_empty() {
        return None;
    }
    let i = tokens.partition_point(|&x| x < t);
    Some(if i == tokens.len() { 0 } else { i })
}

fn validate_member(m: &Member) -> Result<(), RingError> {
    if m.tokens.len() > MAX_TOKENS_PER_NODE {
        return Err(RingError::TooManyTokens {
            node: m.id,
            count: m.tokens.len(),
        });
    }
    if m.weight == 0 || m.weight > MAX_WEIGHT {
        return Err(RingError::BadWeight {
            node: m.id,
            weight: m.weight,
        });
    }
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_LOCATION_NAME_BYTES;
    if !ok(&m.dc) || !ok(&m.rack) {
        return Err(RingError::BadLocation(m.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u128, tokens: &[i64]) -> Member {
        Member::new(
            NodeId(id),
            "dc1",
            "r1",
            tokens.iter().map(|&t| Token(t)).collect(),
        )
    }

    #[test]
    fn primary_owner_walks_clockwise_and_wraps() {
        let ring = Ring::new([m(1, &[0, 100]), m(2, &[50])]).expect("ring");
        assert_eq!(ring.primary_owner(Token(-5)), Some(NodeId(1)));
        assert_eq!(ring.primary_owner(Token(0)), Some(NodeId(1)));
        assert_eq!(ring.primary_owner(Token(1)), Some(NodeId(2)));
        assert_eq!(ring.primary_owner(Token(50)), Some(NodeId(2)));
        assert_eq!(ring.primary_owner(Token(51)), Some(NodeId(1)));
        assert_eq!(ring.primary_owner(Token(i64::MAX)), Some(NodeId(1)));
        assert_eq!(Ring::empty().primary_owner(Token(0)), None);
    }

    #[test]
    fn ownership_sums_to_one() {
        let ring = Ring::new([m(1, &[0, 100]), m(2, &[50])]).expect("ring");
        let o2 = ring.ownership(NodeId(2));
        assert!((o2 - 50.0 / RING_SIZE_F64).abs() < 1e-15);
        let total: f64 = ring.ownerships().values().sum();
        assert!((total - 1.0).abs() < 1e-12);
        let single = Ring::new([m(7, &[42])]).expect("ring");
        assert_eq!(single.ownership(NodeId(7)), 1.0);
        assert_eq!(
            single.ranges_of(NodeId(7)),
            vec![TokenRange::new(Token(42), Token(42))]
        );
    }

    #[test]
    fn equal_tokens_go_to_the_smallest_id() {
        let a = Ring::new([m(9, &[10, 20]), m(3, &[20, 30])]).expect("ring");
        let b = Ring::new([m(3, &[30, 20]), m(9, &[20, 10])]).expect("ring");
        assert_eq!(a.tokens(), &[Token(10), Token(20), Token(30)]);
        assert_eq!(a.primary_owner(Token(20)), Some(NodeId(3)));
        assert_eq!(
            a.token_conflicts(),
            &[TokenConflict {
                token: Token(20),
                winner: NodeId(3),
                loser: NodeId(9)
            }]
        );
        assert_eq!(a.token_conflicts(), b.token_conflicts());
        assert_eq!(b.primary_owner(Token(20)), Some(NodeId(3)));
    }

    #[test]
    fn rejects_bad_members() {
        assert_eq!(
            Ring::new([m(1, &[1]), m(1, &[2])]).err(),
            Some(RingError::DuplicateNode(NodeId(1)))
        );
        let mut heavy = m(2, &[1]);
        heavy.weight = 0;
        assert!(matches!(
            Ring::new([heavy]),
            Err(RingError::BadWeight { .. })
        ));
        let many = m(3, &(0..=MAX_TOKENS_PER_NODE as i64).collect::<Vec<_>>());
        assert!(matches!(
            Ring::new([many]),
            Err(RingError::TooManyTokens { .. })
        ));
        let mut nameless = m(4, &[1]);
        nameless.rack.clear();
        assert_eq!(
            Ring::new([nameless]).err(),
            Some(RingError::BadLocation(NodeId(4)))
        );
        let ring = Ring::new([m(1, &[1])]).expect("ring");
        assert_eq!(
            ring.without_member(NodeId(5)).err(),
            Some(RingError::UnknownNode(NodeId(5)))
        );
    }
}
