//! Hearsay's engine against fjall, same process binary, same keys and values, same
//! durability (write-ahead log on, every write reaches the OS, no fsync per write).
//!
//! Each engine runs in its own child process (this binary re-executed with `--child`), so
//! peak RSS is per engine; rounds alternate the order (A B, B A, ...) and the table reports
//! medians. Workloads on N keys with 100-byte values: fillrandom, overwrite (N random
//! updates), readrandom hits and misses, and range scans of 100 keys. Write amplification is
//! bytes the process handed to write(2) (`wchar` in /proc/self/io, which covers both
//! engines alike) divided by user key+value bytes, measured after a final flush once
//! background compaction has gone quiet. Space amplification is bytes on disk then divided
//! by the live key+value bytes.
//!
//! Every rate is reported twice: per wall-clock second, and per CPU-second of the whole
//! process (all threads, background flush and compaction included). On a shared machine the
//! second is steadier: it does not count time other processes held the cores.
//!
//! `cargo bench -p hearsay-storage --bench engine_vs_fjall` (env: `BENCH_KEYS`, default
//! 1000000; `BENCH_ROUNDS`, default 2; `BENCH_READS`, default 200000). For experiments
//! only: `BENCH_KEEP_DIR` (fill a directory once, then A/B the read phases of two binaries
//! on the very same tables with `--child <engine>`), `BENCH_TRACE_PHASES` (phase marks in
//! CLOCK_MONOTONIC for `perf record -k CLOCK_MONOTONIC` + `perf report --time`, and
//! hearsay's cache counters), `BENCH_BLOCK_BYTES` (hearsay's data block size).

use bytes::Bytes;
use hearsay_storage::{Cell, CellKey, Engine, EngineConfig, SyncMode};
use hearsay_types::{Timestamp, Token};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 100;
const SCAN_LEN: usize = 100;
const SEED: u64 = 0x0048_4541_5253_4159;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn key_bytes(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

fn token_of(k: &[u8]) -> Token {
    Token(xxhash_rust::xxh3::xxh3_64(k) as i64)
}

fn proc_io_wchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// CPU time of the whole process (every thread: background flushes and compactions count),
/// in seconds, from `utime + stime` of /proc/self/stat (clock ticks of 10 ms).
fn process_cpu_secs() -> f64 {
    let ticks_per_sec = 100.0; // USER_HZ, fixed at 100 on Linux for /proc
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and
            // 15 of the line, i.e. 12 and 13 after the name.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_sec)
        })
        .unwrap_or(0.0)
}

/// Times one phase: wall-clock rate and rate per CPU-second of the process. On a shared box
/// the second is the steadier figure (it does not count time other processes held the
/// cores); both are reported.
struct Phase {
    wall: Instant,
    cpu: f64,
}

/// CLOCK_MONOTONIC in seconds, printed at phase boundaries when `BENCH_TRACE_PHASES` is set,
/// so a profile taken with `perf record -k CLOCK_MONOTONIC` can be cut to one phase
/// (`perf report --time <start>,<end>`).
// std's Instant hides the raw clock value that perf's timestamps are in; one libc call does.
#[allow(unsafe_code)]
fn monotonic_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn tracing_phases() -> bool {
    std::env::var_os("BENCH_TRACE_PHASES").is_some()
}

fn trace_phase(what: &str, name: &str) {
    if tracing_phases() {
        eprintln!("PHASE {what} {name} {:.6}", monotonic_secs());
    }
}

