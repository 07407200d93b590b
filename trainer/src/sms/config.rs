//! The configuration of a sparse-model-soup run (`RUN/config.toml`).

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{TrainConfig, TrainSettings};
use crate::error::{Error, Result};
use crate::eval::BnRecal;
use crate::robust::OodSpec;
use crate::schedule::ScheduleKind;
use crate::sms::lr::RetrainKind;

/// How the candidates of a phase are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoupKind {
    /// The mean of all candidates.
    Uniform,
    /// Candidates added best-first while validation accuracy does not drop.
    Greedy,
}

/// What differs between the candidates of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// The random seed (batch order, augmentation): seed = base seed + i.
    Seed,
    /// Weight decay, one value per candidate.
    WeightDecay,
    /// Retraining epochs, one value per candidate.
    RetrainLength,
    /// Peak learning rate (`eta_max`), one value per candidate.
    Lr,
}

/// A comparison run next to the soups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Iterative magnitude pruning with one candidate per phase.
    Imp,
    /// IMP whose phases retrain M times longer (the soup's compute).
    ImpLong,
    /// M independent IMP chains averaged, re-pruned and retrained.
    Reprune,
}

macro_rules! parse_kebab {
    ($ty:ty, $what:literal) => {
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                serde_json::from_value(serde_json::Value::String(s.to_string()))
                    .map_err(|_| Error::Config(format!("unknown {} {s:?}", $what)))
            }
        }
    };
}
parse_kebab!(SoupKind, "soup kind (expected uniform or greedy)");
parse_kebab!(
    Vary,
    "--vary (expected seed, weight-decay, retrain-length or lr)"
);
parse_kebab!(Baseline, "baseline (expected imp, imp-long or reprune)");

/// Every setting of `trainer sms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// What every training command shares: data, model, batch sizes,
    /// optimizer, seeds, device (top-level keys in the file). Its `lr` is
    /// the peak learning rate of pretraining (`eta_max`), its
    /// `warmup_epochs` the pretraining warm-up and its `seed` the base seed.
    #[serde(flatten)]
    pub train: TrainSettings,
    /// Final sparsity over the prunable weights.
    pub sparsity: f64,
    /// Prune-retrain phases to reach it.
    pub phases: u32,
    /// Candidates per phase (`m`).
    pub candidates: u32,
    /// Retraining epochs per phase (fractions allowed: 0.5 is half an
    /// epoch of iterations).
    pub epochs_per_phase: f64,
    /// Epochs of dense pretraining (ignored with `from`, but still ALLR's
    /// `E_pretrain`).
    pub pretrain_epochs: u64,
    /// Start from this trained dense checkpoint instead of pretraining.
    pub from: Option<String>,
    /// Uniform or greedy soup.
    pub soup: SoupKind,
    /// Greedy soups: demand a strict gain (model soups) instead of accepting
    /// ties (SMS).
    pub strict: bool,
    /// What the candidates vary.
    pub vary: Vary,
    /// Per-candidate values for `vary` other than `seed`.
    pub vary_values: Vec<f64>,
    /// Retraining schedule.
    pub schedule: RetrainKind,
    /// Share of an epoch of training batches used to recalibrate batch norm.
    pub bn_recal_fraction: f64,
    /// How recalibration averages batch statistics.
    pub bn_recal: BnRecal,
    /// Pretraining schedule.
    pub pretrain_schedule: ScheduleKind,
    /// Also zero the momentum of pruned weights after every step.
    pub mask_momentum: bool,
    /// Regexes of prunable tensors never to prune (e.g. `^fc\.`).
    pub exclude: Vec<String>,
    /// Baselines to run.
    pub baselines: Vec<Baseline>,
    /// Runs of the whole pipeline with base seeds `seed + 1000 r`, r < R.
    pub repeats: u32,
    /// Robustness evaluation of every reported model (corruptions of the
    /// test split).
    pub ood: OodSpec,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            train: TrainSettings::default(),
            sparsity: 0.9,
            phases: 3,
            candidates: 3,
            epochs_per_phase: 2.0,
            pretrain_epochs: 5,
            from: None,
            soup: SoupKind::Uniform,
            strict: false,
            vary: Vary::Seed,
            vary_values: Vec::new(),
            schedule: RetrainKind::Allr,
            bn_recal_fraction: 0.2,
            bn_recal: BnRecal::Cumulative,
            pretrain_schedule: ScheduleKind::Cosine,
            mask_momentum: true,
            exclude: Vec::new(),
            baselines: Vec::new(),
            repeats: 1,
            ood: OodSpec::default(),
        }
    }
}

