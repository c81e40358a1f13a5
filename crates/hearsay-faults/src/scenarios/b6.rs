//! B6: hostile input. Against one node: malformed RESP, huge declared lengths (refused,
//! and within the limits: never pre-allocated), floods (pipelined and non-reading
//! clients), slowloris connections, and forged gossip datagrams from a host that does not
//! know the cluster secret. Passes when the node never crashes, every malformed request
//! gets an error (or a close) within 1 s, its resident memory grows by at most 32 MiB, and
//! no node's view of the membership changes.

use super::Ctx;
use crate::checkers::{self, Check, Guards};
use crate::node::Cluster;
use crate::util::{rss_bytes, unhex};
use crate::workload;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// TESTING.md P6: an error or a documented close within 1 s.
const RESPONSE_WITHIN: Duration = Duration::from_secs(1);
/// TESTING.md B6: resident memory may grow by at most this much.
const MAX_RSS_GROWTH_BYTES: u64 = 32 << 20;
/// RSS is sampled this often while attacks run (the peak is what counts).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Pipelining clients of the flood, and commands each sends before reading the replies.
const FLOOD_CONNS: usize = 32;
const FLOOD_CMDS: usize = 20_000;
/// Bound on a flood client getting all its replies.
const FLOOD_WITHIN: Duration = Duration::from_secs(60);
/// Clients that send PINGs and never read, and the bytes each sends: the replies they leave
/// pending are bounded by what they sent (7 reply bytes per 14 request bytes).
const DEAF_CONNS: usize = 8;
const DEAF_BYTES: usize = 2 << 20;
/// How long the deaf clients stay connected before they give up.
const DEAF_HOLD: Duration = Duration::from_secs(3);
/// Connections that declare large (allowed) lengths and then send nothing: a server that
/// trusted declared lengths would allocate them up front.
const DECLARED_CONNS: usize = 48;
/// Slowloris connections, each sending a request one byte at a time.
const SLOW_CONNS: usize = 200;
/// Between a slowloris connection's bytes.
const SLOW_BYTE_EVERY: Duration = Duration::from_millis(500);
/// The nodes' `request_timeout_ms` in the harness's config (node.rs), plus slack for a
/// loaded machine: after this a slowloris connection must have been cut.
const SLOW_CUT_WITHIN: Duration = Duration::from_secs(5 + 5);
/// Share of slowloris connections that must have been cut by then.
const SLOW_CUT_SHARE: f64 = 0.9;
/// Forged gossip datagrams sent to every node.
const FORGED_PACKETS: usize = 3_000;
/// Time for the membership to show any effect of the attacks before it is compared
/// (several 200 ms gossip rounds).
const SETTLE: Duration = Duration::from_secs(3);

/// One malformed request and what the reply must contain (besides being an error).
struct Malformed {
    what: &'static str,
    bytes: Vec<u8>,
}

fn malformed() -> Vec<Malformed> {
    let m = |what: &'static str, bytes: &[u8]| Malformed {
        what,
        bytes: bytes.to_vec(),
    };
    let mut long_count = b"*".to_vec();
    long_count.extend(std::iter::repeat_n(b'9', 70_000));
    let mut long_bulk = b"*1\r\n$".to_vec();
    long_bulk.extend(std::iter::repeat_n(b'9', 70_000));
    let long_inline = vec![b'a'; 100_000];
    vec![
        m("array count not a number", b"*abc\r\n"),
        m("array count 2^31-1", b"*2147483647\r\n"),
        m("bulk length 2^31-1", b"*1\r\n$2147483647\r\n"),
        m("negative bulk length", b"*1\r\n$-7\r\n"),
        m("non-bulk element", b"*2\r\n$3\r\nGET\r\n:1\r\n"),
        m("bulk not followed by CRLF", b"*1\r\n$3\r\nGETxx\r\n"),
        m("unbalanced quotes", b"SET \"unbalanced\r\n"),
        m("binary garbage", b"\x00\xff\xfe\x01garbage\r\n"),
        m("64 KiB+ array count line", &long_count),
        m("64 KiB+ bulk length line", &long_bulk),
        m("100 KB inline line", &long_inline),
    ]
}

