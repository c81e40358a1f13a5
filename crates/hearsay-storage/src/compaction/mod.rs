//! Compaction strategies as pure functions: given the live tables' metadata (and `now`),
//! choose what to merge. The engine executes the choice on its compaction thread. Keeping the
//! choice pure makes each strategy testable on its own, with no files.
//!
//! What compaction does with the cells is the engine's business and the same for every
//! strategy: versions are reconciled by the conflict rule, expired values become tombstones,
//! and a tombstone is purged only once its time has come ([`TombstoneGc`]: after `gc_grace`,
//! or before the keyspace's [`PurgeHorizon`] when it has one) and only when no table outside
//! the compaction could hold an older version of its key.
//!
//! A keyspace's strategy can change while it has tables ([`relevel_for`] says which tables
//! the switch moves); every strategy here copes with tables placed by another one.

use crate::cell::CellKey;
use crate::config::CompactionStrategy;
use hearsay_types::{Timestamp, Token};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Size-tiered: tables below this size all fall into one bucket (Cassandra's
/// `min_sstable_size`), so a stream of small flushes still gets merged.
pub const STCS_MIN_SSTABLE_BYTES: u64 = 50 << 20;
/// Size-tiered: a table joins a bucket when its size is within these factors of the
/// bucket's average (Cassandra's `bucket_low` / `bucket_high`).
pub const STCS_BUCKET_LOW: f64 = 0.5;
pub const STCS_BUCKET_HIGH: f64 = 1.5;
/// Leveled: level 0 (flushed, overlapping tables) is merged into level 1 at this many tables
/// (LevelDB's `kL0_CompactionTrigger`).
pub const LCS_L0_TRIGGER: usize = 4;
/// Leveled: deepest level. With a multiplier of 10 and 160 MiB tables this is petabytes.
pub const LCS_MAX_LEVEL: u32 = 7;
/// Time-window: most tables merged in one go, bounding a compaction's fan-in and duration.
pub const TWCS_MAX_INPUTS: usize = 32;

/// What a strategy knows about one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub id: u64,
    pub level: u32,
    pub size_bytes: u64,
    pub entry_count: u64,
    pub tombstone_count: u64,
    pub min_key: CellKey,
    pub max_key: CellKey,
    pub min_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
}

/// A chosen compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionTask {
    /// Table ids to merge (all removed when the outputs are installed).
    pub inputs: Vec<u64>,
    /// Level of the outputs.
    pub output_level: u32,
    /// Split outputs at about this size (leveled); `None`: one output.
    pub max_output_bytes: Option<u64>,
    /// Why, for logs and tests.
    pub reason: &'static str,
}

/// The next background compaction for a keyspace, if any is due.
pub fn pick(
    strategy: &CompactionStrategy,
    tables: &[TableInfo],
    now_ms: u64,
) -> Option<CompactionTask> {
    match *strategy {
        CompactionStrategy::SizeTiered {
            min_threshold,
            max_threshold,
        } => size_tiered(tables, min_threshold, max_threshold),
        CompactionStrategy::Leveled {
            sstable_target_bytes,
            level_size_multiplier,
        } => leveled(tables, sstable_target_bytes, level_size_multiplier),
        CompactionStrategy::TimeWindow { window_ms } => time_window(tables, window_ms, now_ms),
    }
}

/// A major compaction: the tasks that together rewrite everything (one per time window for
/// time-window compaction, so windows stay separate), purging what can be purged. Even a
/// single table is rewritten, since that is what turns its expired cells into tombstones and
/// drops tombstones past `gc_grace`. Empty when there are no tables.
pub fn major(strategy: &CompactionStrategy, tables: &[TableInfo]) -> Vec<CompactionTask> {
    if tables.is_empty() {
        return Vec::new();
    }
    match *strategy {
        CompactionStrategy::SizeTiered { .. } => {
            vec![CompactionTask {
                inputs: ids(tables.iter()),
                output_level: 0,
                max_output_bytes: None,
                reason: "major",
            }]
        }
        CompactionStrategy::Leveled {
            sstable_target_bytes,
            ..
        } => vec![CompactionTask {
            inputs: ids(tables.iter()),
            output_level: tables.iter().map(|t| t.level).max().unwrap_or(1).max(1),
            max_output_bytes: Some(sstable_target_bytes),
            reason: "major",
        }],
        CompactionStrategy::TimeWindow { window_ms } => by_window(tables, window_ms)
            .into_values()
            .map(|w| CompactionTask {
                inputs: ids(w.into_iter()),
                output_level: 0,
                max_output_bytes: None,
                reason: "major (one time window)",
            })
            .collect(),
    }
}

