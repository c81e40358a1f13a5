//! B4: hinted handoff. One node is partitioned away while clients write at ONE and at ANY
//! through every node (itself included); then two replicas of some keys are cut off from a
//! coordinator, whose QUORUM writes to those keys must fail (hints never count toward
//! QUORUM). After the heal, hints drain within 30 s and nothing acknowledged is missing
//! from any replica.

use super::{Audit, Ctx, KEYSPACE, QUIET_TAIL, audit, end_faults, wait_acked};
use crate::checkers::{Check, Guards};
use crate::faults::{self, Partition};
use crate::history::Outcome;
use crate::replicas;
use crate::workload::{self, Client, Workload, make_value, payload};
use rand::seq::SliceRandom;
use std::time::{Duration, Instant};

/// How long the node stays cut off while clients write at ONE and ANY.
const ISOLATION: Duration = Duration::from_secs(15);
/// How long the two-replica split lasts before the QUORUM probes (gossip may convict the
/// cut-off pair DOWN meanwhile; the probes must fail either way).
const SPLIT_SETTLE: Duration = Duration::from_secs(3);
/// QUORUM writes sent to keys with two of their three replicas cut off.
const QUORUM_PROBES: usize = 20;
/// TESTING.md B4: hints drain within 30 s of the heal.
const HINTS_WITHIN: Duration = Duration::from_secs(30);
/// Acknowledged writes the run needs.
const MIN_ACKED: usize = 1_000;
/// Quiet successes the run needs.
const MIN_QUIET_OK: usize = 100;

/// `b4-hints`.
pub fn hints(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.opts.nodes < 4 {
        anyhow::bail!("b4-hints needs at least 4 nodes (a coordinator outside a 2-node split)");
    }
    if !ctx.network_faults_possible() {
        ctx.report.skipped = Some("needs root: the partition is made with nftables".into());
        return Ok(());
    }
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let base = ctx.workload_spec(&cluster);
    let spec_one = workload::WorkloadSpec {
        unique_writers: 2,
        write_level: "ONE".into(),
        register_writers: 0,
        register_readers: 0,
        unique_readers: 0,
        tag: "one".into(),
        ..base.clone()
    };
    let spec_any = workload::WorkloadSpec {
        write_level: "ANY".into(),
        tag: "any".into(),
        seed: ctx.seed.wrapping_add(1),
        ..spec_one.clone()
    };
    let mut w_one = Workload::start(&spec_one, h.clone());
    let mut w_any = Workload::start(&spec_any, h.clone());
    wait_acked(&w_one, 50, Duration::from_secs(30))?;
    wait_acked(&w_any, 50, Duration::from_secs(30))?;
    let placement = replicas::placement(&cluster, 0, KEYSPACE)?;

    // One node cut off while clients write at ONE and ANY.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ctx.rng);
    let (x, y, z) = (order[0], order[1], order[2]);
    let iso = Partition::isolate(x, n);
    let iso_id = iso.apply(&cluster, &h)?;
    ctx.hold(&mut cluster, ISOLATION)?;

    // Two replicas (x, y) of some keys cut off from the rest: QUORUM through z must fail.
    let rest: Vec<usize> = (0..n).filter(|i| *i != x && *i != y).collect();
    let split = Partition::split(&[x.min(y), x.max(y)], &rest);
    let split_id = split.apply(&cluster, &h)?;
    h.fault_end(iso_id);
    ctx.hold(&mut cluster, SPLIT_SETTLE)?;
    let mut quorum = Client::new(base.addrs.clone(), "QUORUM");
    let mut not_quorum = Check::new("hints-not-quorum");
    let (mut failed, mut unknown) = (0, 0);
    let mut k = 0;
    let mut sent = 0;
    while sent < QUORUM_PROBES {
        let key = format!("hq:{k}");
        k += 1;
        let reps = placement.replicas(&key);
        if !(reps.contains(&x) && reps.contains(&y)) {
            continue;
        }
        sent += 1;
        let value = make_value(&key, 1, &payload(&mut ctx.rng));
        match workload::recorded_set(&h, &mut quorum, "hq", z, &key, &value) {
            Outcome::Ok => not_quorum.violation(format!(
                "{key}: QUORUM write through n{z} acknowledged with replicas n{x} and n{y} of \
                 {reps:?} cut off (a hint counted toward QUORUM?)"
            )),
            Outcome::Fail => failed += 1,
            Outcome::Unknown => unknown += 1,
        }
    }
    not_quorum.summary = format!(
        "{QUORUM_PROBES} QUORUM writes through n{z} with 2 of 3 replicas cut off: refused \
         {failed}, timed out {unknown}"
    );
    ctx.report.checks.push(not_quorum);

    // Heal; hints must drain within 30 s.
    faults::heal(&cluster, &h, &[split_id])?;
    let healed = Instant::now();
    ctx.report.lines.push(format!(
        "n{x} isolated {} s, then n{x},n{y} split off",
        ISOLATION.as_secs()
    ));
    ctx.hold(&mut cluster, QUIET_TAIL)?;
    w_one.stop();
    w_any.stop();
    let _ = end_faults(ctx, &mut cluster)?;
    let guards = Guards {
        min_acked_writes: MIN_ACKED,
        min_faults: 2,
        min_quiet_ok: MIN_QUIET_OK,
    };
    audit(
        ctx,
        &mut cluster,
        Audit {
            last_heal: healed,
            require_convergence: false,
            converge_within: super::CONVERGE_REPORT_WITHIN,
            hints_within: HINTS_WITHIN,
            guards,
        },
    )
}
