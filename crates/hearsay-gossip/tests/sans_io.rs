//! Sans-IO protocol tests: feed packets to the state machine, assert what it emits.

use std::net::SocketAddr;

use hearsay_gossip::wire::{
    Body, Codec, Digest, DigestEntry, Message, NodeDelta, Rumor, Sender, WireEntry, WireId,
};
use hearsay_gossip::{Event, GossipConfig, Gossiper, Liveness, MemberStatus, StateKey};
use hearsay_types::NodeId;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const CLUSTER: &str = "test-cluster";
const SECRET: &[u8] = b"test-secret";

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7381))
}

fn id(i: u32) -> NodeId {
    // Spread ids over the ring, as random ones would be.
    NodeId((i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

fn node(i: u32, seeds: &[u32]) -> Gossiper {
    let mut cfg = GossipConfig::new(CLUSTER, SECRET, addr(i));
    cfg.seeds = seeds.iter().map(|s| addr(*s)).collect();
    Gossiper::new(cfg, id(i), 1, 0).unwrap()
}

fn forger() -> Codec {
    Codec::new(CLUSTER, SECRET)
}

fn sender(i: u32, hb: u64) -> Sender {
    Sender {
        node: id(i).into(),
        generation: 1,
        heartbeat: hb,
    }
}

fn delta(
    node: NodeId,
    generation: u64,
    from: u64,
    entries: Vec<(StateKey, u64, &str)>,
) -> NodeDelta {
    let to = entries.iter().map(|e| e.1).max().unwrap_or(from);
    NodeDelta {
        node: node.into(),
        generation,
        heartbeat: 1,
        removed: false,
        from_version: from,
        to_version: to,
        entries: entries
            .into_iter()
            .map(|(key, version, v)| WireEntry {
                key,
                version,
                value: v.as_bytes().to_vec(),
            })
            .collect(),
    }
}

fn push_packet(from: u32, deltas: Vec<NodeDelta>) -> Vec<u8> {
    forger().encode(&Message {
        sender: sender(from, 1),
        body: Body::Push { deltas },
        rumors: vec![],
    })
}

fn decode(bytes: &[u8]) -> Message {
    forger().decode(bytes).expect("our own packet decodes")
}

/// Runs one full exchange initiated by `a` toward `b_addr`; returns bytes of each packet.
fn exchange(
    a: &mut Gossiper,
    b: &mut Gossiper,
    b_addr: SocketAddr,
    a_addr: SocketAddr,
    now: u64,
    rng: &mut StdRng,
) -> Vec<usize> {
    let mut sizes = vec![];
    let out = a.tick(now, rng);
    for o in out.into_iter().filter(|o| o.to == b_addr) {
        sizes.push(o.packet.len());
        for r in b.handle_packet(a_addr, &o.packet, now, rng) {
            if r.to != a_addr {
                continue;
            }
            sizes.push(r.packet.len());
            for r2 in a.handle_packet(b_addr, &r.packet, now, rng) {
                if r2.to == b_addr {
                    sizes.push(r2.packet.len());
                    b.handle_packet(a_addr, &r2.packet, now, rng);
                }
            }
        }
    }
    sizes
}

#[test]
fn push_pull_exchange_converges_two_nodes() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut a = node(1, &[2]);
    let mut b = node(2, &[2]);
    a.set_status(MemberStatus::Normal).unwrap();
    b.set_local_state(StateKey::Dc, b"dc1".to_vec()).unwrap();
    exchange(&mut a, &mut b, addr(2), addr(1), 1_000, &mut rng);
    assert_eq!(
        b.member_state(id(1), &StateKey::Status)
            .map(|v| v.value.clone()),
        Some(b"NORMAL".to_vec())
    );
    assert_eq!(
        a.member_state(id(2), &StateKey::Dc)
            .map(|v| v.value.clone()),
        Some(b"dc1".to_vec())
    );
    let ev = a.drain_events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Joined { node, .. } if *node == id(2)))
    );
}

