//! Pruning (`soup prune`, and the trainer between phases of iterative
//! magnitude pruning and inside its training loops): unstructured, or N:M.
//!
//! A prune is a [`Grouping`] (which elements compete), a [`Criterion`] (how
//! they rank, from the weights and optionally per-tensor score data) and an
//! exact selection inside each group with the tie rule below.
//!
//! # What is removed
//! The selected tensors (by default: floating-point tensors of rank >= 2
//! whose names end in `weight`; see [`PruneSelection`]) form one group
//! ([`Grouping::Global`], [`Scope::Global`]), one group each
//! ([`Grouping::PerTensor`], [`Scope::Layer`]), or with an N:M pattern
//! groups of M along each tensor's input dimension ([`Grouping::Nm`]: the N
//! largest keys of each group stay; see the `groups` module). In a group of
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
//! Elements are ordered by their criterion's key: magnitude `|w|` (NaN
//! counts as larger than any number), a seeded random order, or Wanda's
//! `|w| * ||x||` (zeros always first). Among equal keys, the element that comes first in
//! (storage order of the tensor in the checkpoint, row-major index inside the
//! tensor) is removed first. This is the only freedom the rule leaves, and it
//! makes the result a function of the input alone (not of threads or window
//! sizes).
//!
//! # One implementation, two front ends
//! Checkpoint files ([`prune`], [`plan`]) and tensors in memory
//! ([`prune_tensors`], [`prune_tensors_scored`]) go through the same code:
//! `rule` decides what is prunable ([`PruneSelection`]), `groups` defines
//! the groupings (and decides N:M groups), `score` ranks elements (the
//! [`Criterion`]) with the score data that `scores` loads, `select` finds
//! the exact cut of a global or per-tensor group and `write` applies it.
//! Both front ends therefore choose identical masks.
//!
//! # The report
//! Besides the selected tensors' counts, [`PruneReport::float_tensors`]
//! gives, for every float tensor (selected or not), its zeros and its sum
//! of squares before and after, accumulated in f64: the sparsity and norms
//! a caller needs without reading the checkpoints again.
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

mod arrays;
mod groups;
mod report;
mod rule;
mod score;
mod scores;
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

pub use arrays::prune_arrays;
pub use groups::Grouping;
pub use report::{FloatTensorStats, PruneReport, TensorPrune};
pub use rule::{is_prunable, PruneSelection};
pub use score::Criterion;
pub use source::TensorView;

use crate::nm::NmPattern;
use groups::Layout;
use report::report;
use score::{Key, Key32, Key64, RandomKey, WandaKey};
use select::{find_cut, Cut, GroupCut};
use source::{Memory, MemorySink, Sink, Source};
use write::{write_pass, Plan};

vocabulary! {
    /// Which elements compete with each other.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum Scope ("scope", default Global) {
        /// One threshold across all selected tensors.
        Global = "global",
        /// The same fraction removed in each selected tensor.
        Layer = "layer",
    }
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
    /// An N:M pattern: groups of M along each tensor's input dimension
    /// keep their N largest keys ([`Grouping::Nm`]). The fraction must then
    /// be 0, the scope global and `of_remaining` off.
    pub nm: Option<NmPattern>,
    /// Regexes naming rank-2 tensors stored as `[in, out]` (Hugging Face
    /// GPT-2's `Conv1D`): their input dimension is the first one.
    pub transposed: Vec<String>,
    /// With `nm`: leave the tensors whose input dimension is not a multiple
    /// of M as they are (listed in the report) instead of refusing them.
    pub skip_ragged: bool,
    /// Already-zero weights stay zero (recorded; every criterion ranks
    /// zeros first and no weight is ever revived, so this holds always and
    /// the selection is the same with or without it).
    pub keep_zeros: bool,
    /// The score data file of a criterion that needs one (Wanda: see the
    /// `scores` module; files only, [`prune_tensors_scored`] takes it in
    /// memory).
    pub scores: Option<PathBuf>,
}

impl PruneOptions {
    /// The grouping these options select.
    pub fn grouping(&self) -> Grouping {
        match (self.nm, self.scope) {
            (Some(_), _) => Grouping::Nm,
            (None, Scope::Global) => Grouping::Global,
            (None, Scope::Layer) => Grouping::PerTensor,
        }
    }

