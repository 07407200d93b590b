//! Unstructured magnitude pruning (`soup prune`, and the trainer between
//! phases of iterative magnitude pruning).
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

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::select::Selection;
use crate::stream::{windows, Control, Piece};

/// Which elements compete with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One magnitude threshold across all selected tensors.
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
    /// Regexes: prune tensors whose names match one (replaces the default
    /// name rule; see [`PruneSelection`]).
    pub include: Vec<String>,
    /// Regexes: never prune tensors whose names match one.
    pub exclude: Vec<String>,
    /// Where and how to write.
    pub output: OutputOptions,
}

/// Which tensors are pruned: floating-point tensors that match an include
/// pattern (when there are none: tensors of rank >= 2 whose names end in
/// `weight`, i.e. convolution and linear weights, not biases or
/// normalization parameters) and no exclude pattern. Integer and bool
/// tensors are never selected.
#[derive(Debug, Clone)]
pub struct PruneSelection {
    selection: Selection,
    default_rule: bool,
}

impl PruneSelection {
    /// Compiles the patterns; a bad one is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PruneSelection> {
        Ok(PruneSelection {
            selection: Selection::new(include, exclude)?,
            default_rule: include.is_empty(),
        })
    }

    /// Whether `tensor` is pruned.
    pub fn selects(&self, tensor: &TensorEntry) -> bool {
        tensor.float_type().is_some()
            && self.selection.matches(&tensor.name)
            && (!self.default_rule || (tensor.shape.len() >= 2 && tensor.name.ends_with("weight")))
    }
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
    /// removed (`None` with the layer scope or when nothing is removed).
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
        return Err(Error::invalid(format!(
            "sparsity must be at least 0 and below 1, got {sparsity}"
        )));
    }
    Ok(())
}

/// Where a group is cut: every key below `thr` goes, and `ties` of the `eq`
/// keys equal to it (in tie-break order). The default cuts nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cut {
    thr: u64,
    ties: u64,
    eq: u64,
    /// Whether anything (zeros included) is in the removed set.
    any: bool,
}

/// A group's cut with the counts it was derived from.
#[derive(Debug, Clone, Copy, Default)]
struct GroupCut {
    cut: Cut,
    candidates: u64,
    target: u64,
}

/// Totals of one tensor (or piece) after the write pass.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    zeros_before: u64,
    removed: u64,
    sum_squares: f64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.zeros_before += other.zeros_before;
        self.removed += other.removed;
        self.sum_squares += other.sum_squares;
    }
}