/// The tables a switch to `strategy` moves, with their new level, given the keyspace's
/// tables as they are (placed by whatever strategy ran before).
///
/// Only leveled compaction gives levels a meaning: tables of a level >= 1 must not overlap.
/// Leveled compaction is the only writer of levels >= 1 and keeps that, and the other
/// strategies only take tables out of levels (their outputs go to level 0), so the tables a
/// switch back to leveled finds there still do not overlap and keep their places, as
/// Cassandra keeps an SSTable's level across strategy changes. Should a level >= 1 hold
/// overlapping tables anyway, each table overlapping one before it (in key order) goes to
/// level 0, where overlap is allowed and from where leveled compaction merges it up again
/// (Cassandra sends such tables back to L0 too). Nothing is rewritten; reads do not depend on
/// levels at all. Switching to size-tiered or time-window moves nothing: they ignore levels.
pub fn relevel_for(strategy: &CompactionStrategy, tables: &[TableInfo]) -> Vec<(u64, u32)> {
    if !matches!(strategy, CompactionStrategy::Leveled { .. }) {
        return Vec::new();
    }
    let mut by_level: BTreeMap<u32, Vec<&TableInfo>> = BTreeMap::new();
    for t in tables.iter().filter(|t| t.level >= 1) {
        by_level.entry(t.level).or_default().push(t);
    }
    let mut moves = Vec::new();
    for level in by_level.values_mut() {
        level.sort_by(|a, b| (&a.min_key, a.id).cmp(&(&b.min_key, b.id)));
        let mut last_max: Option<&CellKey> = None;
        for t in level.iter() {
            if last_max.is_some_and(|m| t.min_key <= *m) {
                moves.push((t.id, 0));
            } else {
                last_max = Some(&t.max_key);
            }
        }
    }
    moves.sort_unstable();
    moves
}

/// Where tombstones may be purged: a deletion may go once every replica of its range is
/// known to hold it, which the cluster learns from repair (`tombstone_gc = repair`).
///
/// Set per keyspace with `Engine::set_purge_horizon`; while a keyspace has one, it replaces
/// `gc_grace` for that keyspace's compactions. Laws an implementation keeps:
/// - It answers for the moment it is asked: a compaction asks once per token it meets with a
///   tombstone, and may purge on the answer, so a time returned must already be safe. It may
///   move backwards (a range gains a replica that has not been repaired).
/// - A deletion's time is the tombstone's write timestamp (ms), or, for an expired value, its
///   expiry. A returned time should allow for the clock skew between the nodes that assign
///   those timestamps and the one that ran the repair.
/// - It is cheap (a map lookup): it runs on the compaction thread, under no engine lock.
pub trait PurgeHorizon: Send + Sync + std::fmt::Debug {
    /// Tombstones of keys with this token whose deletion time (ms) is before the returned
    /// time may be purged; 0 means none may be.
    fn purge_before_ms(&self, token: Token) -> u64;
}

/// Whether a tombstone's time to be purged has come, by its keyspace's rule (what
/// [`TombstoneGc::check`] answers; the check that nothing outside the compaction is shadowed
/// comes after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeTime {
    /// Old enough: purge, unless it shadows something outside the compaction.
    Due,
    /// Within `gc_grace` (no horizon): keep.
    WithinGcGrace,
    /// At or after the keyspace's purge horizon for its token: keep.
    HeldByHorizon,
}

