//! GMP, gradual magnitude pruning (Zhu & Gupta 2017): the sparsity follows
//! the cubic schedule; every `--prune-every` a pruning step removes just
//! enough of the remaining weights, by global magnitude, to reach `s(t)`,
//! and the mask stays fixed (weights and momentum) until the next step.

use crate::pdt::{segments_at, PdtConfig, PdtMethod, Segment, Timeline};

/// Gradual magnitude pruning.
#[derive(Debug, Clone, Copy)]
pub struct Gmp;

impl PdtMethod for Gmp {
    fn id(&self) -> crate::methods::Method {
        crate::methods::Method::Gmp
    }

    /// One segment per pruning step of the cubic schedule, plus the dense
    /// start.
    fn segments(&self, _cfg: &PdtConfig, t: &Timeline) -> Vec<Segment> {
        segments_at(t, &t.prune_points())
    }
}
