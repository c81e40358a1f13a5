//! The deterministic data-path simulation: clean runs pass every checker, each planted bug
//! is caught by the checker meant for it, and a seed replays exactly.

use hearsay_dsim::{Bugs, Config, Sim, run_seeds};

/// Simulated ms per seed here: enough for several faults (one every ~2–3 s) per run while
/// keeping the debug-build test to seconds.
const DURATION_MS: u64 = 10_000;

fn config(seed: u64, bugs: Bugs) -> Config {
    let mut c = Config::new(seed);
    c.duration_ms = DURATION_MS;
    c.bugs = bugs;
    c
}

#[test]
fn clean_runs_pass_every_checker() {
    let base = config(0, Bugs::default());
    let outs = run_seeds(&base, 1..=40);
    let mut acked = 0;
    let mut faults = 0;
    for o in &outs {
        assert!(
            o.passed(),
            "seed {}: {:?}\n{:#?}",
            o.seed,
            o.failed(),
            o.checks
        );
        acked += o.acked_writes;
        faults += o.faults;
    }
    // The runs did real work under real faults (a run that did nothing passes vacuously).
    assert!(acked > 40 * 500, "{acked} acknowledged writes");
    assert!(faults > 40 * 2, "{faults} faults");
}

/// A bug is caught when some seed among the first `seeds` fails the named checker.
fn caught(bugs: Bugs, checker: &str, seeds: u64) {
    let base = config(0, bugs);
    let outs = run_seeds(&base, 1..=seeds);
    let hits = outs
        .iter()
        .filter(|o| o.failed().iter().any(|f| f == checker))
        .count();
    assert!(
        hits > 0,
        "{bugs:?} went unnoticed by {checker} over {seeds} seeds: {:?}",
        outs.iter().map(|o| o.failed()).collect::<Vec<_>>()
    );
}

#[test]
fn acknowledging_without_applying_is_caught() {
    caught(
        Bugs {
            ack_without_apply: true,
            ..Bugs::default()
        },
        "lost",
        10,
    );
}

#[test]
fn skipping_read_repair_is_caught() {
    caught(
        Bugs {
            skip_read_repair: true,
            ..Bugs::default()
        },
        "backwards",
        40,
    );
}

#[test]
fn dropping_hints_is_caught_without_the_final_repair() {
    let mut base = config(
        0,
        Bugs {
            drop_hints: true,
            ..Bugs::default()
        },
    );
    base.final_repair = false;
    let outs = run_seeds(&base, 1..=20);
    assert!(
        outs.iter().any(|o| !o.passed()),
        "dropped hints went unnoticed: {:?}",
        outs.iter().map(|o| o.failed()).collect::<Vec<_>>()
    );
}

#[test]
fn a_sloppy_quorum_is_caught() {
    caught(
        Bugs {
            hints_count_for_quorum: true,
            ..Bugs::default()
        },
        "stale",
        40,
    );
}

#[test]
fn a_seed_replays_exactly() {
    let a = Sim::new(config(7, Bugs::default())).run();
    let b = Sim::new(config(7, Bugs::default())).run();
    assert_eq!(
        (a.acked_writes, a.reads_ok, a.faults, a.messages),
        (b.acked_writes, b.reads_ok, b.faults, b.messages)
    );
    let c = Sim::new(config(8, Bugs::default())).run();
    assert_ne!(a.messages, c.messages, "different seeds, different runs");
}