fn run(
    input: &Checkpoint,
    target: Option<&Path>,
    options: &PruneOptions,
    control: &Control,
) -> Result<PruneReport> {
    validate_sparsity(options.sparsity)?;
    let filter = PruneSelection::new(&options.include, &options.exclude)?;
    let tensors = input.tensors();
    let selected: Vec<usize> = (0..tensors.len())
        .filter(|&i| filter.selects(&tensors[i]))
        .collect();
    if selected.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no tensors selected for pruning (by default: float tensors of rank >= 2 \
             whose names end in `weight`; change with include/exclude patterns)",
            input.path().display()
        )));
    }
    // The provisional recipe holds the widest counts, so the final one,
    // which adds the threshold, fits the header space reserved for it.
    let recipe = |target: u64, removed: u64| {
        serde_json::json!({
            "sparsity": options.sparsity,
            "scope": options.scope,
            "of_remaining": options.of_remaining,
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
    let wide = selected.iter().any(|&i| tensors[i].dtype == Dtype::F64);
    let (report, sha) = if wide {
        run_keys::<Key64>(input, &selected, options, output.as_ref(), control)?
    } else {
        run_keys::<Key32>(input, &selected, options, output.as_ref(), control)?
    };
    let mut report = report;
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

fn run_keys<K: Key>(
    input: &Checkpoint,
    selected: &[usize],
    options: &PruneOptions,
    output: Option<&Output>,
    control: &Control,
) -> Result<(PruneReport, Option<String>)> {
    let tensors = input.tensors();
    let groups: Vec<Vec<usize>> = match options.scope {
        Scope::Global => vec![selected.to_vec()],
        Scope::Layer => selected.iter().map(|&i| vec![i]).collect(),
    };
    let mut group_of: Vec<Option<usize>> = vec![None; tensors.len()];
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            group_of[i] = Some(g);
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let mut hists = vec![vec![0u64; 1 << 16]; threads];
    let mut cuts = Vec::with_capacity(groups.len());
    for members in &groups {
        cuts.push(find_cut::<K>(input, members, options, &mut hists, control)?);
    }
    drop(hists);

    // The write (or counting) pass.
    let plain: Vec<Cut> = cuts.iter().map(|c| c.cut).collect();
    let mut remaining: Vec<u64> = plain.iter().map(|c| c.ties).collect();
    let partial = |g: usize| plain[g].ties > 0 && plain[g].ties < plain[g].eq;
    let mut counts = vec![Counts::default(); tensors.len()];
    let sha = crate::rewrite::stream(
        input,
        &|_| 0,
        control,
        if output.is_some() {
            "pruning"
        } else {
            "counting"
        },
        output.is_some(),
        |window: &[Piece]| {
            let needs = window
                .iter()
                .any(|p| group_of[p.tensor].is_some_and(partial));
            let eq: Vec<u64> = if needs {
                window
                    .par_iter()
                    .map(|p| match group_of[p.tensor] {
                        Some(g) if partial(g) => count_equal::<K>(input, p, plain[g].thr),
                        _ => 0,
                    })
                    .collect()
            } else {
                vec![0; window.len()]
            };
            // Ties are handed out in storage order: earlier pieces first.
            Ok(window
                .iter()
                .zip(eq)
                .map(|(p, eq)| match group_of[p.tensor] {
                    None => 0,
                    Some(g) if partial(g) => {
                        let take = remaining[g].min(eq);
                        remaining[g] -= take;
                        take
                    }
                    Some(g) if plain[g].ties == plain[g].eq => u64::MAX,
                    Some(_) => 0,
                })
                .collect::<Vec<u64>>())
        },
        |p: &Piece, budgets: &Vec<u64>, i| {
            let cut = group_of[p.tensor].map(|g| plain[g]);
            prune_piece::<K>(input, p, cut, budgets[i], output)
        },
        |p, c| counts[p.tensor].add(c),
    )?;

    let mut report_tensors = Vec::with_capacity(selected.len());
    let mut candidates = 0;
    let mut target = 0;
    for gc in &cuts {
        candidates += gc.candidates;
        target += gc.target;
    }
    let mut float_elements = 0u64;
    let mut float_zeros_after = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        if t.float_type().is_none() {
            continue;
        }
        let c = counts[i];
        float_elements += t.numel() as u64;
        float_zeros_after += c.zeros_before + c.removed;
        if let Some(g) = group_of[i] {
            let numel = t.numel() as u64;
            let zeros_after = c.zeros_before + c.removed;
            report_tensors.push(TensorPrune {
                name: t.name.clone(),
                dtype: crate::dtype::name(t.dtype),
                shape: t.shape.clone(),
                numel,
                zeros_before: c.zeros_before,
                zeros_after,
                removed: c.removed,
                sparsity: ratio(zeros_after, numel),
                threshold: threshold::<K>(&plain[g]),
                removed_sum_squares: c.sum_squares,
            });
        }
    }
    let selected_elements: u64 = report_tensors.iter().map(|t| t.numel).sum();
    let zeros_before: u64 = report_tensors.iter().map(|t| t.zeros_before).sum();
    let zeros_after: u64 = report_tensors.iter().map(|t| t.zeros_after).sum();
    let report = PruneReport {
        input: input.path().to_path_buf(),
        outputs: Vec::new(),
        input_digest: None,
        sparsity: options.sparsity,
        scope: options.scope,
        of_remaining: options.of_remaining,
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
            Scope::Global => threshold::<K>(&plain[0]),
            Scope::Layer => None,
        },
        removed_sum_squares: report_tensors.iter().map(|t| t.removed_sum_squares).sum(),
        tensors: report_tensors,
    };
    Ok((report, sha))
}

fn threshold<K: Key>(cut: &Cut) -> Option<f64> {
    cut.any.then(|| K::magnitude(cut.thr))
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Radix selection of the group's cut. See the module documentation.
fn find_cut<K: Key>(
    input: &Checkpoint,
    members: &[usize],
    options: &PruneOptions,
    hists: &mut [Vec<u64>],
    control: &Control,
) -> Result<GroupCut> {
    let tensors = input.tensors();
    let entries: Vec<&TensorEntry> = members.iter().map(|&i| &tensors[i]).collect();
    let n: u64 = entries.iter().map(|t| t.numel() as u64).sum();
    let mut rank = None;
    let mut result = GroupCut {
        candidates: n,
        ..GroupCut::default()
    };
    if !options.of_remaining {
        let k = removal_count(options.sparsity, n);
        result.target = k;
        if k == 0 {
            return Ok(result);
        }
        rank = Some(k);
    }
    let sizes: Vec<(usize, usize)> = entries
        .iter()
        .map(|t| (t.numel(), t.float_type().expect("float").size()))
        .collect();
    let bytes_total: u64 = entries.iter().map(|t| t.nbytes() as u64).sum();
    let wins = windows(&sizes, control.options);
    let mut prefix = 0u64;
    let mut less = 0u64;
    let mut shift = K::BITS - 16;
    loop {
        let above = if shift + 16 >= 64 {
            0
        } else {
            !0u64 << (shift + 16)
        };
        for h in hists.iter_mut() {
            h.fill(0);
        }
        let mut zeros = vec![0u64; hists.len()];
        control.progress.start("finding threshold", bytes_total);
        for window in &wins {
            control.check()?;
            let per = window.len().div_ceil(hists.len());
            hists
                .par_iter_mut()
                .zip(zeros.par_iter_mut())
                .zip(window.par_chunks(per))
                .for_each(|((h, z), pieces)| {
                    for p in pieces {
                        let t = entries[p.tensor];
                        let ty = t.float_type().expect("float");
                        let bytes = input.bytes(t, t.byte_range(&p.elems));
                        let h: &mut [u64; 1 << 16] =
                            h.as_mut_slice().try_into().expect("65536 bins");
                        if K::BITS == 32 && ty == FloatType::F32 {
                            *z += histogram_f32(bytes, above as u32, prefix as u32, shift, h);
                            continue;
                        }
                        let mut zc = 0u64;
                        K::each(bytes, ty, |_, k| {
                            zc += (k == 0) as u64;
                            if k & above == prefix {
                                h[((k >> shift) & 0xffff) as usize] += 1;
                            }
                        });
                        *z += zc;
                    }
                });
            let mut done = 0u64;
            for p in window {
                let t = entries[p.tensor];
                let range = t.byte_range(&p.elems);
                done += range.len() as u64;
                input.release(t, range);
            }
            control.progress.advance(done);
        }
        control.progress.finish();
        let (first, rest) = hists.split_first_mut().expect("one thread at least");
        for h in rest.iter() {
            for (a, b) in first.iter_mut().zip(h) {
                *a += b;
            }
        }
        let r = match rank {
            Some(r) => r,
            None => {
                let z: u64 = zeros.iter().sum();
                let k = removal_count(options.sparsity, n - z);
                result.candidates = n - z;
                result.target = k;
                if k == 0 {
                    return Ok(result);
                }
                rank = Some(z + k);
                z + k
            }
        };
        let hist = &hists[0];
        let mut cum = less;
        let mut b = 0usize;
        while cum + hist[b] < r {
            cum += hist[b];
            b += 1;
        }
        less = cum;
        prefix |= (b as u64) << shift;
        if shift == 0 {
            result.cut = Cut {
                thr: prefix,
                ties: r - less,
                eq: hist[b],
                any: true,
            };
            return Ok(result);
        }
        shift -= 16;
    }
}

/// One histogram pass over F32 data with F32 keys (the common case): counts
/// digit `shift` of the keys whose bits above it equal `prefix`, and returns
/// the zeros. The first pass (no bits above) needs no test at all.
fn histogram_f32(bytes: &[u8], above: u32, prefix: u32, shift: u32, h: &mut [u64; 1 << 16]) -> u64 {
    let mut zeros = 0u64;
    let keys = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) & ABS32);
    if above == 0 {
        for k in keys {
            zeros += (k == 0) as u64;
            h[((k >> shift) & 0xffff) as usize] += 1;
        }
    } else {
        for k in keys {
            zeros += (k == 0) as u64;
            if k & above == prefix {
                h[((k >> shift) & 0xffff) as usize] += 1;
            }
        }
    }
    zeros
}

