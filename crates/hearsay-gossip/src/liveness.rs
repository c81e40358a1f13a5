//! Liveness: who watches whom, phi-accrual detectors, suspicion reports, SUSPECT and DOWN
//! by a majority of a node's monitors, and refutation (docs/gossip.md, "Failure
//! detection").
//!
//! Each node X is watched by its *monitors*, the `monitors` nodes after X in id order among
//! members neither DOWN nor removed. A monitor whose detector passes `phi_threshold` reports
//! X to X's other monitors; one valid report makes X SUSPECT, valid reports from a majority
//! of `min(monitors, live members other than X)` make it DOWN, and the node that convicts
//! spreads the verdict. DOWN is sticky until a heartbeat of X newer than every heartbeat
//! known at conviction, or a newer generation.
//!
//! The per-member fields (liveness, reports, heartbeat known at conviction) live in the
//! member records of [`ClusterState`]; this module decides them, and keeps the indexes
//! (unreachable, reported, DOWN count) consistent with them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Bound;

use hearsay_types::NodeId;

use crate::config::GossipConfig;
use crate::phi::PhiDetector;
use crate::rumors::{RumorKey, RumorQueue};
use crate::state::ClusterState;
use crate::types::{Effects, Event, Liveness};
use crate::wire::Rumor;

/// One suspicion report held about a member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Report {
    /// The newest heartbeat of the suspect the reporter knew: any newer one refutes it.
    pub(crate) heartbeat: u64,
    /// When it was last received, for `suspicion_validity_ms`.
    pub(crate) received_ms: u64,
}

/// What liveness decisions read and write besides their own bookkeeping.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a mut ClusterState,
    pub(crate) rumors: &'a mut RumorQueue,
    pub(crate) fx: &'a mut Effects,
}

impl Ctx<'_> {
    fn spread(&mut self, key: RumorKey, rumor: Rumor) {
        let (sender, n) = (self.state.sender(), self.state.len());
        self.rumors.add(key, rumor, sender, n);
    }
}

/// The configuration the failure detector reads (copied out of [`GossipConfig`]).
#[derive(Clone, Copy, Debug)]
struct Params {
    monitors: usize,
    interval_ms: u64,
    phi_threshold: f64,
    phi_window: usize,
    phi_min_std_dev_ms: u64,
    phi_acceptable_pause_ms: u64,
    suspicion_validity_ms: u64,
}

/// This node's failure detector: its detectors of the nodes it watches, and indexes over
/// the members' liveness.
#[derive(Debug)]
pub(crate) struct FailureDetector {
    p: Params,
    /// Suspect or down members.
    unreachable: BTreeSet<NodeId>,
    down_count: usize,
    /// Members holding suspicion reports (checked for expiry each round).
    reported: BTreeSet<NodeId>,
    detectors: BTreeMap<NodeId, PhiDetector>,
    /// Watched nodes this node's detector currently suspects.
    local_suspects: BTreeSet<NodeId>,
    /// DOWN verdicts reached here since the last packet or tick, to push at once.
    verdicts: Vec<Rumor>,
    last_refute_round: Option<u64>,
}

impl FailureDetector {
    pub(crate) fn new(cfg: &GossipConfig) -> FailureDetector {
        FailureDetector {
            p: Params {
                monitors: cfg.monitors,
                interval_ms: cfg.interval_ms,
                phi_threshold: cfg.phi_threshold,
                phi_window: cfg.phi_window,
                phi_min_std_dev_ms: cfg.phi_min_std_dev_ms,
                phi_acceptable_pause_ms: cfg.phi_acceptable_pause_ms,
                suspicion_validity_ms: cfg.suspicion_validity_ms,
            },
            unreachable: BTreeSet::new(),
            down_count: 0,
            reported: BTreeSet::new(),
            detectors: BTreeMap::new(),
            local_suspects: BTreeSet::new(),
            verdicts: Vec::new(),
            last_refute_round: None,
        }
    }

    /// Phi of a watched node at `now_ms`.
    pub(crate) fn phi(&self, node: NodeId, now_ms: u64) -> Option<f64> {
        self.detectors.get(&node).map(|d| {
            d.phi(
                now_ms,
                self.p.phi_min_std_dev_ms,
                self.p.phi_acceptable_pause_ms,
            )
        })
    }

    /// Suspect or down members, ascending.
    pub(crate) fn unreachable(&self) -> &BTreeSet<NodeId> {
        &self.unreachable
    }

    /// Takes the DOWN verdicts reached since the last call, to push at once.
    pub(crate) fn take_verdicts(&mut self) -> Vec<Rumor> {
        std::mem::take(&mut self.verdicts)
    }