#[test]
fn syn_ack_ack2_message_shapes() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut a = node(1, &[2]);
    let mut b = node(2, &[2]);
    // Let a's start-up rumor (its own state) retire, so the state must travel by Ack2.
    for t in 1..=5 {
        a.tick(t * 10, &mut rng);
    }
    let syn = a.tick(1_000, &mut rng);
    let syn = syn.iter().find(|o| o.to == addr(2)).unwrap();
    let Body::Syn { digest } = decode(&syn.packet).body else {
        panic!("expected Syn")
    };
    assert_eq!(digest.entries.len(), 1, "a knows only itself");
    assert!(digest.complete_range.is_some());
    let ack = b.handle_packet(addr(1), &syn.packet, 1_000, &mut rng);
    assert_eq!(ack.len(), 1);
    let Body::Ack { deltas, request } = decode(&ack[0].packet).body else {
        panic!("expected Ack")
    };
    // b sends itself (a's digest is complete and lacks it) and requests a.
    assert!(deltas.iter().any(|d| NodeId::from(d.node) == id(2)));
    assert!(request.iter().any(|e| NodeId::from(e.node) == id(1)));
    let ack2 = a.handle_packet(addr(2), &ack[0].packet, 1_000, &mut rng);
    let Body::Ack2 { deltas } = decode(&ack2[0].packet).body else {
        panic!("expected Ack2")
    };
    assert_eq!(NodeId::from(deltas[0].node), id(1));
}

/// A responder holding many nodes the requester lacks: every packet fits the budget, the
/// most out-of-date node goes first, and everything arrives within ceil(total / fit) + a
/// few exchanges (nothing is starved).
#[test]
fn budget_truncation_most_outdated_first_no_starvation() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut r = node(1, &[1]);
    let mut q = node(2, &[1]);
    let big = id(1000);
    // One node with 40 versions, 300 nodes with one version each.
    let big_entries: Vec<(StateKey, u64, &str)> = (1..=40)
        .map(|v| {
            (
                StateKey::Custom(format!("k{v}")),
                v,
                "0123456789012345678901234567890123456789",
            )
        })
        .collect();
    r.handle_packet(
        addr(1000),
        &push_packet(1000, vec![delta(big, 1, 0, big_entries)]),
        0,
        &mut rng,
    );
    for chunk in (0..300u32).collect::<Vec<_>>().chunks(20) {
        let ds = chunk
            .iter()
            .map(|i| delta(id(2000 + i), 1, 0, vec![(StateKey::Status, 1, "NORMAL")]))
            .collect();
        r.handle_packet(addr(999), &push_packet(999, ds), 0, &mut rng);
    }
    assert_eq!(r.member_count(), 1 + 1 + 300 + 1);
    let mut first = true;
    let mut known_before = q.member_count();
    let mut exchanges = 0;
    while exchanges < 200 {
        exchanges += 1;
        let now = exchanges * 1_000;
        let out = q.tick(now, &mut rng);
        let syn = out.into_iter().find(|o| o.to == addr(1)).unwrap();
        assert!(syn.packet.len() <= 1_400);
        let acks = r.handle_packet(addr(2), &syn.packet, now, &mut rng);
        let ack = acks.into_iter().find(|o| o.to == addr(2)).unwrap();
        assert!(
            ack.packet.len() <= 1_400,
            "ack of {} bytes",
            ack.packet.len()
        );
        if first {
            let Body::Ack { deltas, .. } = decode(&ack.packet).body else {
                panic!()
            };
            assert_eq!(NodeId::from(deltas[0].node), big, "most out-of-date first");
            assert!(deltas[0].to_version < 40, "the big node is cut to fit");
            first = false;
        }
        for o in q.handle_packet(addr(1), &ack.packet, now, &mut rng) {
            r.handle_packet(addr(2), &o.packet, now, &mut rng);
        }
        let known = q.member_count();
        let big_done = q
            .member_state(big, &StateKey::Custom("k40".into()))
            .is_some();
        if known == r.member_count() && big_done {
            break;
        }
        assert!(known >= known_before);
        known_before = known;
    }
    // ~300 × 40 bytes + 1.8 KB ≈ 14 KB at ~1.3 KB per Ack is 11 exchanges; once q's own
    // digest no longer fits, its ranges sweep the ring ~25 ids at a time (≈ 12 more).
    assert!(
        exchanges <= 30,
        "took {exchanges} exchanges: something starved"
    );
    assert!(q.metrics().deltas_truncated + r.metrics().deltas_truncated > 0);
}

