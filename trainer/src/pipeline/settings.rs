//! The soup settings every method shares: final sparsity, candidates per
//! soup, what the candidates vary, how they are merged, which tensors are
//! never pruned, batch-norm recalibration and robustness evaluation. One
//! struct ([`SoupSettings`], flattened into each command's configuration so
//! its keys sit at the top level of `config.toml`), one set of flags
//! ([`SoupArgs`]) and one validation.

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::BnRecal;
use crate::robust::{OodArgs, OodSpec};

/// How the candidates of a soup are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SoupKind {
    /// The mean of all candidates.
    Uniform,
    /// Candidates added best-first while validation accuracy does not drop.
    Greedy,
}

/// What differs between the candidates of a soup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
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

impl Vary {
    /// The name on the command line and in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Vary::Seed => "seed",
            Vary::WeightDecay => "weight-decay",
            Vary::RetrainLength => "retrain-length",
            Vary::Lr => "lr",
        }
    }
}

/// The settings of sparse model soups that every method shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SoupSettings {
    /// Final sparsity over the prunable weights.
    pub sparsity: f64,
    /// Candidates per soup (`m`).
    pub candidates: u32,
    /// Uniform or greedy soup.
    pub soup: SoupKind,
    /// Greedy soups: demand a strict gain (model soups) instead of accepting
    /// ties (SMS).
    pub strict: bool,
    /// What the candidates vary.
    pub vary: Vary,
    /// Per-candidate values for `vary` other than `seed`.
    pub vary_values: Vec<f64>,
    /// Also zero the momentum of pruned weights after every step.
    pub mask_momentum: bool,
    /// Regexes of prunable tensors never to prune (e.g. `^fc\.`).
    pub exclude: Vec<String>,
    /// Share of an epoch of training batches used to recalibrate batch norm.
    pub bn_recal_fraction: f64,
    /// How recalibration averages batch statistics.
    pub bn_recal: BnRecal,
    /// Robustness evaluation of every reported model (corruptions of the
    /// test split).
    pub ood: OodSpec,
}

impl Default for SoupSettings {
    fn default() -> Self {
        SoupSettings {
            sparsity: 0.9,
            candidates: 3,
            soup: SoupKind::Uniform,
            strict: false,
            vary: Vary::Seed,
            vary_values: Vec::new(),
            mask_momentum: true,
            exclude: Vec::new(),
            bn_recal_fraction: 0.2,
            bn_recal: BnRecal::Cumulative,
            ood: OodSpec::default(),
        }
    }
}

