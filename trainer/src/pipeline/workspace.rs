//! What every step of a run works with, whatever the method: the training
//! and soup settings, the data set, the device, the model description and
//! the tensors the run prunes. The one evaluation path of reported models
//! is on it too (`evaluation.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::ProgressBar;
use soup_core::{FloatTensorStats, NmGeometry, NmPattern, PruneReport};
use tch::Device;

use crate::arch::{Arch, ModelSpec};
use crate::config::{parse_device, TrainSettings};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::pipeline::lr::PruneImpact;
use crate::pipeline::mask::{prune_impact, Footprint};
use crate::pipeline::settings::SoupSettings;

/// The data, device and model description of an open run.
#[derive(Debug)]
pub struct Workspace {
    /// The training settings (data, model, batches, optimizer, seeds).
    pub train: TrainSettings,
    /// The soup settings (recalibration, exclusions, robustness).
    pub soups: SoupSettings,
    /// The data set.
    pub data: Dataset,
    /// Where to compute.
    pub device: Device,
    /// Architecture.
    pub arch: Arch,
    /// Input shape and classes.
    pub spec: ModelSpec,
    /// The tensors this run prunes (prunable, less the exclusions), found
    /// once: masks are enforced and checked, and sparsity is reported,
    /// over exactly these.
    pub pruned: Vec<String>,
    /// The shape of each tensor the run prunes (read once, for the N:M
    /// groups they can hold).
    shapes: BTreeMap<String, Vec<usize>>,
    /// The trainable tensors (weights and biases, not batch-norm
    /// statistics), sorted: the parameter norm runs over these.
    pub trainable: Vec<String>,
    /// Draw progress bars (standard error is a terminal).
    pub bars: bool,
    /// Print a line per step on standard error.
    pub verbose: bool,
}

impl Workspace {
    /// Loads the data set of `train`, sets libtorch's thread count where
    /// it is given, and finds the tensors the run prunes.
    pub fn open(train: &TrainSettings, soups: &SoupSettings) -> Result<Workspace> {
        let arch: Arch = train.model.parse()?;
        let device = parse_device(&train.device)?;
        if train.threads > 0 {
            tch::set_num_threads(train.threads as i32);
        }
        let data = train.load_data()?;
        let [c, h, w] = data.input_shape().map(|d| d as i64);
        let spec = ModelSpec {
            num_classes: data.num_classes as i64,
            input: [c, h, w],
        };
        let model = Model::new(arch, spec, Device::Cpu);
        let pruned = crate::pipeline::pruned_names(model.prunable_names(), &soups.exclude);
        let state = model.state_dict();
        let shapes = pruned
            .iter()
            .map(|n| {
                let shape = state[n].size().iter().map(|&d| d as usize).collect();
                (n.clone(), shape)
            })
            .collect();
        let trainable = state
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        Ok(Workspace {
            train: train.clone(),
            soups: soups.clone(),
            data,
            device,
            arch,
            spec,
            pruned,
            shapes,
            trainable,
            bars: false,
            verbose: false,
        })
    }

    /// Prints a progress line on standard error when verbose.
    pub fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Training batches per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.data.train_batches_per_epoch(self.train.batch_size) as u64
    }

    /// A model loaded from `path`.
    pub fn load(&self, path: &Path) -> Result<Model> {
        let model = Model::new(self.arch, self.spec, self.device);
        model.load(path)?;
        Ok(model)
    }

    /// A progress bar of `len` steps (hidden unless bars are on).
    pub fn bar(&self, len: u64, msg: String) -> ProgressBar {
        crate::pipeline::executor::progress_bar(self.bars, len, msg)
    }
}

impl Workspace {
    /// Takes out of the pruned tensors those that cannot be split into the
    /// N:M groups of every pattern in `patterns` (their input dimension is
    /// not a multiple of M, as the first convolution of a one-channel
    /// image model): such tensors stay dense, as NVIDIA's ASP leaves them.
    /// Returns their names.
    pub fn keep_nm_groupable(&mut self, patterns: &[NmPattern]) -> Vec<String> {
        if patterns.is_empty() {
            return Vec::new();
        }
        let fits = |name: &String| {
            patterns
                .iter()
                .all(|p| NmGeometry::new(&self.shapes[name], false, p.m()).is_ok())
        };
        let (kept, dense): (Vec<String>, Vec<String>) =
            std::mem::take(&mut self.pruned).into_iter().partition(fits);
        self.pruned = kept;
        dense
    }

    /// What a pruning step on files did, from soup-core's report of it
    /// (`report`, from [`checkpoint_ops::prune`] or its dry run): the
    /// impact (parameter norms over the trainable tensors, share of the
    /// remaining weights removed: `asked` where given) and the sparsity
    /// after over the pruned tensors. Nothing is reloaded. The one place a
    /// pruning step on files is measured.
    ///
    /// [`checkpoint_ops::prune`]: crate::pipeline::checkpoint_ops::prune
    pub fn measure_pruning(
        &self,
        report: &PruneReport,
        asked: Option<f64>,
    ) -> Result<(PruneImpact, f64)> {
        let stats: BTreeMap<&str, &FloatTensorStats> = report
            .float_tensors
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let find = |name: &String| {
            stats.get(name.as_str()).copied().ok_or_else(|| {
                Error::Run(format!(
                    "{}: the pruning report has no float tensor `{name}`",
                    report.input.display()
                ))
            })
        };
        let (mut sq_before, mut sq_after) = (0.0f64, 0.0f64);
        for name in &self.trainable {
            let t = find(name)?;
            sq_before += t.sum_squares_before;
            sq_after += t.sum_squares_after;
        }
        let (mut zb, mut za, mut n) = (0u64, 0u64, 0u64);
        for name in &self.pruned {
            let t = find(name)?;
            zb += t.zeros_before;
            za += t.zeros_after;
            n += t.numel;
        }
        let ratio = |z: u64| if n == 0 { 0.0 } else { z as f64 / n as f64 };
        let before = Footprint {
            norm: sq_before.sqrt(),
            sparsity: ratio(zb),
        };
        let after = Footprint {
            norm: sq_after.sqrt(),
            sparsity: ratio(za),
        };
        Ok((prune_impact(before, after, asked), after.sparsity))
    }
}