    /// Checks the fraction and how it combines with the pattern and the
    /// criterion (before anything is opened).
    pub fn validate(&self) -> Result<()> {
        validate_sparsity(self.sparsity)?;
        if self.nm.is_some() {
            if self.sparsity != 0.0 || self.of_remaining {
                return Err(Error::invalid(
                    "an N:M pattern sets the sparsity itself: no fraction can be given with it",
                ));
            }
            if self.scope != Scope::Global {
                return Err(Error::invalid(
                    "an N:M pattern groups weights itself: no per-tensor scope can be given with it",
                ));
            }
        } else if self.skip_ragged {
            return Err(Error::invalid(
                "skipping ragged tensors applies only to an N:M pattern",
            ));
        }
        if self.scores.is_some() && self.criterion != Criterion::Wanda {
            return Err(Error::invalid(format!(
                "score data is given, but the {} criterion does not use any",
                criterion_name(self.criterion)
            )));
        }
        PruneSelection::new(&self.include, &self.exclude)?;
        crate::select::Selection::new(&self.transposed, &[])?;
        Ok(())
    }
}

fn criterion_name(c: Criterion) -> &'static str {
    match c {
        Criterion::Magnitude => "magnitude",
        Criterion::Random { .. } => "random",
        Criterion::Wanda => "wanda",
    }
}

/// `round(fraction * n)`, rounding halves to even (Python's `round`).
pub fn removal_count(fraction: f64, n: u64) -> u64 {
    (fraction * n as f64).round_ties_even() as u64
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

/// Checks the fraction ([`PruneOptions::validate`] checks it with the rest).
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
    prune_tensors_scored(tensors, None, options, control)
}

