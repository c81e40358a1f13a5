//! Micro-benchmark of `Placement::replicas` lookups. Run:
//! `cargo run --release -p hearsay-ring --example replicas_bench`.

use hearsay_ring::{
    AllocatorConfig, Member, Placement, ReplicationStrategy, allocate_ring, token_of,
};
use hearsay_types::{NodeId, Token};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    for &num_tokens in &[16usize, 256] {
        let members = (0..100u128).map(|i| {
            Member::new(
                NodeId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                &format!("dc{}", i % 2),
                &format!("r{}", i % 5),
                Vec::new(),
            )
        });
        let ring = allocate_ring(
            members,
            &AllocatorConfig {
                num_tokens,
                ..AllocatorConfig::default()
            },
        )
        .expect("ring");
        for (name, strategy) in [
            ("simple rf=3", ReplicationStrategy::simple(3)),
            (
                "nts dc0:3 dc1:3",
                ReplicationStrategy::network_topology([("dc0", 3), ("dc1", 3)]),
            ),
        ] {
            let started = Instant::now();
            let placement = Placement::new(&ring, &strategy);
            let build = started.elapsed();
            // Pre-generated pseudo-random tokens so the loop measures only the lookup.
            let probes: Vec<Token> = (0..1u64 << 16)
                .map(|i| token_of(&i.to_le_bytes()))
                .collect();
            let rounds = 200;
            let started = Instant::now();
            let mut acc = 0usize;
            for _ in 0..rounds {
                for &t in &probes {
                    acc += black_box(placement.replicas(black_box(t))).len();
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let lookups = (rounds * probes.len()) as f64;
            // Key hashing plus lookup, as a coordinator does per request.
            let keys: Vec<[u8; 16]> = (0..1u64 << 16)
                .map(|i| {
                    let mut k = [0u8; 16];
                    k[..8].copy_from_slice(&i.to_le_bytes());
                    k
                })
                .collect();
            let started = Instant::now();
            for _ in 0..rounds {
                for k in &keys {
                    acc += black_box(placement.replicas_for_key(black_box(k))).len();
                }
            }
            let secs_keys = started.elapsed().as_secs_f64();
            println!(
                "100 nodes × {num_tokens} tokens, {name}: build {:.1} ms; replicas(token) {:.1} M lookups/s ({:.0} ns each); replicas_for_key(16-byte key) {:.1} M/s (checksum {acc})",
                build.as_secs_f64() * 1e3,
                lookups / secs / 1e6,
                secs / lookups * 1e9,
                lookups / secs_keys / 1e6,
            );
        }
    }
}
