//! `skew-writes` (issue 17): one node of three (RF 3) runs with its wall clock off —
//! ±120 s and ±100 ms under the default `max_clock_offset_ms` (500), ±2 s with it raised
//! to 5 000 — while one client writes the same keys alternately through it and through a
//! healthy node, back to back (v(i) through one, v(i+1) through the other, so two writes of a
//! key are milliseconds apart: well inside every skew), then reads every key through the
//! healthy nodes.
//!
//! - A skew above the bound: the skewed node refuses to coordinate writes (`-ERR clock skew`,
//!   a refusal before anything is sent, so those writes are known not to have happened), its
//!   `/v1/health` says `clock_skew`, every node's `MEMBERS` shows it `S…` (and only it), the
//!   healthy nodes' `hearsay_cluster_clock_skew_microseconds{peer}` names it with the offset,
//!   and at least 95 % of the writes through the healthy node are acknowledged.
//! - A skew within the bound: every write is accepted, and the node is not flagged.
//! - Always: no acknowledged write is lost — each key reads as its newest acknowledged value
//!   (or a later write whose outcome is unknown), at QUORUM through the third node, at ALL
//!   through the healthy writer, and once more at QUORUM through the formerly skewed node
//!   after its clock is back.
//!
//! Each offset is a `skew` fault: set, held until the nodes' measurements show it, writes
//! and reads, then set back to 0 and held until the measurements show that.

use super::Ctx;
use crate::checkers::{self, Check};
use crate::faults;
use crate::health::{self, Health};
use crate::history::{History, Outcome};
use crate::node::{Cluster, ConfigOverride};
use crate::util::poll;
use crate::workload::{self, Client, make_value, parse_value, payload};
use rand::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Nodes of the cluster (the case: one skewed node of three, RF 3).
const NODES: usize = 3;
/// Keys written per offset.
const KEYS: usize = 100;
/// Rounds per offset; each round writes every key twice, once through each node, the node
/// going first alternating by key and by round.
const ROUNDS: usize = 3;
/// The node's default `max_clock_offset_ms` (`DEFAULT_MAX_CLOCK_OFFSET_MS`).
const DEFAULT_MAX_OFFSET_MS: u64 = 500;
/// `max_clock_offset_ms` of the ±2 s cases: above the skew, so it must be tolerated.
const WIDE_MAX_OFFSET_MS: u64 = 5_000;
/// At least this share of writes through the healthy node is acknowledged under any skew
/// (the acceptance: the healthy nodes go on).
const HEALTHY_MIN_OK_SHARE: f64 = 0.95;
/// From setting an offset to every node's measurement showing it: libfaketime re-reads its
/// file within 1.1 s (`SKEW_TAKES_EFFECT`), nodes ping every peer every 500 ms
/// (`CLOCK_PROBE_INTERVAL_MS`), a ping waits at most 1 s; the rest is margin for two shared
/// cores.
const SKEW_SEEN_WITHIN: Duration = Duration::from_secs(8);
/// From the skewed node's health saying `clock_skew` to every node's `MEMBERS` showing it
/// sick: health is published after each 500 ms probe round and gossip spreads it in 200 ms
/// rounds (three nodes: one or two rounds); margin for two shared cores.
const SICK_GOSSIP_WITHIN: Duration = Duration::from_secs(5);
/// From a node that was skewed being healthy again (`/v1/health` 200, `U` everywhere) to a
/// write through it being acknowledged: it coordinates again as soon as its verdict clears,
/// so this is margin for one slow write on two shared cores.
const SKEW_RECOVER_WITHIN: Duration = Duration::from_secs(8);
/// When that bound is missed, writes through the node are tried this long more, one every
/// [`RECOVERY_DIAGNOSE_EVERY`], to report when it does take them again (not a bound: the
/// check has failed already). Above the largest offset, 120 s, so that a node whose
/// timestamps stay ahead by the offset is seen recovering.
const RECOVERY_DIAGNOSE_WITHIN: Duration = Duration::from_secs(150);
const RECOVERY_DIAGNOSE_EVERY: Duration = Duration::from_secs(1);
/// A measured offset may differ from the set one by this share of it (the estimate is off by
/// up to half a ping's round trip, and libfaketime's offset file has millisecond precision)...
const MEASURE_TOLERANCE_SHARE: f64 = 0.25;
/// ... and by at least this much, in µs (for the 0 and ±100 ms offsets: a round trip
/// between namespaces on a loaded 2-core machine can reach tens of milliseconds).
const MEASURE_TOLERANCE_MIN_US: f64 = 20_000.0;
/// Attempts per key of a final read before it counts as unread (a read can time out on a
/// loaded machine; three failures in a row are not that).
const READ_ATTEMPTS: usize = 3;
/// Between read attempts of one key.
const READ_RETRY: Duration = Duration::from_millis(200);
/// The node's metric of each peer's clock offset (the peer's wall clock minus ours, µs).
const SKEW_METRIC: &str = "hearsay_cluster_clock_skew_microseconds";
/// The node's metric of the median peer offset its own clock verdict used (µs): set after
/// the verdict, so once it shows the new offset the node has judged its clock with it.
const MEDIAN_METRIC: &str = "hearsay_clock_median_peer_offset_microseconds";
/// What a node's log says when it starts refusing writes for its clock.
const REFUSING_LOG: &str = "refusing to coordinate writes";

