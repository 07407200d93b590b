//! GMP, gradual magnitude pruning (Zhu & Gupta 2017): the sparsity follows
//! the cubic schedule; every `--prune-every` a pruning step removes just
//! enough of the remaining weights, by global magnitude, to reach `s(t)`,
//! and the mask stays fixed (weights and momentum) until the next step.
//! Its settings are the run's time line (`--prune-start`, `--prune-end`,
//! `--prune-every`); it has none of its own.

use crate::pipeline::segments::{segments_at, NoArgs, NoSettings, PruningMethod, Segment};
use crate::pipeline::timeline::Timeline;

/// The name in the registry.
pub const NAME: &str = "gmp";
/// What the method is.
pub const ABOUT: &str = "gradual magnitude pruning on the cubic schedule";
/// The command that runs it.
pub const COMMAND: &str = "pdt";
/// GMP has no settings of its own.
pub type Settings = NoSettings;
/// GMP has no flags of its own.
pub type Args = NoArgs;

/// The method.
pub fn build(_settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    Some(Box::new(Gmp))
}

/// Gradual magnitude pruning.
#[derive(Debug, Clone, Copy)]
pub struct Gmp;

impl PruningMethod for Gmp {
    /// One segment per pruning step of the cubic schedule, plus the dense
    /// start.
    fn segments(&self, t: &Timeline) -> Vec<Segment> {
        segments_at(t, &t.prune_points())
    }
}
