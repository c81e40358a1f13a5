//! Token allocation: choosing a joining node's vnode tokens so ownership stays balanced.
//!
//! The joining node runs this against the ring it learnt from gossip, then announces the
//! tokens; other nodes never recompute them, but the function is deterministic (no randomness,
//! ties broken by node id), so tests and simulations can.
//!
//! Algorithm, a simplified form of Cassandra's `allocate_tokens_for_local_replication_factor`,
//! in two phases, within the joining node's DC:
//!
//! 1. Primary balance. Each node `o` has load `L_o` (fraction of the DC's token space it owns)
//!    and weight `w_o`; with total weight `W` (newcomer included) the ideal is `L_o = w_o / W`.
//!    For each of the newcomer's tokens we consider, for every existing node, splitting that
//!    node's *largest* range so the newcomer takes `a` from its start, and pick the node and
//!    `a` that most reduce `Σ (L_o/w_o − 1/W)²`; `a` is the optimum for that pair, capped by the
//!    newcomer's remaining need divided by its remaining tokens (so its share is spread over
//!    all its tokens) and by the range. Taking from the largest ranges keeps range sizes even,
//!    which keeps later joins balanced.
//! 2. Replicated balance. Each newcomer token slides between its neighbours to reduce a
//!    weighted sum of the primary objective and the squared deviation of replicated load under
//!    the configured replication factor (`Allocation::refine`).
//!
//! Measurements, and variants tried and dropped, are in `docs/ring.md`.

use crate::range::{RING_SIZE_F64, TokenRange};
use crate::ring::{MAX_TOKENS_PER_NODE, Member, Ring, RingError};
use crate::strategy::MAX_REPLICATION_FACTOR;
use hearsay_types::{NodeId, Token};

/// Default `num_tokens`: vnode tokens per unit of weight. 16, as Cassandra 4 — with the
/// balancing allocator 16 tokens keep primary ownership within a few per cent of the mean
/// (256 random tokens, the design notes' figure, stay within about ±15 % without one), a
/// node's tokens fit in one gossip datagram, and fewer tokens mean fewer ranges to repair,
/// stream and look up. Measurements in `docs/ring.md`.
pub const DEFAULT_NUM_TOKENS: usize = 16;

/// Default replication factor the allocator balances replicated ownership for; as Cassandra's
/// `allocate_tokens_for_local_replication_factor`, 3, the usual RF. Keyspaces with another RF
/// are still balanced, a little less tightly.
pub const DEFAULT_ALLOCATION_RF: usize = 3;

/// How a joining node chooses its tokens (part of the node configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllocatorConfig {
    /// Tokens per unit of weight. Default [`DEFAULT_NUM_TOKENS`].
    pub num_tokens: usize,
    /// Replication factor to balance replicated ownership for (1 = primary only). Default
    /// [`DEFAULT_ALLOCATION_RF`].
    pub replication_factor: usize,
}

impl Default for AllocatorConfig {
    fn default() -> AllocatorConfig {
        AllocatorConfig {
            num_tokens: DEFAULT_NUM_TOKENS,
            replication_factor: DEFAULT_ALLOCATION_RF,
        }
    }
}

/// An unusable [`AllocatorConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorConfigError {
    /// `num_tokens` is 0 or above [`MAX_TOKENS_PER_NODE`].
    #[error("num_tokens must be in 1..={MAX_TOKENS_PER_NODE}, got {0}")]
    NumTokens(usize),
    /// `replication_factor` is 0 or above [`MAX_REPLICATION_FACTOR`].
    #[error("allocation replication factor must be in 1..={MAX_REPLICATION_FACTOR}, got {0}")]
    ReplicationFactor(usize),
}

impl AllocatorConfig {
    /// Checks the ranges of both fields.
    pub fn validate(&self) -> Result<(), AllocatorConfigError> {
        if self.num_tokens == 0 || self.num_tokens > MAX_TOKENS_PER_NODE {
            return Err(AllocatorConfigError::NumTokens(self.num_tokens));
        }
        if self.replication_factor == 0 || self.replication_factor > MAX_REPLICATION_FACTOR {
            return Err(AllocatorConfigError::ReplicationFactor(
                self.replication_factor,
            ));
        }
        Ok(())
    }
}

