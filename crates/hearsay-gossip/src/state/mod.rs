//! Scuttlebutt state: every member's generation, heartbeat, versioned application states and
//! tombstone as this node knows them, local writes, and the merge of what peers send. The
//! digests and deltas that reconcile it with a peer are in [`exchange`].
//!
//! Invariants (docs/gossip.md, "The invariant"): only this node mints its own versions, and
//! they only grow within a generation; `max_version[X]` claims only versions held (a delta
//! advances it only when contiguous); members are never dropped, and nothing at a
//! tombstone's generation or older undoes it. A member's liveness fields are stored in its
//! record (a simulator holds N² records) but decided by `liveness.rs`; this module only
//! resets them when a member is tombstoned, restarts or rejoins.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use hearsay_types::NodeId;

use crate::GossipError;
use crate::liveness::Report;
use crate::types::{Effects, Event, Liveness, MemberStatus, MemberView};
use crate::wire::{DigestEntry, NodeDelta, Sender, StateKey};

/// Recently changed nodes remembered for "hot" digests and pushes.
pub const MAX_RECENT_CHANGES: usize = 4_096;

/// One versioned application state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The origin's version of this write.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

mod exchange;

pub(crate) type StateMap = BTreeMap<StateKey, Versioned>;

/// Rarely needed per-member data, boxed so that a member costs ~48 bytes (a simulator
/// holds N² of them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Extra {
    /// Suspicion reports by reporter (liveness).
    pub(crate) reports: BTreeMap<NodeId, Report>,
    /// The newest heartbeat known when the member was convicted (liveness).
    pub(crate) down_heartbeat: u64,
    /// Where its packets came from, until it advertises `ClusterAddr`.
    pub(crate) observed_addr: Option<SocketAddr>,
}

/// One member as this node knows it.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) generation: u64,
    pub(crate) heartbeat: u64,
    pub(crate) max_version: u64,
    /// Shared copy-on-write so identical views (a simulator's pre-converged start) cost one
    /// allocation.
    pub(crate) states: Arc<StateMap>,
    pub(crate) liveness: Liveness,
    pub(crate) extra: Option<Box<Extra>>,
}

impl Member {
    pub(crate) fn new(generation: u64, heartbeat: u64) -> Member {
        Member {
            generation,
            heartbeat,
            max_version: 0,
            states: Arc::new(StateMap::new()),
            liveness: Liveness::Up,
            extra: None,
        }
    }
    pub(crate) fn removed(&self) -> bool {
        self.liveness == Liveness::Removed
    }
    /// Up or Suspect: a candidate monitor, a valid reporter.
    pub(crate) fn reachable(&self) -> bool {
        matches!(self.liveness, Liveness::Up | Liveness::Suspect)
    }
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }
    pub(crate) fn reports_len(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| e.reports.len())
    }
    /// Its advertised `ClusterAddr`, else where its packets came from.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        if let Some(v) = self.states.get(&StateKey::ClusterAddr)
            && let Ok(s) = std::str::from_utf8(&v.value)
            && let Ok(a) = s.parse()
        {
            return Some(a);
        }
        self.extra.as_ref().and_then(|e| e.observed_addr)
    }
    fn digest_entry(&self, id: NodeId) -> DigestEntry {
        DigestEntry {
            node: id.into(),
            generation: self.generation,
            heartbeat: self.heartbeat,
            max_version: if self.removed() { 0 } else { self.max_version },
            removed: self.removed(),
        }
    }
}

/// A local write: its version, or the version already holding the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalWrite {
    /// The value was already set at this version.
    Unchanged(u64),
    /// Written at `version`; the previous `max_version` was `from_version`.
    Written { version: u64, from_version: u64 },
}

/// What applying a delta did, for the caller to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing changed (stale, or already known).
    Unchanged,
    /// Applied in full.
    Changed,
    /// The member was tombstoned; its liveness was `was`.
    Tombstoned { was: Liveness },
    /// A newer generation replaced the member; its liveness was `was`.
    Restarted { was: Liveness },
    /// The member's current generation, nothing applied yet: the caller notes the heartbeat
    /// (liveness), then calls [`ClusterState::merge_delta`].
    Current,
}

/// Every member's Scuttlebutt state as this node knows it, itself included.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) me: NodeId,
    pub(crate) generation: u64,
    pub(crate) members: BTreeMap<NodeId, Member>,
    /// Every other node ever known, for O(1) random sampling.
    pub(crate) order: Vec<NodeId>,
    pub(crate) removed_count: usize,
    /// `(node, round)` of recent changes, oldest first, at most [`MAX_RECENT_CHANGES`].
    recent: VecDeque<(NodeId, u64)>,
    round: u64,
    /// `GossipConfig::hot_rounds`.
    hot_rounds: u64,
    /// Where the next digest range starts: ranges sweep the ring, so every known node is
    /// offered to peers within ceil(N / entries per digest) digests.
    digest_cursor: Option<NodeId>,
}

