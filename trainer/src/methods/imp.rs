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

use std::path::Path;

use crate::error::Result;
use crate::pipeline::checkpoint_ops;
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

/// IMP's pruning step: `input` pruned by global magnitude through
/// soup-core into `output`, removing `fraction` of the remaining weights
/// (`of_remaining`) or of all of them, outside `exclude`; without an
/// output, what that pruning does (a dry run). Returns soup-core's report.
pub fn prune(
    input: &Path,
    output: Option<&Path>,
    fraction: f64,
    of_remaining: bool,
    exclude: &[String],
) -> Result<soup_core::PruneReport> {
    checkpoint_ops::prune(input, output, fraction, of_remaining, exclude)
}

/// IMP's pruning step to an N:M pattern: `input` pruned into `output` so
/// that every group of M along the input dimension of the tensors `names`
/// keeps its N largest weights; with `keep_zeros`, inside the mask the
/// model has. Without an output, a dry run. Returns soup-core's report.
pub fn prune_nm(
    input: &Path,
    output: Option<&Path>,
    pattern: soup_core::NmPattern,
    keep_zeros: bool,
    names: &[String],
) -> Result<soup_core::PruneReport> {
    checkpoint_ops::prune_nm(input, output, pattern, keep_zeros, names)
}
