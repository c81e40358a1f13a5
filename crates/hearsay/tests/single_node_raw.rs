//! The RESP server at the byte level, against the real binary: inline commands, pipelining,
//! RESP3, and hostile input (oversized and negative lengths, huge counts, garbage, cut
//! frames, slowloris), with other clients unaffected and memory bounded.

mod single_node_support;

use single_node_support::{Node, Raw, cmd, wait_until};
use std::io::Write;
use std::time::{Duration, Instant};

fn node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), extra);
    (dir, n)
}

#[test]
fn inline_pipelined_and_resp3_bytes() {
    let (_d, n) = node(&[]);
    let mut r = Raw::connect(n.addr);
    assert_eq!(r.request(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(r.request(b"set \"a b\" 'x y'\r\n"), "+OK\r\n");
    assert_eq!(r.request(&cmd(&[b"GET", b"a b"])), "$3\r\nx y\r\n");
    // Pipelining: many requests in one write, replies in order.
    let mut burst = Vec::new();
    for i in 0..100 {
        burst.extend(cmd(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("{i}").as_bytes(),
        ]));
        burst.extend(cmd(&[b"GET", format!("k{i}").as_bytes()]));
    }
    r.send(&burst);
    let replies = String::from_utf8(r.read_values(200)).unwrap();
    let mut expected = String::new();
    for i in 0..100 {
        expected.push_str(&format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()));
    }
    assert_eq!(replies, expected);
    // Binary-safe values.
    let bin: Vec<u8> = (0..=255u8).collect();
    assert_eq!(r.request(&cmd(&[b"SET", b"bin", &bin])), "+OK\r\n");
    r.send(&cmd(&[b"GET", b"bin"]));
    let got = r.read_values(1);
    assert_eq!(&got[6..6 + 256], &bin[..]);
    // Errors keep the connection usable.
    assert_eq!(
        r.request(&cmd(&[b"GET"])),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        r.request(b"nosuch a\r\n"),
        "-ERR unknown command 'nosuch', with args beginning with: 'a' \r\n"
    );
    // Empty requests are skipped silently, as Redis does.
    assert_eq!(r.request(b"*0\r\n*-1\r\n\r\nPING\r\n"), "+PONG\r\n");
    // RESP3 after HELLO 3.
    r.send(&cmd(&[b"HELLO", b"3"]));
    let hello = String::from_utf8(r.read_values(1)).unwrap();
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(r.request(&cmd(&[b"GET", b"nope"])), "_\r\n");
    let cfg = r.request(&cmd(&[b"CONFIG", b"GET", b"save"]));
    assert_eq!(cfg, "%1\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert!(r.request(&cmd(&[b"INFO", b"server"])).starts_with('='));
    assert_eq!(r.request(&cmd(&[b"HELLO", b"2"])).chars().next(), Some('*'));
    assert_eq!(r.request(&cmd(&[b"GET", b"nope"])), "$-1\r\n");
    assert_eq!(r.request(&cmd(&[b"QUIT"])), "+OK\r\n");
    assert!(r.closed_within(Duration::from_secs(2)));
}

/// Sends `bytes` on a fresh connection and expects `error` followed by a close.
fn expect_protocol_error(n: &Node, bytes: &[u8], error: &str) {
    let mut r = Raw::connect(n.addr);
    let started = Instant::now();
    r.send(bytes);
    assert!(
        r.closed_within(Duration::from_secs(3)),
        "closed after {bytes:?}"
    );
    assert_eq!(
        r.pending_text(),
        format!("-ERR {error}\r\n"),
        "for {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "error within 1 s"
    );
}

#[test]
fn hostile_input_gets_an_error_and_a_close() {
    let (_d, n) = node(&[]);
    let mut witness = Raw::connect(n.addr);
    expect_protocol_error(
        &n,
        b"*1\r\n$999999999999\r\n",
        "Protocol error: invalid bulk length",
    );
    expect_protocol_error(
        &n,
        b"*1\r\n$17000000\r\n",
        "Protocol error: invalid bulk length",
    );
    expect_protocol_error(&n, b"*1\r\n$-5\r\n", "Protocol error: invalid bulk length");
    expect_protocol_error(
        &n,
        b"*99999999999\r\n",
        "Protocol error: invalid multibulk length",
    );
    expect_protocol_error(
        &n,
        b"*2000000\r\n",
        "Protocol error: invalid multibulk length",
    );
    expect_protocol_error(&n, b"*abc\r\n", "Protocol error: invalid multibulk length");
    expect_protocol_error(&n, b"*1\r\n:5\r\n", "Protocol error: expected '$', got ':'");
    expect_protocol_error(
        &n,
        b"*1\r\n$3\r\nabcXY",
        "Protocol error: bulk string not terminated by CRLF",
    );
    expect_protocol_error(
        &n,
        b"SET \"unterminated\r\n",
        "Protocol error: unbalanced quotes in request",
    );
    expect_protocol_error(
        &n,
        &vec![b'x'; 70_000],
        "Protocol error: too big inline request",
    );
    let mut garbage = vec![b'*', b'1', b'\r', b'\n', b'$'];
    garbage.extend((0..50u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80));
    garbage.extend_from_slice(b"\r\n");
    expect_protocol_error(&n, &garbage, "Protocol error: invalid bulk length");
    // A frame cut in half, then the client goes away: nothing breaks.
    {
        let mut r = Raw::connect(n.addr);
        r.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhe");
    }
    // A huge declared length with only a few bytes sent: the server waits without
    // allocating the declared size, and the others carry on.
    let mut big = Raw::connect(n.addr);
    big.send(b"*2\r\n$3\r\nGET\r\n$16000000\r\nabc");
    assert_eq!(witness.request(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(
        witness.request(&cmd(&[b"SET", b"still", b"fine"])),
        "+OK\r\n"
    );
    let info = witness.request(&cmd(&[b"INFO", b"stats"]));
    assert!(info.contains("protocol_errors:11"), "{info}");
}

#[test]
fn slowloris_is_cut_off_and_others_are_unaffected() {
    let (_d, n) = node(&["--request-timeout-ms", "1500"]);
    let mut slow = Raw::connect(n.addr);
    let request = cmd(&[b"SET", b"slow", b"value"]);
    let mut witness = Raw::connect(n.addr);
    let started = Instant::now();
    let mut closed = false;
    // One byte every 200 ms: the request would take ~6 s; the server gives it 1.5 s.
    for b in &request {
        if slow.stream.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        // Another client's request completes promptly in the meantime.
        let t = Instant::now();
        assert_eq!(witness.request(b"PING\r\n"), "+PONG\r\n");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "witness delayed {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    closed = closed || slow.closed_within(Duration::from_secs(3));
    assert!(closed, "slow client was not disconnected");
    assert!(slow.pending_text().contains("request_timeout_ms") || slow.pending_text().is_empty());
    assert_eq!(witness.request(&cmd(&[b"EXISTS", b"slow"])), ":0\r\n");
}

#[test]
fn memory_stays_bounded_under_large_declared_lengths() {
    let (_d, n) = node(&["--request-timeout-ms", "20000"]);
    let mut w = Raw::connect(n.addr);
    assert_eq!(w.request(b"PING\r\n"), "+PONG\r\n");
    let before = n.rss_bytes();
    // 40 clients each declare a 16 MB value and send 256 KiB of it: memory grows with the
    // bytes that arrived (~10 MiB), not with the declared 640 MB.
    let chunk = vec![b'v'; 256 * 1024];
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut r = Raw::connect(n.addr);
        r.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16000000\r\n");
        r.send(&chunk);
        clients.push(r);
    }
    assert_eq!(w.request(b"PING\r\n"), "+PONG\r\n");
    let grown = n.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    // A client that exceeds max_request_bytes is cut off.
    let mut too_many = Raw::connect(n.addr);
    let mut req = b"*10\r\n$3\r\nSET\r\n".to_vec();
    for _ in 0..9 {
        req.extend_from_slice(format!("${}\r\n", 15_000_000).as_bytes());
        req.extend(std::iter::repeat_n(b'x', 15_000_000));
        req.extend_from_slice(b"\r\n");
    }
    // The server stops reading at the limit, so the write may fail with a reset.
    let _ = too_many.stream.write_all(&req);
    assert!(too_many.closed_within(Duration::from_secs(10)));
    assert!(
        w.request(&cmd(&[b"INFO", b"stats"]))
            .contains("request_limit_disconnects:1\r\n")
    );
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || {
        w.request(&cmd(&[b"INFO", b"clients"]))
            .contains("connected_clients:1\r\n")
    }));
}

#[test]
fn maxclients_refuses_extra_connections() {
    let (_d, n) = node(&["--maxclients", "2"]);
    let mut a = Raw::connect(n.addr);
    let mut b = Raw::connect(n.addr);
    assert_eq!(a.request(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(b.request(b"PING\r\n"), "+PONG\r\n");
    let mut c = Raw::connect(n.addr);
    assert!(c.closed_within(Duration::from_secs(3)));
    assert_eq!(c.pending_text(), "-ERR max number of clients reached\r\n");
    drop(a);
    assert!(wait_until(Duration::from_secs(5), || {
        let mut d = Raw::connect(n.addr);
        d.send(b"PING\r\n");
        d.closed_within(Duration::from_millis(300));
        d.pending_text() == "+PONG\r\n"
    }));
}

#[test]
fn coalesced_pipelined_sets_keep_order_and_replies() {
    let (_d, n) = node(&[]);
    let mut r = Raw::connect(n.addr);
    let mut burst = Vec::new();
    for i in 0..600 {
        burst.extend(cmd(&[b"SET", b"same", format!("{i}").as_bytes()]));
    }
    burst.extend(cmd(&[b"GET", b"same"]));
    burst.extend(cmd(&[b"SET", b"same", b"x", b"NX"]));
    burst.extend(cmd(&[b"SET", b"other", b"1"]));
    r.send(&burst);
    let replies = String::from_utf8(r.read_values(603)).unwrap();
    assert_eq!(
        replies,
        format!("{}$3\r\n599\r\n$-1\r\n+OK\r\n", "+OK\r\n".repeat(600))
    );
    // SETs before a malformed request are executed and answered before the error.
    let mut r = Raw::connect(n.addr);
    let mut burst = Vec::new();
    for i in 0..3 {
        burst.extend(cmd(&[b"SET", format!("before{i}").as_bytes(), b"v"]));
    }
    burst.extend_from_slice(b"*1\r\n$-7\r\n");
    r.send(&burst);
    assert!(r.closed_within(Duration::from_secs(3)));
    assert_eq!(
        r.pending_text(),
        "+OK\r\n+OK\r\n+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    let mut w = Raw::connect(n.addr);
    assert_eq!(
        w.request(&cmd(&[b"EXISTS", b"before0", b"before1", b"before2"])),
        ":3\r\n"
    );
}

#[test]
fn idle_clients_are_closed_after_idle_timeout() {
    let (_d, n) = node(&["--idle-timeout-ms", "400"]);
    let mut idle = Raw::connect(n.addr);
    assert_eq!(idle.request(b"PING\r\n"), "+PONG\r\n");
    let t = Instant::now();
    assert!(idle.closed_within(Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "closed too early: {:?}",
        t.elapsed()
    );
    let mut w = Raw::connect(n.addr);
    assert!(
        w.request(&cmd(&[b"INFO", b"stats"]))
            .contains("idle_disconnects:1\r\n")
    );
}
