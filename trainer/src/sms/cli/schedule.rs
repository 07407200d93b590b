//! `trainer schedule` (hidden): prints, as one JSON object, the per-phase
//! sparsities of `--sparsity`/`--phases` and the learning rate of every
//! iteration of one retraining phase, computed by the functions the
//! pipeline itself uses ([`SmsConfig::prune_fraction`],
//! [`SmsConfig::target_sparsity`], [`allr_peak`], [`RetrainSchedule::lr`]).
//! Other implementations of the method (the Python package's) check their
//! schedules against it value by value.

use clap::Args;

use crate::error::{Error, Result};
use crate::pipeline::lr::{allr_peak, PruneImpact, RetrainKind, RetrainSchedule};
use crate::schedule::{Schedule, ScheduleKind};
use crate::sms::config::SmsConfig;

/// `trainer schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Final sparsity over the prunable weights.
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f64,
    /// Prune-retrain phases.
    #[arg(long, default_value_t = 3)]
    pub phases: u32,
    /// Retraining schedule: allr, llr, clr, slr, lrw or ft.
    #[arg(long, value_enum, ignore_case = true, default_value = "allr")]
    pub kind: RetrainKind,
    /// Iterations of the retraining phase (T).
    #[arg(long)]
    pub total: u64,
    /// Pretraining peak learning rate (eta_max).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Pretraining schedule: constant, step, linear or cosine.
    #[arg(long, default_value = "cosine")]
    pub pretrain_schedule: ScheduleKind,
    /// Pretraining iterations.
    #[arg(long)]
    pub pretrain_total: u64,
    /// Pretraining warm-up iterations.
    #[arg(long, default_value_t = 0)]
    pub pretrain_warmup: u64,
    /// ALLR: L2 norm of the parameters before pruning.
    #[arg(long, default_value_t = 1.0)]
    pub norm_before: f64,
    /// ALLR: the same after pruning.
    #[arg(long, default_value_t = 1.0)]
    pub norm_after: f64,
    /// ALLR: the fraction of the remaining weights pruning removed (q);
    /// the sparsity's per-phase fraction when left out.
    #[arg(long)]
    pub fraction: Option<f64>,
    /// ALLR: retraining epochs per phase.
    #[arg(long, default_value_t = 1.0)]
    pub retrain_epochs: f64,
    /// ALLR: pretraining epochs.
    #[arg(long, default_value_t = 1.0)]
    pub pretrain_epochs: f64,
}

/// The schedule of `args` as a JSON value.
pub fn schedule_json(args: &ScheduleArgs) -> Result<serde_json::Value> {
    let mut cfg = SmsConfig {
        phases: args.phases,
        ..SmsConfig::default()
    };
    cfg.soups.sparsity = args.sparsity;
    if !(0.0..1.0).contains(&args.sparsity) || args.phases == 0 {
        return Err(Error::Config(format!(
            "--sparsity must be in [0, 1) and --phases at least 1, got {} and {}",
            args.sparsity, args.phases
        )));
    }
    let q = cfg.prune_fraction();
    let impact = PruneImpact {
        norm_before: args.norm_before,
        norm_after: args.norm_after,
        fraction: args.fraction.unwrap_or(q),
    };
    let peak = allr_peak(&impact, args.lr, args.retrain_epochs, args.pretrain_epochs);
    let schedule = RetrainSchedule {
        kind: args.kind,
        total: args.total,
        pretrain: Schedule {
            kind: args.pretrain_schedule,
            peak: args.lr,
            total: args.pretrain_total,
            warmup: args.pretrain_warmup,
        },
        allr_peak: Some(peak),
    };
    let lr: Vec<f64> = (0..args.total).map(|it| schedule.lr(it)).collect();
    let pretrain_lr: Vec<f64> = (0..args.pretrain_total)
        .map(|it| schedule.pretrain.lr(it))
        .collect();
    Ok(serde_json::json!({
        "prune_fraction": q,
        "target_sparsity": (1..=args.phases).map(|p| cfg.target_sparsity(p)).collect::<Vec<_>>(),
        "allr_peak": peak,
        "warmup": schedule.warmup(),
        "peak": schedule.peak(),
        "lr": lr,
        "pretrain_lr": pretrain_lr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: RetrainKind, total: u64) -> ScheduleArgs {
        ScheduleArgs {
            sparsity: 0.75,
            phases: 2,
            kind,
            total,
            lr: 0.1,
            pretrain_schedule: ScheduleKind::Cosine,
            pretrain_total: 20,
            pretrain_warmup: 0,
            norm_before: 10.0,
            norm_after: 8.0,
            fraction: Some(0.36),
            retrain_epochs: 2.0,
            pretrain_epochs: 10.0,
        }
    }

    #[test]
    fn prints_the_pipelines_values() {
        let v = schedule_json(&args(RetrainKind::Allr, 5)).unwrap();
        assert!((v["prune_fraction"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        let after: Vec<f64> = serde_json::from_value(v["target_sparsity"].clone()).unwrap();
        assert!((after[0] - 0.5).abs() < 1e-12 && (after[1] - 0.75).abs() < 1e-12);
        // d / sqrt(q) = 0.6 / 0.6 = 1: the peak is eta_max.
        assert!((v["allr_peak"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        // T = 5 warms up for round(0.5) = 1 iteration.
        assert_eq!(v["warmup"], 1);
        let lr: Vec<f64> = serde_json::from_value(v["lr"].clone()).unwrap();
        assert_eq!(lr.len(), 5);
        assert!((lr[0] - 0.1).abs() < 1e-12 && (lr[2] - 0.075).abs() < 1e-12);
        assert_eq!(v["pretrain_lr"].as_array().unwrap().len(), 20);
    }

    #[test]
    fn refuses_a_bad_sparsity() {
        let mut a = args(RetrainKind::Llr, 3);
        a.sparsity = 1.0;
        assert!(schedule_json(&a).is_err());
    }
}
