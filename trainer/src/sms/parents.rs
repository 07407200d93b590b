//! The parents of the phases: the dense model (trained or copied) and, for
//! every chain, its parent pruned by global magnitude through soup-core,
//! with what pruning removed (ALLR needs it).

use std::path::Path;

use crate::error::{Error, Result};
use crate::methods::imp;
use crate::run::{run_training, ProgressOutput};
use crate::sms::layout::Chain;
use crate::sms::records::{Evaluation, PruneInfo};
use crate::sms::session::{mkdir, read_json, write_json, Session};

impl Session {
    /// The dense parent: trained (`pretrain_epochs`) or copied (`from`).
    pub fn ensure_dense(&self) -> Result<Evaluation> {
        let path = self.layout.dense();
        if !path.exists() {
            if let Some(from) = &self.cfg.from {
                self.ws.say(format!("dense: copying {from}"));
                let model = self.ws.load(Path::new(from))?;
                mkdir(&self.layout.dense_dir())?;
                model.save(&path)?;
            } else {
                self.ws.say(format!(
                    "dense: pretraining {} for {} epochs",
                    self.cfg.train.model, self.cfg.pretrain_epochs
                ));
                // A dense run that did not finish continues after its last
                // finished epoch.
                let dir = self.layout.dense_dir();
                let tc = self.cfg.pretrain_config();
                let progress = match (self.ws.bars, self.ws.verbose) {
                    (true, _) => ProgressOutput::Bar,
                    (false, true) => ProgressOutput::Lines,
                    _ => ProgressOutput::Quiet,
                };
                run_training(&tc, &dir, progress, true)?;
            }
        }
        let info_path = self.layout.dense_eval();
        let finished = self.layout.dense_finished();
        if info_path.exists() && finished.exists() {
            return read_json(&info_path);
        }
        let eval = self.ws.finish(&self.ws.load(&path)?, &finished)?;
        write_json(&info_path, &eval)?;
        Ok(eval)
    }

    /// Prunes the parent of a chain's phase: a fraction `q` of the
    /// remaining prunable weights by global magnitude (soup-core), or for
    /// IMP-RePrune the average of the chains down to the phase's target.
    /// With N:M patterns, every chain prunes to the phase's pattern: phase 1
    /// the dense model, later phases inside the mask the model has (with a
    /// fixed `--nm` pattern that changes nothing: the phases retrain on one
    /// mask), and IMP-RePrune its average afresh.
    pub fn prepare(&self, chain: Chain, phase: u32) -> Result<PruneInfo> {
        let parent = self.parent_path(chain, phase);
        let info_path = self.prune_info_path(chain, phase);
        if info_path.exists() && parent.exists() {
            return read_json(&info_path);
        }
        if phase == 1 {
            self.ensure_dense()?;
        }
        let source = self.phase_source(chain, phase);
        if !source.exists() {
            return Err(Error::Run(format!(
                "{} is missing: finish phase {} of {} first",
                source.display(),
                phase - 1,
                chain.name()
            )));
        }
        mkdir(parent.parent().expect("phase folder"))?;
        let (fraction, of_remaining) = match chain {
            Chain::Reprune => (self.cfg.target_sparsity(phase), false),
            _ => (self.cfg.prune_fraction(), true),
        };
        let pattern = self.cfg.pattern(phase);
        // A parent written by a killed run is the same pruning of the same
        // source: its report comes from a dry run instead of a rewrite.
        let target = (!parent.exists()).then_some(parent.as_path());
        let report = match pattern {
            // IMP-RePrune prunes its average afresh; every other chain
            // prunes inside the mask its model already has.
            Some(p) => imp::prune_nm(
                &source,
                target,
                p,
                phase > 1 && chain != Chain::Reprune,
                &self.ws.pruned,
            )?,
            None => imp::prune(
                &source,
                target,
                fraction,
                of_remaining,
                &self.cfg.soups.exclude,
            )?,
        };
        let asked = (of_remaining && pattern.is_none()).then_some(fraction);
        let (impact, sparsity) = self.ws.measure_pruning(&report, asked)?;
        let info = PruneInfo {
            source,
            fraction: if pattern.is_some() { 0.0 } else { fraction },
            of_remaining: of_remaining && pattern.is_none(),
            sparsity,
            impact,
            pattern,
            dense: if pattern.is_some() {
                self.nm_dense.clone()
            } else {
                Vec::new()
            },
        };
        let how = match pattern {
            Some(p) => format!(" to {p}"),
            None => String::new(),
        };
        self.ws.say(format!(
            "{} phase {phase}: pruned{how} to {:.2}% sparsity (removed {:.2}% of the remaining weights)",
            chain.name(),
            100.0 * info.sparsity,
            100.0 * info.impact.fraction
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }
}
