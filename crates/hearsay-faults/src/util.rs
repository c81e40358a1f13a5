//! Small helpers: polling with a deadline, file tails, running shell tools.

use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Poll period of every wait on the cluster: short against the nodes' 200 ms gossip round
/// (so a wait measures the cluster, not the poller) and cheap (one loopback request).
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `f` every [`POLL_EVERY`] until it returns `Ok`, or fails after `timeout` with the
/// last `Err` (what was seen instead).
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) => {
                if start.elapsed() > timeout {
                    bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The last `lines` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion; fails with its stderr if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and ignores its outcome (cleanup of things that may already be gone).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

/// Whether this process runs as root (namespaces, nftables, tmpfs mounts need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Resident set size of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex string, or `None` if it is not hex of whole bytes.
pub fn unhex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(b"w:0\x00"), "773a3000");
        assert_eq!(unhex("773a3000").unwrap(), b"w:0\x00");
        assert_eq!(unhex("7"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn this_process_is_alive_and_has_a_resident_size() {
        let me = std::process::id();
        assert!(pid_alive(me));
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(!pid_alive(u32::MAX - 1));
    }
}
