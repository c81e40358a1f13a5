//! Replication strategies: how many replicas a key has and where.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest replication factor per strategy (Simple) or per data centre (NetworkTopology).
/// Every write fans out to this many nodes and every replica list is this long, so bound it;
/// real deployments use 3, rarely 5.
pub const MAX_REPLICATION_FACTOR: usize = 16;

/// Most data centres one NetworkTopology strategy may name (keyspace definitions travel in
/// gossip and schema pulls).
pub const MAX_STRATEGY_DCS: usize = 64;

/// How a keyspace places its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum ReplicationStrategy {
    /// `rf` distinct nodes, walking the ring clockwise from the key's token; ignores DCs and
    /// racks.
    Simple {
        /// Replication factor.
        rf: usize,
    },
    /// Per data centre, `rf` distinct nodes of that DC walking clockwise, preferring nodes on
    /// racks not yet used (Cassandra's `NetworkTopologyStrategy`). DCs not named get none.
    NetworkTopology {
        /// Replication factor per DC name.
        dc_rf: BTreeMap<String, usize>,
    },
}

/// A strategy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// Total replication factor is 0: data would be stored nowhere.
    #[error("replication factor must be at least 1")]
    ZeroReplicas,
    /// A replication factor above [`MAX_REPLICATION_FACTOR`].
    #[error("replication factor {0} is above the limit of {MAX_REPLICATION_FACTOR}")]
    TooManyReplicas(usize),
    /// More DCs than [`MAX_STRATEGY_DCS`].
    #[error("{0} data centres named; the limit is {MAX_STRATEGY_DCS}")]
    TooManyDcs(usize),
    /// An empty DC name.
    #[error("data-centre name must not be empty")]
    EmptyDcName,
}

impl ReplicationStrategy {
    /// `Simple { rf }`.
    pub fn simple(rf: usize) -> ReplicationStrategy {
        ReplicationStrategy::Simple { rf }
    }

    /// `NetworkTopology` from `(dc, rf)` pairs.
    pub fn network_topology<'a>(
        pairs: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> ReplicationStrategy {
        ReplicationStrategy::NetworkTopology {
            dc_rf: pairs.into_iter().map(|(d, r)| (d.to_owned(), r)).collect(),
        }
    }

    /// Checks the limits; call before accepting a keyspace definition.
    pub fn validate(&self) -> Result<(), StrategyError> {
        match self {
            ReplicationStrategy::Simple { rf } => {
                if *rf == 0 {
                    return Err(StrategyError::ZeroReplicas);
                }
                if *rf > MAX_REPLICATION_FACTOR {
                    return Err(StrategyError::TooManyReplicas(*rf));
                }
            }
            ReplicationStrategy::NetworkTopology { dc_rf } => {
                if dc_rf.len() > MAX_STRATEGY_DCS {
                    return Err(StrategyError::TooManyDcs(dc_rf.len()));
                }
                for (dc, rf) in dc_rf {
                    if dc.is_empty() {
                        return Err(StrategyError::EmptyDcName);
                    }
                    if *rf > MAX_REPLICATION_FACTOR {
                        return Err(StrategyError::TooManyReplicas(*rf));
                    }
                }
                if dc_rf.values().sum::<usize>() == 0 {
                    return Err(StrategyError::ZeroReplicas);
                }
            }
        }
        Ok(())
    }

    /// Replicas per key when every DC has enough nodes: `rf`, or the sum over DCs.
    pub fn total_rf(&self) -> usize {
        match self {
            ReplicationStrategy::Simple { rf } => *rf,
            ReplicationStrategy::NetworkTopology { dc_rf } => dc_rf.values().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(
            ReplicationStrategy::simple(0).validate(),
            Err(StrategyError::ZeroReplicas)
        );
        assert_eq!(ReplicationStrategy::simple(3).validate(), Ok(()));
        assert_eq!(
            ReplicationStrategy::simple(MAX_REPLICATION_FACTOR + 1).validate(),
            Err(StrategyError::TooManyReplicas(MAX_REPLICATION_FACTOR + 1))
        );
        let nts = ReplicationStrategy::network_topology([("dc1", 3), ("dc2", 0)]);
        assert_eq!(nts.validate(), Ok(()));
        assert_eq!(nts.total_rf(), 3);
        assert_eq!(
            ReplicationStrategy::network_topology([("dc1", 0)]).validate(),
            Err(StrategyError::ZeroReplicas)
        );
        assert_eq!(
            ReplicationStrategy::network_topology([("", 1)]).validate(),
            Err(StrategyError::EmptyDcName)
        );
    }
}