#[test]
fn digest_is_bounded_at_scale() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut r = node(1, &[2]);
    for chunk in (0..3000u32).collect::<Vec<_>>().chunks(25) {
        let ds = chunk
            .iter()
            .map(|i| delta(id(5000 + i), 1, 0, vec![(StateKey::Status, 1, "NORMAL")]))
            .collect();
        r.handle_packet(addr(999), &push_packet(999, ds), 0, &mut rng);
    }
    let out = r.tick(1_000, &mut rng);
    for o in &out {
        assert!(o.packet.len() <= 1_400);
        if let Body::Syn { digest } = decode(&o.packet).body {
            assert!(digest.entries.len() < 100);
            assert!(digest.complete_range.is_some());
        }
    }
}

fn known_x(a: &mut Gossiper, x: NodeId, generation: u64, rng: &mut StdRng) {
    let d = delta(
        x,
        generation,
        0,
        vec![(StateKey::Status, 1, "NORMAL"), (StateKey::Dc, 2, "dc1")],
    );
    a.handle_packet(addr(50), &push_packet(50, vec![d]), 0, rng);
}

#[test]
fn tombstone_is_never_undone_by_stale_gossip() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut a = node(1, &[]);
    let x = id(77);
    known_x(&mut a, x, 5, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Up));
    a.remove(x).unwrap();
    assert_eq!(a.liveness(x), Some(Liveness::Removed));
    assert!(
        a.drain_events()
            .iter()
            .any(|e| matches!(e, Event::Removed { node, generation: 5 } if *node == x))
    );
    // Stale gossip at the same generation with newer versions, as a delta, a rumor and a
    // digest: all ignored.
    let newer = delta(x, 5, 2, vec![(StateKey::Load, 3, "100")]);
    a.handle_packet(
        addr(50),
        &push_packet(50, vec![newer.clone()]),
        10,
        &mut rng,
    );
    let rumor = forger().encode(&Message {
        sender: sender(50, 2),
        body: Body::Ping,
        rumors: vec![Rumor::Delta(newer)],
    });
    a.handle_packet(addr(50), &rumor, 20, &mut rng);
    let syn = forger().encode(&Message {
        sender: sender(50, 3),
        body: Body::Syn {
            digest: Digest {
                complete_range: None,
                entries: vec![DigestEntry {
                    node: x.into(),
                    generation: 5,
                    heartbeat: 99,
                    max_version: 9,
                    removed: false,
                }],
            },
        },
        rumors: vec![],
    });
    let ack = a.handle_packet(addr(50), &syn, 30, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Removed));
    assert!(a.metrics().stale_ignored >= 2);
    // The stale peer is told about the tombstone, and nothing asks it for x's state.
    let Body::Ack { deltas, request } = decode(&ack[0].packet).body else {
        panic!()
    };
    assert!(
        deltas
            .iter()
            .any(|d| NodeId::from(d.node) == x && d.removed && d.generation == 5)
    );
    assert!(!request.iter().any(|e| NodeId::from(e.node) == x));
    // A newer generation without an explicit join stays out.
    known_x(&mut a, x, 6, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Removed));
    // A newer generation advertising JOINING in a full state rejoins.
    let join = delta(x, 6, 0, vec![(StateKey::Status, 1, "JOINING")]);
    a.handle_packet(addr(50), &push_packet(50, vec![join]), 40, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Up));
    assert_eq!(a.member_generation(x), Some(6));
}