/// [`prune_tensors`] with score data in memory for a criterion that needs
/// it (Wanda: per pruned tensor, a 1-D tensor of the same name holding its
/// input-channel norms; see the module documentation of `scores`).
pub fn prune_tensors_scored(
    tensors: &[TensorView<'_>],
    scores: Option<&[TensorView<'_>]>,
    options: &PruneOptions,
    control: &Control,
) -> Result<TensorsPrune> {
    let source = Memory(tensors);
    let (selected, layout) = selected_tensors(&source, options, MEMORY)?;
    let wanda = match (options.criterion, scores) {
        (Criterion::Wanda, Some(s)) => Some(scores::wanda_key(
            &source,
            &selected,
            &layout,
            &Memory(s),
            "score data",
        )?),
        (Criterion::Wanda, None) => return Err(missing_scores()),
        (c, Some(_)) => {
            return Err(Error::invalid(format!(
                "score data is given, but the {} criterion does not use any",
                criterion_name(c)
            )))
        }
        (_, None) => None,
    };
    let sink = MemorySink {
        tensors: (0..tensors.len())
            .map(|i| {
                selected
                    .contains(&i)
                    .then(|| Mutex::new(source.bytes(i, &(0..source.numel(i))).to_vec()))
            })
            .collect(),
    };
    let (report, _) = run_source(
        &source,
        &selected,
        &layout,
        wanda,
        options,
        Some(&sink),
        false,
        control,
    )?;
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

/// How errors name tensors given in memory.
const MEMORY: &str = "tensors in memory";

fn missing_scores() -> Error {
    Error::invalid(
        "the wanda criterion needs score data: per pruned tensor, a 1-D tensor of the same \
         name holding its input-channel activation norms",
    )
}

/// The tensors `options` prunes in `source` and their layout; none is an
/// error naming `label`.
fn selected_tensors<S: Source>(
    source: &S,
    options: &PruneOptions,
    label: &str,
) -> Result<(Vec<usize>, Layout)> {
    options.validate()?;
    let rule = PruneSelection::new(&options.include, &options.exclude)?;
    let mut selected: Vec<usize> = (0..source.count())
        .filter(|&i| {
            let (name, _, shape) = source.describe(i);
            rule.selects_parts(name, shape.len(), source.float_type(i).is_some())
        })
        .collect();
    if selected.is_empty() {
        return Err(Error::NothingToPrune {
            path: PathBuf::from(if label == MEMORY { "" } else { label }),
        });
    }
    let layout = groups::layout(source, &mut selected, options, label)?;
    Ok((selected, layout))
}

fn run(
    input: &Checkpoint,
    target: Option<&Path>,
    options: &PruneOptions,
    control: &Control,
) -> Result<PruneReport> {
    let label = input.path().display().to_string();
    let (selected, layout) = selected_tensors(input, options, &label)?;
    let wanda = match (options.criterion, &options.scores) {
        (Criterion::Wanda, Some(path)) => {
            let scores = Checkpoint::open(path)?;
            let label = path.display().to_string();
            Some(scores::wanda_key(
                input, &selected, &layout, &scores, &label,
            )?)
        }
        (Criterion::Wanda, None) => return Err(missing_scores()),
        _ => None,
    };
    let tensors = input.tensors();
    // The provisional recipe holds the widest counts, so the final one,
    // which adds the threshold, fits the header space reserved for it.
    let recipe = |target: u64, removed: u64| {
        let mut r = serde_json::json!({
            "sparsity": options.sparsity,
            "scope": options.scope,
            "of_remaining": options.of_remaining,
            "criterion": options.criterion,
            "include": options.include,
            "exclude": options.exclude,
            "target": target,
            "removed": removed,
        });
        // Keys only where they say something, so unstructured recipes stay
        // as they were.
        if let Some(p) = options.nm {
            r["nm"] = p.to_string().into();
            r["skip_ragged"] = options.skip_ragged.into();
            r["skipped"] = layout.skipped.clone().into();
        }
        if !options.transposed.is_empty() {
            r["transposed"] = options.transposed.clone().into();
        }
        if options.keep_zeros {
            r["keep_zeros"] = true.into();
        }
        if let Some(s) = &options.scores {
            r["scores"] = s.display().to_string().into();
        }
        r
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
    let (mut report, sha) = run_source(
        input,
        &selected,
        &layout,
        wanda,
        options,
        sink,
        sink.is_some(),
        control,
    )?;
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
#[allow(clippy::too_many_arguments)]
fn run_source<S: Source>(
    source: &S,
    selected: &[usize],
    layout: &Layout,
    wanda: Option<WandaKey>,
    options: &PruneOptions,
    sink: Option<&dyn Sink>,
    hash: bool,
    control: &Control,
) -> Result<(PruneReport, Option<String>)> {
    let run = Run {
        source,
        selected,
        layout,
        options,
        sink,
        hash,
        control,
    };
    match options.criterion {
        Criterion::Random { seed } => run.keys(&RandomKey::new(
            seed,
            (0..source.count()).map(|i| source.describe(i).0),
        )),
        Criterion::Wanda => run.keys(&wanda.ok_or_else(missing_scores)?),
        Criterion::Magnitude => {
            if selected.iter().any(|&i| source.describe(i).1 == Dtype::F64) {
                run.keys(&Key64)
            } else {
                run.keys(&Key32)
            }
        }
    }
}

/// One prune's inputs, for [`Run::keys`].
struct Run<'a, S> {
    source: &'a S,
    selected: &'a [usize],
    layout: &'a Layout,
    options: &'a PruneOptions,
    sink: Option<&'a dyn Sink>,
    hash: bool,
    control: &'a Control<'a>,
}

impl<S: Source> Run<'_, S> {
    /// Selects inside each group of the grouping and writes.
    fn keys<K: Key>(&self, key: &K) -> Result<(PruneReport, Option<String>)> {
        let (source, options, control) = (self.source, self.options, self.control);
        let groups: Vec<Vec<usize>> = match options.grouping() {
            Grouping::Global => vec![self.selected.to_vec()],
            Grouping::PerTensor | Grouping::Nm => self.selected.iter().map(|&i| vec![i]).collect(),
        };
        let mut group_of: Vec<Option<usize>> = vec![None; source.count()];
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                group_of[i] = Some(g);
            }
        }
        let mut cuts: Vec<GroupCut> = Vec::with_capacity(groups.len());
        let (counts, sha) = if let Some(pattern) = options.nm {
            // Every group of M is decided on its own: no threshold to find.
            for members in &groups {
                let n: u64 = members.iter().map(|&i| source.numel(i) as u64).sum();
                cuts.push(GroupCut {
                    cut: Cut::default(),
                    candidates: n,
                    target: n / pattern.m() as u64 * (pattern.m() - pattern.n()) as u64,
                });
            }
            let plan = Plan::Nm {
                geometry: &self.layout.geometry,
                n: pattern.n() as usize,
            };
            write_pass(source, key, &plan, self.sink, self.hash, control)?
        } else {
            let threads = rayon::current_num_threads().max(1);
            let mut hists: Vec<Mutex<Vec<u64>>> = (0..threads)
                .map(|_| Mutex::new(vec![0u64; 1 << 16]))
                .collect();
            for members in &groups {
                cuts.push(find_cut(
                    source, key, members, options, &mut hists, control,
                )?);
            }
            drop(hists);
            let plain: Vec<Cut> = cuts.iter().map(|c| c.cut).collect();
            let plan = Plan::Cuts {
                group_of: &group_of,
                cuts: &plain,
            };
            write_pass(source, key, &plan, self.sink, self.hash, control)?
        };
        let threshold = |cut: &Cut| {
            if cut.any {
                key.threshold(cut.thr)
            } else {
                None
            }
        };
        Ok((
            report(
                source,
                options,
                self.layout,
                &group_of,
                &cuts,
                &counts,
                threshold,
            ),
            sha,
        ))
    }
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "nm_tests.rs"]
mod nm_tests;
