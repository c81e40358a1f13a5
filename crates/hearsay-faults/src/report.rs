//! A scenario's verdict: its seed, counts, each checker's result, and PASS/FAIL with the
//! reasons.

use crate::checkers::{Check, Counts};
use std::path::PathBuf;
use std::time::Duration;

/// The outcome of one scenario run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub run_dir: PathBuf,
    pub counts: Counts,
    /// Scenario-specific figures, one line each (restart times, probe counts, ...).
    pub lines: Vec<String>,
    pub checks: Vec<Check>,
    /// Harness-level failures (the cluster did not form, a node did not restart, ...).
    pub errors: Vec<String>,
    /// Set when the scenario could not run here (e.g. it needs root).
    pub skipped: Option<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(scenario: &str, seed: u64, run_dir: PathBuf) -> Report {
        Report {
            scenario: scenario.to_string(),
            seed,
            run_dir,
            ..Report::default()
        }
    }

    pub fn passed(&self) -> bool {
        self.skipped.is_none() && self.errors.is_empty() && self.checks.iter().all(Check::passed)
    }

    /// Why it failed: the failing checks with their counts, and harness errors.
    pub fn reasons(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| format!("{} {}", c.name, c.violations))
            .collect();
        r.extend(self.errors.iter().map(|e| {
            let first = e.lines().next().unwrap_or("");
            format!("error: {first}")
        }));
        r
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "--- {} (seed {}) ---\nrun dir: {}\n",
            self.scenario,
            self.seed,
            self.run_dir.display()
        ));
        if let Some(why) = &self.skipped {
            s.push_str(&format!("SKIP {}: {why}\n", self.scenario));
            return s;
        }
        let c = &self.counts;
        for kind in ["write", "read"] {
            s.push_str(&format!(
                "{kind}s: ok {}, fail {}, unknown {}\n",
                c.get(kind, "ok"),
                c.get(kind, "fail"),
                c.get(kind, "unknown")
            ));
        }
        let faults: Vec<String> = c.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!(
            "faults applied: {}\n",
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            }
        ));
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        for check in &self.checks {
            let verdict = match (&check.skipped, check.passed()) {
                (Some(_), _) => "skip",
                (None, true) => "ok",
                (None, false) => "FAIL",
            };
            s.push_str(&format!(
                "check {:<28} {:>6} {verdict:<4} {}\n",
                check.name, check.violations, check.summary
            ));
            if let Some(why) = &check.skipped {
                s.push_str(&format!("    skipped: {why}\n"));
            }
            for d in &check.details {
                s.push_str(&format!("    {d}\n"));
            }
            if check.violations > check.details.len() {
                s.push_str(&format!(
                    "    ... and {} more\n",
                    check.violations - check.details.len()
                ));
            }
        }
        for e in &self.errors {
            s.push_str(&format!("ERROR: {e}\n"));
        }
        if self.passed() {
            s.push_str(&format!(
                "PASS {} (seed {}, {:.0} s)\n",
                self.scenario,
                self.seed,
                self.elapsed.as_secs_f64()
            ));
        } else {
            s.push_str(&format!(
                "FAIL {} (seed {}, {:.0} s): {}\n",
                self.scenario,
                self.seed,
                self.elapsed.as_secs_f64(),
                self.reasons().join(", ")
            ));
        }
        s
    }
}

/// The closing lines of a suite: skipped scenarios, then `N passed, N failed`.
pub fn suite_summary(reports: &[Report]) -> String {
    let passed = reports.iter().filter(|r| r.passed()).count();
    let skipped: Vec<&Report> = reports.iter().filter(|r| r.skipped.is_some()).collect();
    let failed = reports.len() - passed - skipped.len();
    let mut s = String::new();
    for r in reports {
        let verdict = if r.skipped.is_some() {
            "SKIP"
        } else if r.passed() {
            "PASS"
        } else {
            "FAIL"
        };
        s.push_str(&format!(
            "{verdict} {:<24} seed {:<20} {}\n",
            r.scenario,
            r.seed,
            if r.passed() || r.skipped.is_some() {
                r.skipped.clone().unwrap_or_default()
            } else {
                r.reasons().join(", ")
            }
        ));
    }
    if !skipped.is_empty() {
        s.push_str(&format!("{} skipped\n", skipped.len()));
    }
    s.push_str(&format!("{passed} passed, {failed} failed\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_check_fails_the_report_and_is_named() {
        let mut r = Report::new("x", 7, PathBuf::from("/tmp/x"));
        let mut c = Check::new("stale");
        c.violation("a stale read".into());
        r.checks.push(Check::new("lost"));
        r.checks.push(c);
        assert!(!r.passed());
        assert_eq!(r.reasons(), vec!["stale 1"]);
        let text = r.render();
        assert!(text.contains("FAIL x (seed 7"), "{text}");
        assert!(text.contains("a stale read"), "{text}");
        let ok = Report::new("y", 8, PathBuf::new());
        let s = suite_summary(&[r, ok]);
        assert!(s.ends_with("1 passed, 1 failed\n"), "{s}");
    }
}
