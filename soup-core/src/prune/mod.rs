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
            let files: Vec<&Path> = input.files().collect();
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
mod tests {
    use super::*;
    use crate::dtype::FloatType;
    use crate::output::write_test_checkpoint;
    use crate::stream::StreamOptions;
    use half::{bf16, f16};
    use proptest::prelude::*;

    /// Writes a checkpoint of F32 (or `dtype`) tensors named `w{i}.weight`
    /// (rank 2) plus an unselected bias.
    fn write(dir: &Path, name: &str, tensors: &[(Dtype, Vec<f64>)]) -> PathBuf {
        let path = dir.join(name);
        let mut all: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .enumerate()
            .map(|(i, (dtype, v))| {
                (
                    format!("w{i}.weight"),
                    *dtype,
                    vec![1, v.len()],
                    encode(v, *dtype),
                )
            })
            .collect();
        let bias: Vec<u8> = [0.0f32, 0.5, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        all.push(("b.bias".into(), Dtype::F32, vec![3], bias));
        write_test_checkpoint(&path, &all);
        path
    }

    fn encode(v: &[f64], dtype: Dtype) -> Vec<u8> {
        v.iter()
            .flat_map(|&x| match dtype {
                Dtype::F64 => x.to_le_bytes().to_vec(),
                Dtype::F32 => (x as f32).to_le_bytes().to_vec(),
                Dtype::F16 => f16::from_f64(x).to_le_bytes().to_vec(),
                Dtype::BF16 => bf16::from_f64(x).to_le_bytes().to_vec(),
                _ => unreachable!(),
            })
            .collect()
    }

    fn values(ck: &Checkpoint, name: &str) -> Vec<f64> {
        let t = ck.get(name).unwrap();
        let mut out = Vec::new();
        f64::decode(ck.data(t), t.float_type().unwrap(), &mut out);
        out
    }

    use crate::dtype::Accumulator;

    /// Tiny windows and pieces, so every test crosses window boundaries.
    fn small() -> StreamOptions {
        StreamOptions {
            budget_bytes: 96,
            piece_elems: 8,
        }
    }

    /// The reference: sort all (|w| as stored, tensor, index) and zero the
    /// first k (or the first k non-zero ones).
    fn reference(tensors: &[(Dtype, Vec<f64>)], s: f64, of_remaining: bool) -> Vec<Vec<bool>> {
        let stored: Vec<Vec<f64>> = tensors
            .iter()
            .map(|(d, v)| {
                let mut back = Vec::new();
                f64::decode(&encode(v, *d), FloatType::of(*d).unwrap(), &mut back);
                back
            })
            .collect();
        let mut all: Vec<(f64, usize, usize)> = Vec::new();
        for (t, v) in stored.iter().enumerate() {
            for (i, x) in v.iter().enumerate() {
                if !of_remaining || *x != 0.0 {
                    all.push((x.abs(), t, i));
                }
            }
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        let k = removal_count(s, all.len() as u64) as usize;
        let mut zero: Vec<Vec<bool>> = stored
            .iter()
            .map(|v| v.iter().map(|x| *x == 0.0).collect())
            .collect();
        for &(_, t, i) in &all[..k] {
            zero[t][i] = true;
        }
        zero
    }

    fn run_prune(
        dir: &Path,
        input: &Path,
        out: &str,
        options: &PruneOptions,
        stream: StreamOptions,
    ) -> (PruneReport, Checkpoint) {
        let ck = Checkpoint::open(input).unwrap();
        let control = Control {
            options: stream,
            ..Control::default()
        };
        let report = prune(&ck, &dir.join(out), options, &control).unwrap();
        let dry = plan(&ck, options, &control).unwrap();
        assert_eq!(
            PruneReport {
                outputs: vec![],
                input_digest: None,
                ..report.clone()
            },
            dry,
            "dry run reports what the prune did"
        );
        (report, Checkpoint::open(dir.join(out)).unwrap())
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        // Few distinct magnitudes, so ties and zeros are common.
        prop_oneof![
            Just(0.0),
            (-4i32..=4).prop_map(|v| v as f64 * 0.25),
            -2.0f64..2.0,
        ]
    }

    fn tensors_strategy() -> impl Strategy<Value = Vec<(Dtype, Vec<f64>)>> {
        let dtype = prop_oneof![
            Just(Dtype::F32),
            Just(Dtype::F16),
            Just(Dtype::BF16),
            Just(Dtype::F64)
        ];
        prop::collection::vec(
            (dtype, prop::collection::vec(value_strategy(), 1..60)),
            1..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Global pruning removes exactly the reference's set: the k
        /// smallest magnitudes with the documented tie-break, so every kept
        /// magnitude is >= every removed one and the count is exact.
        #[test]
        fn global_matches_sorted_reference(
            tensors in tensors_strategy(),
            s in 0.0f64..0.999,
            of_remaining in any::<bool>(),
            budget in 16usize..200,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let input = write(dir.path(), "in.safetensors", &tensors);
            let options = PruneOptions { sparsity: s, of_remaining, ..Default::default() };
            let stream = StreamOptions { budget_bytes: budget, piece_elems: 8 };
            let (report, out) = run_prune(dir.path(), &input, "out.safetensors", &options, stream);
            let expected = reference(&tensors, s, of_remaining);
            let mut kept_min = f64::INFINITY;
            let mut removed_max = 0.0f64;
            let before = Checkpoint::open(&input).unwrap();
            for (t, zero) in expected.iter().enumerate() {
                let name = format!("w{t}.weight");
                let got = values(&out, &name);
                let orig = values(&before, &name);
                for (i, z) in zero.iter().enumerate() {
                    prop_assert_eq!(got[i] == 0.0, *z, "{} [{}]", name, i);
                    if !z { prop_assert_eq!(got[i].to_bits(), orig[i].to_bits()); }
                    if got[i] == 0.0 && orig[i] != 0.0 { removed_max = removed_max.max(orig[i].abs()); }
                    if got[i] != 0.0 { kept_min = kept_min.min(orig[i].abs()); }
                }
            }
            prop_assert!(removed_max <= kept_min);
            let zeros_before = report.zeros_before;
            if of_remaining {
                prop_assert_eq!(report.removed, removal_count(s, report.selected_elements - zeros_before));
            } else {
                prop_assert_eq!(report.zeros_after, zeros_before.max(removal_count(s, report.selected_elements)));
            }
            // The bias is not selected and is copied bit for bit.
            prop_assert_eq!(values(&out, "b.bias"), vec![0.0, 0.5, 0.0]);
        }

        /// The layer scope applies the same rule to each tensor alone.
        #[test]
        fn layer_scope_is_per_tensor(tensors in tensors_strategy(), s in 0.0f64..0.999, of_remaining in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let input = write(dir.path(), "in.safetensors", &tensors);
            let options = PruneOptions { sparsity: s, of_remaining, scope: Scope::Layer, ..Default::default() };
            let (_, out) = run_prune(dir.path(), &input, "out.safetensors", &options, small());
            for (t, tensor) in tensors.iter().enumerate() {
                let expected = reference(std::slice::from_ref(tensor), s, of_remaining);
                let got = values(&out, &format!("w{t}.weight"));
                let zeros: Vec<bool> = got.iter().map(|v| *v == 0.0).collect();
                prop_assert_eq!(&zeros, &expected[0]);
            }
        }
    }

    #[test]
    fn windows_and_threads_do_not_change_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let v: Vec<f64> = (0..500).map(|i| ((i * 37) % 23) as f64 - 11.0).collect();
        let input = write(
            dir.path(),
            "in.safetensors",
            &[(Dtype::F32, v.clone()), (Dtype::F32, v)],
        );
        let options = PruneOptions {
            sparsity: 0.37,
            ..Default::default()
        };
        let (_, a) = run_prune(dir.path(), &input, "a.safetensors", &options, small());
        let (_, b) = run_prune(
            dir.path(),
            &input,
            "b.safetensors",
            &options,
            StreamOptions::default(),
        );
        for name in ["w0.weight", "w1.weight"] {
            assert_eq!(values(&a, name), values(&b, name));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = write(
            dir.path(),
            "in.safetensors",
            &[(Dtype::F32, vec![1.0, 2.0])],
        );
        let ck = Checkpoint::open(&input).unwrap();
        let control = Control::default();
        for s in [1.0, -0.1, f64::NAN] {
            let e = plan(
                &ck,
                &PruneOptions {
                    sparsity: s,
                    ..Default::default()
                },
                &control,
            )
            .unwrap_err();
            assert!(matches!(e, Error::Sparsity { .. }), "{e}");
        }
        let e = plan(
            &ck,
            &PruneOptions {
                sparsity: 0.5,
                exclude: vec!["w0".into()],
                ..Default::default()
            },
            &control,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::NothingToPrune { ref path } if path == &input),
            "{e}"
        );
        let view = TensorView::f32("w.weight", &[2], &[1.0, 2.0]).unwrap();
        let e = prune_tensors(
            &[view],
            &PruneOptions {
                sparsity: 0.5,
                ..Default::default()
            },
            &control,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::NothingToPrune { .. }),
            "rank 1 is not prunable: {e}"
        );
        let e = TensorView::f32("w.weight", &[3, 1], &[1.0, 2.0]).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
    }

    /// The in-memory views of the tensors that [`write`] stores, in the
    /// same order (weights, then the bias).
    fn views(tensors: &[(Dtype, Vec<f64>)]) -> Vec<TensorView<'static>> {
        let mut out: Vec<TensorView<'static>> = tensors
            .iter()
            .enumerate()
            .map(|(i, (dtype, v))| {
                TensorView::from_bytes(
                    format!("w{i}.weight"),
                    &[1, v.len()],
                    FloatType::of(*dtype).unwrap(),
                    encode(v, *dtype),
                )
                .unwrap()
            })
            .collect();
        out.push(TensorView::f32("b.bias", &[3], &[0.0, 0.5, 0.0]).unwrap());
        out
    }

