//! Closing a segment of a `trainer pdt` chain: the candidates' masks
//! checked, their soup (uniform or greedy) merged through soup-core and
//! recalibrated, the candidates' disagreement measured, and the chain's
//! delivered model finished and evaluated.

use std::path::Path;

use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::evaluate;
use crate::model::Model;
use crate::pdt::records::{read_json, write_json, Chain, SegmentRecord};
use crate::pdt::run::PdtRun;
use crate::pdt::Segment;
use crate::pipeline::checkpoint_ops;
use crate::pipeline::mask::sparsity;
use crate::pipeline::{Evaluation, SoupKind};

impl PdtRun {
    /// `path` loaded as the model the method delivers at the end of
    /// segment `k` (DPF masks its dense weights; others are it already).
    fn delivered(
        &self,
        chain: Chain,
        segments: &[Segment],
        k: usize,
        path: &Path,
    ) -> Result<Model> {
        let model = self.ws.load(path)?;
        let mut opt = self.optimizer(&model);
        self.method
            .finalize(&self.context(chain, segments, k), &mut opt)?;
        Ok(model)
    }

    /// Recalibrates the batch-norm statistics of `model` for the model the
    /// method delivers (for DPF: computed with its masked weights, the
    /// dense ones kept).
    fn recalibrate(
        &self,
        chain: Chain,
        segments: &[Segment],
        k: usize,
        model: &Model,
        path: &Path,
    ) -> Result<()> {
        if self.method.fixed_mask() {
            self.ws.recalibrate(model);
            return Ok(());
        }
        let masked = self.delivered(chain, segments, k, path)?;
        self.ws.recalibrate(&masked);
        let from = masked.state_dict();
        tch::no_grad(|| {
            for (name, mut t) in model.state_dict() {
                if !t.requires_grad() {
                    t.copy_(&from[&name]);
                }
            }
        });
        Ok(())
    }

    /// Validation accuracy after recalibration of the delivered model
    /// (the greedy soup's score).
    fn score(&self, chain: Chain, segments: &[Segment], k: usize, path: &Path) -> Result<f64> {
        let model = self.delivered(chain, segments, k, path)?;
        self.ws.recalibrate(&model);
        let ebs = self.cfg.train.eval_batch_size;
        let val = evaluate(
            &model,
            self.ws.data.eval_batches(Split::Val, ebs, self.ws.device),
        )?;
        Ok(val.top1)
    }

    /// Closes segment `k`: with several candidates, measures how often
    /// their test predictions disagree, checks their masks against the
    /// parent (fixed-mask methods), merges them through soup-core (uniform
    /// or greedy; DPF averages the dense weights) and recalibrates the
    /// soup; records the segment.
    pub fn close(&self, chain: Chain, k: usize) -> Result<SegmentRecord> {
        let dir = self.seg_dir(chain, k);
        let record = dir.join("segment.json");
        if record.exists() {
            return read_json(&record);
        }
        let segments = self.segments(chain);
        let seg = segments[k];
        let m = self.forks(chain, &seg);
        let mut paths = Vec::new();
        for i in 0..m {
            let (path, info) = self.candidate_paths(chain, k, i);
            if !info.exists() {
                return Err(Error::Run(format!(
                    "{} is missing: train candidate {i} of segment {k} first",
                    path.display()
                )));
            }
            paths.push(path);
        }
        let mut masks_identical = None;
        let mut chosen = vec![0];
        let mut disagreement = None;
        if m > 1 {
            // What the candidates predict as the method delivers them at
            // the segment's end, batch-norm statistics as training left
            // them (pdt recalibrates only what it evaluates: soups and
            // delivered models).
            let models = paths
                .iter()
                .map(|p| self.delivered(chain, &segments, k, p))
                .collect::<Result<Vec<_>>>()?;
            disagreement = self.ws.disagreement(&models.iter().collect::<Vec<_>>())?;
            drop(models);
            let parent = dir.join("parent.safetensors");
            if self.method.fixed_mask() {
                checkpoint_ops::check_masks(&paths, &parent, &self.ws.pruned)?;
                masks_identical = Some(true);
            }
            let avg = dir.join("soup-avg.safetensors");
            // DPF's candidates hold dense weights with masks of their own:
            // their plain mean too (the union of their non-zeros).
            chosen = match self.cfg.soups.soup {
                SoupKind::Uniform => {
                    checkpoint_ops::merge(&paths, &avg)?;
                    (0..m).collect()
                }
                SoupKind::Greedy => {
                    let scores = paths
                        .iter()
                        .map(|p| self.score(chain, &segments, k, p))
                        .collect::<Result<Vec<_>>>()?;
                    checkpoint_ops::greedy(&paths, &scores, &avg, self.cfg.soups.strict, |p| {
                        self.score(chain, &segments, k, p)
                    })?
                    .0
                }
            };
            let soup = self.ws.load(&avg)?;
            self.recalibrate(chain, &segments, k, &soup, &avg)?;
            soup.save(&self.result(chain, &seg))?;
        }
        let result = self.result(chain, &seg);
        // The curve's point is measured like every reported model: on a
        // recalibrated copy of what the method would deliver here, whether
        // or not this segment made a soup, so the chains' curves compare
        // like with like. Training goes on from `result` itself.
        let view = self.delivered(chain, &segments, k, &result)?;
        self.ws.recalibrate(&view);
        let ebs = self.cfg.train.eval_batch_size;
        let test = evaluate(
            &view,
            self.ws.data.eval_batches(Split::Test, ebs, self.ws.device),
        )?;
        let info = SegmentRecord {
            segment: seg,
            epochs: self.timeline(chain).epochs_at(seg.end),
            candidates: m,
            chosen,
            masks_identical,
            sparsity: sparsity(&view, &self.ws.pruned).0,
            test_acc: test.top1,
            result: result
                .strip_prefix(&self.root)
                .map_or(result.clone(), Path::to_path_buf),
            disagreement,
        };
        self.say(format!(
            "{} segment {k}: {m} candidate(s), sparsity {:.2}%, test {:.4}",
            chain.run_name(self.id),
            100.0 * info.sparsity,
            info.test_acc
        ));
        write_json(&record, &info)?;
        Ok(info)
    }

    /// The chain's delivered model: its last result, finalized by the
    /// method, through the evaluation path of `trainer sms` (recalibrate,
    /// save, evaluate).
    pub fn finish(&self, chain: Chain) -> Result<Evaluation> {
        let dir = self.root.join(chain.dir());
        let record = dir.join("final.json");
        if record.exists() {
            return read_json(&record);
        }
        let segments = self.segments(chain);
        let k = segments.len() - 1;
        if !self.seg_dir(chain, k).join("segment.json").exists() {
            return Err(Error::Run(format!(
                "{} has not finished its last segment",
                chain.run_name(self.id)
            )));
        }
        let last = self.result(chain, &segments[k]);
        let model = self.delivered(chain, &segments, k, &last)?;
        let eval = self.ws.finish(&model, &dir.join("final.safetensors"))?;
        self.say(format!(
            "{}: test {:.4}, sparsity {:.2}%",
            chain.run_name(self.id),
            eval.test.top1,
            100.0 * eval.sparsity
        ));
        write_json(&record, &eval)?;
        Ok(eval)
    }
}
