//! Candidate training: each candidate of a phase retrains the pruned parent
//! with its own setting (seed, weight decay, retraining length or peak
//! learning rate), keeping pruned weights at exactly 0.0 after every
//! optimizer step, and is finished through the one evaluation path. With
//! SWA (`swa_from`), a soup candidate is the average of its masked
//! iterates over the end of its retraining, recalibrated like every model;
//! the `imp-swa` baseline's phases always are (from `imp_swa_from`).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::optim::{Sgd, SgdConfig};
use crate::pipeline::lr::{allr_peak, candidate_schedule};
use crate::pipeline::PruneMask;
use crate::pipeline::Vary;
use crate::sms::layout::Chain;
use crate::sms::records::{CandidateInfo, PruneInfo};
use crate::sms::session::{mkdir, read_json, write_json, Session};
use crate::swa::{Swa, SwaSchedule};
use crate::train::{train_loop, Hooks};

impl Session {
    /// The settings of candidate `index` of a chain.
    pub(super) fn candidate_settings(&self, chain: Chain, index: u32) -> (u64, f64, f64, f64) {
        let c = &self.cfg;
        let t = &c.train;
        let base = (t.seed, t.weight_decay, c.epochs_per_phase, t.lr);
        match chain {
            Chain::Soup => {
                let v = c.soups.vary_values.get(index as usize).copied();
                match (c.soups.vary, v) {
                    (Vary::Seed, _) => (t.seed + index as u64, base.1, base.2, base.3),
                    (Vary::WeightDecay, Some(v)) => (t.seed, v, base.2, base.3),
                    (Vary::RetrainLength, Some(v)) => (t.seed, base.1, v, base.3),
                    (Vary::Lr, Some(v)) => (t.seed, base.1, base.2, v),
                    _ => base,
                }
            }
            Chain::Imp(j) => (t.seed + j as u64, base.1, base.2, base.3),
            Chain::ImpSwa => base,
            Chain::ImpLong => (t.seed, base.1, base.2 * c.soups.candidates as f64, base.3),
            Chain::Reprune => base,
        }
    }

    /// Retrains candidate `index` of a chain's phase from its pruned parent,
    /// keeping pruned weights at exactly 0.0 after every optimizer step.
    pub fn candidate(&self, chain: Chain, phase: u32, index: u32) -> Result<CandidateInfo> {
        let (path, info_path) = self.candidate_path(chain, phase, index);
        if path.exists() && info_path.exists() {
            return read_json(&info_path);
        }
        let parent = self.parent_path(chain, phase);
        let prune_info_path = self.prune_info_path(chain, phase);
        if !parent.exists() || !prune_info_path.exists() {
            return Err(Error::Run(format!(
                "{} is missing: run `trainer sms --out {} --step prepare:{phase}` first",
                parent.display(),
                self.layout.root.display()
            )));
        }
        let prune: PruneInfo = read_json(&prune_info_path)?;
        let (seed, weight_decay, epochs, eta_max) = self.candidate_settings(chain, index);
        let start = Instant::now();
        let per_epoch = self.ws.per_epoch();
        let total = ((epochs * per_epoch as f64).round() as u64).max(1);
        let varied_peak =
            (matches!(chain, Chain::Soup) && self.cfg.soups.vary == Vary::Lr).then_some(eta_max);
        let schedule = candidate_schedule(
            self.cfg.schedule,
            total,
            self.pretrain_schedule(eta_max),
            allr_peak(
                &prune.impact,
                eta_max,
                epochs,
                self.cfg.pretrain_epochs.max(1) as f64,
            ),
            varied_peak,
        );
        let (model, train_loss, swa_iterates) = if path.exists() {
            // Trained (and recalibrated) before a kill that came ahead of
            // its evaluation; recalibrating again gives the same model.
            (self.ws.load(&path)?, None, None)
        } else {
            let model = self.ws.load(&parent)?;
            let mut opt = Sgd::new(
                &model.vs,
                SgdConfig::new(self.cfg.train.momentum, weight_decay),
            );
            let mask = PruneMask::of_zeros(&opt, &self.ws.pruned);
            let bar = self.ws.bar(
                total,
                format!("{} phase {phase} candidate {index}", chain.name()),
            );
            let tag = (phase as u64) << 32;
            let batches = (0u64..)
                .flat_map(|e| {
                    self.ws.data.train_batches(
                        self.cfg.train.batch_size,
                        seed,
                        tag + e,
                        self.ws.device,
                    )
                })
                .take(total as usize);
            // The soup's candidates average their iterates when asked,
            // the imp-swa chain always; no other baseline does.
            let from = match chain {
                Chain::Soup => self.cfg.swa_from,
                Chain::ImpSwa => Some(self.cfg.imp_swa_from),
                _ => None,
            };
            let swa = match from {
                Some(from) => {
                    let every = self.cfg.swa_every.unwrap_or(per_epoch).max(1);
                    Some(Swa::new(SwaSchedule::new(total, from, every)?, 0))
                }
                None => None,
            };
            let mut hooks = Retrain {
                mask,
                momentum_too: self.cfg.soups.mask_momentum,
                swa,
            };
            let stats = train_loop(
                &model,
                &mut opt,
                batches,
                0,
                |it| schedule.lr(it),
                &mut hooks,
                None,
                &bar,
            )?;
            if let Some(swa) = &hooks.swa {
                swa.deliver(&mut opt)?;
            }
            let swa_iterates = hooks.swa.as_ref().map(Swa::count);
            self.ws.data.check()?;
            bar.finish_and_clear();
            mkdir(path.parent().expect("phase folder"))?;
            (model, Some(stats.loss), swa_iterates)
        };
        let eval = if train_loss.is_some() {
            self.ws.finish(&model, &path)?
        } else {
            // The file is the finished model already: leave it untouched.
            self.ws.evaluate(&model)?
        };
        let info = CandidateInfo {
            index,
            seed,
            weight_decay,
            epochs,
            eta_max,
            lr_peak: schedule.peak(),
            iterations: total,
            train_loss,
            swa_iterates,
            eval,
            time_s: start.elapsed().as_secs_f64(),
        };
        self.ws.say(format!(
            "{} phase {phase} candidate {index}: val {:.4}, test {:.4}, sparsity {:.2}% ({:.0}s)",
            chain.name(),
            info.eval.val.top1,
            info.eval.test.top1,
            100.0 * info.eval.sparsity,
            info.time_s
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }
}

/// The hooks of a candidate's retraining: the parent's mask after every
/// step, then the SWA average of the masked weights where there is one.
struct Retrain {
    mask: PruneMask,
    momentum_too: bool,
    swa: Option<Swa>,
}

impl Hooks for Retrain {
    fn after_update(&mut self, it: u64, opt: &mut Sgd) -> Result<()> {
        self.mask.apply(opt, self.momentum_too);
        if let Some(swa) = self.swa.as_mut() {
            swa.observe(it, opt);
        }
        Ok(())
    }
}
