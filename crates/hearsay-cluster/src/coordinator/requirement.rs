//! How many answers a consistency level needs, and from whom.
//!
//! Every level reduces to a list of [`Group`]s: a set of replicas and how many of them must
//! answer. ONE..ALL and QUORUM are one group over every target; LOCAL_QUORUM is one group over
//! the coordinator's data centre; EACH_QUORUM is one group per data centre. A request is
//! satisfied when every group is, unavailable when some group has fewer live members than it
//! needs, and failed when some group can no longer reach its count.
//!
//! Pending replicas (ranges moving while a node joins or leaves) follow Cassandra's rule
//! (`ConsistencyLevel.blockForWrite`): every target's ack counts, but the group's count is
//! raised by the number of pending replicas in it (ANY excepted). Because at most `P` of the
//! acks can come from the `P` pending replicas, at least `W` acks come from natural replicas —
//! a pending replica can never stand in for a natural one — and because `W + P` acks out of
//! `N + P` targets always cover a majority of whichever `N` of them end up owning the range,
//! the write survives the ownership change either way it resolves.

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
}

/// The data-centre name given to replicas absent from [`DcInfo::dc_of`].
pub const UNKNOWN_DC: &str = "<unknown>";

fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The counting groups for `level` over `natural` and `pending` replicas.
///
/// Panics if a replica is listed twice (natural twice, pending twice, or in both): a replica
/// list with a duplicate means the ring is corrupt, and counting it would overstate W or R.
pub fn groups(
    level: ConsistencyLevel,
    natural: &[NodeId],
    pending: &[NodeId],
    dcs: Option<&DcInfo>,
) -> Vec<Group> {
    let mut all = BTreeSet::new();
    for n in natural.iter().chain(pending) {
        assert!(
            all.insert(*n),
            "replica {n} listed twice in the preference list"
        );
    }
    let rf = natural.len();
    let whole = |required: usize| {
        vec![Group {
            dc: None,
            members: all.clone(),
            required,
        }]
    };
    let dc_name = |info: &DcInfo, n: &NodeId| -> String {
        info.dc_of
            .get(n)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_DC.to_string())
    };
    let dc_group = |info: &DcInfo, dc: &str| {
        let in_dc = |n: &&NodeId| dc_name(info, n) == dc;
        let rf_dc = natural.iter().filter(in_dc).count();
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
        }
    };
    match (level, dcs) {
        // A hint can always be written, so pending replicas do not raise ANY.
        (ConsistencyLevel::Any, _) => whole(1),
        (ConsistencyLevel::LocalQuorum, Some(info)) => vec![dc_group(info, &info.local_dc)],
        (ConsistencyLevel::EachQuorum, Some(info)) => {
            let dcs: BTreeSet<String> = natural.iter().map(|n| dc_name(info, n)).collect();
            let mut groups: Vec<Group> = dcs.iter().map(|dc| dc_group(info, dc)).collect();
            if groups.is_empty() {
                // No natural replicas at all: still demand one answer, so that a request with
                // nowhere to go is unavailable rather than trivially satisfied.
                groups = whole(1);
            }
            groups
        }
        // max(1): ALL over an empty replica list must not be satisfied by zero answers.
        (level, _) => whole(level.block_for(rf).max(1) + pending.len()),
    }
}

/// The first group with fewer live members than it needs, as an `Unavailable` error.
pub fn check_alive(
    level: ConsistencyLevel,
    groups: &[Group],
    alive: &BTreeSet<NodeId>,
) -> Result<(), super::ConsistencyError> {
    if level == ConsistencyLevel::Any {
        // A hint on the coordinator's own disk satisfies ANY, so it is always achievable.
        return Ok(());
    }
    for g in groups {
        let live = g.members.iter().filter(|n| alive.contains(n)).count();
        if live < g.required {
            return Err(super::ConsistencyError::Unavailable {
                level,
                required: g.required,
                alive: live,
                dc: g.dc.clone(),
            });
        }
    }
    Ok(())
}
