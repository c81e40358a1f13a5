//! Counting a write's acknowledgements against its consistency level.

use super::error::{ConsistencyError, FailureReason, Failures, OpKind};
use super::requirement::{DcInfo, Group, check_alive, groups};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Where one replica's part of a write stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReplicaState {
    /// Sent, no answer yet.
    Waiting,
    Acked,
    /// Answered "superseded": it already held a version at least as new, so it did not apply
    /// this one. Counts as an ack (last write wins: the key there is at least this new), but
    /// is reported so the coordinator never silently acknowledges a discarded write.
    Superseded,
    Failed(FailureReason),
}

/// The state of a whole write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    /// Not enough acks yet, but the level can still be met.
    Pending,
    /// The level is met: answer the client.
    Satisfied,
    /// The level can no longer be met (or the deadline passed).
    Failed(ConsistencyError),
}

/// Tracks one write at the coordinator: which replicas were sent the mutation, which
/// acknowledged, which failed and why, and which need a hint. Pure: no I/O, no clock; the
/// driver feeds it answers and tells it when the deadline passed.
///
/// Counting is strict (see the design's "strict quorums"): only acks from replicas in the
/// preference list (natural + pending) count; a stored hint counts only for ANY. Pending
/// replicas raise the required count by their number, as Cassandra does (see
/// [`super::requirement`]).
#[derive(Clone, Debug)]
pub struct WriteTracker {
    level: ConsistencyLevel,
    groups: Vec<Group>,
    alive: BTreeSet<NodeId>,
    replicas: BTreeMap<NodeId, ReplicaState>,
    hinted: BTreeSet<NodeId>,
    /// Replicas whose hint the store refused (full, too old): they cannot satisfy ANY.
    hint_dropped: BTreeSet<NodeId>,
    timed_out: bool,
}

impl WriteTracker {
    /// A write to `natural` and `pending` replicas at `level`. Replicas not in `alive` are
    /// marked failed (`Down`) at once: the driver must not send to them, and they appear in
    /// [`WriteTracker::needs_hint`]. Panics on a duplicated replica (a corrupt ring).
    pub fn new(
        level: ConsistencyLevel,
        natural: &[NodeId],
        pending: &[NodeId],
        strategy: &ReplicationStrategy,
        dcs: Option<&DcInfo>,
        alive: &BTreeSet<NodeId>,
    ) -> WriteTracker {
        let groups = groups(level, natural, pending, dcs, strategy);
        let replicas = natural
            .iter()
            .chain(pending)
            .map(|n| {
                let state = if alive.contains(n) {
                    ReplicaState::Waiting
                } else {
                    ReplicaState::Failed(FailureReason::Down)
                };
                (*n, state)
            })
            .collect();
        WriteTracker {
            level,
            groups,
            alive: alive.clone(),
            replicas,
            hinted: BTreeSet::new(),
            hint_dropped: BTreeSet::new(),
            timed_out: false,
        }
    }

    /// Fails at once, before anything is sent, when too few replicas are alive for the level
    /// (Cassandra's `UnavailableException`). ANY is always available.
    pub fn check_availability(&self) -> Result<(), ConsistencyError> {
        check_alive(self.level, &self.groups, &self.alive)
    }

    /// The replicas to send the mutation to (alive ones), in `NodeId` order.
    pub fn send_to(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|(_, s)| **s == ReplicaState::Waiting)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The level this write is counted against.
    pub fn level(&self) -> ConsistencyLevel {
        self.level
    }

    /// A replica acknowledged. Returns false (and changes nothing) for a replica not in the
    /// preference list or one that already answered: the first answer wins.
    pub fn on_ack(&mut self, node: NodeId) -> bool {
        match self.replicas.get_mut(&node) {
            Some(s @ ReplicaState::Waiting) => {
                *s = ReplicaState::Acked;
                true
            }
            _ => false,
        }
    }

    /// A replica answered that it already held a version at least as new (see the design's
    /// "superseded"). Counts toward W like an ack; listed by [`WriteTracker::superseded`].
    pub fn on_superseded(&mut self, node: NodeId) -> bool {
        match self.replicas.get_mut(&node) {
            Some(s @ ReplicaState::Waiting) => {
                *s = ReplicaState::Superseded;
                true
            }
            _ => false,
        }
    }

