//! Evaluation (loss, top-1, class-balanced and worst-class accuracy,
//! expected and maximum calibration error) of one model or of the
//! prediction ensemble of several, and batch-norm recalibration.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::data::Batch;
use crate::error::Result;
use crate::layers::{record_positions, Mode};
use crate::model::Model;

/// The number of equal-width confidence bins of the expected and maximum
/// calibration errors.
pub const ECE_BINS: usize = 15;

/// How batch-norm recalibration averages the statistics of its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BnRecal {
    /// The plain average over the batches (PyTorch's `momentum=None`).
    #[default]
    Cumulative,
    /// An exponential average with momentum 0.1, as in the reference code.
    Ema,
}

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
    /// The lowest per-class accuracy over the classes present.
    pub worst_class_accuracy: f64,
    /// Expected calibration error over 15 equal-width bins of the top
    /// softmax probability.
    pub ece: f64,
    /// Maximum calibration error: the largest gap between accuracy and mean
    /// confidence over the same 15 bins (empty bins left out).
    pub mce: f64,
}

/// Evaluates `model` in inference mode on `batches`.
pub fn evaluate(model: &Model, batches: impl Iterator<Item = Batch>) -> Result<EvalReport> {
    evaluate_scores(batches, |xs| {
        model.forward(xs, Mode::Eval).to_kind(Kind::Float)
    })
}

/// Evaluates the prediction ensemble of `models`: the mean of their softmax
/// outputs (each in inference mode). Its loss is the cross-entropy of that
/// mean; its confidence is the mean's top probability.
pub fn evaluate_ensemble(
    models: &[&Model],
    batches: impl Iterator<Item = Batch>,
) -> Result<EvalReport> {
    Ok(evaluate_ensemble_members(models, batches)?.0)
}

