//! The training loop: a number of SGD iterations with a per-iteration
//! learning rate and hooks at step and epoch boundaries ([`Hooks`]), where
//! pruning methods act (fixed masks after each update, dynamic masks
//! around the forward pass, pruning steps between epochs).

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

/// Where a training loop lets a method act. Every method has a no-op
/// default, so a method implements only the boundaries it cares about.
///
/// Within one iteration the order is: [`Hooks::before_forward`], forward
/// and backward pass, [`Hooks::before_update`] (gradients are there, the
/// weights not yet updated), the optimizer step, [`Hooks::after_update`];
/// after the last iteration of an epoch, [`Hooks::epoch_end`]. `it` is the
/// global iteration number (the one the learning rate is asked for).
pub trait Hooks {
    /// Before the forward pass of iteration `it` (dynamic pruning masks the
    /// weights the forward pass sees here).
    fn before_forward(&mut self, _it: u64, _opt: &mut Sgd) -> Result<()> {
        Ok(())
    }
    /// After the backward pass, before the optimizer step (dynamic pruning
    /// restores the dense weights here so the gradient updates them).
    fn before_update(&mut self, _it: u64, _opt: &mut Sgd) -> Result<()> {
        Ok(())
    }
    /// After the optimizer step (fixed masks are enforced here).
    fn after_update(&mut self, _it: u64, _opt: &mut Sgd) -> Result<()> {
        Ok(())
    }
    /// After the last iteration of epoch `epoch` (0-based), when the loop
    /// knows the epoch length.
    fn epoch_end(&mut self, _epoch: u64, _opt: &mut Sgd) -> Result<()> {
        Ok(())
    }
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// A closure run after every optimizer step, as hooks.
#[derive(Debug)]
pub struct AfterUpdate<F>(pub F);

impl<F: FnMut(&mut Sgd) -> Result<()>> Hooks for AfterUpdate<F> {
    fn after_update(&mut self, _it: u64, opt: &mut Sgd) -> Result<()> {
        (self.0)(opt)
    }
}

/// Trains on every batch of `batches`. Iteration `first_iter + i` uses the
/// learning rate `lr(first_iter + i)`; after each optimizer step
/// `after_step(&mut opt)` runs (the sparse-model-soup loop enforces its masks
/// there). `progress` advances by one per step. This is [`train_loop`] with
/// one hook.
pub fn train_steps(
    model: &Model,
    opt: &mut Sgd,
    batches: impl Iterator<Item = Batch>,
    first_iter: u64,
    lr: impl FnMut(u64) -> f64,
    after_step: impl FnMut(&mut Sgd) -> Result<()>,
    progress: &ProgressBar,
) -> Result<StepStats> {
    let mut hooks = AfterUpdate(after_step);
    train_loop(
        model, opt, batches, first_iter, lr, &mut hooks, None, progress,
    )
}

/// Trains on every batch of `batches`, calling `hooks` at the step
/// boundaries (see [`Hooks`]). Iteration `first_iter + i` uses the
/// learning rate `lr(first_iter + i)`. With `per_epoch`, iteration `it`
/// ends an epoch when `(it + 1) % per_epoch == 0` (iterations count from
/// the start of training, so a loop that resumes mid-epoch still finds the
/// epoch ends). `progress` advances by one per step.
#[allow(clippy::too_many_arguments)]
pub fn train_loop(
    model: &Model,
    opt: &mut Sgd,
    batches: impl Iterator<Item = Batch>,
    first_iter: u64,
    mut lr: impl FnMut(u64) -> f64,
    hooks: &mut dyn Hooks,
    per_epoch: Option<u64>,
    progress: &ProgressBar,
) -> Result<StepStats> {
    let device = model.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let (mut seen, mut it, mut last_lr) = (0i64, first_iter, 0.0);
    for b in batches {
        last_lr = lr(it);
        opt.set_lr(last_lr);
        hooks.before_forward(it, opt)?;
        let logits = model.forward(&b.images, Mode::Train);
        let loss = logits.cross_entropy_for_logits(&b.labels);
        opt.zero_grad();
        loss.backward();
        hooks.before_update(it, opt)?;
        opt.step();
        hooks.after_update(it, opt)?;
        tch::no_grad(|| {
            loss_sum += loss.detach();
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&b.labels)
                .sum(Kind::Int64);
        });
        seen += b.labels.size()[0];
        if let Some(p) = per_epoch.filter(|&p| p > 0) {
            if (it + 1) % p == 0 {
                hooks.epoch_end(it / p, opt)?;
            }
        }
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
