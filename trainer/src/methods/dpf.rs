//! DPF, dynamic pruning with feedback (Lin et al. 2020): the forward pass
//! sees the masked weights, the gradient computed there updates the dense
//! weights (so pruned weights keep learning and can come back), and every
//! `--dpf-interval` iterations (16 by default) the mask is recomputed from
//! the dense weights by global magnitude at the cubic schedule's target.
//! The model delivered at the end is the masked one, with exact zeros.
//!
//! Its segments are GMP's (the pruning grid of the cubic schedule), but the
//! mask changes inside them; a segment's first iteration always recomputes
//! the mask, so a soup's averaged dense weights get their own.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::optim::Sgd;
use crate::pipeline::mask::PruneMask;
use crate::pipeline::segments::{segments_at, Context, PruningMethod, Segment};
use crate::pipeline::timeline::Timeline;
use crate::train::Hooks;

/// The name in the registry.
pub const NAME: &str = "dpf";
/// What the method is.
pub const ABOUT: &str = "dynamic pruning with feedback: masked forward pass, dense updates";
/// The command that runs it.
pub const COMMAND: &str = "pdt";

/// The keys of [`Settings`].
pub const KEYS: &[&str] = &["dpf_interval"];

/// DPF's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Iterations between mask recomputations.
    #[serde(rename = "dpf_interval")]
    pub interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { interval: 16 }
    }
}

impl Settings {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.interval == 0 {
            return Err(Error::Config("--dpf-interval must be at least 1".into()));
        }
        Ok(())
    }
}

/// DPF's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(skip)]
pub struct Args {
    /// DPF: iterations between mask recomputations [default: 16].
    #[arg(long = "dpf-interval")]
    pub dpf_interval: Option<u64>,
}

impl Args {
    /// Writes the flags given over `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(v) = self.dpf_interval {
            settings.interval = v;
        }
    }
}

/// The method.
pub fn build(settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    Some(Box::new(Dpf {
        interval: settings.interval,
    }))
}

/// Dynamic pruning with feedback.
#[derive(Debug, Clone, Copy)]
pub struct Dpf {
    /// Iterations between mask recomputations.
    pub interval: u64,
}

impl PruningMethod for Dpf {
    fn segments(&self, t: &Timeline) -> Vec<Segment> {
        segments_at(t, &t.prune_points())
    }

    fn fixed_mask(&self) -> bool {
        false
    }

    fn hooks(&self, ctx: &Context<'_>, _opt: &Sgd) -> Result<Box<dyn Hooks>> {
        Ok(Box::new(DpfHooks::new(
            ctx.timeline,
            self.interval,
            ctx.pruned.to_vec(),
            ctx.soups.exclude.clone(),
        )))
    }

    /// The dense weights masked at the sparsity of the chain's end.
    fn finalize(&self, ctx: &Context<'_>, opt: &mut Sgd) -> Result<()> {
        let s = ctx.timeline.target(ctx.segment.end);
        if s > 0.0 {
            PruneMask::select(opt, ctx.pruned, &ctx.soups.exclude, s)?.apply(opt, false);
        }
        Ok(())
    }
}

/// One mask recomputation: at iteration `it`, the target and the zeros it
/// left among `n` pruned weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recompute {
    /// Global iteration.
    pub it: u64,
    /// The cubic schedule's target there.
    pub target: f64,
    /// Zeros the mask makes.
    pub zeros: i64,
    /// Weights under the mask.
    pub n: i64,
}

/// DPF's hooks: mask before the forward pass, restore the dense weights
/// before the update.
#[derive(Debug)]
pub struct DpfHooks {
    timeline: Timeline,
    interval: u64,
    names: Vec<String>,
    exclude: Vec<String>,
    mask: Option<PruneMask>,
    dense: Vec<(usize, Tensor)>,
    started: bool,
    /// Every recomputation so far.
    pub log: Vec<Recompute>,
}

impl DpfHooks {
    /// Hooks on the schedule of `timeline`, recomputing every `interval`
    /// iterations over the tensors `names` less `exclude`.
    pub fn new(
        timeline: Timeline,
        interval: u64,
        names: Vec<String>,
        exclude: Vec<String>,
    ) -> DpfHooks {
        DpfHooks {
            timeline,
            interval: interval.max(1),
            names,
            exclude,
            mask: None,
            dense: Vec::new(),
            started: false,
            log: Vec::new(),
        }
    }
}

impl Hooks for DpfHooks {
    fn before_forward(&mut self, it: u64, opt: &mut Sgd) -> Result<()> {
        if !self.started || it % self.interval == 0 {
            self.started = true;
            let target = self.timeline.target(it);
            self.mask = if target > 0.0 {
                let mask = PruneMask::select(opt, &self.names, &self.exclude, target)?;
                let (zeros, n) = mask.counts();
                self.log.push(Recompute {
                    it,
                    target,
                    zeros,
                    n,
                });
                Some(mask)
            } else {
                None
            };
        }
        if let Some(mask) = &self.mask {
            self.dense = tch::no_grad(|| {
                mask.drop
                    .iter()
                    .map(|(i, _)| (*i, opt.params[*i].tensor.copy()))
                    .collect()
            });
            mask.apply(opt, false);
        }
        Ok(())
    }

    fn before_update(&mut self, _it: u64, opt: &mut Sgd) -> Result<()> {
        tch::no_grad(|| {
            for (i, dense) in self.dense.drain(..) {
                opt.params[i].tensor.copy_(&dense);
            }
        });
        Ok(())
    }
}