#[test]
fn tombstone_reaches_the_removed_node_and_stops_it() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut a = node(1, &[]);
    let tomb = NodeDelta {
        node: id(1).into(),
        generation: 1,
        heartbeat: 0,
        removed: true,
        from_version: 0,
        to_version: 0,
        entries: vec![],
    };
    a.handle_packet(addr(9), &push_packet(9, vec![tomb]), 0, &mut rng);
    assert!(a.is_removed());
    assert!(a.tick(1_000, &mut rng).is_empty());
}

#[test]
fn packets_of_another_cluster_or_secret_are_dropped_and_counted() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut a = node(1, &[]);
    let msg = Message {
        sender: sender(9, 1),
        body: Body::Push {
            deltas: vec![delta(id(9), 1, 0, vec![(StateKey::Status, 1, "NORMAL")])],
        },
        rumors: vec![],
    };
    let other = Codec::new("other-cluster", SECRET).encode(&msg);
    let bad_secret = Codec::new(CLUSTER, b"wrong").encode(&msg);
    let mut tampered = forger().encode(&msg);
    let mid = tampered.len() / 2;
    tampered[mid] ^= 1;
    let mut bad_version = forger().encode(&msg);
    bad_version[0] = 99;
    for p in [&other, &bad_secret, &tampered, &bad_version] {
        assert!(a.handle_packet(addr(9), p, 0, &mut rng).is_empty());
    }
    assert!(a.handle_packet(addr(9), &[1, 2, 3], 0, &mut rng).is_empty());
    assert_eq!(a.member_count(), 1, "nothing was learned");
    let d = a.metrics().dropped;
    assert_eq!(d.get("OtherCluster"), Some(&1));
    assert_eq!(d.get("BadMac"), Some(&2));
    assert_eq!(d.get("BadVersion"), Some(&1));
    assert_eq!(d.get("TooShort"), Some(&1));
    // The genuine packet is accepted.
    a.handle_packet(addr(9), &forger().encode(&msg), 0, &mut rng);
    assert_eq!(a.member_count(), 2);
}

#[test]
fn oversized_counts_and_bad_version_order_are_rejected() {
    let c = forger();
    let mut d = delta(
        id(9),
        1,
        0,
        vec![(StateKey::Status, 2, "A"), (StateKey::Dc, 1, "B")],
    );
    let msg = |d: NodeDelta| Message {
        sender: sender(9, 1),
        body: Body::Push { deltas: vec![d] },
        rumors: vec![],
    };
    assert!(
        c.decode(&c.encode(&msg(d.clone()))).is_err(),
        "versions must ascend"
    );
    d.entries.reverse();
    assert!(c.decode(&c.encode(&msg(d.clone()))).is_ok());
    d.entries[0].key = StateKey::Custom("k".repeat(500));
    assert!(c.decode(&c.encode(&msg(d))).is_err(), "key too long");
}

#[test]
fn suspicion_about_self_is_refuted_by_a_heartbeat_rumor() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut a = node(1, &[]);
    known_x(&mut a, id(2), 1, &mut rng);
    let sus = forger().encode(&Message {
        sender: sender(2, 5),
        body: Body::Ping,
        rumors: vec![Rumor::Suspicion {
            target: id(1).into(),
            generation: 1,
            heartbeat: 0,
            reporter: id(2).into(),
        }],
    });
    a.handle_packet(addr(2), &sus, 0, &mut rng);
    let out = a.tick(1_000, &mut rng);
    let refuted = out.iter().any(|o| {
        decode(&o.packet).rumors.iter().any(|r| {
            matches!(r, Rumor::Delta(d) if NodeId::from(d.node) == id(1) && d.entries.is_empty() && d.heartbeat >= 1)
        })
    });
    assert!(refuted);
}