    /// Replicas that answered "superseded". When every ack was one, the write was discarded
    /// everywhere it landed: the driver can say so instead of a plain OK.
    pub fn superseded(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|(_, s)| **s == ReplicaState::Superseded)
            .map(|(n, _)| *n)
            .collect()
    }

    /// A replica failed. Same first-answer-wins rule as [`WriteTracker::on_ack`].
    pub fn on_failure(&mut self, node: NodeId, reason: FailureReason) -> bool {
        match self.replicas.get_mut(&node) {
            Some(s @ ReplicaState::Waiting) => {
                *s = ReplicaState::Failed(reason);
                true
            }
            _ => false,
        }
    }

    /// A hint for `node` reached the coordinator's hint store. It counts toward ANY only.
    pub fn on_hint_stored(&mut self, node: NodeId) {
        if self.replicas.contains_key(&node) {
            self.hinted.insert(node);
        }
    }

    /// The hint store dropped `node`'s hint (full or too old): it can no longer satisfy ANY.
    pub fn on_hint_dropped(&mut self, node: NodeId) {
        if self.replicas.contains_key(&node) {
            self.hint_dropped.insert(node);
        }
    }

    /// The deadline passed: every replica still waiting has failed with `Timeout`.
    pub fn on_timeout(&mut self) {
        self.timed_out = true;
        for s in self.replicas.values_mut() {
            if *s == ReplicaState::Waiting {
                *s = ReplicaState::Failed(FailureReason::Timeout);
            }
        }
    }

    fn count(&self, g: &Group, f: impl Fn(&NodeId, &ReplicaState) -> bool) -> usize {
        g.members
            .iter()
            .filter(|n| self.replicas.get(n).is_some_and(|s| f(n, s)))
            .count()
    }

    fn acks(&self, g: &Group) -> usize {
        let any = self.level == ConsistencyLevel::Any;
        self.count(g, |n, s| {
            matches!(s, ReplicaState::Acked | ReplicaState::Superseded)
                || (any && self.hinted.contains(n))
        })
    }

    /// Whether the write is satisfied, still pending, or failed.
    pub fn status(&self) -> WriteStatus {
        let any = self.level == ConsistencyLevel::Any;
        let mut pending = false;
        for g in &self.groups {
            let acks = self.acks(g);
            if acks >= g.required {
                continue;
            }
            let could_still = self.count(g, |n, s| match s {
                ReplicaState::Waiting => true,
                // Under ANY a failed replica can still be covered by a hint.
                ReplicaState::Failed(_) => any && !self.timed_out && !self.hint_dropped.contains(n),
                ReplicaState::Acked | ReplicaState::Superseded => false,
            });
            if acks + could_still >= g.required && !self.timed_out {
                // Keep looking: another group (EACH_QUORUM's other DCs) may already have
                // failed, and failing early is the point.
                pending = true;
                continue;
            }
            return WriteStatus::Failed(self.error_for(g, acks));
        }
        if pending {
            WriteStatus::Pending
        } else {
            WriteStatus::Satisfied
        }
    }

    fn error_for(&self, g: &Group, received: usize) -> ConsistencyError {
        let failures = Failures(
            g.members
                .iter()
                .filter_map(|n| match self.replicas.get(n) {
                    Some(ReplicaState::Failed(r)) => Some((*n, r.clone())),
                    _ => None,
                })
                .collect(),
        );
        let any_timeout = failures.0.iter().any(|(_, r)| *r == FailureReason::Timeout);
        if self.timed_out || any_timeout {
            ConsistencyError::Timeout {
                kind: OpKind::Write,
                level: self.level,
                received,
                required: g.required,
                dc: g.dc.clone(),
                data_present: false,
                failures,
            }
        } else {
            ConsistencyError::Failed {
                kind: OpKind::Write,
                level: self.level,
                received,
                required: g.required,
                dc: g.dc.clone(),
                failures,
            }
        }
    }

    /// Replicas that failed, timed out or were down and have no hint yet: the driver stores a
    /// hint for each (then calls [`WriteTracker::on_hint_stored`]). Replicas still waiting are
    /// not listed until they fail or [`WriteTracker::on_timeout`] is called.
    pub fn needs_hint(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|(n, s)| {
                matches!(s, ReplicaState::Failed(_))
                    && !self.hinted.contains(n)
                    && !self.hint_dropped.contains(n)
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Every replica of this write (natural and pending), in `NodeId` order.
    pub fn members(&self) -> Vec<NodeId> {
        self.replicas.keys().copied().collect()
    }

    /// How many replicas acknowledged, "superseded" answers included (hints excluded).
    pub fn acked(&self) -> usize {
        self.replicas
            .values()
            .filter(|s| matches!(s, ReplicaState::Acked | ReplicaState::Superseded))
            .count()
    }
}
