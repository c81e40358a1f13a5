//! `hearsay repair`: starts an anti-entropy repair on a node through its admin API
//! (`POST /v1/repair`, loopback only), follows the job with a progress bar until it ends,
//! and exits non-zero when ranges failed; `--status` prints the node's repair state instead.

use anyhow::{Context, bail};
use hearsay_server::admin::client;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How often a running job is polled: progress moves by whole ranges, which take from
/// milliseconds (in sync) to minutes (large differences under the byte budget).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Arguments of `hearsay repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The node's admin HTTP address ([server] admin_listen); must be reachable over
    /// loopback (run this on the node's host).
    #[arg(long, default_value = client::DEFAULT_ADMIN_ADDR)]
    pub admin: String,
    /// Repair only this keyspace (every keyspace by default).
    #[arg(long)]
    pub keyspace: Option<String>,
    /// Compare every cell of every replica without Merkle trees (slow; for when the trees
    /// themselves are in doubt).
    #[arg(long)]
    pub full: bool,
    /// Only the part of the node's ranges after this token (with --end).
    #[arg(long, requires = "end", allow_hyphen_values = true)]
    pub start: Option<i64>,
    /// Only the part of the node's ranges up to this token (with --start).
    #[arg(long, requires = "start", allow_hyphen_values = true)]
    pub end: Option<i64>,
    /// Start the job and print its id without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the node's repair state (counters, range ages, recent jobs) and exit.
    #[arg(long, conflicts_with_all = ["keyspace", "full", "start", "end", "no_wait"])]
    pub status: bool,
}

pub fn run(args: RepairArgs) -> anyhow::Result<()> {
    if args.status {
        let v = client::get_json(&args.admin, "/v1/repair")?;
        print!("{}", render_status(&v));
        return Ok(());
    }
    let mut query = Vec::new();
    if let Some(k) = &args.keyspace {
        query.push(format!("keyspace={}", client::percent_encode(k.as_bytes())));
    }
    if args.full {
        query.push("full=1".to_string());
    }
    if let (Some(s), Some(e)) = (args.start, args.end) {
        query.push(format!("start={s}&end={e}"));
    }
    let path = format!("/v1/repair?{}", query.join("&"));
    let started = client::post_json(&args.admin, &path)?;
    let id = started["job"]
        .as_u64()
        .context("the node's answer names no job")?;
    if args.no_wait {
        println!("repair job {id} started on {}", args.admin);
        return Ok(());
    }
    let t0 = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "repair job {msg} [{bar:30}] {pos}/{len} ranges ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let job = loop {
        let job = client::get_json(&args.admin, &format!("/v1/repair/{id}"))?;
        let total = job["ranges"].as_array().map_or(0, Vec::len) as u64;
        bar.set_length(total);
        bar.set_position(job["done"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{id}: {} moved",
            client::human_bytes(job["totals"]["bytes_moved"].as_u64().unwrap_or(0))
        ));
        if !job["finished_ms"].is_null() {
            break job;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    bar.finish_and_clear();
    print!("{}", render_job(&job, t0.elapsed()));
    let failed = job["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        bail!(
            "{failed} range(s) failed: {} (run again when the replicas are up; finished ranges are not repeated)",
            job["last_error"].as_str().unwrap_or("no error recorded")
        );
    }
    Ok(())
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A finished job's summary.
pub fn render_job(job: &Value, elapsed: Duration) -> String {
    let t = &job["totals"];
    format!(
        "repair job {}: {} of {} ranges done, {} failed in {:.1}s\n  \
         compared {} cells ({}), moved {} cells ({})\n",
        num(&job["id"]),
        num(&job["done"]),
        job["ranges"].as_array().map_or(0, Vec::len),
        num(&job["failed"]),
        elapsed.as_secs_f64(),
        num(&t["cells_compared"]),
        client::human_bytes(num(&t["bytes_compared"])),
        num(&t["cells_moved"]),
        client::human_bytes(num(&t["bytes_moved"])),
    )
}

/// `hearsay repair --status`.
pub fn render_status(v: &Value) -> String {
    let mut s = format!(
        "always-on repair: {}, budget {}/s, {} session(s) running\n\
         sessions {} ({} failed), ranges in sync {}, out of sync {}\n\
         moved {} cells ({}), read {} from the engine\n",
        if v["enabled"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        client::human_bytes(num(&v["bytes_per_sec"])),
        num(&v["running"]),
        num(&v["sessions"]),
        num(&v["sessions_failed"]),
        num(&v["ranges_in_sync"]),
        num(&v["ranges_out_of_sync"]),
        num(&v["cells_moved"]),
        client::human_bytes(num(&v["bytes_moved"])),
        client::human_bytes(num(&v["bytes_read"])),
    );
    match v["max_age_ms"].as_u64() {
        Some(ms) => {
            s += &format!(
                "oldest primary range repaired {:.0}s ago\n",
                ms as f64 / 1e3
            )
        }
        None => s += "some primary ranges were never repaired\n",
    }
    if let Some(p) = v["primary_ranges"].as_object() {
        for (ks, counts) in p {
            s += &format!(
                "  keyspace {ks}: {} of {} primary ranges repaired at least once\n",
                num(&counts[1]),
                num(&counts[0])
            );
        }
    }
    if let Some(jobs) = v["jobs"].as_array() {
        for j in jobs.iter().rev().take(10) {
            let state = if j["finished_ms"].is_null() {
                "running"
            } else if num(&j["failed"]) > 0 {
                "failed"
            } else {
                "done"
            };
            s += &format!(
                "  job {} {state}: {}/{} ranges, {} failed, moved {}\n",
                num(&j["id"]),
                num(&j["done"]),
                j["ranges"].as_array().map_or(0, Vec::len),
                num(&j["failed"]),
                client::human_bytes(num(&j["totals"]["bytes_moved"])),
            );
        }
    }
    s
}
