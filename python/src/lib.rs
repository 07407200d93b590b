//! `sparse_soups._core`: the thin PyO3 layer between Python and soup-core.
//!
//! Every function here opens checkpoints, calls one soup-core operation and
//! returns its report serialised as JSON, the very JSON `soup ... --json`
//! prints; the Python package turns it into typed dictionaries. Keeping the
//! glue this small means an API change in soup-core touches one file.
//!
//! Long operations run on a worker thread while the calling thread, without
//! the GIL, polls Python's signal handlers every few milliseconds: a Ctrl-C
//! sets soup-core's interrupt flag, the operation stops at its next window
//! (writing nothing), and the `KeyboardInterrupt` is raised in Python.
//! Errors become the exception classes of `sparse_soups.errors`, chosen in
//! `to_py_err`.
#![forbid(unsafe_code)]

mod memory;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use serde::Serialize;
use soup_core::DigestKind;
use soup_core::GreedyOptions;
use soup_core::{
    Checkpoint, Control, FloatType, MergeMethod, MergeOptions, NoProgress, OutputOptions,
    Selection, StreamOptions,
};
use soup_core::{NmPattern, NmRule, SemiStructuredKernel};
use soup_core::{PruneOptions, Scope};

/// How often the calling thread looks for a pending Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// The Python exception for a soup-core error: its class by kind, its
/// message the one line the `soup` binary prints after `soup: error:`.
fn to_py_err(py: Python<'_>, error: soup_core::Error) -> PyErr {
    use soup_core::Error as E;
    let message = error.to_string().replace('\n', " ");
    let class = match &error {
        E::Interrupted => return PyKeyboardInterrupt::new_err(message),
        E::Io { .. } => "SoupIOError",
        E::Format { .. } | E::Header { .. } | E::Tensor { .. } => "BadCheckpoint",
        // As the CLI adds "use --force", say which argument replaces it.
        E::OutputExists { .. } => {
            return raise(
                py,
                "OutputExists",
                format!("{message} (use force=True to replace it)"),
            )
        }
        // The CLI's hint, in this API's words.
        E::MasksDiffer { .. } => {
            return raise(
                py,
                "MaskMismatch",
                format!(
                    "{message}; see check_mask(), or merge anyway with \
                     mask_policy=\"union\" or \"intersect\""
                ),
            )
        }
        E::IntegersDiffer { .. } | E::NotInMask { .. } | E::Mismatch(_) => {
            "IncompatibleCheckpoints"
        }
        E::NotReplaceable { .. }
        | E::OutputIsFolder { .. }
        | E::NothingToPrune { .. }
        | E::Sparsity { .. }
        | E::NotAPair { .. }
        | E::CastTypeMissing
        | E::CastNotFloat { .. }
        | E::ShardSizeZero
        | E::UnknownName { .. }
        | E::NothingSelected { .. }
        | E::NothingToCheck { .. }
        | E::MaskPolicyMismatch { .. }
        | E::Invalid(_) => "InvalidArgument",
        E::PatternBroken { .. } => "IncompatibleCheckpoints",
        E::Evaluator(_) => "EvaluatorError",
        _ => "SoupError",
    };
    raise(py, class, message)
}

/// An instance of `sparse_soups.errors.<class>` carrying `message`.
fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("sparse_soups.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((message.clone(),)));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(e) => e,
    }
}

/// Runs `work` on a worker thread with a soup-core [`Control`] whose
/// interrupt flag is raised by a pending Python signal (Ctrl-C). The GIL is
/// released throughout, so other Python threads keep running.
fn run<T: Send>(
    py: Python<'_>,
    budget: Option<usize>,
    digest: DigestKind,
    work: impl FnOnce(&Control) -> soup_core::Result<T> + Send,
) -> PyResult<T> {
    let flag = AtomicBool::new(false);
    let mut options = StreamOptions::default();
    if let Some(b) = budget {
        options.budget_bytes = b.max(1 << 16);
    }
    let mut signal: Option<PyErr> = None;
    let outcome = py.detach(|| {
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let control = Control {
                    progress: &NoProgress,
                    interrupt: Some(&flag),
                    options,
                    digest,
                };
                work(&control)
            });
            while !worker.is_finished() {
                std::thread::sleep(SIGNAL_POLL);
                if signal.is_none() {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        flag.store(true, Ordering::Relaxed);
                        signal = Some(e);
                    }
                }
            }
            worker.join()
        })
    });
    match outcome {
        // The handler's own exception (KeyboardInterrupt, or whatever a
        // custom handler raised) wins over soup-core's "interrupted".
        _ if signal.is_some() => Err(signal.expect("checked")),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(to_py_err(py, e)),
        Err(_) => Err(PyRuntimeError::new_err(
            "sparse_soups: internal error (a soup-core thread panicked)",
        )),
    }
}

