//! A stand-alone gossip node, for multi-process tests and experiments until the `hearsay`
//! server embeds the driver.
//!
//! stdout: `ready <node id> <generation>`, then one `event <Kind> <node id> [extra]` line
//! per membership event. stdin line protocol: `members` prints the membership JSON on one
//! line; `set <key> <value>`; `remove <node id>`; `quit`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use hearsay_gossip::driver::GossipHandle;
use hearsay_gossip::{
    Event, GossipConfig, MemberStatus, StateKey, load_or_create_node_id, next_generation,
};
use hearsay_types::{NodeId, SystemClock};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "Run one Hearsay gossip node")]
struct Args {
    /// Data directory holding the node id and generation.
    #[arg(long)]
    dir: PathBuf,
    /// UDP address to bind and advertise.
    #[arg(long)]
    bind: SocketAddr,
    /// Comma-separated seed addresses.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<SocketAddr>,
    /// Cluster name.
    #[arg(long, default_value = "hearsay")]
    cluster: String,
    /// Shared secret.
    #[arg(long, env = "HEARSAY_GOSSIP_SECRET", default_value = "")]
    secret: String,
    /// Gossip interval.
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// Write the membership JSON here (atomically) every interval.
    #[arg(long)]
    view_file: Option<PathBuf>,
    /// Advertise JOINING instead of NORMAL (an explicit join, needed after a removal).
    #[arg(long)]
    join: bool,
}

fn describe(e: &Event) -> String {
    match e {
        Event::Joined { node, generation } => format!("Joined {node} {generation}"),
        Event::Alive { node, generation } => format!("Alive {node} {generation}"),
        Event::Suspect { node } => format!("Suspect {node}"),
        Event::Down { node } => format!("Down {node}"),
        Event::Removed { node, generation } => format!("Removed {node} {generation}"),
        Event::StateChanged { node, key, version } => {
            format!("StateChanged {node} {} {version}", key.name())
        }
    }
}

fn key_of(s: &str) -> StateKey {
    match s {
        "status" => StateKey::Status,
        "tokens" => StateKey::Tokens,
        "dc" => StateKey::Dc,
        "rack" => StateKey::Rack,
        "client_addr" => StateKey::ClientAddr,
        "admin_addr" => StateKey::AdminAddr,
        "load" => StateKey::Load,
        "schema_version" => StateKey::SchemaVersion,
        "clock" => StateKey::Clock,
        other => StateKey::Custom(other.to_string()),
    }
}

/// The membership view as JSON (`{}` if it cannot be encoded).
fn membership_json(handle: &GossipHandle) -> String {
    serde_json::to_string(&handle.membership()).unwrap_or_else(|_| "{}".to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let id = load_or_create_node_id(&args.dir).context("node id")?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let generation = next_generation(&args.dir, unix).context("generation")?;
    let mut cfg = GossipConfig::new(&args.cluster, args.secret.as_bytes(), args.bind)
        .with_interval_ms(args.interval_ms);
    cfg.seeds = args.seeds.clone();
    let handle = Arc::new(GossipHandle::spawn(cfg, id, generation, Arc::new(SystemClock)).await?);
    let status = if args.join {
        MemberStatus::Joining
    } else {
        MemberStatus::Normal
    };
    handle.set_local_state(StateKey::Status, status.as_str().as_bytes().to_vec())?;
    println!("ready {id} {generation}");

    let mut events = handle.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => println!("event {}", describe(&e)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("lagged {n}")
                }
                Err(_) => break,
            }
        }
    });
    if let Some(path) = args.view_file.clone() {
        let h = Arc::clone(&handle);
        let every = Duration::from_millis(args.interval_ms.max(50));
        tokio::spawn(async move {
            let tmp = path.with_extension("tmp");
            loop {
                let json = membership_json(&h);
                if std::fs::write(&tmp, json).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                tokio::time::sleep(every).await;
            }
        });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut quit = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("members"), _, _) => println!("{}", membership_json(&handle)),
            (Some("set"), Some(k), Some(v)) => {
                match handle.set_local_state(key_of(k), v.as_bytes().to_vec()) {
                    Ok(ver) => println!("ok {ver}"),
                    Err(e) => println!("error {e}"),
                }
            }
            (Some("remove"), Some(n), _) => match NodeId::parse(n) {
                Some(n) => match handle.remove(n) {
                    Ok(()) => println!("ok"),
                    Err(e) => println!("error {e}"),
                },
                None => println!("error bad node id"),
            },
            (Some("quit"), _, _) => {
                quit = true;
                break;
            }
            _ => println!("error unknown command"),
        }
    }
    // `quit` ends the process; a closed stdin (e.g. </dev/null) does not.
    if !quit {
        std::future::pending::<()>().await;
    }
    Ok(())
}
