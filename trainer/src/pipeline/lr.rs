//! Learning-rate schedules for retraining after pruning, evaluated per
//! iteration of a phase of `T` iterations (IMP's phases, BIMP's segments).
//!
//! Schedules that restart the learning rate (SLR, CLR, LLR, ALLR) spend
//! `W = round(0.1 T)` iterations rising from 0 to their peak along a half
//! cosine. Candidates that vary the learning rate (`--vary lr`) retrain with
//! LLR peaking at their own value, whatever the phase's schedule, as in the
//! reference code ([`candidate_schedule`]).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// Which retraining schedule a phase uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum RetrainKind {
    /// Fine-tuning: constant at the final pretraining rate.
    Ft,
    /// Learning-rate rewinding: replay the last `T` rates of pretraining.
    Lrw,
    /// Scaled learning rate: all of pretraining's schedule compressed into
    /// the `T - W` iterations after warm-up, its own warm-up replaced by the
    /// peak.
    Slr,
    /// Cosine from the pretraining peak to its final rate, after warm-up.
    Clr,
    /// Linear from the pretraining peak to 0, after warm-up.
    Llr,
    /// Adaptive linear: LLR whose peak depends on how much norm pruning
    /// removed (the default).
    Allr,
}

/// What ALLR measures about a pruning step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PruneImpact {
    /// L2 norm of all weights and biases before pruning.
    pub norm_before: f64,
    /// The same after pruning.
    pub norm_after: f64,
    /// The fraction of the remaining weights this phase removed (`q`).
    pub fraction: f64,
}

impl PruneImpact {
    /// `d = sqrt(|norm² - norm_pruned²|) / norm`, the relative norm removed.
    pub fn relative_norm_removed(&self) -> f64 {
        if self.norm_before == 0.0 {
            return 0.0;
        }
        (self.norm_before.powi(2) - self.norm_after.powi(2))
            .abs()
            .sqrt()
            / self.norm_before
    }
}

/// ALLR's peak: `clip(d / sqrt(q) * eta_max, lo, eta_max)` with
/// `lo = min(E_retrain / E_pretrain, 1) * eta_max`.
pub fn allr_peak(
    impact: &PruneImpact,
    eta_max: f64,
    retrain_epochs: f64,
    pretrain_epochs: f64,
) -> f64 {
    let lo = (retrain_epochs / pretrain_epochs.max(f64::MIN_POSITIVE)).min(1.0) * eta_max;
    let raw = if impact.fraction > 0.0 {
        impact.relative_norm_removed() / impact.fraction.sqrt() * eta_max
    } else {
        lo
    };
    raw.clamp(lo, eta_max)
}

/// A phase's retraining schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrainSchedule {
    /// Which schedule.
    pub kind: RetrainKind,
    /// Iterations of the phase (`T`).
    pub total: u64,
    /// The pretraining schedule (its peak is `eta_max`).
    pub pretrain: Schedule,
    /// For ALLR: the adapted peak `eta0` (see [`allr_peak`]).
    pub allr_peak: Option<f64>,
}

impl RetrainSchedule {
    /// Warm-up iterations: `round(0.1 T)` for schedules that have one.
    pub fn warmup(&self) -> u64 {
        match self.kind {
            RetrainKind::Slr | RetrainKind::Clr | RetrainKind::Llr | RetrainKind::Allr => {
                (0.1 * self.total as f64).round() as u64
            }
            _ => 0,
        }
    }

    /// The peak rate after warm-up.
    pub fn peak(&self) -> f64 {
        match self.kind {
            RetrainKind::Allr => self.allr_peak.unwrap_or(self.pretrain.peak),
            _ => self.pretrain.peak,
        }
    }

    fn final_pretrain_lr(&self) -> f64 {
        self.pretrain.lr(self.pretrain.total.saturating_sub(1))
    }