/// JSON of a report, as the CLI prints it.
fn json(value: &impl Serialize) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

fn open(py: Python<'_>, path: &Path) -> PyResult<Checkpoint> {
    Checkpoint::open(path).map_err(|e| to_py_err(py, e))
}

fn open_all(py: Python<'_>, paths: &[PathBuf]) -> PyResult<Vec<Checkpoint>> {
    paths.iter().map(|p| open(py, p)).collect()
}

fn open_mask(py: Python<'_>, path: &Path) -> PyResult<soup_core::MaskSource> {
    soup_core::MaskSource::open(path).map_err(|e| to_py_err(py, e))
}

fn invalid(py: Python<'_>, message: String) -> PyErr {
    raise(py, "InvalidArgument", message)
}

/// Parses one of soup-core's names (a mask policy, a digest, a scope):
/// an unknown name is the core's error, which lists the valid ones.
/// The N:M pattern of a prune, checking that exactly one of a sparsity
/// and a pattern is given.
pub(crate) fn prune_pattern(
    py: Python<'_>,
    sparsity: Option<f64>,
    nm: Option<(u32, u32)>,
) -> PyResult<Option<soup_core::NmPattern>> {
    let nm = nm
        .map(|(n, m)| soup_core::NmPattern::new(n, m))
        .transpose()
        .map_err(|e| to_py_err(py, e))?;
    if sparsity.is_none() == nm.is_none() {
        return Err(invalid(
            py,
            "give either a sparsity or an N:M pattern (nm=(2, 4)), not both or neither".into(),
        ));
    }
    Ok(nm)
}

pub(crate) fn name<T: std::str::FromStr<Err = soup_core::Error>>(
    py: Python<'_>,
    text: &str,
) -> PyResult<T> {
    text.parse().map_err(|e| to_py_err(py, e))
}

pub(crate) fn float_type(py: Python<'_>, text: Option<&str>) -> PyResult<Option<FloatType>> {
    text.map(|t| name(py, t)).transpose()
}

/// Averages checkpoints; returns the merge report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, out, weights, mask_policy, int_policy, dtype, shard_size, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
fn merge(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    out: PathBuf,
    weights: Option<Vec<f64>>,
    mask_policy: &str,
    int_policy: &str,
    dtype: Option<&str>,
    shard_size: Option<u64>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    let digest: DigestKind = name(py, digest)?;
    let options = MergeOptions {
        method: match weights {
            None => MergeMethod::uniform(),
            Some(w) => MergeMethod::weighted(w),
        },
        mask_policy: name(py, mask_policy)?,
        int_policy: name(py, int_policy)?,
        dtype: float_type(py, dtype)?,
        output: OutputOptions { shard_size, force },
        recipe_extra: Default::default(),
        nm: None,
    };
    options
        .validate(paths.len(), false)
        .map_err(|e| to_py_err(py, e))?;
    let inputs = open_all(py, &paths)?;
    let report = run(py, budget, digest, |c| {
        soup_core::merge(&inputs, &out, &options, c)
    })?;
    json(&report)
}

/// Builds a greedy soup scored by the Python callable `evaluate(path) ->
/// float`; returns the greedy report as JSON. An exception raised by
/// `evaluate` stops the soup and is re-raised as it is.
#[pyfunction]
#[pyo3(signature = (paths, out, evaluate, strict, scores, mask_policy, int_policy, dtype, shard_size, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
fn greedy_merge(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    out: PathBuf,
    evaluate: Py<PyAny>,
    strict: bool,
    scores: Option<Vec<f64>>,
    mask_policy: &str,
    int_policy: &str,
    dtype: Option<&str>,
    shard_size: Option<u64>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    let options = GreedyOptions {
        strict,
        scores,
        merge: MergeOptions {
            method: MergeMethod::uniform(),
            mask_policy: name(py, mask_policy)?,
            int_policy: name(py, int_policy)?,
            dtype: float_type(py, dtype)?,
            output: OutputOptions { shard_size, force },
            recipe_extra: Default::default(),
            nm: None,
        },
    };
    let digest: DigestKind = name(py, digest)?;
    let inputs = open_all(py, &paths)?;
    let failure: Mutex<Option<PyErr>> = Mutex::new(None);
    let result = run(py, budget, digest, |c| {
        let mut scorer = |path: &Path| -> soup_core::Result<f64> {
            Python::attach(|py| {
                let score = evaluate
                    .call1(py, (path.to_path_buf(),))
                    .and_then(|v| v.extract::<f64>(py));
                score.map_err(|e| {
                    let message = format!("evaluate({}) raised {e}", path.display());
                    *failure.lock().expect("not poisoned") = Some(e);
                    soup_core::Error::Evaluator(message)
                })
            })
        };
        soup_core::greedy_soup(&inputs, &out, &mut scorer, &options, c)
    });
    if let Some(e) = failure.lock().expect("not poisoned").take() {
        return Err(e);
    }
    json(&result?)
}