/// The rule one compaction purges tombstones by, fixed when it starts: `gc_grace` counted
/// from `now_ms`, or a [`PurgeHorizon`]. A horizon past `now_ms` is taken as `now_ms`: a
/// deletion that has not happened yet by this node's clock cannot have been repaired.
#[derive(Debug)]
pub struct TombstoneGc {
    now_ms: u64,
    gc_grace_ms: u64,
    horizon: Option<Arc<dyn PurgeHorizon>>,
    /// The last token asked about and its answer: cells come in token order, so a token's
    /// cells ask the horizon once.
    last: Option<(Token, u64)>,
}

impl TombstoneGc {
    pub fn new(now_ms: u64, gc_grace_ms: u64, horizon: Option<Arc<dyn PurgeHorizon>>) -> Self {
        TombstoneGc {
            now_ms,
            gc_grace_ms,
            horizon,
            last: None,
        }
    }

    /// Whether this rule uses a purge horizon (so `gc_grace` plays no part).
    pub fn has_horizon(&self) -> bool {
        self.horizon.is_some()
    }

    /// Whether a tombstone of `token` deleted at `deletion_time_ms` may be purged by time.
    pub fn check(&mut self, token: Token, deletion_time_ms: u64) -> PurgeTime {
        match &self.horizon {
            None => {
                if deletion_time_ms.saturating_add(self.gc_grace_ms) <= self.now_ms {
                    PurgeTime::Due
                } else {
                    PurgeTime::WithinGcGrace
                }
            }
            Some(h) => {
                let before_ms = match self.last {
                    Some((t, before_ms)) if t == token => before_ms,
                    _ => {
                        let before_ms = h.purge_before_ms(token).min(self.now_ms);
                        self.last = Some((token, before_ms));
                        before_ms
                    }
                };
                if deletion_time_ms < before_ms {
                    PurgeTime::Due
                } else {
                    PurgeTime::HeldByHorizon
                }
            }
        }
    }
}

fn ids<'a>(tables: impl Iterator<Item = &'a TableInfo>) -> Vec<u64> {
    let mut v: Vec<u64> = tables.map(|t| t.id).collect();
    v.sort_unstable();
    v
}

/// Groups tables of similar size; merges the bucket of smallest tables that has at least
/// `min_threshold` members, at most `max_threshold` of them (smallest first). Merging small
/// similar tables first keeps write amplification at about log(N) rewrites per cell.
fn size_tiered(tables: &[TableInfo], min: usize, max: usize) -> Option<CompactionTask> {
    let mut sorted: Vec<&TableInfo> = tables.iter().collect();
    sorted.sort_by_key(|t| (t.size_bytes, t.id));
    let mut buckets: Vec<Vec<&TableInfo>> = Vec::new();
    for t in sorted {
        let joins = buckets.last().is_some_and(|b| {
            let avg = b.iter().map(|x| x.size_bytes).sum::<u64>() as f64 / b.len() as f64;
            let s = t.size_bytes as f64;
            (s >= avg * STCS_BUCKET_LOW && s <= avg * STCS_BUCKET_HIGH)
                || (t.size_bytes < STCS_MIN_SSTABLE_BYTES && avg < STCS_MIN_SSTABLE_BYTES as f64)
        });
        if joins {
            if let Some(b) = buckets.last_mut() {
                b.push(t);
            }
        } else {
            buckets.push(vec![t]);
        }
    }
    let bucket = buckets.into_iter().find(|b| b.len() >= min)?;
    Some(CompactionTask {
        inputs: ids(bucket.into_iter().take(max)),
        output_level: 0,
        max_output_bytes: None,
        reason: "size-tiered bucket",
    })
}

fn overlaps(t: &TableInfo, lo: &CellKey, hi: &CellKey) -> bool {
    t.min_key <= *hi && *lo <= t.max_key
}

