//! The configuration of a sparse-model-soup run (`RUN/config.toml`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use soup_core::NmPattern;

use crate::config::{TrainConfig, TrainSettings};
use crate::error::{Error, Result};
use crate::methods::imp;
use crate::pipeline::lr::RetrainKind;
use crate::pipeline::SoupSettings;
use crate::schedule::ScheduleKind;
use crate::sms::layout::Chain;

/// A comparison run next to the soups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Iterative magnitude pruning with one candidate per phase.
    Imp,
    /// IMP whose phases retrain M times longer (the soup's compute).
    ImpLong,
    /// IMP whose every phase delivers the SWA average of its masked
    /// weights over the last `1 - imp_swa_from` of its retraining (same
    /// seed, parents and compute as IMP); the next phase prunes that
    /// average.
    ImpSwa,
    /// M independent IMP chains averaged, re-pruned and retrained.
    Reprune,
}

impl Baseline {
    /// The baseline's name, as `--baselines`, `--step baseline:NAME`, the
    /// config file and the report's rows spell it (`imp-swa`).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .expect("every baseline has a name")
            .get_name()
            .to_string()
    }

    /// The baseline named `name` (as [`Baseline::name`] spells it).
    pub fn from_name(name: &str) -> Option<Baseline> {
        use clap::ValueEnum;
        Baseline::value_variants()
            .iter()
            .copied()
            .find(|b| b.name() == name)
    }

    /// Every baseline's name, in order, comma-separated (for messages).
    pub fn names() -> String {
        use clap::ValueEnum;
        let names: Vec<String> = Baseline::value_variants()
            .iter()
            .map(|b| b.name())
            .collect();
        names.join(", ")
    }

    /// The chain whose last phase is the baseline's model in the report
    /// (IMP-RePrune's chain also needs the IMP chains it averages).
    pub fn chain(self) -> Chain {
        match self {
            Baseline::Imp => Chain::Imp(0),
            Baseline::ImpLong => Chain::ImpLong,
            Baseline::ImpSwa => Chain::ImpSwa,
            Baseline::Reprune => Chain::Reprune,
        }
    }
}

/// Where the `imp-swa` baseline starts averaging unless told otherwise.
pub const IMP_SWA_FROM: f64 = 0.75;