/// Elements of the piece whose key is `thr`.
fn count_equal<K: Key>(input: &Checkpoint, p: &Piece, thr: u64) -> u64 {
    let t = &input.tensors()[p.tensor];
    let bytes = input.bytes(t, t.byte_range(&p.elems));
    let mut n = 0u64;
    K::each(bytes, t.float_type().expect("float"), |_, k| {
        n += (k == thr) as u64
    });
    n
}

/// Prunes (or only counts) one piece: removes keys below the cut and up to
/// `budget` keys equal to it; copies unselected pieces unchanged.
fn prune_piece<K: Key>(
    input: &Checkpoint,
    p: &Piece,
    cut: Option<Cut>,
    budget: u64,
    output: Option<&Output>,
) -> Result<Counts> {
    let t = &input.tensors()[p.tensor];
    let range = t.byte_range(&p.elems);
    let bytes = input.bytes(t, range.clone());
    let mut counts = Counts::default();
    match (cut, t.float_type()) {
        (Some(cut), Some(FloatType::F32)) if K::BITS == 32 => {
            let mut buf = vec![0u8; if output.is_some() { bytes.len() } else { 0 }];
            counts = prune_f32(bytes, cut.thr as u32, budget, &mut buf);
            if let Some(out) = output {
                out.write(p.tensor, range.start, &buf)?;
            }
        }
        (Some(cut), Some(ty)) => {
            let size = ty.size();
            let mut buf = output.map(|_| bytes.to_vec());
            let mut budget = budget;
            let thr = cut.thr;
            K::each(bytes, ty, |j, k| {
                if k == 0 {
                    counts.zeros_before += 1;
                } else if k < thr || (k == thr && budget > 0) {
                    if k == thr {
                        budget -= 1;
                    }
                    counts.removed += 1;
                    let m = K::magnitude(k);
                    counts.sum_squares += m * m;
                    if let Some(b) = buf.as_mut() {
                        b[j * size..(j + 1) * size].fill(0);
                    }
                }
            });
            if let (Some(out), Some(buf)) = (output, buf) {
                out.write(p.tensor, range.start, &buf)?;
            }
        }
        (_, ty) => {
            if let Some(ty) = ty {
                let mut nonzero = 0u64;
                crate::dtype::for_each_nonzero(bytes, ty, |_, nz| nonzero += nz as u64);
                counts.zeros_before = p.elems.len() as u64 - nonzero;
            }
            if let Some(out) = output {
                out.write(p.tensor, range.start, bytes)?;
            }
        }
    }
    Ok(counts)
}

