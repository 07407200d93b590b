//! The records a sparse-model-soup run keeps as JSON in its folder: the
//! evaluation of a model, what pruning a parent did, each trained candidate
//! and each finished phase. A record that exists marks its step as done.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use soup_core::NmPattern;

pub use crate::pipeline::checkpoint_ops::GreedyTrial;
pub use crate::pipeline::evaluation::Evaluation;

use crate::pipeline::lr::PruneImpact;

/// What pruning a phase's parent did (`prune.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneInfo {
    /// The checkpoint that was pruned.
    pub source: PathBuf,
    /// Fraction of the remaining prunable weights removed (`q`), or for
    /// absolute pruning the total sparsity asked for.
    pub fraction: f64,
    /// Whether `fraction` was of the remaining weights.
    pub of_remaining: bool,
    /// Sparsity over prunable weights after pruning.
    pub sparsity: f64,
    /// ALLR's measurements.
    pub impact: PruneImpact,
    /// The N:M pattern the parent was pruned to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<NmPattern>,
    /// With a pattern: the prunable tensors left dense because their input
    /// dimension is not a multiple of M.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dense: Vec<String>,
}

/// A trained candidate (`candidate-I.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateInfo {
    /// Index within the phase.
    pub index: u32,
    /// Seed of batch order and augmentation.
    pub seed: u64,
    /// Weight decay used.
    pub weight_decay: f64,
    /// Retraining epochs.
    pub epochs: f64,
    /// `eta_max` used.
    pub eta_max: f64,
    /// The schedule's peak (ALLR's `eta0`).
    pub lr_peak: f64,
    /// Optimizer steps.
    pub iterations: u64,
    /// Mean training loss (`None` when the process that trained it was
    /// killed before recording it).
    pub train_loss: Option<f64>,
    /// With SWA: how many iterates the delivered average holds (`None`
    /// without SWA, and when the process that trained it was killed
    /// before recording it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa_iterates: Option<u64>,
    /// Evaluation after retraining.
    pub eval: Evaluation,
    /// Wall time of training and evaluation, seconds.
    pub time_s: f64,
}

/// The results of one soup phase (`phase.json`, written last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseInfo {
    /// 1-based phase.
    pub phase: u32,
    /// The sparsity the schedule asks for after this phase.
    pub target_sparsity: f64,
    /// Pruning of the parent.
    pub prune: PruneInfo,
    /// Every candidate.
    pub candidates: Vec<CandidateInfo>,
    /// Whether every candidate's mask equals the pruned parent's.
    pub masks_identical: bool,
    /// Candidates averaged into the soup.
    pub chosen: Vec<u32>,
    /// Greedy trials, in order (empty for uniform soups).
    pub trials: Vec<GreedyTrial>,
    /// The soup, after batch-norm recalibration.
    pub soup: Evaluation,
    /// The prediction ensemble of all candidates (mean softmax), a
    /// reference for what averaging outputs instead of weights gives.
    pub ensemble: Evaluation,
    /// Path of the soup checkpoint, relative to the run folder.
    pub soup_path: PathBuf,
    /// The candidates' geometry (`soup distance` over their float tensors,
    /// paths relative to the run folder); `None` with a single candidate.
    #[serde(default)]
    pub geometry: Option<soup_core::DistanceReport>,
    /// How often two candidates' top-1 test predictions differ (every
    /// pair, mean, min and max); `None` with a single candidate, and in
    /// records written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<crate::pipeline::Disagreement>,
}
