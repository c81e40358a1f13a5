//! `hearsay-faults`: runs fault scenarios against real `hearsay server` processes.
//!
//! ```text
//! hearsay-faults run <scenario> [--seed S] [--nodes N] [--duration-s D] [--min-acked N] ...
//! hearsay-faults suite ci|full [--seed S]
//! hearsay-faults soak --hours H
//! hearsay-faults list | cleanup
//! ```
//! See docs/testing.md.

use anyhow::bail;
use clap::{Parser, Subcommand};
use hearsay_faults::node::ConfigOverride;
use hearsay_faults::report::{Report, suite_summary};
use hearsay_faults::scenarios::{self, CI_SUITE, RunOptions, SCENARIOS};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace's release build of the node, where `cargo build --release -p hearsay` puts it.
const DEFAULT_HEARSAY_BIN: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/hearsay");
/// Where run directories go unless `--run-dir` says otherwise.
const DEFAULT_RUN_ROOT: &str = "/tmp/hearsay-faults";
/// Length of one soak round (TESTING.md: an audit every 30 minutes).
const SOAK_ROUND: Duration = Duration::from_secs(30 * 60);
/// The soak's pause between a worker's operations: at full speed a 30-minute round would
/// record ~5 million operations (gigabytes of history to keep and check); 5 ms per worker
/// still keeps every node busy.
const SOAK_THINK_MS: u64 = 5;
/// A soak round shorter than this (the last one) is held to a smaller minimum of
/// acknowledged writes than the full scenario's.
const SOAK_SHORT_ROUND: Duration = Duration::from_secs(600);
const SOAK_SHORT_ROUND_MIN_ACKED: usize = 1_000;

#[derive(Debug, Parser)]
#[command(
    name = "hearsay-faults",
    about = "Fault-injection harness for Hearsay (docs/testing.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone)]
