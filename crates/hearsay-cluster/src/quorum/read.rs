//! Reads: choosing replicas, comparing digests, resolving full reads (newest wins) and
//! naming the stale replicas that need a read-repair write.

use super::cell::VersionedCell;
use super::error::{ConsistencyError, FailureReason, Failures, OpKind};
use super::requirement::{DcInfo, Group, check_alive, groups};
use hearsay_ring::ReplicationStrategy;
use hearsay_types::{ConsistencyLevel, NodeId};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Version of the digest encoding. Every replica must compute the same digest for the same
/// cell, so a change here is a wire change: bump it and gate on the peer's version.
pub const DIGEST_VERSION: u8 = 1;

/// A replica's answer to a digest read: a fixed function of the cell it holds.
pub type Digest = u64;

/// The digest of what a replica holds for a key (`None`: nothing at all).
///
/// Covers everything that decides reconciliation: the timestamp, the tombstone flag, the
/// expiry and the value, as stored (an expired value is hashed as the value it still is on
/// disk, so two replicas holding the same bytes always agree regardless of their clocks).
/// The hash is two CRC32C's over the canonical encoding, forwards and backwards, making 64
/// bits: the crate has no 64-bit hash dependency, and the two passes are different linear
/// functions of the input, so accidental collisions are about 2^-64. It is not meant to
/// resist an adversary; replicas are trusted.
pub fn cell_digest<C: VersionedCell>(cell: Option<&C>) -> Digest {
    let mut enc = Vec::with_capacity(32 + cell.and_then(C::value_bytes).map_or(0, <[u8]>::len));
    enc.push(DIGEST_VERSION);
    match cell {
        None => enc.push(0),
        Some(c) => {
            enc.push(1);
            enc.extend_from_slice(&c.timestamp().0.to_le_bytes());
            match c.expires_at_ms() {
                None => enc.push(0),
                Some(e) => {
                    enc.push(1);
                    enc.extend_from_slice(&e.to_le_bytes());
                }
            }
            match c.value_bytes() {
                None => enc.push(0),
                Some(v) => {
                    enc.push(1);
                    enc.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    enc.extend_from_slice(v);
                }
            }
        }
    }
    let forward = crc32c::crc32c(&enc);
    enc.reverse();
    let backward = crc32c::crc32c(&enc);
    (u64::from(forward) << 32) | u64::from(backward)
}

/// What the client sees for a resolved cell at `now_ms`: nothing for a tombstone, an
/// expired value or an absent key.
pub fn visible_value<C: VersionedCell>(cell: Option<&C>, now_ms: u64) -> Option<&[u8]> {
    cell.and_then(|c| c.live_value_bytes(now_ms))
}

/// The result of reconciling full reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution<C> {
    /// The winner by the conflict rule ([`VersionedCell::reconcile_cmp`]); `None` if no replica holds
    /// anything for the key.
    pub newest: Option<C>,
    /// Replicas that answered with something older than `newest` (or nothing): each needs a
    /// repair write of `newest` before the client is answered (blocking read repair).
    pub stale: Vec<NodeId>,
}

impl<C: VersionedCell> Resolution<C> {
    /// What the client sees at `now_ms`.
    pub fn visible_value(&self, now_ms: u64) -> Option<&[u8]> {
        visible_value(self.newest.as_ref(), now_ms)
    }
}

/// Picks the newest cell among full-read answers and lists the replicas that are behind it.
///
/// Expired values are compared as stored: the conflict rule does not look at the clock, so
/// every coordinator resolves the same answers the same way (a tombstone that compaction made
/// from an expired value ties on timestamp and wins, as a tombstone does). A replica is stale
/// when its cell is not identical to the winner; identical means `reconcile_cmp == Equal`.
pub fn resolve_full<C: VersionedCell>(responses: Vec<(NodeId, Option<C>)>) -> Resolution<C> {
    let newest: Option<C> = responses
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .max_by(|a, b| a.reconcile_cmp(b))
        .cloned();
    let mut stale: Vec<NodeId> = match &newest {
        None => Vec::new(),
        Some(winner) => responses
            .iter()
            .filter(|(_, c)| {
                c.as_ref()
                    .is_none_or(|c| c.reconcile_cmp(winner) != Ordering::Equal)
            })
            .map(|(n, _)| *n)
            .collect(),
    };
    stale.sort();
    stale.dedup();
    Resolution { newest, stale }
}

/// Which replicas a read contacts: the closest live ones that together satisfy the level.
/// `contacted[0]` gets the full data read; the rest get digest reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    pub level: ConsistencyLevel,
    pub contacted: Vec<NodeId>,
    /// Live replicas not contacted, closest first: asked in place of a contacted replica
    /// that fails fast (refused connection, in reconnect backoff), so a replica that died
    /// but is not yet convicted DOWN costs one round trip, not the read.
    pub spares: Vec<NodeId>,
    groups: Vec<Group>,
}

