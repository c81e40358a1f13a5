//! `hearsay dev`: a local cluster on loopback, one command. (Being written.)

/// Arguments of `hearsay dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
}

pub fn run(_args: DevArgs) -> anyhow::Result<()> {
    anyhow::bail!("hearsay dev is not implemented yet")
}
