//! HintStore throughput (a bench binary, `harness = false`; moved from the ignored test
//! `measure_store_and_replay_throughput` of `tests/hints_store.rs`):
//! `cargo bench -p hearsay-cluster --bench hints_store`. For each sync policy, 16 threads store
//! hints of 100-byte values for one target, then replay them in 256 KiB batches with an ack
//! each; prints hints/s of both, bytes on disk and fsyncs. Figures: `docs/hinted-handoff.md`.

use hearsay_cluster::hints::{HintConfig, HintOutcome, HintStore, HintSyncPolicy};
use hearsay_storage::{Cell, CellKey};
use hearsay_types::{Clock, ManualClock, NodeId, Timestamp, Token};
use std::path::Path;
use std::sync::Arc;

const T0_MICROS: u64 = 1_700_000_000_000_000;
const A: NodeId = NodeId(0xaaaa_0000_0000_0000_0000_0000_0000_0001);

fn clock() -> Arc<ManualClock> {
    ManualClock::new(T0_MICROS)
}

fn config() -> HintConfig {
    HintConfig {
        sync: HintSyncPolicy::Batch,
        ..HintConfig::default()
    }
}

fn open(dir: &Path, config: HintConfig, clock: &Arc<ManualClock>) -> HintStore {
    let c: Arc<dyn Clock> = clock.clone();
    HintStore::open(dir, config, c).expect("open")
}

fn stored(o: HintOutcome) -> u64 {
    match o {
        HintOutcome::Stored { hint_id } => hint_id,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn now_ms(c: &ManualClock) -> u64 {
    c.wall_millis()
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this probe has no options.
    for (name, sync, n) in [
        ("batch", HintSyncPolicy::Batch, 2_000u64),
        (
            "periodic",
            HintSyncPolicy::Periodic { interval_ms: 1000 },
            50_000,
        ),
        ("none", HintSyncPolicy::None, 50_000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = clock();
        let s = open(dir.path(), HintConfig { sync, ..config() }, &c);
        let value = vec![b'v'; 100];
        let t = std::time::Instant::now();
        // 16 concurrent writers, as a coordinator's write path would hint.
        let s = Arc::new(s);
        let writers: Vec<_> = (0..16u64)
            .map(|w| {
                let (s, value, now) = (s.clone(), value.clone(), now_ms(&c));
                std::thread::spawn(move || {
                    for i in (w..n).step_by(16) {
                        let cells = vec![(
                            CellKey::new(Token(i as i64), format!("key-{i:08}").into_bytes()),
                            Cell::value(value.clone(), Timestamp(T0_MICROS + i)),
                        )];
                        stored(s.store(A, "default", &cells, now));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let store_s = t.elapsed().as_secs_f64();
        let bytes = s.stats().bytes_on_disk;
        let fsyncs = s.stats().fsyncs_total;
        let t = std::time::Instant::now();
        let mut replayed = 0;
        loop {
            let b = s.replay_batch(A, 256 * 1024).unwrap();
            let Some(last) = b.last() else { break };
            replayed += b.len();
            s.ack(A, last.hint_id).unwrap();
        }
        let replay_s = t.elapsed().as_secs_f64();
        assert_eq!(replayed as u64, n);
        println!(
            "{name:>8}: store {n} hints of 100 B from 16 threads ({} B on disk, {} fsyncs) {:.0} hints/s; replay+ack {:.0} hints/s",
            bytes,
            fsyncs,
            n as f64 / store_s,
            n as f64 / replay_s
        );
    }
}