    fn criterion_strategy() -> impl Strategy<Value = Criterion> {
        prop_oneof![
            Just(Criterion::Magnitude),
            any::<u64>().prop_map(|seed| Criterion::Random { seed }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// The file front end and the in-memory front end choose identical
        /// masks and report identical counts, whatever the scope, criterion
        /// and window sizes.
        #[test]
        fn memory_and_file_choose_identical_masks(
            tensors in tensors_strategy(),
            s in 0.0f64..0.999,
            of_remaining in any::<bool>(),
            layer in any::<bool>(),
            criterion in criterion_strategy(),
            budget in 16usize..200,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let input = write(dir.path(), "in.safetensors", &tensors);
            let options = PruneOptions {
                sparsity: s,
                of_remaining,
                criterion,
                scope: if layer { Scope::Layer } else { Scope::Global },
                ..Default::default()
            };
            let stream = StreamOptions { budget_bytes: budget, piece_elems: 8 };
            let (report, out) = run_prune(dir.path(), &input, "out.safetensors", &options, stream);
            let views = views(&tensors);
            let control = Control { options: stream, ..Control::default() };
            let memory = prune_tensors(&views, &options, &control).unwrap();
            for (t, mask) in memory.masks.iter().enumerate().take(tensors.len()) {
                let got: Vec<bool> = values(&out, &format!("w{t}.weight")).iter().map(|v| *v != 0.0).collect();
                prop_assert_eq!(mask.as_ref().unwrap(), &got, "tensor {}", t);
            }
            prop_assert!(memory.masks[tensors.len()].is_none(), "the bias is not prunable");
            prop_assert_eq!(
                PruneReport { input: PathBuf::new(), outputs: vec![], input_digest: None, ..report },
                memory.report
            );
        }

        /// The random criterion removes exactly the count the magnitude
        /// criterion removes, keeps the zeros, depends on the seed only (not
        /// on windows), and is not the magnitude order.
        #[test]
        fn random_criterion_counts_like_magnitude(
            tensors in tensors_strategy(),
            s in 0.0f64..0.999,
            of_remaining in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let views = views(&tensors);
            let run = |criterion, budget| {
                let options = PruneOptions { sparsity: s, of_remaining, criterion, ..Default::default() };
                let control = Control { options: StreamOptions { budget_bytes: budget, piece_elems: 8 }, ..Control::default() };
                prune_tensors(&views, &options, &control).unwrap()
            };
            let random = run(Criterion::Random { seed }, 32);
            let magnitude = run(Criterion::Magnitude, 1 << 20);
            prop_assert_eq!(random.report.removed, magnitude.report.removed);
            prop_assert_eq!(random.report.zeros_after, magnitude.report.zeros_after);
            prop_assert_eq!(random.report.threshold, None);
            prop_assert_eq!(&random.masks, &run(Criterion::Random { seed }, 1 << 20).masks);
            for (t, (_, v)) in tensors.iter().enumerate() {
                let mask = random.masks[t].as_ref().unwrap();
                for (i, x) in v.iter().enumerate() {
                    if *x == 0.0 {
                        prop_assert!(!mask[i], "a zero stays zero");
                    }
                }
            }
        }
    }

    /// A random selection differs from the magnitude selection, and from
    /// another seed's, on distinct values (with overwhelming probability:
    /// fixed seeds, so the test is deterministic).
    #[test]
    fn random_criterion_is_not_magnitude() {
        let v: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let views = [TensorView::f32("w.weight", &[10, 100], &v).unwrap()];
        let run = |criterion| {
            let options = PruneOptions {
                sparsity: 0.5,
                criterion,
                ..Default::default()
            };
            prune_tensors(&views, &options, &Control::default())
                .unwrap()
                .masks
                .remove(0)
                .unwrap()
        };
        let magnitude = run(Criterion::Magnitude);
        assert_eq!(magnitude, (0..1000).map(|i| i >= 500).collect::<Vec<_>>());
        let a = run(Criterion::Random { seed: 1 });
        let b = run(Criterion::Random { seed: 2 });
        assert_eq!(a.iter().filter(|k| !**k).count(), 500);
        assert_ne!(a, magnitude);
        assert_ne!(a, b);
        // Small values are not favoured: about half of the removed are below the median.
        let low = a[..500].iter().filter(|k| !**k).count();
        assert!((200..300).contains(&low), "{low}");
    }
}
