//! `hearsay-faults`: the fault-injection harness (issue #18's foundation).
//!
//! It runs N real `hearsay server` processes, injects faults while client workers run a
//! workload, records every operation in a history (invoke / ok / fail / unknown, with
//! monotonic times and the node it went through), and checks the promises P1–P6 of
//! `TESTING.md` over that history and over each replica's own data.
//!
//! This is a **test tool, never linked into the product**: nothing in the node depends on
//! it, which is why it uses `anyhow` for errors and shells out to `ip`, `nft`, `mount` and
//! `gcc` instead of carrying typed wrappers for them. It does depend on `hearsay-ring` (a
//! pure crate) for the partitioner, so it places keys exactly as the nodes do.
//!
//! Layers, bottom up:
//! - [`topology`]: where nodes live. As root, a Linux bridge and one network namespace per
//!   node on a per-run /24 (partitions are nftables rules inside the namespaces); otherwise
//!   loopback addresses, without network faults.
//! - [`node`]: one `hearsay server` process per node (config, start, readiness, kill -9,
//!   pause, restart on the same data directory) and its admin HTTP API.
//! - [`faults`]: the fault primitives (partitions, crashes, pauses, clock skew, disk full,
//!   fsync EIO, bit flips), each recorded in the history with start and end times.
//! - [`history`] and [`workload`]: operations as they happened; unique-key writers and
//!   single-writer registers over the `redis` crate.
//! - [`replicas`]: each node's own cells (`/v1/local/scan`), never reads at ALL (those
//!   repair what they compare).
//! - [`checkers`]: pure functions over a history and replica snapshots: lost writes, stale
//!   and non-monotonic QUORUM reads, phantom or corrupt values, convergence, the guards
//!   against vacuous passes.
//! - [`scenarios`] and [`report`]: the scenarios of `TESTING.md` (B1–B6 and the restart
//!   regressions) and their PASS/FAIL output.
//!
//! Every bound is a named constant with its unit and reason; every wait polls with a
//! deadline. All randomness of a run comes from one seeded RNG, printed at the start, so a
//! run replays its fault schedule (the cluster's own timing does not replay).

pub mod checkers;
pub mod faults;
pub mod health;
pub mod history;
pub mod http;
pub mod node;
pub mod replicas;
pub mod report;
pub mod scenarios;
pub mod topology;
pub mod util;
pub mod workload;