#[test]
fn fixture_v1_packet_decodes_and_reencodes_identically() {
    let codec = Codec::new("fixture-cluster", b"fixture-secret");
    let msg = Message {
        sender: Sender {
            node: WireId([7; 16]),
            generation: 1_700_000_000,
            heartbeat: 42,
        },
        body: Body::Ack {
            deltas: vec![delta(
                NodeId(0x0102),
                1_700_000_000,
                0,
                vec![
                    (StateKey::Status, 1, "NORMAL"),
                    (StateKey::Custom("zone".into()), 2, "z1"),
                ],
            )],
            request: vec![DigestEntry {
                node: WireId([9; 16]),
                generation: 3,
                heartbeat: 4,
                max_version: 5,
                removed: false,
            }],
        },
        rumors: vec![Rumor::Suspicion {
            target: WireId([1; 16]),
            generation: 2,
            heartbeat: 3,
            reporter: WireId([2; 16]),
        }],
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gossip-v1-ack.bin"
    );
    if std::env::var_os("HEARSAY_WRITE_FIXTURES").is_some() {
        std::fs::write(path, codec.encode(&msg)).unwrap();
    }
    let bytes = std::fs::read(path).expect("fixture present");
    assert_eq!(bytes[0], 1, "version byte");
    assert_eq!(codec.decode(&bytes).unwrap(), msg);
    assert_eq!(codec.encode(&msg), bytes, "encoding is stable");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut rng = StdRng::seed_from_u64(9);
        let mut a = node(1, &[]);
        a.handle_packet(addr(9), &bytes, 0, &mut rng);
        // With a valid MAC the body reaches postcard: still no panic, and bounded.
        let sealed = forger().seal_raw(&bytes);
        a.handle_packet(addr(9), &sealed, 0, &mut rng);
    }

    #[test]
    fn truncated_and_flipped_packets_never_panic(cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
        let mut rng = StdRng::seed_from_u64(10);
        let mut a = node(1, &[]);
        let mut b = node(2, &[1]);
        b.set_status(MemberStatus::Normal).unwrap();
        let out = b.tick(1_000, &mut rng);
        for o in out {
            let p = &o.packet;
            let n = cut.min(p.len());
            a.handle_packet(addr(2), &p[..n], 0, &mut rng);
            let mut q = p.clone();
            let i = flip % q.len();
            q[i] ^= 1 << bit;
            a.handle_packet(addr(2), &q, 0, &mut rng);
            // A flipped byte fails the MAC, so nothing is learned from it.
        }
        prop_assert!(a.member_count() <= 2);
    }

    #[test]
    fn valid_mac_random_messages_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        // Start from a real message prefix so postcard gets deeper than the first byte.
        let mut rng = StdRng::seed_from_u64(11);
        let mut a = node(1, &[]);
        let real = forger().encode(&Message { sender: sender(9, 1), body: Body::Ping, rumors: vec![] });
        let mut raw = real[9..real.len() - 16].to_vec();
        raw.truncate(17);
        raw.extend_from_slice(&body);
        a.handle_packet(addr(9), &forger().seal_raw(&raw), 0, &mut rng);
    }
}

#[test]
fn config_and_value_limits_are_enforced() {
    let mut cfg = GossipConfig::new(CLUSTER, SECRET, addr(1));
    cfg.max_packet_bytes = 100;
    assert!(Gossiper::new(cfg, id(1), 1, 0).is_err());
    let mut cfg = GossipConfig::new(CLUSTER, SECRET, addr(1));
    cfg.suspicion_validity_ms = 10;
    assert!(Gossiper::new(cfg.clone(), id(1), 1, 0).is_err());
    assert!(Gossiper::new(GossipConfig::new(CLUSTER, SECRET, addr(1)), id(1), 0, 0).is_err());
    let mut a = node(1, &[]);
    assert!(a.set_local_state(StateKey::Tokens, vec![0; 2_048]).is_err());
    assert!(a.set_local_state(StateKey::Tokens, vec![0; 1_000]).is_ok());
    assert!(a.remove(id(1)).is_err(), "cannot remove self");
    assert!(a.remove(id(99)).is_err(), "unknown node");
}