struct Common {
    /// The `hearsay` binary the nodes run.
    #[arg(long, env = "HEARSAY_BIN", default_value = DEFAULT_HEARSAY_BIN)]
    hearsay_bin: PathBuf,
    /// Seed of all randomness (a scenario's fault schedule replays from it); default: time.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Override the scenario's duration (B1, B2, B4, soak rounds).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Override the scenario's minimum of acknowledged writes.
    #[arg(long)]
    min_acked: Option<usize>,
    /// Override the number of kill -9/restart cycles (restart-under-load).
    #[arg(long)]
    restarts: Option<usize>,
    /// Directory for run artefacts (each scenario gets a subdirectory).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Use loopback addresses even as root (no network faults).
    #[arg(long)]
    loopback: bool,
    /// Keep the nodes' data directories of passing scenarios too.
    #[arg(long)]
    keep_data: bool,
    /// The short CI variants of the scenarios' durations and minimums.
    #[arg(long)]
    ci: bool,
    /// Pause between each worker's operations, in milliseconds (default 0: as fast as the
    /// cluster answers; the soak defaults to 5). Long runs at full speed write millions of
    /// operations (hundreds of MB of history).
    #[arg(long)]
    think_ms: Option<u64>,
    /// Set a key of the nodes' configuration, `TABLE.KEY=VALUE` (repeatable), e.g.
    /// `--set cluster.max_clock_offset_ms=1000`; applied after the scenario's own settings.
    #[arg(long = "set", value_name = "TABLE.KEY=VALUE")]
    set: Vec<ConfigOverride>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario (or `b3-disk`: the three B3 cases).
    Run {
        scenario: String,
        #[command(flatten)]
        common: Common,
    },
    /// Run a suite: `ci` (≤ 10 minutes) or `full`.
    Suite {
        which: String,
        #[command(flatten)]
        common: Common,
    },
    /// Mixed faults for hours, an audit every 30 minutes.
    Soak {
        #[arg(long)]
        hours: f64,
        #[command(flatten)]
        common: Common,
    },
    /// List the scenarios.
    List,
    /// Remove namespaces, bridges and mounts left by crashed runs.
    Cleanup,
    /// (internal) Send forged gossip packets; run inside the hostile namespace by b6.
    #[command(hide = true)]
    ForgeGossip {
        #[arg(long, value_delimiter = ',')]
        targets: Vec<std::net::SocketAddr>,
        #[arg(long)]
        cluster_name: String,
        #[arg(long)]
        node_ids: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("hearsay-faults: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn options(c: &Common) -> RunOptions {
    RunOptions {
        nodes: c.nodes,
        duration: c.duration_s.map(Duration::from_secs),
        min_acked: c.min_acked,
        restarts: c.restarts,
        bin: c.hearsay_bin.clone(),
        loopback: c.loopback,
        keep_data: c.keep_data,
        ci: c.ci,
        think: Duration::from_millis(c.think_ms.unwrap_or(0)),
        config_overrides: c.set.clone(),
    }
}

fn seed_of(c: &Common) -> u64 {
    c.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

/// The run directory: `--run-dir`, or a new one under [`DEFAULT_RUN_ROOT`].
fn run_root(c: &Common, what: &str, seed: u64) -> anyhow::Result<PathBuf> {
    let dir = match &c.run_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(DEFAULT_RUN_ROOT).join(format!(
            "{}-{what}-{seed}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        )),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn check_bin(c: &Common) -> anyhow::Result<()> {
    if !c.hearsay_bin.exists() {
        bail!(
            "hearsay binary {} not found: build it with `cargo build --release -p hearsay`, or \
             pass --hearsay-bin / HEARSAY_BIN",
            c.hearsay_bin.display()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::List => {
            for s in SCENARIOS {
                println!("{:<24} {}", s.name, s.about);
            }
            println!("{:<24} the three B3 cases in a row", "b3-disk");
            println!("suite ci: {}", CI_SUITE.join(", "));
            Ok(true)
        }
        Command::Cleanup => {
            hearsay_faults::topology::clean_stale()?;
            println!("done");
            Ok(true)
        }
        Command::ForgeGossip {
            targets,
            cluster_name,
            node_ids,
            count,
            seed,
        } => {
            let sent = hearsay_faults::scenarios::forge_gossip(
                &targets,
                &cluster_name,
                &node_ids,
                count,
                seed,
            )?;
            println!("sent {sent} forged packets");
            Ok(true)
        }
        Command::Run { scenario, common } => {
            check_bin(&common)?;
            let names = scenarios::expand(&scenario);
            if names.is_empty() {
                bail!("no scenario named {scenario} (see `hearsay-faults list`)");
            }
            let seed = seed_of(&common);
            println!("seed {seed}");
            let root = run_root(&common, &scenario, seed)?;
            let reports: Vec<Report> = names
                .iter()
                .map(|n| scenarios::run_one(n, seed, &options(&common), &root))
                .collect();
            if reports.len() > 1 {
                print!("{}", suite_summary(&reports));
            }
            println!("run directory: {}", root.display());
            Ok(reports.iter().all(|r| r.passed() || r.skipped.is_some()))
        }
        Command::Suite { which, common } => {
            check_bin(&common)?;
            let mut opts = options(&common);
            let names: Vec<&str> = match which.as_str() {
                "ci" => {
                    opts.ci = true;
                    CI_SUITE.to_vec()
                }
                "full" => SCENARIOS.iter().map(|s| s.name).collect(),
                other => bail!("no suite named {other} (ci or full)"),
            };
            let seed = seed_of(&common);
            println!("suite {which}, seed {seed}");
            let root = run_root(&common, &format!("suite-{which}"), seed)?;
            let reports: Vec<Report> = names
                .iter()
                .map(|n| scenarios::run_one(n, seed, &opts, &root))
                .collect();
            println!("run directory: {}", root.display());
            print!("{}", suite_summary(&reports));
            Ok(reports.iter().all(|r| r.passed() || r.skipped.is_some()))
        }
        Command::Soak { hours, common } => {
            check_bin(&common)?;
            if !(hours > 0.0 && hours <= 24.0 * 7.0) {
                bail!("--hours must be in (0, 168]");
            }
            let mut opts = options(&common);
            opts.think = Duration::from_millis(common.think_ms.unwrap_or(SOAK_THINK_MS));
            let seed = seed_of(&common);
            println!("soak for {hours} h, seed {seed}");
            let root = run_root(&common, "soak", seed)?;
            let end = Instant::now() + Duration::from_secs_f64(hours * 3600.0);
            let mut reports = Vec::new();
            let mut round = 0u64;
            // Rounds of mixed faults, alternating B1 and B2, each ending in an audit.
            while Instant::now() < end {
                let left = end - Instant::now();
                let round_len = common
                    .duration_s
                    .map_or(SOAK_ROUND, Duration::from_secs)
                    .min(left);
                opts.duration = Some(round_len);
                // A short last round cannot reach a full run's minimum.
                opts.min_acked = common
                    .min_acked
                    .or((round_len < SOAK_SHORT_ROUND).then_some(SOAK_SHORT_ROUND_MIN_ACKED));
                let name = if round.is_multiple_of(2) {
                    "b1-mixed"
                } else {
                    "b2-pause-skew"
                };
                reports.push(scenarios::run_one(
                    name,
                    seed.wrapping_add(round),
                    &opts,
                    &root,
                ));
                round += 1;
            }
            println!("run directory: {}", root.display());
            print!("{}", suite_summary(&reports));
            Ok(reports.iter().all(|r| r.passed() || r.skipped.is_some()))
        }
    }
}
