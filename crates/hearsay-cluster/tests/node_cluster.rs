//! Three in-process nodes on 127.0.0.1 (real TCP RPC and UDP gossip, distinct ports), RF=3:
//! the library-level mirror of issue 5's acceptance item 2. Gossip runs at 100 ms rounds so
//! that failure detection takes about a second; every wait polls with a deadline.

use bytes::Bytes;
use hearsay_cluster::node::{Node, NodeConfig, NodeError};
use hearsay_cluster::quorum::ConsistencyError;
use hearsay_ring::{ReplicationStrategy, token_of};
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, SyncMode};
use hearsay_types::{ConsistencyLevel, NodeId, SystemClock, Timestamp};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUORUM: ConsistencyLevel = ConsistencyLevel::Quorum;
const ONE: ConsistencyLevel = ConsistencyLevel::One;
const ALL: ConsistencyLevel = ConsistencyLevel::All;
/// Generous bound for anything gossip must propagate on a busy 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);

struct TestNode {
    node: Arc<Node>,
    engine: Arc<Engine>,
    data: PathBuf,
    config: NodeConfig,
}

fn config(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: data.to_path_buf(),
        cluster_addr: addr,
        seeds,
        cluster_name: "node-tests".into(),
        secret: "s3cret".into(),
        write_timeout_ms: 1_000,
        read_timeout_ms: 1_000,
        join_wait_ms: 5_000,
        ..NodeConfig::default()
    };
    c.gossip.interval_ms = 100;
    c.rpc.backoff_max_ms = 200;
    c.rpc.connect_timeout_ms = 500;
    c.hints.retry_initial_ms = 100;
    c.hints.retry_max_ms = 500;
    c.hints.sync_interval_ms = 100;
    c
}

fn open_engine(data: &Path) -> Arc<Engine> {
    let mut ec = EngineConfig::new(data.join("engine"));
    ec.sync_mode = SyncMode::None;
    Arc::new(Engine::open(ec).expect("engine opens"))
}

async fn start(data: &Path, addr: SocketAddr, seeds: Vec<SocketAddr>) -> TestNode {
    start_with(config(data, addr, seeds)).await
}

async fn start_with(config: NodeConfig) -> TestNode {
    let data = config.data_dir.clone();
    let data = data.as_path();
    let engine = open_engine(data);
    let node = Node::start(config.clone(), engine.clone(), Arc::new(SystemClock))
        .await
        .expect("node starts");
    TestNode {
        node: Arc::new(node),
        engine,
        data: data.to_path_buf(),
        config,
    }
}

async fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three nodes, A the seed, B and C joining one after the other; returns once every node
/// routes by a ring of three NORMAL members.
async fn cluster(dir: &Path) -> Vec<TestNode> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = start(&dir.join("a"), any, vec![]).await;
    let seed = a.node.cluster_addr();
    let b = start(&dir.join("b"), any, vec![seed]).await;
    let c = start(&dir.join("c"), any, vec![seed]).await;
    let nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    nodes
}

async fn wait_for_ring(nodes: &[TestNode], size: usize) {
    for n in nodes {
        n.node.refresh_view();
    }
    wait_for("every node to see the whole ring", CONVERGE, || {
        nodes.iter().all(|n| {
            let v = n.node.view();
            v.ring.len() == size && v.alive.len() == size
        })
    })
    .await;
}

fn cell(key: &str, value: &str) -> (CellKey, Cell) {
    (
        CellKey::new(
            token_of(key.as_bytes()),
            Bytes::copy_from_slice(key.as_bytes()),
        ),
        Cell::value(Bytes::copy_from_slice(value.as_bytes()), Timestamp(0)),
    )
}

