//! Checkers: pure functions over a history (and replica snapshots) that count violations of
//! the promises. Each returns a [`Check`]: a name, a violation count and the first few
//! violations spelled out.
//!
//! | checker | promise | what counts as a violation |
//! |---|---|---|
//! | [`lost`] | P1 | an acknowledged unique-key write present on none of its replicas, or with another value |
//! | [`lost`] (`replicas-missing`) | P1, P5 | an acknowledged unique-key write absent from some of the replicas the ring lists for it |
//! | [`stale`] | P2 | a QUORUM/ALL read that started after a QUORUM/ALL write of that key was acknowledged returns an older value (or nil) |
//! | [`backwards`] | P3 | a QUORUM/ALL read returns a value older than one a QUORUM/ALL read that *completed before it started* returned (per reader this is "values go backwards") |
//! | [`corrupt`] | P4 | a value read fails its checksum, or no client ever wrote it (phantom) |
//! | [`converged`] | P5 | replicas of a key disagree (timestamp, tombstone, value checksum) or one lacks it |
//! | [`guards`] | — | too few acknowledged writes, applied faults, or successes in quiet windows: a pass would be vacuous |
//!
//! Unknown operations (timeouts) may or may not have taken effect, and every checker allows
//! both: an unknown write may be present or absent, and a read may return its value.

use crate::history::{Fault, Op, OpKind, Outcome};
use crate::replicas::{Placement, Snapshot};
use crate::workload::{is_register, parse_value};
use std::collections::{BTreeMap, BTreeSet};

/// Violations spelled out per check; the count is always complete.
pub const MAX_DETAILS: usize = 20;

/// One checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub violations: usize,
    /// The first [`MAX_DETAILS`] violations.
    pub details: Vec<String>,
    /// A one-line summary of what was checked (counts), printed with the verdict.
    pub summary: String,
    /// Set when the check could not run (and then does not fail the scenario).
    pub skipped: Option<String>,
}

impl Check {
    pub fn new(name: &str) -> Check {
        Check {
            name: name.to_string(),
            violations: 0,
            details: Vec::new(),
            summary: String::new(),
            skipped: None,
        }
    }

    pub fn skipped(name: &str, why: &str) -> Check {
        Check {
            skipped: Some(why.to_string()),
            ..Check::new(name)
        }
    }

    pub fn passed(&self) -> bool {
        self.violations == 0
    }

    /// Counts one violation, keeping its text if there is room.
    pub fn violation(&mut self, text: String) {
        self.violations += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(text);
        }
    }
}

/// Levels whose reads and writes overlap in at least one replica (R + W > RF) in a single
/// data centre: the levels the recency checkers hold to their promise.
fn is_strong(level: &str) -> bool {
    matches!(level, "QUORUM" | "ALL" | "LOCAL_QUORUM" | "EACH_QUORUM")
}

fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// The version a read returned: the value's sequence number, 0 for nil; `None` if the
/// value is corrupt (the corrupt checker reports it).
fn read_version(op: &Op) -> Option<u64> {
    match &op.value {
        None => Some(0),
        Some(v) => parse_value(&op.key, v).ok(),
    }
}

/// P4: every value read parses, passes its checksum, and was written by some client (a
/// write of exactly that value to that key was invoked, whatever its outcome).
pub fn corrupt(ops: &[Op]) -> Check {
    let mut c = Check::new("corrupt");
    let written: BTreeSet<(&str, &str)> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter_map(|o| o.value.as_deref().map(|v| (o.key.as_str(), v)))
        .collect();
    let mut reads = 0;
    for op in ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok)
    {
        reads += 1;
        let Some(v) = &op.value else { continue };
        match parse_value(&op.key, v) {
            Err(why) => c.violation(format!(
                "corrupt: {} read {} through n{} at {}: {why}",
                op.worker,
                op.key,
                op.node,
                secs(op.invoke_ns)
            )),
            Ok(_) if !written.contains(&(op.key.as_str(), v.as_str())) => c.violation(format!(
                "phantom: {} read {} = {v:?} through n{} at {}, a value no client wrote",
                op.worker,
                op.key,
                op.node,
                secs(op.invoke_ns)
            )),
            Ok(_) => {}
        }
    }
    c.summary = format!("{reads} answered reads checked");
    c
}