/// Level 0 holds flushed tables (overlapping); levels 1.. hold non-overlapping tables, level
/// L at most `target * multiplier^L` bytes. Level 0 is merged into level 1 once it has
/// [`LCS_L0_TRIGGER`] tables; an oversized level pushes one table (the oldest) into the next,
/// together with the tables there it overlaps, so each level stays non-overlapping.
fn leveled(tables: &[TableInfo], target: u64, multiplier: u64) -> Option<CompactionTask> {
    let level = |l: u32| tables.iter().filter(move |t| t.level == l);
    let l0: Vec<&TableInfo> = level(0).collect();
    if l0.len() >= LCS_L0_TRIGGER {
        let lo = l0.iter().map(|t| &t.min_key).min()?;
        let hi = l0.iter().map(|t| &t.max_key).max()?;
        let inputs = l0
            .iter()
            .copied()
            .chain(level(1).filter(|t| overlaps(t, lo, hi)));
        return Some(CompactionTask {
            inputs: ids(inputs),
            output_level: 1,
            max_output_bytes: Some(target),
            reason: "leveled: L0 into L1",
        });
    }
    let mut limit = target.saturating_mul(multiplier);
    for l in 1..LCS_MAX_LEVEL {
        let size: u64 = level(l).map(|t| t.size_bytes).sum();
        if size > limit {
            let victim = level(l).min_by_key(|t| t.id)?;
            let inputs = std::iter::once(victim)
                .chain(level(l + 1).filter(|t| overlaps(t, &victim.min_key, &victim.max_key)));
            return Some(CompactionTask {
                inputs: ids(inputs),
                output_level: l + 1,
                max_output_bytes: Some(target),
                reason: "leveled: level over its size",
            });
        }
        limit = limit.saturating_mul(multiplier);
    }
    None
}

fn by_window(tables: &[TableInfo], window_ms: u64) -> BTreeMap<u64, Vec<&TableInfo>> {
    let mut w: BTreeMap<u64, Vec<&TableInfo>> = BTreeMap::new();
    for t in tables {
        w.entry(t.max_timestamp.millis() / window_ms)
            .or_default()
            .push(t);
    }
    w
}

