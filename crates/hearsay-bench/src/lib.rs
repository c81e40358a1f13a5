//! The engine of `hearsay bench`: a YCSB-style load generator for Hearsay, or any server that
//! speaks the Redis protocol.
//!
//! It owns the workload model (YCSB core workloads A, B, C, F and custom mixes; uniform,
//! scrambled-zipfian and latest key choice, implemented here after Gray et al. as YCSB does),
//! a small pipelined RESP client, self-verifying values, closed- and open-loop (`--rate`)
//! drivers, and the report (HDR latency percentiles per operation, throughput, errors by
//! kind and by host, a per-second timeline, client and server CPU time). User guide:
//! `docs/bench.md`.
//!
//! Invariants: in-flight requests never exceed `concurrency × pipeline`; every value read is
//! checked against the checksum its writer embedded, and a mismatch is an error in the report,
//! never silently counted as a success; a failed operation is counted and the run goes on
//! (only a run in which nothing succeeds is an error); figures exclude the warm-up.
//!
//! It must not depend on any Hearsay crate but `hearsay-types`: it measures the server from the
//! outside, through the same protocol a user's client speaks.

mod cpu;
pub mod generator;
mod report;
pub mod resp;
mod runner;
pub mod value;
pub mod workload;

pub use cpu::cpu_seconds;
pub use generator::Distribution;
pub use hearsay_types::ConsistencyLevel;
pub use report::{BenchReport, HostReport, OpReport, PhaseReport, TimelinePoint};
pub use value::{CorruptValue, encode_value, verify_value};
pub use workload::{OpKind, OpMix, Workload};

use anyhow::{Context, bail};
use std::time::Duration;

/// Largest `--value-size`: keeps a pipeline's worth of values far below the reply limit.
pub const MAX_VALUE_SIZE_BYTES: usize = 16 * 1024 * 1024;

/// Largest `--concurrency × --pipeline`: bounds client memory and sockets.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// Largest `--timeout-ms`; histograms are sized to it.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// Largest `--rate`: far beyond what one client box can drive; above it, intervals would round
/// to nothing.
pub const MAX_RATE_OPS_PER_S: f64 = 1e8;

/// Run time when neither `--duration` nor `--operations` is given.
pub const DEFAULT_DURATION_S: f64 = 10.0;

/// Arguments of `hearsay bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Servers to connect to, comma separated; connections are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7379")]
    pub hosts: Vec<String>,

    /// YCSB core workload: a (50% read, 50% update), b (95/5), c (read only),
    /// f (50% read, 50% read-modify-write), or custom (the --*-proportion options).
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,

    /// Share of reads (custom workload).
    #[arg(long, default_value_t = 0.0)]
    pub read_proportion: f64,
    /// Share of updates (custom workload).
    #[arg(long, default_value_t = 0.0)]
    pub update_proportion: f64,
    /// Share of inserts of new keys (custom workload).
    #[arg(long, default_value_t = 0.0)]
    pub insert_proportion: f64,
    /// Share of read-modify-writes (custom workload).
    #[arg(long, default_value_t = 0.0)]
    pub rmw_proportion: f64,

    /// How keys are chosen for reads and updates.
    #[arg(long, value_enum, default_value = "zipfian")]
    pub distribution: Distribution,

    /// Number of keys in the data set (`--load` writes them all first).
    #[arg(long, default_value_t = 100_000)]
    pub record_count: u64,

    /// Bytes per value, including the 17-byte checksum header.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Connections, each driven by one worker.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub concurrency: usize,

    /// Requests in flight per connection.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,

    /// Seconds to run (after the warm-up). Default 10 unless --operations is given.
    #[arg(long)]
    pub duration: Option<f64>,

    /// Operations to run (after the warm-up), instead of or as well as a duration.
    #[arg(long)]
    pub operations: Option<u64>,

    /// Target operations per second over all connections (open loop). Operations are
    /// scheduled at fixed intervals and timed from their scheduled moment, so a stalled server
    /// shows in the percentiles (no coordinated omission). Default: closed loop, each worker
    /// sends its next request when a reply frees a pipeline slot.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Seconds at the start whose operations are excluded from the figures.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Insert --record-count keys before the run, with a progress bar.
    #[arg(long)]
    pub load: bool,

    /// Consistency level, sent as `CONSISTENCY <level>` on every connection before the run.
    #[arg(long)]
    pub consistency: Option<ConsistencyLevel>,

    /// A command sent on every connection before the run, after `CONSISTENCY` (repeatable;
    /// arguments split on whitespace), e.g. a keyspace choice. An error answer stops the bench.
    #[arg(long)]
    pub init_command: Vec<String>,

    /// Prefix of every key (`<prefix><number>`).
    #[arg(long, default_value = "hs:bench:")]
    pub key_prefix: String,

    /// Seed for key and operation choice; random if not given (the report prints it).
    #[arg(long)]
    pub seed: Option<u64>,

    /// A request without a reply after this long fails with `timeout` and its connection is
    /// re-opened.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,

    /// Also report the CPU time of these server processes (repeatable), for per-core rates.
    #[arg(long)]
    pub server_pid: Vec<u32>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl BenchArgs {
    /// The operation mix these arguments select.
    pub fn mix(&self) -> anyhow::Result<OpMix> {
        let custom_given = self.read_proportion != 0.0
            || self.update_proportion != 0.0
            || self.insert_proportion != 0.0
            || self.rmw_proportion != 0.0;
        let mix = match OpMix::for_workload(self.workload) {
            Some(m) => {
                if custom_given {
                    bail!("--*-proportion options need --workload custom");
                }
                m
            }
            None => OpMix {
                read: self.read_proportion,
                update: self.update_proportion,
                insert: self.insert_proportion,
                read_modify_write: self.rmw_proportion,
            },
        };
        mix.validate()?;
        Ok(mix)
    }

    /// Checks the arguments against each other and the limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.mix()?;
        if self.init_command.iter().any(|c| c.trim().is_empty()) {
            bail!("--init-command must not be empty");
        }
        if self.hosts.is_empty() || self.hosts.iter().any(|h| h.trim().is_empty()) {
            bail!("--hosts needs at least one host:port");
        }
        if self.concurrency == 0 || self.pipeline == 0 {
            bail!("--concurrency and --pipeline must be at least 1");
        }
        if self.concurrency.saturating_mul(self.pipeline) > MAX_IN_FLIGHT {
            bail!("--concurrency × --pipeline must be at most {MAX_IN_FLIGHT}");
        }
        if self.record_count == 0 {
            bail!("--record-count must be at least 1");
        }
        if !(value::VALUE_HEADER_BYTES..=MAX_VALUE_SIZE_BYTES).contains(&self.value_size) {
            bail!(
                "--value-size must be between {} and {MAX_VALUE_SIZE_BYTES} bytes",
                value::VALUE_HEADER_BYTES
            );
        }
        if let Some(d) = self.duration
            && !(d.is_finite() && d > 0.0)
        {
            bail!("--duration must be a positive number of seconds");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0 && r <= MAX_RATE_OPS_PER_S)
        {
            bail!(
                "--rate must be a positive number of operations per second, at most {MAX_RATE_OPS_PER_S}"
            );
        }
        if self.operations == Some(0) {
            bail!("--operations must be at least 1");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            bail!("--warmup must be zero or a positive number of seconds");
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            bail!("--timeout-ms must be between 1 and {MAX_TIMEOUT_MS}");
        }
        Ok(())
    }

    /// The measured run time limit, if any.
    fn run_duration(&self) -> Option<Duration> {
        match (self.duration, self.operations) {
            (Some(d), _) => Some(Duration::from_secs_f64(d)),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs_f64(DEFAULT_DURATION_S)),
        }
    }
}

