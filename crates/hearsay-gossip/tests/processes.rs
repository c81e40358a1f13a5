//! Real processes on loopback: five `hearsay-gossip-node`s converge; SIGKILL → SUSPECT then
//! DOWN; restart → UP with a newer generation; SIGSTOP → SUSPECT, SIGCONT → UP.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const INTERVAL_MS: u64 = 200;

struct Node {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    view: PathBuf,
    out: Arc<Mutex<Vec<String>>>,
    id: String,
    generation: u64,
}

struct Cluster {
    nodes: Vec<Node>,
    seeds: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

fn spawn(n: &mut Node, seeds: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearsay-gossip-node"))
        .args(["--dir", n.dir.to_str().unwrap()])
        .args(["--bind", &n.addr.to_string()])
        .args(["--seeds", seeds])
        .args(["--cluster", "proc-test", "--secret", "s3cret"])
        .args(["--interval-ms", &INTERVAL_MS.to_string()])
        .args(["--view-file", n.view.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let stdout = child.stdout.take().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    n.out = out;
    n.child = Some(child);
    // The first line names the node and its generation.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = n
            .out
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.starts_with("ready "))
        {
            let mut p = l.split_whitespace().skip(1);
            n.id = p.next().unwrap().to_string();
            n.generation = p.next().unwrap().parse().unwrap();
            return;
        }
        assert!(Instant::now() < deadline, "node did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn view(n: &Node) -> Option<Value> {
    let s = std::fs::read_to_string(&n.view).ok()?;
    serde_json::from_str(&s).ok()
}

/// (liveness, generation) of `id` in `n`'s view.
fn seen(n: &Node, id: &str) -> Option<(String, u64)> {
    let v = view(n)?;
    v["members"].as_array()?.iter().find_map(|m| {
        (m["node_id"] == id).then(|| {
            (
                m["liveness"].as_str().unwrap_or("").to_string(),
                m["generation"].as_u64().unwrap_or(0),
            )
        })
    })
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(n: &Node, sig: &str) {
    let pid = n.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

fn has_event(n: &Node, kind: &str, id: &str) -> Option<usize> {
    let want = format!("event {kind} {id}");
    n.out
        .lock()
        .unwrap()
        .iter()
        .position(|l| l.starts_with(&want))
}

#[test]
fn five_processes_converge_detect_crash_restart_and_pause() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..5)
        .map(|i| Node {
            child: None,
            addr: free_port(),
            dir: tmp.path().join(format!("n{i}")),
            view: tmp.path().join(format!("view{i}.json")),
            out: Arc::default(),
            id: String::new(),
            generation: 0,
        })
        .collect();
    let seeds = format!("{},{}", nodes[0].addr, nodes[1].addr);
    for n in &mut nodes {
        spawn(n, &seeds);
    }
    let mut c = Cluster {
        nodes,
        seeds,
        _tmp: tmp,
    };
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();

    // 1. Converge: everyone sees five members, all UP and NORMAL.
    wait_for("convergence", 30, || {
        c.nodes.iter().all(|n| {
            view(n).is_some_and(|v| {
                let ms = v["members"].as_array().cloned().unwrap_or_default();
                ms.len() == 5
                    && ms
                        .iter()
                        .all(|m| m["liveness"] == "UP" && m["status"] == "NORMAL")
            })
        })
    });

    // 2. SIGKILL node 4: the others show it SUSPECT, then DOWN.
    let victim = 4;
    let vid = ids[victim].clone();
    let old_generation = c.nodes[victim].generation;
    {
        let child = c.nodes[victim].child.as_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
    wait_for("DOWN after SIGKILL", 30, || {
        (0..4).all(|i| seen(&c.nodes[i], &vid).is_some_and(|(l, _)| l == "DOWN"))
    });
    for i in 0..4 {
        let s = has_event(&c.nodes[i], "Suspect", &vid).expect("Suspect event");
        let d = has_event(&c.nodes[i], "Down", &vid).expect("Down event");
        assert!(s < d, "SUSPECT before DOWN on node {i}");
    }

    // 3. Restart it from the same directory: UP again with a newer generation.
    let seeds = c.seeds.clone();
    spawn(&mut c.nodes[victim], &seeds);
    assert_eq!(
        c.nodes[victim].id, vid,
        "node id is kept in the data directory"
    );
    assert!(c.nodes[victim].generation > old_generation);
    let new_generation = c.nodes[victim].generation;
    wait_for("UP with newer generation after restart", 30, || {
        (0..4)
            .all(|i| seen(&c.nodes[i], &vid).is_some_and(|(l, g)| l == "UP" && g == new_generation))
    });

    // 4. SIGSTOP node 2 past the threshold: SUSPECT; SIGCONT: UP again.
    let paused = 2;
    let pid_ = ids[paused].clone();
    signal(&c.nodes[paused], "-STOP");
    wait_for("SUSPECT after SIGSTOP", 30, || {
        (0..5)
            .filter(|i| *i != paused)
            .all(|i| seen(&c.nodes[i], &pid_).is_some_and(|(l, _)| l != "UP"))
    });
    signal(&c.nodes[paused], "-CONT");
    wait_for("UP after SIGCONT", 30, || {
        (0..5)
            .filter(|i| *i != paused)
            .all(|i| seen(&c.nodes[i], &pid_).is_some_and(|(l, _)| l == "UP"))
    });
    for i in (0..5).filter(|i| *i != paused) {
        assert!(has_event(&c.nodes[i], "Suspect", &pid_).is_some());
    }
}
