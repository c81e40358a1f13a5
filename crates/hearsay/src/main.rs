//! The `hearsay` binary: thin; parses arguments and calls into the library crates.

mod dev;
mod repair;
mod server;
mod status;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hearsay",
    version,
    about = "Hearsay: a leaderless distributed key-value store that speaks Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node: a Redis-compatible server; a cluster member when seeds are given.
    Server(Box<server::ServerArgs>),
    /// Start a local cluster on loopback for development.
    Dev(dev::DevArgs),
    /// Show the cluster's members like `nodetool status` (asks a node's admin API).
    Status(status::StatusArgs),
    /// Show a key's token and the nodes holding its replicas.
    #[command(name = "getendpoints")]
    GetEndpoints(status::GetEndpointsArgs),
    /// Repair the node's ranges with its replicas (Merkle-tree anti-entropy) and follow
    /// the job's progress; `--status` shows the node's repair state.
    Repair(repair::RepairArgs),
    /// YCSB-style load generator against Hearsay (or any Redis-protocol server).
    Bench(hearsay_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(*args),
        Command::Dev(args) => dev::run(args),
        Command::Status(args) => status::status(args),
        Command::GetEndpoints(args) => status::getendpoints(args),
        Command::Repair(args) => repair::run(args),
        Command::Bench(args) => hearsay_bench::run_blocking(args).map(|report| {
            println!("{}", report.render());
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearsay: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
