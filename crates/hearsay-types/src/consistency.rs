use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How many replicas must answer a request before the coordinator replies, as in Cassandra.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsistencyLevel {
    /// A write is acknowledged once stored anywhere, a hint included. Writes only.
    Any,
    One,
    Two,
    Three,
    /// A majority of all replicas: `rf / 2 + 1`.
    Quorum,
    /// A majority of the replicas in the coordinator's data centre.
    LocalQuorum,
    /// A majority in every data centre.
    EachQuorum,
    All,
}

impl ConsistencyLevel {
    /// Every level, in the order cqlsh lists them.
    pub const ALL_LEVELS: [ConsistencyLevel; 8] = [
        ConsistencyLevel::Any,
        ConsistencyLevel::One,
        ConsistencyLevel::Two,
        ConsistencyLevel::Three,
        ConsistencyLevel::Quorum,
        ConsistencyLevel::LocalQuorum,
        ConsistencyLevel::EachQuorum,
        ConsistencyLevel::All,
    ];

    /// Replicas that must answer out of `rf` (for the whole-cluster levels). LOCAL_QUORUM and
    /// EACH_QUORUM are computed per data centre by the coordinator; here they fall back to a
    /// whole-cluster quorum, which is what they mean in a single-DC cluster.
    pub fn block_for(self, rf: usize) -> usize {
        match self {
            ConsistencyLevel::Any | ConsistencyLevel::One => 1,
            ConsistencyLevel::Two => 2,
            ConsistencyLevel::Three => 3,
            ConsistencyLevel::Quorum
            | ConsistencyLevel::LocalQuorum
            | ConsistencyLevel::EachQuorum => rf / 2 + 1,
            ConsistencyLevel::All => rf,
        }
    }

    /// The name cqlsh prints.
    pub fn name(self) -> &'static str {
        match self {
            ConsistencyLevel::Any => "ANY",
            ConsistencyLevel::One => "ONE",
            ConsistencyLevel::Two => "TWO",
            ConsistencyLevel::Three => "THREE",
            ConsistencyLevel::Quorum => "QUORUM",
            ConsistencyLevel::LocalQuorum => "LOCAL_QUORUM",
            ConsistencyLevel::EachQuorum => "EACH_QUORUM",
            ConsistencyLevel::All => "ALL",
        }
    }
}

impl fmt::Display for ConsistencyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A consistency level name that is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Improper CONSISTENCY command: unknown level '{0}'")]
pub struct ParseConsistencyError(pub String);

impl FromStr for ConsistencyLevel {
    type Err = ParseConsistencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.to_ascii_uppercase();
        ConsistencyLevel::ALL_LEVELS
            .into_iter()
            .find(|l| l.name() == up)
            .ok_or_else(|| ParseConsistencyError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_block_for() {
        for l in ConsistencyLevel::ALL_LEVELS {
            assert_eq!(l.name().to_lowercase().parse::<ConsistencyLevel>(), Ok(l));
        }
        assert!("MOST".parse::<ConsistencyLevel>().is_err());
        assert_eq!(ConsistencyLevel::Quorum.block_for(3), 2);
        assert_eq!(ConsistencyLevel::Quorum.block_for(5), 3);
        assert_eq!(ConsistencyLevel::All.block_for(3), 3);
        assert_eq!(ConsistencyLevel::One.block_for(3), 1);
    }
}
