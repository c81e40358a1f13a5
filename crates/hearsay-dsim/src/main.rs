//! `hearsay-dsim`: runs the deterministic data-path simulation over many seeds and prints
//! each failing seed (which replays it) and `N passed, N failed`.

use clap::Parser;
use hearsay_dsim::{Bugs, Config, Sim};

/// Arguments.
#[derive(Debug, Parser)]
#[command(
    name = "hearsay-dsim",
    about = "Deterministic simulation of Hearsay's data path"
)]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many consecutive seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Simulated milliseconds of workload with faults per seed.
    #[arg(long, default_value_t = 20_000)]
    duration_ms: u64,
    /// Print every seed's figures, not only failures.
    #[arg(long)]
    verbose: bool,
    /// Plant a bug the checkers must catch: ack-without-apply, skip-read-repair,
    /// drop-hints, sloppy-quorum (repeatable).
    #[arg(long)]
    bug: Vec<String>,
    /// Skip the final anti-entropy repair (so dropped hints show as missing replicas).
    #[arg(long)]
    no_final_repair: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut bugs = Bugs::default();
    for b in &args.bug {
        match b.as_str() {
            "ack-without-apply" => bugs.ack_without_apply = true,
            "skip-read-repair" => bugs.skip_read_repair = true,
            "drop-hints" => bugs.drop_hints = true,
            "sloppy-quorum" => bugs.hints_count_for_quorum = true,
            other => {
                eprintln!("unknown bug {other:?}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for seed in args.seed..args.seed + args.seeds {
        let mut cfg = Config::new(seed);
        cfg.duration_ms = args.duration_ms;
        cfg.bugs = bugs;
        cfg.final_repair = !args.no_final_repair;
        let out = Sim::new(cfg).run();
        if out.passed() {
            passed += 1;
            if args.verbose {
                println!(
                    "seed {seed}: PASS ({} acknowledged writes, {} reads, {} faults, {} messages)",
                    out.acked_writes, out.reads_ok, out.faults, out.messages
                );
            }
        } else {
            failed += 1;
            println!("seed {seed}: FAIL {:?}", out.failed());
            for c in out.checks.iter().filter(|c| !c.passed()) {
                for d in c.details.iter().take(5) {
                    println!("    {}: {d}", c.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