/// P2: a QUORUM/ALL read that started after a QUORUM/ALL write of that key was
/// acknowledged returns that write's value or a newer one. Unique keys count as registers
/// with one write (nil is older than it).
pub fn stale(ops: &[Op]) -> Check {
    let mut c = Check::new("stale");
    // key → acknowledged strong writes as (complete_ns, seq), sorted by completion, with the
    // running maximum of seq (the newest acknowledged version at that time).
    let mut acked: BTreeMap<&str, Vec<(u64, u64, &Op)>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok && is_strong(&o.level))
    {
        let Some(seq) = op
            .value
            .as_deref()
            .and_then(|v| parse_value(&op.key, v).ok())
        else {
            continue;
        };
        acked
            .entry(op.key.as_str())
            .or_default()
            .push((op.complete_ns, seq, op));
    }
    let mut prefix_max: BTreeMap<&str, Vec<(u64, u64, &Op)>> = BTreeMap::new();
    for (k, mut ws) in acked {
        ws.sort_by_key(|w| w.0);
        let mut best: Option<(u64, &Op)> = None;
        let mut out = Vec::with_capacity(ws.len());
        for (t, seq, op) in ws {
            if best.is_none_or(|(s, _)| seq > s) {
                best = Some((seq, op));
            }
            let (s, o) = best.expect("set above");
            out.push((t, s, o));
        }
        prefix_max.insert(k, out);
    }
    let mut checked = 0;
    for r in ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok && is_strong(&o.level))
    {
        let Some(ws) = prefix_max.get(r.key.as_str()) else {
            continue;
        };
        let Some(got) = read_version(r) else { continue };
        checked += 1;
        // Acknowledged strictly before the read started.
        let n = ws.partition_point(|(t, _, _)| *t < r.invoke_ns);
        if n == 0 {
            continue;
        }
        let (_, need, w) = ws[n - 1];
        if got < need {
            let got_text = if r.value.is_none() {
                "nil".to_string()
            } else {
                format!("seq {got}")
            };
            c.violation(format!(
                "{} read {} through n{} at {}..{} and got {got_text}, but seq {need} was \
                 acknowledged at {} (written by {} through n{} at {})",
                r.worker,
                r.key,
                r.node,
                secs(r.invoke_ns),
                secs(r.complete_ns),
                secs(w.complete_ns),
                w.worker,
                w.node,
                w.level
            ));
        }
    }
    c.summary = format!("{checked} QUORUM/ALL reads of acknowledged keys checked");
    c
}

/// P3: no QUORUM/ALL read returns a value older than one returned by a QUORUM/ALL read
/// that completed before it started (one reader's sequential reads are a special case).
pub fn backwards(ops: &[Op]) -> Check {
    let mut c = Check::new("backwards");
    let mut by_key: BTreeMap<&str, Vec<(&Op, u64)>> = BTreeMap::new();
    for r in ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok && is_strong(&o.level))
    {
        if let Some(v) = read_version(r) {
            by_key.entry(r.key.as_str()).or_default().push((r, v));
        }
    }
    let mut checked = 0;
    for reads in by_key.values() {
        let mut by_complete: Vec<&(&Op, u64)> = reads.iter().collect();
        by_complete.sort_by_key(|(o, _)| o.complete_ns);
        let mut by_invoke: Vec<&(&Op, u64)> = reads.iter().collect();
        by_invoke.sort_by_key(|(o, _)| o.invoke_ns);
        // Sweep: the newest version among reads completed before each read's start.
        let mut j = 0;
        let mut newest: Option<(u64, &Op)> = None;
        for (r, v) in by_invoke {
            while j < by_complete.len() && by_complete[j].0.complete_ns < r.invoke_ns {
                let (o, ov) = by_complete[j];
                if newest.is_none_or(|(n, _)| *ov > n) {
                    newest = Some((*ov, o));
                }
                j += 1;
            }
            checked += 1;
            if let Some((n, earlier)) = newest
                && *v < n
            {
                let who = if earlier.worker == r.worker {
                    "the same reader".to_string()
                } else {
                    earlier.worker.clone()
                };
                c.violation(format!(
                    "{} read {} through n{} at {} and got seq {v}, older than seq {n} that \
                     {who} read through n{} by {}",
                    r.worker,
                    r.key,
                    r.node,
                    secs(r.invoke_ns),
                    earlier.node,
                    secs(earlier.complete_ns)
                ));
            }
        }
    }
    c.summary = format!("{checked} QUORUM/ALL reads checked");
    c
}