fn live(c: Option<Cell>) -> Option<String> {
    c.and_then(|c| c.value.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

fn stored(engine: &Engine, key: &str) -> Option<Cell> {
    engine
        .get(
            "default",
            &CellKey::new(
                token_of(key.as_bytes()),
                Bytes::copy_from_slice(key.as_bytes()),
            ),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_reads_see_quorum_writes_and_a_down_node_catches_up_from_hints() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path()).await;
    let (a, b) = (nodes[0].node.clone(), nodes[1].node.clone());

    // A QUORUM write through A is seen by a QUORUM read through B.
    a.write("default", vec![cell("k", "v1")], QUORUM)
        .await
        .unwrap();
    assert_eq!(
        live(b.read("default", b"k", QUORUM).await.unwrap()),
        Some("v1".into())
    );

    // C goes away.
    let c = nodes.pop().unwrap();
    let c_id = c.node.id();
    let c_addr = c.node.cluster_addr();
    c.node.shutdown().await;
    // QUORUM and ONE keep working at once (before and after C is convicted).
    a.write("default", vec![cell("k", "v2")], QUORUM)
        .await
        .unwrap();
    assert_eq!(
        live(b.read("default", b"k", QUORUM).await.unwrap()),
        Some("v2".into())
    );
    assert_eq!(
        live(a.read("default", b"k", ONE).await.unwrap()),
        Some("v2".into())
    );

    // Once A's gossip marks C DOWN, ALL fails fast with UNAVAILABLE.
    wait_for("A to mark C down", CONVERGE, || {
        !a.view().alive.contains(&c_id)
    })
    .await;
    let t = Instant::now();
    let err = a
        .write("default", vec![cell("k", "v3")], ALL)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        matches!(
            err,
            NodeError::Consistency(ConsistencyError::Unavailable { .. })
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "Cannot achieve consistency level ALL: 2 of 3 replicas alive"
    );
    let err = a.read("default", b"k", ALL).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Cannot achieve consistency level ALL")
    );
    // QUORUM and ONE still work once C is DOWN.
    a.write("default", vec![cell("k", "v4")], ONE)
        .await
        .unwrap();

    // Writes while C is down are hinted for it on the coordinators.
    let keys: Vec<String> = (0..40).map(|i| format!("hinted-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let coordinator = if i % 2 == 0 { &a } else { &b };
        coordinator
            .write("default", vec![cell(k, &format!("value-{i}"))], QUORUM)
            .await
            .unwrap();
    }
    let pending = a.hints_pending() + b.hints_pending();
    assert!(pending >= keys.len() as u64, "hints pending: {pending}");
    assert!(a.stats().hints.pending.contains_key(&c_id.to_string()));

    // C restarts on its data directory and address; hints bring it every write.
    let c = {
        let config = NodeConfig {
            cluster_addr: c_addr,
            ..c.config.clone()
        };
        let node = Node::start(config.clone(), c.engine.clone(), Arc::new(SystemClock))
            .await
            .expect("C restarts");
        TestNode {
            node: Arc::new(node),
            engine: c.engine.clone(),
            data: c.data.clone(),
            config,
        }
    };
    assert_eq!(c.node.id(), c_id, "same identity after restart");
    let start = Instant::now();
    let mut missing = keys.clone();
    while !missing.is_empty() {
        assert!(
            start.elapsed() < CONVERGE,
            "C still misses {} keys, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let mut still = Vec::new();
        for k in &missing {
            if c.node
                .read("default", k.as_bytes(), ONE)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                still.push(k.clone());
            }
        }
        missing = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("C had every hinted write after {:?}", start.elapsed());
    wait_for("the hint stores to empty", CONVERGE, || {
        a.hints_pending() == 0 && b.hints_pending() == 0
    })
    .await;
    assert!(a.stats().hints.delivered_total > 0);
    // v4 was written at ONE while C was down: C has it too now.
    assert_eq!(live(stored(&c.engine, "k")), Some("v4".into()));

    for n in [&nodes[0], &nodes[1], &c] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_read_returns_newest_and_repairs_a_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // Everyone holds "old"; then A and C (not B) get a newer value behind the coordinator's
    // back, as if B had missed the write.
    a.node
        .write("default", vec![cell("stale-key", "old")], ALL)
        .await
        .unwrap();
    let newer = Cell::value(Bytes::from_static(b"new"), a.node.hlc().now());
    let key = CellKey::new(token_of(b"stale-key"), Bytes::from_static(b"stale-key"));
    for n in [a, c] {
        n.engine
            .apply("default", &[(key.clone(), newer.clone())])
            .unwrap();
    }
    assert_eq!(live(stored(&b.engine, "stale-key")), Some("old".into()));
    // A QUORUM read through B (B's own copy is the data read) returns the newest value…
    let got = b.node.read("default", b"stale-key", QUORUM).await.unwrap();
    assert_eq!(live(got), Some("new".into()));
    // …and repaired B before answering.
    assert_eq!(stored(&b.engine, "stale-key"), Some(newer.clone()));
    assert!(b.node.stats().coordinator.read_repairs >= 1);
    assert!(b.node.stats().coordinator.digest_mismatches >= 1);

    // A delete applied on A and C only: the tombstone wins and is repaired onto B.
    let tomb = Cell::tombstone(a.node.hlc().now());
    for n in [a, c] {
        n.engine
            .apply("default", &[(key.clone(), tomb.clone())])
            .unwrap();
    }
    let got = b.node.read("default", b"stale-key", QUORUM).await.unwrap();
    assert_eq!(live(got), None);
    assert_eq!(stored(&b.engine, "stale-key"), Some(tomb));

    for n in &nodes {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_through_every_node_converge() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let keys: Vec<String> = (0..10).map(|i| format!("contended-{i}")).collect();
    let mut writers = Vec::new();
    for (w, n) in nodes.iter().enumerate() {
        let node = n.node.clone();
        let keys = keys.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..20 {
                for k in &keys {
                    node.write("default", vec![cell(k, &format!("w{w}-r{round}"))], ONE)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // ONE acknowledges before every replica applied: wait until the replicas agree.
    wait_for("every replica to hold the same cell", CONVERGE, || {
        keys.iter().all(|k| {
            let cells: Vec<Option<Cell>> = nodes.iter().map(|n| stored(&n.engine, k)).collect();
            cells[0].is_some() && cells.iter().all(|c| *c == cells[0])
        })
    })
    .await;
    // And the value every replica holds is what a QUORUM read returns through any node.
    for k in &keys {
        let expect = stored(&nodes[0].engine, k);
        for n in &nodes {
            assert_eq!(
                n.node.read("default", k.as_bytes(), QUORUM).await.unwrap(),
                expect
            );
        }
    }
    for n in &nodes {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyspaces_spread_by_schema_pull_and_status_shows_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let (a, b, c) = (&nodes[0].node, &nodes[1].node, &nodes[2].node);
    a.create_keyspace("ks2", ReplicationStrategy::simple(2), Some(QUORUM))
        .await
        .unwrap();
    assert!(matches!(
        b.create_keyspace("default", ReplicationStrategy::simple(1), None)
            .await,
        Err(NodeError::KeyspaceExists(_))
    ));
    wait_for("ks2 to reach B and C", CONVERGE, || {
        [b, c].iter().all(|n| {
            n.keyspaces().iter().any(|k| k.name == "ks2")
                && n.schema_version() == a.schema_version()
        })
    })
    .await;
    assert_eq!(c.default_consistency("ks2"), QUORUM);
    c.write("ks2", vec![cell("x", "1")], QUORUM).await.unwrap();
    assert_eq!(
        live(b.read("ks2", b"x", QUORUM).await.unwrap()),
        Some("1".into())
    );
    let (token, replicas) = a.endpoints("ks2", b"x").unwrap();
    assert_eq!(token, token_of(b"x"));
    assert_eq!(replicas.len(), 2);
    let mut held: Vec<NodeId> = nodes
        .iter()
        .filter(|n| {
            n.engine
                .get("ks2", &CellKey::new(token, Bytes::from_static(b"x")))
                .unwrap()
                .is_some()
        })
        .map(|n| n.node.id())
        .collect();
    let mut expect: Vec<NodeId> = replicas.iter().map(|(n, _)| *n).collect();
    expect.sort();
    held.sort();
    assert_eq!(
        held, expect,
        "exactly the replicas getendpoints names hold the key"
    );

    // Status: three UN rows, 16 tokens each, effective ownership summing to RF.
    let status = a.status();
    assert_eq!(status.members.len(), 3);
    for m in &status.members {
        assert_eq!(m.code, "UN", "{m:?}");
        assert_eq!(m.tokens, 16);
    }
    let owns: f64 = status
        .members
        .iter()
        .map(|m| m.owns_effective["default"])
        .sum();
    assert!((owns - 3.0).abs() < 1e-6, "{owns}");
    let owns: f64 = status.members.iter().map(|m| m.owns_effective["ks2"]).sum();
    assert!((owns - 2.0).abs() < 1e-6, "{owns}");
    serde_json_like(&status);

    // A scan through any node walks every node's ranges in token order and sees every key.
    let mut written: Vec<String> = (0..30).map(|i| format!("scan-{i}")).collect();
    for k in &written {
        a.write("ks2", vec![cell(k, "v")], QUORUM).await.unwrap();
    }
    written.push("x".into());
    let mut seen = Vec::new();
    let mut from = hearsay_types::Token::MIN;
    let mut pages = 0;
    loop {
        let page = b.scan("ks2", from, 7).await.unwrap();
        pages += 1;
        assert!(pages < 100, "scan does not terminate");
        seen.extend(page.cells);
        match page.next {
            Some(n) => from = n,
            None => break,
        }
    }
    assert!(pages > 1);
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "ascending (token, key), no duplicates"
    );
    let mut names: Vec<String> = seen
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(&k.key).into_owned())
        .collect();
    names.sort();
    written.sort();
    assert_eq!(names, written);

    // Drop spreads too, and the engine keyspace goes with it.
    b.drop_keyspace("ks2").await.unwrap();
    wait_for("the drop to reach A and C", CONVERGE, || {
        [a, c]
            .iter()
            .all(|n| n.keyspaces().iter().all(|k| k.name != "ks2"))
    })
    .await;
    assert!(matches!(
        a.write("ks2", vec![cell("x", "2")], ONE).await,
        Err(NodeError::NoSuchKeyspace(_))
    ));
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// The status must be serialisable (the admin API serves it as JSON).
fn serde_json_like<T: serde::Serialize>(v: &T) {
    let bytes = postcard::to_allocvec(v).expect("serialisable");
    assert!(!bytes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_joining_at_once_end_with_distinct_tokens() {
    // What `hearsay dev` does: start every non-seed node at the same time. Two joiners that
    // learn the same ring compute the same balanced tokens; the clash check must separate them.
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = start(&dir.path().join("a"), any, vec![]).await;
    let seed = a.node.cluster_addr();
    let (bdir, cdir) = (dir.path().join("b"), dir.path().join("c"));
    let (b, c) = tokio::join!(start(&bdir, any, vec![seed]), start(&cdir, any, vec![seed]));
    let nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let mut all: Vec<hearsay_types::Token> = nodes.iter().flat_map(|n| n.node.tokens()).collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a token is claimed twice");
    let view = nodes[0].node.view();
    let owners: std::collections::BTreeSet<NodeId> = view.routes["default"]
        .map
        .natural()
        .ranges()
        .map(|(_, replicas)| replicas[0])
        .collect();
    assert_eq!(owners.len(), 3, "every node owns ranges");
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// A's view with `down` marked DOWN (the `override_membership` seam: no need to wait for
/// gossip to convict anyone).
fn with_down(node: &Node, down: &[NodeId]) -> hearsay_cluster::node::Membership {
    let mut m = node.view().membership.clone();
    for id in down {
        if let Some(info) = m.members.get_mut(id) {
            info.live = hearsay_cluster::node::Live::Down;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_is_satisfied_by_a_hint_when_no_replica_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let (a, b) = (&nodes[0].node, &nodes[1]);
    a.create_keyspace("rf1", ReplicationStrategy::simple(1), None)
        .await
        .unwrap();
    wait_for("rf1 everywhere", CONVERGE, || {
        nodes
            .iter()
            .all(|n| n.node.keyspaces().iter().any(|k| k.name == "rf1"))
    })
    .await;
    // A key whose only replica is B.
    let key = (0..1000)
        .map(|i| format!("any-{i}"))
        .find(|k| a.endpoints("rf1", k.as_bytes()).unwrap().1[0].0 == b.node.id())
        .expect("some key lives on B");
    a.override_membership(Some(with_down(a, &[b.node.id(), nodes[2].node.id()])));
    let err = a
        .write("rf1", vec![cell(&key, "v")], ONE)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot achieve consistency level ONE: 0 of 1 replicas alive"
    );
    a.write("rf1", vec![cell(&key, "v")], ConsistencyLevel::Any)
        .await
        .expect("ANY is satisfied by the hint");
    assert_eq!(a.hints_pending(), 1);
    assert!(matches!(
        a.read("rf1", key.as_bytes(), ConsistencyLevel::Any).await,
        Err(NodeError::Consistency(
            ConsistencyError::WriteOnlyLevel { .. }
        ))
    ));
    // Back to gossip's view (B is UP): the hint is delivered.
    a.override_membership(None);
    let k = CellKey::new(token_of(key.as_bytes()), Bytes::from(key.clone()));
    wait_for("the hint to reach B", CONVERGE, || {
        b.engine.get("rf1", &k).unwrap().is_some() && a.hints_pending() == 0
    })
    .await;
    for n in &nodes {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_replica_times_out_and_the_error_says_how_many_answered() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let a = &nodes[0].node;
    // A peer that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let b_id = nodes[1].node.id();
    let mut m = a.view().membership.clone();
    m.members.get_mut(&b_id).unwrap().cluster_addr = Some(silent_addr);
    a.override_membership(Some(m));
    let t = Instant::now();
    let err = a
        .write("default", vec![cell("t", "v")], ALL)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("Operation timed out - received only 2 of 3 required responses"),
        "{text}"
    );
    assert!(text.contains(&b_id.to_string()), "{text}");
    // QUORUM does not wait for the silent one; it is hinted.
    a.write("default", vec![cell("t", "w")], QUORUM)
        .await
        .unwrap();
    wait_for("hints for the silent replica", CONVERGE, || {
        a.stats().hints.pending.contains_key(&b_id.to_string())
    })
    .await;
    assert!(a.stats().coordinator.write_timeouts >= 1);
    hold.abort();
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// A coordinator that is itself a replica acknowledges a write only once its own replica has
/// it (or failed, or the write timed out), so a ONE read through the same node, served by the
/// local replica, sees the write even when a remote replica answered first. B runs on its own
/// runtime whose single blocking thread is held, so its local apply waits while A and C apply
/// and acknowledge at once.
#[test]
fn a_write_through_a_replica_is_acknowledged_only_after_its_local_apply() {
    let dir = tempfile::tempdir().unwrap();
    let rt_main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = rt_main.block_on(start(&dir.path().join("a"), any, vec![]));
    let seed = a.node.cluster_addr();
    // B's write deadline is far beyond the test's window, so only its own apply (not the
    // timeout) can complete the write.
    let mut b_config = config(&dir.path().join("b"), any, vec![seed]);
    b_config.write_timeout_ms = 60_000;
    let b = rt_b.block_on(start_with(b_config));
    let c = rt_main.block_on(start(&dir.path().join("c"), any, vec![seed]));
    let nodes = vec![a, b, c];
    rt_main.block_on(wait_for_ring(&nodes, 3));

    // Hold B's only blocking thread: B's local apply queues behind it.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    rt_b.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        let _ = held.recv();
    });
    started_rx.recv().unwrap();
    let b_node = nodes[1].node.clone();
    let write =
        rt_b.spawn(async move { b_node.write("default", vec![cell("ryw", "v")], ONE).await });

    rt_main.block_on(wait_for("A and C to apply the write", CONVERGE, || {
        stored(&nodes[0].engine, "ryw").is_some() && stored(&nodes[2].engine, "ryw").is_some()
    }));
    // A and C have acknowledged (or are about to): ONE is met by them. The window below is the
    // time a premature acknowledgement would need to arrive, not a synchronisation.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !write.is_finished(),
        "the ONE write through B was acknowledged before B's own replica applied it"
    );
    assert!(stored(&nodes[1].engine, "ryw").is_none());
    release.send(()).unwrap();
    rt_b.block_on(write).unwrap().expect("the write succeeds");
    assert_eq!(live(stored(&nodes[1].engine, "ryw")).as_deref(), Some("v"));

    rt_b.block_on(nodes[1].node.shutdown());
    rt_main.block_on(async {
        nodes[0].node.shutdown().await;
        nodes[2].node.shutdown().await;
    });
}

/// Restarts `old` on its data directory, engine and internode address, with `edit` applied
/// to its configuration.
async fn restart(old: &TestNode, edit: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let mut config = NodeConfig {
        cluster_addr: old.node.cluster_addr(),
        ..old.config.clone()
    };
    edit(&mut config);
    let node = Node::start(config.clone(), old.engine.clone(), Arc::new(SystemClock))
        .await
        .expect("node restarts");
    TestNode {
        node: Arc::new(node),
        engine: old.engine.clone(),
        data: old.data.clone(),
        config,
    }
}

/// Issue 16's reproduction, in process: a node restarts while it cannot reach anyone (here
/// every other node is stopped). It must route by the ring it had, not by a ring of itself,
/// and refuse to coordinate until it has heard from a peer — before the fix it acknowledged
/// QUORUM writes stored only on itself. Once a peer is back, QUORUM of RF 3 needs two real
/// replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_that_hears_nobody_keeps_its_ring_and_refuses_to_coordinate() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node.id()).collect();
    for i in 0..20 {
        nodes[0]
            .node
            .write("default", vec![cell(&format!("before-{i}"), "v")], ALL)
            .await
            .unwrap();
    }
    for n in &nodes {
        n.node.shutdown().await;
    }
    // B comes back alone; its seed (A) is stopped.
    let b = restart(&nodes[1], |c| c.join_wait_ms = 500).await;
    assert!(!b.node.is_ready(), "B heard nobody");
    let view = b.node.view();
    assert_eq!(view.ring.len(), 3, "B routes by the saved ring of three");
    assert_eq!(view.alive.len(), 1, "only B itself is known alive");
    for level in [ONE, QUORUM, ALL] {
        let err = b
            .node
            .write("default", vec![cell("during", "x")], level)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::NotReady(_)), "{level}: {err}");
        assert!(
            err.to_string().contains("has not heard from any peer"),
            "{err}"
        );
        let err = b
            .node
            .read("default", b"before-1", level)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::NotReady(_)), "{level}: {err}");
    }
    assert_eq!(stored(&b.engine, "during"), None, "nothing was applied");

    // A returns: B hears it, and then coordinates by RF, not by what it sees.
    let a = restart(&nodes[0], |_| {}).await;
    wait_for("B to hear from A", CONVERGE, || b.node.is_ready()).await;
    wait_for("B to see A alive", CONVERGE, || {
        b.node.view().alive.contains(&ids[0])
    })
    .await;
    b.node
        .write("default", vec![cell("after", "y")], QUORUM)
        .await
        .expect("A and B are a quorum of three");
    let err = b
        .node
        .write("default", vec![cell("after", "z")], ALL)
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Consistency(_)), "{err}");
    for i in 0..20 {
        let k = format!("before-{i}");
        assert_eq!(
            live(b.node.read("default", k.as_bytes(), QUORUM).await.unwrap()),
            Some("v".into()),
            "{k}"
        );
    }
    a.node.shutdown().await;
    b.node.shutdown().await;
}

/// A node restarting never leaves its peers' rings: its tokens stay placed from the kill
/// until it is up again (sampled every 10 ms on both peers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarting_node_never_leaves_its_peers_rings() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path()).await;
    let c = nodes.pop().unwrap();
    let c_id = c.node.id();
    let peers: Vec<Arc<Node>> = nodes.iter().map(|n| n.node.clone()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let peers = peers.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = 0usize;
            let mut bad = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in &peers {
                    p.refresh_view();
                    let v = p.view();
                    if v.ring.len() != 3 || v.ring.member(c_id).is_none() {
                        bad.push(format!("{} saw a ring of {} members", p.id(), v.ring.len()));
                    }
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (samples, bad)
        })
    };
    c.node.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = restart(&c, |_| {}).await;
    wait_for("both peers to see C up again", CONVERGE, || {
        peers.iter().all(|p| p.view().up.contains(&c_id))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, bad) = sampler.await.unwrap();
    assert!(samples >= 20, "only {samples} samples");
    assert!(
        bad.is_empty(),
        "{} of {samples} samples: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    for n in nodes.iter().chain([&c]) {
        n.node.shutdown().await;
    }
}

/// `KEYSPACE ALTER` changes only the fields it is given, each alone and both together
/// (issue 16: `ALTER default CONSISTENCY QUORUM` reset the RF to 1), on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alter_keyspace_changes_only_what_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let (a, c) = (&nodes[0].node, &nodes[2].node);
    let def = |n: &Node, name: &str| n.keyspaces().into_iter().find(|d| d.name == name);
    let expect_everywhere =
        |name: &'static str, strategy: ReplicationStrategy, level: Option<ConsistencyLevel>| {
            let nodes = &nodes;
            async move {
                wait_for(
                    &format!("{name} = {strategy:?} {level:?} everywhere"),
                    CONVERGE,
                    || {
                        nodes.iter().all(|n| {
                            def(&n.node, name).is_some_and(|d| {
                                d.strategy == strategy && d.default_consistency == level
                            })
                        })
                    },
                )
                .await;
            }
        };
    // The case, on the default keyspace.
    a.alter_keyspace("default", None, Some(QUORUM))
        .await
        .unwrap();
    expect_everywhere("default", ReplicationStrategy::simple(3), Some(QUORUM)).await;

    a.create_keyspace("ks", ReplicationStrategy::simple(2), Some(ONE))
        .await
        .unwrap();
    expect_everywhere("ks", ReplicationStrategy::simple(2), Some(ONE)).await;
    c.alter_keyspace("ks", None, Some(ALL)).await.unwrap();
    expect_everywhere("ks", ReplicationStrategy::simple(2), Some(ALL)).await;
    c.alter_keyspace("ks", Some(ReplicationStrategy::simple(3)), None)
        .await
        .unwrap();
    expect_everywhere("ks", ReplicationStrategy::simple(3), Some(ALL)).await;
    let nts = ReplicationStrategy::network_topology([("dc1", 2)]);
    a.alter_keyspace("ks", Some(nts.clone()), Some(QUORUM))
        .await
        .unwrap();
    expect_everywhere("ks", nts, Some(QUORUM)).await;
    assert!(matches!(
        a.alter_keyspace("nope", None, Some(ONE)).await,
        Err(NodeError::NoSuchKeyspace(_))
    ));
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// A wall clock shifted by a settable offset (monotonic time untouched), as libfaketime
/// shifts a process's wall clock.
#[derive(Debug, Default)]
struct ShiftedClock {
    offset_us: std::sync::atomic::AtomicI64,
}