impl ClusterState {
    /// The state of a node that knows only itself.
    pub(crate) fn new(me: NodeId, generation: u64, hot_rounds: u64) -> ClusterState {
        let mut members = BTreeMap::new();
        members.insert(me, Member::new(generation, 0));
        ClusterState {
            me,
            generation,
            members,
            order: Vec::new(),
            removed_count: 0,
            recent: VecDeque::new(),
            round: 0,
            hot_rounds,
            digest_cursor: None,
        }
    }

    /// Rounds run.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Starts a round: its number, and a new heartbeat of this node.
    pub(crate) fn begin_round(&mut self) {
        self.round += 1;
        self.bump_heartbeat();
    }

    /// A new heartbeat of this node.
    pub(crate) fn bump_heartbeat(&mut self) {
        let me = self.me;
        if let Some(m) = self.members.get_mut(&me) {
            m.heartbeat += 1;
        }
    }

    /// Members known, this node and tombstones included.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// The header of this node's next packet.
    pub(crate) fn sender(&self) -> Sender {
        Sender {
            node: self.me.into(),
            generation: self.generation,
            heartbeat: self.members.get(&self.me).map_or(0, |m| m.heartbeat),
        }
    }

    fn note_recent(&mut self, id: NodeId) {
        if self.recent.len() >= MAX_RECENT_CHANGES {
            self.recent.pop_front();
        }
        self.recent.push_back((id, self.round));
    }

