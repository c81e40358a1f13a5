//! CPU time of this process (and optionally of server processes), from `/proc/<pid>/stat`, so
//! reports can give per-core rates without `unsafe` getrusage calls.

/// Linux reports `utime`/`stime` in `/proc` in USER_HZ ticks, which is 100 on every
/// architecture Linux supports for userspace ABI purposes.
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds used so far by process `pid` (`None` = this process), all
/// threads included. `None` where `/proc` is unavailable or the process is gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Parses utime + stime out of a `/proc/<pid>/stat` line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<f64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_name() {
        let line = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_cpu_time_advances() {
        let Some(before) = cpu_seconds(None) else {
            eprintln!("no /proc: skipping");
            return;
        };
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while cpu_seconds(None).unwrap_or(before) < before + 0.02 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
            assert!(start.elapsed().as_secs() < 10, "CPU time never advanced");
        }
        std::hint::black_box(x);
    }
}