impl hearsay_types::Clock for ShiftedClock {
    fn wall_micros(&self) -> u64 {
        let real = SystemClock.wall_micros();
        real.saturating_add_signed(self.offset_us.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn monotonic(&self) -> std::time::Instant {
        Instant::now()
    }
}

/// Three nodes; C's wall clock is shifted by `shift_us`; every node uses `max_offset_ms`.
async fn skewed_cluster(
    dir: &Path,
    shift_us: i64,
    max_offset_ms: u64,
) -> (Vec<TestNode>, Arc<ShiftedClock>) {
    use hearsay_types::Clock;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let shifted = Arc::new(ShiftedClock::default());
    shifted
        .offset_us
        .store(shift_us, std::sync::atomic::Ordering::Relaxed);
    let mut nodes = Vec::new();
    let mut seed = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let mut c = config(&dir.join(name), any, seed.clone());
        c.max_clock_offset_ms = max_offset_ms;
        let clock: Arc<dyn Clock> = if i == 2 {
            shifted.clone()
        } else {
            Arc::new(SystemClock)
        };
        let engine = open_engine(&c.data_dir);
        let node = Node::start(c.clone(), engine.clone(), clock)
            .await
            .expect("node starts");
        if seed.is_empty() {
            seed = vec![node.cluster_addr()];
        }
        nodes.push(TestNode {
            node: Arc::new(node),
            engine,
            data: c.data_dir.clone(),
            config: c,
        });
    }
    wait_for_ring(&nodes, 3).await;
    (nodes, shifted)
}

/// Issue 17: a node whose wall clock is 120 s ahead is named as the skewed one (by the
/// others' physical offsets, not HLC readings), refuses to coordinate writes with a clear
/// error, does not drag the others' clocks, and cannot plant future timestamps; writes
/// through the healthy nodes keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_clock_far_ahead_refuses_writes_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, shift) = skewed_cluster(dir.path(), 120_000_000, 500).await;
    let (a, b, c) = (&nodes[0].node, &nodes[1].node, &nodes[2].node);
    wait_for("C to judge its clock off", CONVERGE, || {
        c.stats().clock.skewed
    })
    .await;
    let err = c
        .write("default", vec![cell("k", "from-c")], QUORUM)
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::ClockSkew(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("clock skew: this node's clock is 1"),
        "{err}"
    );
    assert!(err.to_string().contains("ahead of 2 of 2 peers"), "{err}");
    assert!(c.health().clock_skew.is_some());
    assert!(!c.health().is_ok());
    // A and B are healthy, and A's measurements name C, not B.
    for n in [a, b] {
        assert!(!n.stats().clock.skewed);
        assert!(n.health().is_ok(), "{:?}", n.health());
    }
    wait_for(
        "A to measure C about +120 s and B about 0",
        CONVERGE,
        || {
            let s = a.stats().clock_skew_us;
            let c_off = s.get(&c.id().to_string()).copied().unwrap_or(0);
            let b_off = s.get(&b.id().to_string()).copied().unwrap_or(i64::MAX);
            (c_off - 120_000_000).abs() < 1_000_000 && b_off.abs() < 1_000_000
        },
    )
    .await;
    // A's clock was not dragged 120 s ahead by C's frames.
    let a_ts = a.hlc().now().0;
    let wall = {
        use hearsay_types::Clock;
        SystemClock.wall_micros()
    };
    assert!(
        a_ts < wall + 10_000_000,
        "A's HLC ran {} s ahead",
        (a_ts - wall) / 1_000_000
    );
    // Writes and reads through the healthy nodes work; C, as a replica, takes them.
    for i in 0..20 {
        let k = format!("w{i}");
        a.write("default", vec![cell(&k, "v")], QUORUM)
            .await
            .unwrap();
        assert_eq!(
            live(b.read("default", k.as_bytes(), QUORUM).await.unwrap()),
            Some("v".into())
        );
    }
    // Reads through the skewed node are still served.
    assert_eq!(
        live(c.read("default", b"w1", QUORUM).await.unwrap()),
        Some("v".into())
    );
    // A timestamp 120 s ahead, minted by a caller: every replica refuses it.
    let future = {
        use hearsay_types::Clock;
        SystemClock.wall_micros() + 120_000_000
    };
    let (k, mut cl) = cell("planted", "x");
    cl.timestamp = Timestamp(future);
    let err = a.write("default", vec![(k, cl)], ALL).await.unwrap_err();
    assert!(
        err.to_string().contains("ahead of this replica's clock"),
        "{err}"
    );
    assert_eq!(stored(&nodes[0].engine, "planted"), None);
    assert!(a.stats().coordinator.future_mutations_refused > 0);
    // C's wall clock comes back. Its hybrid clock followed the wall clock ahead and never
    // goes back: until the cluster's time catches up, C still refuses writes (its
    // timestamps would be refused by every replica) and says why in its health.
    c.hlc().now();
    shift
        .offset_us
        .store(0, std::sync::atomic::Ordering::Relaxed);
    wait_for("C to judge its clock back", CONVERGE, || {
        !c.stats().clock.skewed
    })
    .await;
    let err = c
        .write("default", vec![cell("after-return", "v")], QUORUM)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("timestamps run") && err.to_string().contains("ahead"),
        "{err}"
    );
    let h = c.health();
    assert!(
        h.clock_skew
            .as_deref()
            .is_some_and(|s| s.contains("timestamps run")),
        "{h:?}"
    );
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// Issue 17: with C's clock 2 s ahead (or behind) and the maximum offset at 3 s, every write
/// is accepted, and alternating QUORUM writes through C and A to the same keys are ordered:
/// the last acknowledged write always wins. The keys (RF 2) are chosen off the lagging
/// coordinator, so it never sees the other's writes arrive as a replica and mints below them;
/// the replicas report the newer version and the write is re-sent above it. Without that
/// retry the earlier write wins (checked by hand when this test was written).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alternating_writes_through_a_skewed_node_within_the_offset_stay_ordered() {
    for shift_us in [2_000_000i64, -2_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let (nodes, _shift) = skewed_cluster(dir.path(), shift_us, 3_000).await;
        let (a, c) = (&nodes[0].node, &nodes[2].node);
        // Let C's clock verdict settle (it must not be judged skewed).
        wait_for("C to measure its peers", CONVERGE, || {
            c.stats().clock.peers_measured == 2
        })
        .await;
        assert!(!c.stats().clock.skewed, "{:?}", c.stats().clock);
        a.create_keyspace("reg", ReplicationStrategy::simple(2), None)
            .await
            .unwrap();
        wait_for("every node to route keyspace reg", CONVERGE, || {
            nodes
                .iter()
                .all(|n| n.node.view().routes.contains_key("reg"))
        })
        .await;
        // The coordinator whose clock is behind the other's.
        let (ahead, behind) = if shift_us > 0 { (c, a) } else { (a, c) };
        let keys: Vec<String> = (0..1_000)
            .map(|i| format!("reg-{i}"))
            .filter(|k| {
                let (_, eps) = a.endpoints("reg", k.as_bytes()).unwrap();
                eps.iter().all(|(n, _)| *n != behind.id())
            })
            .take(10)
            .collect();
        assert_eq!(keys.len(), 10);
        for k in &keys {
            for i in 0..6 {
                let via = if i % 2 == 0 { ahead } else { behind };
                via.write("reg", vec![cell(k, &i.to_string())], QUORUM)
                    .await
                    .unwrap_or_else(|e| panic!("shift {shift_us}: write {i} of {k}: {e}"));
            }
            for n in &nodes {
                assert_eq!(
                    live(n.node.read("reg", k.as_bytes(), QUORUM).await.unwrap()),
                    Some("5".into()),
                    "shift {shift_us}: {k} through {}",
                    n.node.id()
                );
            }
        }
        let retries = behind.stats().coordinator.superseded_retries;
        eprintln!("shift {shift_us} µs: superseded retries through the lagging node: {retries}");
        assert!(
            retries > 0,
            "the lagging coordinator never had to re-send a write"
        );
        for n in &nodes {
            n.node.shutdown().await;
        }
    }
}

