//! The configuration of a training run (the TOML file a run folder keeps),
//! and device selection.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::FolderOptions;
use crate::error::{Error, Result};
use crate::schedule::ScheduleKind;

/// Every setting of `trainer train`. A config file may give any subset; the
/// rest take these defaults, and command-line flags override both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Data set name or folder.
    pub data: String,
    /// Architecture name.
    pub model: String,
    /// Training epochs.
    pub epochs: u64,
    /// Images per training batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (Nesterov momentum is used when it is positive).
    pub weight_decay: f64,
    /// Learning-rate schedule after warm-up.
    pub schedule: ScheduleKind,
    /// Epochs of linear warm-up (may be fractional).
    pub warmup_epochs: f64,
    /// Seed of initialisation, batch order and augmentation.
    pub seed: u64,
    /// Seed of the validation split; keep it fixed across runs to compare them.
    pub split_seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU threads for libtorch (0: libtorch's default).
    pub threads: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Image folders: image size, normalisation, skipping of unreadable
    /// files, decoding threads (the `[folder]` table).
    pub folder: FolderOptions,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: "fashion-mnist".into(),
            model: "cnn".into(),
            epochs: 10,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
            seed: 0,
            split_seed: 0,
            device: "auto".into(),
            threads: 0,
            eval_batch_size: 500,
            folder: FolderOptions::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config file; missing keys take their defaults, unknown
    /// keys are an error.
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a TrainConfig always serialises")
    }

    /// Rejects values no run can use.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            return bad("batch size must be at least 2 (batch norm needs two samples)");
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr must be a non-negative number");
        }
        let decay_ok = self.weight_decay.is_finite() && self.weight_decay >= 0.0;
        if !(0.0..1.0).contains(&self.momentum) || !decay_ok {
            return bad("momentum must be in [0, 1) and weight decay non-negative");
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad("warmup epochs must be non-negative");
        }
        self.folder.validate()?;
        parse_device(&self.device).map(|_| ())
    }
}

/// Parses `auto` (the first GPU when there is one, else the CPU), `cpu`,
/// `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let cuda = |n: usize| {
        let count = tch::Cuda::device_count() as usize;
        if n < count {
            Ok(Device::Cuda(n))
        } else {
            Err(Error::Config(format!(
                "device {s:?}: this machine has {count} CUDA device(s)"
            )))
        }
    };
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Config(format!(
                "unknown device {s:?}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_takes_defaults_and_unknown_keys_fail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "model = \"resnet20\"\nschedule = \"step\"\n").unwrap();
        let c = TrainConfig::from_file(&p).unwrap();
        assert_eq!(
            (c.model.as_str(), c.schedule, c.epochs),
            ("resnet20", ScheduleKind::Step, 10)
        );
        assert_eq!(toml::from_str::<TrainConfig>(&c.to_toml()).unwrap(), c);
        std::fs::write(&p, "modle = \"cnn\"\n").unwrap();
        assert!(TrainConfig::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("modle"));
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:999").is_err());
    }
}