    /// The learning rate of iteration `it` of the phase (0-based).
    pub fn lr(&self, it: u64) -> f64 {
        let total = self.total.max(1);
        let it = it.min(total - 1);
        let warmup = self.warmup();
        let peak = self.peak();
        if it < warmup {
            // Half cosine from 0 to the peak, reaching it at iteration W.
            let x = (it + 1) as f64 / warmup as f64;
            return peak * 0.5 * (1.0 - (PI * x).cos());
        }
        let span = (total - warmup) as f64;
        let t = (it - warmup) as f64 / span;
        match self.kind {
            RetrainKind::Ft => self.final_pretrain_lr(),
            RetrainKind::Lrw => {
                let p = self.pretrain.total;
                self.pretrain.lr(p.saturating_sub(total) + it)
            }
            RetrainKind::Slr => {
                // Pretraining iteration floor(t * P); its warm-up is replaced
                // by the peak (this phase already warmed up).
                let p = (t * self.pretrain.total as f64).floor() as u64;
                if p < self.pretrain.warmup {
                    self.pretrain.peak
                } else {
                    self.pretrain.lr(p)
                }
            }
            RetrainKind::Clr => {
                let end = self.final_pretrain_lr();
                end + (peak - end) * 0.5 * (1.0 + (PI * t).cos())
            }
            RetrainKind::Llr | RetrainKind::Allr => peak * (1.0 - t),
        }
    }
}