#[test]
fn down_verdict_is_accepted_unless_a_newer_heartbeat_is_known() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut a = node(1, &[]);
    let x = id(7);
    known_x(&mut a, x, 1, &mut rng); // heartbeat 1 known
    let verdict = |hb: u64| {
        forger().encode(&Message {
            sender: sender(50, 9),
            body: Body::Ping,
            rumors: vec![Rumor::Down {
                target: x.into(),
                generation: 1,
                heartbeat: hb,
            }],
        })
    };
    let ping_from_x = |hb: u64| {
        forger().encode(&Message {
            sender: Sender {
                node: x.into(),
                generation: 1,
                heartbeat: hb,
            },
            body: Body::Ping,
            rumors: vec![],
        })
    };
    a.handle_packet(addr(7), &ping_from_x(5), 0, &mut rng);
    a.handle_packet(addr(50), &verdict(4), 10, &mut rng);
    assert_eq!(
        a.liveness(x),
        Some(Liveness::Up),
        "stale verdict refuted by heartbeat 5"
    );
    a.handle_packet(addr(50), &verdict(5), 20, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Down));
    // A newer heartbeat from the node itself brings it back.
    a.handle_packet(addr(7), &ping_from_x(6), 30, &mut rng);
    assert_eq!(a.liveness(x), Some(Liveness::Up));
    let ev = a.drain_events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Down { node } if *node == x))
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Alive { node, .. } if *node == x))
    );
}

/// Makes `g` know nodes `ids` (generation 1, heartbeat 1) with their cluster addresses, as
/// one push from the first of them.
fn know_nodes(g: &mut Gossiper, ids: &[u32], rng: &mut StdRng) {
    let ds = ids
        .iter()
        .map(|i| {
            let a = addr(*i).to_string();
            delta(
                id(*i),
                1,
                0,
                vec![
                    (StateKey::Status, 1, "NORMAL"),
                    (StateKey::ClusterAddr, 2, &a),
                ],
            )
        })
        .collect();
    g.handle_packet(addr(ids[0]), &push_packet(ids[0], ds), 0, rng);
}

/// The `k` members after `target` in id order: its monitors.
fn monitors_of(target: NodeId, all: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut sorted = all.to_vec();
    sorted.sort();
    let pos = sorted.iter().position(|x| *x == target).unwrap();
    (1..=k).map(|j| sorted[(pos + j) % sorted.len()]).collect()
}

#[test]
fn suspicion_reports_go_only_to_the_suspects_monitors_and_stop_there() {
    let mut rng = StdRng::seed_from_u64(13);
    let others: Vec<u32> = (2..=12).collect();
    let all: Vec<NodeId> = std::iter::once(1)
        .chain(others.iter().copied())
        .map(id)
        .collect();
    let addr_of = |n: NodeId| (1..=12).find(|i| id(*i) == n).map(addr).unwrap();
    // Node 1 hears nobody's heartbeats: it suspects the nodes it watches after ~3.4 s.
    let mut a = node(1, &[]);
    know_nodes(&mut a, &others, &mut rng);
    let mut reports = Vec::new();
    for t in 1..=8u64 {
        for o in a.tick(t * 1_000, &mut rng) {
            for r in decode(&o.packet).rumors {
                if let Rumor::Suspicion {
                    target, reporter, ..
                } = r
                {
                    reports.push((o.to, NodeId::from(target), NodeId::from(reporter)));
                }
            }
        }
    }
    assert!(!reports.is_empty(), "node 1 never reported a suspicion");
    for (to, target, reporter) in &reports {
        assert_eq!(*reporter, id(1));
        let monitors = monitors_of(*target, &all, 5);
        assert!(
            monitors.contains(&id(1)),
            "1 reported a node it does not watch"
        );
        assert!(
            monitors.iter().any(|m| *m != id(1) && addr_of(*m) == *to),
            "report about {target} sent to {to}, not one of its monitors"
        );
    }
    // Each reported suspect's other four monitors got the report.
    let (_, target, _) = reports[0];
    for m in monitors_of(target, &all, 5)
        .into_iter()
        .filter(|m| *m != id(1))
    {
        assert!(
            reports
                .iter()
                .any(|(to, t, _)| *t == target && *to == addr_of(m)),
            "monitor {m} of {target} got no report"
        );
    }

    // A node that receives a report holds it (SUSPECT) but passes it on to nobody.
    let mut b = node(2, &[]);
    let rest: Vec<u32> = std::iter::once(1).chain(3..=12).collect();
    know_nodes(&mut b, &rest, &mut rng);
    let x = id(7);
    let packet = forger().encode(&Message {
        sender: sender(3, 5),
        body: Body::Ping,
        rumors: vec![Rumor::Suspicion {
            target: x.into(),
            generation: 1,
            heartbeat: 1,
            reporter: id(3).into(),
        }],
    });
    let mut out = b.handle_packet(addr(3), &packet, 100, &mut rng);
    assert_eq!(b.liveness(x), Some(Liveness::Suspect));
    out.extend(b.tick(1_000, &mut rng));
    for o in &out {
        assert!(
            !decode(&o.packet)
                .rumors
                .iter()
                .any(|r| matches!(r, Rumor::Suspicion { .. })),
            "report forwarded to {}",
            o.to
        );
    }
}

