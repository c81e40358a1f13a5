//! Token allocation: choosing a joining node's vnode tokens so ownership stays balanced.
//!
//! The joining node runs this against the ring it learnt from gossip, then announces the
//! tokens; other nodes never recompute them, but the function is deterministic (no randomness,
//! ties broken by node id), so tests and simulations can.
//!
//! Algorithm (a simplified form of Cassandra's `allocate_tokens_for_local_replication_factor`,
//! which balances replicated ownership; we balance primary ownership per unit of weight within
//! the joining node's DC, which keeps replicated ownership close as well — see `docs/ring.md`
//! for the numbers, and for a replication-aware variant we measured and dropped). Each node `o`
//! has load `L_o` (fraction of the ring it owns) and weight `w_o`; with total weight `W`
//! (including the newcomer) the ideal load per unit of weight is `1/W`. For each of the
//! newcomer's tokens, we consider, for every existing node, splitting that node's *largest*
//! range so the newcomer takes `a` from its start, and pick the node and `a` that most reduce
//! `Σ (L_o / w_o − 1/W)²`. `a` is the unconstrained optimum for that pair, clamped to at most
//! the newcomer's remaining need divided by its remaining tokens (so its share is spread over
//! all its tokens) and to the range's width. Taking from largest ranges keeps range sizes even,
//! which is what makes later joins and replicated ownership balance too.

use crate::range::{RING_SIZE_F64, TokenRange};
use crate::ring::{MAX_TOKENS_PER_NODE, Member, Ring, RingError};
use hearsay_types::{NodeId, Token};

/// Default `num_tokens`: vnode tokens per unit of weight. 16, as Cassandra 4 — with the
/// balancing allocator 16 tokens keep primary ownership within a few per cent of the mean
/// (256 random tokens, the design notes' figure, are needed to get within ~15 % without one),
/// and fewer tokens mean fewer ranges to repair, stream and look up. Measurements in
/// `docs/ring.md`.
pub const DEFAULT_NUM_TOKENS: usize = 16;

/// Tokens for `joining` (its `id`, `dc` and `weight` are used; its `tokens` ignored) entering
/// `ring`: `weight × num_tokens` of them (at least 1, at most [`MAX_TOKENS_PER_NODE`]),
/// balancing ownership among the nodes of its DC. If the node is already in the ring it is
/// placed afresh. The first node of a DC gets evenly spaced tokens from an offset derived from
/// its id.
///
/// Balancing is per DC because NetworkTopology finds a DC's replicas by walking that DC's
/// tokens only: a DC's balance is a property of its own sub-ring, whatever the other DCs hold.
pub fn allocate_tokens(ring: &Ring, joining: &Member, num_tokens: usize) -> Vec<Token> {
    let weight = joining.weight.max(1);
    let count = num_tokens
        .saturating_mul(weight as usize)
        .clamp(1, MAX_TOKENS_PER_NODE);
    // Members of a valid ring always make a valid ring again, so the fallback is unreachable.
    let dc_ring = Ring::new(
        ring.members()
            .filter(|m| m.dc == joining.dc && m.id != joining.id)
            .cloned(),
    )
    .unwrap_or_default();
    let mut tokens = if dc_ring.tokens().is_empty() {
        evenly_spaced(joining.id, count)
    } else {
        Allocation::new(&dc_ring, weight).run(count)
    };
    // A token equal to another DC's token would be lost to the smaller node id; stepping it by
    // one keeps it inside the range it was meant to split in all but astronomically rare cases.
    let taken = |t: &Token| ring.tokens().binary_search(t).is_ok();
    for t in &mut tokens {
        while taken(t) {
            *t = Token(t.0.wrapping_add(1));
        }
    }
    tokens.sort_unstable();
    tokens.dedup();
    tokens
}

/// `count` evenly spaced tokens starting at an offset derived from `node`.
fn evenly_spaced(node: NodeId, count: usize) -> Vec<Token> {
    let offset = splitmix64((node.0 as u64) ^ ((node.0 >> 64) as u64));
    let step = (1u128 << 64) / count as u128;
    let mut out: Vec<Token> = (0..count as u128)
        .map(|k| Token(offset.wrapping_add((k * step) as u64) as i64))
        .collect();
    out.sort_unstable();
    out
}