/// Compares masks; returns the mask report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, reference, include, exclude, budget))]
fn check_mask(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    reference: Option<PathBuf>,
    include: Vec<String>,
    exclude: Vec<String>,
    budget: Option<usize>,
) -> PyResult<String> {
    let selection = Selection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?;
    let reference = reference.map(|p| open_mask(py, &p)).transpose()?;
    let inputs = open_all(py, &paths)?;
    let report = run(py, budget, DigestKind::default(), |c| match &reference {
        Some(r) => soup_core::check_masks_against(&inputs, r, &selection, c),
        None => soup_core::check_masks(&inputs, None, &selection, c),
    })?;
    json(&report)
}

/// Checks each checkpoint against the N:M pattern `n:m` (and a kernel's
/// rules); returns the N:M check report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, n, m, include, exclude, transposed, kernel, budget))]
#[allow(clippy::too_many_arguments)]
fn check_nm(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    n: u32,
    m: u32,
    include: Vec<String>,
    exclude: Vec<String>,
    transposed: Vec<String>,
    kernel: Option<&str>,
    budget: Option<usize>,
) -> PyResult<String> {
    let pattern = NmPattern::new(n, m).map_err(|e| to_py_err(py, e))?;
    let kernel: Option<SemiStructuredKernel> = kernel.map(|k| name(py, k)).transpose()?;
    let rule =
        NmRule::new(pattern, &include, &exclude, &transposed).map_err(|e| to_py_err(py, e))?;
    let inputs = open_all(py, &paths)?;
    let report = run(py, budget, DigestKind::default(), |c| {
        soup_core::check_nm_all(&inputs, &rule, kernel, c)
    })?;
    json(&report)
}

/// Prunes a checkpoint into `out` (or only plans it when `out` is None);
/// returns the prune report as JSON.
#[pyfunction]
#[pyo3(signature = (path, out, sparsity, scope, of_remaining, include, exclude, shard_size, force, digest, budget, nm=None, nm_transposed=Vec::new(), nm_skip_ragged=false, keep_zeros=false))]
#[allow(clippy::too_many_arguments)]
fn prune(
    py: Python<'_>,
    path: PathBuf,
    out: Option<PathBuf>,
    sparsity: Option<f64>,
    scope: &str,
    of_remaining: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    shard_size: Option<u64>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
    nm: Option<(u32, u32)>,
    nm_transposed: Vec<String>,
    nm_skip_ragged: bool,
    keep_zeros: bool,
) -> PyResult<String> {
    let nm = prune_pattern(py, sparsity, nm)?;
    let scope: Scope = name(py, scope)?;
    let options = PruneOptions {
        sparsity: sparsity.unwrap_or(0.0),
        scope,
        of_remaining,
        criterion: Default::default(),
        include,
        exclude,
        output: OutputOptions { shard_size, force },
        nm,
        transposed: nm_transposed,
        skip_ragged: nm_skip_ragged,
        keep_zeros,
        scores: None,
    };
    let digest: DigestKind = name(py, digest)?;
    options.validate().map_err(|e| to_py_err(py, e))?;
    let input = open(py, &path)?;
    let report = run(py, budget, digest, |c| match &out {
        Some(target) => soup_core::prune(&input, target, &options, c),
        None => soup_core::plan_prune(&input, &options, c),
    })?;
    json(&report)
}

/// Tensors, totals and metadata; returns the inspection as JSON.
#[pyfunction]
#[pyo3(signature = (path, count_zeros, budget))]
fn inspect(
    py: Python<'_>,
    path: PathBuf,
    count_zeros: bool,
    budget: Option<usize>,
) -> PyResult<String> {
    let input = open(py, &path)?;
    let report = run(py, budget, DigestKind::default(), |c| {
        soup_core::inspect(&input, count_zeros, c)
    })?;
    json(&report)
}

/// Compares two checkpoints; returns the diff report as JSON.
#[pyfunction]
#[pyo3(signature = (a, b, atol, rtol, budget))]
fn diff(
    py: Python<'_>,
    a: PathBuf,
    b: PathBuf,
    atol: f64,
    rtol: f64,
    budget: Option<usize>,
) -> PyResult<String> {
    let a = open(py, &a)?;
    let b = open(py, &b)?;
    let options = soup_core::DiffOptions { atol, rtol };
    let report = run(py, budget, DigestKind::default(), |c| {
        soup_core::diff(&a, &b, &options, c)
    })?;
    json(&report)
}

