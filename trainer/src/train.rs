//! The training loop: a number of SGD iterations with a per-iteration
//! learning rate and a hook after every step.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tch::{Kind, Tensor};

use crate::arch::{Arch, ModelSpec};
use crate::data::Batch;
use crate::error::Result;
use crate::layers::Mode;
use crate::model::Model;
use crate::optim::{Sgd, SgdConfig};

/// What a stretch of training saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Optimizer steps taken.
    pub iterations: u64,
    /// Mean training loss over those steps.
    pub loss: f64,
    /// Share of training images classified correctly (augmented, in training mode).
    pub accuracy: f64,
    /// The learning rate of the last step.
    pub last_lr: f64,
}

/// Trains on every batch of `batches`. Iteration `first_iter + i` uses the
/// learning rate `lr(first_iter + i)`; after each optimizer step
/// `after_step(&mut opt)` runs (the sparse-model-soup loop enforces its masks
/// there). `progress` advances by one per step.
pub fn train_steps(
    model: &Model,
    opt: &mut Sgd,
    batches: impl Iterator<Item = Batch>,
    first_iter: u64,
    mut lr: impl FnMut(u64) -> f64,
    mut after_step: impl FnMut(&mut Sgd) -> Result<()>,
    progress: &ProgressBar,
) -> Result<StepStats> {
    let device = model.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let (mut seen, mut it, mut last_lr) = (0i64, first_iter, 0.0);
    for b in batches {
        last_lr = lr(it);
        opt.set_lr(last_lr);
        let logits = model.forward(&b.images, Mode::Train);
        let loss = logits.cross_entropy_for_logits(&b.labels);
        opt.backward_step(&loss);
        after_step(opt)?;
        tch::no_grad(|| {
            loss_sum += loss.detach();
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&b.labels)
                .sum(Kind::Int64);
        });
        seen += b.labels.size()[0];
        it += 1;
        progress.inc(1);
        if progress.is_hidden() || (it - first_iter) % 20 != 0 {
            continue;
        }
        progress.set_message(format!(
            "loss {:.4}",
            loss_sum.double_value(&[]) / (it - first_iter) as f64
        ));
    }
    let iterations = it - first_iter;
    Ok(StepStats {
        iterations,
        loss: loss_sum.double_value(&[]) / iterations.max(1) as f64,
        accuracy: correct.int64_value(&[]) as f64 / seen.max(1) as f64,
        last_lr,
    })
}

/// Times training steps of `arch` on random data: `warmup` untimed steps,
/// then the median wall time of `steps` steps (forward, backward, SGD with
/// momentum and weight decay). The median rather than the mean keeps spikes
/// of background load out.
pub fn time_train_step(
    arch: Arch,
    spec: ModelSpec,
    batch_size: i64,
    warmup: usize,
    steps: usize,
    device: tch::Device,
) -> Duration {
    tch::manual_seed(0);
    let model = Model::new(arch, spec, device);
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    opt.set_lr(0.01);
    let [c, h, w] = spec.input;
    let xs = Tensor::randn([batch_size, c, h, w], (Kind::Float, device));
    let ys = Tensor::randint(spec.num_classes, [batch_size], (Kind::Int64, device));
    let mut step = || {
        let loss = model
            .forward(&xs, Mode::Train)
            .cross_entropy_for_logits(&ys);
        opt.backward_step(&loss);
        // Wait for the device, as the Python side does.
        let _ = loss.double_value(&[]);
    };
    for _ in 0..warmup {
        step();
    }
    let mut times: Vec<Duration> = (0..steps.max(1))
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
