//! IMP, iterative magnitude pruning with sparse model soups (what `trainer
//! sms` runs): a trained dense model is pruned in `k` phases, each removing
//! the same fraction `q = 1 - (1 - S)^(1/k)` of the remaining weights by
//! global magnitude through soup-core; after phase `p` the sparsity is
//! `1 - (1 - q)^p`. Each phase retrains `m` candidates from the pruned
//! parent and averages them.
//!
//! The phase pipeline (dense parent, candidates, soups, baselines, report,
//! Slurm job graph) is `trainer sms`'s run machinery in `crate::sms`, whose
//! settings (`SmsConfig`: phases, retraining epochs and schedule) are that
//! command's; this module holds the method's registration, its phase
//! schedule and its pruning step. It trains no segments of training from
//! scratch, so it builds no [`PruningMethod`] for `trainer pdt`.

use crate::pipeline::segments::{NoArgs, NoSettings, PruningMethod};

/// The name in the registry.
pub const NAME: &str = "imp";
/// What the method is.
pub const ABOUT: &str = "iterative magnitude pruning with soups: prune, retrain m candidates, average, repeat (trainer sms)";
/// The command that runs it.
pub const COMMAND: &str = "sms";
/// IMP's settings are those of `trainer sms`; it adds none to `trainer pdt`.
pub type Settings = NoSettings;
/// IMP adds no flags to `trainer pdt`.
pub type Args = NoArgs;
/// No keys of its own.
pub const KEYS: &[&str] = &[];

/// No segments of training from scratch: IMP runs through `trainer sms`.
pub fn build(_settings: &Settings) -> Option<Box<dyn PruningMethod>> {
    None
}

/// The fraction of the remaining weights each of `phases` phases removes
/// to reach `sparsity` after the last: `1 - (1 - S)^(1/k)`.
pub fn prune_fraction(sparsity: f64, phases: u32) -> f64 {
    1.0 - (1.0 - sparsity).powf(1.0 / phases as f64)
}

/// The sparsity after phase `phase` (1-based) of `phases`: `1 - (1 - q)^p`.
pub fn target_sparsity(sparsity: f64, phases: u32, phase: u32) -> f64 {
    1.0 - (1.0 - prune_fraction(sparsity, phases)).powi(phase as i32)
}

/// IMP's pruning steps: global magnitude pruning of a fraction of the
/// remaining weights (`prune`), or to an N:M pattern (`prune_nm`), through
/// soup-core.
pub use crate::pipeline::checkpoint_ops::{prune, prune_nm};