/// One offset of the skewed node's wall clock.
#[derive(Clone, Copy, Debug)]
struct Case {
    /// Seconds (positive: ahead).
    offset_s: f64,
    /// Whether the node must judge its clock off (|offset| above `max_clock_offset_ms`).
    flagged: bool,
}

impl Case {
    fn name(&self) -> String {
        if self.offset_s.abs() < 1.0 {
            format!("{:+}ms", (self.offset_s * 1000.0).round() as i64)
        } else {
            format!("{:+}s", self.offset_s.round() as i64)
        }
    }
}

/// One cluster configuration and the offsets run under it.
struct Phase {
    max_offset_ms: u64,
    cases: Vec<Case>,
}

/// Counts of one offset, for the report and the checks.
#[derive(Debug, Default)]
struct Tally {
    /// Writes through the skewed node: acknowledged, refused (clock skew), other failures.
    skewed: (usize, usize, usize),
    /// Writes through the healthy writer.
    healthy: (usize, usize, usize),
    /// Keys whose final read returned an older value than the newest acknowledged write.
    lost: usize,
    /// Keys whose final read returned a value from a write that was refused.
    refused_applied: usize,
    /// Keys that could not be read.
    unread: usize,
    /// Keys checked by the final reads (per read pass).
    read: usize,
}

/// Every write of one key, in the order sent (they are sequential: one client).
#[derive(Debug, Default)]
struct KeyWrites {
    /// (seq, outcome, refused for its clock)
    writes: Vec<(u64, Outcome, bool)>,
}

impl KeyWrites {
    fn newest_acked(&self) -> u64 {
        self.writes
            .iter()
            .filter(|w| w.1 == Outcome::Ok)
            .map(|w| w.0)
            .max()
            .unwrap_or(0)
    }
}

/// `skew-writes`.
pub fn skew_writes(ctx: &mut Ctx) -> anyhow::Result<()> {
    if !faults::faketime_available() {
        ctx.report.skipped = Some(format!(
            "needs libfaketime ({}; Debian package libfaketime)",
            faults::LIBFAKETIME
        ));
        return Ok(());
    }
    let phases = [
        Phase {
            max_offset_ms: DEFAULT_MAX_OFFSET_MS,
            // +120 s last: a clock that ran ahead leaves the node's HLC ahead (it never goes
            // back), which must not leak into the other offsets' verdicts.
            cases: vec![
                Case {
                    offset_s: -120.0,
                    flagged: true,
                },
                Case {
                    offset_s: 0.1,
                    flagged: false,
                },
                Case {
                    offset_s: -0.1,
                    flagged: false,
                },
                Case {
                    offset_s: 120.0,
                    flagged: true,
                },
            ],
        },
        Phase {
            max_offset_ms: WIDE_MAX_OFFSET_MS,
            cases: vec![
                Case {
                    offset_s: 2.0,
                    flagged: false,
                },
                Case {
                    offset_s: -2.0,
                    flagged: false,
                },
            ],
        },
    ];
    let mut checks = SkewChecks::default();
    for phase in &phases {
        run_phase(ctx, phase, &mut checks)?;
    }
    let ops = ctx.history.ops();
    let mut c = checks.into_checks();
    c.push(checkers::stale(&ops));
    c.push(checkers::backwards(&ops));
    c.push(checkers::corrupt(&ops));
    ctx.report.checks.extend(c);
    Ok(())
}

