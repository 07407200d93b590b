//! Learning-rate schedules, evaluated per iteration.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The peak rate throughout.
    Constant,
    /// The peak rate, divided by 10 at 50% and again at 75% of training.
    Step,
    /// Linear decay from the peak to 0.
    Linear,
    /// Cosine decay from the peak to 0.
    Cosine,
}

/// A learning-rate schedule over `total` iterations: a linear warm-up from 0
/// over the first `warmup` iterations, then `kind` from `peak` down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// What follows the warm-up.
    pub kind: ScheduleKind,
    /// The rate at the end of the warm-up.
    pub peak: f64,
    /// Iterations in all.
    pub total: u64,
    /// Warm-up iterations (0 for none).
    pub warmup: u64,
}

impl Schedule {
    /// The learning rate of iteration `it` (0-based).
    pub fn lr(&self, it: u64) -> f64 {
        if it < self.warmup {
            return self.peak * (it + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((it - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Step => {
                let done = it as f64 / self.total.max(1) as f64;
                self.peak
                    * if done >= 0.75 {
                        0.01
                    } else if done >= 0.5 {
                        0.1
                    } else {
                        1.0
                    }
            }
            ScheduleKind::Linear => self.peak * (1.0 - t),
            ScheduleKind::Cosine => self.peak * 0.5 * (1.0 + (PI * t).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: ScheduleKind, warmup: u64) -> Schedule {
        Schedule {
            kind,
            peak: 0.1,
            total: 100,
            warmup,
        }
    }

    #[test]
    fn warmup_rises_to_the_peak() {
        let sch = s(ScheduleKind::Cosine, 10);
        assert!((sch.lr(0) - 0.01).abs() < 1e-12);
        assert!((sch.lr(9) - 0.1).abs() < 1e-12);
        assert!((sch.lr(10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn shapes_after_warmup() {
        assert_eq!(s(ScheduleKind::Constant, 0).lr(99), 0.1);
        assert!((s(ScheduleKind::Step, 0).lr(49) - 0.1).abs() < 1e-12);
        assert!((s(ScheduleKind::Step, 0).lr(50) - 0.01).abs() < 1e-12);
        assert!((s(ScheduleKind::Step, 0).lr(75) - 0.001).abs() < 1e-12);
        assert!((s(ScheduleKind::Linear, 0).lr(50) - 0.05).abs() < 1e-12);
        assert!((s(ScheduleKind::Cosine, 0).lr(50) - 0.05).abs() < 1e-12);
        assert!(s(ScheduleKind::Cosine, 0).lr(99) < 1e-3);
    }

    #[test]
    fn names_parse() {
        use clap::ValueEnum;
        assert_eq!(
            ScheduleKind::from_str("cosine", false).unwrap(),
            ScheduleKind::Cosine
        );
        assert!(ScheduleKind::from_str("exp", false).is_err());
    }
}
