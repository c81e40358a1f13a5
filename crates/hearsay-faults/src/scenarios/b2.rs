//! B2: pauses and clock skew. Random nodes are frozen with SIGSTOP for 1–8 s; two nodes
//! run under libfaketime and have their wall clocks stepped ±2 s for a while. Nothing
//! acknowledged may be lost; with hybrid logical clocks, no QUORUM read may be stale or
//! go backwards.

use super::{Audit, Ctx, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::Guards;
use crate::faults;
use crate::workload::Workload;
use rand::Rng;
use rand::seq::SliceRandom;
use std::time::{Duration, Instant};

/// Full run length.
const FULL_DURATION: Duration = Duration::from_secs(300);
/// CI run length.
const CI_DURATION: Duration = Duration::from_secs(90);
/// One fault per period of this many milliseconds.
const PERIOD_MS: std::ops::Range<u64> = 6_000..10_000;
/// SIGSTOP lasts this many milliseconds (TESTING.md B2: 1–8 s).
const PAUSE_MS: std::ops::Range<u64> = 1_000..8_001;
/// A skew is held this many milliseconds before the clock is set right.
const SKEW_HOLD_MS: std::ops::Range<u64> = 3_000..8_000;
/// The size of a skew step in seconds (TESTING.md B2: ±2 s).
const SKEW_S: f64 = 2.0;
/// Nodes run under libfaketime.
const SKEWED_NODES: usize = 2;
/// Acknowledged writes the full and CI runs need.
const FULL_MIN_ACKED: usize = 10_000;
const CI_MIN_ACKED: usize = 2_000;
/// Quiet successes the run needs.
const MIN_QUIET_OK: usize = 500;

/// `b2-pause-skew`.
pub fn pause_skew(ctx: &mut Ctx) -> anyhow::Result<()> {
    let duration = ctx.opts.duration.unwrap_or(if ctx.opts.ci {
        CI_DURATION
    } else {
        FULL_DURATION
    });
    let min_acked = ctx.opts.min_acked.unwrap_or(if ctx.opts.ci {
        CI_MIN_ACKED
    } else {
        FULL_MIN_ACKED
    });
    let mut opts = ctx.cluster_options();
    let mut skewed: Vec<(usize, std::path::PathBuf)> = Vec::new();
    if faults::faketime_available() {
        let mut order: Vec<usize> = (0..opts.nodes).collect();
        order.shuffle(&mut ctx.rng);
        for &i in order.iter().take(SKEWED_NODES.min(opts.nodes)) {
            let file = ctx.dir.join(format!("faketime-n{i}.rc"));
            faults::set_skew(&file, 0.0)?;
            opts.env.insert(i, faults::faketime_env(&file));
            skewed.push((i, file));
        }
        skewed.sort();
        ctx.report.lines.push(format!(
            "nodes under libfaketime: {:?}",
            skewed
                .iter()
                .map(|(i, _)| format!("n{i}"))
                .collect::<Vec<_>>()
        ));
    } else {
        ctx.report.lines.push(format!(
            "libfaketime not found at {}: pauses only, no clock skew",
            faults::LIBFAKETIME
        ));
    }
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let spec = ctx.workload_spec(&cluster);
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;

    let end = Instant::now() + duration;
    let (mut pauses, mut skews) = (0, 0);
    while Instant::now() < end {
        let period_start = Instant::now();
        let period = ctx.random_ms(PERIOD_MS.start, PERIOD_MS.end);
        let skew = !skewed.is_empty() && ctx.rng.random_bool(0.5);
        if skew {
            let (node, file) = skewed[ctx.rng.random_range(0..skewed.len())].clone();
            let offset = if ctx.rng.random_bool(0.5) {
                SKEW_S
            } else {
                -SKEW_S
            };
            let hold = ctx.random_ms(SKEW_HOLD_MS.start, SKEW_HOLD_MS.end);
            let id = h.fault_start(
                "skew",
                &format!("n{node}'s wall clock {offset:+.1} s"),
                &[node],
            );
            faults::set_skew(&file, offset)?;
            ctx.hold(&mut cluster, hold + faults::SKEW_TAKES_EFFECT)?;
            faults::set_skew(&file, 0.0)?;
            // The correction reaches the node within libfaketime's cache duration.
            ctx.hold(&mut cluster, faults::SKEW_TAKES_EFFECT)?;
            h.fault_end(id);
            skews += 1;
        } else {
            let node = ctx.rng.random_range(0..n);
            let hold = ctx.random_ms(PAUSE_MS.start, PAUSE_MS.end);
            let id = h.fault_start(
                "pause",
                &format!("SIGSTOP n{node} for {} ms", hold.as_millis()),
                &[node],
            );
            cluster.nodes[node].pause()?;
            let held = ctx.hold(&mut cluster, hold);
            cluster.nodes[node].resume()?;
            h.fault_end(id);
            held?;
            pauses += 1;
        }
        if let Some(rest) = (period_start + period).checked_duration_since(Instant::now()) {
            ctx.hold(&mut cluster, rest)?;
        }
    }
    for (_, file) in &skewed {
        faults::set_skew(file, 0.0)?;
    }
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w.stop();
    ctx.report.lines.push(format!(
        "{pauses} pauses and {skews} clock skews over {} s",
        duration.as_secs()
    ));
    let last_heal = end_faults(ctx, &mut cluster)?;
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: false,
            converge_within: super::CONVERGE_REPORT_WITHIN,
            hints_within: super::HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: min_acked,
                min_faults: ((duration.as_secs() / 8) / 2).max(1) as usize,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}