impl Phase {
    fn start() -> Phase {
        trace_phase("start", "next");
        Phase {
            cpu: process_cpu_secs(),
            wall: Instant::now(),
        }
    }
    fn record(self, out: &mut BTreeMap<String, f64>, name: &str, ops: f64) {
        trace_phase("end", name);
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (process_cpu_secs() - self.cpu).max(0.01);
        out.insert(name.to_string(), ops / wall);
        out.insert(format!("{name}_per_cpu_s"), ops / cpu);
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_bytes(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

/// The operations both engines offer the benchmark.
trait Kv {
    fn put(&mut self, k: &[u8], v: &[u8]);
    fn get(&mut self, k: &[u8]) -> bool;
    fn scan(&mut self, from: &[u8], n: usize) -> usize;
    /// Flush memtables and wait for background compaction to go quiet.
    fn settle(&mut self);
    /// Tables (SSTables / segments) on disk now.
    fn tables(&self) -> usize;
    /// Engine counters worth a look when tracing phases (`BENCH_TRACE_PHASES`).
    fn debug(&self) -> String {
        String::new()
    }
}

struct Hearsay {
    e: Engine,
    ts: u64,
}

impl Kv for Hearsay {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.ts += 1;
        let key = CellKey::new(token_of(k), Bytes::copy_from_slice(k));
        self.e
            .apply(
                "default",
                &[(
                    key,
                    Cell::value(Bytes::copy_from_slice(v), Timestamp(self.ts)),
                )],
            )
            .unwrap();
    }
    fn get(&mut self, k: &[u8]) -> bool {
        let key = CellKey::new(token_of(k), Bytes::copy_from_slice(k));
        self.e.get("default", &key).unwrap().is_some()
    }
    fn scan(&mut self, from: &[u8], n: usize) -> usize {
        let key = CellKey::new(token_of(from), Bytes::copy_from_slice(from));
        self.e
            .scan("default", Bound::Included(key), Bound::Unbounded)
            .unwrap()
            .take(n)
            .fold(0, |c, r| {
                std::hint::black_box(r.unwrap());
                c + 1
            })
    }
    fn settle(&mut self) {
        self.e.flush(None).unwrap();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let s = self.e.stats();
            let c = s.compactions;
            if c != last.0 {
                last = (c, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn debug(&self) -> String {
        let s = self.e.stats();
        let ks = s.keyspaces.get("default");
        format!(
            "cache {:?} hit rate {:.3}; sstable entries {:?}",
            s.block_cache,
            s.block_cache.hit_rate(),
            ks.map(|k| k.sstable_entries)
        )
    }
    fn tables(&self) -> usize {
        self.e
            .stats()
            .keyspaces
            .get("default")
            .map_or(0, |k| k.sstable_count as usize)
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Kv for Fjall {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).unwrap();
    }
    fn get(&mut self, k: &[u8]) -> bool {
        self.ks.get(k).unwrap().is_some()
    }
    fn scan(&mut self, from: &[u8], n: usize) -> usize {
        self.ks.range(from.to_vec()..).take(n).fold(0, |c, g| {
            std::hint::black_box(g.into_inner().unwrap());
            c + 1
        })
    }
    fn settle(&mut self) {
        self.ks.rotate_memtable_and_wait().unwrap();
        let mut quiet_since = Instant::now();
        loop {
            if self.db.active_compactions() > 0 || self.db.outstanding_flushes() > 0 {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn tables(&self) -> usize {
        self.ks.table_count()
    }
}

fn child(engine: &str) {
    let n = env_usize("BENCH_KEYS", 1_000_000) as u64;
    let reads = env_usize("BENCH_READS", 200_000);
    let tmp =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    // For A/B runs of the read phases alone: `BENCH_KEEP_DIR=<dir>` fills and settles `<dir>`
    // once (it then holds a `filled` marker) and afterwards only opens it and reads, so two
    // binaries read the very same tables. Reported: the read lines only.
    let keep = std::env::var_os("BENCH_KEEP_DIR").map(|d| Path::new(&d).join(engine));
    let dir_path = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir_path).unwrap();
    let prefilled = keep.as_ref().is_some_and(|d| d.join("filled").exists());
    let dir = dir_path.as_path();
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut order: Vec<u64> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut value = vec![0u8; VALUE_BYTES];
    let wchar0 = proc_io_wchar();
    let mut kv: Box<dyn Kv> = match engine {
        "hearsay" => {
            let mut c = EngineConfig::new(dir);
            // Our default: every write reaches the OS, fsync once a second in the background.
            c.sync_mode = SyncMode::default();
            // The same cache budget as fjall's below (not our default of 256 MiB).
            c.block_cache_bytes = 64 << 20;
            // Experiments only (the published table uses the default): `BENCH_BLOCK_BYTES`.
            if let Ok(b) = std::env::var("BENCH_BLOCK_BYTES") {
                c.sstable_block_size_bytes = b.parse().unwrap();
            }
            Box::new(Hearsay {
                e: Engine::open(c).unwrap(),
                ts: 0,
            })
        }
        _ => {
            let db = fjall::Database::builder(dir)
                .cache_size(64 << 20)
                .open()
                .unwrap();
            let ks = db
                .keyspace("default", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            Box::new(Fjall { db, ks })
        }
    };
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let user_bytes_per_op = (key_bytes(0).len() + VALUE_BYTES) as u64;

    if !prefilled {
        let t = Phase::start();
        for &i in &order {
            rng.fill(&mut value[..50]); // half random, half repeated: realistic compressibility
            kv.put(&key_bytes(i), &value);
        }
        t.record(&mut out, "fillrandom", n as f64);

        let t = Phase::start();
        for _ in 0..n {
            let i = rng.random_range(0..n);
            rng.fill(&mut value[..50]);
            kv.put(&key_bytes(i), &value);
        }
        t.record(&mut out, "overwrite", n as f64);

        kv.settle();
        let written = proc_io_wchar() - wchar0;
        let user = 2 * n * user_bytes_per_op;
        out.insert("write_amp".into(), written as f64 / user as f64);
        out.insert("tables".into(), kv.tables() as f64);
        out.insert(
            "space_amp".into(),
            dir_bytes(dir) as f64 / (n * user_bytes_per_op) as f64,
        );
        if keep.is_some() {
            std::fs::write(dir.join("filled"), b"").unwrap();
        }
    }

    let t = Phase::start();
    let mut hits = 0;
    for _ in 0..reads {
        hits += usize::from(kv.get(&key_bytes(rng.random_range(0..n))));
    }
    assert_eq!(hits, reads, "{engine}: readrandom lost keys");
    t.record(&mut out, "readrandom_hit", reads as f64);
    if tracing_phases() {
        eprintln!("after readrandom_hit: {}", kv.debug());
    }

    let t = Phase::start();
    for _ in 0..reads {
        // Interleaved with the real keys (`user<i>.` sorts right after `user<i>`), so an
        // ordered engine cannot answer from table key ranges alone and must consult its
        // bloom filters, as a hashed-token engine always does.
        let k = format!("user{:012}.", rng.random_range(0..n)).into_bytes();
        assert!(!kv.get(&k));
    }
    t.record(&mut out, "readrandom_miss", reads as f64);

    let scans = reads / 20;
    let t = Phase::start();
    for _ in 0..scans {
        let got = kv.scan(&key_bytes(rng.random_range(0..n)), SCAN_LEN);
        assert!(got > 0);
    }
    t.record(&mut out, "scan100", scans as f64);
    if tracing_phases() {
        eprintln!("after scan100: {}", kv.debug());
    }
    out.insert("peak_rss_mib".into(), peak_rss_kib() as f64 / 1024.0);
    drop(kv);
    for (k, v) in out {
        println!("RESULT {engine} {k} {v}");
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (m, v[0], v[v.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(&args[pos + 1]);
        return;
    }
    let rounds = env_usize("BENCH_ROUNDS", 2);
    let exe = std::env::current_exe().unwrap();
    let mut results: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            ["hearsay", "fjall"]
        } else {
            ["fjall", "hearsay"]
        };
        for engine in order {
            eprintln!("round {round}: {engine}");
            let out = Command::new(&exe)
                .args(["--child", engine])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{engine} child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["RESULT", e, metric, v] = parts[..] {
                    results
                        .entry((metric.to_string(), e.to_string()))
                        .or_default()
                        .push(v.parse().unwrap());
                }
            }
        }
    }
    let metrics = [
        ("fillrandom", "ops/s"),
        ("overwrite", "ops/s"),
        ("readrandom_hit", "ops/s"),
        ("readrandom_miss", "ops/s"),
        ("scan100", "scans/s"),
        ("fillrandom_per_cpu_s", "ops/CPU-s"),
        ("overwrite_per_cpu_s", "ops/CPU-s"),
        ("readrandom_hit_per_cpu_s", "ops/CPU-s"),
        ("readrandom_miss_per_cpu_s", "ops/CPU-s"),
        ("scan100_per_cpu_s", "scans/CPU-s"),
        ("write_amp", "x"),
        ("space_amp", "x"),
        ("peak_rss_mib", "MiB"),
        ("tables", "files"),
    ];
    println!(
        "| workload | unit | hearsay (median [min–max]) | fjall (median [min–max]) | hearsay / fjall |"
    );
    println!("|---|---|---|---|---|");
    for (m, unit) in metrics {
        let h = median(results[&(m.to_string(), "hearsay".to_string())].clone());
        let f = median(results[&(m.to_string(), "fjall".to_string())].clone());
        println!(
            "| {m} | {unit} | {:.2} [{:.2}–{:.2}] | {:.2} [{:.2}–{:.2}] | {:.2} |",
            h.0,
            h.1,
            h.2,
            f.0,
            f.1,
            f.2,
            h.0 / f.0
        );
    }
}
