//! Fault primitives. Each one that changes the cluster records itself in the history
//! (start and end), so checkers can tell quiet windows from faulty ones.
//!
//! | fault | how |
//! |---|---|
//! | partitions | nftables drop rules inside the namespaces ([`Partition`]); heal flushes them |
//! | crash | `kill -9`, restart on the same data directory |
//! | pause | `SIGSTOP` for a while, then `SIGCONT` |
//! | clock skew | the node runs under libfaketime (wall clock only); [`set_skew`] rewrites its offset file |
//! | disk full | the data directory on a small tmpfs, filled by a filler file until `ENOSPC` ([`fill_disk`]) |
//! | fsync EIO | an `LD_PRELOAD` shim built here with gcc: `fsync`/`fdatasync`/`sync_file_range`/`syncfs` fail with `EIO` while a flag file exists ([`EioShim`]) |
//! | bit flips | random bits of a stopped node's SSTables or commit-log segments ([`flip_bits`]) |

use crate::history::History;
use crate::node::Cluster;
use crate::topology::Cut;
use anyhow::{Context, bail};
use rand::Rng;
use rand::seq::SliceRandom;
use std::io::Write;
use std::path::{Path, PathBuf};

/// libfaketime's multi-threaded preload library (Debian's `libfaketime` package).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Bytes written per step while filling a disk: large enough to fill a 64 MiB tmpfs in a
/// few dozen writes, small enough that the space left at ENOSPC is below one step.
const FILL_CHUNK_BYTES: usize = 1 << 20;
/// Most bytes a filler writes: a bound in case the file system never says ENOSPC (then the
/// directory was not on the small tmpfs the scenario meant).
const MAX_FILL_BYTES: u64 = 8 << 30;

/// A kind of network partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    /// One node cut off from all others (both directions).
    Isolate,
    /// Two nodes on one side, the rest on the other.
    Split,
    /// Overlapping majorities: one bridge node sees both sides, the sides do not see each
    /// other.
    Bridge,
    /// A's packets to B are dropped, B's to A are not.
    OneWay,
}

impl PartitionKind {
    pub const ALL: [PartitionKind; 4] = [
        PartitionKind::Isolate,
        PartitionKind::Split,
        PartitionKind::Bridge,
        PartitionKind::OneWay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartitionKind::Isolate => "partition-isolate",
            PartitionKind::Split => "partition-split",
            PartitionKind::Bridge => "partition-bridge",
            PartitionKind::OneWay => "partition-oneway",
        }
    }
}

/// A partition as links to cut, with a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub kind: PartitionKind,
    pub cuts: Vec<Cut>,
    pub detail: String,
    /// The nodes on the minority side (or the cut-off node, or A of a one-way cut).
    pub nodes: Vec<usize>,
}

/// Both directions between every node of `a` and every node of `b`.
fn cut_between(a: &[usize], b: &[usize]) -> Vec<Cut> {
    let mut cuts = Vec::new();
    for &x in a {
        for &y in b {
            cuts.push(Cut { from: x, to: y });
            cuts.push(Cut { from: y, to: x });
        }
    }
    cuts.sort();
    cuts
}

