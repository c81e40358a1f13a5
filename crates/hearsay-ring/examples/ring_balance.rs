//! Measures ownership balance of the token allocator against random tokens, for the table in
//! `docs/ring.md`. Run: `cargo run --release -p hearsay-ring --example ring_balance`
//! (`NS=12,48 TS=16` restrict the node and token counts).

use hearsay_ring::{
    AllocatorConfig, Member, Placement, ReplicationStrategy, Ring, allocate_ring, random_tokens,
};
use hearsay_types::NodeId;
use std::time::Instant;

struct Stats {
    max: f64,
    min: f64,
    cv: f64,
}

/// Max and min over mean, and the coefficient of variation, of per-weight ownership.
fn stats(values: &[(f64, f64)]) -> Stats {
    let per_weight: Vec<f64> = values.iter().map(|(v, w)| v / w).collect();
    let mean = per_weight.iter().sum::<f64>() / per_weight.len() as f64;
    let var = per_weight.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / per_weight.len() as f64;
    Stats {
        max: per_weight.iter().cloned().fold(f64::MIN, f64::max) / mean,
        min: per_weight.iter().cloned().fold(f64::MAX, f64::min) / mean,
        cv: var.sqrt() / mean,
    }
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            // Ids spread over the u128 space, as random ids would be.
            let id =
                NodeId((i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            Member::new(id, "dc1", &format!("r{}", i % 3), Vec::new())
        })
        .collect()
}

fn report(label: &str, ring: &Ring) {
    let primary: Vec<(f64, f64)> = ring
        .members()
        .map(|m| (ring.ownership(m.id), f64::from(m.weight)))
        .collect();
    let placement = Placement::new(ring, &ReplicationStrategy::simple(3));
    let effective: Vec<(f64, f64)> = ring
        .members()
        .map(|m| (placement.effective_ownership(m.id), f64::from(m.weight)))
        .collect();
    let (p, e) = (stats(&primary), stats(&effective));
    println!(
        "| {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        p.max, p.min, p.cv, e.max, e.cv
    );
}

fn main() {
    println!(
        "| ring | primary max/mean | primary min/mean | primary CV | RF=3 effective max/mean | RF=3 effective CV |"
    );
    println!("|---|---|---|---|---|---|");
    let ns: Vec<usize> = std::env::var("NS")
        .map(|v| {
            v.split(',')
                .map(|x| x.parse().expect("comma-separated numbers"))
                .collect()
        })
        .unwrap_or(vec![12, 48, 100]);
    let ts: Vec<usize> = std::env::var("TS")
        .map(|v| {
            v.split(',')
                .map(|x| x.parse().expect("comma-separated numbers"))
                .collect()
        })
        .unwrap_or(vec![1, 4, 8, 16, 32, 64, 256]);
    for &n in &ns {
        for &t in &ts {
            for rf in [3, 1] {
                let config = AllocatorConfig {
                    num_tokens: t,
                    replication_factor: rf,
                };
                let started = Instant::now();
                let alloc = allocate_ring(members(n), &config).expect("ring");
                let took = started.elapsed();
                report(
                    &format!(
                        "{n} nodes × {t} tokens, allocator rf {rf} ({} ms)",
                        took.as_millis()
                    ),
                    &alloc,
                );
            }
            let random = Ring::new(members(n).into_iter().map(|mut m| {
                m.tokens = random_tokens(m.id, t);
                m
            }))
            .expect("ring");
            report(&format!("{n} nodes × {t} tokens, random"), &random);
        }
    }
    // Weight: one weight-2 node among weight-1 nodes.
    for &t in &[4usize, 16, 256] {
        let mut ms = members(12);
        ms[5].weight = 2;
        let heavy = ms[5].id;
        let config = AllocatorConfig {
            num_tokens: t,
            ..AllocatorConfig::default()
        };
        let ring = allocate_ring(ms.clone(), &config).expect("ring");
        let light_mean = ring
            .members()
            .filter(|m| m.id != heavy)
            .map(|m| ring.ownership(m.id))
            .sum::<f64>()
            / 11.0;
        println!(
            "weight-2 node, 12 nodes × {t} tokens, allocator: owns {:.3}× a weight-1 node",
            ring.ownership(heavy) / light_mean
        );
        let ring = Ring::new(ms.into_iter().map(|mut m| {
            m.tokens = random_tokens(m.id, t * m.weight as usize);
            m
        }))
        .expect("ring");
        let light_mean = ring
            .members()
            .filter(|m| m.id != heavy)
            .map(|m| ring.ownership(m.id))
            .sum::<f64>()
            / 11.0;
        println!(
            "weight-2 node, 12 nodes × {t} tokens, random: owns {:.3}× a weight-1 node",
            ring.ownership(heavy) / light_mean
        );
    }
}