/// Issue 17: a replica whose storage engine is poisoned (fsync EIO) says so in its health
/// and gossip; the others route around it: QUORUM reads and writes through them all succeed
/// (the poisoned node is hinted, and reads do not pick it), including for keys written
/// after the poisoning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poisoned_replica_is_named_and_routed_around() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = start(&dir.path().join("a"), any, vec![]).await;
    let seed = a.node.cluster_addr();
    let b = start(&dir.path().join("b"), any, vec![seed]).await;
    // C's engine syncs every write (batch) through a file system whose fsyncs can fail.
    let c_dir = dir.path().join("c");
    let faulty = hearsay_storage::FaultyFs::new();
    let c_engine = {
        let mut ec = EngineConfig::new(c_dir.join("engine"));
        ec.sync_mode = SyncMode::Batch;
        ec.fs = faulty.clone();
        Arc::new(Engine::open(ec).unwrap())
    };
    let c_config = config(&c_dir, any, vec![seed]);
    let c_node = Node::start(c_config.clone(), c_engine.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let c = TestNode {
        node: Arc::new(c_node),
        engine: c_engine,
        data: c_dir,
        config: c_config,
    };
    let nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let (a, b, c) = (&nodes[0].node, &nodes[1].node, &nodes[2].node);
    faulty.fail_syncs(true);
    // The next write C applies poisons its engine.
    let _ = a.write("default", vec![cell("trigger", "x")], ALL).await;
    wait_for("C to report its poisoned storage", CONVERGE, || {
        c.health().storage_poisoned.is_some()
    })
    .await;
    wait_for("A and B to see C unfit", CONVERGE, || {
        a.view().unfit.contains(&c.id()) && b.view().unfit.contains(&c.id())
    })
    .await;
    let row = a
        .status()
        .members
        .into_iter()
        .find(|m| m.node_id == c.id().to_string())
        .unwrap();
    assert_eq!(row.code, "SN");
    assert_eq!(row.health, vec!["storage_poisoned".to_string()]);
    for i in 0..100 {
        let k = format!("after-{i}");
        let (w, r) = if i % 2 == 0 { (a, b) } else { (b, a) };
        w.write("default", vec![cell(&k, "v")], QUORUM)
            .await
            .unwrap_or_else(|e| panic!("write {k}: {e}"));
        assert_eq!(
            live(
                r.read("default", k.as_bytes(), QUORUM)
                    .await
                    .unwrap_or_else(|e| panic!("read {k}: {e}"))
            ),
            Some("v".into())
        );
    }
    assert!(
        a.hints_pending() + b.hints_pending() >= 100,
        "C's writes are hinted"
    );
    // C does not coordinate writes either (a write through it could not be hinted to it).
    let err = c
        .write("default", vec![cell("via-c", "v")], QUORUM)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("storage poisoned: "), "{err}");
    assert!(
        err.to_string().contains("write through another node"),
        "{err}"
    );
    // C restarts with a working disk: the hints bring it every write it missed.
    let mut nodes = nodes;
    let old_c = nodes.pop().unwrap();
    old_c.node.shutdown().await;
    let _ = old_c.engine.close();
    let (data, mut config) = (old_c.data.clone(), old_c.config.clone());
    config.cluster_addr = old_c.node.cluster_addr();
    // The engine's directory lock goes with its last handle (the node's tasks hold some).
    drop(old_c);
    let mut opened = None;
    wait_for("C's engine to reopen", CONVERGE, || {
        let mut ec = EngineConfig::new(data.join("engine"));
        ec.sync_mode = SyncMode::Batch;
        opened = Engine::open(ec).ok();
        opened.is_some()
    })
    .await;
    let c_engine = Arc::new(opened.unwrap());
    let c = {
        let node = Node::start(config.clone(), c_engine.clone(), Arc::new(SystemClock))
            .await
            .unwrap();
        TestNode {
            node: Arc::new(node),
            engine: c_engine,
            data,
            config,
        }
    };
    wait_for("the hints to drain into C", CONVERGE, || {
        nodes[0].node.hints_pending() == 0 && nodes[1].node.hints_pending() == 0
    })
    .await;
    for i in 0..100 {
        let k = format!("after-{i}");
        assert_eq!(live(stored(&c.engine, &k)), Some("v".into()), "{k} on C");
    }
    assert!(c.node.health().is_ok(), "{:?}", c.node.health());
    for n in nodes.iter().chain([&c]) {
        n.node.shutdown().await;
    }
}