/// Sends `bytes` on a fresh connection and waits for the first reply byte or the close.
/// `Ok((reply prefix, elapsed))`; the reply is empty when the node closed without one.
fn send_malformed(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<(String, Duration)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    // The node may close while we are still writing a long line: that is an answer too.
    let _ = s.write_all(bytes);
    let sent = Instant::now();
    s.set_read_timeout(Some(RESPONSE_WITHIN * 3))?;
    let mut buf = [0u8; 256];
    let n = match s.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
        Err(e) => return Err(e).context("no answer"),
    };
    Ok((
        String::from_utf8_lossy(&buf[..n]).into_owned(),
        sent.elapsed(),
    ))
}

/// What every node sees of the membership: `(node id, generation, code)` per member.
fn membership(cluster: &Cluster) -> Vec<BTreeSet<(String, u64, String)>> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.status()
                .ok()
                .and_then(|v| v["members"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    (
                        m["node_id"].as_str().unwrap_or("").to_string(),
                        m["generation"].as_u64().unwrap_or(0),
                        m["code"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Gossip packets a node dropped so far (all reasons), from `/v1/membership`.
fn gossip_drops(cluster: &Cluster, i: usize) -> u64 {
    crate::http::get_json(cluster.nodes[i].admin, "/v1/membership")
        .ok()
        .and_then(|v| {
            v["metrics"]["dropped"]
                .as_object()
                .map(|m| m.values().filter_map(|x| x.as_u64()).sum())
        })
        .unwrap_or(0)
}

/// A RESP request array of bulk strings.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `b6-hostile`.
pub fn hostile(ctx: &mut Ctx) -> anyhow::Result<()> {
    let opts = ctx.cluster_options();
    let mut cluster = ctx.start_cluster(opts)?;
    let n = cluster.len();
    let h = ctx.history.clone();
    let target = ctx.rng.random_range(0..n);
    let addr = cluster.nodes[target].client;
    let pid = cluster.nodes[target]
        .pid()
        .context("target node not running")?;

    // Warm up the target a little (allocator arenas, connection paths), then the baseline.
    let mut c = workload::Client::new(vec![addr], "ONE");
    for i in 0..200 {
        let key = format!("warm:{i}");
        workload::recorded_set(
            &h,
            &mut c,
            "warm",
            0,
            &key,
            &workload::make_value(&key, 1, "w"),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let members_before = membership(&cluster);
    let rss_before = rss_bytes(pid)?;
    let drops_before: Vec<u64> = (0..n).map(|i| gossip_drops(&cluster, i)).collect();
    ctx.report.lines.push(format!(
        "target n{target} (pid {pid}), RSS {:.1} MiB before",
        rss_before as f64 / (1 << 20) as f64
    ));

    // RSS sampler: the peak during the attacks is what counts.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Ok(r) = rss_bytes(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(RSS_SAMPLE_EVERY);
            }
        })
    };
    let result = attacks(ctx, &mut cluster, target, addr);
    stop.store(true, Ordering::Release);
    let _ = sampler.join();
    result?;

    std::thread::sleep(SETTLE);
    // No crash.
    let mut alive = Check::new("hostile-no-crash");
    for node in &mut cluster.nodes {
        if let Some(st) = node.exited() {
            alive.violation(format!("{} exited: {st}\n{}", node.name, node.log_tail()));
        }
    }
    alive.summary = format!("{n} nodes checked after the attacks");
    ctx.report.checks.push(alive);

    // Bounded memory.
    let rss_after = rss_bytes(pid).unwrap_or(0);
    let peak = peak.load(Ordering::Relaxed).max(rss_after);
    let mut mem = Check::new("hostile-rss");
    let growth = peak.saturating_sub(rss_before);
    mem.summary = format!(
        "RSS {:.1} MiB before, peak {:.1} MiB, {:.1} MiB after (growth bound {} MiB)",
        rss_before as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        rss_after as f64 / (1 << 20) as f64,
        MAX_RSS_GROWTH_BYTES >> 20
    );
    if growth > MAX_RSS_GROWTH_BYTES {
        mem.violation(format!(
            "n{target}'s RSS grew by {:.1} MiB",
            growth as f64 / (1 << 20) as f64
        ));
    }
    ctx.report.checks.push(mem);

    // Membership unchanged everywhere.
    let members_after = membership(&cluster);
    let mut mship = Check::new("hostile-membership");
    for (i, (b, a)) in members_before.iter().zip(&members_after).enumerate() {
        if b != a {
            mship.violation(format!("n{i}'s membership changed: {b:?} -> {a:?}"));
        }
    }
    mship.summary = format!("{n} nodes' member lists (ids, generations, codes) compared");
    ctx.report.checks.push(mship);

    // The forged packets reached the nodes and were dropped (else the attack did nothing).
    let drops: u64 = (0..n)
        .map(|i| gossip_drops(&cluster, i).saturating_sub(drops_before[i]))
        .sum();
    let mut reached = Check::new("guard-forged-reached");
    reached.summary = format!("{drops} gossip packets dropped by the nodes during the run");
    if drops == 0 {
        reached.violation(
            "no node counted a dropped gossip packet: the forged packets never arrived".into(),
        );
    }
    ctx.report.checks.push(reached);

    let ops = h.ops();
    ctx.report.checks.push(checkers::corrupt(&ops));
    ctx.report.checks.extend(checkers::guards(
        &ops,
        &h.faults(),
        &Guards {
            min_acked_writes: 100,
            min_faults: 5,
            min_quiet_ok: 100,
        },
    ));
    Ok(())
}

fn attacks(
    ctx: &mut Ctx,
    cluster: &mut Cluster,
    target: usize,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let h = ctx.history.clone();

    // 1. Malformed requests and huge declared lengths: an error (or close) within 1 s.
    let id = h.fault_start(
        "hostile-malformed",
        "malformed RESP and huge declared lengths",
        &[target],
    );
    let mut fast = Check::new("hostile-errors-fast");
    let cases = malformed();
    for m in &cases {
        match send_malformed(addr, &m.bytes) {
            Ok((reply, took)) => {
                let ok = reply.is_empty() || reply.starts_with('-');
                if !ok {
                    fast.violation(format!("{}: answered {reply:?}, not an error", m.what));
                } else if took > RESPONSE_WITHIN {
                    fast.violation(format!(
                        "{}: answered after {} ms",
                        m.what,
                        took.as_millis()
                    ));
                }
                ctx.report.lines.push(format!(
                    "  {:<28} {} ms: {}",
                    m.what,
                    took.as_millis(),
                    if reply.is_empty() {
                        "closed".to_string()
                    } else {
                        reply
                            .lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(80)
                            .collect()
                    }
                ));
            }
            Err(e) => fast.violation(format!("{}: {e:#}", m.what)),
        }
    }
    fast.summary = format!("{} malformed requests", cases.len());
    ctx.report.checks.push(fast);
    h.fault_end(id);

    // 2. Declared lengths within the limits, never followed by data.
    let id = h.fault_start(
        "hostile-declared",
        &format!(
            "{DECLARED_CONNS} connections declaring 16 MB bulks / 1M-argument arrays, then silent"
        ),
        &[target],
    );
    let mut held = Vec::new();
    for i in 0..DECLARED_CONNS {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let head: &[u8] = if i % 2 == 0 {
                b"*2\r\n$3\r\nGET\r\n$16000000\r\n"
            } else {
                b"*1048576\r\n$3\r\nGET\r\n"
            };
            let _ = s.write_all(head);
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    h.fault_end(id);

    // 3. Floods: pipelining clients that read their replies, and deaf ones that never do.
    let id = h.fault_start(
        "hostile-flood",
        &format!("{FLOOD_CONNS}×{FLOOD_CMDS} pipelined GETs; {DEAF_CONNS} clients sending {} MiB of PING without reading", DEAF_BYTES >> 20),
        &[target],
    );
    let mut flood = Check::new("hostile-flood");
    let started = Instant::now();
    let results: Vec<anyhow::Result<usize>> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for c in 0..FLOOD_CONNS {
            hs.push(s.spawn(move || -> anyhow::Result<usize> {
                let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                sock.set_read_timeout(Some(FLOOD_WITHIN))?;
                let mut req = Vec::new();
                for i in 0..FLOOD_CMDS {
                    req.extend(resp(&[b"GET", format!("flood:{c}:{i}").as_bytes()]));
                }
                let mut w = sock.try_clone()?;
                let writer = std::thread::spawn(move || w.write_all(&req));
                // Each reply to a GET of a missing key is `$-1\r\n` (5 bytes).
                let want = FLOOD_CMDS * 5;
                let mut got = 0;
                let mut buf = vec![0u8; 64 << 10];
                while got < want {
                    let n = sock.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let _ = writer.join();
                Ok(got / 5)
            }));
        }
        for _ in 0..DEAF_CONNS {
            hs.push(s.spawn(move || -> anyhow::Result<usize> {
                let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                sock.set_write_timeout(Some(DEAF_HOLD))?;
                let ping = b"*1\r\n$4\r\nPING\r\n";
                let req: Vec<u8> = ping.iter().copied().cycle().take(DEAF_BYTES).collect();
                // The node stops reading once its replies back up: the write may time out.
                let _ = sock.write_all(&req);
                std::thread::sleep(DEAF_HOLD);
                Ok(0)
            }));
        }
        hs.into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("flood thread panicked")))
            })
            .collect()
    });
    let mut replies = 0;
    for (i, r) in results.iter().enumerate().take(FLOOD_CONNS) {
        match r {
            Ok(k) if *k == FLOOD_CMDS => replies += k,
            Ok(k) => flood.violation(format!("flood client {i} got {k} of {FLOOD_CMDS} replies")),
            Err(e) => flood.violation(format!("flood client {i}: {e:#}")),
        }
    }
    flood.summary = format!(
        "{replies} pipelined replies in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ctx.report.checks.push(flood);
    h.fault_end(id);

    // 4. Slowloris, while a well-behaved client keeps working.
    let id = h.fault_start(
        "hostile-slowloris",
        &format!(
            "{SLOW_CONNS} connections sending one byte every {} ms",
            SLOW_BYTE_EVERY.as_millis()
        ),
        &[target],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicU64::new(0));
    let slow = {
        let (stop, cut) = (stop.clone(), cut.clone());
        std::thread::spawn(move || {
            let mut socks: Vec<Option<TcpStream>> = (0..SLOW_CONNS)
                .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
                .collect();
            let request = resp(&[b"SET", b"slowloris", b"never-finished"]);
            let mut at = 0;
            while !stop.load(Ordering::Acquire) && at < request.len() {
                for s in socks.iter_mut() {
                    let Some(sock) = s else { continue };
                    let _ = sock.set_nonblocking(true);
                    let mut probe = [0u8; 256];
                    // The node cuts a slow request with an error or a close.
                    let closed = match sock.read(&mut probe) {
                        Ok(_) => true,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    if closed || sock.write_all(&request[at..at + 1]).is_err() {
                        cut.fetch_add(1, Ordering::Relaxed);
                        *s = None;
                    }
                }
                at += 1;
                std::thread::sleep(SLOW_BYTE_EVERY);
            }
        })
    };
    let slow_start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut c = workload::Client::new(vec![addr], "ONE");
    let mut i = 0;
    while slow_start.elapsed() < SLOW_CUT_WITHIN {
        let key = format!("svc:{i}");
        i += 1;
        let t = Instant::now();
        workload::recorded_set(
            &h,
            &mut c,
            "svc",
            0,
            &key,
            &workload::make_value(&key, 1, "s"),
        );
        workload::recorded_get(&h, &mut c, "svc", 0, &key);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Release);
    let _ = slow.join();
    let mut sl = Check::new("hostile-slowloris-cut");
    let cut = cut.load(Ordering::Relaxed) as usize;
    sl.summary = format!(
        "{cut} of {SLOW_CONNS} slow connections cut within {} s; a normal client's worst SET+GET took {} ms",
        SLOW_CUT_WITHIN.as_secs(),
        worst.as_millis()
    );
    if (cut as f64) < SLOW_CUT_SHARE * SLOW_CONNS as f64 {
        sl.violation(format!(
            "only {cut} of {SLOW_CONNS} slowloris connections were cut within {} s",
            SLOW_CUT_WITHIN.as_secs()
        ));
    }
    ctx.report.checks.push(sl);
    h.fault_end(id);

    // 5. Forged gossip from a host without the secret.
    let id = h.fault_start(
        "hostile-gossip",
        &format!("{FORGED_PACKETS} forged gossip datagrams to every node"),
        &[],
    );
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.cluster.to_string())
        .collect();
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id.clone()).collect();
    let seed: u64 = ctx.rng.random();
    if cluster.topo.network_faults() {
        let (ns, ip) = cluster.topo.attacker()?;
        let me = std::env::current_exe()?;
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            ns,
            me.to_string_lossy().into_owned(),
            "forge-gossip".into(),
            "--targets".into(),
            targets.join(","),
            "--cluster-name".into(),
            "hearsay-faults".into(),
            "--count".into(),
            (FORGED_PACKETS * targets.len()).to_string(),
            "--seed".into(),
            seed.to_string(),
        ];
        for id in &ids {
            args.push("--node-ids".into());
            args.push(id.clone());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::util::run("ip", &argv)?;
        ctx.report.lines.push(format!(
            "forged gossip from {ip} (no secret): {}",
            out.trim()
        ));
    } else {
        let addrs: Vec<SocketAddr> = targets.iter().filter_map(|t| t.parse().ok()).collect();
        let sent = forge_gossip(
            &addrs,
            "hearsay-faults",
            &ids,
            FORGED_PACKETS * addrs.len(),
            seed,
        )?;
        ctx.report.lines.push(format!(
            "forged gossip from loopback (no secret): sent {sent} packets"
        ));
    }
    h.fault_end(id);
    Ok(())
}