    /// The monitors of `id`: the nodes after it in id order that are neither removed nor
    /// down.
    pub(crate) fn monitors_of(&self, state: &ClusterState, id: NodeId) -> Vec<NodeId> {
        state
            .members
            .range((Bound::Excluded(id), Bound::Unbounded))
            .chain(state.members.range(..id))
            .filter(|(x, m)| **x != id && m.reachable())
            .map(|(x, _)| *x)
            .take(self.p.monitors)
            .collect()
    }

    /// The nodes this node monitors: the `monitors` eligible predecessors.
    fn watched(&self, state: &ClusterState) -> Vec<NodeId> {
        let me = state.me;
        state
            .members
            .range(..me)
            .rev()
            .chain(
                state
                    .members
                    .range((Bound::Excluded(me), Bound::Unbounded))
                    .rev(),
            )
            .filter(|(x, m)| **x != me && m.reachable())
            .map(|(x, _)| *x)
            .take(self.p.monitors)
            .collect()
    }

    /// Once a round: runs the detectors of the watched nodes (reporting those past the
    /// threshold), forgets the others, and expires old reports.
    pub(crate) fn on_round(&mut self, cx: &mut Ctx<'_>, now_ms: u64) {
        let me = cx.state.me;
        let watched = self.watched(cx.state);
        let keep: BTreeSet<NodeId> = watched.iter().copied().collect();
        let dropped: Vec<NodeId> = self
            .detectors
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for id in dropped {
            self.detectors.remove(&id);
            if self.local_suspects.remove(&id) {
                if let Some(ex) = cx.state.members.get_mut(&id).and_then(|m| m.extra.as_mut()) {
                    ex.reports.remove(&me);
                }
                self.refresh(cx, id, now_ms);
            }
        }
        for id in watched {
            let (window, interval) = (self.p.phi_window, self.p.interval_ms);
            let det = self
                .detectors
                .entry(id)
                .or_insert_with(|| PhiDetector::new(now_ms, window, interval));
            let phi = det.phi(
                now_ms,
                self.p.phi_min_std_dev_ms,
                self.p.phi_acceptable_pause_ms,
            );
            let Some(m) = cx.state.get(&id) else {
                continue;
            };
            let (generation, hb, down) = (m.generation, m.heartbeat, m.liveness == Liveness::Down);
            if phi > self.p.phi_threshold && !down {
                if self.local_suspects.insert(id) {
                    cx.fx.metrics.local_suspicions += 1;
                }
                // Our own report, refreshed every round while the silence lasts; it is
                // sent to the other monitors by `suspicion_reports`.
                self.apply_suspicion(cx, id, generation, hb, me, now_ms);
            }
        }
        let ids: Vec<NodeId> = self.reported.iter().copied().collect();
        for id in ids {
            self.refresh(cx, id, now_ms);
        }
    }

    /// This node's suspicion reports, each with the address of one of the suspect's other
    /// monitors — the only nodes whose reports count towards DOWN, and the nodes that hear
    /// the suspect's heartbeats directly, so a false report is refuted where it lands
    /// without any traffic. Sent every round while the suspicion lasts (a lost report is
    /// re-sent next round). Only the DOWN verdict is spread cluster-wide, so the traffic of
    /// false suspicions (∝ N at a fixed loss rate) costs O(monitors) packets each, not O(N).
    pub(crate) fn suspicion_reports(&self, state: &ClusterState) -> Vec<(SocketAddr, Rumor)> {
        let me = state.me;
        let mut out = Vec::new();
        for id in &self.local_suspects {
            let Some(m) = state.get(id) else {
                continue;
            };
            if !m.reachable() {
                continue;
            }
            let report = Rumor::Suspicion {
                target: (*id).into(),
                generation: m.generation,
                heartbeat: m.heartbeat,
                reporter: me.into(),
            };
            for peer in self.monitors_of(state, *id) {
                if peer == me {
                    continue;
                }
                if let Some(a) = state.get(&peer).and_then(|pm| pm.addr()) {
                    out.push((a, report.clone()));
                }
            }
        }
        out
    }

