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