impl ReadPlan {
    /// Plans a read at `level` over `replicas_by_proximity` (natural replicas, closest first;
    /// reads never go to pending replicas). Fails with `Unavailable` when too few are alive,
    /// and rejects ANY, which is a write-only level.
    pub fn new(
        level: ConsistencyLevel,
        replicas_by_proximity: &[NodeId],
        strategy: &ReplicationStrategy,
        dcs: Option<&DcInfo>,
        alive: &BTreeSet<NodeId>,
    ) -> Result<ReadPlan, ConsistencyError> {
        if level == ConsistencyLevel::Any {
            return Err(ConsistencyError::WriteOnlyLevel { level });
        }
        let groups = groups(level, replicas_by_proximity, &[], dcs, strategy);
        check_alive(level, &groups, alive)?;
        let mut taken: Vec<usize> = vec![0; groups.len()];
        let mut contacted = Vec::new();
        for n in replicas_by_proximity.iter().filter(|n| alive.contains(n)) {
            let mut useful = false;
            for (i, g) in groups.iter().enumerate() {
                if g.members.contains(n) && taken[i] < g.required {
                    useful = true;
                }
            }
            if useful {
                for (i, g) in groups.iter().enumerate() {
                    if g.members.contains(n) {
                        taken[i] += 1;
                    }
                }
                contacted.push(*n);
            }
        }
        let spares = replicas_by_proximity
            .iter()
            .filter(|n| alive.contains(n) && !contacted.contains(n))
            .copied()
            .collect();
        Ok(ReadPlan {
            level,
            contacted,
            spares,
            groups,
        })
    }

    /// The replica that gets the full data read.
    pub fn data_replica(&self) -> Option<NodeId> {
        self.contacted.first().copied()
    }

    /// The replicas that get digest reads.
    pub fn digest_replicas(&self) -> &[NodeId] {
        self.contacted.get(1..).unwrap_or(&[])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer<C> {
    Waiting,
    Data(Option<C>),
    Digest(Digest),
    Failed(FailureReason),
}

/// The state of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadStatus<C> {
    /// Waiting for more answers.
    Pending,
    /// Digest phase: every required answer agrees with the data replica's cell.
    Match(Option<C>),
    /// Digest phase: a digest disagreed, or the data replica failed while digests arrived.
    /// The driver calls [`ReadResolver::begin_full_read`] and sends full reads.
    Mismatch,
    /// Full-read phase: enough full answers; repair `stale`, then answer with `newest`.
    Resolved(Resolution<C>),
    Failed(ConsistencyError),
}

/// Tracks one read at the coordinator through its two phases: data + digests, then (on a
/// mismatch) full reads from every contacted replica. Pure; the driver feeds it answers and
/// says when the deadline passed.
#[derive(Clone, Debug)]
pub struct ReadResolver<C> {
    plan: ReadPlan,
    answers: BTreeMap<NodeId, Answer<C>>,
    full: bool,
    timed_out: bool,
}

impl<C: VersionedCell> ReadResolver<C> {
    pub fn new(plan: ReadPlan) -> ReadResolver<C> {
        let answers = plan
            .contacted
            .iter()
            .map(|n| (*n, Answer::Waiting))
            .collect();
        ReadResolver {
            plan,
            answers,
            full: false,
            timed_out: false,
        }
    }

    pub fn plan(&self) -> &ReadPlan {
        &self.plan
    }

    /// A full data answer. In the digest phase only the data replica's counts as data (any
    /// other is treated as its digest); in the full phase every contacted replica's does.
    pub fn on_data(&mut self, node: NodeId, cell: Option<C>) -> bool {
        let is_data_replica = self.plan.data_replica() == Some(node);
        match self.answers.get_mut(&node) {
            Some(a @ Answer::Waiting) => {
                *a = if self.full || is_data_replica {
                    Answer::Data(cell)
                } else {
                    Answer::Digest(cell_digest(cell.as_ref()))
                };
                true
            }
            _ => false,
        }
    }

    /// A digest answer. Ignored in the full phase (a late answer from the first phase).
    pub fn on_digest(&mut self, node: NodeId, digest: Digest) -> bool {
        if self.full {
            return false;
        }
        match self.answers.get_mut(&node) {
            Some(a @ Answer::Waiting) => {
                *a = Answer::Digest(digest);
                true
            }
            _ => false,
        }
    }

    pub fn on_failure(&mut self, node: NodeId, reason: FailureReason) -> bool {
        match self.answers.get_mut(&node) {
            Some(a @ Answer::Waiting) => {
                *a = Answer::Failed(reason);
                true
            }
            _ => false,
        }
    }