    /// A packet from `id` itself carried a heartbeat newer than ours: feeds its detector
    /// and, if this ends its DOWN here, spreads a proof of life (the verdict went
    /// everywhere, so its end must too; a suspicion only the monitors knew needs none).
    pub(crate) fn direct_heartbeat(
        &mut self,
        cx: &mut Ctx<'_>,
        id: NodeId,
        generation: u64,
        hb: u64,
        now_ms: u64,
    ) {
        let was_down = cx.state.get(&id).map(|m| m.liveness) == Some(Liveness::Down);
        let suspecting = self.local_suspects.remove(&id);
        if let Some(det) = self.detectors.get_mut(&id) {
            // The gap that ends a suspicion is not recorded, so a long pause does not
            // desensitise the detector.
            det.heartbeat(now_ms, !suspecting);
        }
        self.note_heartbeat(cx, id, generation, hb, now_ms);
        if was_down
            && cx.state.get(&id).map(|m| m.liveness) != Some(Liveness::Down)
            && let Some(d) = cx.state.proof_of_life(id)
        {
            cx.spread(RumorKey::Alive(id), Rumor::Delta(d));
        }
    }

    /// A newer heartbeat of `id` (from any source): invalidates older suspicion reports and
    /// ends DOWN once it exceeds the heartbeat known at conviction.
    pub(crate) fn note_heartbeat(
        &mut self,
        cx: &mut Ctx<'_>,
        id: NodeId,
        generation: u64,
        hb: u64,
        now_ms: u64,
    ) {
        let Some(m) = cx.state.members.get_mut(&id) else {
            return;
        };
        if m.removed() || generation != m.generation || hb <= m.heartbeat {
            return;
        }
        m.heartbeat = hb;
        let revive =
            m.liveness == Liveness::Down && m.extra.as_ref().is_none_or(|e| hb > e.down_heartbeat);
        if revive {
            m.liveness = Liveness::Suspect; // recomputed below
            self.down_count = self.down_count.saturating_sub(1);
        }
        if revive || m.reports_len() > 0 {
            self.refresh(cx, id, now_ms);
        }
    }

    /// A DOWN verdict from elsewhere: accepted unless we know a newer heartbeat. A verdict
    /// about this node is refuted.
    pub(crate) fn apply_down(
        &mut self,
        cx: &mut Ctx<'_>,
        target: NodeId,
        generation: u64,
        hb: u64,
    ) -> bool {
        if target == cx.state.me {
            if generation == cx.state.generation {
                self.refute(cx, false);
            }
            return false;
        }
        let Some(m) = cx.state.members.get_mut(&target) else {
            return false;
        };
        if m.removed()
            || generation != m.generation
            || m.liveness == Liveness::Down
            || hb < m.heartbeat
        {
            return false;
        }
        let old = m.liveness;
        m.liveness = Liveness::Down;
        let known = m.heartbeat;
        let ex = m.extra_mut();
        ex.down_heartbeat = hb.max(known);
        ex.reports.clear();
        self.reported.remove(&target);
        self.local_suspects.remove(&target);
        self.down_count += 1;
        self.unreachable.insert(target);
        if old == Liveness::Up {
            cx.fx.push_event(Event::Suspect { node: target });
        }
        cx.fx.push_event(Event::Down { node: target });
        true
    }

    /// A suspicion report (ours or a monitor's); true if it is new. A report about this
    /// node is refuted.
    pub(crate) fn apply_suspicion(
        &mut self,
        cx: &mut Ctx<'_>,
        target: NodeId,
        generation: u64,
        hb: u64,
        reporter: NodeId,
        now_ms: u64,
    ) -> bool {
        let me = cx.state.me;
        if target == me {
            if generation == cx.state.generation {
                self.refute(cx, false);
            }
            return false;
        }
        if reporter == target {
            return false;
        }
        let reporter_ok = cx.state.get(&reporter).is_some_and(|m| m.reachable()) || reporter == me;
        let Some(m) = cx.state.members.get_mut(&target) else {
            return false;
        };
        if !reporter_ok || m.removed() || generation != m.generation || hb < m.heartbeat {
            return false;
        }
        if m.liveness == Liveness::Down {
            return false;
        }
        let ex = m.extra_mut();
        let fresh = match ex.reports.get(&reporter) {
            Some(old) => hb > old.heartbeat,
            None => true,
        };
        // Refreshes the receive time of a repeated report too: it is still being made.
        let heartbeat = ex
            .reports
            .get(&reporter)
            .map_or(hb, |o| o.heartbeat.max(hb));
        ex.reports.insert(
            reporter,
            Report {
                heartbeat,
                received_ms: now_ms,
            },
        );
        self.reported.insert(target);
        self.refresh(cx, target, now_ms);
        fresh
    }

