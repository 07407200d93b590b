//! The report of a prune: what happened to each selected tensor, totals,
//! and the zeros and sums of squares of every float tensor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::groups::{Grouping, Layout};
use super::select::{Cut, GroupCut};
use super::source::Source;
use super::write::Counts;
use super::{ratio, Criterion, PruneOptions, Scope};
use crate::nm::NmPattern;

/// What happened to one selected tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorPrune {
    /// Name.
    pub name: String,
    /// dtype name.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub numel: u64,
    /// Zeros before pruning.
    pub zeros_before: u64,
    /// Zeros after pruning.
    pub zeros_after: u64,
    /// Non-zero elements set to zero.
    pub removed: u64,
    /// `zeros_after / numel`.
    pub sparsity: f64,
    /// Largest magnitude removed in this tensor's group (all selected
    /// tensors with the global scope); `None` when nothing is removed.
    pub threshold: Option<f64>,
    /// Sum of the squares of the removed values (the squared L2 norm that
    /// pruning takes away, as used by an adaptive learning rate; F32 data
    /// is summed in f32 within each piece of at most 2^18 elements by the
    /// global and per-tensor groupings, in f64 by N:M).
    pub removed_sum_squares: f64,
    /// Whether the tensor's input dimension is its first (`[in, out]`).
    #[serde(default)]
    pub transposed: bool,
}

/// Zeros and sums of squares of one float tensor, before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatTensorStats {
    /// Name.
    pub name: String,
    /// Elements.
    pub numel: u64,
    /// Zeros before pruning (`-0.0` counts as zero).
    pub zeros_before: u64,
    /// Zeros after pruning.
    pub zeros_after: u64,
    /// Sum of the squares of all values before, accumulated in f64.
    pub sum_squares_before: f64,
    /// Sum of the squares of all values after, accumulated in f64.
    pub sum_squares_after: f64,
}

/// The outcome of a prune (or of a dry run, which writes nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneReport {
    /// The input checkpoint.
    pub input: PathBuf,
    /// Files written (none for a dry run).
    pub outputs: Vec<PathBuf>,
    /// Content hash of the input (computed only when writing).
    pub input_digest: Option<String>,
    /// The requested fraction (`1 - N/M` for an N:M pattern).
    pub sparsity: f64,
    /// Scope (global for N:M).
    pub scope: Scope,
    /// Which elements competed: one group, one per tensor, or N:M groups.
    #[serde(default)]
    pub grouping: Grouping,
    /// The N:M pattern ([`Grouping::Nm`]).
    #[serde(default)]
    pub pattern: Option<NmPattern>,
    /// Whether already-zero weights were asked to stay zero (they always
    /// do).
    #[serde(default)]
    pub keep_zeros: bool,
    /// Selected tensors left unchanged because their input dimension is not
    /// a multiple of M.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Whether the fraction applied to the non-zero weights.
    pub of_remaining: bool,
    /// How elements were ranked.
    #[serde(default)]
    pub criterion: Criterion,
    /// Elements of the selected tensors.
    pub selected_elements: u64,
    /// Elements the fraction applied to: all selected, or the non-zero ones
    /// with `of_remaining` (summed over tensors with the layer scope).
    pub candidates: u64,
    /// `round(sparsity * candidates)` (per tensor, summed, with the layer
    /// scope): the size of the removed set.
    pub target: u64,
    /// Zeros in the selected tensors before.
    pub zeros_before: u64,
    /// Zeros in the selected tensors after.
    pub zeros_after: u64,
    /// Non-zero weights set to zero.
    pub removed: u64,
    /// `zeros_after / selected_elements`: sparsity over the prunable tensors.
    pub sparsity_after: f64,
    /// Elements of all float tensors (selected or not).
    pub float_elements: u64,
    /// Zeros in all float tensors after pruning.
    pub float_zeros_after: u64,
    /// `float_zeros_after / float_elements`: sparsity over all float
    /// parameters and buffers.
    pub float_sparsity_after: f64,
    /// The magnitude threshold with the global scope: the largest magnitude
    /// removed (`None` with the layer scope, the random criterion, or when
    /// nothing is removed).
    pub threshold: Option<f64>,
    /// Sum of the squares of all removed values.
    pub removed_sum_squares: f64,
    /// The selected tensors, in storage order.
    pub tensors: Vec<TensorPrune>,
    /// Every float tensor (selected or not), in storage order.
    #[serde(default)]
    pub float_tensors: Vec<FloatTensorStats>,
}

/// Assembles the report from the cuts and the write pass's counts.
pub(super) fn report<S: Source>(
    source: &S,
    options: &PruneOptions,
    layout: &Layout,
    group_of: &[Option<usize>],
    cuts: &[GroupCut],
    counts: &[Counts],
    threshold: impl Fn(&Cut) -> Option<f64>,
) -> PruneReport {
    let mut report_tensors = Vec::new();
    let candidates = cuts.iter().map(|c| c.candidates).sum();
    let target = cuts.iter().map(|c| c.target).sum();
    let mut float_elements = 0u64;
    let mut float_zeros_after = 0u64;
    let mut float_tensors = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        if source.float_type(i).is_none() {
            continue;
        }
        let numel = source.numel(i) as u64;
        let zeros_after = c.zeros_before + c.removed;
        float_elements += numel;
        float_zeros_after += zeros_after;
        let (name, dtype, shape) = source.describe(i);
        float_tensors.push(FloatTensorStats {
            name: name.to_string(),
            numel,
            zeros_before: c.zeros_before,
            zeros_after,
            sum_squares_before: c.sum_squares_before,
            sum_squares_after: c.sum_squares_after,
        });
        if let Some(g) = group_of[i] {
            report_tensors.push(TensorPrune {
                name: name.to_string(),
                dtype: crate::dtype::name(dtype),
                shape: shape.to_vec(),
                numel,
                zeros_before: c.zeros_before,
                zeros_after,
                removed: c.removed,
                sparsity: ratio(zeros_after, numel),
                threshold: threshold(&cuts[g].cut),
                removed_sum_squares: c.sum_squares,
                transposed: layout.transposed[i],
            });
        }
    }
    let selected_elements: u64 = report_tensors.iter().map(|t| t.numel).sum();
    let zeros_before: u64 = report_tensors.iter().map(|t| t.zeros_before).sum();
    let zeros_after: u64 = report_tensors.iter().map(|t| t.zeros_after).sum();
    PruneReport {
        input: PathBuf::new(),
        outputs: Vec::new(),
        input_digest: None,
        sparsity: match options.nm {
            Some(p) => 1.0 - p.n() as f64 / p.m() as f64,
            None => options.sparsity,
        },
        scope: options.scope,
        grouping: options.grouping(),
        pattern: options.nm,
        keep_zeros: options.keep_zeros,
        skipped: layout.skipped.clone(),
        of_remaining: options.of_remaining,
        criterion: options.criterion,
        selected_elements,
        candidates,
        target,
        zeros_before,
        zeros_after,
        removed: zeros_after - zeros_before,
        sparsity_after: ratio(zeros_after, selected_elements),
        float_elements,
        float_zeros_after,
        float_sparsity_after: ratio(float_zeros_after, float_elements),
        threshold: match options.grouping() {
            Grouping::Global => threshold(&cuts[0].cut),
            Grouping::PerTensor | Grouping::Nm => None,
        },
        removed_sum_squares: report_tensors.iter().map(|t| t.removed_sum_squares).sum(),
        tensors: report_tensors,
        float_tensors,
    }
}