/// Tokens for `joining` (its `id`, `dc` and `weight` are used; its `tokens` ignored) entering
/// `ring`: `weight × num_tokens` of them (at least 1, at most [`MAX_TOKENS_PER_NODE`]),
/// balancing primary and replicated ownership among the nodes of its DC. If the node is already in the ring it is
/// placed afresh. The first node of a DC gets evenly spaced tokens from an offset derived from
/// its id.
///
/// Balancing is per DC because NetworkTopology finds a DC's replicas by walking that DC's
/// tokens only: a DC's balance is a property of its own sub-ring, whatever the other DCs hold.
pub fn allocate_tokens(ring: &Ring, joining: &Member, config: &AllocatorConfig) -> Vec<Token> {
    let weight = joining.weight.max(1);
    let count = config
        .num_tokens
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
        Allocation::new(&dc_ring, weight).run(count, config.replication_factor)
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
/// allocating its tokens against the ring so far (their `tokens` field is ignored). The way a
/// cluster grows when nodes bootstrap one at a time.
pub fn allocate_ring(
    members: impl IntoIterator<Item = Member>,
    config: &AllocatorConfig,
) -> Result<Ring, RingError> {
    let mut ring = Ring::empty();
    for mut m in members {
        m.tokens = allocate_tokens(&ring, &m, config);
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

/// Coordinate-descent sweeps of the refinement phase. Measured (docs/ring.md): 2 sweeps cut
/// the most loaded node's replicated excess at 16 tokens by up to two thirds; 4 sweeps (with
/// a heavier replicated term) over-fit the current ring and later joins balance worse.
const REFINE_SWEEPS: usize = 2;

/// Weight of the replicated-load term against the primary-load term in the refinement. At
/// 0.3 primary balance is kept; at 1 and above later joins degrade.
const REPLICATED_WEIGHT: f64 = 0.3;

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

    fn run(mut self, count: usize, rf: usize) -> Vec<Token> {
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
        if rf > 1 {
            self.refine(rf);
            out = self
                .tokens
                .iter()
                .filter(|(_, o)| *o as usize == newcomer)
                .map(|(t, _)| *t)
                .collect();
        }
        out.sort_unstable();
        out
    }

    /// First `rf` distinct owners walking clockwise from index `k`.
    fn list_at(&self, k: usize, rf: usize, out: &mut Vec<u32>) {
        out.clear();
        let n = self.tokens.len();
        for step in 0..n {
            let o = self.tokens[(k + step) % n].1;
            if !out.contains(&o) {
                out.push(o);
                if out.len() == rf {
                    break;
                }
            }
        }
    }

    /// Second phase: slide each of the newcomer's tokens between its neighbours to reduce
    /// `REPLICATED_WEIGHT · Σ ((E_o/w_o − rf/W)/rf)² + Σ (L_o/w_o − 1/W)²`, where `E` is
    /// replicated load under `rf` (distinct nodes, racks ignored). Moving a token inside its gap
    /// keeps the ring order, so every preference list stays the same and the objective is a
    /// quadratic in the move: each step jumps to its exact minimum (coordinate descent, so the
    /// objective never increases).
    fn refine(&mut self, rf: usize) {
        let n = self.tokens.len();
        let nc = (self.weights.len() - 1) as u32;
        let mut owning = vec![false; self.weights.len()];
        for &(_, o) in &self.tokens {
            owning[o as usize] = true;
        }
        let rf = rf.clamp(1, owning.iter().filter(|&&b| b).count());
        if rf < 2 || n < 3 {
            return;
        }
        let lambda = REPLICATED_WEIGHT;
        let mut eloads = vec![0.0; self.weights.len()];
        let mut lp = Vec::new();
        let mut lq = Vec::new();
        for k in 0..n {
            self.list_at(k, rf, &mut lp);
            let f = range_of(&self.tokens, k).fraction();
            for &o in &lp {
                eloads[o as usize] += f;
            }
        }
        let te = rf as f64 * self.rho;
        let rff = rf as f64;
        for _ in 0..REFINE_SWEEPS {
            for p in 0..n {
                if self.tokens[p].1 != nc {
                    continue;
                }
                let q = (p + 1) % n;
                self.list_at(p, rf, &mut lp);
                self.list_at(q, rf, &mut lq);
                let (wp, wq) = (
                    range_of(&self.tokens, p).width(),
                    range_of(&self.tokens, q).width(),
                );
                let mut num = 0.0;
                let mut den = 0.0;
                let mut changes: Vec<(u32, f64)> = Vec::new();
                for &o in &lp {
                    if !lq.contains(&o) {
                        changes.push((o, 1.0));
                    }
                }
                for &o in &lq {
                    if !lp.contains(&o) {
                        changes.push((o, -1.0));
                    }
                }
                for &(o, c) in &changes {
                    let w = self.weights[o as usize];
                    num += lambda * c / w / rff * ((eloads[o as usize] / w - te) / rff);
                    den += lambda / (w * w * rff * rff);
                }
                let qo = self.tokens[q].1;
                if qo != nc {
                    for (o, c) in [(nc, 1.0), (qo, -1.0)] {
                        let w = self.weights[o as usize];
                        num += c / w * (self.loads[o as usize] / w - self.rho);
                        den += 1.0 / (w * w);
                    }
                }
                if den == 0.0 {
                    continue;
                }
                let delta = -num / den;
                let units = (delta * RING_SIZE_F64) as i128;
                // At most half of either neighbouring range: without this bound the descent
                // leaves slivers next to huge ranges, which is optimal for this join but makes
                // later joins (that split the largest ranges) balance far worse — measured at
                // 256 tokens: the most loaded node went from 1.02× to 1.64× the mean.
                let units = units.clamp(-((wp / 2) as i128), (wq / 2) as i128);
                if units == 0 {
                    continue;
                }
                let d = units as f64 / RING_SIZE_F64;
                self.tokens[p].0 = Token(self.tokens[p].0.0.wrapping_add(units as i64));
                for &(o, c) in &changes {
                    eloads[o as usize] += c * d;
                }
                if qo != nc {
                    self.loads[nc as usize] += d;
                    self.loads[qo as usize] -= d;
                }
            }
        }
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