/// `count` pseudo-random tokens derived from `node` (what Cassandra did before its allocator:
/// uniform random positions). Deterministic; for comparison and tests.
pub fn random_tokens(node: NodeId, count: usize) -> Vec<Token> {
    let count = count.min(MAX_TOKENS_PER_NODE);
    let mut state = (node.0 as u64) ^ ((node.0 >> 64) as u64).rotate_left(17);
    let mut out = Vec::with_capacity(count);
    // Collisions among 2^64 positions are practically impossible; the bound only guards the
    // loop.
    for _ in 0..count * 2 + 16 {
        if out.len() == count {
            break;
        }
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let t = Token(splitmix64(state) as i64);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort_unstable();
    out
}

/// Builds a ring by letting `members` join one after another, in the order given, each
/// allocating `weight × num_tokens` tokens against the ring so far (their `tokens` field is
/// ignored). The way a cluster grows when nodes bootstrap one at a time.
pub fn allocate_ring(
    members: impl IntoIterator<Item = Member>,
    num_tokens: usize,
) -> Result<Ring, RingError> {
    let mut ring = Ring::empty();
    for mut m in members {
        m.tokens = allocate_tokens(&ring, &m, num_tokens);
        ring = ring.with_member(m)?;
    }
    Ok(ring)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Allocation {
    /// Sorted ring tokens with dense owner index; the newcomer is index `weights.len() - 1`.
    tokens: Vec<(Token, u32)>,
    weights: Vec<f64>,
    loads: Vec<f64>,
    /// Ideal load per unit of weight, `1/W`.
    rho: f64,
}

impl Allocation {
    fn new(ring: &Ring, weight: u32) -> Allocation {
        let ids: Vec<NodeId> = ring.members().map(|m| m.id).collect();
        let mut weights: Vec<f64> = ring.members().map(|m| f64::from(m.weight)).collect();
        weights.push(f64::from(weight));
        let tokens: Vec<(Token, u32)> = (0..ring.tokens().len())
            .map(|i| {
                let owner = ring.owner_at(i);
                let idx = ids.binary_search(&owner).unwrap_or(0) as u32;
                (ring.tokens()[i], idx)
            })
            .collect();
        let mut loads = vec![0.0; weights.len()];
        for i in 0..tokens.len() {
            loads[tokens[i].1 as usize] += range_of(&tokens, i).fraction();
        }
        let rho = 1.0 / weights.iter().sum::<f64>();
        Allocation {
            tokens,
            weights,
            loads,
            rho,
        }
    }

    fn run(mut self, count: usize) -> Vec<Token> {
        let newcomer = self.weights.len() - 1;
        let target = self.weights[newcomer] * self.rho;
        let mut out = Vec::with_capacity(count);
        let mut largest: Vec<Option<(u128, usize)>> = vec![None; newcomer];
        for k in 0..count {
            let chunk = (target - self.loads[newcomer]).max(0.0) / (count - k) as f64;
            // Largest range of every existing node; ties go to the earliest in token order.
            largest.iter_mut().for_each(|l| *l = None);
            for i in 0..self.tokens.len() {
                let o = self.tokens[i].1 as usize;
                if o == newcomer {
                    continue;
                }
                let w = range_of(&self.tokens, i).width();
                if largest[o].is_none_or(|(best, _)| w > best) {
                    largest[o] = Some((w, i));
                }
            }
            let wn = self.weights[newcomer];
            let ln = self.loads[newcomer];
            let mut best: Option<(f64, usize, u128)> = None;
            for (o, l) in largest.iter().enumerate() {
                let Some((width, i)) = *l else { continue };
                if width < 2 {
                    continue; // nothing to split
                }
                let (wo, lo) = (self.weights[o], self.loads[o]);
                let unconstrained = ((lo / wo - self.rho) / wo - (ln / wn - self.rho) / wn)
                    / (1.0 / (wo * wo) + 1.0 / (wn * wn));
                let hi = chunk.min(width as f64 / RING_SIZE_F64);
                let a = unconstrained.min(hi).max(0.0);
                let units = ((a * RING_SIZE_F64) as u128).clamp(1, width - 1);
                let a = units as f64 / RING_SIZE_F64;
                let sq = |x: f64| x * x;
                let delta = sq((lo - a) / wo - self.rho) - sq(lo / wo - self.rho)
                    + sq((ln + a) / wn - self.rho)
                    - sq(ln / wn - self.rho);
                if best.is_none_or(|(d, _, _)| delta < d) {
                    best = Some((delta, i, units));
                }
            }
            let Some((_, i, units)) = best else {
                break; // every range is a single token: the ring is full
            };
            let range = range_of(&self.tokens, i);
            let t = range.token_at(units);
            let owner = self.tokens[i].1 as usize;
            let a = units as f64 / RING_SIZE_F64;
            self.loads[owner] -= a;
            self.loads[newcomer] += a;
            let at = self.tokens.partition_point(|&(x, _)| x < t);
            self.tokens.insert(at, (t, newcomer as u32));
            out.push(t);
        }
        out.sort_unstable();
        out
    }
}

fn range_of(tokens: &[(Token, u32)], i: usize) -> TokenRange {
    let prev = if i == 0 {
        tokens[tokens.len() - 1].0
    } else {
        tokens[i - 1].0
    };
    TokenRange::new(prev, tokens[i].0)
}
