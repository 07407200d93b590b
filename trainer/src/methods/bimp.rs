//! BIMP, budgeted iterative magnitude pruning: IMP inside a fixed budget of
//! epochs. The model trains densely until `--prune-start` of the budget;
//! the rest is split evenly over `--phases` prune-retrain phases (the
//! iterations that do not divide evenly go to the last). Phase `p` prunes
//! by global magnitude to `1 - (1 - q)^p` with `q = 1 - (1 - S)^(1/k)` and
//! retrains with ALLR (adaptive learning-rate restarts), the mask fixed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::lr::{allr_peak, candidate_schedule, RetrainKind};
use crate::pipeline::segments::{Context, PruningMethod, Segment};
use crate::pipeline::timeline::Timeline;

/// The name in the registry.
pub const NAME: &str = "bimp";
/// What the method is.
pub const ABOUT: &str = "budgeted IMP: prune-retrain phases inside a fixed epoch budget";
/// The command that runs it.
pub const COMMAND: &str = "pdt";

/// The keys of [`Settings`].
pub const KEYS: &[&str] = &["phases"];

/// BIMP's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Prune-retrain phases after the dense part.
    pub phases: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { phases: 3 }
    }
}

impl Settings {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.phases == 0 {
            return Err(Error::Config("--phases must be at least 1".into()));
        }
        Ok(())
    }
}

/// BIMP's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(skip)]
pub struct Args {
    /// BIMP: prune-retrain phases [default: 3].
    #[arg(long)]
    pub phases: Option<u32>,
}

impl Args {
    /// Writes the flags given over `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(v) = self.phases {
            settings.phases = v;
        }
    }
}

/// The method.
pub fn build(settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    Some(Box::new(Bimp {
        phases: settings.phases,
    }))
}

/// Budgeted IMP.
#[derive(Debug, Clone, Copy)]
pub struct Bimp {
    /// Prune-retrain phases after the dense part.
    pub phases: u32,
}

/// The phases' lengths: `budget` iterations split evenly over `phases`,
/// the remainder to the last.
pub fn phase_lengths(budget: u64, phases: u32) -> Vec<u64> {
    let k = u64::from(phases.max(1));
    let base = budget / k;
    let mut lengths = vec![base; k as usize];
    *lengths.last_mut().expect("at least one phase") += budget - base * k;
    lengths
}

impl PruningMethod for Bimp {
    fn segments(&self, t: &Timeline) -> Vec<Segment> {
        let k = self.phases.max(1);
        let q = 1.0 - (1.0 - t.sparsity).powf(1.0 / f64::from(k));
        let mut segments = vec![Segment {
            index: 0,
            start: 0,
            end: t.t0,
            sparsity: 0.0,
        }];
        let mut start = t.t0;
        for (p, len) in phase_lengths(t.total - t.t0, k).into_iter().enumerate() {
            let target = if p + 1 == k as usize {
                t.sparsity
            } else {
                1.0 - (1.0 - q).powi(p as i32 + 1)
            };
            segments.push(Segment {
                index: p + 1,
                start,
                end: start + len,
                sparsity: target,
            });
            start += len;
        }
        segments
    }

    /// The dense part follows the dense schedule over its own length; each
    /// phase restarts with ALLR, its peak set by how much norm the phase's
    /// pruning removed.
    fn lr(&self, ctx: &Context<'_>, it: u64) -> f64 {
        let dense = ctx.dense_schedule(ctx.timeline.t0.max(1));
        let seg = ctx.segment;
        let Some(impact) = ctx.impact.filter(|_| seg.index > 0) else {
            return dense.lr(it);
        };
        let per_epoch = ctx.timeline.per_epoch.max(1) as f64;
        let peak = allr_peak(
            &impact,
            ctx.eta_max,
            seg.len() as f64 / per_epoch,
            (ctx.timeline.t0 as f64 / per_epoch).max(1.0),
        );
        candidate_schedule(RetrainKind::Allr, seg.len().max(1), dense, peak, None)
            .lr(it - seg.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::timeline::PruneEvery;

    #[test]
    fn budget_is_split_evenly_with_the_remainder_last() {
        assert_eq!(phase_lengths(10, 3), vec![3, 3, 4]);
        assert_eq!(phase_lengths(9, 3), vec![3, 3, 3]);
        assert_eq!(phase_lengths(2, 3), vec![0, 0, 2]);
        // 5 epochs of 23 iterations: 115 in all, dense until round(11.5) = 12.
        let t = Timeline::new(5.0, 23, 0.9, 0.1, 0.75, PruneEvery::default());
        let segs = Bimp { phases: 3 }.segments(&t);
        let bounds: Vec<(u64, u64)> = segs.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(bounds, vec![(0, 12), (12, 46), (46, 80), (80, 115)]);
        assert_eq!(segs[0].sparsity, 0.0);
        assert!((segs[1].sparsity - (1.0 - 0.1f64.powf(1.0 / 3.0))).abs() < 1e-12);
        assert_eq!(segs[3].sparsity, 0.9);
        // The phases spend exactly the budget after the dense part.
        let spent: u64 = segs.iter().map(|s| s.len()).sum();
        assert_eq!(spent, t.total);
    }
}