#[test]
fn rumors_ride_inside_the_gossip_packets() {
    // A fact and its anti-entropy copy must arrive in one packet, rumor first, or the
    // receiver learns it from the copy, finds the rumor stale and does not forward it.
    for mode in [
        hearsay_gossip::GossipMode::Push,
        hearsay_gossip::GossipMode::PushPull,
    ] {
        let mut rng = StdRng::seed_from_u64(14);
        let mut cfg = GossipConfig::new(CLUSTER, SECRET, addr(1));
        cfg.mode = mode;
        let mut a = Gossiper::new(cfg, id(1), 1, 0).unwrap();
        know_nodes(&mut a, &(2..=300).collect::<Vec<u32>>(), &mut rng);
        a.set_local_state(StateKey::Load, b"42".to_vec()).unwrap();
        let out = a.tick(1_000, &mut rng);
        let gossip: Vec<Message> = out
            .iter()
            .map(|o| decode(&o.packet))
            .filter(|m| matches!(m.body, Body::Push { .. } | Body::Syn { .. }))
            .collect();
        assert!(!gossip.is_empty(), "{mode:?}: no gossip packet");
        for m in &gossip {
            assert!(
                m.rumors.iter().any(|r| matches!(
                    r,
                    Rumor::Delta(d) if NodeId::from(d.node) == id(1) && !d.entries.is_empty()
                )),
                "{mode:?}: the state-change rumor is not in the gossip packet"
            );
        }
        assert!(out.iter().all(|o| o.packet.len() <= 1_400));
    }
}

#[test]
fn push_mode_keeps_pushing_a_change_for_about_3_ln_n_rounds() {
    // With the push-pull hot window (10 rounds) a node that every pusher missed waited for
    // the range sweep (tens of rounds); in push mode a change stays hot 3 ln(N + 1) rounds.
    let mut rng = StdRng::seed_from_u64(15);
    let mut cfg = GossipConfig::new(CLUSTER, SECRET, addr(1));
    cfg.mode = hearsay_gossip::GossipMode::Push;
    let mut a = Gossiper::new(cfg, id(1), 1, 0).unwrap();
    know_nodes(&mut a, &(2..=400).collect::<Vec<u32>>(), &mut rng);
    // 3 ln(401) ≈ 18 rounds. Node 7 changes; `a` learns it in round 1.
    let x = id(7);
    a.tick(1_000, &mut rng);
    let change = delta(x, 1, 2, vec![(StateKey::Load, 3, "9")]);
    a.handle_packet(addr(7), &push_packet(7, vec![change]), 1_100, &mut rng);
    let pushes_x = |out: &[hearsay_gossip::Outgoing]| {
        out.iter().any(|o| match decode(&o.packet).body {
            Body::Push { deltas } => deltas.iter().any(|d| NodeId::from(d.node) == x),
            _ => false,
        })
    };
    for round in 2..=20u64 {
        let out = a.tick(round * 1_000, &mut rng);
        if round <= 17 {
            assert!(pushes_x(&out), "round {round}: change no longer pushed");
        }
    }
}
