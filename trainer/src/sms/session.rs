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

use crate::error::{Error, Result};
use crate::pipeline::{Vary, Workspace};
use crate::schedule::Schedule;
use crate::sms::config::SmsConfig;
use crate::sms::layout::{Chain, Layout};

/// One open run: its configuration, folder, and what its steps work with.
#[derive(Debug)]
pub struct Session {
    /// The configuration.
    pub cfg: SmsConfig,
    /// Paths.
    pub layout: Layout,
    /// Data, device, model description, the pruned tensors, and the one
    /// evaluation path.
    pub ws: Workspace,
    /// With N:M patterns: the prunable tensors that cannot be split into
    /// groups of M along their input dimension, left dense.
    pub nm_dense: Vec<String>,
}

/// Checks `cfg` and writes it to `run/config.toml`, or checks that the
/// folder's existing configuration is the same one.
pub fn write_config(cfg: &SmsConfig, run: &Path) -> Result<()> {
    cfg.validate()?;
    cfg.claim(run)
}

pub(super) use crate::pipeline::records::{mkdir, read_json, write_json};

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
        let mut ws = Workspace::open(&cfg.train, &cfg.soups)?;
        let nm_dense = ws.keep_nm_groupable(&cfg.patterns());
        Ok(Session {
            cfg,
            layout,
            ws,
            nm_dense,
        })
    }

    pub(super) fn pretrain_schedule(&self, eta_max: f64) -> Schedule {
        let per_epoch = self.ws.per_epoch();
        Schedule {
            kind: self.cfg.pretrain_schedule,
            peak: eta_max,
            total: per_epoch * self.cfg.pretrain_epochs.max(1),
            warmup: (self.cfg.train.warmup_epochs * per_epoch as f64).round() as u64,
        }
    }

    /// Where a chain's phase-`phase` parent is. Every IMP-style chain starts
    /// from the same pruned dense model as the soup chain, so phase 1 shares
    /// its file.
    pub fn parent_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong | Chain::ImpSwa if phase == 1 => {
                self.layout.parent(Chain::Soup, 1)
            }
            _ => self.layout.parent(chain, phase),
        }
    }

    pub(super) fn prune_info_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong | Chain::ImpSwa if phase == 1 => {
                self.layout.prune_info(Chain::Soup, 1)
            }
            _ => self.layout.prune_info(chain, phase),
        }
    }

    /// Where candidate `index` of a chain's phase is. IMP chain `j`'s first
    /// phase trains exactly what soup candidate `j` trains (same parent,
    /// seed and settings) when candidates vary by seed, so it is shared.
    pub fn candidate_path(&self, chain: Chain, phase: u32, index: u32) -> (PathBuf, PathBuf) {
        match chain {
            Chain::Imp(j)
                if phase == 1
                    && self.cfg.soups.vary == Vary::Seed
                    && j < self.cfg.soups.candidates =>
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
            Chain::Imp(_) | Chain::ImpLong | Chain::ImpSwa => {
                self.candidate_path(chain, phase - 1, 0).0
            }
            Chain::Reprune => self.layout.soup_avg(Chain::Reprune, phase),
        }
    }
}
