//! Stochastic weight averaging (SWA) inside one training run, as a hook of
//! the training loop: the average of the weights taken every `every`
//! iterations over the last part of a run.
//!
//! Over a run of `total` iterations with averaging from the share `from`,
//! the iterates averaged are those after iteration `k` (counting from 1)
//! for `k > round(from * total)` and `total - k` a multiple of `every`: so
//! the last iterate always counts and the others are spaced `every` apart
//! back from it (with `every` the epoch length, the weights at the end of
//! each epoch of the averaging stretch, as in the SWA paper). The average
//! is a sum in f32 divided by the count once, at the end, so a weight that
//! a mask holds at exactly zero in every iterate is exactly zero in the
//! average. Only trainable parameters are averaged: batch-norm statistics
//! of the average are not the average of the statistics, so a delivered
//! average needs batch-norm recalibration before it is evaluated.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::optim::Sgd;
use crate::train::Hooks;

/// Which iterations of a run are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwaSchedule {
    /// Iterations of the run.
    pub total: u64,
    /// Iterations before the averaging stretch (`round(from * total)`).
    pub start: u64,
    /// Iterations between averaged iterates.
    pub every: u64,
}

impl SwaSchedule {
    /// The schedule of a run of `total` iterations averaging from the share
    /// `from` (in `[0, 1)`) every `every` iterations (at least 1).
    pub fn new(total: u64, from: f64, every: u64) -> Result<SwaSchedule> {
        if !(0.0..1.0).contains(&from) {
            return Err(Error::Config(format!(
                "SWA must start at a share of the run in [0, 1), not {from}"
            )));
        }
        if every == 0 || total == 0 {
            return Err(Error::Config(
                "SWA needs at least one iteration, and a positive spacing".into(),
            ));
        }
        let start = ((from * total as f64).round() as u64).min(total - 1);
        Ok(SwaSchedule {
            total,
            start,
            every,
        })
    }

    /// Whether the weights after iteration `k` (counting from 1) are
    /// averaged.
    pub fn takes(&self, k: u64) -> bool {
        k > self.start && k <= self.total && (self.total - k) % self.every == 0
    }

    /// How many iterates the average holds at the end of the run.
    pub fn count(&self) -> u64 {
        (self.total - self.start - 1) / self.every + 1
    }
}

/// The running sum of the averaged iterates of every trainable parameter,
/// in optimizer order; a [`Hooks`] that adds the weights after each
/// iteration its schedule takes.
#[derive(Debug)]
pub struct Swa {
    schedule: SwaSchedule,
    /// The loop's number of the run's first iteration: the loop's
    /// iteration `it` is iteration `it + 1 - offset` of the run, counting
    /// from 1.
    offset: u64,
    sums: Vec<Tensor>,
    count: u64,
}

impl Swa {
    /// An empty average of a run whose first iteration the training loop
    /// numbers `run_start` (the loop's `first_iter` when the run starts
    /// the loop; global iteration numbers may start elsewhere).
    pub fn new(schedule: SwaSchedule, run_start: u64) -> Swa {
        Swa {
            schedule,
            offset: run_start,
            sums: Vec::new(),
            count: 0,
        }
    }

    /// Iterates averaged so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds the weights after iteration `it` of the loop when the schedule
    /// takes them.
    pub fn observe(&mut self, it: u64, opt: &Sgd) {
        if it < self.offset || !self.schedule.takes(it + 1 - self.offset) {
            return;
        }
        tch::no_grad(|| {
            if self.sums.is_empty() {
                self.sums = opt
                    .params
                    .iter()
                    .map(|p| p.tensor.to_kind(Kind::Float).copy())
                    .collect();
            } else {
                for (sum, p) in self.sums.iter_mut().zip(&opt.params) {
                    let _ = sum.g_add_(&p.tensor.to_kind(Kind::Float));
                }
            }
        });
        self.count += 1;
    }

    /// Writes the average into the optimizer's parameters (the model's
    /// weights); an error when no iterate was taken. Batch-norm
    /// statistics are left as they are, for recalibration.
    pub fn deliver(&self, opt: &mut Sgd) -> Result<()> {
        if self.count == 0 {
            return Err(Error::Run(
                "SWA holds no iterate: the run ended before its averaging stretch".into(),
            ));
        }
        let n = self.count as f64;
        tch::no_grad(|| {
            for (sum, p) in self.sums.iter().zip(&mut opt.params) {
                let avg = (sum / n).to_kind(p.tensor.kind());
                p.tensor.copy_(&avg);
            }
        });
        Ok(())
    }
}

impl Hooks for Swa {
    fn after_update(&mut self, it: u64, opt: &mut Sgd) -> Result<()> {
        self.observe(it, opt);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
