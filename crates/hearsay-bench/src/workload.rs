//! Operation mixes: YCSB's core workloads and custom proportions.

use rand::Rng;

/// One benchmark operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `GET` an existing key and verify its checksum.
    Read,
    /// `SET` an existing key to a fresh value.
    Update,
    /// `SET` a new key (numbers past the loaded range).
    Insert,
    /// `GET`, verify, then `SET` the same key; timed from the GET to the SET's reply.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::ReadModifyWrite,
    ];

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in reports (YCSB's names, lower case).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::ReadModifyWrite => "read-modify-write",
        }
    }
}

/// A YCSB core workload letter, or custom proportions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Update heavy: 50% read, 50% update.
    A,
    /// Read mostly: 95% read, 5% update.
    B,
    /// Read only.
    C,
    /// Read-modify-write: 50% read, 50% read-modify-write.
    F,
    /// The `--*-proportion` options.
    Custom,
}

/// Operation proportions, each in `0..=1`, summing to a positive total (normalised on use).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct OpMix {
    /// Share of reads.
    pub read: f64,
    /// Share of updates.
    pub update: f64,
    /// Share of inserts.
    pub insert: f64,
    /// Share of read-modify-writes.
    pub read_modify_write: f64,
}

/// A mix that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    /// A proportion below zero or not a number.
    #[error("proportion for {0} must be a number >= 0")]
    Negative(&'static str),
    /// Nothing to do.
    #[error("the operation proportions sum to zero: give at least one positive proportion")]
    Empty,
}

impl OpMix {
    /// The proportions of a YCSB core workload; `None` for [`Workload::Custom`].
    pub fn for_workload(w: Workload) -> Option<OpMix> {
        let m = |read, update, rmw| OpMix {
            read,
            update,
            insert: 0.0,
            read_modify_write: rmw,
        };
        match w {
            Workload::A => Some(m(0.5, 0.5, 0.0)),
            Workload::B => Some(m(0.95, 0.05, 0.0)),
            Workload::C => Some(m(1.0, 0.0, 0.0)),
            Workload::F => Some(m(0.5, 0.0, 0.5)),
            Workload::Custom => None,
        }
    }

    /// Checks every share is finite and non-negative and that there is something to do.
    pub fn validate(&self) -> Result<(), MixError> {
        for (name, v) in [
            ("read", self.read),
            ("update", self.update),
            ("insert", self.insert),
            ("read-modify-write", self.read_modify_write),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(MixError::Negative(name));
            }
        }
        if self.total() <= 0.0 {
            return Err(MixError::Empty);
        }
        Ok(())
    }

    fn total(&self) -> f64 {
        self.read + self.update + self.insert + self.read_modify_write
    }

    /// A chooser with cumulative thresholds precomputed, so the hot path is one random draw
    /// and at most three comparisons.
    pub fn chooser(&self) -> OpChooser {
        let t = self.total();
        let c1 = self.read / t;
        let c2 = c1 + self.update / t;
        let c3 = c2 + self.insert / t;
        OpChooser {
            cumulative: [c1, c2, c3],
        }
    }
}

/// Draws operations in the proportions of an [`OpMix`].
#[derive(Clone, Copy, Debug)]
pub struct OpChooser {
    cumulative: [f64; 3],
}

impl OpChooser {
    /// One operation.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> OpKind {
        let u: f64 = rng.random();
        if u < self.cumulative[0] {
            OpKind::Read
        } else if u < self.cumulative[1] {
            OpKind::Update
        } else if u < self.cumulative[2] {
            OpKind::Insert
        } else {
            OpKind::ReadModifyWrite
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn shares(mix: OpMix, seed: u64) -> [f64; 4] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let chooser = mix.chooser();
        let mut counts = [0u64; 4];
        const SAMPLES: u64 = 200_000;
        for _ in 0..SAMPLES {
            counts[chooser.next(&mut rng).index()] += 1;
        }
        counts.map(|c| c as f64 / SAMPLES as f64)
    }

    #[test]
    fn core_workload_proportions() {
        let seed = 0xA11CE;
        eprintln!("seed {seed}");
        // [read, update, insert, rmw]
        let cases = [
            (Workload::A, [0.5, 0.5, 0.0, 0.0]),
            (Workload::B, [0.95, 0.05, 0.0, 0.0]),
            (Workload::C, [1.0, 0.0, 0.0, 0.0]),
            (Workload::F, [0.5, 0.0, 0.0, 0.5]),
        ];
        for (w, expected) in cases {
            let got = shares(OpMix::for_workload(w).expect("core"), seed);
            for i in 0..4 {
                assert!(
                    (got[i] - expected[i]).abs() < 0.005,
                    "{w:?} kind {i}: {got:?} vs {expected:?} (seed {seed})"
                );
                if expected[i] == 0.0 {
                    assert_eq!(got[i], 0.0, "{w:?} drew a kind it must never draw");
                }
            }
        }
        assert_eq!(OpMix::for_workload(Workload::Custom), None);
    }

    #[test]
    fn custom_proportions_are_normalised_and_validated() {
        let mix = OpMix {
            read: 2.0,
            update: 1.0,
            insert: 1.0,
            read_modify_write: 0.0,
        };
        mix.validate().expect("valid");
        let got = shares(mix, 7);
        for (g, e) in got.iter().zip([0.5, 0.25, 0.25, 0.0]) {
            assert!((g - e).abs() < 0.005, "{got:?}");
        }
        let empty = OpMix {
            read: 0.0,
            update: 0.0,
            insert: 0.0,
            read_modify_write: 0.0,
        };
        assert_eq!(empty.validate(), Err(MixError::Empty));
        let neg = OpMix { read: -1.0, ..mix };
        assert_eq!(neg.validate(), Err(MixError::Negative("read")));
        let nan = OpMix {
            update: f64::NAN,
            ..mix
        };
        assert_eq!(nan.validate(), Err(MixError::Negative("update")));
    }
}
