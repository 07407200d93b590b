//! The one evaluation path of every model a run reports (dense parent,
//! candidates, soups and greedy trials, baselines, the models of methods
//! that prune during training): [`Workspace::finish`]
//! recalibrates batch-norm statistics on the same training batches, saves
//! the recalibrated model, then evaluates it. So any reported number is
//! reproduced by evaluating the saved checkpoint, and no model is compared
//! with stale statistics against a recalibrated one. The ensemble of a
//! phase's candidates is evaluated on the same splits, and the candidates'
//! own test predictions, read off that same pass, give their
//! [`Disagreement`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::Split;
use crate::error::Result;
use serde::{Deserialize, Serialize};

use crate::eval::{
    evaluate, evaluate_ensemble, evaluate_ensemble_members, macs, recalibrate_bn_with, EvalReport,
    Macs,
};
use crate::model::Model;
use crate::pipeline::disagreement::Disagreement;
use crate::pipeline::mask::{layer_sparsity, sparsity};
use crate::pipeline::workspace::Workspace;
use crate::robust::{corrupted_batches, corruption_accuracies, mean_accuracy, Corruption};

/// Validation and test evaluation of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// On the validation split (used for every choice).
    pub val: EvalReport,
    /// On the test split (reported only).
    pub test: EvalReport,
    /// Zeros / elements over the prunable tensors.
    pub sparsity: f64,
    /// Zeros / elements over all parameters (weights, biases, norm scales).
    pub sparsity_all: f64,
    /// Zeros / elements of each prunable tensor, by name.
    pub layer_sparsity: BTreeMap<String, f64>,
    /// Theoretical multiply-adds per image (for an ensemble, of all its
    /// members together).
    pub macs: Macs,
    /// Mean test accuracy under corruptions, when measured.
    pub ood_acc: Option<f64>,
    /// Test accuracy per corruption and severity (empty when not measured).
    pub corruptions: BTreeMap<String, BTreeMap<u8, f64>>,
}

impl Workspace {
    /// Evaluates `model` as it is on validation and test, with its
    /// sparsity and cost. Reported models go through [`Workspace::finish`].
    pub fn evaluate(&self, model: &Model) -> Result<Evaluation> {
        let ebs = self.train.eval_batch_size;
        let val = evaluate(model, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let test = evaluate(model, self.data.eval_batches(Split::Test, ebs, self.device))?;
        self.data.check()?;
        let (sparsity, sparsity_all) = sparsity(model, &self.pruned);
        let corruptions =
            corruption_accuracies(model, &self.data, &self.soups.ood, self.device, ebs as i64)?;
        Ok(Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(model, &self.pruned),
            macs: macs(model),
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        })
    }

    /// The one evaluation path of every reported model: recalibrates its
    /// batch-norm statistics ([`Workspace::recalibrate`]), saves it to `out`
    /// (so the file is exactly the model evaluated) and evaluates it.
    pub fn finish(&self, model: &Model, out: &Path) -> Result<Evaluation> {
        self.recalibrate(model);
        model.save(out)?;
        self.evaluate(model)
    }

    /// The prediction ensemble of the (finished) checkpoints `paths`, and
    /// the members' [`Disagreement`] on the clean test split (`None` for a
    /// single member), from the members' predictions in the same pass.
    /// Under corruptions it is scored on the generated ones the run
    /// evaluates (`like` lists them: a member's evaluation); with a
    /// CIFAR-C folder it has no robustness numbers.
    pub fn evaluate_ensemble(
        &self,
        paths: &[PathBuf],
        like: &Evaluation,
    ) -> Result<(Evaluation, Option<Disagreement>)> {
        let models = paths
            .iter()
            .map(|p| self.load(p))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Model> = models.iter().collect();
        let ebs = self.train.eval_batch_size;
        let val = evaluate_ensemble(&refs, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let (test, members) = evaluate_ensemble_members(
            &refs,
            self.data.eval_batches(Split::Test, ebs, self.device),
        )?;
        self.data.check()?;
        // Members share one mask (checked before), so their sparsity is
        // the ensemble's; its cost is all of theirs.
        let pruned = &self.pruned;
        let (sparsity, sparsity_all) = sparsity(&models[0], pruned);
        let one = macs(&models[0]);
        let k = models.len() as u64;
        let mut corruptions = BTreeMap::new();
        if self.soups.ood.dir.is_none() {
            for (name, severities) in &like.corruptions {
                let Some(c) = Corruption::from_name(name) else {
                    continue;
                };
                let mut per = BTreeMap::new();
                for &s in severities.keys() {
                    let batches =
                        corrupted_batches(&self.data, c, s, ebs, self.soups.ood.limit, self.device);
                    per.insert(s, evaluate_ensemble(&refs, batches)?.top1);
                }
                corruptions.insert(name.clone(), per);
            }
        }
        let ensemble = Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(&models[0], pruned),
            macs: Macs {
                dense: one.dense * k,
                sparse: models.iter().map(|m| macs(m).sparse).sum(),
            },
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        };
        Ok((ensemble, Disagreement::of(&members)))
    }

    /// The [`Disagreement`] of `models` on the clean test split, from
    /// their predictions in one ensemble pass (`None` for fewer than two).
    pub fn disagreement(&self, models: &[&Model]) -> Result<Option<Disagreement>> {
        if models.len() < 2 {
            return Ok(None);
        }
        let ebs = self.train.eval_batch_size;
        let (_, members) = evaluate_ensemble_members(
            models,
            self.data.eval_batches(Split::Test, ebs, self.device),
        )?;
        self.data.check()?;
        Ok(Disagreement::of(&members))
    }

    /// Recomputes the batch-norm statistics of `model` from the first
    /// `bn_recal_fraction` of an epoch of training batches: the same batches
    /// in the same order for every model of the run (they depend only on the
    /// run's seed), averaged as `bn_recal` says.
    pub fn recalibrate(&self, model: &Model) -> usize {
        let n = ((self.soups.bn_recal_fraction * self.per_epoch() as f64).ceil() as usize).max(1);
        let batches = self
            .data
            .train_batches(
                self.train.batch_size,
                self.train.seed,
                u64::MAX,
                self.device,
            )
            .take(n);
        recalibrate_bn_with(model, batches, self.soups.bn_recal)
    }

    /// Validation accuracy of a checkpoint after batch-norm recalibration
    /// (the procedure of [`Workspace::finish`]): the greedy soup's score.
    pub fn score(&self, path: &Path) -> Result<f64> {
        let model = self.load(path)?;
        self.recalibrate(&model);
        let val = evaluate(
            &model,
            self.data
                .eval_batches(Split::Val, self.train.eval_batch_size, self.device),
        )?;
        self.data.check()?;
        Ok(val.top1)
    }
}