    /// Recomputes a member's liveness from its valid reports; a conviction here spreads a
    /// verdict.
    fn refresh(&mut self, cx: &mut Ctx<'_>, id: NodeId, now_ms: u64) {
        let me = cx.state.me;
        let validity = self.p.suspicion_validity_ms;
        let quorum = self.quorum_for(cx.state, id);
        let bad_reporters: BTreeSet<NodeId> = match cx.state.get(&id) {
            Some(m) => m
                .extra
                .as_ref()
                .map(|e| {
                    e.reports
                        .keys()
                        .filter(|r| **r != me && !cx.state.get(r).is_some_and(|rm| rm.reachable()))
                        .copied()
                        .collect()
                })
                .unwrap_or_default(),
            None => return,
        };
        let Some(m) = cx.state.members.get_mut(&id) else {
            return;
        };
        if m.removed() {
            return;
        }
        let hb = m.heartbeat;
        let (count, max_hb) = match m.extra.as_mut() {
            Some(ex) => {
                ex.reports.retain(|r, rep| {
                    rep.heartbeat >= hb
                        && now_ms.saturating_sub(rep.received_ms) < validity
                        && !bad_reporters.contains(r)
                });
                (
                    ex.reports.len(),
                    ex.reports.values().map(|r| r.heartbeat).max().unwrap_or(0),
                )
            }
            None => (0, 0),
        };
        if count == 0 {
            self.reported.remove(&id);
        }
        let old = m.liveness;
        if old == Liveness::Down {
            return;
        }
        let new = if count >= quorum {
            Liveness::Down
        } else if count > 0 {
            Liveness::Suspect
        } else {
            Liveness::Up
        };
        if new == old {
            return;
        }
        m.liveness = new;
        let generation = m.generation;
        if new == Liveness::Down {
            let ex = m.extra_mut();
            ex.down_heartbeat = hb.max(max_hb);
            ex.reports.clear();
            self.reported.remove(&id);
            self.down_count += 1;
            let verdict = Rumor::Down {
                target: id.into(),
                generation,
                heartbeat: hb.max(max_hb),
            };
            self.verdicts.push(verdict.clone());
            cx.spread(RumorKey::Down(id), verdict);
        }
        match new {
            Liveness::Up => {
                self.unreachable.remove(&id);
                cx.fx.push_event(Event::Alive {
                    node: id,
                    generation,
                });
            }
            Liveness::Suspect => {
                self.unreachable.insert(id);
                if old == Liveness::Up {
                    cx.fx.push_event(Event::Suspect { node: id });
                }
            }
            Liveness::Down => {
                self.unreachable.insert(id);
                if old == Liveness::Up {
                    cx.fx.push_event(Event::Suspect { node: id });
                }
                cx.fx.push_event(Event::Down { node: id });
            }
            Liveness::Removed => {}
        }
    }

    /// Reports needed to convict `id`: a majority of its monitors, i.e. of
    /// `min(monitors, live members other than id)`.
    fn quorum_for(&self, state: &ClusterState, id: NodeId) -> usize {
        let active = state
            .len()
            .saturating_sub(state.removed_count + self.down_count);
        let target_active = state
            .get(&id)
            .is_some_and(|m| !matches!(m.liveness, Liveness::Down | Liveness::Removed));
        let others = active.saturating_sub(usize::from(target_active));
        self.p.monitors.min(others) / 2 + 1
    }

    /// Spreads a new heartbeat of this node (at most once a round unless forced): others
    /// suspect it, or it was paused.
    pub(crate) fn refute(&mut self, cx: &mut Ctx<'_>, force: bool) {
        let round = cx.state.round();
        if !force && self.last_refute_round == Some(round) {
            return;
        }
        self.last_refute_round = Some(round);
        // A refutation must carry a heartbeat newer than any report about us.
        cx.state.bump_heartbeat();
        let me = cx.state.me;
        if let Some(d) = cx.state.proof_of_life(me) {
            cx.spread(RumorKey::Alive(me), Rumor::Delta(d));
        }
    }

    /// `id` was tombstoned (it was `was`): it is watched and counted no more.
    pub(crate) fn forget(&mut self, id: NodeId, was: Liveness) {
        if was == Liveness::Down {
            self.down_count = self.down_count.saturating_sub(1);
        }
        self.unreachable.remove(&id);
        self.reported.remove(&id);
        self.local_suspects.remove(&id);
        self.detectors.remove(&id);
    }

    /// `id` restarted with a newer generation (it was `was`): it is UP, and a detector
    /// watching it starts afresh.
    pub(crate) fn restarted(&mut self, id: NodeId, was: Liveness, now_ms: u64) {
        if was == Liveness::Down {
            self.down_count = self.down_count.saturating_sub(1);
        }
        self.unreachable.remove(&id);
        self.reported.remove(&id);
        self.local_suspects.remove(&id);
        if self.detectors.contains_key(&id) {
            self.detectors.insert(
                id,
                PhiDetector::new(now_ms, self.p.phi_window, self.p.interval_ms),
            );
        }
    }
}
