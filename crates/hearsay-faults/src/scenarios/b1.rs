//! B1: mixed faults under load. Every ~10 s one fault — a partition (isolate one node,
//! 2|3 split, overlapping majorities, one-way) or kill -9 + restart — held for a few
//! seconds, then healed; QUORUM unique-key writers and registers throughout. Passes when
//! nothing acknowledged is lost, no QUORUM read is stale or goes backwards, no value is
//! corrupt, and the replicas converge within 60 s of the last heal.

use super::{Audit, Ctx, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::Guards;
use crate::faults::{self, Partition, PartitionKind};
use crate::workload::Workload;
use rand::Rng;
use std::time::{Duration, Instant};

/// Run length of the full B1 (TESTING.md: ≥ 20k acknowledged writes).
const FULL_DURATION: Duration = Duration::from_secs(600);
/// Run length of the CI variant (one mixed-fault run within the 10-minute CI suite).
const CI_DURATION: Duration = Duration::from_secs(90);
/// Acknowledged writes the full run needs (TESTING.md B1).
const FULL_MIN_ACKED: usize = 20_000;
/// Acknowledged writes the CI variant needs: a 90 s run on 2 shared cores acknowledges
/// several thousand QUORUM writes even with a node down or cut off half the time.
const CI_MIN_ACKED: usize = 3_000;
/// One fault per period of this many milliseconds (TESTING.md: "every ~10 s").
const FAULT_PERIOD_MS: std::ops::Range<u64> = 8_000..12_000;
/// How long a fault is held, in milliseconds: long enough for gossip to convict a cut-off
/// or dead node (1–2 s at 200 ms rounds) and for writes to be hinted.
const FAULT_HOLD_MS: std::ops::Range<u64> = 2_500..6_000;
/// Successful operations in quiet windows the run needs.
const MIN_QUIET_OK: usize = 500;

/// `b1-mixed`.
pub fn mixed(ctx: &mut Ctx) -> anyhow::Result<()> {
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
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let spec = ctx.workload_spec(&cluster);
    let mut w = Workload::start(&spec, h.clone());
    wait_acked(&w, 100, Duration::from_secs(30))?;

    let network = cluster.topo.network_faults();
    let end = Instant::now() + duration;
    let mut planned = 0;
    while Instant::now() < end {
        let period_start = Instant::now();
        let period = ctx.random_ms(FAULT_PERIOD_MS.start, FAULT_PERIOD_MS.end);
        let hold = ctx.random_ms(FAULT_HOLD_MS.start, FAULT_HOLD_MS.end);
        // Four partition kinds and a crash, equally likely; crashes only without root.
        let choice = if network {
            ctx.rng.random_range(0..=PartitionKind::ALL.len())
        } else {
            PartitionKind::ALL.len()
        };
        planned += 1;
        if choice < PartitionKind::ALL.len() {
            let p = Partition::random(PartitionKind::ALL[choice], n, &mut ctx.rng);
            let id = p.apply(&cluster, &h)?;
            ctx.hold(&mut cluster, hold)?;
            faults::heal(&cluster, &h, &[id])?;
        } else {
            let victim = ctx.rng.random_range(0..n);
            let id = h.fault_start("kill", &format!("kill -9 n{victim}, restart"), &[victim]);
            cluster.kill9(victim);
            ctx.hold(&mut cluster, hold)?;
            cluster.restart(victim)?;
            h.fault_end(id);
        }
        if let Some(rest) = (period_start + period).checked_duration_since(Instant::now()) {
            ctx.hold(&mut cluster, rest)?;
        }
    }
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w.stop();
    ctx.report.lines.push(format!(
        "{planned} faults over {:.0} s ({})",
        duration.as_secs_f64(),
        if network {
            "partitions and crashes"
        } else {
            "crashes only: not root"
        }
    ));
    let last_heal = end_faults(ctx, &mut cluster)?;
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal,
            require_convergence: true,
            converge_within: super::CONVERGE_WITHIN,
            hints_within: super::HINTS_WITHIN,
            guards: Guards {
                min_acked_writes: min_acked,
                // At least half the periods that fit the run.
                min_faults: ((duration.as_secs() / 10) / 2).max(1) as usize,
                min_quiet_ok: MIN_QUIET_OK,
            },
        },
    )
}