/// The test-only network fault seam: a node whose faults file says `loss = 1.0` loses every
/// call it makes (its QUORUM writes time out, its own replica applies them), and clearing the
/// file brings it back; the file is re-read while the node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_network_loss_is_applied_and_cleared_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let faults = dir.path().join("faults.toml");
    let mut ca = config(&dir.path().join("a"), any, vec![]);
    ca.testing.net_faults_file = Some(faults.clone());
    let a = start_with(ca).await;
    let seed = a.node.cluster_addr();
    let b = start(&dir.path().join("b"), any, vec![seed]).await;
    let c = start(&dir.path().join("c"), any, vec![seed]).await;
    let nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let a = &nodes[0].node;
    a.write("default", vec![cell("before", "v")], QUORUM)
        .await
        .unwrap();
    std::fs::write(&faults, "loss = 1.0\n").unwrap();
    let start = Instant::now();
    let mut lost = false;
    while start.elapsed() < CONVERGE {
        if let Err(e) = a.write("default", vec![cell("during", "v")], QUORUM).await {
            assert!(
                matches!(e, NodeError::Consistency(ConsistencyError::Timeout { .. })),
                "{e}"
            );
            lost = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lost, "A's writes kept succeeding with every call lost");
    std::fs::write(&faults, "").unwrap();
    let start = Instant::now();
    loop {
        if a.write("default", vec![cell("after", "v")], QUORUM)
            .await
            .is_ok()
        {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "A never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &nodes {
        n.node.shutdown().await;
    }
}

/// Issue 20, acceptance 2 (in process): C misses 10,000 writes at ONE and 1,000 deletes
/// with hints off; after C restarts, one repair through C leaves every replica with every
/// key and every delete, and a second repair moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_brings_a_replica_that_missed_writes_and_deletes_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = |d: &str, seeds: Vec<SocketAddr>| {
        let mut c = config(&dir.path().join(d), any, seeds);
        c.hints.enabled = false;
        c.repair.enabled = false;
        c
    };
    let a = start_with(cfg("a", vec![])).await;
    let seed = a.node.cluster_addr();
    let b = start_with(cfg("b", vec![seed])).await;
    let c = start_with(cfg("c", vec![seed])).await;
    let mut nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let old: Vec<String> = (0..1_000).map(|i| format!("old-{i}")).collect();
    for chunk in old.chunks(100) {
        let cells = chunk.iter().map(|k| cell(k, "v")).collect();
        nodes[0].node.write("default", cells, ALL).await.unwrap();
    }
    let c = nodes.pop().unwrap();
    c.node.shutdown().await;
    let (a, b) = (&nodes[0].node, &nodes[1].node);
    let new: Vec<String> = (0..10_000).map(|i| format!("new-{i}")).collect();
    for chunk in new.chunks(200) {
        let cells = chunk.iter().map(|k| cell(k, "w")).collect();
        a.write("default", cells, ONE).await.unwrap();
    }
    for chunk in old.chunks(200) {
        let cells = chunk
            .iter()
            .map(|k| {
                let (key, _) = cell(k, "");
                (key, Cell::tombstone(Timestamp(0)))
            })
            .collect();
        b.write("default", cells, ONE).await.unwrap();
    }
    assert_eq!(stored(&c.engine, "new-1"), None);
    let c = restart(&c, |_| {}).await;
    // Repair compares only writes older than a write's deadline (still arriving otherwise).
    tokio::time::sleep(Duration::from_millis(c.config.write_timeout_ms + 600)).await;
    wait_for("C to be ready", CONVERGE, || c.node.is_ready()).await;
    let job = c.node.start_repair(Default::default()).await.unwrap();
    let finished = |n: &Node| {
        n.repair_stats()
            .jobs
            .iter()
            .any(|j| j.id == job && j.finished_ms.is_some())
    };
    wait_for("the repair to finish", Duration::from_secs(60), || {
        finished(&c.node)
    })
    .await;
    let stats = c.node.repair_stats();
    let j = stats.jobs.iter().find(|j| j.id == job).unwrap().clone();
    assert_eq!(j.failed, 0, "{:?}", j.last_error);
    assert!(j.totals.cells_moved >= 11_000, "{:?}", j.totals);
    for n in [&nodes[0], &nodes[1], &c] {
        for k in &new {
            assert_eq!(live(stored(&n.engine, k)), Some("w".into()), "{k}");
        }
        for k in &old {
            let s = stored(&n.engine, k).expect("the delete is stored");
            assert!(s.is_tombstone(), "{k} on {}", n.node.id());
        }
    }
    for k in new.iter().take(50) {
        assert_eq!(
            live(c.node.read("default", k.as_bytes(), ONE).await.unwrap()),
            Some("w".into())
        );
    }
    // A second repair finds everything in sync.
    let again = c.node.start_repair(Default::default()).await.unwrap();
    wait_for("the second repair", Duration::from_secs(60), || {
        c.node
            .repair_stats()
            .jobs
            .iter()
            .any(|j| j.id == again && j.finished_ms.is_some())
    })
    .await;
    let j2 = c
        .node
        .repair_stats()
        .jobs
        .into_iter()
        .find(|j| j.id == again)
        .unwrap();
    assert_eq!(
        (j2.totals.cells_moved, j2.totals.differed),
        (0, false),
        "{j2:?}"
    );
    eprintln!("first repair: {:?}\nsecond: {:?}", j.totals, j2.totals);
    for n in nodes.iter().chain([&c]) {
        n.node.shutdown().await;
    }
}

