//! Unstructured pruning (`soup prune`, and the trainer between phases of
//! iterative magnitude pruning and inside its training loops).
//!
//! # What is removed
//! The selected tensors (by default: floating-point tensors of rank >= 2
//! whose names end in `weight`; see [`PruneSelection`]) form one group
//! ([`Scope::Global`]) or one group each ([`Scope::Layer`]). In a group of
//! `n` elements of which `z` are already zero:
//! - plain: the `k = round(S * n)` elements of smallest magnitude are zero
//!   afterwards. Zeros count among them (they are the smallest), so the
//!   group ends with `max(z, k)` zeros.
//! - `of_remaining` (one IMP phase): `k = round(S * (n - z))` of the non-zero
//!   elements, the smallest, are set to zero: the group ends with `z + k`
//!   zeros. Two phases of `q` on a dense group thus leave exactly
//!   `k1 + round(q * (n - k1))` zeros with `k1 = round(q * n)`, which is
//!   within one of `(1 - (1 - q)^2) * n`.
//!
//! `round` is round-half-to-even of the f64 product, as Python's `round` and
//! so `torch.nn.utils.prune` compute it. Already-zero elements are never
//! rewritten (a `-0.0` stays `-0.0`); newly removed ones become `+0.0`.
//!
//! # Order and tie-break
//! Elements are ordered by magnitude `|w|` (NaN counts as larger than any
//! number). Among equal magnitudes, the element that comes first in
//! (storage order of the tensor in the checkpoint, row-major index inside the
//! tensor) is removed first. This is the only freedom the rule leaves, and it
//! makes the result a function of the input alone (not of threads or window
//! sizes).
//!
//! # One implementation, two front ends
//! Checkpoint files ([`prune`], [`plan`]) and tensors in memory
//! ([`prune_tensors`]) go through the same code, in four files: `rule`
//! decides what is prunable ([`PruneSelection`]), `score` ranks elements
//! (the [`Criterion`]: magnitude, or a seeded random order), `select` finds
//! the exact cut and `write` applies it. Both front ends therefore choose identical masks.
//!
//! # Out of core
//! The k-th smallest magnitude is found by radix selection over the
//! magnitudes' bit patterns: for IEEE floats with the sign cleared, the bit
//! pattern orders like the magnitude. F32, F16 and BF16 convert exactly to
//! F32, so their keys are F32 bit patterns (31 bits: two passes of 16-bit
//! digits); a selection with F64 tensors uses F64 bit patterns (four
//! passes). Each pass streams the selected tensors in bounded windows and
//! builds a 65536-bin histogram of one digit, restricted to the elements
//! whose higher digits match the bucket chosen so far. A final pass writes
//! the output, removing every element below the threshold key and, of those
//! equal to it, as many as the count still needs, in tie-break order. Memory
//! is one histogram per thread plus the stream's window budget.

mod rule;
mod score;
mod select;
mod source;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::stream::Control;

pub use rule::{is_prunable, PruneSelection};
pub use score::Criterion;
pub use source::TensorView;

use score::{Key, Key32, Key64, RandomKey};
use select::{find_cut, Cut, GroupCut};
use source::{Memory, MemorySink, Sink, Source};
use write::{write_pass, Counts};

/// Which elements compete with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One threshold across all selected tensors.
    #[default]
    Global,
    /// The same fraction removed in each selected tensor.
    Layer,
}

/// Parameters of a prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Fraction to remove, in [0, 1): of all selected weights (reaching this
    /// total sparsity), or of the non-zero ones with `of_remaining`.
    pub sparsity: f64,
    /// Global or per-tensor selection.
    pub scope: Scope,
    /// Remove the fraction of the weights that are still non-zero.
    pub of_remaining: bool,
    /// How elements are ranked (magnitude by default).
    pub criterion: Criterion,
    /// Regexes: prune tensors whose names match one (replaces the default
    /// name rule; see [`PruneSelection`]).
    pub include: Vec<String>,
    /// Regexes: never prune tensors whose names match one.
    pub exclude: Vec<String>,
    /// Where and how to write (files only).
    pub output: OutputOptions,
}

