//! When pruning-during-training methods prune: the cubic sparsity schedule
//! of Zhu & Gupta (2017) and the grid of pruning steps on it.
//!
//! Time is counted in optimizer iterations from the start of training. The
//! schedule rises from 0 at `t0` to the target `S` at `t1`:
//! `s(t) = S (1 - (1 - (t - t0) / (t1 - t0))^3)`, 0 before `t0` and `S`
//! after `t1`. Pruning steps fall every `every` iterations after `t0`, and
//! one always falls on `t1`, so the last step reaches `S` exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How often a method prunes: every so many epochs (fractions allowed) or
/// iterations. Written `2`, `0.5` (epochs) or `100it` (iterations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PruneEvery {
    /// Every this many epochs.
    Epochs(f64),
    /// Every this many iterations.
    Iterations(u64),
}

impl PruneEvery {
    /// The interval in iterations (at least 1) for epochs of `per_epoch`
    /// iterations.
    pub fn iterations(self, per_epoch: u64) -> u64 {
        match self {
            PruneEvery::Epochs(e) => ((e * per_epoch as f64).round() as u64).max(1),
            PruneEvery::Iterations(n) => n.max(1),
        }
    }
}

impl Default for PruneEvery {
    fn default() -> Self {
        PruneEvery::Epochs(1.0)
    }
}

impl FromStr for PruneEvery {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Config(format!(
                "--prune-every {s:?}: expected a positive number of epochs (2, 0.5) or of iterations (100it)"
            ))
        };
        if let Some(n) = s.strip_suffix("it") {
            let n: u64 = n.trim().parse().map_err(|_| bad())?;
            return if n == 0 {
                Err(bad())
            } else {
                Ok(PruneEvery::Iterations(n))
            };
        }
        let e: f64 = s.trim().parse().map_err(|_| bad())?;
        if !e.is_finite() || e <= 0.0 {
            return Err(bad());
        }
        Ok(PruneEvery::Epochs(e))
    }
}

impl fmt::Display for PruneEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneEvery::Epochs(e) => write!(f, "{e}"),
            PruneEvery::Iterations(n) => write!(f, "{n}it"),
        }
    }
}

impl Serialize for PruneEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PruneEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A run's training time line and its sparsity schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Iterations of training in all.
    pub total: u64,
    /// Iterations per epoch.
    pub per_epoch: u64,
    /// Target sparsity `S` over the prunable weights.
    pub sparsity: f64,
    /// Iteration where pruning starts (`t0`; sparsity 0 there).
    pub t0: u64,
    /// Iteration where the target is reached (`t1`).
    pub t1: u64,
    /// Iterations between pruning steps.
    pub every: u64,
}

impl Timeline {
    /// The time line of `epochs` epochs of `per_epoch` iterations, pruning
    /// between the fractions `start` and `end` of training.
    pub fn new(
        epochs: f64,
        per_epoch: u64,
        sparsity: f64,
        start: f64,
        end: f64,
        every: PruneEvery,
    ) -> Timeline {
        let total = (epochs * per_epoch as f64).round() as u64;
        let t0 = (start * total as f64).round() as u64;
        let t1 = ((end * total as f64).round() as u64).clamp(t0, total);
        Timeline {
            total,
            per_epoch,
            sparsity,
            t0,
            t1,
            every: every.iterations(per_epoch),
        }
    }

    /// `s(t)`, the cubic schedule.
    pub fn target(&self, t: u64) -> f64 {
        cubic(self.sparsity, self.t0, self.t1, t)
    }

    /// The iterations at which a pruning step happens: `t0 + k * every`
    /// for `k >= 1` below `t1`, then `t1`.
    pub fn prune_points(&self) -> Vec<u64> {
        let mut points: Vec<u64> = (1..)
            .map(|k| self.t0 + k * self.every)
            .take_while(|&t| t < self.t1)
            .collect();
        points.push(self.t1);
        points
    }

    /// Epochs done after `it` iterations.
    pub fn epochs_at(&self, it: u64) -> f64 {
        it as f64 / self.per_epoch.max(1) as f64
    }
}

/// `S (1 - (1 - (t - t0) / (t1 - t0))^3)`, 0 up to `t0` and `S` from `t1`.
pub fn cubic(s: f64, t0: u64, t1: u64, t: u64) -> f64 {
    if t >= t1 {
        return s;
    }
    if t <= t0 {
        return 0.0;
    }
    let x = (t - t0) as f64 / (t1 - t0) as f64;
    s * (1.0 - (1.0 - x).powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_rises_from_zero_to_the_target() {
        assert_eq!(cubic(0.9, 10, 110, 0), 0.0);
        assert_eq!(cubic(0.9, 10, 110, 10), 0.0);
        assert_eq!(cubic(0.9, 10, 110, 110), 0.9);
        assert_eq!(cubic(0.9, 10, 110, 500), 0.9);
        // Halfway: 1 - 0.5^3 = 0.875 of the target.
        assert!((cubic(0.8, 10, 110, 60) - 0.7).abs() < 1e-12);
        let mut last = 0.0;
        for t in 0..=120 {
            let s = cubic(0.9, 10, 110, t);
            assert!(s >= last, "not monotone at {t}");
            last = s;
        }
    }

    #[test]
    fn defaults_and_the_pruning_grid() {
        // 10 epochs of 100 iterations, prune every epoch from 10% to 75%.
        let t = Timeline::new(10.0, 100, 0.9, 0.1, 0.75, PruneEvery::Epochs(1.0));
        assert_eq!((t.total, t.t0, t.t1, t.every), (1000, 100, 750, 100));
        assert_eq!(t.prune_points(), vec![200, 300, 400, 500, 600, 700, 750]);
        assert_eq!(t.target(750), 0.9);
        let t = Timeline::new(2.0, 50, 0.9, 0.1, 0.75, "30it".parse().unwrap());
        assert_eq!(t.prune_points(), vec![40, 70, 75]);
    }

    #[test]
    fn prune_every_parses_epochs_and_iterations() {
        assert_eq!("2".parse::<PruneEvery>().unwrap(), PruneEvery::Epochs(2.0));
        assert_eq!(
            "100it".parse::<PruneEvery>().unwrap(),
            PruneEvery::Iterations(100)
        );
        assert_eq!(PruneEvery::Epochs(0.5).iterations(30), 15);
        for bad in ["0", "-1", "0it", "x", "1.5it", "nan"] {
            assert!(bad.parse::<PruneEvery>().is_err(), "{bad}");
        }
        assert_eq!(PruneEvery::Iterations(7).to_string(), "7it");
    }
}