/// Issue 20, acceptance 3 (in process): C's data files are deleted (its identity kept);
/// after restart it knows it lost its data, serves no reads until repaired, and a repair it
/// starts by itself brings every key back, moving about the missing data and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_data_is_repaired_before_it_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = |d: &str, seeds: Vec<SocketAddr>| {
        let mut c = config(&dir.path().join(d), any, seeds);
        c.repair.initial_delay_ms = 0;
        c
    };
    let a = start_with(cfg("a", vec![])).await;
    let seed = a.node.cluster_addr();
    let b = start_with(cfg("b", vec![seed])).await;
    let c = start_with(cfg("c", vec![seed])).await;
    let mut nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let keys: Vec<String> = (0..2_000).map(|i| format!("k-{i}")).collect();
    let mut data_bytes = 0u64;
    for chunk in keys.chunks(100) {
        let cells: Vec<_> = chunk.iter().map(|k| cell(k, "some value")).collect();
        data_bytes += cells
            .iter()
            .map(|(k, c)| (k.key.len() + c.value_len()) as u64)
            .sum::<u64>();
        nodes[0].node.write("default", cells, ALL).await.unwrap();
    }
    let old_c = nodes.pop().unwrap();
    old_c.node.shutdown().await;
    let _ = old_c.engine.close();
    let (data, mut config) = (old_c.data.clone(), old_c.config.clone());
    config.cluster_addr = old_c.node.cluster_addr();
    drop(old_c);
    // The disk is replaced: the engine's files go, the cluster identity (node id, tokens,
    // saved ring) stays.
    let mut wiped = false;
    wait_for("C's engine to be wiped", CONVERGE, || {
        wiped = std::fs::remove_dir_all(data.join("engine")).is_ok();
        wiped
    })
    .await;
    tokio::time::sleep(Duration::from_millis(c_write_lag(&config))).await;
    let engine = open_engine(&data);
    let node = Node::start(config.clone(), engine.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let c = TestNode {
        node: Arc::new(node),
        engine,
        data,
        config,
    };
    assert!(c.node.health().needs_repair, "{:?}", c.node.health());
    let start = Instant::now();
    wait_for("C to be repaired", Duration::from_secs(60), || {
        !c.node.health().needs_repair
    })
    .await;
    eprintln!("C repaired {:?} after its restart", start.elapsed());
    for k in &keys {
        assert_eq!(live(stored(&c.engine, k)), Some("some value".into()), "{k}");
    }
    let stats = c.node.repair_stats();
    eprintln!(
        "moved {} bytes of {} missing (compared {}), jobs {:?}",
        stats.bytes_moved, data_bytes, stats.bytes_compared, stats.jobs
    );
    assert!(
        stats.bytes_moved <= 2 * data_bytes,
        "moved {} for {} missing",
        stats.bytes_moved,
        data_bytes
    );
    assert!(
        !c.data
            .join(hearsay_cluster::node::repair::NEEDS_REPAIR_FILE)
            .exists()
    );
    for n in nodes.iter().chain([&c]) {
        n.node.shutdown().await;
    }
}