fn is_default_imp_swa_from(f: &f64) -> bool {
    *f == IMP_SWA_FROM
}

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
    /// The soup settings every method shares: sparsity, candidates per
    /// phase, what they vary, how they are merged, exclusions,
    /// recalibration and robustness evaluation (top-level keys too).
    #[serde(flatten)]
    pub soups: SoupSettings,
    /// Prune-retrain phases to reach it.
    pub phases: u32,
    /// Retraining epochs per phase (fractions allowed: 0.5 is half an
    /// epoch of iterations).
    pub epochs_per_phase: f64,
    /// Epochs of dense pretraining (ignored with `from`, but still ALLR's
    /// `E_pretrain`).
    pub pretrain_epochs: u64,
    /// Start from this trained dense checkpoint instead of pretraining.
    pub from: Option<String>,
    /// Retraining schedule.
    pub schedule: RetrainKind,
    /// Pretraining schedule.
    pub pretrain_schedule: ScheduleKind,
    /// Baselines to run.
    pub baselines: Vec<Baseline>,
    /// Runs of the whole pipeline with base seeds `seed + 1000 r`, r < R.
    pub repeats: u32,
    /// Stochastic weight averaging of the soup's candidates: each delivers
    /// the average of its weights over the last `1 - swa_from` of its
    /// retraining (see [`crate::swa`]); off when absent (and left out of
    /// the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_from: Option<f64>,
    /// Iterations between the iterates SWA averages; one epoch's when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_every: Option<u64>,
    /// The `imp-swa` baseline averages its weights over the last
    /// `1 - imp_swa_from` of each phase's retraining, spaced `swa_every`
    /// iterations (one epoch when absent), whatever `swa_from` says about
    /// the soup's candidates. Left out of the file at its default
    /// ([`IMP_SWA_FROM`]), so configurations written before it existed
    /// read back equal.
    #[serde(skip_serializing_if = "is_default_imp_swa_from")]
    pub imp_swa_from: f64,
    /// Prune the dense parent once to this N:M pattern and run every phase
    /// on that fixed mask (the pattern sets the sparsity; `sparsity` is not
    /// used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nm: Option<NmPattern>,
    /// One N:M pattern per phase, each at most as dense as the one before:
    /// phase k prunes the previous phase's model to pattern k inside its
    /// mask (weights already zero stay zero).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nm_ladder: Vec<NmPattern>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            train: TrainSettings::default(),
            soups: SoupSettings::default(),
            phases: 3,
            epochs_per_phase: 2.0,
            pretrain_epochs: 5,
            from: None,
            schedule: RetrainKind::Allr,
            pretrain_schedule: ScheduleKind::Cosine,
            baselines: Vec::new(),
            repeats: 1,
            swa_from: None,
            swa_every: None,
            imp_swa_from: IMP_SWA_FROM,
            nm: None,
            nm_ladder: Vec::new(),
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
        self.soups.validate(true)?;
        if self.phases == 0 || self.repeats == 0 {
            return bad("--phases and --repeats must be at least 1".into());
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
        if self.swa_from.is_some_and(|f| !(0.0..1.0).contains(&f)) {
            return bad("--swa-from must be in [0, 1)".into());
        }
        if !(0.0..1.0).contains(&self.imp_swa_from) {
            return bad(format!(
                "--imp-swa-from must be in [0, 1), got {}",
                self.imp_swa_from
            ));
        }
        if self.imp_swa_from != IMP_SWA_FROM && !self.baselines.contains(&Baseline::ImpSwa) {
            return bad(
                "--imp-swa-from sets the imp-swa baseline: add imp-swa to --baselines".into(),
            );
        }
        if self.swa_every == Some(0) {
            return bad("--swa-every must be at least 1".into());
        }
        self.validate_nm()?;
        self.train.validate()?;
        if self.train.lr <= 0.0 {
            return bad("--lr must be positive".into());
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

    fn validate_nm(&self) -> Result<()> {
        if self.nm.is_some() && !self.nm_ladder.is_empty() {
            return Err(Error::Config(
                "give --nm (one pattern for every phase) or --nm-ladder (one per phase), not both"
                    .into(),
            ));
        }
        if !self.nm_ladder.is_empty() && self.nm_ladder.len() != self.phases as usize {
            return Err(Error::Config(format!(
                "--nm-ladder has {} patterns but the run has {} phases: give one pattern per \
                 phase (--phases defaults to the ladder's length)",
                self.nm_ladder.len(),
                self.phases
            )));
        }
        for pair in self.nm_ladder.windows(2) {
            let density = |p: &NmPattern| p.n() as f64 / p.m() as f64;
            if density(&pair[1]) > density(&pair[0]) {
                return Err(Error::Config(format!(
                    "--nm-ladder must not get denser: {} keeps more weights than {} before it",
                    pair[1], pair[0]
                )));
            }
        }
        Ok(())
    }

    /// The N:M pattern of phase `phase` (1-based), if the run prunes to
    /// N:M patterns.
    pub fn pattern(&self, phase: u32) -> Option<NmPattern> {
        match self.nm_ladder.get(phase as usize - 1) {
            Some(p) => Some(*p),
            None => self.nm,
        }
    }

    /// Every N:M pattern the run prunes to, in phase order.
    pub fn patterns(&self) -> Vec<NmPattern> {
        match self.nm {
            Some(p) => vec![p],
            None => self.nm_ladder.clone(),
        }
    }

    /// The fraction of the remaining weights each phase removes:
    /// `q = 1 - (1 - s)^(1/k)`.
    pub fn prune_fraction(&self) -> f64 {
        imp::prune_fraction(self.soups.sparsity, self.phases)
    }

    /// The sparsity over prunable weights after phase `p` (1-based):
    /// `1 - (1 - q)^p`, or `1 - N/M` for an N:M pattern (over the tensors
    /// that can be grouped).
    pub fn target_sparsity(&self, phase: u32) -> f64 {
        if let Some(p) = self.pattern(phase) {
            return 1.0 - p.n() as f64 / p.m() as f64;
        }
        imp::target_sparsity(self.soups.sparsity, self.phases, phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_schedule_matches_the_method() {
        let mut cfg = SmsConfig {
            phases: 3,
            ..SmsConfig::default()
        };
        cfg.soups.sparsity = 0.98;
        assert!((cfg.prune_fraction() - 0.728_558).abs() < 1e-6);
        assert!((cfg.target_sparsity(3) - 0.98).abs() < 1e-12);
        assert!((cfg.target_sparsity(1) - cfg.prune_fraction()).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_and_rejects_bad_values() {
        let cfg = SmsConfig::default();
        let back: SmsConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        let mut bad = SmsConfig::default();
        bad.soups.vary = crate::pipeline::Vary::WeightDecay;
        bad.soups.vary_values = vec![1e-4];
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("one value per candidate"));
        use clap::ValueEnum;
        assert_eq!(
            Baseline::from_str("imp-long", false).unwrap(),
            Baseline::ImpLong
        );
        assert!(Baseline::from_str("nope", false).is_err());
        // One spelling everywhere: clap's, serde's and the report's.
        for b in Baseline::value_variants() {
            let serde_name = serde_json::to_value(b).unwrap();
            assert_eq!(serde_name.as_str(), Some(b.name().as_str()));
            assert_eq!(Baseline::from_name(&b.name()), Some(*b));
        }
        assert_eq!(Baseline::ImpSwa.name(), "imp-swa");
        assert_eq!(
            Baseline::ImpSwa.chain().dir(Path::new("RUN")),
            Path::new("RUN/baselines/imp-swa")
        );
    }

    #[test]
    fn imp_swa_from_is_checked_and_written_only_when_set() {
        for bad in [1.0, -0.1, f64::NAN] {
            let cfg = SmsConfig {
                imp_swa_from: bad,
                ..SmsConfig::default()
            };
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("--imp-swa-from must be in [0, 1)"), "{err}");
        }
        let default = SmsConfig::default();
        assert!(!default.to_toml().contains("imp_swa_from"));
        let cfg = SmsConfig {
            imp_swa_from: 0.5,
            ..SmsConfig::default()
        };
        assert!(cfg.to_toml().contains("imp_swa_from = 0.5"));
        let back: SmsConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        // A setting of a baseline the run does not make is refused.
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("add imp-swa to --baselines"), "{err}");
        let with = SmsConfig {
            baselines: vec![Baseline::ImpSwa],
            ..cfg
        };
        with.validate().unwrap();
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
            epochs_per_phase: 0.1,
            pretrain_epochs: 1,
            baselines: vec![Baseline::Imp, Baseline::Reprune],
            ..SmsConfig::default()
        };
        want.train.threads = 1;
        want.soups.candidates = 2;
        want.soups.ood = toml::from_str("corruptions = \"none\"\nseverities = [3]").unwrap();
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
