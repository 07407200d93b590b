//! An open sparse-model-soup run: its configuration, data, device and
//! model description, and where each chain's files are (which is also how a
//! resumed run finds the steps already done). The steps themselves are
//! `impl Session` blocks in their own files: evaluation, parents (dense
//! model and pruning), candidates, souping and baselines.
//!
//! Each step reads its inputs from the run folder and writes its outputs
//! there atomically, and is skipped when its outputs exist, so steps can run
//! in one process, in several (`--jobs`), or as separate cluster jobs, and a
//! killed run resumes where it stopped.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::arch::{Arch, ModelSpec};
use crate::checkpoint::write_atomic;
use crate::config::parse_device;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::schedule::Schedule;
use crate::sms::config::{SmsConfig, Vary};
use crate::sms::layout::{Chain, Layout};

/// One open run: its configuration, data and model description.
#[derive(Debug)]
pub struct Session {
    /// The configuration.
    pub cfg: SmsConfig,
    /// Paths.
    pub layout: Layout,
    /// The data set.
    pub data: Dataset,
    /// Where to compute.
    pub device: Device,
    /// Architecture.
    pub arch: Arch,
    /// Input shape and classes.
    pub spec: ModelSpec,
    /// Draw progress bars (standard error is a terminal).
    pub bars: bool,
    /// Print a line per step on standard error.
    pub verbose: bool,
}

/// Checks `cfg` and writes it to `run/config.toml`, or checks that the
/// folder's existing configuration is the same one.
pub fn write_config(cfg: &SmsConfig, run: &Path) -> Result<()> {
    cfg.validate()?;
    cfg.claim(run)
}

/// Writes `value` as pretty JSON, atomically.
pub(super) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads a record written by [`write_json`].
pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable results: {e}", path.display())))
}

/// Creates a folder and its parents.
pub(super) fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

impl Session {
    /// Starts or resumes the run in `run` with `cfg`. A folder that already
    /// holds a run must hold the same configuration.
    pub fn create(cfg: SmsConfig, run: &Path) -> Result<Session> {
        write_config(&cfg, run)?;
        Self::with_config(cfg, Layout::new(run))
    }

    /// Opens the existing run in `run` (for the per-step commands).
    pub fn open(run: &Path) -> Result<Session> {
        let layout = Layout::new(run);
        if !layout.config().exists() {
            return Err(Error::Config(format!(
                "{} holds no run (no config.toml): start one with `trainer sms --out {}`",
                run.display(),
                run.display()
            )));
        }
        let cfg = SmsConfig::from_file(&layout.config())?;
        cfg.validate()?;
        Self::with_config(cfg, layout)
    }

    pub(super) fn with_config(cfg: SmsConfig, layout: Layout) -> Result<Session> {
        let arch: Arch = cfg.train.model.parse()?;
        let device = parse_device(&cfg.train.device)?;
        if cfg.train.threads > 0 {
            tch::set_num_threads(cfg.train.threads as i32);
        }
        let data = Dataset::load_with(&cfg.train.data, cfg.train.split_seed, &cfg.train.folder)?;
        let [c, h, w] = data.input_shape().map(|d| d as i64);
        let spec = ModelSpec {
            num_classes: data.num_classes as i64,
            input: [c, h, w],
        };
        Ok(Session {
            cfg,
            layout,
            data,
            device,
            arch,
            spec,
            bars: false,
            verbose: false,
        })
    }

    pub(super) fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Training batches per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.data.train_batches_per_epoch(self.cfg.train.batch_size) as u64
    }

    /// A model loaded from `path`.
    pub fn load(&self, path: &Path) -> Result<Model> {
        let model = Model::new(self.arch, self.spec, self.device);
        model.load(path)?;
        Ok(model)
    }

    pub(super) fn pretrain_schedule(&self, eta_max: f64) -> Schedule {
        let per_epoch = self.per_epoch();
        Schedule {
            kind: self.cfg.pretrain_schedule,
            peak: eta_max,
            total: per_epoch * self.cfg.pretrain_epochs.max(1),
            warmup: (self.cfg.train.warmup_epochs * per_epoch as f64).round() as u64,
        }
    }

    /// The tensors soup-core prunes in this run: the prunable ones by
    /// soup-core's rule, less those the configuration excludes. Sparsity is
    /// reported over exactly these.
    pub fn pruned_names(&self, model: &Model) -> Vec<String> {
        let keep = soup_core::Selection::new(&[], &self.cfg.exclude)
            .expect("exclusions are checked when the configuration is read");
        model
            .prunable_names()
            .into_iter()
            .filter(|n| keep.matches(n))
            .collect()
    }

    pub(super) fn bar(&self, len: u64, msg: String) -> ProgressBar {
        crate::jobs::progress_bar(self.bars, len, msg)
    }

    /// Where a chain's phase-`phase` parent is. Every IMP-style chain starts
    /// from the same pruned dense model as the soup chain, so phase 1 shares
    /// its file.
    pub fn parent_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong if phase == 1 => self.layout.parent(Chain::Soup, 1),
            _ => self.layout.parent(chain, phase),
        }
    }

    pub(super) fn prune_info_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong if phase == 1 => self.layout.prune_info(Chain::Soup, 1),
            _ => self.layout.prune_info(chain, phase),
        }
    }

    /// Where candidate `index` of a chain's phase is. IMP chain `j`'s first
    /// phase trains exactly what soup candidate `j` trains (same parent,
    /// seed and settings) when candidates vary by seed, so it is shared.
    pub fn candidate_path(&self, chain: Chain, phase: u32, index: u32) -> (PathBuf, PathBuf) {
        match chain {
            Chain::Imp(j)
                if phase == 1 && self.cfg.vary == Vary::Seed && j < self.cfg.candidates =>
            {
                (
                    self.layout.candidate(Chain::Soup, 1, j),
                    self.layout.candidate_info(Chain::Soup, 1, j),
                )
            }
            _ => (
                self.layout.candidate(chain, phase, index),
                self.layout.candidate_info(chain, phase, index),
            ),
        }
    }

    /// The checkpoint a chain's phase starts from before pruning.
    pub(super) fn phase_source(&self, chain: Chain, phase: u32) -> PathBuf {
        if phase == 1 {
            return self.layout.dense_finished();
        }
        match chain {
            Chain::Soup => self.layout.soup(Chain::Soup, phase - 1),
            Chain::Imp(_) | Chain::ImpLong => self.candidate_path(chain, phase - 1, 0).0,
            Chain::Reprune => self.layout.soup_avg(Chain::Reprune, phase),
        }
    }
}
