//! `hearsay bench` without the rest of the binary, for calibrating against `redis-server`:
//! `cargo run --release -p hearsay-bench --example bench -- --hosts 127.0.0.1:6379 --load`.

use clap::Parser;
use hearsay_bench::BenchArgs;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "YCSB-style load generator for Redis-protocol servers"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = hearsay_bench::run(cli.args).await?;
    println!("{}", report.render());
    Ok(())
}