/// The checks, accumulated over the phases.
#[derive(Default)]
struct SkewChecks {
    lost: Option<Check>,
    healthy: Option<Check>,
    refuses: Option<Check>,
    accepted: Option<Check>,
    health: Option<Check>,
    metric: Option<Check>,
    recovers: Option<Check>,
    log: Option<Check>,
    summaries: BTreeMap<&'static str, Vec<String>>,
}

impl SkewChecks {
    fn get(&mut self, name: &'static str) -> &mut Check {
        let slot = match name {
            "skew-lost" => &mut self.lost,
            "skew-healthy-writes" => &mut self.healthy,
            "skew-refuses" => &mut self.refuses,
            "skew-accepted" => &mut self.accepted,
            "skew-health" => &mut self.health,
            "skew-metric" => &mut self.metric,
            "skew-recovers" => &mut self.recovers,
            "skew-log" => &mut self.log,
            other => unreachable!("no check {other}"),
        };
        slot.get_or_insert_with(|| Check::new(name))
    }

    fn summary(&mut self, name: &'static str, s: String) {
        self.get(name);
        self.summaries.entry(name).or_default().push(s);
    }

    fn into_checks(mut self) -> Vec<Check> {
        let summaries = std::mem::take(&mut self.summaries);
        let mut out: Vec<Check> = [
            self.lost,
            self.healthy,
            self.refuses,
            self.accepted,
            self.health,
            self.metric,
            self.recovers,
            self.log,
        ]
        .into_iter()
        .flatten()
        .collect();
        for c in &mut out {
            if let Some(s) = summaries.get(c.name.as_str()) {
                c.summary = s.join("; ");
            }
        }
        out
    }
}

