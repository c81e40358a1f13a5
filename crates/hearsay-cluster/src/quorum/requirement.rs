//! How many answers a consistency level needs, and from whom.
//!
//! Every level reduces to a list of [`Group`]s: a set of replicas and how many of them must
//! answer. ONE..ALL and QUORUM are one group over every target; LOCAL_QUORUM is one group over
//! the coordinator's data centre; EACH_QUORUM is one group per data centre. A request is
//! satisfied when every group is, unavailable when some group has fewer live members than it
//! needs, and failed when some group can no longer reach its count.
//!
//! **The bar comes from the keyspace, never from the view.** How many answers a level needs
//! is computed from the keyspace's replication settings (RF, or RF per data centre), not
//! from how many replicas the coordinator can currently place: a node that restarted and
//! sees only itself, or a ring that lost members, must not turn QUORUM of three into one of
//! one. When the ring yields fewer distinct replicas than the replication factor asks for
//! (too few nodes), a level that cannot be met fails with
//! [`ConsistencyError::TooFewReplicas`] instead of lowering the bar. LOCAL_QUORUM and
//! EACH_QUORUM follow Cassandra (`ConsistencyLevel.localQuorumFor`): under a
//! NetworkTopology strategy they count the DC's own RF; under Simple, LOCAL_QUORUM is a
//! quorum of the whole RF within the local DC and EACH_QUORUM is QUORUM.
//!
//! Pending replicas (ranges moving while a node joins or leaves) follow Cassandra's rule
//! (`ConsistencyLevel.blockForWrite`): every target's ack counts, but the group's count is
//! raised by the number of pending replicas in it (ANY excepted). Because at most `P` of the
//! acks can come from the `P` pending replicas, at least `W` acks come from natural replicas —
//! a pending replica can never stand in for a natural one — and because `W + P` acks out of
//! `N + P` targets always cover a majority of whichever `N` of them end up owning the range,
//! the write survives the ownership change either way it resolves.

use super::ConsistencyError;
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Data-centre placement, needed only for LOCAL_QUORUM and EACH_QUORUM.
///
/// A replica missing from `dc_of` is placed in a data centre named [`UNKNOWN_DC`], so that it
/// still forms an EACH_QUORUM group (a replica nobody can place must not be skipped). Without a `DcInfo` the DC levels
/// fall back to a whole-cluster quorum (what they mean in a single-DC cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DcInfo {
    pub dc_of: BTreeMap<NodeId, String>,
    pub local_dc: String,
}

/// One counting group: `required` of `members` must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The data centre, for DC-scoped levels (shown in errors).
    pub dc: Option<String>,
    pub members: BTreeSet<NodeId>,
    pub required: usize,
    /// Natural replicas the ring placed in this group.
    pub replicas: usize,
    /// Replicas the keyspace asks for in this group (its RF, or the DC's RF).
    pub rf: usize,
}

/// The data-centre name given to replicas absent from [`DcInfo::dc_of`].
pub const UNKNOWN_DC: &str = "<unknown>";

fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The counting groups for `level` over `natural` and `pending` replicas of a keyspace
/// replicated by `strategy`.
///
/// Panics if a replica is listed twice (natural twice, pending twice, or in both): a replica
/// list with a duplicate means the ring is corrupt, and counting it would overstate W or R.
pub fn groups(
    level: ConsistencyLevel,
    natural: &[NodeId],
    pending: &[NodeId],
    dcs: Option<&DcInfo>,
    strategy: &ReplicationStrategy,
) -> Vec<Group> {
    let mut all = BTreeSet::new();
    for n in natural.iter().chain(pending) {
        assert!(
            all.insert(*n),
            "replica {n} listed twice in the preference list"
        );
    }
    let rf = strategy.total_rf();
    let whole = |required: usize| {
        vec![Group {
            dc: None,
            members: all.clone(),
            required,
            replicas: natural.len(),
            rf,
        }]
    };
    let dc_name = |info: &DcInfo, n: &NodeId| -> String {
        info.dc_of
            .get(n)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_DC.to_string())
    };
    let dc_group = |info: &DcInfo, dc: &str, rf_dc: usize| {
        let in_dc = |n: &&NodeId| dc_name(info, n) == dc;
        let pending_dc = pending.iter().filter(in_dc).count();
        Group {
            dc: Some(dc.to_string()),
            members: natural
                .iter()
                .chain(pending)
                .filter(in_dc)
                .copied()
                .collect(),
            required: quorum(rf_dc) + pending_dc,
            replicas: natural.iter().filter(in_dc).count(),
            rf: rf_dc,
        }
    };
    match (level, dcs, strategy) {
        // A hint can always be written, so pending replicas do not raise ANY.
        (ConsistencyLevel::Any, _, _) => whole(1),
        (ConsistencyLevel::LocalQuorum, Some(info), ReplicationStrategy::Simple { rf }) => {
            vec![dc_group(info, &info.local_dc, *rf)]
        }
        (
            ConsistencyLevel::LocalQuorum,
            Some(info),
            ReplicationStrategy::NetworkTopology { dc_rf },
        ) => {
            // A DC the keyspace does not replicate to has RF 0: LOCAL_QUORUM there still
            // needs one answer from it, so it is unavailable rather than trivially met.
            let rf_dc = dc_rf.get(&info.local_dc).copied().unwrap_or(0);
            vec![dc_group(info, &info.local_dc, rf_dc)]
        }
        (
            ConsistencyLevel::EachQuorum,
            Some(info),
            ReplicationStrategy::NetworkTopology { dc_rf },
        ) => {
            let groups: Vec<Group> = dc_rf
                .iter()
                .filter(|(_, rf_dc)| **rf_dc > 0)
                .map(|(dc, rf_dc)| dc_group(info, dc, *rf_dc))
                .collect();
            if groups.is_empty() {
                // No DC with replicas (a strategy `validate` refuses): still demand one
                // answer, so that a request with nowhere to go is not trivially satisfied.
                whole(1)
            } else {
                groups
            }
        }
        // max(1): ALL of a keyspace with RF 0 (never valid) must not be met by zero answers.
        (level, _, _) => whole(level.block_for(rf).max(1) + pending.len()),
    }
}