/// Pairwise distances and cosines of checkpoints; returns the distance
/// report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, include, exclude, budget))]
fn distance(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    include: Vec<String>,
    exclude: Vec<String>,
    budget: Option<usize>,
) -> PyResult<String> {
    let selection = Selection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?;
    let inputs = open_all(py, &paths)?;
    let report = run(py, budget, DigestKind::default(), |c| {
        soup_core::distance(&inputs, &selection, c)
    })?;
    json(&report)
}

/// Content hash of a checkpoint; returns it as JSON.
#[pyfunction]
#[pyo3(signature = (path, digest, budget))]
fn hash(py: Python<'_>, path: PathBuf, digest: &str, budget: Option<usize>) -> PyResult<String> {
    let digest: DigestKind = name(py, digest)?;
    let input = open(py, &path)?;
    let hashed = run(py, budget, digest, |c| {
        soup_core::hash_checkpoint(&input, c)
    })?;
    json(&hashed.report(&path))
}

/// Folds a PEFT LoRA adapter folder into its base; returns the fold report
/// as JSON.
#[pyfunction]
#[pyo3(signature = (base, adapter, out, keep_mask, shard_size, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
fn fold_lora(
    py: Python<'_>,
    base: PathBuf,
    adapter: PathBuf,
    out: PathBuf,
    keep_mask: bool,
    shard_size: Option<u64>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    let digest: DigestKind = name(py, digest)?;
    let options = soup_core::FoldOptions {
        keep_mask,
        output: OutputOptions { shard_size, force },
    };
    let base = open(py, &base)?;
    let adapter = soup_core::LoraAdapter::open(&adapter).map_err(|e| to_py_err(py, e))?;
    let report = run(py, budget, digest, |c| {
        soup_core::fold_lora(&base, &adapter, &out, &options, c)
    })?;
    json(&report)
}

/// Writes a model's masks as a mask file; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (path, out, include, exclude, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
fn mask_extract(
    py: Python<'_>,
    path: PathBuf,
    out: PathBuf,
    include: Vec<String>,
    exclude: Vec<String>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    let digest: DigestKind = name(py, digest)?;
    let selection = Selection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?;
    let input = open(py, &path)?;
    let output = OutputOptions {
        shard_size: None,
        force,
    };
    let report = run(py, budget, digest, |c| {
        soup_core::extract_mask(&input, &out, &selection, &output, c)
    })?;
    json(&report)
}

/// Combines the masks of models or mask files into a mask file; returns
/// the report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, out, how, min_votes, include, exclude, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
fn mask_combine(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    out: PathBuf,
    how: &str,
    min_votes: Option<usize>,
    include: Vec<String>,
    exclude: Vec<String>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    use soup_core::Combination;
    let combination = match (
        Combination::named(how).map_err(|e| to_py_err(py, e))?,
        min_votes,
    ) {
        (Combination::Vote { .. }, k) => Combination::Vote { min_votes: k },
        (_, Some(_)) => return Err(invalid(py, "min_votes applies to how=\"vote\" only".into())),
        (c, None) => c,
    };
    let digest: DigestKind = name(py, digest)?;
    combination
        .threshold(paths.len())
        .map_err(|e| to_py_err(py, e))?;
    let options = soup_core::CombineOptions {
        combination,
        selection: Selection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?,
        output: OutputOptions {
            shard_size: None,
            force,
        },
    };
    let inputs: Vec<soup_core::MaskSource> = paths
        .iter()
        .map(|p| open_mask(py, p))
        .collect::<PyResult<_>>()?;
    let report = run(py, budget, digest, |c| {
        soup_core::combine_masks(&inputs, &out, &options, c)
    })?;
    json(&report)
}

/// The version of the soup-core this module was built from.
#[pyfunction]
fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The compiled half of `sparse_soups`; use the `sparse_soups` package.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(greedy_merge, m)?)?;
    m.add_function(wrap_pyfunction!(check_mask, m)?)?;
    m.add_function(wrap_pyfunction!(check_nm, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(hash, m)?)?;
    m.add_function(wrap_pyfunction!(distance, m)?)?;
    m.add_function(wrap_pyfunction!(fold_lora, m)?)?;
    m.add_function(wrap_pyfunction!(mask_extract, m)?)?;
    m.add_function(wrap_pyfunction!(mask_combine, m)?)?;
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    memory::register(m)?;
    Ok(())
}