/// How long to wait after the last write before a repair compares it (writes younger than a
/// write's deadline are left out of a comparison).
fn c_write_lag(config: &NodeConfig) -> u64 {
    config.write_timeout_ms + 600
}

/// Issue 20, acceptance 4 (in process): with `tombstone_gc = repair`, a delete C missed is
/// not purged from A and B when `gc_grace` passes (no repair covered it yet), so the repair
/// after C returns brings C the delete instead of bringing the value back; once that repair
/// completed everywhere, compaction purges the delete, and the value stays gone. The same
/// sequence with `tombstone_gc = timeout` brings the value back (the hazard repair mode
/// closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_delete_does_not_come_back_with_tombstone_gc_repair() {
    use hearsay_cluster::node::{KeyspaceOptions, TombstoneGc};
    for (mode, resurrects) in [(TombstoneGc::Repair, false), (TombstoneGc::Timeout, true)] {
        let dir = tempfile::tempdir().unwrap();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let cfg = |d: &str, seeds: Vec<SocketAddr>| {
            let mut c = config(&dir.path().join(d), any, seeds);
            c.hints.enabled = false;
            c.repair.enabled = false;
            c
        };
        let a = start_with(cfg("a", vec![])).await;
        let seed = a.node.cluster_addr();
        let b = start_with(cfg("b", vec![seed])).await;
        let c = start_with(cfg("c", vec![seed])).await;
        let mut nodes = vec![a, b, c];
        wait_for_ring(&nodes, 3).await;
        let options = KeyspaceOptions {
            gc_grace_ms: 1_000,
            tombstone_gc: mode,
            ..KeyspaceOptions::default()
        };
        nodes[0]
            .node
            .create_keyspace_with("ks", ReplicationStrategy::simple(3), None, options)
            .await
            .unwrap();
        wait_for("ks everywhere", CONVERGE, || {
            nodes
                .iter()
                .all(|n| n.node.view().routes.contains_key("ks"))
        })
        .await;
        nodes[0]
            .node
            .write("ks", vec![cell("k", "v")], ALL)
            .await
            .unwrap();
        let old_c = nodes.pop().unwrap();
        old_c.node.shutdown().await;
        let (k, _) = cell("k", "");
        nodes[0]
            .node
            .write("ks", vec![(k, Cell::tombstone(Timestamp(0)))], QUORUM)
            .await
            .unwrap();
        // gc_grace passes; A and B compact.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        for n in &nodes {
            n.engine.flush(Some("ks")).unwrap();
            n.engine.compact("ks").unwrap();
        }
        let c = restart(&old_c, |_| {}).await;
        drop(old_c);
        tokio::time::sleep(Duration::from_millis(c_write_lag(&c.config))).await;
        wait_for("C to be ready", CONVERGE, || c.node.is_ready()).await;
        let job = c
            .node
            .start_repair(hearsay_cluster::node::repair::RepairRequest {
                keyspace: Some("ks".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        wait_for("the repair", Duration::from_secs(60), || {
            c.node
                .repair_stats()
                .jobs
                .iter()
                .any(|j| j.id == job && j.finished_ms.is_some())
        })
        .await;
        let all: Vec<&TestNode> = nodes.iter().chain([&c]).collect();
        // After the repair, every node compacts (purging what its rules allow).
        for n in &all {
            n.engine.flush(Some("ks")).unwrap();
            n.engine.compact("ks").unwrap();
        }
        let read = |n: &TestNode| {
            n.engine
                .get(
                    "ks",
                    &CellKey::new(token_of(b"k"), Bytes::from_static(b"k")),
                )
                .unwrap()
                .and_then(|c| c.value)
        };
        let back: Vec<bool> = all.iter().map(|n| read(n).is_some()).collect();
        if resurrects {
            assert!(
                back.iter().any(|b| *b),
                "{mode:?}: timeout mode lets the value back"
            );
        } else {
            assert_eq!(back, vec![false; 3], "{mode:?}: the value came back");
            assert_eq!(
                live(all[0].node.read("ks", b"k", ALL).await.unwrap()),
                None,
                "{mode:?}"
            );
            // The delete itself is gone too once every replica had it: compaction purged it.
            let purged: u64 = all
                .iter()
                .map(|n| n.engine.stats().keyspaces["ks"].tombstones_purged)
                .sum();
            assert!(purged > 0, "the repaired tombstone was purged somewhere");
        }
        for n in all {
            n.node.shutdown().await;
        }
    }
}

/// Issue 20, acceptance 5 (in process): a node stopped in the middle of a repair job resumes
/// it after restart from its first unfinished range (ranges already done are not compared
/// again) and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_repair_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = |d: &str, seeds: Vec<SocketAddr>| {
        let mut c = config(&dir.path().join(d), any, seeds);
        c.hints.enabled = false;
        c.repair.enabled = false;
        // Slow enough that the job is caught midway.
        c.repair.bytes_per_sec = 64 * 1024;
        c
    };
    let a = start_with(cfg("a", vec![])).await;
    let seed = a.node.cluster_addr();
    let b = start_with(cfg("b", vec![seed])).await;
    let c = start_with(cfg("c", vec![seed])).await;
    let mut nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    let c_old = nodes.pop().unwrap();
    c_old.node.shutdown().await;
    let keys: Vec<String> = (0..4_000).map(|i| format!("r-{i}")).collect();
    for chunk in keys.chunks(200) {
        let cells = chunk.iter().map(|k| cell(k, &"x".repeat(100))).collect();
        nodes[0].node.write("default", cells, ONE).await.unwrap();
    }
    let c = restart(&c_old, |_| {}).await;
    drop(c_old);
    tokio::time::sleep(Duration::from_millis(c_write_lag(&c.config))).await;
    wait_for("C to be ready", CONVERGE, || c.node.is_ready()).await;
    let job = c.node.start_repair(Default::default()).await.unwrap();
    let progress = |n: &Node| {
        n.repair_stats()
            .jobs
            .into_iter()
            .find(|j| j.id == job)
            .map(|j| (j.done, j.ranges.len(), j.finished_ms))
    };
    wait_for("the job to be partly done", Duration::from_secs(60), || {
        progress(&c.node).is_some_and(|(done, of, _)| done >= 3 && done < of)
    })
    .await;
    // Stop C mid-job (as a crash would, as far as the job is concerned: its progress is on
    // disk after every range).
    c.node.shutdown().await;
    let (done_before, of, _) = progress(&c.node).unwrap();
    assert!(done_before < of);
    let c2 = restart(&c, |cfg| cfg.repair.bytes_per_sec = 64 * 1024 * 1024).await;
    drop(c);
    wait_for("the resumed job to finish", Duration::from_secs(60), || {
        progress(&c2.node).is_some_and(|(_, _, finished)| finished.is_some())
    })
    .await;
    let stats = c2.node.repair_stats();
    let j = stats.jobs.iter().find(|j| j.id == job).unwrap();
    assert_eq!((j.done, j.failed), (of, 0), "{j:?}");
    // Only the ranges left were compared after the restart: one session each.
    assert_eq!(
        stats.sessions,
        (of - done_before) as u64,
        "sessions after the restart: {} for {} ranges left of {of}",
        stats.sessions,
        of - done_before
    );
    for k in &keys {
        assert!(live(stored(&c2.engine, k)).is_some(), "{k}");
    }
    for n in nodes.iter().chain([&c2]) {
        n.node.shutdown().await;
    }
}

