//! `hearsay server`: one node from a TOML file and/or flags.

use anyhow::Context;
use hearsay_server::config::{NodeConfig, SyncModeName};
use hearsay_server::node::Node;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `hearsay server`. Flags override the file; the file overrides defaults.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// RESP listen address ([server] listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address ([server] admin_listen).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Cluster listen address ([cluster] listen).
    #[arg(long)]
    pub cluster_listen: Option<SocketAddr>,
    /// Seed nodes' cluster addresses, comma-separated ([cluster] seeds).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<SocketAddr>>,
    /// Data directory ([storage] data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Commit-log sync mode: periodic, batch or none ([storage] sync_mode).
    #[arg(long)]
    pub sync_mode: Option<SyncModeName>,
    /// Periodic sync interval ([storage] sync_interval_ms).
    #[arg(long)]
    pub sync_interval_ms: Option<u64>,
    /// Memtable flush threshold ([storage] memtable_size_bytes).
    #[arg(long)]
    pub memtable_size_bytes: Option<u64>,
    /// Block cache size ([storage] block_cache_bytes).
    #[arg(long)]
    pub block_cache_bytes: Option<u64>,
    /// Run compactions nothing waits for at idle CPU priority
    /// ([storage] compaction_background_priority).
    #[arg(long)]
    pub compaction_background_priority: Option<bool>,
    /// Put the blocks a flush writes into the block cache ([storage] flush_warm_cache).
    #[arg(long)]
    pub flush_warm_cache: Option<bool>,
    /// Require AUTH with this password ([server] password).
    #[arg(long, env = "HEARSAY_PASSWORD")]
    pub password: Option<String>,
    /// Most client connections ([server] maxclients).
    #[arg(long)]
    pub maxclients: Option<usize>,
    /// Event-loop threads for client connections; 0 = half the cores ([server] io_threads).
    #[arg(long)]
    pub io_threads: Option<usize>,
    /// Longest busy-poll of an idle event loop, microseconds; 0 = never ([server] busy_poll_us).
    #[arg(long)]
    pub busy_poll_us: Option<u64>,
    /// Close idle clients after this long; 0 = never ([server] idle_timeout_ms).
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Largest key or value ([limits] max_bulk_bytes).
    #[arg(long)]
    pub max_bulk_bytes: Option<usize>,
    /// Deadline for a request to arrive completely ([limits] request_timeout_ms).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Run as a cluster member even without --seeds, or alone with `--cluster false`
    /// ([cluster] enabled; default: a member exactly when seeds are given).
    #[arg(long)]
    pub cluster: Option<bool>,
    /// Cluster name ([cluster] name).
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Shared cluster secret ([cluster] secret).
    #[arg(long, env = "HEARSAY_CLUSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Human name of this node ([cluster] node_name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Data centre ([cluster] dc).
    #[arg(long)]
    pub dc: Option<String>,
    /// Rack ([cluster] rack).
    #[arg(long)]
    pub rack: Option<String>,
    /// Vnode tokens per unit of weight ([cluster] num_tokens).
    #[arg(long)]
    pub num_tokens: Option<usize>,
    /// Relative capacity ([cluster] weight).
    #[arg(long)]
    pub weight: Option<u32>,
    /// Replication factor of the `default` keyspace ([cluster] replication_factor).
    #[arg(long)]
    pub replication_factor: Option<usize>,
    /// Consistency level of requests that set none ([cluster] default_consistency).
    #[arg(long)]
    pub consistency: Option<hearsay_types::ConsistencyLevel>,
}

impl ServerArgs {
    /// The validated configuration these arguments describe.
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::load(path)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($flag:ident => $($field:ident).+) => {
                if let Some(v) = &self.$flag {
                    c.$($field).+ = v.clone();
                }
            };
        }
        set!(listen => server.listen);
        set!(admin_listen => server.admin_listen);
        set!(cluster_listen => cluster.listen);
        set!(seeds => cluster.seeds);
        set!(data_dir => storage.data_dir);
        set!(sync_mode => storage.sync_mode);
        set!(sync_interval_ms => storage.sync_interval_ms);
        set!(memtable_size_bytes => storage.memtable_size_bytes);
        set!(block_cache_bytes => storage.block_cache_bytes);
        set!(compaction_background_priority => storage.compaction_background_priority);
        set!(flush_warm_cache => storage.flush_warm_cache);
        set!(maxclients => server.maxclients);
        set!(idle_timeout_ms => server.idle_timeout_ms);
        set!(io_threads => server.io_threads);
        set!(busy_poll_us => server.busy_poll_us);
        set!(max_bulk_bytes => limits.max_bulk_bytes);
        set!(request_timeout_ms => limits.request_timeout_ms);
        set!(cluster_name => cluster.name);
        set!(secret => cluster.secret);
        set!(node_name => cluster.node_name);
        set!(dc => cluster.dc);
        set!(rack => cluster.rack);
        set!(num_tokens => cluster.num_tokens);
        set!(weight => cluster.weight);
        set!(replication_factor => cluster.replication_factor);
        set!(consistency => cluster.default_consistency);
        if let Some(on) = self.cluster {
            c.cluster.enabled = Some(on);
        }
        if let Some(p) = &self.password {
            c.server.password = Some(p.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.node_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearsay")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        let addr = node.local_addr()?;
        if let Some(admin) = node.admin_addr() {
            println!("hearsay admin on {admin}");
        }
        if let Some(c) = &node.cluster {
            println!("hearsay cluster member {} on {}", c.id(), c.cluster_addr());
        }
        // Scripts and tests wait for this line to know the port (port 0 resolves here); it
        // comes last, once the node has joined its cluster.
        println!("hearsay listening on {addr}");
        tracing::info!(%addr, "hearsay server ready");
        node.run(shutdown_signal()).await?;
        tracing::info!("hearsay server stopped cleanly");
        anyhow::Ok(())
    })
}