fn run_phase(ctx: &mut Ctx, phase: &Phase, checks: &mut SkewChecks) -> anyhow::Result<()> {
    let dir = ctx
        .dir
        .join(format!("max-offset-{}ms", phase.max_offset_ms));
    std::fs::create_dir_all(&dir)?;
    let mut opts = ctx.cluster_options();
    opts.nodes = NODES;
    opts.rf = NODES;
    if phase.max_offset_ms != DEFAULT_MAX_OFFSET_MS {
        // Before the run's own `--set`s, which win.
        opts.overrides.insert(
            0,
            ConfigOverride {
                table: "cluster".into(),
                key: "max_clock_offset_ms".into(),
                value: phase.max_offset_ms.to_string(),
            },
        );
    }
    let skewed = ctx.rng.random_range(0..NODES);
    let others: Vec<usize> = (0..NODES).filter(|i| *i != skewed).collect();
    let writer = others[ctx.rng.random_range(0..others.len())];
    let reader = others
        .iter()
        .copied()
        .find(|i| *i != writer)
        .unwrap_or(writer);
    let file = dir.join(format!("faketime-n{skewed}.rc"));
    faults::set_skew(&file, 0.0)?;
    opts.env.insert(skewed, faults::faketime_env(&file));
    let cluster = ctx.start_cluster_in(opts, &dir)?;
    ctx.report.lines.push(format!(
        "max_clock_offset_ms {}: n{skewed} under libfaketime, writes alternate through n{skewed} \
         and n{writer}, reads through n{reader}",
        phase.max_offset_ms
    ));
    let h = ctx.history.clone();
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.client).collect();
    let mut quorum = Client::new(addrs.clone(), "QUORUM");
    let mut all = Client::new(addrs.clone(), "ALL");
    let mut keys_of_phase: Vec<(String, KeyWrites)> = Vec::new();
    let nodes = Nodes {
        skewed,
        writer,
        reader,
    };

    for case in &phase.cases {
        let name = case.name();
        let fault = h.fault_start(
            "skew",
            &format!(
                "n{skewed}'s wall clock {name} (max_clock_offset_ms {})",
                phase.max_offset_ms
            ),
            &[skewed],
        );
        let set_at = Instant::now();
        faults::set_skew(&file, case.offset_s)?;
        // Held until every node measures it (and, above the bound, the node says so).
        let seen = wait_measured(&cluster, &nodes, case.offset_s * 1e6);
        match &seen {
            Ok(()) => checks.summary(
                "skew-metric",
                format!(
                    "{name}: n{skewed} named with its offset {:.1} s after the step",
                    set_at.elapsed().as_secs_f64()
                ),
            ),
            Err(e) => checks
                .get("skew-metric")
                .violation(format!("{name}: {e:#}")),
        }
        let mut gossip_in = None;
        if case.flagged {
            let sick = poll(
                "the skewed node's /v1/health to say clock_skew",
                SKEW_SEEN_WITHIN,
                || {
                    let hh =
                        health::health(&cluster.nodes[skewed]).map_err(|e| format!("{e:#}"))?;
                    if hh.status != 200 && hh.has("clock_skew") {
                        Ok(hh)
                    } else {
                        Err(hh.describe())
                    }
                },
            );
            match sick {
                Ok(hh) => {
                    let want = if case.offset_s > 0.0 {
                        "ahead"
                    } else {
                        "behind"
                    };
                    let text = hh.reasons.join("; ");
                    if !text.contains("clock skew") || !text.contains(want) {
                        checks.get("skew-health").violation(format!(
                            "{name}: n{skewed}'s health reason does not say its clock is {want}: {text}"
                        ));
                    }
                    let at = Instant::now();
                    let shown = poll(
                        "every node's MEMBERS to show the skewed node sick",
                        SICK_GOSSIP_WITHIN,
                        || health::members_show_sick(&cluster, &mut quorum, &[skewed]),
                    );
                    match shown {
                        Ok(()) => gossip_in = Some(at.elapsed()),
                        Err(e) => checks
                            .get("skew-health")
                            .violation(format!("{name}: {e:#}")),
                    }
                    checks.summary(
                        "skew-health",
                        format!(
                            "{name}: n{skewed} 503 {:?}{}",
                            hh.codes,
                            gossip_in.map_or(String::new(), |d| format!(
                                ", S in every MEMBERS {:.1} s later",
                                d.as_secs_f64()
                            ))
                        ),
                    );
                }
                Err(e) => checks
                    .get("skew-health")
                    .violation(format!("{name}: {e:#}")),
            }
        }
        // The healthy nodes are never flagged; within the bound neither is the skewed one.
        let flagged_now: Vec<usize> = if case.flagged { vec![skewed] } else { vec![] };
        healthy_unflagged(
            &cluster,
            &nodes,
            case,
            &flagged_now,
            checks,
            &name,
            "before the writes",
        );

        // Writes: every key twice a round, back to back through the two nodes.
        let mut keys: Vec<(String, KeyWrites)> = (0..KEYS)
            .map(|k| (format!("r:skew{name}:{k}"), KeyWrites::default()))
            .collect();
        let mut t = Tally::default();
        let worker = format!("skew{name}");
        let mut refusal_text = None;
        let mut other_errors: Vec<String> = Vec::new();
        for round in 0..ROUNDS {
            for (k, (key, kw)) in keys.iter_mut().enumerate() {
                let order = if (round + k) % 2 == 0 {
                    [skewed, writer]
                } else {
                    [writer, skewed]
                };
                for node in order {
                    let seq = kw.writes.len() as u64 + 1;
                    let value = make_value(key, seq, &payload(&mut ctx.rng));
                    let (o, err) =
                        workload::recorded_set_err(&h, &mut quorum, &worker, node, key, &value);
                    let refused = err.as_deref().is_some_and(|e| {
                        e.contains("clock skew") && workload::is_coordinator_refusal(e)
                    });
                    let tally = if node == skewed {
                        &mut t.skewed
                    } else {
                        &mut t.healthy
                    };
                    match (o, refused) {
                        (Outcome::Ok, _) => tally.0 += 1,
                        (_, true) => {
                            tally.1 += 1;
                            refusal_text.get_or_insert_with(|| err.clone().unwrap_or_default());
                        }
                        _ => {
                            tally.2 += 1;
                            if other_errors.len() < 3 {
                                other_errors.push(format!(
                                    "{key} seq {seq} through n{node}: {}",
                                    err.clone().unwrap_or_default()
                                ));
                            }
                        }
                    }
                    kw.writes.push((seq, o, refused));
                }
            }
        }
        healthy_unflagged(
            &cluster,
            &nodes,
            case,
            &flagged_now,
            checks,
            &name,
            "after the writes",
        );

        // Reads while the skew holds: QUORUM through the third node, then ALL through the
        // healthy writer (QUORUM first: ALL repairs what it reads).
        for (client, node, level) in [(&mut quorum, reader, "QUORUM"), (&mut all, writer, "ALL")] {
            read_back(
                &h,
                client,
                node,
                &worker,
                &keys,
                &mut t,
                checks,
                &format!("{name} {level} via n{node}"),
            );
        }

        // Verdicts of this offset.
        let healthy_total = t.healthy.0 + t.healthy.1 + t.healthy.2;
        let skewed_total = t.skewed.0 + t.skewed.1 + t.skewed.2;
        if (t.healthy.0 as f64) < HEALTHY_MIN_OK_SHARE * healthy_total as f64 || healthy_total == 0
        {
            checks.get("skew-healthy-writes").violation(format!(
                "{name}: only {} of {healthy_total} writes through the healthy n{writer} \
                 acknowledged (need ≥ {} %); e.g. {other_errors:?}",
                t.healthy.0,
                HEALTHY_MIN_OK_SHARE * 100.0
            ));
        }
        checks.summary(
            "skew-healthy-writes",
            format!("{name}: {} of {healthy_total}", t.healthy.0),
        );
        if case.flagged {
            // Every write through the skewed node refused, naming its clock: it was
            // judged off before the first one (waited for above).
            if t.skewed.0 > 0 || t.skewed.1 < skewed_total || skewed_total == 0 {
                checks.get("skew-refuses").violation(format!(
                    "{name}: through the skewed n{skewed}: {} acknowledged, {} refused for its \
                     clock, {} other of {skewed_total} writes; e.g. {other_errors:?}",
                    t.skewed.0, t.skewed.1, t.skewed.2
                ));
            }
            checks.summary(
                "skew-refuses",
                format!("{name}: {} of {skewed_total} refused", t.skewed.1),
            );
            if let Some(r) = &refusal_text {
                ctx.report.lines.push(format!("{name}: the refusal: {r}"));
            }
        } else {
            let acked = t.skewed.0 + t.healthy.0;
            let total = skewed_total + healthy_total;
            if acked < total || total == 0 {
                checks.get("skew-accepted").violation(format!(
                    "{name} (max offset {} ms): {acked} of {total} writes acknowledged \
                     (through n{skewed}: {} refused, {} other; through n{writer}: {} refused, \
                     {} other); e.g. {refusal_text:?} {other_errors:?}",
                    phase.max_offset_ms, t.skewed.1, t.skewed.2, t.healthy.1, t.healthy.2
                ));
            }
            checks.summary("skew-accepted", format!("{name}: {acked} of {total}"));
        }
        let lost = t.lost + t.refused_applied + t.unread;
        checks.summary(
            "skew-lost",
            format!("{name}: {lost} of {} key reads", t.read),
        );
        ctx.report.lines.push(format!(
            "{name}: through n{skewed} (skewed) acked {} refused {} other {}; through n{writer} \
             acked {} refused {} other {}; final reads {} (QUORUM + ALL): lost {}, refused \
             write read {}, unread {}",
            t.skewed.0,
            t.skewed.1,
            t.skewed.2,
            t.healthy.0,
            t.healthy.1,
            t.healthy.2,
            t.read,
            t.lost,
            t.refused_applied,
            t.unread
        ));

        // Back to 0, held until every node measures it and the node coordinates again.
        faults::set_skew(&file, 0.0)?;
        let back = Instant::now();
        // A node whose clock ran ahead stamped its own clock's readings into its hybrid
        // clock, which never goes back: it stays `clock_skew` (refusing writes, saying its
        // timestamps run ahead) until the cluster's time catches up with them, so its
        // recovery takes the offset itself; one that ran behind recovers at once.
        let catch_up = Duration::from_secs_f64(case.offset_s.max(0.0));
        let cleared = wait_measured(&cluster, &nodes, 0.0).and_then(|()| {
            poll(
                "the skewed node to be healthy again",
                SKEW_SEEN_WITHIN + catch_up,
                || {
                    let hh =
                        health::health(&cluster.nodes[skewed]).map_err(|e| format!("{e:#}"))?;
                    if hh.status == 200 {
                        Ok(())
                    } else {
                        Err(hh.describe())
                    }
                },
            )
            .and_then(|()| {
                // And its peers heard (gossip), before the next offset checks for no S.
                poll(
                    "every node's MEMBERS to show every node up",
                    SICK_GOSSIP_WITHIN,
                    || health::members_show_sick(&cluster, &mut quorum, &[]),
                )
            })
        });
        h.fault_end(fault);
        if case.flagged {
            // It takes writes again: one through it, to a key of its own.
            let r = cleared.and_then(|()| {
                let key = format!("r:skew{name}:back");
                let mut seq = 0;
                poll(
                    "a write through the node to be accepted",
                    SKEW_RECOVER_WITHIN,
                    || {
                        seq += 1;
                        let value = make_value(&key, seq, "back");
                        match workload::recorded_set_err(
                            &h,
                            &mut quorum,
                            &worker,
                            skewed,
                            &key,
                            &value,
                        ) {
                            (Outcome::Ok, _) => Ok(()),
                            (_, e) => Err(e.unwrap_or_default()),
                        }
                    },
                )
            });
            match r {
                Ok(()) => checks.summary(
                    "skew-recovers",
                    format!(
                        "{name}: writes through n{skewed} accepted {:.1} s after its clock was set back",
                        back.elapsed().as_secs_f64()
                    ),
                ),
                Err(e) => {
                    // For the report: how long it does take (not a bound of the check).
                    let key = format!("r:skew{name}:late");
                    let mut seq = 0;
                    let mut took = None;
                    while back.elapsed() < RECOVERY_DIAGNOSE_WITHIN {
                        seq += 1;
                        let value = make_value(&key, seq, "late");
                        if workload::recorded_set_err(&h, &mut quorum, &worker, skewed, &key, &value).0
                            == Outcome::Ok
                        {
                            took = Some(back.elapsed());
                            break;
                        }
                        std::thread::sleep(RECOVERY_DIAGNOSE_EVERY);
                    }
                    checks.get("skew-recovers").violation(format!(
                        "{name}: n{skewed} healthy again (/v1/health 200, U everywhere) but {e:#}; \
                         writes through it accepted again only {}",
                        match took {
                            Some(d) => format!("{:.0} s after its clock was set back", d.as_secs_f64()),
                            None => format!(
                                "not within {} s",
                                RECOVERY_DIAGNOSE_WITHIN.as_secs()
                            ),
                        }
                    ));
                }
            }
        } else if let Err(e) = cleared {
            checks
                .get("skew-metric")
                .violation(format!("{name}, set back to 0: {e:#}"));
        }
        keys_of_phase.extend(keys);
    }

    // Once more, with every clock right: every key of the phase at QUORUM through the node
    // that was skewed (what hints or repairs did since must not bring an older value back).
    let mut t = Tally::default();
    read_back(
        &h,
        &mut quorum,
        skewed,
        "skew-final",
        &keys_of_phase,
        &mut t,
        checks,
        &format!(
            "max offset {} ms, at the end, QUORUM via n{skewed}",
            phase.max_offset_ms
        ),
    );
    checks.summary(
        "skew-lost",
        format!(
            "end of max offset {} ms: {} of {} key reads",
            phase.max_offset_ms,
            t.lost + t.refused_applied + t.unread,
            t.read
        ),
    );

    // Logs: the refusal is logged by the skewed node only.
    let flagged_any = phase.cases.iter().any(|c| c.flagged);
    for n in &cluster.nodes {
        let mut text = String::new();
        for inc in 1..=n.incarnation {
            text.push_str(&std::fs::read_to_string(n.log_path(inc)).unwrap_or_default());
        }
        let refusing = text.lines().filter(|l| l.contains(REFUSING_LOG)).count();
        if n.index == skewed && flagged_any && refusing == 0 {
            checks.get("skew-log").violation(format!(
                "the skewed n{skewed}'s log never says it is {REFUSING_LOG} ({})",
                n.log_path(n.incarnation).display()
            ));
        } else if (n.index != skewed || !flagged_any) && refusing > 0 {
            checks.get("skew-log").violation(format!(
                "n{}'s log says {refusing} times that it is {REFUSING_LOG}, with max offset {} ms \
                 and n{skewed} the skewed node",
                n.index, phase.max_offset_ms
            ));
        }
        if n.index == skewed && flagged_any {
            checks.summary(
                "skew-log",
                format!(
                    "max offset {} ms: n{skewed} logged the refusal {refusing} times, the others 0",
                    phase.max_offset_ms
                ),
            );
        }
    }
    // The cluster goes with its namespaces; its data too when nothing failed.
    drop(cluster);
    Ok(())
}