/// `round(fraction * n)`, rounding halves to even (Python's `round`).
pub fn removal_count(fraction: f64, n: u64) -> u64 {
    (fraction * n as f64).round_ties_even() as u64
}

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
    /// is summed in f32 within each piece of at most 2^18 elements).
    pub removed_sum_squares: f64,
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
    /// The requested fraction.
    pub sparsity: f64,
    /// Scope.
    pub scope: Scope,
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
}

/// Prunes `input` into `target` (a file, or a folder of shards with
/// `options.output.shard_size`). See the module documentation.
pub fn prune(
    input: &Checkpoint,
    target: &Path,
    options: &PruneOptions,
    control: &Control,
) -> Result<PruneReport> {
    run(input, Some(target), options, control)
}

/// Computes what [`prune`] would do, with the same counts, thresholds and
/// per-tensor report, without writing anything (`--dry-run`).
pub fn plan(input: &Checkpoint, options: &PruneOptions, control: &Control) -> Result<PruneReport> {
    run(input, None, options, control)
}

/// Checks the fraction.
pub fn validate_sparsity(sparsity: f64) -> Result<()> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::Sparsity { value: sparsity });
    }
    Ok(())
}

/// The outcome of pruning tensors in memory ([`prune_tensors`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorsPrune {
    /// Per input tensor, in order: its mask after pruning (`true` where the
    /// element is non-zero), or `None` for a tensor that is not prunable.
    pub masks: Vec<Option<Vec<bool>>>,
    /// Counts, exactly as [`plan`] reports them for a file holding the same
    /// tensors in the same order (`input` is empty).
    pub report: PruneReport,
}

