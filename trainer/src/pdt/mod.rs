//! Pruning during training: methods that prune a model while it trains from scratch (GMP, DPF,
//! BIMP), and sparse model soups for them.
//!
//! A method splits training into segments ([`PdtMethod::segments`]). At the
//! start of each segment it may prune (GMP and BIMP prune the weights by
//! global magnitude through soup-core; DPF only moves its sparsity
//! target), and inside a segment it acts through the training loop's
//! [`Hooks`]: a fixed mask enforced after every step, or DPF's dynamic
//! mask. Sparse model soups fork `m` candidates at the start of a long
//! enough segment, train each to the segment's end, check their masks,
//! average them and continue from the recalibrated average ([`run`]).
//!
//! A new method is one module implementing [`PdtMethod`] plus one line in
//! [`method`], after its name in the trainer's registry of methods
//! ([`crate::methods::Method`]).

pub mod bimp;
pub mod cli;
pub mod config;
pub mod dpf;
pub mod gmp;
pub mod jobs;
pub mod records;
pub mod repeats;
pub mod report;
pub mod run;
pub mod schedule;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::methods::Method as Registered;
use crate::optim::Sgd;
use crate::pipeline::lr::PruneImpact;
use crate::pipeline::PruneMask;
use crate::schedule::Schedule;
use crate::train::Hooks;

pub use config::{PdtBaseline, PdtConfig};
pub use report::PdtReport;
pub use schedule::{cubic, PruneEvery, Timeline};

/// The names of the registered methods that prune during training.
pub fn methods() -> Vec<&'static str> {
    Registered::ALL
        .into_iter()
        .filter(|m| m.prunes_during_training())
        .map(Registered::name)
        .collect()
}

/// The pruning-during-training method registered as `name` (`None` for
/// an unknown name, or one whose runs are not segments of training from
/// scratch, like `imp`).
pub fn method(name: &str) -> Option<Box<dyn PdtMethod>> {
    match name.parse::<Registered>().ok()? {
        Registered::Gmp => Some(Box::new(gmp::Gmp)),
        Registered::Dpf => Some(Box::new(dpf::Dpf)),
        Registered::Bimp => Some(Box::new(bimp::Bimp)),
        Registered::Imp => None,
    }
}

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
    /// The run's configuration.
    pub cfg: &'a PdtConfig,
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
        let t = &self.cfg.train;
        Schedule {
            kind: self.cfg.schedule,
            peak: self.eta_max,
            total,
            warmup: (t.warmup_epochs * self.timeline.per_epoch as f64).round() as u64,
        }
    }
}

/// A pruning-during-training method.
pub trait PdtMethod: Send + Sync {
    /// The method's entry in the registry, which names it and its runs
    /// (`gmp`, `gmp+sms`, `gmp-long`).
    fn id(&self) -> Registered;

    /// The segments of a chain with time line `t`, in order, covering
    /// `0..t.total` without gaps (a last segment may be empty).
    fn segments(&self, cfg: &PdtConfig, t: &Timeline) -> Vec<Segment>;

    /// Whether the pruning step at a segment's start prunes the weights
    /// and the mask then stays fixed (GMP, BIMP). A dynamic method (DPF)
    /// keeps dense weights and masks only what the forward pass sees; its
    /// candidates' masks differ, so they are not checked against the
    /// parent.
    fn fixed_mask(&self) -> bool {
        true
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
            momentum: ctx.cfg.soups.mask_momentum,
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
/// `0..=total`), with the cubic target at each: `[0, p1), [p1, p2), ...,
/// [pn, total)`. GMP and DPF share them.
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