/// Runs the benchmark the arguments describe: connects (failing at once, with the host named,
/// if a server cannot be reached or refuses `--consistency`), optionally loads the data set,
/// runs the workload with a progress bar on stderr, and returns the report. Print it with
/// [`BenchReport::render`].
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    args.validate().context("invalid bench arguments")?;
    runner::run(args).await
}

/// [`run`] on a fresh multi-threaded tokio runtime, for a caller without one (the `hearsay`
/// binary's `main` is synchronous).
pub fn run_blocking(args: BenchArgs) -> anyhow::Result<BenchReport> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(extra: &[&str]) -> anyhow::Result<BenchArgs> {
        let mut v = vec!["bench"];
        v.extend_from_slice(extra);
        Ok(Cli::try_parse_from(v)?.args)
    }

    #[test]
    fn defaults_are_valid_and_ycsb_like() {
        let a = parse(&[]).expect("defaults parse");
        a.validate().expect("defaults valid");
        assert_eq!(a.hosts, vec!["127.0.0.1:7379".to_string()]);
        assert_eq!(a.workload, Workload::A);
        assert_eq!(a.distribution, Distribution::Zipfian);
        assert_eq!(a.run_duration(), Some(Duration::from_secs(10)));
        let a = parse(&["--operations", "5"]).expect("parse");
        assert_eq!(
            a.run_duration(),
            None,
            "--operations alone is not time-bound"
        );
        let a = parse(&["--hosts", "a:1,b:2", "--consistency", "quorum"]).expect("parse");
        assert_eq!(a.hosts, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(a.consistency, Some(ConsistencyLevel::Quorum));
        assert!(parse(&["--consistency", "MOST"]).is_err());
    }

    #[test]
    fn contradictions_are_rejected() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--pipeline", "0"],
            &["--concurrency", "2000", "--pipeline", "1000"],
            &["--value-size", "16"],
            &["--value-size", "20000000"],
            &["--record-count", "0"],
            &["--duration", "0"],
            &["--operations", "0"],
            &["--warmup=-1"],
            &["--timeout-ms", "0"],
            &["--rate", "0"],
            &["--workload", "b", "--update-proportion", "0.5"],
            &["--workload", "custom"],
            &["--hosts", ""],
        ] {
            let a = parse(bad).expect("parses");
            assert!(a.validate().is_err(), "{bad:?} accepted");
        }
        let custom = parse(&["--workload", "custom", "--rmw-proportion", "1"]).expect("parse");
        assert_eq!(custom.mix().expect("mix").read_modify_write, 1.0);
    }
}