/// Which node does what.
struct Nodes {
    skewed: usize,
    writer: usize,
    reader: usize,
}

/// Tolerance of a measured offset against `want_us`.
fn tolerance_us(want_us: f64) -> f64 {
    (want_us.abs() * MEASURE_TOLERANCE_SHARE).max(MEASURE_TOLERANCE_MIN_US)
}

/// Waits until both healthy nodes measure the skewed peer at `want_us` and the other
/// healthy peer near 0, and the skewed node's own verdict used a median of `-want_us`.
fn wait_measured(cluster: &Cluster, nodes: &Nodes, want_us: f64) -> anyhow::Result<()> {
    let tol = tolerance_us(want_us);
    let skewed_id = cluster.nodes[nodes.skewed].node_id.clone();
    poll(
        &format!(
            "every node to measure n{}'s clock {:+.3} s off",
            nodes.skewed,
            want_us / 1e6
        ),
        SKEW_SEEN_WITHIN,
        || {
            for &i in &[nodes.writer, nodes.reader] {
                let n = &cluster.nodes[i];
                let text = health::metrics(n).map_err(|e| format!("{e:#}"))?;
                let m = health::metric_by_label(&text, SKEW_METRIC, "peer");
                let got = m.get(&skewed_id).copied().ok_or_else(|| {
                    format!(
                        "{} has no {SKEW_METRIC} for n{} ({m:?})",
                        n.name, nodes.skewed
                    )
                })?;
                if (got - want_us).abs() > tol {
                    return Err(format!(
                        "{} measures n{} at {:+.3} s",
                        n.name,
                        nodes.skewed,
                        got / 1e6
                    ));
                }
                // The largest offset it measures is the skewed node's.
                for (peer, v) in &m {
                    if *peer != skewed_id && v.abs() > tolerance_us(0.0) {
                        return Err(format!(
                            "{} measures the healthy peer {peer} at {:+.3} s",
                            n.name,
                            v / 1e6
                        ));
                    }
                }
            }
            let text =
                health::metrics(&cluster.nodes[nodes.skewed]).map_err(|e| format!("{e:#}"))?;
            let median = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(MEDIAN_METRIC)
                        .and_then(|r| r.trim().parse::<f64>().ok())
                })
                .ok_or_else(|| format!("n{} has no {MEDIAN_METRIC}", nodes.skewed))?;
            if (median + want_us).abs() > tol {
                return Err(format!(
                    "n{}'s own verdict used a median peer offset of {:+.3} s",
                    nodes.skewed,
                    median / 1e6
                ));
            }
            Ok(())
        },
    )
}