impl SoupSettings {
    /// Checks the values before any work starts. `retrain_length` says
    /// whether the method can give candidates different lengths
    /// (`--vary retrain-length`).
    pub fn validate(&self, retrain_length: bool) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(0.0..1.0).contains(&self.sparsity) {
            return bad(format!(
                "--sparsity must be in [0, 1), got {}",
                self.sparsity
            ));
        }
        if self.candidates == 0 {
            return bad("--candidates must be at least 1".into());
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
        let values = &self.vary_values;
        match self.vary {
            Vary::Seed if !values.is_empty() => {
                return bad("--vary seed takes no values (seed = base seed + i)".into())
            }
            Vary::Seed => {}
            Vary::RetrainLength if !retrain_length => return bad(
                "--vary retrain-length does not apply: every candidate trains to its segment's end"
                    .into(),
            ),
            v if values.len() != self.candidates as usize => {
                return bad(format!(
                    "--vary {} needs one value per candidate: {} given for {} candidates",
                    v.name(),
                    values.len(),
                    self.candidates
                ))
            }
            Vary::RetrainLength if values.iter().any(|v| *v < 1.0 || v.fract() != 0.0) => {
                return bad("retrain lengths must be whole numbers of epochs >= 1".into())
            }
            Vary::Lr if values.iter().any(|v| !v.is_finite() || *v <= 0.0) => {
                return bad("--vary lr values must be positive".into())
            }
            _ if values.iter().any(|v| !v.is_finite() || *v < 0.0) => {
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
}

/// The flags of [`SoupSettings`], shared by every command that makes soups
/// (`trainer sms`, `trainer pdt`): a command adds them with
/// `#[command(flatten)]` and lays them over its defaults and config file
/// with [`SoupArgs::apply`]. A flag that is not given leaves the setting
/// as it was.
#[derive(Debug, Clone, Default, Args)]
pub struct SoupArgs {
    /// Final sparsity over prunable weights, in [0, 1) [default: 0.9].
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Candidates per soup (m) [default: 3].
    #[arg(long)]
    pub candidates: Option<u32>,
    /// How a soup combines its candidates [default: uniform].
    #[arg(long, value_enum)]
    pub soup: Option<SoupKind>,
    /// Greedy soups demand a strict gain in validation accuracy.
    #[arg(long)]
    pub strict: bool,
    /// What a soup's candidates differ in [default: seed].
    #[arg(long, value_enum)]
    pub vary: Option<Vary>,
    /// Per-candidate values for --vary (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub vary_values: Option<Vec<f64>>,
    /// Share of an epoch's batches for batch-norm recalibration [default: 0.2].
    #[arg(long)]
    pub bn_recal_fraction: Option<f64>,
    /// Batch-norm recalibration: cumulative (plain average over the
    /// batches) or ema (momentum 0.1, as the reference code).
    #[arg(long, value_enum)]
    pub bn_recal: Option<BnRecal>,
    /// Never prune tensors matching this regex (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Robustness evaluation of every reported model.
    #[command(flatten)]
    pub ood: OodArgs,
}

impl SoupArgs {
    /// Sets every setting whose flag was given (not validated: the command
    /// validates its whole configuration).
    pub fn apply(&self, s: &mut SoupSettings) -> Result<()> {
        crate::config::set_given!(
            self,
            s,
            sparsity,
            candidates,
            soup,
            vary,
            vary_values,
            bn_recal_fraction,
            bn_recal
        );
        if self.strict {
            s.strict = true;
        }
        if !self.exclude.is_empty() {
            s.exclude = self.exclude.clone();
        }
        s.ood = self.ood.apply(s.ood.clone())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_validation_for_every_method() {
        let ok = SoupSettings::default();
        assert!(ok.validate(true).is_ok() && ok.validate(false).is_ok());
        let lengths = SoupSettings {
            vary: Vary::RetrainLength,
            vary_values: vec![1.0, 2.0, 3.0],
            ..SoupSettings::default()
        };
        assert!(lengths.validate(true).is_ok());
        let err = lengths.validate(false).unwrap_err().to_string();
        assert!(err.contains("does not apply"), "{err}");
        let short = SoupSettings {
            vary: Vary::WeightDecay,
            vary_values: vec![1e-4],
            ..SoupSettings::default()
        };
        let err = short.validate(true).unwrap_err().to_string();
        assert!(err.contains("--vary weight-decay needs one value per candidate"));
        let zero_lr = SoupSettings {
            vary: Vary::Lr,
            vary_values: vec![0.1, 0.0, 0.1],
            ..SoupSettings::default()
        };
        assert!(zero_lr.validate(true).is_err());
        let regex = SoupSettings {
            exclude: vec!["(".into()],
            ..SoupSettings::default()
        };
        assert!(regex
            .validate(true)
            .unwrap_err()
            .to_string()
            .contains("--exclude"));
    }

    #[test]
    fn names_come_from_the_enums() {
        for v in Vary::value_variants() {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json.as_str(), Some(v.name()));
            assert_eq!(<Vary as ValueEnum>::from_str(v.name(), false).unwrap(), *v);
        }
        assert_eq!(
            <SoupKind as ValueEnum>::from_str("greedy", false).unwrap(),
            SoupKind::Greedy
        );
    }
}