/// The schedule of one candidate: `kind` with `allr_peak` for ALLR, except
/// that a candidate whose learning rate is varied (`varied_peak`, its
/// `--vary lr` value) retrains with LLR peaking at that value: the
/// reference code's meaning of varying the learning rate, and the only one
/// in which the candidates' peaks are the values asked for (ALLR would clip
/// each into its own band).
pub fn candidate_schedule(
    kind: RetrainKind,
    total: u64,
    pretrain: Schedule,
    allr_peak: f64,
    varied_peak: Option<f64>,
) -> RetrainSchedule {
    match varied_peak {
        Some(peak) => RetrainSchedule {
            kind: RetrainKind::Llr,
            total,
            pretrain: Schedule { peak, ..pretrain },
            allr_peak: None,
        },
        None => RetrainSchedule {
            kind,
            total,
            pretrain,
            allr_peak: Some(allr_peak),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleKind;

    fn pretrain() -> Schedule {
        Schedule {
            kind: ScheduleKind::Linear,
            peak: 0.1,
            total: 1000,
            warmup: 0,
        }
    }

    fn sched(kind: RetrainKind, allr_peak: Option<f64>) -> RetrainSchedule {
        RetrainSchedule {
            kind,
            total: 100,
            pretrain: pretrain(),
            allr_peak,
        }
    }

    #[test]
    fn allr_peak_by_hand() {
        // norm 10 -> 8: d = sqrt(100 - 64) / 10 = 0.6; q = 0.36: d / sqrt(q) = 1.
        let impact = PruneImpact {
            norm_before: 10.0,
            norm_after: 8.0,
            fraction: 0.36,
        };
        assert!((impact.relative_norm_removed() - 0.6).abs() < 1e-12);
        assert!((allr_peak(&impact, 0.1, 2.0, 10.0) - 0.1).abs() < 1e-12);
        // A gentler prune, 10 -> 9.95: d = sqrt(100 - 99.0025) / 10 = 0.0998749,
        // / sqrt(0.25) * 0.1 = 0.0199750, below lo = min(2 / 10, 1) * 0.1 = 0.02,
        // so the peak is clipped up to 0.02.
        let gentle = PruneImpact {
            norm_before: 10.0,
            norm_after: 9.95,
            fraction: 0.25,
        };
        assert!((allr_peak(&gentle, 0.1, 2.0, 10.0) - 0.02).abs() < 1e-12);
        // Between the bounds the value passes through: 10 -> 9 gives
        // d = sqrt(19) / 10 = 0.435890, / sqrt(0.49) = 0.622700, * 0.1.
        let mid = PruneImpact {
            norm_before: 10.0,
            norm_after: 9.0,
            fraction: 0.49,
        };
        let expected = 19f64.sqrt() / 10.0 / 0.7 * 0.1;
        assert!((allr_peak(&mid, 0.1, 1.0, 10.0) - expected).abs() < 1e-12);
        assert!((expected - 0.062_270_0).abs() < 1e-6);
    }

    #[test]
    fn allr_lr_by_hand() {
        // T = 100, W = 10, peak 0.05.
        let s = sched(RetrainKind::Allr, Some(0.05));
        assert_eq!(s.warmup(), 10);
        // Warm-up: 0.05 * (1 - cos(pi * (it+1)/10)) / 2.
        assert!((s.lr(0) - 0.05 * 0.5 * (1.0 - (PI / 10.0).cos())).abs() < 1e-15);
        assert!((s.lr(4) - 0.025).abs() < 1e-12);
        assert!((s.lr(9) - 0.05).abs() < 1e-12);
        // Then linear to 0 over 90 iterations.
        assert!((s.lr(10) - 0.05).abs() < 1e-12);
        assert!((s.lr(55) - 0.025).abs() < 1e-12);
        assert!((s.lr(99) - 0.05 / 90.0).abs() < 1e-12);
    }

    #[test]
    fn other_schedules_by_hand() {
        // LLR: peak 0.1 (pretraining peak).
        assert!((sched(RetrainKind::Llr, None).lr(55) - 0.05).abs() < 1e-12);
        // FT: the final pretraining rate, 0.1 * (1 - 999/1000) = 1e-4.
        assert!((sched(RetrainKind::Ft, None).lr(0) - 1e-4).abs() < 1e-12);
        // LRW: iteration 0 replays pretraining iteration 900: 0.1 * 0.1 = 0.01.
        assert!((sched(RetrainKind::Lrw, None).lr(0) - 0.01).abs() < 1e-12);
        // SLR: the same warm-up as the others (W = 10, peak 0.1) ...
        let slr = sched(RetrainKind::Slr, None);
        assert_eq!(slr.warmup(), 10);
        assert!((slr.lr(4) - 0.05).abs() < 1e-12);
        assert!((slr.lr(9) - 0.1).abs() < 1e-12);
        // ... then iteration 55, halfway through the 90 after warm-up, is
        // pretraining iteration 500: 0.1 * (1 - 500/1000) = 0.05.
        assert!((slr.lr(55) - 0.05).abs() < 1e-12);
        assert!((slr.lr(10) - 0.1).abs() < 1e-12);
        // CLR: after warm-up, cosine from 0.1 to 1e-4; middle of the decay.
        let clr = sched(RetrainKind::Clr, None);
        assert!((clr.lr(55) - (1e-4 + (0.1 - 1e-4) * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn slr_replaces_the_pretraining_warm_up_by_the_peak() {
        let mut s = sched(RetrainKind::Slr, None);
        s.pretrain.warmup = 200;
        // Iteration 19 maps to pretraining iteration 100, inside its warm-up.
        assert!((s.lr(19) - 0.1).abs() < 1e-12);
        // Iteration 55 maps to 500, after it: the pretraining rate there.
        assert!((s.lr(55) - s.pretrain.lr(500)).abs() < 1e-12);
    }

    #[test]
    fn varied_lr_is_llr_at_the_candidates_peak() {
        // Whatever the phase's schedule, the candidate's peak is its value.
        for kind in [RetrainKind::Allr, RetrainKind::Clr, RetrainKind::Slr] {
            let s = candidate_schedule(kind, 100, pretrain(), 0.02, Some(0.3));
            assert_eq!(s.kind, RetrainKind::Llr);
            assert!((s.peak() - 0.3).abs() < 1e-15);
            assert!((s.lr(9) - 0.3).abs() < 1e-12);
            assert!((s.lr(55) - 0.15).abs() < 1e-12);
        }
        // Without a varied value the phase's schedule and ALLR peak stand.
        let s = candidate_schedule(RetrainKind::Allr, 100, pretrain(), 0.02, None);
        assert_eq!((s.kind, s.peak()), (RetrainKind::Allr, 0.02));
    }

    #[test]
    fn names_parse() {
        use clap::ValueEnum;
        assert_eq!(
            RetrainKind::from_str("ALLR", true).unwrap(),
            RetrainKind::Allr
        );
        assert!(RetrainKind::from_str("warm", true).is_err());
    }
}
