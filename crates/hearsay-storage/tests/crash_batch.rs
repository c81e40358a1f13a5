//! Acceptance 2: a child process writes with `batch` sync from several threads and prints
//! each acknowledged key; the parent SIGKILLs it at random moments, at least 20 cycles, and
//! after each crash reopens the engine and checks that every acknowledged write is there
//! with the right value.
//!
//! The child is this test binary re-executed with `HEARSAY_CRASH_CHILD_DIR` set, running only
//! `crash_child`. Set `HEARSAY_CRASH_SEED` to replay a run.

use bytes::Bytes;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, SyncMode};
use hearsay_types::{Timestamp, Token};
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CYCLES: usize = 20;
const CHILD_DIR_ENV: &str = "HEARSAY_CRASH_CHILD_DIR";
const CHILD_CYCLE_ENV: &str = "HEARSAY_CRASH_CYCLE";
const WRITER_THREADS: usize = 4;

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.sync_mode = SyncMode::Batch;
    // Small memtables and segments so crashes also land in flushes, compactions and
    // segment rotations.
    c.memtable_size_bytes = 32 << 10;
    c.memtable_total_bytes_max = 256 << 10;
    c.commitlog_segment_bytes = 64 << 10;
    c.compaction_bytes_per_sec = 0;
    c
}

fn cell_key(name: &str) -> CellKey {
    let token = name
        .bytes()
        .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
    CellKey::new(Token(token), Bytes::copy_from_slice(name.as_bytes()))
}

fn value_for(name: &str) -> Bytes {
    Bytes::from(format!("value-of-{name}-{}", "x".repeat(name.len() * 3)))
}

/// The child: writes forever until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // Not the child: nothing to do.
    };
    let cycle: u64 = std::env::var(CHILD_CYCLE_ENV).unwrap().parse().unwrap();
    let engine = Arc::new(Engine::open(config(std::path::Path::new(&dir))).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    println!("READY");
    let handles: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let engine = engine.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let name = format!("c{cycle}-t{t}-{i}");
                    // Two-cell batches: atomicity is checked too (both or neither).
                    let batch = [
                        (
                            cell_key(&name),
                            Cell::value(value_for(&name), Timestamp(i + 1)),
                        ),
                        (
                            cell_key(&format!("{name}-twin")),
                            Cell::value(value_for(&name), Timestamp(i + 1)),
                        ),
                    ];
                    engine.apply("default", &batch).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {name}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn acknowledged_batch_writes_survive_sigkill() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    let seed: u64 = std::env::var("HEARSAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (HEARSAY_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut kills = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        // Kill after a random number of acknowledgements (so the child is mid-stream, not
        // still starting), plus a random extra delay.
        let want_acks = rng.random_range(1..400usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("ACK "))
                .count();
            if n >= want_acks {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("child exited early with {status} in cycle {cycle} (seed {seed})");
            }
            assert!(Instant::now() < deadline, "child too slow (seed {seed})");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The random kill moment (not a synchronisation stand-in).
        std::thread::sleep(Duration::from_millis(rng.random_range(0..30)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        reader.join().unwrap();
        let new: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("ACK ").map(str::to_string))
            .collect();
        assert!(!new.is_empty());
        acked.extend(new);

        // Reopen and verify everything acknowledged so far.
        let e = Engine::open(config(dir.path())).unwrap();
        for name in &acked {
            for k in [name.clone(), format!("{name}-twin")] {
                let c = e.get("default", &cell_key(&k)).unwrap();
                assert_eq!(
                    c.and_then(|c| c.value),
                    Some(value_for(name)),
                    "acknowledged key {k} lost after crash in cycle {cycle} (seed {seed})"
                );
            }
        }
        e.close().unwrap();
    }
    assert!(kills >= CYCLES);
    assert!(
        acked.len() >= CYCLES,
        "too few acknowledged writes to mean anything"
    );
    println!(
        "{} acknowledged writes verified across {kills} SIGKILLs",
        acked.len()
    );
}
