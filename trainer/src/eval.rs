//! Evaluation (loss, top-1, class-balanced accuracy, calibration error) and
//! batch-norm recalibration.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::data::Batch;
use crate::error::Result;
use crate::layers::Mode;
use crate::model::Model;

/// The number of equal-width confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// What an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalReport {
    /// The number of images.
    pub samples: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Plain (micro) top-1 accuracy, in [0, 1].
    pub top1: f64,
    /// Class-balanced accuracy: the mean over classes present of the share of
    /// that class's images classified correctly.
    pub balanced_accuracy: f64,
    /// Expected calibration error over 15 equal-width bins of the top
    /// softmax probability.
    pub ece: f64,
}

/// Evaluates `model` in inference mode on `batches`.
pub fn evaluate(model: &Model, batches: impl Iterator<Item = Batch>) -> Result<EvalReport> {
    let (mut loss, mut conf, mut pred, mut labels) = (0.0, Vec::new(), Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        for b in batches {
            let logits = model.forward(&b.images, Mode::Eval).to_kind(Kind::Float);
            let l = logits.f_cross_entropy_loss::<Tensor>(
                &b.labels,
                None,
                Reduction::Sum,
                -100,
                0.0,
            )?;
            loss += l.double_value(&[]);
            let (c, p) = logits.softmax(-1, Kind::Float).max_dim(-1, false);
            conf.extend(Vec::<f32>::try_from(&c.to_device(tch::Device::Cpu))?);
            pred.extend(Vec::<i64>::try_from(&p.to_device(tch::Device::Cpu))?);
            labels.extend(Vec::<i64>::try_from(&b.labels.to_device(tch::Device::Cpu))?);
        }
        Ok(())
    })?;
    Ok(summarise(loss, &conf, &pred, &labels))
}

/// Builds the report from per-image confidences, predictions and labels.
fn summarise(loss_sum: f64, conf: &[f32], pred: &[i64], labels: &[i64]) -> EvalReport {
    let n = labels.len();
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let (mut per_class, mut per_class_ok) = (vec![0usize; classes], vec![0usize; classes]);
    let (mut bin_n, mut bin_ok, mut bin_conf) =
        ([0usize; ECE_BINS], [0usize; ECE_BINS], [0f64; ECE_BINS]);
    for ((&c, &p), &y) in conf.iter().zip(pred).zip(labels) {
        let ok = p == y;
        per_class[y as usize] += 1;
        per_class_ok[y as usize] += ok as usize;
        // Bins are (k/15, (k+1)/15]; a confidence of exactly 0 goes to the first.
        let bin = ((c as f64 * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bin_n[bin] += 1;
        bin_ok[bin] += ok as usize;
        bin_conf[bin] += c as f64;
    }
    let correct: usize = per_class_ok.iter().sum();
    let present: Vec<usize> = (0..classes).filter(|&k| per_class[k] > 0).collect();
    let balanced = present
        .iter()
        .map(|&k| per_class_ok[k] as f64 / per_class[k] as f64)
        .sum::<f64>()
        / present.len().max(1) as f64;
    let ece = (0..ECE_BINS)
        .filter(|&b| bin_n[b] > 0)
        .map(|b| (bin_ok[b] as f64 - bin_conf[b]).abs() / n as f64)
        .sum();
    let nf = n.max(1) as f64;
    EvalReport {
        samples: n,
        loss: loss_sum / nf,
        top1: correct as f64 / nf,
        balanced_accuracy: balanced,
        ece,
    }
}

/// Recomputes batch-norm running statistics from scratch: resets every
/// running mean (0), variance (1) and batch count (0), then runs `batches`
/// forward in [`Mode::Calibrate`] without gradients, weighting the k-th batch
/// by 1/k, so the result is the plain average over the batches (PyTorch's
/// `momentum=None`). Dropout is off. Returns the number of batches used.
///
/// The caller picks the batches, for example the first 20% of an epoch of
/// [`crate::Dataset::train_batches`].
pub fn recalibrate_bn(model: &Model, batches: impl Iterator<Item = Batch>) -> usize {
    tch::no_grad(|| {
        for (name, mut t) in model.state_dict() {
            if name.ends_with(".running_mean") || name.ends_with(".num_batches_tracked") {
                let _ = t.zero_();
            } else if name.ends_with(".running_var") {
                let _ = t.fill_(1.0);
            }
        }
        let mut k = 0;
        for b in batches {
            k += 1;
            let _ = model.forward(
                &b.images,
                Mode::Calibrate {
                    factor: 1.0 / k as f64,
                },
            );
        }
        k
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_accuracy_and_ece_by_hand() {
        // Class 0: 3 images, 2 right; class 1: 1 image, right.
        let labels = [0, 0, 0, 1];
        let pred = [0, 0, 1, 1];
        let conf = [1.0f32, 0.5, 0.5, 0.9];
        let r = summarise(4.0, &conf, &pred, &labels);
        assert_eq!(r.samples, 4);
        assert!((r.loss - 1.0).abs() < 1e-12);
        assert!((r.top1 - 0.75).abs() < 1e-12);
        assert!((r.balanced_accuracy - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        // Bins: {1.0}: acc 1, conf 1; {0.5, 0.5}: acc 0.5, conf 0.5; {0.9}: acc 1, conf 0.9.
        assert!((r.ece - 0.1 / 4.0).abs() < 1e-7, "{}", r.ece);
    }
}