/// Prunes float tensors held in memory with the same selection as
/// [`prune`] on a file holding them in this order: same prunable rule, same
/// counts, same tie-break, hence the same masks. Returns the masks; the
/// caller applies them to its own tensors (`w *= mask`).
pub fn prune_tensors(
    tensors: &[TensorView<'_>],
    options: &PruneOptions,
    control: &Control,
) -> Result<TensorsPrune> {
    let source = Memory(tensors);
    let selected = selected_tensors(&source, options, Path::new(""))?;
    let sink = MemorySink {
        tensors: (0..tensors.len())
            .map(|i| {
                selected
                    .contains(&i)
                    .then(|| Mutex::new(source.bytes(i, &(0..source.numel(i))).to_vec()))
            })
            .collect(),
    };
    let (report, _) = run_source(&source, &selected, options, Some(&sink), false, control)?;
    let masks = sink
        .tensors
        .into_iter()
        .zip(tensors)
        .map(|(slot, view)| {
            slot.map(|m| {
                let bytes = m.into_inner().expect("not poisoned");
                let mut mask = Vec::with_capacity(bytes.len() / view.float_type().size());
                crate::dtype::for_each_nonzero(&bytes, view.float_type(), |_, nz| mask.push(nz));
                mask
            })
        })
        .collect();
    Ok(TensorsPrune { masks, report })
}

/// The tensors `options` prunes in `source`; none is an error naming `path`.
fn selected_tensors<S: Source>(
    source: &S,
    options: &PruneOptions,
    path: &Path,
) -> Result<Vec<usize>> {
    validate_sparsity(options.sparsity)?;
    let rule = PruneSelection::new(&options.include, &options.exclude)?;
    let selected: Vec<usize> = (0..source.count())
        .filter(|&i| {
            let (name, _, shape) = source.describe(i);
            rule.selects_parts(name, shape.len(), source.float_type(i).is_some())
        })
        .collect();
    if selected.is_empty() {
        return Err(Error::NothingToPrune {
            path: path.to_path_buf(),
        });
    }
    Ok(selected)
}

fn run(
    input: &Checkpoint,
    target: Option<&Path>,
    options: &PruneOptions,
    control: &Control,
) -> Result<PruneReport> {
    let selected = selected_tensors(input, options, input.path())?;
    let tensors = input.tensors();
    // The provisional recipe holds the widest counts, so the final one,
    // which adds the threshold, fits the header space reserved for it.
    let recipe = |target: u64, removed: u64| {
        serde_json::json!({
            "sparsity": options.sparsity,
            "scope": options.scope,
            "of_remaining": options.of_remaining,
            "criterion": options.criterion,
            "include": options.include,
            "exclude": options.exclude,
            "target": target,
            "removed": removed,
        })
    };
    let mut output = match target {
        None => None,
        Some(target) => {
            let layout: Vec<OutputTensor> = tensors.iter().map(OutputTensor::from).collect();
            let mut metadata = provenance::common_metadata(&[input]);
            provenance::record(
                &mut metadata,
                "prune",
                recipe(u64::MAX, u64::MAX),
                &[(
                    input.path().display().to_string(),
                    control.digest.placeholder(),
                )],
            );
            let files: Vec<&Path> = input.files_with_index().collect();
            Some(Output::create(
                target,
                &layout,
                metadata,
                &files,
                &options.output,
            )?)
        }
    };
    let sink = output.as_ref().map(|o| o as &dyn Sink);
    let (mut report, sha) = run_source(input, &selected, options, sink, sink.is_some(), control)?;
    report.input = input.path().to_path_buf();
    if let Some(mut out) = output.take() {
        let sha = sha.expect("hashed while writing");
        let mut metadata = provenance::common_metadata(&[input]);
        let mut r = recipe(report.target, report.removed);
        r["threshold"] = report.threshold.into();
        provenance::record(
            &mut metadata,
            "prune",
            r,
            &[(input.path().display().to_string(), sha.clone())],
        );
        *out.metadata_mut() = metadata;
        input.check_unchanged()?;
        report.outputs = out.commit()?;
        report.input_digest = Some(sha);
    }
    Ok(report)
}

/// Picks the key type for the criterion and the tensors' types.
fn run_source<S: Source>(
    source: &S,
    selected: &[usize],
    options: &PruneOptions,
    sink: Option<&dyn Sink>,
    hash: bool,
    control: &Control,
) -> Result<(PruneReport, Option<String>)> {
    match options.criterion {
        Criterion::Random { seed } => {
            let key = RandomKey::new(seed, (0..source.count()).map(|i| source.describe(i).0));
            run_keys(source, &key, selected, options, sink, hash, control)
        }
        Criterion::Magnitude => {
            if selected.iter().any(|&i| source.describe(i).1 == Dtype::F64) {
                run_keys(source, &Key64, selected, options, sink, hash, control)
            } else {
                run_keys(source, &Key32, selected, options, sink, hash, control)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_keys<S: Source, K: Key>(
    source: &S,
    key: &K,
    selected: &[usize],
    options: &PruneOptions,
    sink: Option<&dyn Sink>,
    hash: bool,
    control: &Control,
) -> Result<(PruneReport, Option<String>)> {
    let groups: Vec<Vec<usize>> = match options.scope {
        Scope::Global => vec![selected.to_vec()],
        Scope::Layer => selected.iter().map(|&i| vec![i]).collect(),
    };
    let mut group_of: Vec<Option<usize>> = vec![None; source.count()];
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            group_of[i] = Some(g);
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let mut hists: Vec<Mutex<Vec<u64>>> = (0..threads)
        .map(|_| Mutex::new(vec![0u64; 1 << 16]))
        .collect();
    let mut cuts: Vec<GroupCut> = Vec::with_capacity(groups.len());
    for members in &groups {
        cuts.push(find_cut(
            source, key, members, options, &mut hists, control,
        )?);
    }
    drop(hists);
    let plain: Vec<Cut> = cuts.iter().map(|c| c.cut).collect();
    let (counts, sha) = write_pass(source, key, &group_of, &plain, sink, hash, control)?;
    let threshold = |cut: &Cut| {
        if cut.any {
            key.threshold(cut.thr)
        } else {
            None
        }
    };
    Ok((
        report(source, options, &group_of, &cuts, &counts, threshold),
        sha,
    ))
}

/// Assembles the report from the cuts and the write pass's counts.
fn report<S: Source>(
    source: &S,
    options: &PruneOptions,
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
    for (i, c) in counts.iter().enumerate() {
        if source.float_type(i).is_none() {
            continue;
        }
        let numel = source.numel(i) as u64;
        let zeros_after = c.zeros_before + c.removed;
        float_elements += numel;
        float_zeros_after += zeros_after;
        if let Some(g) = group_of[i] {
            let (name, dtype, shape) = source.describe(i);
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
        sparsity: options.sparsity,
        scope: options.scope,
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
        threshold: match options.scope {
            Scope::Global => threshold(&cuts[0].cut),
            Scope::Layer => None,
        },
        removed_sum_squares: report_tensors.iter().map(|t| t.removed_sum_squares).sum(),
        tensors: report_tensors,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests;