/// Tables are grouped by the window of their newest write. A closed window (older than the
/// current one) with more than one table is merged into one table; the current window is
/// size-tiered (4 similar tables), as Cassandra's TWCS does. Whole windows then expire
/// together, and time-ordered reads touch few tables.
fn time_window(tables: &[TableInfo], window_ms: u64, now_ms: u64) -> Option<CompactionTask> {
    let current = now_ms / window_ms;
    let windows = by_window(tables, window_ms);
    // Newest closed windows first: they are the ones that just closed.
    for (&w, ts) in windows.iter().rev() {
        if w < current && ts.len() >= 2 {
            let mut ts = ts.clone();
            ts.sort_by_key(|t| t.id);
            return Some(CompactionTask {
                inputs: ids(ts.into_iter().take(TWCS_MAX_INPUTS)),
                output_level: 0,
                max_output_bytes: None,
                reason: "time-window: closed window",
            });
        }
    }
    let open: Vec<TableInfo> = windows
        .range(current..)
        .flat_map(|(_, ts)| ts.iter().map(|t| (*t).clone()))
        .collect();
    size_tiered(&open, 4, TWCS_MAX_INPUTS).map(|mut t| {
        t.reason = "time-window: size-tiered within the current window";
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_types::Token;

    fn t(id: u64, level: u32, size: u64, lo: i64, hi: i64, max_ts_ms: u64) -> TableInfo {
        TableInfo {
            id,
            level,
            size_bytes: size,
            entry_count: 10,
            tombstone_count: 0,
            min_key: CellKey::new(Token(lo), &b""[..]),
            max_key: CellKey::new(Token(hi), &b""[..]),
            min_timestamp: Timestamp(0),
            max_timestamp: Timestamp(max_ts_ms * 1_000),
        }
    }

    const STCS: CompactionStrategy = CompactionStrategy::SizeTiered {
        min_threshold: 4,
        max_threshold: 6,
    };

    #[derive(Debug, Default)]
    struct Horizon {
        by_token: BTreeMap<i64, u64>,
        asked: std::sync::atomic::AtomicU64,
    }

    impl PurgeHorizon for Horizon {
        fn purge_before_ms(&self, token: Token) -> u64 {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.by_token.get(&token.0).copied().unwrap_or(0)
        }
    }

    #[test]
    fn gc_grace_without_a_horizon_and_only_the_horizon_with_one() {
        let mut gc = TombstoneGc::new(10_000, 1_000, None);
        assert!(!gc.has_horizon());
        assert_eq!(gc.check(Token(1), 9_000), PurgeTime::Due);
        assert_eq!(gc.check(Token(1), 9_001), PurgeTime::WithinGcGrace);
        // gc_grace is ignored under a horizon: only the horizon of the token counts, and a
        // deletion exactly at the horizon stays.
        let h = Arc::new(Horizon {
            by_token: [(1, 5_000), (2, 8_000), (3, 50_000)].into_iter().collect(),
            ..Horizon::default()
        });
        let mut gc = TombstoneGc::new(10_000, 1_000, Some(h.clone()));
        assert!(gc.has_horizon());
        assert_eq!(gc.check(Token(1), 4_999), PurgeTime::Due);
        assert_eq!(gc.check(Token(1), 5_000), PurgeTime::HeldByHorizon);
        assert_eq!(gc.check(Token(1), 9_000), PurgeTime::HeldByHorizon);
        assert_eq!(gc.check(Token(2), 7_999), PurgeTime::Due);
        assert_eq!(gc.check(Token(4), 1), PurgeTime::HeldByHorizon, "0: none");
        // A horizon past the clock counts as now.
        assert_eq!(gc.check(Token(3), 9_999), PurgeTime::Due);
        assert_eq!(gc.check(Token(3), 10_000), PurgeTime::HeldByHorizon);
        // Asked once per run of one token, not per tombstone.
        assert_eq!(h.asked.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[test]
    fn a_switch_to_leveled_sends_only_overlapping_tables_of_a_level_to_l0() {
        let lcs = CompactionStrategy::Leveled {
            sstable_target_bytes: 4096,
            level_size_multiplier: 10,
        };
        // What leveled compaction leaves (levels that do not overlap) stays where it is,
        // as do level 0 tables, which may overlap.
        let clean = vec![
            t(1, 0, 10, 0, 100, 1),
            t(2, 0, 10, 0, 100, 1),
            t(3, 1, 10, 0, 9, 1),
            t(4, 1, 10, 10, 19, 1),
            t(5, 2, 10, 5, 15, 1),
        ];
        assert_eq!(relevel_for(&lcs, &clean), vec![]);
        // Overlap within a level: each table overlapping one before it goes to level 0.
        let mut messy = clean.clone();
        messy.push(t(6, 1, 10, 15, 25, 1));
        messy.push(t(7, 1, 10, 20, 22, 1));
        messy.push(t(8, 2, 10, 0, 4, 1));
        messy.push(t(9, 2, 10, 16, 30, 1));
        assert_eq!(relevel_for(&lcs, &messy), vec![(6, 0)]);
        // Once moved, the level is clean.
        let moved: Vec<TableInfo> = messy
            .iter()
            .map(|x| {
                let mut x = x.clone();
                if x.id == 6 {
                    x.level = 0;
                }
                x
            })
            .collect();
        assert_eq!(relevel_for(&lcs, &moved), vec![]);
        // Size-tiered and time-window ignore levels: nothing moves.
        assert_eq!(relevel_for(&STCS, &messy), vec![]);
        let tw = CompactionStrategy::TimeWindow { window_ms: 1000 };
        assert_eq!(relevel_for(&tw, &messy), vec![]);
    }

    #[test]
    fn size_tiered_waits_for_min_threshold_and_caps_at_max() {
        let small: Vec<TableInfo> = (1..=3).map(|i| t(i, 0, 1000, 0, 10, 1)).collect();
        assert_eq!(pick(&STCS, &small, 0), None);
        let many: Vec<TableInfo> = (1..=8).map(|i| t(i, 0, 1000 + i, 0, 10, 1)).collect();
        let task = pick(&STCS, &many, 0).unwrap();
        assert_eq!(task.inputs, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn size_tiered_buckets_by_similar_size() {
        let g = 1u64 << 30;
        // Three big tables of very different sizes never bucket together; four similar do.
        let mut ts = vec![
            t(1, 0, g, 0, 1, 1),
            t(2, 0, 4 * g, 0, 1, 1),
            t(3, 0, 16 * g, 0, 1, 1),
        ];
        assert_eq!(pick(&STCS, &ts, 0), None);
        for i in 10..14 {
            ts.push(t(i, 0, 4 * g + i, 0, 1, 1));
        }
        let task = pick(&STCS, &ts, 0).unwrap();
        assert_eq!(task.inputs, vec![2, 10, 11, 12, 13]);
    }

    const LCS: CompactionStrategy = CompactionStrategy::Leveled {
        sstable_target_bytes: 100,
        level_size_multiplier: 10,
    };

    #[test]
    fn leveled_l0_trigger_pulls_in_overlapping_l1() {
        let mut ts: Vec<TableInfo> = (1..=3).map(|i| t(i, 0, 100, 10, 20, 1)).collect();
        ts.push(t(10, 1, 100, 0, 9, 1));
        ts.push(t(11, 1, 100, 15, 30, 1));
        ts.push(t(12, 1, 100, 31, 40, 1));
        assert_eq!(pick(&LCS, &ts, 0), None);
        ts.push(t(4, 0, 100, 12, 18, 1));
        let task = pick(&LCS, &ts, 0).unwrap();
        assert_eq!(task.inputs, vec![1, 2, 3, 4, 11]);
        assert_eq!(task.output_level, 1);
        assert_eq!(task.max_output_bytes, Some(100));
    }

    #[test]
    fn leveled_oversized_level_pushes_oldest_table_down() {
        // L1 limit is 1000 bytes; 11 tables of 100 exceed it.
        let mut ts: Vec<TableInfo> = (0..11)
            .map(|i| t(20 + i, 1, 100, i as i64 * 10, i as i64 * 10 + 9, 1))
            .collect();
        ts.push(t(50, 2, 100, 5, 15, 1));
        ts.push(t(51, 2, 100, 16, 25, 1));
        let task = pick(&LCS, &ts, 0).unwrap();
        assert_eq!(task.inputs, vec![20, 50]);
        assert_eq!(task.output_level, 2);
        // Major: everything, into the deepest level present.
        let m = major(&LCS, &ts);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].inputs.len(), 13);
        assert_eq!(m[0].output_level, 2);
    }

    #[test]
    fn time_window_merges_closed_windows_and_size_tiers_the_current() {
        let tw = CompactionStrategy::TimeWindow { window_ms: 1000 };
        // Window 1 (closed) has two tables; window 5 (current) has two.
        let ts = vec![
            t(1, 0, 10, 0, 1, 1_100),
            t(2, 0, 10, 0, 1, 1_900),
            t(3, 0, 10, 0, 1, 5_100),
            t(4, 0, 10, 0, 1, 5_200),
            t(5, 0, 10, 0, 1, 3_500),
        ];
        let task = pick(&tw, &ts, 5_500).unwrap();
        assert_eq!(task.inputs, vec![1, 2]);
        // Once closed windows are single tables, the current window needs four.
        let ts2 = vec![ts[2].clone(), ts[3].clone(), ts[4].clone()];
        assert_eq!(pick(&tw, &ts2, 5_500), None);
        let mut ts3 = ts2.clone();
        ts3.push(t(6, 0, 10, 0, 1, 5_300));
        ts3.push(t(7, 0, 10, 0, 1, 5_400));
        assert_eq!(pick(&tw, &ts3, 5_500).unwrap().inputs, vec![3, 4, 6, 7]);
        // Major keeps windows apart.
        let m = major(&tw, &ts);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].inputs, vec![1, 2]);
        assert_eq!(m[1].inputs, vec![5]);
        assert_eq!(m[2].inputs, vec![3, 4]);
    }
}