fn list(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|n| format!("n{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Partition {
    /// Node `x` cut off from all other `n - 1` nodes.
    pub fn isolate(x: usize, n: usize) -> Partition {
        let others: Vec<usize> = (0..n).filter(|i| *i != x).collect();
        Partition {
            kind: PartitionKind::Isolate,
            cuts: cut_between(&[x], &others),
            detail: format!("n{x} | {}", list(&others)),
            nodes: vec![x],
        }
    }

    /// `a` and `b` cannot reach each other.
    pub fn split(a: &[usize], b: &[usize]) -> Partition {
        Partition {
            kind: PartitionKind::Split,
            cuts: cut_between(a, b),
            detail: format!("{} | {}", list(a), list(b)),
            nodes: a.to_vec(),
        }
    }

    /// A random partition of `kind` over `n` nodes (`n ≥ 3` for the bridge).
    pub fn random(kind: PartitionKind, n: usize, rng: &mut impl Rng) -> Partition {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        match kind {
            PartitionKind::Isolate => Partition::isolate(order[0], n),
            PartitionKind::Split => {
                let k = (n / 2).max(1);
                let (a, b) = order.split_at(k);
                let (mut a, mut b) = (a.to_vec(), b.to_vec());
                a.sort();
                b.sort();
                Partition::split(&a, &b)
            }
            PartitionKind::Bridge => {
                let bridge = order[0];
                let side = (n - 1) / 2;
                let mut a = order[1..1 + side].to_vec();
                let mut b = order[1 + side..].to_vec();
                a.sort();
                b.sort();
                Partition {
                    kind,
                    cuts: cut_between(&a, &b),
                    detail: format!("{} | n{bridge} (sees both) | {}", list(&a), list(&b)),
                    nodes: vec![bridge],
                }
            }
            PartitionKind::OneWay => {
                let (a, b) = (order[0], order[1]);
                Partition {
                    kind,
                    cuts: vec![Cut { from: a, to: b }],
                    detail: format!("n{a} -> n{b} dropped (n{b} -> n{a} delivered)"),
                    nodes: vec![a, b],
                }
            }
        }
    }

    /// Installs the partition (replacing any other) and records it; returns the fault id.
    pub fn apply(&self, cluster: &Cluster, history: &History) -> anyhow::Result<u64> {
        cluster.topo.apply_cuts(&self.cuts)?;
        Ok(history.fault_start(self.kind.name(), &self.detail, &self.nodes))
    }
}

/// Removes every partition rule and ends the partition faults in the history.
pub fn heal(cluster: &Cluster, history: &History, ids: &[u64]) -> anyhow::Result<()> {
    cluster.topo.heal()?;
    for id in ids {
        history.fault_end(*id);
    }
    Ok(())
}

/// The environment that starts a node under libfaketime with its wall clock offset by
/// what `file` says (seconds, e.g. `+2.000`); its monotonic clock stays real.
///
/// `FAKETIME_CACHE_DURATION=1`: libfaketime re-reads the file at most once a second.
/// `FAKETIME_NO_CACHE=1` would re-read it on *every* clock call (an open/read/close per
/// `SystemTime::now`, which the node calls per request), and a skew that takes effect
/// within a second is precise enough for ±2 s steps. `NO_FAKE_STAT=1`: file timestamps
/// stay real (the engine does not care, the harness's logs do).
pub fn faketime_env(file: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        (
            "FAKETIME_TIMESTAMP_FILE".into(),
            file.to_string_lossy().into_owned(),
        ),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("NO_FAKE_STAT".into(), "1".into()),
    ]
}

/// How long a skew change may take to reach the node (libfaketime's cache duration).
pub const SKEW_TAKES_EFFECT: std::time::Duration = std::time::Duration::from_millis(1100);