    /// Nodes changed within the last `rounds` rounds, newest first (repeats included).
    fn hot(&self, rounds: u64) -> impl Iterator<Item = NodeId> + '_ {
        let min_round = self.round.saturating_sub(rounds);
        self.recent
            .iter()
            .rev()
            .take_while(move |(_, r)| *r >= min_round)
            .map(|(id, _)| *id)
    }

    // ----------------------------------------------------------------------------------
    // Local writes

    /// Writes one of this node's states at a new version (unless it holds the same value).
    pub(crate) fn set_local(
        &mut self,
        key: StateKey,
        value: Vec<u8>,
        fx: &mut Effects,
    ) -> Result<LocalWrite, GossipError> {
        let me = self.me;
        let Some(m) = self.members.get_mut(&me) else {
            return Err(GossipError::Config("self missing".into()));
        };
        if let Some(v) = m.states.get(&key)
            && v.value == value
        {
            return Ok(LocalWrite::Unchanged(v.version));
        }
        let from_version = m.max_version;
        m.max_version += 1;
        let version = m.max_version;
        Arc::make_mut(&mut m.states).insert(key.clone(), Versioned { version, value });
        self.note_recent(me);
        fx.push_event(Event::StateChanged {
            node: me,
            key,
            version,
        });
        Ok(LocalWrite::Written {
            version,
            from_version,
        })
    }

    // ----------------------------------------------------------------------------------
    // Applying what we hear

    /// A packet from `s` itself, received from `from`. An unknown sender becomes a
    /// state-less placeholder, so even pull-mode peers learn it exists and ask it. True when
    /// it is a known member at that generation and the heartbeat is newer than ours.
    pub(crate) fn observe_sender(&mut self, s: Sender, from: SocketAddr, fx: &mut Effects) -> bool {
        let id: NodeId = s.node.into();
        match self.members.get_mut(&id) {
            None => {
                let mut m = Member::new(s.generation, s.heartbeat);
                m.extra_mut().observed_addr = Some(from);
                self.members.insert(id, m);
                self.order.push(id);
                self.note_recent(id);
                fx.push_event(Event::Joined {
                    node: id,
                    generation: s.generation,
                });
                false
            }
            Some(m) => {
                if m.removed() || s.generation != m.generation {
                    return false;
                }
                if m.extra.as_ref().and_then(|e| e.observed_addr) != Some(from) {
                    m.extra_mut().observed_addr = Some(from);
                }
                s.heartbeat > m.heartbeat
            }
        }
    }

    /// Applies a delta about another node (from anti-entropy or a rumor), except the
    /// current-generation case, which the caller finishes (see [`Applied::Current`]).
    pub(crate) fn apply_delta(&mut self, d: &NodeDelta, fx: &mut Effects) -> Applied {
        let id: NodeId = d.node.into();
        debug_assert_ne!(id, self.me, "deltas about this node are not applied here");
        let Some(m) = self.members.get_mut(&id) else {
            // A node we never heard of.
            let mut m = Member::new(d.generation, d.heartbeat);
            if d.removed {
                m.liveness = Liveness::Removed;
                self.removed_count += 1;
                self.members.insert(id, m);
                self.order.push(id);
                self.note_recent(id);
                fx.push_event(Event::Removed {
                    node: id,
                    generation: d.generation,
                });
                return Applied::Changed;
            }
            self.members.insert(id, m);
            self.order.push(id);
            fx.push_event(Event::Joined {
                node: id,
                generation: d.generation,
            });
            self.merge_entries(id, d, fx);
            self.note_recent(id);
            return Applied::Changed;
        };
        if m.removed() {
            if d.generation <= m.generation {
                if !(d.removed && d.generation == m.generation) {
                    fx.metrics.stale_ignored += 1;
                }
                return Applied::Unchanged;
            }
            if d.removed {
                m.generation = d.generation;
                self.note_recent(id);
                return Applied::Changed;
            }
            // Only an explicit join (a newer generation advertising JOINING in a full
            // state) brings a removed node back.
            let joining = d.from_version == 0
                && d.entries.iter().any(|e| {
                    e.key == StateKey::Status
                        && MemberStatus::parse(&e.value) == Some(MemberStatus::Joining)
                });
            if !joining {
                fx.metrics.stale_ignored += 1;
                return Applied::Unchanged;
            }
            *m = Member::new(d.generation, d.heartbeat);
            self.removed_count = self.removed_count.saturating_sub(1);
            fx.push_event(Event::Joined {
                node: id,
                generation: d.generation,
            });
            self.merge_entries(id, d, fx);
            self.note_recent(id);
            return Applied::Changed;
        }
        if d.removed {
            if d.generation < m.generation {
                fx.metrics.stale_ignored += 1;
                return Applied::Unchanged;
            }
            let was = m.liveness;
            let hb = m.heartbeat;
            *m = Member::new(d.generation, hb);
            m.liveness = Liveness::Removed;
            self.removed_count += 1;
            fx.push_event(Event::Removed {
                node: id,
                generation: d.generation,
            });
            self.note_recent(id);
            return Applied::Tombstoned { was };
        }
        if d.generation < m.generation {
            fx.metrics.stale_ignored += 1;
            return Applied::Unchanged;
        }
        if d.generation > m.generation {
            // Restarted: a new incarnation replaces the old state wholesale.
            let was = m.liveness;
            *m = Member::new(d.generation, d.heartbeat);
            fx.push_event(Event::Alive {
                node: id,
                generation: d.generation,
            });
            self.merge_entries(id, d, fx);
            self.note_recent(id);
            return Applied::Restarted { was };
        }
        Applied::Current
    }

    /// Finishes [`Applied::Current`]: merges the entries; true if anything changed.
    pub(crate) fn merge_delta(&mut self, d: &NodeDelta, fx: &mut Effects) -> bool {
        let id: NodeId = d.node.into();
        let changed = self.merge_entries(id, d, fx);
        if changed {
            self.note_recent(id);
        }
        changed
    }

    /// Merges entries newer per key and advances max_version when the delta is contiguous
    /// with what we hold.
    fn merge_entries(&mut self, id: NodeId, d: &NodeDelta, fx: &mut Effects) -> bool {
        let mut changed_keys = Vec::new();
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        for e in &d.entries {
            let newer = m.states.get(&e.key).is_none_or(|v| e.version > v.version);
            if newer {
                Arc::make_mut(&mut m.states).insert(
                    e.key.clone(),
                    Versioned {
                        version: e.version,
                        value: e.value.clone(),
                    },
                );
                changed_keys.push((e.key.clone(), e.version));
            }
        }
        let mut changed = !changed_keys.is_empty();
        if d.from_version <= m.max_version && d.to_version > m.max_version {
            m.max_version = d.to_version;
            changed = true;
        }
        for (key, version) in changed_keys {
            fx.push_event(Event::StateChanged {
                node: id,
                key,
                version,
            });
        }
        changed
    }

    // ----------------------------------------------------------------------------------
    // Views

    /// The membership view, ascending by id; `phi` of the nodes this node watches.
    pub(crate) fn views(&self, phi: impl Fn(NodeId) -> Option<f64>) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                node_id: id.to_string(),
                is_self: *id == self.me,
                liveness: m.liveness,
                status: m
                    .states
                    .get(&StateKey::Status)
                    .map(|v| String::from_utf8_lossy(&v.value).into_owned())
                    .or_else(|| m.removed().then(|| "REMOVED".to_string())),
                generation: m.generation,
                heartbeat: m.heartbeat,
                max_version: m.max_version,
                phi: phi(*id),
                suspicion_reports: m.reports_len(),
                cluster_addr: m.addr(),
                states: m
                    .states
                    .iter()
                    .map(|(k, v)| (k.name(), String::from_utf8_lossy(&v.value).into_owned()))
                    .collect(),
            })
            .collect()
    }
}
