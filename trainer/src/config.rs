//! The configuration of a training run (the TOML file a run folder keeps),
//! and device selection.

use std::path::Path;

use clap::Args;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::{Dataset, FolderOptions, IdxAugment, IDX_CROP_PADDING};
use crate::error::{Error, Result};
use crate::schedule::ScheduleKind;

/// The settings of SGD training that every training command shares (dense
/// training, `trainer sms`, pruning during training): data, model, batch
/// sizes, optimizer, seeds and where to compute. Each command's
/// configuration embeds it with `#[serde(flatten)]`, so its keys sit at the
/// top level of the command's TOML file, and its flags come from one clap
/// struct, [`TrainArgs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    /// Data set name or folder.
    pub data: String,
    /// Architecture name.
    pub model: String,
    /// Images per training batch.
    pub batch_size: usize,
    /// Peak learning rate (`eta_max`).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (Nesterov momentum is used when it is positive).
    pub weight_decay: f64,
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
    /// Training augmentation of IDX data (left out when `none`, so configs
    /// written before it existed read back the same).
    #[serde(skip_serializing_if = "IdxAugment::is_none")]
    pub augment: IdxAugment,
    /// Zero padding in pixels of the IDX random crop (left out when 2).
    #[serde(skip_serializing_if = "is_idx_crop_padding")]
    pub augment_pad: usize,
    /// Image folders: image size, normalisation, skipping of unreadable
    /// files, decoding threads (the `[folder]` table; left out when default).
    #[serde(skip_serializing_if = "crate::data::FolderOptions::is_default")]
    pub folder: FolderOptions,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            data: "fashion-mnist".into(),
            model: "cnn".into(),
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 0.0,
            seed: 0,
            split_seed: 0,
            device: "auto".into(),
            threads: 0,
            eval_batch_size: 500,
            augment: IdxAugment::None,
            augment_pad: IDX_CROP_PADDING,
            folder: FolderOptions::default(),
        }
    }
}

fn is_idx_crop_padding(pad: &usize) -> bool {
    *pad == IDX_CROP_PADDING
}

impl TrainSettings {
    /// Rejects values no training can use. The device is checked where the
    /// work runs (a run may be configured on a machine without its GPU).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 2 for training (batch norm needs two samples) and 1 for evaluation");
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
        self.folder.validate()
    }

    /// Loads the data set with its validation split, image-folder options
    /// and training augmentation: the one way a training command opens
    /// its data.
    pub fn load_data(&self) -> Result<Dataset> {
        let mut data = Dataset::load_with(&self.data, self.split_seed, &self.folder)?;
        data.set_idx_augment(self.augment, self.augment_pad)?;
        Ok(data)
    }
}

/// Lays the flags that were given over settings: for each field named,
/// `$dst.field = $src.field.clone()` where the flag `$src.field` (an
/// `Option`) is `Some`. Every command's flags use it.
macro_rules! set_given {
    ($src:expr, $dst:expr, $($f:ident),* $(,)?) => {
        $(if let Some(v) = &$src.$f {
            $dst.$f = v.clone();
        })*
    };
}
pub(crate) use set_given;

/// The flags of [`TrainSettings`], shared by every training command
/// (`trainer train`, `trainer sms`, `trainer pdt`): a command adds them with
/// `#[command(flatten)]` and applies them over its defaults and config file
/// with [`TrainArgs::apply`]. A flag that is not given leaves the setting as
/// it was.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct TrainArgs {
    /// Data set: fashion-mnist, a folder of IDX or CIFAR binary files, or an
    /// image folder (`train/<class>/*.jpg|png`, `val/<class>/...`) [default:
    /// fashion-mnist].
    #[arg(long)]
    pub data: Option<String>,
    /// Architecture: mlp, cnn, resnet20, resnet56, wrn-D-W, wrn-D-W-ref,
    /// resnet18, resnet50 [default: cnn].
    #[arg(long)]
    pub model: Option<String>,
    /// Images per training batch [default: 128].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate, eta_max [default: 0.1].
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay; Nesterov momentum when positive [default: 5e-4].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Epochs of linear warm-up of the (pre)training schedule [default: 0].
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Seed of initialisation, batch order and augmentation [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the 10% validation split [default: 0].
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Device: auto, cpu, cuda or cuda:N [default: auto].
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads for libtorch; 0 keeps libtorch's default [default: 0].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images per evaluation batch [default: 500].
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Training augmentation of IDX data: none, crop (random crop of the
    /// zero-padded image) or crop-flip (and a horizontal flip, probability
    /// 1/2); CIFAR and image folders keep their own [default: none].
    ///
    /// Crops and flips are torchvision's `RandomCrop(size,
    /// padding=--augment-pad)` and `RandomHorizontalFlip()`, drawn from the
    /// run's seed and the epoch, so a run is repeatable.
    #[arg(long, value_enum)]
    pub augment: Option<IdxAugment>,
    /// Zero padding in pixels of the IDX random crop [default: 2].
    #[arg(long)]
    pub augment_pad: Option<usize>,
    /// Image-folder settings.
    #[command(flatten)]
    pub folder: crate::data::FolderArgs,
}

impl TrainArgs {
    /// Sets every setting whose flag was given.
    pub fn apply(&self, s: &mut TrainSettings) {
        set_given!(
            self,
            s,
            data,
            model,
            batch_size,
            lr,
            momentum,
            weight_decay,
            warmup_epochs,
            seed,
            split_seed,
            device,
            threads,
            eval_batch_size,
            augment,
            augment_pad
        );
        s.folder = self.folder.apply(s.folder.clone());
    }
}

/// Every setting of `trainer train`. A config file may give any subset; the
/// rest take these defaults, and command-line flags override both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// What every training command shares (top-level keys in the file).
    #[serde(flatten)]
    pub train: TrainSettings,
    /// Training epochs.
    pub epochs: u64,
    /// Learning-rate schedule after warm-up.
    pub schedule: ScheduleKind,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            train: TrainSettings::default(),
            epochs: 10,
            schedule: ScheduleKind::Cosine,
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
        if self.epochs == 0 {
            return Err(Error::Config("epochs must be at least 1".into()));
        }
        self.train.validate()?;
        parse_device(&self.train.device).map(|_| ())
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
            (c.train.model.as_str(), c.schedule, c.epochs),
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
    fn augment_is_recorded_only_when_asked() {
        // The default leaves the keys out, so configs written before the
        // setting existed read back equal.
        let plain = TrainConfig::default().to_toml();
        assert!(!plain.contains("augment"), "{plain}");
        let mut c = TrainConfig::default();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            train: TrainArgs,
        }
        use clap::Parser;
        let cli =
            Cli::try_parse_from(["t", "--augment", "crop-flip", "--augment-pad", "3"]).unwrap();
        cli.train.apply(&mut c.train);
        assert_eq!(
            (c.train.augment, c.train.augment_pad),
            (IdxAugment::CropFlip, 3)
        );
        let text = c.to_toml();
        assert!(
            text.contains("augment = \"crop-flip\"") && text.contains("augment_pad = 3"),
            "{text}"
        );
        assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), c);
        assert!(Cli::try_parse_from(["t", "--augment", "rotate"]).is_err());
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:999").is_err());
    }
}