/// [`prune_piece`] for F32 data with F32 keys, the common case, written so
/// that the main loop has no branches and vectorizes: it removes the keys
/// below `thr` (all of `thr` too when `budget` is `u64::MAX`); a second
/// loop runs only for pieces that hold some of a partially removed tie
/// class. `out` (empty when only counting) receives the pruned bytes.
fn prune_f32(bytes: &[u8], thr: u32, budget: u64, out: &mut [u8]) -> Counts {
    const LANES: usize = 8;
    let (below, mut budget) = if budget == u64::MAX {
        // thr <= ABS32 < u32::MAX, so this cannot overflow.
        (thr + 1, 0)
    } else {
        (thr, budget)
    };
    let write = !out.is_empty();
    let mut zeros = [0u64; LANES];
    let mut removed = [0u64; LANES];
    // Per-lane partial sums in f32 (they vectorize), widened per piece.
    let mut squares = [0f32; LANES];
    let mut lane = |w: u32, l: usize| -> u32 {
        let k = w & ABS32;
        let nonzero = k != 0;
        // Zeros stay as they are (a -0.0 stays -0.0), uncounted as removed.
        let gone = (k < below) & nonzero;
        zeros[l] += (!nonzero) as u64;
        removed[l] += gone as u64;
        let m = f32::from_bits(k);
        squares[l] += if gone { m * m } else { 0.0 };
        if gone {
            0
        } else {
            w
        }
    };
    let word = |c: &[u8]| u32::from_le_bytes(c.try_into().expect("4 bytes"));
    let blocks = bytes.len() / (4 * LANES) * (4 * LANES);
    if write {
        for (o, c) in out[..blocks]
            .chunks_exact_mut(4 * LANES)
            .zip(bytes[..blocks].chunks_exact(4 * LANES))
        {
            for l in 0..LANES {
                let v = lane(word(&c[4 * l..4 * l + 4]), l);
                o[4 * l..4 * l + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    } else {
        for c in bytes[..blocks].chunks_exact(4 * LANES) {
            for l in 0..LANES {
                lane(word(&c[4 * l..4 * l + 4]), l);
            }
        }
    }
    for j in blocks / 4..bytes.len() / 4 {
        let v = lane(word(&bytes[4 * j..4 * j + 4]), 0);
        if write {
            out[4 * j..4 * j + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let mut counts = Counts {
        zeros_before: zeros.iter().sum(),
        removed: removed.iter().sum(),
        sum_squares: squares.iter().map(|&v| v as f64).sum(),
    };
    if budget > 0 && thr != 0 {
        // The first `budget` elements equal to the threshold also go.
        for j in 0..bytes.len() / 4 {
            if budget == 0 {
                break;
            }
            if word(&bytes[4 * j..4 * j + 4]) & ABS32 == thr {
                budget -= 1;
                counts.removed += 1;
                let m = f32::from_bits(thr) as f64;
                counts.sum_squares += m * m;
                if write {
                    out[4 * j..4 * j + 4].fill(0);
                }
            }
        }
    }
    counts
}

/// Order-preserving keys of magnitudes: the bit pattern of `|w|`.
trait Key: Send + Sync + 'static {
    /// Width of the keys.
    const BITS: u32;
    /// Calls `f(index, key)` for each element of `bytes`.
    fn each(bytes: &[u8], ty: FloatType, f: impl FnMut(usize, u64));
    /// The magnitude a key stands for.
    fn magnitude(key: u64) -> f64;
}

/// F32 bit patterns (for F32, F16 and BF16, which convert to F32 exactly).
struct Key32;
/// F64 bit patterns (for selections that hold an F64 tensor).
struct Key64;

const ABS32: u32 = 0x7fff_ffff;
const ABS64: u64 = 0x7fff_ffff_ffff_ffff;

#[inline]
fn each_chunk<const N: usize>(bytes: &[u8], mut f: impl FnMut(usize, [u8; N])) {
    for (i, c) in bytes.chunks_exact(N).enumerate() {
        f(i, c.try_into().expect("chunks_exact yields N bytes"));
    }
}

impl Key for Key32 {
    const BITS: u32 = 32;
    #[inline]
    fn each(bytes: &[u8], ty: FloatType, mut f: impl FnMut(usize, u64)) {
        match ty {
            FloatType::F32 => {
                each_chunk::<4>(bytes, |i, b| f(i, (u32::from_le_bytes(b) & ABS32) as u64))
            }
            FloatType::BF16 => each_chunk::<2>(bytes, |i, b| {
                f(i, (((u16::from_le_bytes(b) as u32) << 16) & ABS32) as u64)
            }),
            FloatType::F16 => each_chunk::<2>(bytes, |i, b| {
                f(i, (f16::from_le_bytes(b).to_f32().to_bits() & ABS32) as u64)
            }),
            FloatType::F64 => unreachable!("selections with F64 tensors use 64-bit keys"),
        }
    }
    fn magnitude(key: u64) -> f64 {
        f32::from_bits(key as u32) as f64
    }
}

impl Key for Key64 {
    const BITS: u32 = 64;
    #[inline]
    fn each(bytes: &[u8], ty: FloatType, mut f: impl FnMut(usize, u64)) {
        match ty {
            FloatType::F64 => each_chunk::<8>(bytes, |i, b| f(i, u64::from_le_bytes(b) & ABS64)),
            FloatType::F32 => each_chunk::<4>(bytes, |i, b| {
                f(i, (f32::from_le_bytes(b) as f64).to_bits() & ABS64)
            }),
            FloatType::BF16 => each_chunk::<2>(bytes, |i, b| {
                f(i, bf16::from_le_bytes(b).to_f64().to_bits() & ABS64)
            }),
            FloatType::F16 => each_chunk::<2>(bytes, |i, b| {
                f(i, f16::from_le_bytes(b).to_f64().to_bits() & ABS64)
            }),
        }
    }
    fn magnitude(key: u64) -> f64 {
        f64::from_bits(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamOptions;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Writes a checkpoint of F32 (or `dtype`) tensors named `w{i}.weight`
    /// (rank 2) plus an unselected bias.
    fn write(dir: &Path, name: &str, tensors: &[(Dtype, Vec<f64>)]) -> PathBuf {
        let path = dir.join(name);
        let mut layout = Vec::new();
        for (i, (dtype, v)) in tensors.iter().enumerate() {
            layout.push(OutputTensor {
                name: format!("w{i}.weight"),
                dtype: *dtype,
                shape: vec![1, v.len()],
            });
        }
        layout.push(OutputTensor {
            name: "b.bias".into(),
            dtype: Dtype::F32,
            shape: vec![3],
        });
        let out = Output::create(
            &path,
            &layout,
            BTreeMap::new(),
            &[],
            &OutputOptions::default(),
        )
        .unwrap();
        for (i, (dtype, v)) in tensors.iter().enumerate() {
            out.write(i, 0, &encode(v, *dtype)).unwrap();
        }
        let bias: Vec<u8> = [0.0f32, 0.5, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        out.write(tensors.len(), 0, &bias).unwrap();
        out.commit().unwrap();
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
            assert!(e.to_string().contains("sparsity"), "{e}");
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
        assert!(e.to_string().contains("no tensors selected"), "{e}");
    }
}
