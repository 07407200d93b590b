//! The one evaluation path of every model a run reports (dense parent,
//! candidates, soups and greedy trials, baselines): [`Session::finish`]
//! recalibrates batch-norm statistics on the same training batches, saves
//! the recalibrated model, then evaluates it. So any reported number is
//! reproduced by evaluating the saved checkpoint, and no model is compared
//! with stale statistics against a recalibrated one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::Split;
use crate::error::Result;
use crate::eval::{evaluate, evaluate_ensemble, macs, recalibrate_bn_with, Macs};
use crate::model::Model;
use crate::robust::{corrupted_batches, corruption_accuracies, mean_accuracy, Corruption};
use crate::sms::masks::{layer_sparsity, sparsity};
use crate::sms::records::Evaluation;
use crate::sms::session::Session;

impl Session {
    /// Evaluates `model` as it is on validation and test, with its
    /// sparsity and cost. Reported models go through [`Session::finish`].
    pub fn evaluate(&self, model: &Model) -> Result<Evaluation> {
        let ebs = self.cfg.train.eval_batch_size;
        let val = evaluate(model, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let test = evaluate(model, self.data.eval_batches(Split::Test, ebs, self.device))?;
        self.data.check()?;
        let (sparsity, sparsity_all) = sparsity(model, &self.pruned_names(model));
        let corruptions =
            corruption_accuracies(model, &self.data, &self.cfg.ood, self.device, ebs as i64)?;
        Ok(Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(model, &self.pruned_names(model)),
            macs: macs(model),
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        })
    }

    /// The one evaluation path of every reported model: recalibrates its
    /// batch-norm statistics ([`Session::recalibrate`]), saves it to `out`
    /// (so the file is exactly the model evaluated) and evaluates it.
    pub fn finish(&self, model: &Model, out: &Path) -> Result<Evaluation> {
        self.recalibrate(model);
        model.save(out)?;
        self.evaluate(model)
    }

    /// The prediction ensemble of the (finished) checkpoints `paths`.
    /// Under corruptions it is scored on the generated ones the run
    /// evaluates (`like` lists them: a member's evaluation); with a
    /// CIFAR-C folder it has no robustness numbers.
    pub fn evaluate_ensemble(&self, paths: &[PathBuf], like: &Evaluation) -> Result<Evaluation> {
        let models = paths
            .iter()
            .map(|p| self.load(p))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Model> = models.iter().collect();
        let ebs = self.cfg.train.eval_batch_size;
        let val = evaluate_ensemble(&refs, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let test = evaluate_ensemble(&refs, self.data.eval_batches(Split::Test, ebs, self.device))?;
        self.data.check()?;
        // Members share one mask (checked before), so their sparsity is
        // the ensemble's; its cost is all of theirs.
        let pruned = self.pruned_names(&models[0]);
        let (sparsity, sparsity_all) = sparsity(&models[0], &pruned);
        let one = macs(&models[0]);
        let k = models.len() as u64;
        let mut corruptions = BTreeMap::new();
        if self.cfg.ood.dir.is_none() {
            for (name, severities) in &like.corruptions {
                let Some(c) = Corruption::from_name(name) else {
                    continue;
                };
                let mut per = BTreeMap::new();
                for &s in severities.keys() {
                    let batches =
                        corrupted_batches(&self.data, c, s, ebs, self.cfg.ood.limit, self.device);
                    per.insert(s, evaluate_ensemble(&refs, batches)?.top1);
                }
                corruptions.insert(name.clone(), per);
            }
        }
        Ok(Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(&models[0], &pruned),
            macs: Macs {
                dense: one.dense * k,
                sparse: models.iter().map(|m| macs(m).sparse).sum(),
            },
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        })
    }

    /// Recomputes the batch-norm statistics of `model` from the first
    /// `bn_recal_fraction` of an epoch of training batches: the same batches
    /// in the same order for every model of the run (they depend only on the
    /// run's seed), averaged as `bn_recal` says.
    pub fn recalibrate(&self, model: &Model) -> usize {
        let n = ((self.cfg.bn_recal_fraction * self.per_epoch() as f64).ceil() as usize).max(1);
        let batches = self
            .data
            .train_batches(
                self.cfg.train.batch_size,
                self.cfg.train.seed,
                u64::MAX,
                self.device,
            )
            .take(n);
        recalibrate_bn_with(model, batches, self.cfg.bn_recal)
    }

    /// Validation accuracy of a checkpoint after batch-norm recalibration
    /// (the procedure of [`Session::finish`]): the greedy soup's score.
    pub fn score(&self, path: &Path) -> Result<f64> {
        let model = self.load(path)?;
        self.recalibrate(&model);
        let val = evaluate(
            &model,
            self.data
                .eval_batches(Split::Val, self.cfg.train.eval_batch_size, self.device),
        )?;
        self.data.check()?;
        Ok(val.top1)
    }
}