/// Checks that the healthy nodes answer `/v1/health` 200 and every `MEMBERS` shows exactly
/// `flagged` sick (within the bound the skewed node must not be flagged either).
fn healthy_unflagged(
    cluster: &Cluster,
    nodes: &Nodes,
    case: &Case,
    flagged: &[usize],
    checks: &mut SkewChecks,
    name: &str,
    when: &str,
) {
    let mut probe = Client::new(cluster.nodes.iter().map(|n| n.client).collect(), "ONE");
    for n in &cluster.nodes {
        if flagged.contains(&n.index) {
            continue;
        }
        match health::health(n) {
            Ok(Health { status: 200, .. }) => {}
            Ok(hh) => checks.get("skew-health").violation(format!(
                "{name}, {when}: n{} ({}) answers /v1/health {}",
                n.index,
                if n.index == nodes.skewed {
                    "skewed within the bound"
                } else {
                    "healthy"
                },
                hh.describe()
            )),
            Err(e) => checks
                .get("skew-health")
                .violation(format!("{name}, {when}: n{}'s /v1/health: {e:#}", n.index)),
        }
    }
    if let Err(e) = health::members_show_sick(cluster, &mut probe, flagged) {
        checks
            .get("skew-health")
            .violation(format!("{name}, {when}: {e}"));
    }
    if !case.flagged && when == "after the writes" {
        checks.summary(
            "skew-health",
            format!("{name}: no node flagged, every /v1/health 200"),
        );
    }
}