/// The first group with fewer live members than it needs, as an `Unavailable` error (or
/// `TooFewReplicas` when the ring itself places fewer replicas than the keyspace asks for).
pub fn check_alive(
    level: ConsistencyLevel,
    groups: &[Group],
    alive: &BTreeSet<NodeId>,
) -> Result<(), ConsistencyError> {
    if level == ConsistencyLevel::Any {
        // A hint on the coordinator's own disk satisfies ANY, so it is always achievable.
        return Ok(());
    }
    for g in groups {
        let live = g.members.iter().filter(|n| alive.contains(n)).count();
        if live < g.required {
            if g.replicas < g.rf && g.members.len() < g.required {
                return Err(ConsistencyError::TooFewReplicas {
                    level,
                    required: g.required,
                    alive: live,
                    replicas: g.replicas,
                    rf: g.rf,
                    dc: g.dc.clone(),
                });
            }
            return Err(ConsistencyError::Unavailable {
                level,
                required: g.required,
                alive: live,
                dc: g.dc.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn alive(n: &[NodeId]) -> BTreeSet<NodeId> {
        n.iter().copied().collect()
    }

    /// The restart bug: a node that places only itself must not count QUORUM of RF 3 as
    /// one of one.
    #[test]
    fn required_count_follows_the_replication_factor_not_the_view() {
        let rf3 = ReplicationStrategy::simple(3);
        for placed in 0..=3u128 {
            let natural = ids(placed);
            for (level, want) in [
                (ConsistencyLevel::One, 1),
                (ConsistencyLevel::Two, 2),
                (ConsistencyLevel::Quorum, 2),
                (ConsistencyLevel::All, 3),
            ] {
                let g = groups(level, &natural, &[], None, &rf3);
                assert_eq!(g.len(), 1);
                assert_eq!(g[0].required, want, "{level} with {placed} placed");
                assert_eq!((g[0].replicas, g[0].rf), (placed as usize, 3));
            }
        }
    }

    #[test]
    fn exhaustive_required_counts_match_the_model() {
        for rf in 1..=5usize {
            let strategy = ReplicationStrategy::simple(rf);
            for placed in 0..=rf {
                for pending in 0..=2usize {
                    let all = ids((placed + pending) as u128);
                    let (natural, pend) = all.split_at(placed);
                    for level in ConsistencyLevel::ALL_LEVELS {
                        let want = match level {
                            ConsistencyLevel::Any => 1,
                            l => l.block_for(rf).max(1) + pending,
                        };
                        let g = groups(level, natural, pend, None, &strategy);
                        assert_eq!(g[0].required, want, "{level} rf={rf} placed={placed}");
                        let ok = check_alive(level, &g, &alive(&all)).is_ok();
                        assert_eq!(
                            ok,
                            level == ConsistencyLevel::Any || all.len() >= want,
                            "{level} rf={rf} placed={placed} pending={pending}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn too_few_placed_replicas_is_said_clearly() {
        let me = ids(1);
        let g = groups(
            ConsistencyLevel::Quorum,
            &me,
            &[],
            None,
            &ReplicationStrategy::simple(3),
        );
        let err = check_alive(ConsistencyLevel::Quorum, &g, &alive(&me)).unwrap_err();
        assert!(err.is_unavailable());
        assert_eq!(
            err.to_string(),
            "Cannot achieve consistency level QUORUM: 1 of 2 replicas alive; the ring places only 1 replicas where the replication factor is 3 (add nodes or lower the replication factor)"
        );
        // Enough placed but too few alive: the plain Cassandra wording.
        let three = ids(3);
        let g = groups(
            ConsistencyLevel::Quorum,
            &three,
            &[],
            None,
            &ReplicationStrategy::simple(3),
        );
        let err = check_alive(ConsistencyLevel::Quorum, &g, &alive(&three[..1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot achieve consistency level QUORUM: 1 of 2 replicas alive"
        );
        // ONE of RF 3 with one replica placed is achievable.
        let g = groups(
            ConsistencyLevel::One,
            &me,
            &[],
            None,
            &ReplicationStrategy::simple(3),
        );
        assert!(check_alive(ConsistencyLevel::One, &g, &alive(&me)).is_ok());
    }

    #[test]
    fn dc_levels_count_each_dcs_own_replication_factor() {
        // dc1 holds 1 placed replica, dc2 none, though the keyspace asks 3 and 2.
        let n = ids(1);
        let dcs = DcInfo {
            dc_of: [(n[0], "dc1".to_string())].into(),
            local_dc: "dc1".into(),
        };
        let nts = ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 2)]);
        let g = groups(ConsistencyLevel::LocalQuorum, &n, &[], Some(&dcs), &nts);
        assert_eq!((g.len(), g[0].required, g[0].rf), (1, 2, 3));
        let g = groups(ConsistencyLevel::EachQuorum, &n, &[], Some(&dcs), &nts);
        let need: Vec<(Option<String>, usize)> =
            g.iter().map(|g| (g.dc.clone(), g.required)).collect();
        assert_eq!(
            need,
            vec![(Some("dc1".into()), 2), (Some("dc2".into()), 2)],
            "a DC the ring places nothing in still needs its quorum"
        );
        assert!(check_alive(ConsistencyLevel::EachQuorum, &g, &alive(&n)).is_err());
        // QUORUM counts the total RF (5 → 3).
        let g = groups(ConsistencyLevel::Quorum, &n, &[], Some(&dcs), &nts);
        assert_eq!(g[0].required, 3);
        // Under SimpleStrategy, LOCAL_QUORUM is a quorum of the whole RF in the local DC
        // (Cassandra's localQuorumFor), and EACH_QUORUM is QUORUM.
        let simple = ReplicationStrategy::simple(3);
        let g = groups(ConsistencyLevel::LocalQuorum, &n, &[], Some(&dcs), &simple);
        assert_eq!((g[0].dc.as_deref(), g[0].required), (Some("dc1"), 2));
        let g = groups(ConsistencyLevel::EachQuorum, &n, &[], Some(&dcs), &simple);
        assert_eq!((g.len(), g[0].dc.as_deref(), g[0].required), (1, None, 2));
    }
}
