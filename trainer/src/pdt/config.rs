//! The configuration of a pruning-during-training run (`RUN/config.toml`):
//! the settings every training command shares ([`TrainSettings`], as
//! top-level keys), the epoch budget and schedule, plus
//! what the method and the soups need.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::TrainSettings;
use crate::error::{Error, Result};
use crate::methods::{Method, MethodSettings};
use crate::pipeline::timeline::PruneEvery;
use crate::pipeline::{SoupKind, SoupSettings};
use crate::schedule::ScheduleKind;

/// A comparison run next to the method with soups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PdtBaseline {
    /// The method alone (one model).
    Plain,
    /// The method alone with `m` times the epochs (the soup's compute,
    /// spent serially).
    Long,
}

/// Every setting of `trainer pdt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PdtConfig {
    /// The method, by its registered name (`gmp`, `dpf`, `bimp`, ...).
    pub method: Method,
    /// Baselines to run beside the soups.
    pub baselines: Vec<PdtBaseline>,
    /// Fraction of training where pruning starts (`t0`; BIMP trains
    /// densely until then).
    pub prune_start: f64,
    /// Fraction of training where the target sparsity is reached (`t1`).
    pub prune_end: f64,
    /// Pruning steps of GMP (and sparsity updates of DPF's segments).
    pub prune_every: PruneEvery,
    /// Every method's own settings (DPF's `dpf_interval`, BIMP's
    /// `phases`, ...; top-level keys in the file).
    #[serde(flatten)]
    pub methods: MethodSettings,
    /// Fork candidates only at segments of at least this many epochs.
    pub sms_min_segment: f64,
    /// Make the whole run this many times with base seeds `seed + 1000 r`
    /// (in `RUN/repeat-r/`) and summarise mean ± std over repeats. Left out
    /// of the file when 1, as in files written before repeats existed.
    #[serde(skip_serializing_if = "is_one")]
    pub repeats: u32,
    /// What every training command shares: data, model, batch sizes,
    /// optimizer, seeds, device (top-level keys in the file). Its `lr` is
    /// the peak learning rate and its `seed` the base seed.
    #[serde(flatten)]
    pub train: TrainSettings,
    /// The soup settings every method shares: sparsity, candidates per
    /// soup, what they vary, how they are merged, exclusions,
    /// recalibration and robustness evaluation (top-level keys too).
    #[serde(flatten)]
    pub soups: SoupSettings,
    /// Training epochs: the whole budget, pruning included.
    pub epochs: u64,
    /// Learning-rate schedule over training.
    pub schedule: ScheduleKind,
}

impl Default for PdtConfig {
    fn default() -> Self {
        PdtConfig {
            method: Method::named("gmp").expect("gmp is registered"),
            baselines: Vec::new(),
            prune_start: 0.1,
            prune_end: 0.75,
            prune_every: PruneEvery::default(),
            methods: MethodSettings::default(),
            sms_min_segment: 0.0,
            repeats: 1,
            train: TrainSettings::default(),
            soups: SoupSettings::default(),
            epochs: 10,
            schedule: ScheduleKind::Cosine,
        }
    }
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl PdtConfig {
    /// Reads a TOML file; unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<PdtConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a PdtConfig always serialises")
    }

    /// Makes `run` the folder of a run with this configuration, or checks
    /// that the one there is the same (a run resumes only with its own
    /// settings; the device and thread count may change).
    pub fn claim(&self, run: &Path) -> Result<()> {
        let path = run.join("config.toml");
        if path.exists() {
            let mut there = PdtConfig::from_file(&path)?;
            there.train.device.clone_from(&self.train.device);
            there.train.threads = self.train.threads;
            if there != *self {
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

    /// Checks the values before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let Some(method) = self.method.build(&self.methods) else {
            return bad(format!(
                "method {} runs through `trainer {}`, not `trainer pdt`: expected one of {}",
                self.method,
                self.method.command(),
                Method::names(Method::prunes_during_training)
            ));
        };
        self.soups.validate(false)?;
        if self.soups.soup == SoupKind::Greedy && !method.fixed_mask() {
            return bad(format!(
                "--soup greedy needs a method with a fixed mask ({}), not {}",
                Method::names(|m| m.build(&self.methods).is_some_and(|m| m.fixed_mask())),
                self.method
            ));
        }
        if self.epochs == 0 || self.repeats == 0 {
            return bad("--epochs and --repeats must be at least 1".into());
        }
        match (method.pattern(), self.methods.gmp.nm) {
            (None, Some(p)) => {
                return bad(format!(
                    "--nm {p} applies to --method gmp, not {}",
                    self.method
                ))
            }
            (Some(p), _) if (self.soups.sparsity - nm_sparsity(p)).abs() > 1e-12 => {
                return bad(format!(
                    "--nm {p} reaches {} sparsity: leave --sparsity out or give that value, \
                     not {}",
                    nm_sparsity(p),
                    self.soups.sparsity
                ))
            }
            _ => {}
        }
        self.methods.validate()?;
        if !(0.0 <= self.prune_start && self.prune_start < self.prune_end && self.prune_end <= 1.0)
        {
            return bad(format!(
                "need 0 <= --prune-start < --prune-end <= 1, got {} and {}",
                self.prune_start, self.prune_end
            ));
        }
        if !self.sms_min_segment.is_finite() || self.sms_min_segment < 0.0 {
            return bad(format!(
                "--sms-min-segment must be a non-negative number of epochs, got {}",
                self.sms_min_segment
            ));
        }
        self.train.validate()?;
        Ok(())
    }
}

/// The sparsity of an N:M pattern: `1 - N/M`.
pub fn nm_sparsity(p: soup_core::NmPattern) -> f64 {
    1.0 - p.n() as f64 / p.m() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_values() {
        let cfg = PdtConfig {
            prune_every: "25it".parse().unwrap(),
            baselines: vec![PdtBaseline::Plain, PdtBaseline::Long],
            ..PdtConfig::default()
        };
        let back: PdtConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        assert!(cfg.validate().is_ok());
        let bad = PdtConfig {
            method: Method::named("imp").unwrap(),
            ..PdtConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("trainer sms") && err.contains("gmp, dpf, bimp"),
            "{err}"
        );
        let err = toml::from_str::<PdtConfig>("method = \"obd\"").unwrap_err();
        assert!(err.to_string().contains("unknown method"), "{err}");
        let bad = PdtConfig {
            prune_start: 0.8,
            ..PdtConfig::default()
        };
        assert!(bad.validate().is_err());
        let mut bad = PdtConfig {
            method: Method::named("dpf").unwrap(),
            ..PdtConfig::default()
        };
        bad.soups.soup = SoupKind::Greedy;
        assert!(bad.validate().unwrap_err().to_string().contains("greedy"));
    }
}