/// Sets a libfaketime offset file to `offset_s` seconds.
pub fn set_skew(file: &Path, offset_s: f64) -> anyhow::Result<()> {
    // Write then rename: libfaketime must never read a half-written file.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset_s:+.3}\n"))?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Whether libfaketime is installed.
pub fn faketime_available() -> bool {
    Path::new(LIBFAKETIME).exists()
}

/// The fsync-EIO shim: a shared library that makes `fsync`, `fdatasync`,
/// `sync_file_range` and `syncfs` fail with `EIO` while the file named by
/// `HSF_EIO_FLAG` exists, and otherwise calls the real function (`dlsym(RTLD_NEXT)`).
/// Built with gcc at run time, so the harness needs no checked-in binary.
#[derive(Clone, Debug)]
pub struct EioShim {
    pub library: PathBuf,
}

const EIO_SHIM_C: &str = r#"
/* hearsay-faults fsync EIO shim: durability calls fail with EIO while $HSF_EIO_FLAG exists. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int eio_on(void) {
    const char *flag = getenv("HSF_EIO_FLAG");
    return flag != NULL && access(flag, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (eio_on()) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (eio_on()) { errno = EIO; return -1; }
    return real(fd);
}

int syncfs(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
    if (eio_on()) { errno = EIO; return -1; }
    return real(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    static int (*real)(int, off64_t, off64_t, unsigned int);
    if (!real) real = (int (*)(int, off64_t, off64_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    if (eio_on()) { errno = EIO; return -1; }
    return real(fd, offset, nbytes, flags);
}
"#;

impl EioShim {
    /// Writes the C source into `dir` and builds `libhsf_eio.so` with gcc.
    pub fn build(dir: &Path) -> anyhow::Result<EioShim> {
        std::fs::create_dir_all(dir)?;
        let src = dir.join("hsf_eio.c");
        let library = dir.join("libhsf_eio.so");
        std::fs::write(&src, EIO_SHIM_C)?;
        let out = std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&library)
            .arg(&src)
            .arg("-ldl")
            .output()
            .context("cannot run gcc (needed to build the fsync EIO shim)")?;
        if !out.status.success() {
            bail!(
                "building the EIO shim failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(EioShim { library })
    }

    /// The environment of a node whose fsyncs fail while `flag` exists.
    pub fn env(&self, flag: &Path) -> Vec<(String, String)> {
        vec![
            (
                "LD_PRELOAD".into(),
                self.library.to_string_lossy().into_owned(),
            ),
            ("HSF_EIO_FLAG".into(), flag.to_string_lossy().into_owned()),
        ]
    }
}

/// Switches a node's fsync EIO on (creates the flag file).
pub fn eio_on(flag: &Path) -> anyhow::Result<()> {
    std::fs::write(flag, b"on\n").with_context(|| format!("creating {}", flag.display()))
}

/// Switches it off.
pub fn eio_off(flag: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(flag) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Fills the file system holding `dir` with a filler file until it answers ENOSPC;
/// returns the filler's path and size.
pub fn fill_disk(dir: &Path) -> anyhow::Result<(PathBuf, u64)> {
    fill_disk_with(dir, "hsf-filler")
}

/// [`fill_disk`] with a filler file named `name` (a second filler tops a disk up again
/// after the node freed some of it).
pub fn fill_disk_with(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, u64)> {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0xA5u8; FILL_CHUNK_BYTES];
    let mut written = 0u64;
    // Whole chunks, then smaller and smaller pieces, so the disk is full to the byte.
    let mut size = FILL_CHUNK_BYTES;
    while size > 0 && written < MAX_FILL_BYTES {
        match f.write(&chunk[..size]) {
            Ok(0) => size /= 2,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => size /= 2,
            Err(e) => return Err(e).context("writing the filler"),
        }
    }
    if written >= MAX_FILL_BYTES {
        bail!(
            "{} never filled up after {MAX_FILL_BYTES} bytes: not on a small tmpfs?",
            dir.display()
        );
    }
    Ok((path, written))
}

/// ENOSPC's errno on Linux.
fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// Flips `bits` random bits in the files under `dir` (recursively) whose names end with
/// `suffix` (`.sst`, `.log`), at offsets uniform over their bytes, avoiding each file's last
/// `keep_tail` bytes (e.g. an SSTable's footer, to hit data blocks). Returns
/// `(file, offset, bit)` per flip.
pub fn flip_bits(
    dir: &Path,
    suffix: &str,
    bits: usize,
    keep_tail: u64,
    rng: &mut impl Rng,
) -> anyhow::Result<Vec<(PathBuf, u64, u8)>> {
    let mut files = Vec::new();
    collect_files(dir, suffix, &mut files)?;
    files.retain(|(_, len)| *len > keep_tail);
    files.sort();
    if files.is_empty() {
        bail!("no *{suffix} files under {}", dir.display());
    }
    // Offsets uniform over all the files' bytes, so big tables (the data) get most flips
    // and a small one (the `system` keyspace's) its share.
    let total: u64 = files.iter().map(|(_, len)| len - keep_tail).sum();
    let mut flips = Vec::new();
    for _ in 0..bits {
        let mut at = rng.random_range(0..total);
        let (path, len) = files
            .iter()
            .find(|(_, len)| {
                if at < len - keep_tail {
                    true
                } else {
                    at -= len - keep_tail;
                    false
                }
            })
            .expect("offset within the total");
        let offset = at;
        debug_assert!(offset < len - keep_tail);
        let bit = rng.random_range(0..8u8);
        let mut data = std::fs::read(path)?;
        data[offset as usize] ^= 1 << bit;
        std::fs::write(path, &data)?;
        flips.push((path.clone(), offset, bit));
    }
    Ok(flips)
}

fn collect_files(dir: &Path, suffix: &str, out: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            collect_files(&path, suffix, out)?;
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push((path, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_the_links_they_say() {
        let p = Partition::isolate(2, 4);
        assert_eq!(p.cuts.len(), 6);
        assert!(p.cuts.iter().all(|c| c.from == 2 || c.to == 2));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for kind in PartitionKind::ALL {
            let p = Partition::random(kind, 5, &mut rng);
            assert!(!p.cuts.is_empty(), "{kind:?}");
            match kind {
                // 2 × 3 node pairs, both directions.
                PartitionKind::Split => assert_eq!(p.cuts.len(), 12),
                // 2 × 2 pairs; the bridge node is in no cut.
                PartitionKind::Bridge => {
                    assert_eq!(p.cuts.len(), 8);
                    let b = p.nodes[0];
                    assert!(p.cuts.iter().all(|c| c.from != b && c.to != b));
                }
                PartitionKind::OneWay => {
                    assert_eq!(
                        p.cuts,
                        vec![Cut {
                            from: p.nodes[0],
                            to: p.nodes[1]
                        }]
                    );
                }
                PartitionKind::Isolate => assert_eq!(p.cuts.len(), 8),
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_partitions() {
        let a: Vec<Partition> = {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            (0..8)
                .map(|i| Partition::random(PartitionKind::ALL[i % 4], 5, &mut rng))
                .collect()
        };
        let b: Vec<Partition> = {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            (0..8)
                .map(|i| Partition::random(PartitionKind::ALL[i % 4], 5, &mut rng))
                .collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn bit_flips_change_exactly_the_bits_reported() {
        let dir = std::env::temp_dir().join(format!("hsf-flip-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ks-1")).unwrap();
        let f = dir.join("ks-1/0000000000000001.sst");
        std::fs::write(&f, vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("other.txt"), vec![0u8; 1000]).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let flips = flip_bits(&dir, ".sst", 3, 64, &mut rng).unwrap();
        let data = std::fs::read(&f).unwrap();
        let ones: u32 = data.iter().map(|b| b.count_ones()).sum();
        // Three flips; two could hit the same bit and cancel, never more than three.
        assert!(ones <= 3 && ones % 2 == 1, "{ones}");
        assert!(flips.iter().all(|(p, off, _)| p == &f && *off < 1000 - 64));
        assert!(
            std::fs::read(dir.join("other.txt"))
                .unwrap()
                .iter()
                .all(|b| *b == 0)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_eio_shim_fails_fsync_only_while_its_flag_exists() {
        let dir = std::env::temp_dir().join(format!("hsf-eio-{}", std::process::id()));
        let shim = match EioShim::build(&dir) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: {e:#}");
                return;
            }
        };
        let flag = dir.join("flag");
        let file = dir.join("data");
        // `sync` (coreutils) calls fsync on a file it is given.
        let run = || {
            std::process::Command::new("sync")
                .arg(&file)
                .envs(shim.env(&flag))
                .output()
                .unwrap()
        };
        std::fs::write(&file, b"x").unwrap();
        assert!(run().status.success());
        eio_on(&flag).unwrap();
        let out = run();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
            "{out:?}"
        );
        eio_off(&flag).unwrap();
        assert!(run().status.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