    /// After a fast failure ([`Self::on_failure`] with anything but a timeout): the next
    /// spare replica to ask instead, now counted as contacted and waiting. The driver sends
    /// it a data read (in the digest phase its data counts as its digest). `None` when no
    /// spare is left or the deadline already passed.
    pub fn take_spare(&mut self) -> Option<NodeId> {
        if self.timed_out || self.plan.spares.is_empty() {
            return None;
        }
        let n = self.plan.spares.remove(0);
        self.plan.contacted.push(n);
        self.answers.insert(n, Answer::Waiting);
        Some(n)
    }

    /// The deadline passed: every replica still waiting has timed out.
    pub fn on_timeout(&mut self) {
        self.timed_out = true;
        for a in self.answers.values_mut() {
            if *a == Answer::Waiting {
                *a = Answer::Failed(FailureReason::Timeout);
            }
        }
    }

    /// Starts the full-read phase after a [`ReadStatus::Mismatch`] and returns the replicas
    /// to send full data reads to: every contacted replica except one whose full data is
    /// already in hand. The driver should restart its deadline.
    pub fn begin_full_read(&mut self) -> Vec<NodeId> {
        self.full = true;
        self.timed_out = false;
        let mut send = Vec::new();
        for (n, a) in self.answers.iter_mut() {
            if !matches!(a, Answer::Data(_)) {
                *a = Answer::Waiting;
                send.push(*n);
            }
        }
        send
    }

    fn counted(&self, g: &Group, f: impl Fn(&Answer<C>) -> bool) -> usize {
        g.members
            .iter()
            .filter(|n| self.answers.get(n).is_some_and(&f))
            .count()
    }

    pub fn status(&self) -> ReadStatus<C> {
        let responded = |a: &Answer<C>| {
            matches!(a, Answer::Data(_)) || (!self.full && matches!(a, Answer::Digest(_)))
        };
        let data = self
            .plan
            .data_replica()
            .and_then(|d| match self.answers.get(&d) {
                Some(Answer::Data(c)) => Some(c.clone()),
                _ => None,
            });
        if !self.full
            && let Some(cell) = &data
        {
            // A disagreeing digest is decisive as soon as it arrives: waiting for the rest
            // would only delay the full reads that must follow.
            let want = cell_digest(cell.as_ref());
            if self
                .answers
                .values()
                .any(|a| matches!(a, Answer::Digest(d) if *d != want))
            {
                return ReadStatus::Mismatch;
            }
        }
        let mut pending = false;
        for g in &self.plan.groups {
            let got = self.counted(g, responded);
            if got >= g.required {
                continue;
            }
            let waiting = self.counted(g, |a| *a == Answer::Waiting);
            if got + waiting >= g.required && !self.timed_out {
                // Another group may already have failed: look at all of them first.
                pending = true;
                continue;
            }
            return ReadStatus::Failed(self.error_for(g, got, data.is_some()));
        }
        if pending {
            return ReadStatus::Pending;
        }
        if self.full {
            let responses = self
                .answers
                .iter()
                .filter_map(|(n, a)| match a {
                    Answer::Data(c) => Some((*n, c.clone())),
                    _ => None,
                })
                .collect();
            return ReadStatus::Resolved(resolve_full(responses));
        }
        match data {
            Some(cell) => ReadStatus::Match(cell),
            None => {
                let data_waiting = self
                    .plan
                    .data_replica()
                    .is_some_and(|d| self.answers.get(&d) == Some(&Answer::Waiting));
                if data_waiting && !self.timed_out {
                    ReadStatus::Pending
                } else {
                    // Enough digests but no data: only full reads can produce a value.
                    ReadStatus::Mismatch
                }
            }
        }
    }

    /// The blocking read repair for a [`ReadStatus::Resolved`] outcome: the driver writes
    /// `resolution.newest` to each of [`ReadRepair::send_to`] and answers the client only
    /// once [`ReadRepair::status`] is `Satisfied`, so a QUORUM read never goes back in time
    /// (the value returned is on a quorum when the client sees it).
    pub fn read_repair(&self, resolution: &Resolution<C>) -> ReadRepair {
        let state = self
            .answers
            .iter()
            .map(|(n, a)| {
                let s = match a {
                    Answer::Data(_) if resolution.stale.contains(n) => RepairState::Waiting,
                    Answer::Data(_) => RepairState::Current,
                    Answer::Failed(r) => RepairState::Failed(r.clone()),
                    // Did not answer the full read: cannot count toward the repair.
                    _ => RepairState::Failed(FailureReason::Timeout),
                };
                (*n, s)
            })
            .collect();
        ReadRepair {
            level: self.plan.level,
            groups: self.plan.groups.clone(),
            state,
            spares: self.plan.spares.clone(),
            timed_out: false,
        }
    }

