//! Durability of the real binary: writes acknowledged under `batch` sync survive SIGKILL;
//! TTLs hold across restarts; SIGTERM shuts down cleanly with exit status 0.

mod single_node_support;

use single_node_support::{Node, Raw, cmd, wait_until};
use std::time::{Duration, Instant};

#[test]
fn acknowledged_batch_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &["--sync-mode", "batch"]);
    // Several concurrent writers, so grouped commits are exercised too.
    let addr = n.addr;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut r = Raw::connect(addr);
                for i in 0..250 {
                    let k = format!("w{w}:{i}");
                    assert_eq!(
                        r.request(&cmd(&[b"SET", k.as_bytes(), k.as_bytes()])),
                        "+OK\r\n"
                    );
                }
                let mut ms = vec![b"MSET".to_vec()];
                for i in 0..50 {
                    ms.push(format!("m{w}:{i}").into_bytes());
                    ms.push(b"m".to_vec());
                }
                let refs: Vec<&[u8]> = ms.iter().map(|v| v.as_slice()).collect();
                assert_eq!(r.request(&cmd(&refs)), "+OK\r\n");
                assert_eq!(
                    r.request(&cmd(&[b"DEL", format!("w{w}:0").as_bytes()])),
                    ":1\r\n"
                );
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    n.kill9();
    let n = Node::start(dir.path(), &["--sync-mode", "batch"]);
    let mut r = Raw::connect(n.addr);
    for w in 0..4 {
        assert_eq!(
            r.request(&cmd(&[b"GET", format!("w{w}:0").as_bytes()])),
            "$-1\r\n"
        );
        for i in 1..250 {
            let k = format!("w{w}:{i}");
            let want = format!("${}\r\n{k}\r\n", k.len());
            assert_eq!(r.request(&cmd(&[b"GET", k.as_bytes()])), want);
        }
        for i in 0..50 {
            assert_eq!(
                r.request(&cmd(&[b"GET", format!("m{w}:{i}").as_bytes()])),
                "$1\r\nm\r\n"
            );
        }
    }
    assert_eq!(
        r.request(&cmd(&[b"DBSIZE"])),
        format!(":{}\r\n", 4 * 249 + 4 * 50)
    );
}

#[test]
fn ttl_expires_at_the_right_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &["--sync-mode", "batch"]);
    let mut r = Raw::connect(n.addr);
    let set_at = Instant::now();
    assert_eq!(
        r.request(&cmd(&[b"SET", b"soon", b"x", b"PX", b"4000"])),
        "+OK\r\n"
    );
    assert_eq!(
        r.request(&cmd(&[b"SET", b"later", b"y", b"EX", b"1000"])),
        "+OK\r\n"
    );
    assert_eq!(r.request(&cmd(&[b"SET", b"forever", b"z"])), "+OK\r\n");
    n.kill9();
    let n = Node::start(dir.path(), &["--sync-mode", "batch"]);
    let mut r = Raw::connect(n.addr);
    let pttl: i64 = r
        .request(&cmd(&[b"PTTL", b"soon"]))
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let elapsed = set_at.elapsed().as_millis() as i64;
    if elapsed < 3_900 {
        assert!(
            pttl > 0 && pttl <= 4_000 - elapsed + 50,
            "pttl {pttl} after {elapsed} ms"
        );
        assert_eq!(r.request(&cmd(&[b"GET", b"soon"])), "$1\r\nx\r\n");
    }
    let ttl: i64 = r
        .request(&cmd(&[b"TTL", b"later"]))
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((990..=1000).contains(&ttl), "{ttl}");
    assert_eq!(r.request(&cmd(&[b"TTL", b"forever"])), ":-1\r\n");
    // Expires when due (not before 4 s after the SET, and promptly after).
    assert!(wait_until(Duration::from_secs(10), || r
        .request(&cmd(&[b"EXISTS", b"soon"]))
        == ":0\r\n"));
    let gone_after = set_at.elapsed();
    assert!(
        gone_after >= Duration::from_millis(3_990),
        "expired early: {gone_after:?}"
    );
    // Restart once more: the expired key stays expired, the others stay.
    let st = n.terminate(Duration::from_secs(20));
    assert!(st.success(), "SIGTERM exit status {st:?}");
    let n = Node::start(dir.path(), &[]);
    let mut r = Raw::connect(n.addr);
    assert_eq!(r.request(&cmd(&[b"GET", b"soon"])), "$-1\r\n");
    assert_eq!(r.request(&cmd(&[b"GET", b"later"])), "$1\r\ny\r\n");
    assert_eq!(r.request(&cmd(&[b"GET", b"forever"])), "$1\r\nz\r\n");
}

#[test]
fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &["--sync-mode", "periodic"]);
    let mut r = Raw::connect(n.addr);
    let mut burst = Vec::new();
    for i in 0..500 {
        burst.extend(cmd(&[b"SET", format!("t{i}").as_bytes(), b"v"]));
    }
    r.send(&burst);
    let replies = r.read_values(500);
    assert_eq!(replies.len(), 500 * 5);
    let st = n.terminate(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
    // Periodic mode acknowledges before fsync, but a clean shutdown flushes everything.
    let n = Node::start(dir.path(), &[]);
    let mut r = Raw::connect(n.addr);
    assert_eq!(r.request(&cmd(&[b"DBSIZE"])), ":500\r\n");
}

#[test]
fn bad_config_exits_nonzero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hearsay.toml");
    std::fs::write(
        &cfg,
        "[storage]\nsync_mode = \"periodic\"\nsync_interval_ms = 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.sync_interval_ms"), "{err}");
    std::fs::write(&cfg, "[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));
}