/// What [`lost`] found, beyond the two checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossSummary {
    pub acked: usize,
    pub unknown: usize,
    pub unknown_present: usize,
    pub unknown_absent: usize,
    /// Acknowledged writes present on no replica (and nowhere else).
    pub lost: usize,
    /// Acknowledged writes missing from some but not all of their replicas.
    pub under_replicated: usize,
    /// Replicas whose cell of a workload key is not a value any client wrote to it.
    pub wrong_on_replica: usize,
}

/// P1, replica by replica: every acknowledged unique-key write must be stored, with its
/// value, on every replica `placement` lists for it. Returns the `lost` check (present on no
/// replica, or a replica holds another value), the `replicas-missing` check (absent from some
/// replicas) and a summary. Unknown writes may be present or absent, but if present must
/// hold the value written. Nodes in `snap.unreachable` are not counted as lacking anything.
pub fn lost(ops: &[Op], snap: &Snapshot, placement: &Placement) -> (Check, Check, LossSummary) {
    let mut lost = Check::new("lost");
    let mut missing = Check::new("replicas-missing");
    let mut s = LossSummary::default();
    // Unique keys: the value written and whether any write of it was acknowledged.
    let mut writes: BTreeMap<&str, (&str, bool, &Op)> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && !is_register(&o.key))
    {
        let Some(v) = op.value.as_deref() else {
            continue;
        };
        let e = writes.entry(op.key.as_str()).or_insert((v, false, op));
        if op.outcome == Outcome::Ok {
            e.1 = true;
            e.2 = op;
        }
    }
    for (key, (value, acked, op)) in &writes {
        let replicas = placement.replicas(key);
        let mut have = Vec::new();
        let mut lack = Vec::new();
        let mut wrong = Vec::new();
        for r in &replicas {
            if snap.unreachable.contains_key(r) {
                continue;
            }
            match snap.cell(key, *r) {
                None => lack.push(*r),
                Some(c) if c.holds(value) => have.push(*r),
                Some(_) => wrong.push(*r),
            }
        }
        if !wrong.is_empty() {
            s.wrong_on_replica += wrong.len();
            lost.violation(format!(
                "{key}: replicas {} hold another value than the one written ({}, {})",
                names(&wrong),
                op.worker,
                if *acked { "acknowledged" } else { "unknown" }
            ));
        }
        if *acked {
            s.acked += 1;
            // A copy on a node that is not a replica is unreachable to readers: lost all
            // the same, but worth naming.
            let elsewhere: Vec<usize> = snap
                .cells
                .get(*key)
                .map(|m| {
                    m.iter()
                        .filter(|(n, c)| !replicas.contains(n) && c.holds(value))
                        .map(|(n, _)| *n)
                        .collect()
                })
                .unwrap_or_default();
            if have.is_empty() && wrong.is_empty() {
                s.lost += 1;
                lost.violation(format!(
                    "{key}: acknowledged (by {} through n{} at {}, {}) but on none of its \
                     replicas {}{}",
                    op.worker,
                    op.node,
                    secs(op.complete_ns),
                    op.level,
                    names(&replicas),
                    if elsewhere.is_empty() {
                        String::new()
                    } else {
                        format!(" (only on non-replica {})", names(&elsewhere))
                    }
                ));
            } else if !lack.is_empty() {
                s.under_replicated += 1;
                missing.violation(format!(
                    "{key}: acknowledged ({} through n{} at {}) but missing on {} (present on {})",
                    op.level,
                    op.node,
                    secs(op.complete_ns),
                    names(&lack),
                    names(&have)
                ));
            }
        } else if op.outcome == Outcome::Unknown {
            s.unknown += 1;
            if have.is_empty() {
                s.unknown_absent += 1;
            } else {
                s.unknown_present += 1;
            }
        }
    }
    lost.summary = format!(
        "{} acknowledged unique writes: {} on no replica; {} unknown ({} present, {} absent)",
        s.acked, s.lost, s.unknown, s.unknown_present, s.unknown_absent
    );
    missing.summary = format!(
        "{} acknowledged writes missing on at least one replica",
        s.under_replicated
    );
    (lost, missing, s)
}