/// Issue 20, item 6: hints that expire before their replica comes back are dropped, their
/// tokens go dirty, and the always-on repair repairs those ranges first — well before its
/// regular schedule (one range per `interval / ranges`, here hours) would reach them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_hints_make_their_ranges_dirty_and_the_always_on_repair_takes_them_first() {
    /// Hints older than this are dropped at replay.
    const HINT_AGE_MS: u64 = 300;
    const KEYS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = |name: &str, seeds: Vec<SocketAddr>| {
        let mut c = config(&dir.path().join(name), any, seeds);
        c.hints.max_hint_age_ms = HINT_AGE_MS;
        c.repair.enabled = true;
        c.repair.initial_delay_ms = 100;
        c.repair.interval_ms = 86_400_000;
        c
    };
    let a = start_with(cfg("a", vec![])).await;
    let seed = a.node.cluster_addr();
    let b = start_with(cfg("b", vec![seed])).await;
    let c = start_with(cfg("c", vec![seed])).await;
    let mut nodes = vec![a, b, c];
    wait_for_ring(&nodes, 3).await;
    // C goes away; A coordinates writes it misses (hinted for it).
    let old_c = nodes.pop().unwrap();
    let c_id = old_c.node.id();
    old_c.node.shutdown().await;
    let _ = old_c.engine.close();
    let (c_data, mut c_config) = (old_c.data.clone(), old_c.config.clone());
    c_config.cluster_addr = old_c.node.cluster_addr();
    drop(old_c);
    wait_for("A to see C down", CONVERGE, || {
        !nodes[0].node.view().alive.contains(&c_id)
    })
    .await;
    for i in 0..KEYS {
        nodes[0]
            .node
            .write("default", vec![cell(&format!("d{i}"), "v")], QUORUM)
            .await
            .unwrap();
    }
    assert!(
        nodes[0].node.hints_pending() > 0,
        "the writes were hinted for C"
    );
    // The hints age past their limit (an age, not an event), then C comes back.
    tokio::time::sleep(Duration::from_millis(HINT_AGE_MS * 2)).await;
    let mut opened = None;
    wait_for("C's engine to reopen", CONVERGE, || {
        let mut ec = EngineConfig::new(c_data.join("engine"));
        ec.sync_mode = SyncMode::None;
        opened = Engine::open(ec).ok();
        opened.is_some()
    })
    .await;
    let c_engine = Arc::new(opened.unwrap());
    let c_node = Arc::new(
        Node::start(c_config.clone(), c_engine.clone(), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    wait_for(
        "A's hints for C to be dropped, not delivered",
        CONVERGE,
        || nodes[0].node.hints_pending() == 0,
    )
    .await;
    let dropped: u64 = nodes[0].node.stats().hints.dropped_total.values().sum();
    assert!(dropped > 0, "the hints expired and were dropped");
    wait_for("the dirty ranges to be repaired onto C", CONVERGE, || {
        (0..KEYS).all(|i| live(stored(&c_engine, &format!("d{i}"))).is_some())
    })
    .await;
    // Only the dirty tokens' ranges (at most one per key) and at most one scheduled range
    // per node were repaired: the schedule alone would take hours.
    let sessions: u64 = nodes
        .iter()
        .map(|n| n.node.repair_stats().sessions)
        .sum::<u64>()
        + c_node.repair_stats().sessions;
    assert!(sessions <= KEYS as u64 + 3, "{sessions} sessions");
    c_node.shutdown().await;
    for n in &nodes {
        n.node.shutdown().await;
    }
}
