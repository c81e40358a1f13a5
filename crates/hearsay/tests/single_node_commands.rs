//! Every command through a real Redis client (the `redis` crate, async tokio) against the
//! real binary: values, errors (same text as Redis), pipelining, RESP3 and AUTH.

mod single_node_support;

use redis::AsyncCommands;
use single_node_support::Node;
use std::time::Duration;

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn q<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await
}

fn err_text<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_the_redis_crate() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = conn(&node.url()).await;

    assert_eq!(q::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(q::<String>(&mut c, &["PING", "hi"]).await.unwrap(), "hi");
    assert_eq!(q::<String>(&mut c, &["ECHO", "e"]).await.unwrap(), "e");
    assert_eq!(q::<String>(&mut c, &["SELECT", "0"]).await.unwrap(), "OK");
    assert!(
        err_text(q::<String>(&mut c, &["SELECT", "1"]).await).contains("DB index is out of range")
    );

    // Strings.
    let _: () = c.set("k", "v").await.unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(c.get::<_, Option<String>>("missing").await.unwrap(), None);
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "v2", "NX"])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "v2", "XX", "GET"])
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "e", "1", "EX", "100"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "e", "1", "PX", "100000"])
            .await
            .unwrap(),
        "OK"
    );
    let exat = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 100)
        .to_string();
    assert_eq!(
        q::<String>(&mut c, &["SET", "e", "1", "EXAT", &exat])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "e", "2", "KEEPTTL"])
            .await
            .unwrap(),
        "OK"
    );
    let ttl: i64 = c.ttl("e").await.unwrap();
    assert!((98..=100).contains(&ttl), "{ttl}");
    let pxat = format!("{}000", exat);
    assert_eq!(
        q::<String>(&mut c, &["SET", "e", "1", "PXAT", &pxat])
            .await
            .unwrap(),
        "OK"
    );
    assert!(
        err_text(q::<String>(&mut c, &["SET", "e", "1", "EX", "0"]).await)
            .contains("invalid expire time in 'set' command")
    );
    assert!(
        err_text(q::<String>(&mut c, &["SET", "e", "1", "NX", "XX"]).await)
            .contains("syntax error")
    );
    assert!(
        err_text(q::<String>(&mut c, &["SET", "e"]).await)
            .contains("wrong number of arguments for 'set' command")
    );
    assert_eq!(q::<i64>(&mut c, &["SETNX", "n", "1"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "n", "2"]).await.unwrap(), 0);
    assert_eq!(
        q::<String>(&mut c, &["SETEX", "s", "100", "x"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["PSETEX", "p", "100000", "x"])
            .await
            .unwrap(),
        "OK"
    );
    let pttl: i64 = q(&mut c, &["PTTL", "p"]).await.unwrap();
    assert!((90_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "p", "PERSIST"])
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "p"]).await.unwrap(), -1);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "p", "EX", "50"])
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "p"]).await.unwrap(), 50);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETDEL", "p"])
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETDEL", "p"]).await.unwrap(),
        None
    );
    assert_eq!(
        q::<String>(&mut c, &["MSET", "a", "1", "b", "2"])
            .await
            .unwrap(),
        "OK"
    );
    let got: Vec<Option<String>> = q(&mut c, &["MGET", "a", "zz", "b"]).await.unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);

    // Keys.
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "a", "b", "zz", "a"])
            .await
            .unwrap(),
        3
    );
    assert_eq!(q::<i64>(&mut c, &["DEL", "a", "zz"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "b"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100"]).await.unwrap(), 1);
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "k", "200", "LT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIRE", "k", "200000", "GT"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXPIREAT", "k", &exat, "XX"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIREAT", "k", &pxat, "NX"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]).await.unwrap(), -1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "nope"]).await.unwrap(), -2);
    assert_eq!(q::<String>(&mut c, &["TYPE", "k"]).await.unwrap(), "string");
    assert_eq!(
        q::<String>(&mut c, &["TYPE", "nope"]).await.unwrap(),
        "none"
    );
    assert!(
        err_text(q::<i64>(&mut c, &["EXPIRE", "k", "1", "NX", "XX"]).await)
            .contains("NX and XX, GT or LT options at the same time are not compatible")
    );
    // A TTL in the past deletes.
    assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "n", "1"]).await.unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "n"]).await.unwrap(), 0);
    // A short TTL expires for real.
    assert_eq!(
        q::<String>(&mut c, &["SET", "short", "x", "PX", "300"])
            .await
            .unwrap(),
        "OK"
    );
    assert!(single_node_support::wait_until(
        Duration::from_secs(5),
        || { futures_exists_blocking(&node, "short") == 0 }
    ));

    // SCAN over everything, then DBSIZE.
    for i in 0..40 {
        let _: () = c.set(format!("scan:{i}"), i).await.unwrap();
    }
    let mut cursor = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(7)
            .query_async(&mut c)
            .await
            .unwrap();
        seen.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 40);
    let n: i64 = q(&mut c, &["DBSIZE"]).await.unwrap();
    assert_eq!(n, 40 + 3); // scan:* + k, e, s
    let mut iter_keys: Vec<String> = Vec::new();
    let mut it = c.scan_match::<_, String>("scan:1*").await.unwrap();
    while let Some(k) = it.next_item().await {
        iter_keys.push(k.unwrap());
    }
    drop(it);
    iter_keys.sort();
    assert_eq!(iter_keys.len(), 11, "{iter_keys:?}");

    // Server introspection.
    let info: String = q(&mut c, &["INFO"]).await.unwrap();
    for needle in [
        "redis_version:",
        "loading:0",
        "role:master",
        "connected_clients:",
        "db0:keys=43",
    ] {
        assert!(info.contains(needle), "{needle}");
    }
    let save: Vec<String> = q(&mut c, &["CONFIG", "GET", "save"]).await.unwrap();
    assert_eq!(save, vec!["save".to_string(), String::new()]);
    let aof: Vec<String> = q(&mut c, &["CONFIG", "GET", "appendonly"]).await.unwrap();
    assert_eq!(aof, vec!["appendonly".to_string(), "yes".to_string()]);
    let prio: Vec<String> = q(&mut c, &["CONFIG", "GET", "compaction-background-priority"])
        .await
        .unwrap();
    assert_eq!(prio, vec!["compaction-background-priority", "yes"]);
    let warm: Vec<String> = q(&mut c, &["CONFIG", "GET", "flush-warm-cache"])
        .await
        .unwrap();
    assert_eq!(warm, vec!["flush-warm-cache", "yes"]);
    let n: i64 = q(&mut c, &["COMMAND", "COUNT"]).await.unwrap();
    assert!(n >= 30);
    let _: redis::Value = q(&mut c, &["COMMAND", "INFO", "get", "set"]).await.unwrap();
    let _: redis::Value = q(&mut c, &["COMMAND", "DOCS", "get"]).await.unwrap();
    let _: redis::Value = q(&mut c, &["COMMAND"]).await.unwrap();
    let id: i64 = q(&mut c, &["CLIENT", "ID"]).await.unwrap();
    assert!(id > 0);
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "SETNAME", "tester"])
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "GETNAME"]).await.unwrap(),
        "tester"
    );
    assert_eq!(
        q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "1.0"])
            .await
            .unwrap(),
        "OK"
    );
    let list: String = q(&mut c, &["CLIENT", "LIST"]).await.unwrap();
    assert!(
        list.contains("name=tester") && list.contains("lib-ver=1.0"),
        "{list}"
    );
    let (secs, micros): (u64, u64) = q(&mut c, &["TIME"]).await.unwrap();
    assert!(secs > 1_700_000_000 && micros < 1_000_000);
    assert!(
        err_text(q::<String>(&mut c, &["NOSUCH", "x"]).await)
            .contains("unknown command 'NOSUCH', with args beginning with: 'x'")
    );
    assert!(
        err_text(q::<String>(&mut c, &["CONFIG", "NOPE"]).await)
            .contains("unknown subcommand 'NOPE'. Try CONFIG HELP.")
    );
    assert!(
        err_text(q::<String>(&mut c, &["AUTH", "pw"]).await)
            .contains("without any password configured")
    );
}