fn names(nodes: &[usize]) -> String {
    let v: Vec<String> = nodes
        .iter()
        .map(|n| {
            if *n == usize::MAX {
                "?".to_string()
            } else {
                format!("n{n}")
            }
        })
        .collect();
    format!("[{}]", v.join(","))
}

/// P5: every key's replicas hold the identical cell (timestamp, tombstone, value checksum),
/// and every replica holds it. Keys on unreachable nodes are not judged.
pub fn converged(snap: &Snapshot, placement: &Placement) -> Check {
    let mut c = Check::new("converged");
    let mut keys = 0;
    for (key, cells) in &snap.cells {
        keys += 1;
        let replicas = placement.replicas(key);
        let mut versions: BTreeMap<(u64, bool, u32), Vec<usize>> = BTreeMap::new();
        let mut lack = Vec::new();
        for r in &replicas {
            if snap.unreachable.contains_key(r) {
                continue;
            }
            match cells.get(r) {
                Some(cell) => versions.entry(cell.version()).or_default().push(*r),
                None => lack.push(*r),
            }
        }
        if versions.len() > 1 || !lack.is_empty() {
            let parts: Vec<String> = versions
                .iter()
                .map(|((ts, tomb, crc), ns)| {
                    format!(
                        "{} ts {ts}{} crc {crc:08x}",
                        names(ns),
                        if *tomb { " tombstone" } else { "" }
                    )
                })
                .collect();
            c.violation(format!(
                "{key}: {}{}",
                parts.join("; "),
                if lack.is_empty() {
                    String::new()
                } else {
                    format!("; missing on {}", names(&lack))
                }
            ));
        }
    }
    c.summary = format!("{keys} keys compared across their replicas");
    c
}

/// Minimums a run must reach for its pass to mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    /// Acknowledged writes (unique keys and registers).
    pub min_acked_writes: usize,
    /// Faults actually applied (recorded in the history).
    pub min_faults: usize,
    /// Successful operations that ran entirely in a quiet window (no fault active).
    pub min_quiet_ok: usize,
}

/// The guards against vacuous passes, one check each (a violation names the guard).
pub fn guards(ops: &[Op], faults: &[Fault], g: &Guards) -> Vec<Check> {
    let acked = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .count();
    let applied = faults.len();
    let quiet_ok = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter(|o| {
            !faults.iter().any(|f| {
                let end = f.end_ns.unwrap_or(u64::MAX);
                o.invoke_ns < end && o.complete_ns > f.start_ns
            })
        })
        .count();
    let mut out = Vec::new();
    for (name, have, want, what) in [
        (
            "guard-acked",
            acked,
            g.min_acked_writes,
            "acknowledged writes",
        ),
        ("guard-faults", applied, g.min_faults, "faults applied"),
        (
            "guard-quiet-ok",
            quiet_ok,
            g.min_quiet_ok,
            "successful operations in quiet windows",
        ),
    ] {
        let mut c = Check::new(name);
        c.summary = format!("{have} {what} (minimum {want})");
        if have < want {
            c.violation(format!(
                "vacuous run: only {have} {what}, the scenario needs at least {want}"
            ));
        }
        out.push(c);
    }
    out
}

/// Operation counts by kind and outcome, and faults by kind, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `(kind, outcome)` → count, e.g. `("write", "ok")`.
    pub ops: BTreeMap<(String, String), usize>,
    pub faults: BTreeMap<String, usize>,
}