/// Reads every key once through `node` and compares with its newest acknowledged write.
#[allow(clippy::too_many_arguments)]
fn read_back(
    h: &History,
    client: &mut Client,
    node: usize,
    worker: &str,
    keys: &[(String, KeyWrites)],
    t: &mut Tally,
    checks: &mut SkewChecks,
    what: &str,
) {
    for (key, kw) in keys {
        let need = kw.newest_acked();
        let mut got = None;
        for _ in 0..READ_ATTEMPTS {
            match workload::recorded_get(h, client, &format!("{worker}-read"), node, key) {
                (Outcome::Ok, v) => {
                    got = Some(v);
                    break;
                }
                _ => std::thread::sleep(READ_RETRY),
            }
        }
        t.read += 1;
        let Some(v) = got else {
            t.unread += 1;
            checks.get("skew-lost").violation(format!(
                "{what}: {key} could not be read ({READ_ATTEMPTS} attempts)"
            ));
            continue;
        };
        let seq = match v.as_deref().map(|v| parse_value(key, v)) {
            None => 0,
            Some(Ok(s)) => s,
            // The corrupt checker reports it.
            Some(Err(_)) => continue,
        };
        if seq < need {
            t.lost += 1;
            checks.get("skew-lost").violation(format!(
                "{what}: {key} reads seq {seq}, but seq {need} was acknowledged (writes: {})",
                describe_writes(kw)
            ));
        } else if seq > need {
            match kw.writes.iter().find(|w| w.0 == seq) {
                Some((_, Outcome::Unknown, false)) => {}
                _ => {
                    t.refused_applied += 1;
                    checks.get("skew-lost").violation(format!(
                        "{what}: {key} reads seq {seq}, a write that was refused, over the \
                         acknowledged seq {need} (writes: {})",
                        describe_writes(kw)
                    ));
                }
            }
        }
    }
}

