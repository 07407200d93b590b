//! GMP, gradual magnitude pruning (Zhu & Gupta 2017): the sparsity follows
//! the cubic schedule; every `--prune-every` a pruning step removes just
//! enough of the remaining weights, by global magnitude, to reach `s(t)`,
//! and the mask stays fixed (weights and momentum) until the next step.
//! Its schedule is the run's time line (`--prune-start`, `--prune-end`,
//! `--prune-every`).
//!
//! With `--nm N:M` it prunes toward an N:M pattern instead: the same cubic
//! schedule, read as the share of each group of M consecutive weights
//! (along the input dimension) that is zero, so the per-group budget
//! tightens from M to N over the pruning window. At a step whose target is
//! `s(t)`, every group keeps its `M - round(s(t) M)` largest weights
//! (never fewer than N), inside the mask it has; the last step reaches
//! N:M exactly, and the final sparsity is `1 - N/M`.

use serde::{Deserialize, Serialize};
use soup_core::NmPattern;

use crate::error::Result;
use crate::optim::Sgd;
use crate::pipeline::mask::PruneMask;
use crate::pipeline::segments::{segments_at, PruningMethod, Segment};
use crate::pipeline::timeline::Timeline;

/// The name in the registry.
pub const NAME: &str = "gmp";
/// What the method is.
pub const ABOUT: &str = "gradual magnitude pruning on the cubic schedule";
/// The command that runs it.
pub const COMMAND: &str = "pdt";

/// GMP's own settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Prune toward this N:M pattern instead of unstructured sparsity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nm: Option<NmPattern>,
}

impl Settings {
    /// Nothing to check beyond the pattern's own rules.
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// GMP's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(skip)]
pub struct Args {
    /// GMP: prune toward this N:M pattern (2:4: at most 2 non-zeros in
    /// every 4 consecutive weights along the input dimension); the
    /// per-group budget tightens from M to N on the cubic schedule and the
    /// final sparsity is 1 - N/M.
    #[arg(long, value_name = "N:M")]
    pub nm: Option<NmPattern>,
}

impl Args {
    /// Writes the flags given over `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(p) = self.nm {
            settings.nm = Some(p);
        }
    }
}
/// The keys of its settings in a run's configuration.
pub const KEYS: &[&str] = &["nm"];

/// The method.
pub fn build(settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    Some(Box::new(Gmp { nm: settings.nm }))
}

/// Gradual magnitude pruning.
#[derive(Debug, Clone, Copy)]
pub struct Gmp {
    nm: Option<NmPattern>,
}

/// The pattern a group of `target.m()` keeps at sparsity `s` on the way
/// to `target`: `M - round(s M)` weights, never fewer than N; `None` while
/// that is all of them.
pub fn step_pattern(target: NmPattern, s: f64) -> Option<NmPattern> {
    let m = target.m();
    let zeros = (s * m as f64).round().clamp(0.0, m as f64) as u32;
    let keep = m.saturating_sub(zeros).max(target.n());
    (keep < m).then(|| NmPattern::new(keep, m).expect("1 <= keep < m"))
}

impl PruningMethod for Gmp {
    /// One segment per pruning step of the cubic schedule, plus the dense
    /// start.
    fn segments(&self, t: &Timeline) -> Vec<Segment> {
        segments_at(t, &t.prune_points())
    }

    fn pattern(&self) -> Option<NmPattern> {
        self.nm
    }

    fn prune(
        &self,
        opt: &mut Sgd,
        pruned: &[String],
        exclude: &[String],
        sparsity: f64,
    ) -> Result<()> {
        let mask = match self.nm {
            None => PruneMask::select(opt, pruned, exclude, sparsity)?,
            Some(target) => match step_pattern(target, sparsity) {
                Some(p) => PruneMask::select_nm(opt, pruned, p)?,
                None => return Ok(()),
            },
        };
        mask.apply(opt, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_budget_tightens_from_m_to_n() {
        let p = |s: &str| s.parse::<NmPattern>().unwrap();
        let target = p("2:4");
        assert_eq!(step_pattern(target, 0.0), None);
        assert_eq!(step_pattern(target, 0.1), None);
        assert_eq!(step_pattern(target, 0.2), Some(p("3:4")));
        assert_eq!(step_pattern(target, 0.45), Some(p("2:4")));
        // Never past the target, whatever the schedule asks.
        assert_eq!(step_pattern(target, 0.9), Some(p("2:4")));
        assert_eq!(step_pattern(p("1:8"), 0.5), Some(p("4:8")));
        assert_eq!(step_pattern(p("1:8"), 1.0 - 1.0 / 8.0), Some(p("1:8")));
    }
}