    fn error_for(&self, g: &Group, received: usize, data_present: bool) -> ConsistencyError {
        let failures = Failures(
            g.members
                .iter()
                .filter_map(|n| match self.answers.get(n) {
                    Some(Answer::Failed(r)) => Some((*n, r.clone())),
                    _ => None,
                })
                .collect(),
        );
        let any_timeout = failures.0.iter().any(|(_, r)| *r == FailureReason::Timeout);
        if self.timed_out || any_timeout {
            ConsistencyError::Timeout {
                kind: OpKind::Read,
                level: self.plan.level,
                received,
                required: g.required,
                dc: g.dc.clone(),
                data_present,
                failures,
            }
        } else {
            ConsistencyError::Failed {
                kind: OpKind::Read,
                level: self.plan.level,
                received,
                required: g.required,
                dc: g.dc.clone(),
                failures,
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RepairState {
    /// Already held the newest cell.
    Current,
    /// Stale; a repair write is in flight.
    Waiting,
    Repaired,
    Failed(FailureReason),
}

/// Whether a blocking read repair has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairStatus {
    Pending,
    /// Enough replicas hold the newest cell for the read's level: answer the client.
    Satisfied,
    Failed(ConsistencyError),
}

/// Tracks the repair writes of one read (Cassandra's blocking read repair): the read's level
/// is met again once enough contacted replicas hold the newest cell — those that already did
/// plus the stale ones that acknowledged their repair write. Pure, like the other trackers.
#[derive(Clone, Debug)]
pub struct ReadRepair {
    level: ConsistencyLevel,
    groups: Vec<Group>,
    state: BTreeMap<NodeId, RepairState>,
    /// Live replicas the read did not contact, closest first: when a stale replica's repair
    /// fails fast (its storage refuses writes), writing the newest cell to a spare instead
    /// still leaves it on enough replicas for the level.
    spares: Vec<NodeId>,
    timed_out: bool,
}

impl ReadRepair {
    /// The stale replicas to send the newest cell to.
    pub fn send_to(&self) -> Vec<NodeId> {
        self.state
            .iter()
            .filter(|(_, s)| **s == RepairState::Waiting)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn on_ack(&mut self, node: NodeId) -> bool {
        match self.state.get_mut(&node) {
            Some(s @ RepairState::Waiting) => {
                *s = RepairState::Repaired;
                true
            }
            _ => false,
        }
    }

    pub fn on_failure(&mut self, node: NodeId, reason: FailureReason) -> bool {
        match self.state.get_mut(&node) {
            Some(s @ RepairState::Waiting) => {
                *s = RepairState::Failed(reason);
                true
            }
            _ => false,
        }
    }

    pub fn on_timeout(&mut self) {
        self.timed_out = true;
        for s in self.state.values_mut() {
            if *s == RepairState::Waiting {
                *s = RepairState::Failed(FailureReason::Timeout);
            }
        }
    }

    /// After a repair write failed fast: the next spare replica to write the newest cell to,
    /// now waiting for its acknowledgement. `None` when none is left or the deadline passed.
    pub fn take_spare(&mut self) -> Option<NodeId> {
        if self.timed_out || self.spares.is_empty() {
            return None;
        }
        let n = self.spares.remove(0);
        self.state.insert(n, RepairState::Waiting);
        Some(n)
    }

    pub fn status(&self) -> RepairStatus {
        let count = |g: &Group, f: &dyn Fn(&RepairState) -> bool| {
            g.members
                .iter()
                .filter(|n| self.state.get(n).is_some_and(f))
                .count()
        };
        let mut pending = false;
        for g in &self.groups {
            let done = count(g, &|s| {
                matches!(s, RepairState::Current | RepairState::Repaired)
            });
            if done >= g.required {
                continue;
            }
            let waiting = count(g, &|s| *s == RepairState::Waiting);
            if done + waiting >= g.required && !self.timed_out {
                pending = true;
                continue;
            }
            let failures = Failures(
                g.members
                    .iter()
                    .filter_map(|n| match self.state.get(n) {
                        Some(RepairState::Failed(r)) => Some((*n, r.clone())),
                        _ => None,
                    })
                    .collect(),
            );
            // Cassandra reports a read repair that cannot finish as a read timeout.
            return RepairStatus::Failed(ConsistencyError::Timeout {
                kind: OpKind::Read,
                level: self.level,
                received: done,
                required: g.required,
                dc: g.dc.clone(),
                data_present: true,
                failures,
            });
        }
        if pending {
            RepairStatus::Pending
        } else {
            RepairStatus::Satisfied
        }
    }
}