impl Counts {
    pub fn of(ops: &[Op], faults: &[Fault]) -> Counts {
        let mut c = Counts::default();
        for o in ops {
            let kind = match o.kind {
                OpKind::Write => "write",
                OpKind::Read => "read",
            };
            let outcome = match o.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Unknown => "unknown",
            };
            *c.ops
                .entry((kind.to_string(), outcome.to_string()))
                .or_default() += 1;
        }
        for f in faults {
            *c.faults.entry(f.kind.clone()).or_default() += 1;
        }
        c
    }

    pub fn get(&self, kind: &str, outcome: &str) -> usize {
        self.ops
            .get(&(kind.to_string(), outcome.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::CellInfo;
    use crate::workload::make_value;

    fn op(
        worker: &str,
        kind: OpKind,
        key: &str,
        value: Option<String>,
        t: (u64, u64),
        outcome: Outcome,
    ) -> Op {
        Op {
            id: 0,
            worker: worker.into(),
            kind,
            key: key.into(),
            value,
            level: "QUORUM".into(),
            node: 0,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome,
            error: None,
        }
    }

    fn w(key: &str, seq: u64, t: (u64, u64), outcome: Outcome) -> Op {
        op(
            "rw0",
            OpKind::Write,
            key,
            Some(make_value(key, seq, "p")),
            t,
            outcome,
        )
    }

    fn r(reader: &str, key: &str, seq: Option<u64>, t: (u64, u64)) -> Op {
        op(
            reader,
            OpKind::Read,
            key,
            seq.map(|s| make_value(key, s, "p")),
            t,
            Outcome::Ok,
        )
    }

    /// Three ranges, replicas [0,1,2] for every key.
    fn placement() -> Placement {
        Placement {
            ranges: vec![(i64::MAX, vec![0, 1, 2])],
        }
    }

    fn cell(value: &str) -> CellInfo {
        CellInfo {
            timestamp: 1,
            tombstone: false,
            value_len: value.len() as u64,
            value_crc32c: crc32c::crc32c(value.as_bytes()),
            replicas: vec![0, 1, 2],
        }
    }

    fn snap(entries: &[(&str, &str, &[usize])]) -> Snapshot {
        let mut s = Snapshot::default();
        for (key, value, nodes) in entries {
            for n in *nodes {
                s.cells
                    .entry(key.to_string())
                    .or_default()
                    .insert(*n, cell(value));
            }
        }
        s
    }

    #[test]
    fn a_lost_write_is_caught_and_a_present_one_passes() {
        let v = make_value("w:0:0", 1, "p");
        let ops = vec![op(
            "w0",
            OpKind::Write,
            "w:0:0",
            Some(v.clone()),
            (0, 10),
            Outcome::Ok,
        )];
        let (l, m, s) = lost(&ops, &snap(&[]), &placement());
        assert_eq!((l.violations, m.violations, s.lost), (1, 0, 1), "{l:?}");
        assert!(l.details[0].contains("on none of its replicas"), "{l:?}");

        let (l, m, _) = lost(&ops, &snap(&[("w:0:0", &v, &[0, 1, 2])]), &placement());
        assert!(l.passed() && m.passed(), "{l:?} {m:?}");
    }

    #[test]
    fn a_write_only_on_a_non_replica_is_lost() {
        let v = make_value("w:0:0", 1, "p");
        let ops = vec![op(
            "w0",
            OpKind::Write,
            "w:0:0",
            Some(v.clone()),
            (0, 10),
            Outcome::Ok,
        )];
        let (l, _, s) = lost(&ops, &snap(&[("w:0:0", &v, &[4])]), &placement());
        assert_eq!((l.violations, s.lost), (1, 1), "{l:?}");
        assert!(l.details[0].contains("only on non-replica [n4]"), "{l:?}");
    }

    #[test]
    fn a_write_missing_on_one_replica_names_that_replica() {
        let v = make_value("w:0:0", 1, "p");
        let ops = vec![op(
            "w0",
            OpKind::Write,
            "w:0:0",
            Some(v.clone()),
            (0, 10),
            Outcome::Ok,
        )];
        let (l, m, s) = lost(&ops, &snap(&[("w:0:0", &v, &[0, 2])]), &placement());
        assert!(l.passed(), "{l:?}");
        assert_eq!((m.violations, s.under_replicated), (1, 1));
        assert!(m.details[0].contains("missing on [n1]"), "{m:?}");
        // An unreachable replica is not counted as lacking it.
        let mut sn = snap(&[("w:0:0", &v, &[0, 2])]);
        sn.unreachable.insert(1, "down".into());
        let (_, m, _) = lost(&ops, &sn, &placement());
        assert!(m.passed(), "{m:?}");
    }

    #[test]
    fn a_replica_holding_another_value_is_a_loss() {
        let v = make_value("w:0:0", 1, "p");
        let other = make_value("w:0:0", 1, "q");
        let ops = vec![op(
            "w0",
            OpKind::Write,
            "w:0:0",
            Some(v.clone()),
            (0, 10),
            Outcome::Ok,
        )];
        let mut sn = snap(&[("w:0:0", &v, &[0, 1])]);
        sn.cells.get_mut("w:0:0").unwrap().insert(2, cell(&other));
        let (l, _, s) = lost(&ops, &sn, &placement());
        assert_eq!((l.violations, s.wrong_on_replica), (1, 1), "{l:?}");
    }

    #[test]
    fn unknown_writes_may_be_present_or_absent() {
        let a = make_value("w:0:0", 1, "p");
        let b = make_value("w:0:1", 1, "p");
        let ops = vec![
            op(
                "w0",
                OpKind::Write,
                "w:0:0",
                Some(a.clone()),
                (0, 10),
                Outcome::Unknown,
            ),
            op(
                "w0",
                OpKind::Write,
                "w:0:1",
                Some(b.clone()),
                (10, 20),
                Outcome::Unknown,
            ),
            // A failed write that is absent is fine too.
            op(
                "w0",
                OpKind::Write,
                "w:0:2",
                Some(make_value("w:0:2", 1, "p")),
                (20, 30),
                Outcome::Fail,
            ),
        ];
        let (l, m, s) = lost(&ops, &snap(&[("w:0:0", &a, &[0, 1])]), &placement());
        assert!(l.passed() && m.passed(), "{l:?} {m:?}");
        assert_eq!((s.unknown, s.unknown_present, s.unknown_absent), (2, 1, 1));
    }

    #[test]
    fn a_stale_quorum_read_is_caught() {
        let k = "r:0:0";
        let ops = vec![
            w(k, 1, (0, 10), Outcome::Ok),
            w(k, 2, (20, 30), Outcome::Ok),
            // Started after seq 2 was acknowledged: must see 2.
            r("rr0", k, Some(1), (40, 50)),
            // Started before the acknowledgement: 1 is fine.
            r("rr1", k, Some(1), (25, 35)),
            r("rr1", k, Some(2), (60, 70)),
        ];
        let c = stale(&ops);
        assert_eq!(c.violations, 1, "{c:?}");
        assert!(
            c.details[0].contains("rr0") && c.details[0].contains("seq 2"),
            "{c:?}"
        );
    }

    #[test]
    fn nil_after_an_acknowledged_unique_write_is_stale_but_one_reads_are_not_checked() {
        let k = "w:3:7";
        let mut one = r("ur0", k, None, (40, 50));
        one.level = "ONE".into();
        let ops = vec![
            op(
                "w3",
                OpKind::Write,
                k,
                Some(make_value(k, 1, "p")),
                (0, 10),
                Outcome::Ok,
            ),
            r("ur0", k, None, (5, 8)),
            r("ur0", k, None, (20, 30)),
            one,
        ];
        let c = stale(&ops);
        assert_eq!(c.violations, 1, "{c:?}");
        assert!(c.details[0].contains("got nil"), "{c:?}");
    }

    #[test]
    fn unknown_and_one_level_writes_do_not_oblige_readers() {
        let k = "r:0:0";
        let mut one = w(k, 2, (20, 30), Outcome::Ok);
        one.level = "ONE".into();
        let ops = vec![
            w(k, 1, (0, 10), Outcome::Ok),
            one,
            w(k, 3, (40, 50), Outcome::Unknown),
            r("rr0", k, Some(1), (60, 70)),
            // Reading the unknown write's value is allowed too.
            r("rr0", k, Some(3), (80, 90)),
        ];
        assert!(stale(&ops).passed());
    }

    #[test]
    fn a_backwards_read_is_caught_across_readers_but_not_when_concurrent() {
        let k = "r:0:0";
        let ops = vec![
            w(k, 1, (0, 5), Outcome::Ok),
            w(k, 2, (6, 100), Outcome::Unknown),
            r("rr0", k, Some(2), (10, 20)),
            // Overlaps rr0's read: may see the older value.
            r("rr1", k, Some(1), (15, 25)),
            // Starts after rr0's read completed: must not go back to 1.
            r("rr1", k, Some(1), (30, 40)),
        ];
        let c = backwards(&ops);
        assert_eq!(c.violations, 1, "{c:?}");
        assert!(c.details[0].contains("rr1") && c.details[0].contains("older than seq 2"));
    }

    #[test]
    fn one_readers_values_going_backwards_is_caught() {
        let k = "r:1:0";
        let ops = vec![
            r("rr0", k, Some(3), (0, 10)),
            r("rr0", k, Some(2), (11, 20)),
        ];
        let c = backwards(&ops);
        assert_eq!(c.violations, 1);
        assert!(c.details[0].contains("the same reader"), "{c:?}");
    }

    #[test]
    fn corrupt_and_phantom_values_are_caught() {
        let k = "r:0:0";
        let good = make_value(k, 1, "p");
        let mut flipped = good.clone().into_bytes();
        flipped[2] ^= 1;
        let flipped = String::from_utf8(flipped).unwrap();
        let never_written = make_value(k, 9, "zz");
        let ops = vec![
            w(k, 1, (0, 10), Outcome::Ok),
            op("rr0", OpKind::Read, k, Some(good), (20, 30), Outcome::Ok),
            op("rr0", OpKind::Read, k, Some(flipped), (40, 50), Outcome::Ok),
            op(
                "rr0",
                OpKind::Read,
                k,
                Some(never_written),
                (60, 70),
                Outcome::Ok,
            ),
            op("rr0", OpKind::Read, k, None, (80, 90), Outcome::Ok),
        ];
        let c = corrupt(&ops);
        assert_eq!(c.violations, 2, "{c:?}");
        assert!(c.details[0].starts_with("corrupt"), "{c:?}");
        assert!(c.details[1].starts_with("phantom"), "{c:?}");
    }

    #[test]
    fn a_correct_history_passes_every_checker() {
        let k = "r:0:0";
        let u = make_value("w:0:0", 1, "p");
        let ops = vec![
            op(
                "w0",
                OpKind::Write,
                "w:0:0",
                Some(u.clone()),
                (0, 10),
                Outcome::Ok,
            ),
            w(k, 1, (0, 10), Outcome::Ok),
            w(k, 2, (20, 30), Outcome::Unknown),
            w(k, 3, (40, 50), Outcome::Ok),
            r("rr0", k, Some(1), (11, 19)),
            r("rr1", k, Some(2), (25, 35)),
            r("rr0", k, Some(3), (45, 55)),
            r("rr1", k, Some(3), (60, 70)),
            r("ur0", "w:0:0", Some(1), (11, 12)),
        ];
        assert!(corrupt(&ops).passed(), "{:?}", corrupt(&ops));
        assert!(stale(&ops).passed(), "{:?}", stale(&ops));
        assert!(backwards(&ops).passed(), "{:?}", backwards(&ops));
        let (l, m, _) = lost(&ops, &snap(&[("w:0:0", &u, &[0, 1, 2])]), &placement());
        assert!(l.passed() && m.passed());
    }

    #[test]
    fn replicas_that_disagree_or_lack_a_key_have_not_converged() {
        let mut s = snap(&[("a", "x", &[0, 1, 2]), ("b", "y", &[0, 1])]);
        assert_eq!(converged(&s, &placement()).violations, 1);
        s.cells.get_mut("b").unwrap().insert(2, cell("y"));
        assert!(converged(&s, &placement()).passed());
        s.cells.get_mut("a").unwrap().get_mut(&1).unwrap().timestamp = 2;
        let c = converged(&s, &placement());
        assert_eq!(c.violations, 1);
        assert!(c.details[0].starts_with("a:"), "{c:?}");
    }

    #[test]
    fn guards_name_what_was_too_little() {
        let ops = vec![
            w("r:0:0", 1, (0, 10), Outcome::Ok),
            w("r:0:0", 2, (20, 30), Outcome::Ok),
            w("r:0:0", 3, (40, 50), Outcome::Fail),
        ];
        let faults = vec![Fault {
            id: 9,
            kind: "kill".into(),
            detail: String::new(),
            nodes: vec![1],
            start_ns: 15,
            end_ns: Some(35),
        }];
        let g = Guards {
            min_acked_writes: 3,
            min_faults: 1,
            min_quiet_ok: 1,
        };
        let cs = guards(&ops, &faults, &g);
        let failed: Vec<&str> = cs
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, vec!["guard-acked"]);
        // The write during the fault is not quiet; only one quiet success.
        let g = Guards {
            min_quiet_ok: 2,
            ..Guards::default()
        };
        let cs = guards(&ops, &faults, &g);
        assert!(
            !cs[2].passed() && cs[2].details[0].contains("quiet"),
            "{cs:?}"
        );
    }
}