/// [`evaluate_ensemble`], also returning each member's own top-1
/// prediction for every image (`members[i][n]`: model `i`, image `n` in
/// the order of `batches`), read off the outputs the ensemble averages.
pub fn evaluate_ensemble_members(
    models: &[&Model],
    batches: impl Iterator<Item = Batch>,
) -> Result<(EvalReport, Vec<Vec<i64>>)> {
    assert!(!models.is_empty(), "an ensemble needs a model");
    let tops: std::cell::RefCell<Vec<Vec<Tensor>>> =
        std::cell::RefCell::new(models.iter().map(|_| Vec::new()).collect());
    let report = evaluate_scores(batches, |xs| {
        let probs: Vec<Tensor> = models
            .iter()
            .map(|m| m.forward(xs, Mode::Eval).softmax(-1, Kind::Float))
            .collect();
        for (seen, p) in tops.borrow_mut().iter_mut().zip(&probs) {
            // The same top-1 rule as a model evaluated alone.
            seen.push(p.max_dim(-1, false).1);
        }
        let mean = probs
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("at least one model")
            / models.len() as f64;
        // Logits whose softmax is the mean probability.
        mean.log()
    })?;
    let members = tops
        .into_inner()
        .into_iter()
        .map(|batches| {
            if batches.is_empty() {
                return Ok(Vec::new());
            }
            let all = Tensor::cat(&batches, 0).to_device(tch::Device::Cpu);
            Ok(Vec::<i64>::try_from(&all)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((report, members))
}

/// Evaluates per-class scores `logits(images)` (softmax gives the
/// predicted probabilities) against the labels of `batches`.
fn evaluate_scores(
    batches: impl Iterator<Item = Batch>,
    logits: impl Fn(&Tensor) -> Tensor,
) -> Result<EvalReport> {
    let (mut loss, mut conf, mut pred, mut labels) = (0.0, Vec::new(), Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        for b in batches {
            let logits = logits(&b.images);
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
    let worst = present
        .iter()
        .map(|&k| per_class_ok[k] as f64 / per_class[k] as f64)
        .fold(None, |w: Option<f64>, a| Some(w.map_or(a, |w| w.min(a))))
        .unwrap_or(0.0);
    let gaps = (0..ECE_BINS)
        .filter(|&b| bin_n[b] > 0)
        .map(|b| ((bin_ok[b] as f64 - bin_conf[b]).abs(), bin_n[b]));
    let ece = gaps.clone().map(|(gap, _)| gap / n as f64).sum();
    let mce = gaps
        .map(|(gap, count)| gap / count as f64)
        .fold(0.0, f64::max);
    let nf = n.max(1) as f64;
    EvalReport {
        samples: n,
        loss: loss_sum / nf,
        top1: correct as f64 / nf,
        balanced_accuracy: balanced,
        worst_class_accuracy: worst,
        ece,
        mce,
    }
}

/// Theoretical cost of one image: multiply-adds of the convolution and
/// linear layers, counting every weight (`dense`) or only the non-zero ones
/// (`sparse`), as sparse kernels could skip the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Macs {
    /// With every weight.
    pub dense: u64,
    /// With the non-zero weights only.
    pub sparse: u64,
}

impl Macs {
    /// `sparse / dense`: the theoretical FLOPs of the sparse model against
    /// the dense one.
    pub fn ratio(&self) -> f64 {
        if self.dense == 0 {
            1.0
        } else {
            self.sparse as f64 / self.dense as f64
        }
    }
}

/// Counts [`Macs`] of `model` by running one blank image through it and
/// noting how many output positions each layer's weight is applied at.
pub fn macs(model: &Model) -> Macs {
    let [c, h, w] = model.spec.input;
    let x = Tensor::zeros([1, c, h, w], (Kind::Float, model.device()));
    let (_, seen) = record_positions(|| tch::no_grad(|| model.forward(&x, Mode::Eval)));
    let by_ptr: HashMap<usize, Tensor> = model
        .state_dict()
        .into_values()
        .map(|t| (t.data_ptr() as usize, t))
        .collect();
    let (mut dense, mut sparse) = (0u64, 0u64);
    for (ptr, positions) in seen {
        if let Some(t) = by_ptr.get(&ptr) {
            let nonzero = tch::no_grad(|| t.ne(0.0).sum(Kind::Int64).int64_value(&[]));
            dense += t.numel() as u64 * positions as u64;
            sparse += nonzero as u64 * positions as u64;
        }
    }
    Macs { dense, sparse }
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
    recalibrate_bn_with(model, batches, BnRecal::Cumulative)
}

/// [`recalibrate_bn`] with a choice of average: the cumulative one, or an
/// exponential one with momentum 0.1 from the reset statistics (what the
/// reference code does by running its training loader in train mode).
/// Recalibration depends only on the weights and the batches, never on the
/// statistics the model had, so recalibrating twice gives the same model.
pub fn recalibrate_bn_with(
    model: &Model,
    batches: impl Iterator<Item = Batch>,
    how: BnRecal,
) -> usize {
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
                    factor: match how {
                        BnRecal::Cumulative => 1.0 / k as f64,
                        BnRecal::Ema => crate::layers::BN_MOMENTUM,
                    },
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
        // The worst class is class 0 (2 of 3); the largest bin gap is the
        // 0.9 bin's 0.1 (the other bins are calibrated exactly).
        assert!((r.worst_class_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.mce - 0.1).abs() < 1e-7, "{}", r.mce);
    }

    #[test]
    fn mce_is_the_largest_bin_gap_not_the_weighted_mean() {
        // One bin (conf 0.95) with 4 images, 2 right: gap 0.45; another
        // (conf 0.5) with 1 image, right: gap 0.5.
        let labels = [0, 0, 0, 0, 1];
        let pred = [0, 0, 1, 1, 1];
        let conf = [0.95f32, 0.95, 0.95, 0.95, 0.5];
        let r = summarise(0.0, &conf, &pred, &labels);
        assert!((r.mce - 0.5).abs() < 1e-6, "{}", r.mce);
        assert!((r.ece - (4.0 * 0.45 + 0.5) / 5.0).abs() < 1e-6, "{}", r.ece);
        assert!((r.worst_class_accuracy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn macs_count_positions_of_nonzero_weights() {
        use crate::arch::{Arch, ModelSpec};
        let spec = ModelSpec {
            num_classes: 10,
            input: [1, 8, 8],
        };
        let model = Model::new(Arch::Cnn, spec, tch::Device::Cpu);
        // cnn: three 3x3 convolutions (1->32 at 8x8, 32->64 at 4x4, 64->128
        // at 2x2, pooling in between) and a 128->10 classifier.
        let dense = 9 * 32 * 64 + 9 * 32 * 64 * 16 + 9 * 64 * 128 * 4 + 1280;
        let m = macs(&model);
        assert_eq!(m.dense, dense as u64);
        assert_eq!(m.sparse, m.dense);
        // Zero half of the first convolution's weights: 288 * 64 / 2 fewer.
        tch::no_grad(|| {
            let w = &model.state_dict()["conv1.weight"];
            let _ = w.narrow(0, 0, 16).shallow_clone().zero_();
        });
        assert_eq!(macs(&model).sparse, (dense - 16 * 9 * 64) as u64);
    }

    #[test]
    fn ensemble_is_the_mean_of_softmax_outputs() {
        use crate::arch::{Arch, ModelSpec};
        let spec = ModelSpec {
            num_classes: 3,
            input: [1, 4, 4],
        };
        let device = tch::Device::Cpu;
        let models: Vec<Model> = (0..3)
            .map(|seed| {
                tch::manual_seed(seed);
                Model::new(Arch::Mlp, spec, device)
            })
            .collect();
        tch::manual_seed(7);
        let images = Tensor::randn([40, 1, 4, 4], (Kind::Float, device));
        let labels = Tensor::randint(3, [40], (Kind::Int64, device));
        let batch = || {
            // Two batches, so accumulation over batches is covered.
            vec![
                Batch {
                    images: images.narrow(0, 0, 25),
                    labels: labels.narrow(0, 0, 25),
                },
                Batch {
                    images: images.narrow(0, 25, 15),
                    labels: labels.narrow(0, 25, 15),
                },
            ]
            .into_iter()
        };
        let refs: Vec<&Model> = models.iter().collect();
        let r = evaluate_ensemble(&refs, batch()).unwrap();
        // Directly: mean probabilities, argmax, compare, in f64 by hand.
        let (mut correct, mut nll) = (0usize, 0.0f64);
        let probs: Vec<Vec<f32>> = models
            .iter()
            .map(|m| {
                let p = tch::no_grad(|| m.forward(&images, Mode::Eval).softmax(-1, Kind::Float));
                Vec::<f32>::try_from(&p.flatten(0, -1)).unwrap()
            })
            .collect();
        let ys = Vec::<i64>::try_from(&labels).unwrap();
        for (i, &y) in ys.iter().enumerate() {
            let mean: Vec<f64> = (0..3)
                .map(|c| probs.iter().map(|p| p[i * 3 + c] as f64).sum::<f64>() / 3.0)
                .collect();
            let best = (0..3).max_by(|&a, &b| mean[a].total_cmp(&mean[b])).unwrap();
            correct += (best as i64 == y) as usize;
            nll -= mean[y as usize].ln();
        }
        assert_eq!(r.samples, 40);
        assert_eq!(r.top1, correct as f64 / 40.0);
        assert!(
            (r.loss - nll / 40.0).abs() < 1e-5,
            "{} vs {}",
            r.loss,
            nll / 40.0
        );
        // One model's ensemble is that model.
        let single = evaluate_ensemble(&refs[..1], batch()).unwrap();
        let plain = evaluate(&models[0], batch()).unwrap();
        assert_eq!(single.top1, plain.top1);
        assert!((single.loss - plain.loss).abs() < 1e-5);
        // Each member's predictions, over both batches in order, are its
        // own argmax (the same report besides).
        let (again, members) = evaluate_ensemble_members(&refs, batch()).unwrap();
        assert_eq!(again, r);
        assert_eq!(members.len(), 3);
        for (m, p) in members.iter().zip(&probs) {
            let want: Vec<i64> = (0..40)
                .map(|i| {
                    let row = &p[i * 3..i * 3 + 3];
                    (0..3)
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                        .unwrap() as i64
                })
                .collect();
            assert_eq!(m, &want);
        }
    }
}