/// EXISTS on a fresh blocking connection (for polling inside a closure).
fn futures_exists_blocking(node: &Node, key: &str) -> i64 {
    let mut raw = single_node_support::Raw::connect(node.addr);
    let reply = raw.request(&single_node_support::cmd(&[b"EXISTS", key.as_bytes()]));
    reply.trim().trim_start_matches(':').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = conn(&node.url()).await;
    let mut p = redis::pipe();
    for i in 0..200 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for i in 0..200 {
        p.cmd("GET").arg(format!("p{i}"));
    }
    let values: Vec<i64> = p.query_async(&mut c).await.unwrap();
    assert_eq!(values, (0..200).collect::<Vec<_>>());
    // Atomic pipelines need MULTI, which we do not offer: a clear error, not a hang.
    let r: redis::RedisResult<Vec<i64>> = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("p1")
        .query_async(&mut c)
        .await;
    assert!(r.is_err());

    // RESP3: the crate negotiates with HELLO 3; maps and nulls come back typed.
    let mut c3 = conn(&format!("{}?protocol=resp3", node.url())).await;
    let v: redis::Value = q(&mut c3, &["CONFIG", "GET", "save"]).await.unwrap();
    assert!(matches!(v, redis::Value::Map(_)), "{v:?}");
    let v: redis::Value = q(&mut c3, &["GET", "nope"]).await.unwrap();
    assert_eq!(v, redis::Value::Nil);
    let v: redis::Value = q(&mut c3, &["HELLO"]).await.unwrap();
    let redis::Value::Map(m) = v else {
        panic!("{v:?}")
    };
    assert!(
        m.iter()
            .any(|(k, v)| *k == redis::Value::BulkString(b"proto".to_vec())
                && *v == redis::Value::Int(3))
    );
    let _: () = c3.set("r3", "x").await.unwrap();
    assert_eq!(c3.get::<_, String>("r3").await.unwrap(), "x");
    let info: redis::Value = q(&mut c3, &["INFO", "server"]).await.unwrap();
    assert!(
        matches!(info, redis::Value::VerbatimString { .. }),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_when_a_password_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--password", "s3cret"]);
    let mut c = conn(&node.url()).await;
    assert!(err_text(q::<String>(&mut c, &["GET", "a"]).await).contains("Authentication required"));
    assert!(err_text(q::<String>(&mut c, &["AUTH", "nope"]).await).contains("WRONGPASS"));
    assert_eq!(
        q::<String>(&mut c, &["AUTH", "s3cret"]).await.unwrap(),
        "OK"
    );
    assert_eq!(q::<String>(&mut c, &["SET", "a", "1"]).await.unwrap(), "OK");
    // The crate's own AUTH-in-URL path (HELLO ... AUTH with RESP3, AUTH with RESP2).
    let url = format!("redis://default:s3cret@{}/", node.addr);
    let mut c2 = conn(&url).await;
    assert_eq!(c2.get::<_, String>("a").await.unwrap(), "1");
    let mut c3 = conn(&format!("{url}?protocol=resp3")).await;
    assert_eq!(c3.get::<_, String>("a").await.unwrap(), "1");
    let bad = redis::Client::open(format!("redis://default:wrong@{}/", node.addr)).unwrap();
    assert!(bad.get_multiplexed_async_connection().await.is_err());
}

/// Connections are spread over the configured event-loop threads, and INFO shows them; a
/// pipelined run of GETs (read on the reader threads) answers in order on each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_io_threads_and_info_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--io-threads", "2"]);
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(conn(&node.url()).await);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut p = redis::pipe();
        for k in 0..10 {
            p.cmd("SET")
                .arg(format!("c{i}:{k}"))
                .arg(format!("{i}.{k}"));
        }
        for k in 0..12 {
            p.cmd("GET").arg(format!("c{i}:{k}"));
        }
        let r: Vec<redis::Value> = p.query_async(c).await.unwrap();
        let gets: Vec<Option<String>> = r[10..]
            .iter()
            .map(|v| redis::from_redis_value(v.clone()).unwrap())
            .collect();
        let want: Vec<Option<String>> = (0..12)
            .map(|k| (k < 10).then(|| format!("{i}.{k}")))
            .collect();
        assert_eq!(gets, want);
    }
    let info: String = q(&mut conns[0], &["INFO", "server", "clients"])
        .await
        .unwrap();
    assert!(info.contains("io_threads:2\r\n"), "{info}");
    let per: Vec<u64> = info
        .lines()
        .find_map(|l| l.strip_prefix("io_thread_clients:"))
        .expect("io_thread_clients line")
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(per.len(), 2, "{info}");
    assert_eq!(per.iter().sum::<u64>(), 4, "{info}");
    assert!(
        per.iter().all(|&n| n == 2),
        "least-loaded placement: {per:?}"
    );
    let stats: String = q(&mut conns[0], &["INFO", "stats"]).await.unwrap();
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{name} in {stats}"))
            .parse()
            .unwrap()
    };
    // Each connection's run of 12 GETs was one multi-key read.
    assert!(
        field("read_pool_runs") + field("read_pool_full_inline_runs") >= 4,
        "{stats}"
    );
}

