//! Issue 20, acceptance item 2: `hearsay repair` brings a replica that missed writes and
//! deletes (hints disabled) up to date, over real processes; a second repair moves nothing.

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{A, B, C, CONVERGE_TIMEOUT, Cluster, Conn, poll};
use std::process::Command;
use std::time::{Duration, Instant};

/// How old a write must be for a repair to compare it: the cluster's `write_timeout_ms`
/// (2 s in `common/cluster.rs`) plus the node's 0.5 s margin, plus slack for clock reads.
const SNAPSHOT_LAG: Duration = Duration::from_millis(2_000 + 500 + 500);

/// Keys C misses while it is down.
const MISSED_WRITES: usize = 10_000;
/// Keys C holds that are deleted while it is down.
const MISSED_DELETES: usize = 1_000;
/// Pipeline length for loading and checking (a few hundred KB per round trip).
const BATCH: usize = 500;

fn value(i: usize) -> String {
    format!("value-{i:05}-{}", "x".repeat(64))
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// (present with the right value, deleted-and-absent) counts as seen through `c` at ONE
/// (a ONE read through a replica answers from its own engine, without comparing).
fn tally(c: &mut Conn, new: &[String], old: &[String]) -> (usize, usize) {
    let mut present = 0;
    for (n, chunk) in new.chunks(BATCH).enumerate() {
        let got = c.pipelined_gets(chunk).unwrap();
        present += got
            .iter()
            .enumerate()
            .filter(|(i, v)| v.as_deref() == Some(value(n * BATCH + i).as_str()))
            .count();
    }
    let mut absent = 0;
    for chunk in old.chunks(BATCH) {
        absent += c
            .pipelined_gets(chunk)
            .unwrap()
            .iter()
            .filter(|v| v.is_none())
            .count();
    }
    (present, absent)
}

/// Runs `hearsay repair` against `admin` and returns its stdout (failing on a non-zero exit).
fn hearsay_repair(admin: &std::net::SocketAddr, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["repair", "--admin", &admin.to_string()])
        .args(extra)
        .output()
        .expect("run hearsay repair");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hearsay repair failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hearsay_repair_restores_missed_writes_and_deletes_and_a_second_repair_moves_nothing() {
    let mut cluster = Cluster::start(false);
    let new = keys("new-", MISSED_WRITES);
    let old = keys("old-", MISSED_DELETES);
    // The keys to be deleted reach every replica first.
    let mut a_all = cluster.conn(A, "ALL");
    let pairs: Vec<(String, String)> = old.iter().map(|k| (k.clone(), "old".into())).collect();
    for chunk in pairs.chunks(BATCH) {
        a_all.pipelined_sets(chunk).unwrap();
    }
    cluster.kill9(C);
    let c_id = cluster.nodes[C].node_id.clone();
    let mut a_one = cluster.conn(A, "ONE");
    poll("A to see C down", CONVERGE_TIMEOUT, || {
        match a_one.members().get(&c_id).map(|r| r["code"].clone()) {
            Some(code) if code == "DN" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let pairs: Vec<(String, String)> = new
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), value(i)))
        .collect();
    for (n, chunk) in pairs.chunks(BATCH).enumerate() {
        let mut c = if n % 2 == 0 {
            cluster.conn(A, "ONE")
        } else {
            cluster.conn(B, "ONE")
        };
        c.pipelined_sets(chunk).unwrap();
    }
    let mut deleted = 0;
    for chunk in old.chunks(BATCH) {
        deleted += a_one.pipelined_dels(chunk).unwrap();
    }
    assert_eq!(deleted, MISSED_DELETES as i64);
    let last_write = Instant::now();
    assert_eq!(a_one.hints_pending(), 0, "hints are disabled");

    cluster.restart(C);
    cluster.wait_converged();
    let mut c_one = cluster.conn(C, "ONE");
    let before = tally(&mut c_one, &new, &old);
    eprintln!("C before repair: {before:?} of ({MISSED_WRITES}, {MISSED_DELETES})");
    // C really missed them (the test would pass vacuously otherwise).
    assert!(before.0 < MISSED_WRITES / 100, "{before:?}");
    assert!(before.1 < MISSED_DELETES / 100, "{before:?}");

    let admin = cluster.nodes[C].admin;
    // A repair leaves out writes younger than a write's deadline (they may still be on
    // their way to some replica): these must have aged past it.
    let settled = last_write + SNAPSHOT_LAG;
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let first = hearsay_repair(&admin, &[]);
    eprintln!("first repair:\n{first}");
    assert!(first.contains("0 failed"), "{first}");
    for (i, name) in [(A, "A"), (B, "B"), (C, "C")] {
        let mut one = cluster.conn(i, "ONE");
        assert_eq!(
            tally(&mut one, &new, &old),
            (MISSED_WRITES, MISSED_DELETES),
            "{name} after repair"
        );
    }
    let second = hearsay_repair(&admin, &[]);
    eprintln!("second repair:\n{second}");
    assert!(second.contains("moved 0 cells"), "{second}");
    let status = hearsay_repair(&admin, &["--status"]);
    assert!(status.contains("job"), "{status}");
    // A repair of a keyspace that does not exist is refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args([
            "repair",
            "--admin",
            &admin.to_string(),
            "--keyspace",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
}

/// Repair budget for the interrupted job, bytes per second: slow enough that a job over 48
/// ranges of ~20,000 keys runs for seconds (so the kill lands mid-job), fast enough that the
/// rest finishes well within the test's deadlines.
const SLOW_REPAIR: &str = "[cluster.repair]\nbytes_per_sec = 1048576\n";
/// How long the resumed job may take to finish.
const RESUME_WITHIN: Duration = Duration::from_secs(120);

fn repair_json(admin: &std::net::SocketAddr, path: &str) -> serde_json::Value {
    hearsay_server::admin::client::get_json(&admin.to_string(), path).expect("admin answers")
}

/// Issue 20, item 5: `kill -9` of the node running a repair job mid-job; after its restart
/// the job resumes after its last completed range (the restarted node's session counter
/// shows the completed ranges are not compared again) and completes; nothing is missing.
#[test]
fn a_repair_job_killed_mid_way_resumes_after_the_restart_without_redoing_finished_ranges() {
    let mut cluster = Cluster::start_with(false, SLOW_REPAIR);
    let new = keys("new-", MISSED_WRITES * 2);
    cluster.kill9(C);
    let c_id = cluster.nodes[C].node_id.clone();
    let mut a_one = cluster.conn(A, "ONE");
    poll("A to see C down", CONVERGE_TIMEOUT, || {
        match a_one.members().get(&c_id).map(|r| r["code"].clone()) {
            Some(code) if code == "DN" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let pairs: Vec<(String, String)> = new
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), value(i)))
        .collect();
    for chunk in pairs.chunks(BATCH) {
        a_one.pipelined_sets(chunk).unwrap();
    }
    let last_write = Instant::now();
    cluster.restart(C);
    cluster.wait_converged();
    std::thread::sleep((last_write + SNAPSHOT_LAG).saturating_duration_since(Instant::now()));

    let admin = cluster.nodes[A].admin;
    let started = hearsay_repair(&admin, &["--no-wait"]);
    let id: u64 = started
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {started:?}"));
    let path = format!("/v1/repair/{id}");
    let done_before = poll(
        "a few ranges of the job to finish",
        CONVERGE_TIMEOUT,
        || {
            let j = repair_json(&admin, &path);
            match j["done"].as_u64() {
                Some(d) if d >= 3 && j["finished_ms"].is_null() => Ok(d),
                _ if !j["finished_ms"].is_null() => {
                    Err("the job finished before the kill: budget too high".into())
                }
                other => Err(format!("done {other:?}")),
            }
        },
    );
    cluster.kill9(A);
    cluster.restart(A);
    let admin = cluster.nodes[A].admin;
    let job = poll("the resumed job to finish", RESUME_WITHIN, || {
        let j = repair_json(&admin, &path);
        if j["finished_ms"].is_null() {
            Err(format!(
                "done {} of {}",
                j["done"],
                j["ranges"].as_array().map_or(0, Vec::len)
            ))
        } else {
            Ok(j)
        }
    });
    let ranges = job["ranges"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(job["done"].as_u64(), Some(ranges), "{job}");
    assert_eq!(job["failed"].as_u64(), Some(0), "{job}");
    // The restarted node's counters start at zero: every session it ran since is one of
    // the ranges left (the range in progress at the kill is compared again).
    let sessions_after = repair_json(&admin, "/v1/repair")["sessions"]
        .as_u64()
        .unwrap();
    eprintln!(
        "job {id}: {done_before} of {ranges} ranges done at the kill; {sessions_after} sessions after the restart"
    );
    assert!(
        sessions_after <= ranges - done_before + 1,
        "{sessions_after} sessions after the restart for {} ranges left",
        ranges - done_before
    );
    assert!(
        sessions_after >= ranges - done_before - 1,
        "{sessions_after}"
    );
    let mut c_one = cluster.conn(C, "ONE");
    let (present, _) = tally(&mut c_one, &new, &[]);
    assert_eq!(present, new.len());
}
