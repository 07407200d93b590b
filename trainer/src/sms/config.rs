//! The configuration of a sparse-model-soup run (`RUN/config.toml`).

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// Data set name or folder.
    pub data: String,
    /// Architecture.
    pub model: String,
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
    /// Images per batch.
    pub batch_size: usize,
    /// Peak learning rate of pretraining (`eta_max`).
    pub lr: f64,
    /// Pretraining schedule.
    pub pretrain_schedule: ScheduleKind,
    /// Pretraining warm-up epochs.
    pub warmup_epochs: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (Nesterov momentum when positive).
    pub weight_decay: f64,
    /// Also zero the momentum of pruned weights after every step.
    pub mask_momentum: bool,
    /// Regexes of prunable tensors never to prune (e.g. `^fc\.`).
    pub exclude: Vec<String>,
    /// Base seed.
    pub seed: u64,
    /// Seed of the validation split.
    pub split_seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU threads for libtorch (0: its default).
    pub threads: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Baselines to run.
    pub baselines: Vec<Baseline>,
    /// Runs of the whole pipeline with base seeds `seed + 1000 r`, r < R.
    pub repeats: u32,
    /// Robustness evaluation of every reported model (corruptions of the
    /// test split).
    pub ood: OodSpec,
    /// Image folders: image size, normalisation, skipping of unreadable
    /// files, decoding threads (the `[folder]` table).
    pub folder: crate::data::FolderOptions,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            data: "fashion-mnist".into(),
            model: "cnn".into(),
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
            batch_size: 128,
            lr: 0.1,
            pretrain_schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
            momentum: 0.9,
            weight_decay: 5e-4,
            mask_momentum: true,
            exclude: Vec::new(),
            seed: 0,
            split_seed: 0,
            device: "auto".into(),
            threads: 0,
            eval_batch_size: 500,
            baselines: Vec::new(),
            repeats: 1,
            ood: OodSpec::default(),
            folder: crate::data::FolderOptions::default(),
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
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 2 (training) and 1 (evaluation)".into());
        }
        if self.lr.is_nan() || self.lr <= 0.0 || self.weight_decay < 0.0 || self.momentum < 0.0 {
            return bad("--lr must be positive; momentum and weight decay non-negative".into());
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
}