fn describe_writes(kw: &KeyWrites) -> String {
    kw.writes
        .iter()
        .map(|(s, o, refused)| {
            format!(
                "{s}:{}",
                match (o, refused) {
                    (Outcome::Ok, _) => "ok",
                    (_, true) => "refused",
                    (Outcome::Fail, _) => "fail",
                    (Outcome::Unknown, _) => "unknown",
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_carry_sign_and_unit() {
        let c = |offset_s| Case {
            offset_s,
            flagged: false,
        };
        assert_eq!(c(120.0).name(), "+120s");
        assert_eq!(c(-2.0).name(), "-2s");
        assert_eq!(c(0.1).name(), "+100ms");
        assert_eq!(c(-0.1).name(), "-100ms");
    }

    #[test]
    fn the_newest_acknowledged_write_ignores_refused_and_unknown_ones() {
        let kw = KeyWrites {
            writes: vec![
                (1, Outcome::Ok, false),
                (2, Outcome::Fail, true),
                (3, Outcome::Ok, false),
                (4, Outcome::Unknown, false),
            ],
        };
        assert_eq!(kw.newest_acked(), 3);
        assert_eq!(KeyWrites::default().newest_acked(), 0);
        assert_eq!(describe_writes(&kw), "1:ok 2:refused 3:ok 4:unknown");
    }
}