/// Between requests that follow each other closely, an idle event loop busy-polls instead of
/// sleeping (`--busy-poll-us`, see `server/busy_poll.rs`), and INFO counts the reads it
/// caught that way; with `--busy-poll-us 0` it always sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_event_loops_busy_poll_between_close_requests_and_info_counts_it() {
    for (max, polls) in [(1000u64, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(dir.path(), &["--busy-poll-us", &max.to_string()]);
        let mut c = conn(&node.url()).await;
        // Sequential round trips: each next request arrives a client round trip (well under
        // a millisecond) after the loop went idle.
        for _ in 0..500 {
            assert_eq!(q::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
        }
        let info: String = q(&mut c, &["INFO", "server", "stats"]).await.unwrap();
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("{name} in {info}"))
                .parse()
                .unwrap()
        };
        assert_eq!(field("busy_poll_max_us"), max, "{info}");
        let config: Vec<String> = q(&mut c, &["CONFIG", "GET", "busy-poll-us"]).await.unwrap();
        assert_eq!(config, ["busy-poll-us".to_string(), max.to_string()]);
        if polls {
            assert!(field("busy_poll_windows") > 0, "{info}");
            assert!(field("busy_poll_caught_reads") > 0, "{info}");
        } else {
            assert_eq!(field("busy_poll_windows"), 0, "{info}");
            assert_eq!(field("busy_poll_caught_reads"), 0, "{info}");
            assert_eq!(field("busy_poll_us"), 0, "{info}");
        }
    }
}
