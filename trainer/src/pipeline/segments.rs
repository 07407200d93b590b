//! The trait every pruning method implements, and what it works with: a
//! run trains in segments ([`Segment`]), each starting with the method's
//! pruning step ([`PruningMethod::prune`]) and trained with its learning
//! rate and hooks ([`PruningMethod::lr`], [`PruningMethod::hooks`]);
//! [`PruningMethod::finalize`] turns the trained weights into the model the
//! method delivers. The run machinery (`trainer pdt`) forks the candidates
//! of a segment, checks their masks, soups and recalibrates them; a method
//! only says where the segments lie and what happens inside them.

use serde::{Deserialize, Serialize};

use crate::config::TrainSettings;
use crate::error::Result;
use crate::optim::Sgd;
use crate::pipeline::lr::PruneImpact;
use crate::pipeline::mask::PruneMask;
use crate::pipeline::settings::SoupSettings;
use crate::pipeline::timeline::Timeline;
use crate::schedule::{Schedule, ScheduleKind};
use crate::train::Hooks;

/// A stretch of training in which the method's pruning target is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Position in the run, from 0.
    pub index: usize,
    /// First iteration (global).
    pub start: u64,
    /// One past the last iteration.
    pub end: u64,
    /// The sparsity the pruning step at the start asks for (0: none).
    pub sparsity: f64,
}

impl Segment {
    /// Iterations in the segment.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the segment has no iterations.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What a segment's hooks and learning rate may depend on.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The training settings of the run (its `lr` is the peak).
    pub train: &'a TrainSettings,
    /// The soup settings of the run (exclusions, momentum masking).
    pub soups: &'a SoupSettings,
    /// The learning-rate schedule over training.
    pub schedule: ScheduleKind,
    /// The chain's time line (a `long` chain has a longer one).
    pub timeline: Timeline,
    /// Every segment of the chain.
    pub segments: &'a [Segment],
    /// This segment.
    pub segment: Segment,
    /// What the pruning step at the segment's start did (ALLR needs it).
    pub impact: Option<PruneImpact>,
    /// The tensors pruning acts on (prunable, less the exclusions), sorted.
    pub pruned: &'a [String],
    /// The peak learning rate of this candidate (`--lr`, or its `--vary
    /// lr` value).
    pub eta_max: f64,
}

impl Context<'_> {
    /// The dense learning-rate schedule over the whole chain: the training
    /// settings' kind, peak and warm-up.
    pub fn dense_schedule(&self, total: u64) -> Schedule {
        Schedule {
            kind: self.schedule,
            peak: self.eta_max,
            total,
            warmup: (self.train.warmup_epochs * self.timeline.per_epoch as f64).round() as u64,
        }
    }
}

/// A pruning method: where its segments lie, its pruning step, and how a
/// segment trains. Each method is one module implementing this trait,
/// registered in [`crate::methods`].
pub trait PruningMethod: Send + Sync {
    /// The segments of a chain with time line `t`, in order, covering
    /// `0..t.total` without gaps (a last segment may be empty).
    fn segments(&self, t: &Timeline) -> Vec<Segment>;

    /// The N:M pattern the method prunes to, if any: tensors that cannot
    /// be split into its groups of M along the input dimension stay dense.
    fn pattern(&self) -> Option<soup_core::NmPattern> {
        None
    }

    /// Whether the pruning step at a segment's start prunes the weights
    /// and the mask then stays fixed (GMP, BIMP). A dynamic method (DPF)
    /// keeps dense weights and masks only what the forward pass sees; its
    /// candidates' masks differ, so they are not checked against the
    /// parent.
    fn fixed_mask(&self) -> bool {
        true
    }

    /// The pruning step at the start of a segment that asks for
    /// `sparsity` (above 0): by default the weights of `pruned` (less
    /// `exclude`) by global magnitude, as soup-core selects them. A method
    /// without a fixed mask leaves the weights as they are.
    fn prune(
        &self,
        opt: &mut Sgd,
        pruned: &[String],
        exclude: &[String],
        sparsity: f64,
    ) -> Result<()> {
        if self.fixed_mask() {
            PruneMask::select(opt, pruned, exclude, sparsity)?.apply(opt, false);
        }
        Ok(())
    }

    /// The learning rate of global iteration `it` of the segment in `ctx`:
    /// by default the dense schedule over the whole chain.
    fn lr(&self, ctx: &Context<'_>, it: u64) -> f64 {
        ctx.dense_schedule(ctx.timeline.total).lr(it)
    }

    /// The hooks that train one segment, given the optimizer over the
    /// segment's starting model: by default the starting model's mask,
    /// enforced after every step (momentum too, as configured).
    fn hooks(&self, ctx: &Context<'_>, opt: &Sgd) -> Result<Box<dyn Hooks>> {
        Ok(Box::new(FixedMask {
            mask: PruneMask::of_zeros(opt, ctx.pruned),
            momentum: ctx.soups.mask_momentum,
        }))
    }

    /// Turns the trained weights into the model the method delivers (DPF
    /// masks its dense weights); by default they are it already.
    fn finalize(&self, _ctx: &Context<'_>, _opt: &mut Sgd) -> Result<()> {
        Ok(())
    }
}

/// A mask kept fixed: pruned weights (and their momentum) are set back to
/// exactly zero after every optimizer step.
#[derive(Debug)]
pub struct FixedMask {
    /// The mask.
    pub mask: PruneMask,
    /// Also zero the momentum buffer.
    pub momentum: bool,
}

impl Hooks for FixedMask {
    fn after_update(&mut self, _it: u64, opt: &mut Sgd) -> Result<()> {
        self.mask.apply(opt, self.momentum);
        Ok(())
    }
}

/// Segments that start at `points` (pruning steps, increasing, inside
/// `0..=total`), with the schedule's target at each: `[0, p1), [p1, p2),
/// ..., [pn, total)`. GMP and DPF share them.
pub fn segments_at(t: &Timeline, points: &[u64]) -> Vec<Segment> {
    let mut starts = vec![0u64];
    starts.extend(points.iter().copied().filter(|&p| p > 0));
    starts.dedup();
    starts
        .iter()
        .enumerate()
        .map(|(index, &start)| Segment {
            index,
            start,
            end: starts.get(index + 1).copied().unwrap_or(t.total).max(start),
            sparsity: if index == 0 { 0.0 } else { t.target(start) },
        })
        .collect()
}

/// The settings of a method that has none of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoSettings {}

impl NoSettings {
    /// Nothing to check.
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// The flags of a method that has no settings of its own.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
#[group(skip)]
pub struct NoArgs {}

impl NoArgs {
    /// Nothing to write.
    pub fn apply(&self, _settings: &mut NoSettings) {}
}