/// Appends `v` as an unsigned LEB128 varint (postcard's integer encoding).
fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A node id as gossip's 16 wire bytes (the id's 32 hex digits, big-endian).
fn wire_id(id: &str) -> Option<[u8; 16]> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    unhex(&hex)?.try_into().ok()
}

/// Sends `count` forged gossip datagrams round-robin to `targets`: random garbage, and
/// well-formed version-1 packets of the right cluster (a heartbeat from a made-up node, a
/// DOWN verdict about a real one) whose MAC is random because the sender does not know the
/// secret, plus wrong versions, other clusters and oversized packets. A node must drop
/// every one of them. Returns how many were sent.
pub fn forge_gossip(
    targets: &[SocketAddr],
    cluster_name: &str,
    node_ids: &[String],
    count: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    anyhow::ensure!(!targets.is_empty(), "no targets");
    let sock = UdpSocket::bind(if targets[0].is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster_id: [u8; 8] = Sha256::digest(cluster_name.as_bytes())[..8]
        .try_into()
        .expect("8 bytes");
    let ids: Vec<[u8; 16]> = node_ids.iter().filter_map(|i| wire_id(i)).collect();
    let mut sent = 0;
    for i in 0..count {
        let target = targets[i % targets.len()];
        let mut random_bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.random()).collect() };
        let packet = match i % 6 {
            0 => {
                let len = (i * 7919) % 1500;
                random_bytes(len)
            }
            kind => {
                let mut p = vec![if kind == 3 { 2 } else { 1 }];
                if kind == 4 {
                    p.extend(random_bytes(8));
                } else {
                    p.extend_from_slice(&cluster_id);
                }
                // Message { sender, body, rumors }.
                let fake: [u8; 16] = random_bytes(16).try_into().expect("16 bytes");
                p.extend_from_slice(&fake);
                varint(&mut p, 1 << 40);
                varint(&mut p, 1 << 30);
                varint(&mut p, 4); // Body::Ping
                if kind == 2 && !ids.is_empty() {
                    // One rumor: Down { target: a real node, a huge generation/heartbeat }.
                    varint(&mut p, 1);
                    varint(&mut p, 2);
                    p.extend_from_slice(&ids[i % ids.len()]);
                    varint(&mut p, 1 << 50);
                    varint(&mut p, 1 << 40);
                } else {
                    varint(&mut p, 0);
                }
                if kind == 5 {
                    p.extend(random_bytes(60_000));
                }
                // A MAC made without the secret.
                p.extend(random_bytes(16));
                p
            }
        };
        if sock.send_to(&packet, target).is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        let mut v = Vec::new();
        varint(&mut v, 0);
        varint(&mut v, 127);
        varint(&mut v, 128);
        varint(&mut v, 300);
        assert_eq!(v, vec![0, 127, 0x80, 1, 0xAC, 2]);
    }

    #[test]
    fn node_ids_become_their_16_wire_bytes() {
        let id = "87af650a-8fa3-15ee-c4d7-baf8013c5945";
        let w = wire_id(id).unwrap();
        assert_eq!(w[0], 0x87);
        assert_eq!(w[15], 0x45);
        assert_eq!(wire_id("xyz"), None);
    }

    #[test]
    fn forged_packets_go_out_to_a_listening_socket() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = rx.local_addr().unwrap();
        let sent = forge_gossip(
            &[addr],
            "c",
            &["87af650a8fa315eec4d7baf8013c5945".into()],
            12,
            1,
        )
        .unwrap();
        assert_eq!(sent, 12);
        rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert!(n < 1500);
    }
}