impl SmsConfig {
    /// Reads a TOML file; unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<SmsConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Makes `run` the folder of a run with this configuration: writes
    /// `config.toml`, or checks that the one there is the same (a run
    /// resumes only with the settings it started with).
    pub fn claim(&self, run: &Path) -> Result<()> {
        let path = run.join("config.toml");
        if path.exists() {
            if SmsConfig::from_file(&path)? != *self {
                return Err(Error::Config(format!(
                    "{} holds a run with a different configuration; resume it with the same \
                     settings (see {}) or choose another --out",
                    run.display(),
                    path.display()
                )));
            }
            return Ok(());
        }
        std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
        crate::checkpoint::write_atomic(&path, self.to_toml().as_bytes())
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an SmsConfig always serialises")
    }

    /// Checks the values before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(0.0..1.0).contains(&self.sparsity) {
            return bad(format!(
                "--sparsity must be in [0, 1), got {}",
                self.sparsity
            ));
        }
        if self.phases == 0 || self.candidates == 0 || self.repeats == 0 {
            return bad("--phases, --candidates and --repeats must be at least 1".into());
        }
        if !self.epochs_per_phase.is_finite() || self.epochs_per_phase <= 0.0 {
            return bad(format!(
                "--epochs-per-phase must be positive, got {}",
                self.epochs_per_phase
            ));
        }
        if self.from.is_none() && self.pretrain_epochs == 0 {
            return bad("give --pretrain-epochs N (N >= 1) or --from CHECKPOINT".into());
        }
        if self.bn_recal_fraction.is_nan()
            || self.bn_recal_fraction <= 0.0
            || self.bn_recal_fraction > 1.0
        {
            return bad(format!(
                "--bn-recal-fraction must be in (0, 1], got {}",
                self.bn_recal_fraction
            ));
        }
        self.train.validate()?;
        if self.train.lr <= 0.0 {
            return bad("--lr must be positive".into());
        }
        match self.vary {
            Vary::Seed if !self.vary_values.is_empty() => {
                return bad("--vary seed takes no values (seed = base seed + i)".into())
            }
            Vary::Seed => {}
            _ if self.vary_values.len() != self.candidates as usize => {
                return bad(format!(
                    "--vary {} needs one value per candidate: {} given for {} candidates",
                    serde_json::to_value(self.vary)
                        .expect("serialisable")
                        .as_str()
                        .unwrap_or("?"),
                    self.vary_values.len(),
                    self.candidates
                ))
            }
            Vary::RetrainLength
                if self
                    .vary_values
                    .iter()
                    .any(|v| *v < 1.0 || v.fract() != 0.0) =>
            {
                return bad("retrain lengths must be whole numbers of epochs >= 1".into())
            }
            _ if self.vary_values.iter().any(|v| !v.is_finite() || *v < 0.0) => {
                return bad("--vary values must be finite and non-negative".into())
            }
            _ => {}
        }
        self.ood.validate()?;
        for pattern in &self.exclude {
            regex::Regex::new(pattern)
                .map_err(|e| Error::Config(format!("invalid --exclude regex {pattern:?}: {e}")))?;
        }
        Ok(())
    }

    /// The dense pretraining run of the parent: the shared settings with
    /// `pretrain_epochs` and `pretrain_schedule`.
    pub fn pretrain_config(&self) -> TrainConfig {
        TrainConfig {
            train: self.train.clone(),
            epochs: self.pretrain_epochs,
            schedule: self.pretrain_schedule,
        }
    }

    /// The fraction of the remaining weights each phase removes:
    /// `q = 1 - (1 - s)^(1/k)`.
    pub fn prune_fraction(&self) -> f64 {
        1.0 - (1.0 - self.sparsity).powf(1.0 / self.phases as f64)
    }

    /// The sparsity over prunable weights after phase `p` (1-based):
    /// `1 - (1 - q)^p`.
    pub fn target_sparsity(&self, phase: u32) -> f64 {
        1.0 - (1.0 - self.prune_fraction()).powi(phase as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_schedule_matches_the_method() {
        let cfg = SmsConfig {
            sparsity: 0.98,
            phases: 3,
            ..SmsConfig::default()
        };
        assert!((cfg.prune_fraction() - 0.728_558).abs() < 1e-6);
        assert!((cfg.target_sparsity(3) - 0.98).abs() < 1e-12);
        assert!((cfg.target_sparsity(1) - cfg.prune_fraction()).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_and_rejects_bad_values() {
        let cfg = SmsConfig::default();
        let back: SmsConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        let bad = SmsConfig {
            vary: Vary::WeightDecay,
            vary_values: vec![1e-4],
            ..SmsConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("one value per candidate"));
        assert!("imp-long".parse::<Baseline>().unwrap() == Baseline::ImpLong);
        assert!("greedy".parse::<SoupKind>().is_ok());
        assert!("nope".parse::<Vary>().is_err());
    }

    #[test]
    fn config_files_of_runs_started_before_the_shared_settings_still_resume() {
        // Written by `trainer sms ... --pretrain-epochs 1 --phases 2
        // --candidates 2 --epochs-per-phase 0.1 --baselines imp,reprune
        // --corruptions none --threads 1` when SmsConfig still declared
        // every training field itself.
        let old = include_str!("../../tests/data/sms-config-before-reshape.toml");
        let got: SmsConfig = toml::from_str(old).unwrap();
        let mut want = SmsConfig {
            phases: 2,
            candidates: 2,
            epochs_per_phase: 0.1,
            pretrain_epochs: 1,
            baselines: vec![Baseline::Imp, Baseline::Reprune],
            ..SmsConfig::default()
        };
        want.train.threads = 1;
        want.ood = toml::from_str("corruptions = \"none\"\nseverities = [3]").unwrap();
        assert_eq!(got, want);
        // The same keys come back out, so a resumed run compares equal.
        let back: SmsConfig = toml::from_str(&got.to_toml()).unwrap();
        assert_eq!(back, got);
        let keys = |t: &str| {
            let mut k: Vec<String> = t.parse::<toml::Table>().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&got.to_toml()), keys(old));
        // The pretraining run of the parent is the dense run's old config.
        let dense = include_str!("../../tests/data/train-config-before-reshape.toml");
        assert_eq!(
            got.pretrain_config(),
            toml::from_str::<TrainConfig>(dense).unwrap()
        );
    }

    #[test]
    fn unknown_keys_fail_also_next_to_the_shared_settings() {
        let text = format!("{}\nlearning_rate = 0.1\n", SmsConfig::default().to_toml());
        let err = toml::from_str::<SmsConfig>(&text).unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
        let text = "lr = 0.05\nseed = 7\nmodle = \"cnn\"\n";
        assert!(toml::from_str::<SmsConfig>(text).is_err());
        let c: SmsConfig = toml::from_str("lr = 0.05\nseed = 7\nphases = 2\n").unwrap();
        assert_eq!((c.train.lr, c.train.seed, c.phases), (0.05, 7, 2));
    }
}
