//! One-shot pruning: the model trains densely until epoch `--prune-at`,
//! one pruning step there removes the target sparsity's share of the
//! weights by global magnitude (through soup-core's selection), and the
//! model trains on to the end with that mask fixed (weights and momentum).
//! A run's chains use the same epoch: a `long` chain trains longer after
//! it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::segments::{PruningMethod, Segment};
use crate::pipeline::timeline::Timeline;

/// The name in the registry.
pub const NAME: &str = "oneshot";
/// What the method is.
pub const ABOUT: &str = "one pruning step at epoch --prune-at, then training on with the mask fixed";
/// The command that runs it.
pub const COMMAND: &str = "pdt";

/// The keys of [`Settings`].
pub const KEYS: &[&str] = &["prune_at"];

/// One-shot pruning's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The epoch (fractions allowed) at which the one pruning step falls.
    pub prune_at: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { prune_at: 1.0 }
    }
}

impl Settings {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !self.prune_at.is_finite() || self.prune_at <= 0.0 {
            return Err(Error::Config(format!(
                "--prune-at must be a positive number of epochs, got {}",
                self.prune_at
            )));
        }
        Ok(())
    }
}

/// One-shot pruning's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(skip)]
pub struct Args {
    /// oneshot: the epoch of the one pruning step [default: 1].
    #[arg(long)]
    pub prune_at: Option<f64>,
}

impl Args {
    /// Writes the flags given over `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(v) = self.prune_at {
            settings.prune_at = v;
        }
    }
}

/// The method.
pub fn build(settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    Some(Box::new(Oneshot {
        prune_at: settings.prune_at,
    }))
}

/// One-shot pruning.
#[derive(Debug, Clone, Copy)]
pub struct Oneshot {
    /// The epoch of the pruning step.
    pub prune_at: f64,
}

impl PruningMethod for Oneshot {
    /// A dense segment up to the pruning step (at least one iteration),
    /// then one segment at the target sparsity to the end (empty where the
    /// step falls at or after it).
    fn segments(&self, t: &Timeline) -> Vec<Segment> {
        let at = ((self.prune_at * t.per_epoch as f64).round() as u64).max(1);
        vec![
            Segment {
                index: 0,
                start: 0,
                end: at.min(t.total),
                sparsity: 0.0,
            },
            Segment {
                index: 1,
                start: at.min(t.total),
                end: t.total,
                sparsity: t.sparsity,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::timeline::PruneEvery;

    #[test]
    fn one_step_at_the_epoch_to_the_target() {
        // 3 epochs of 12 iterations.
        let t = Timeline::new(3.0, 12, 0.8, 0.1, 0.75, PruneEvery::default());
        let segs = Oneshot { prune_at: 1.5 }.segments(&t);
        let bounds: Vec<(u64, u64, f64)> =
            segs.iter().map(|s| (s.start, s.end, s.sparsity)).collect();
        assert_eq!(bounds, vec![(0, 18, 0.0), (18, 36, 0.8)]);
        let segs = Oneshot { prune_at: 5.0 }.segments(&t);
        assert_eq!((segs[1].start, segs[1].end), (36, 36));
        assert!(Settings { prune_at: 0.0 }.validate().is_err());
        assert!(Settings::default().validate().is_ok());
    }
}
