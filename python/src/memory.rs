//! Bindings of soup-core's in-memory functions and of the merge plan with
//! roles: merging and pruning tensors a Python program holds (state
//! dicts), writing them as a safetensors file, their mask fingerprints,
//! which of them soup-core prunes, and the file merge of fine-tunes
//! against a base with any method of the registry.
//!
//! Tensors cross the boundary as `(name, dtype, shape, bytes)` tuples:
//! the dtype is a safetensors tag ("F32", "BF16", "I64", ...) and the
//! bytes are the row-major little-endian elements. soup-core reads and
//! writes every safetensors byte; Python holds no codec of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};
use soup_core::{
    Checkpoint, Dtype, FloatType, IntPolicy, MaskPolicy, MergeMethod, MergeOptions, MethodParams,
    OutputOptions, PruneOptions, PruneSelection, Scope, Selection, TensorBytes, TensorView,
};

use crate::{invalid, json, name, run, to_py_err};

/// A tensor as Python hands it over.
type PyTensor<'py> = (String, String, Vec<usize>, Bound<'py, PyBytes>);
/// A tensor as it is handed back (the bytes writable, for numpy).
type OutTensor<'py> = (String, String, Vec<usize>, Bound<'py, PyByteArray>);

fn dtype(py: Python<'_>, tag: &str) -> PyResult<Dtype> {
    soup_core::parse_dtype(tag).map_err(|e| to_py_err(py, e))
}

/// Runs `f` over soup-core's views of the tensors Python handed over.
fn with_views<R>(
    py: Python<'_>,
    tensors: &[PyTensor<'_>],
    f: impl FnOnce(&[TensorBytes<'_>]) -> soup_core::Result<R>,
) -> PyResult<R> {
    let dtypes: Vec<Dtype> = tensors
        .iter()
        .map(|t| dtype(py, &t.1))
        .collect::<PyResult<_>>()?;
    let views: Vec<TensorBytes<'_>> = tensors
        .iter()
        .zip(&dtypes)
        .map(|((name, _, shape, data), &dtype)| TensorBytes {
            name,
            dtype,
            shape,
            data: data.as_bytes(),
        })
        .collect();
    f(&views).map_err(|e| to_py_err(py, e))
}

/// The tensors of one input as soup-core's in-memory checkpoint.
fn checkpoint(py: Python<'_>, label: &str, tensors: &[PyTensor<'_>]) -> PyResult<Checkpoint> {
    with_views(py, tensors, |views| Checkpoint::from_tensors(label, views))
}

/// The merge options of the Python API (as `soup merge` builds them).
#[allow(clippy::too_many_arguments)]
fn merge_options(
    py: Python<'_>,
    base: bool,
    method: Option<&str>,
    params: MethodParams,
    mask_policy: Option<&str>,
    int_policy: &str,
    dtype: Option<&str>,
    output: OutputOptions,
) -> PyResult<MergeOptions> {
    let name = match (method, &params.weights) {
        (Some(m), _) => m,
        (None, _) if base => {
            return Err(invalid(
                py,
                "base= needs method= (task-arithmetic, ties, dare-linear, dare-ties)".into(),
            ))
        }
        (None, Some(_)) => "weighted",
        (None, None) => "uniform",
    };
    let mask_policy = match mask_policy {
        Some(p) => crate::name(py, p)?,
        None if base => MaskPolicy::Base,
        None => MaskPolicy::Refuse,
    };
    let int_policy: IntPolicy = crate::name(py, int_policy)?;
    let dtype = crate::float_type(py, dtype)?;
    Ok(MergeOptions {
        method: MergeMethod::named(name, params),
        mask_policy,
        int_policy,
        dtype,
        output,
        recipe_extra: Default::default(),
        nm: None,
    })
}

/// Merges checkpoint files, the fine-tunes of `base` when given, with a
/// method of soup-core's registry; returns the merge report as JSON.
#[pyfunction]
#[pyo3(signature = (paths, out, base, method, weights, scale, density, seed, mask_policy, int_policy, dtype, shard_size, force, digest, budget))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge_plan(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    out: PathBuf,
    base: Option<PathBuf>,
    method: Option<&str>,
    weights: Option<Vec<f64>>,
    scale: Option<f64>,
    density: Option<f64>,
    seed: Option<u64>,
    mask_policy: Option<&str>,
    int_policy: &str,
    dtype: Option<&str>,
    shard_size: Option<u64>,
    force: bool,
    digest: &str,
    budget: Option<usize>,
) -> PyResult<String> {
    let digest = name(py, digest)?;
    let params = MethodParams {
        weights,
        scale,
        density,
        seed,
    };
    let output = OutputOptions { shard_size, force };
    let options = merge_options(
        py,
        base.is_some(),
        method,
        params,
        mask_policy,
        int_policy,
        dtype,
        output,
    )?;
    if base.is_none() && paths.len() < 2 {
        return Err(invalid(
            py,
            "merge needs at least two checkpoints (or base= and one fine-tune)".into(),
        ));
    }
    options
        .validate(paths.len(), base.is_some())
        .map_err(|e| to_py_err(py, e))?;
    let open = |p: &PathBuf| Checkpoint::open(p).map_err(|e| to_py_err(py, e));
    let inputs: Vec<Checkpoint> = paths.iter().map(open).collect::<PyResult<_>>()?;
    let base = base.as_ref().map(open).transpose()?;
    let report = run(py, budget, digest, |c| match &base {
        Some(base) => soup_core::merge_with_base(base, &inputs, &out, &options, c),
        None => soup_core::merge(&inputs, &out, &options, c),
    })?;
    json(&report)
}

/// Merges state dicts held in memory (each a list of tensors, called
/// `labels[i]` in errors; `base` called "base"), with the plan, pre-pass
/// and kernels of the file merge; returns the merged tensors in the first
/// input's order (the base's when given) and the report as JSON.
#[pyfunction]
#[pyo3(signature = (candidates, labels, base, method, weights, scale, density, seed, mask_policy, int_policy, dtype, budget))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge_tensors<'py>(
    py: Python<'py>,
    candidates: Vec<Vec<PyTensor<'py>>>,
    labels: Vec<String>,
    base: Option<Vec<PyTensor<'py>>>,
    method: Option<&str>,
    weights: Option<Vec<f64>>,
    scale: Option<f64>,
    density: Option<f64>,
    seed: Option<u64>,
    mask_policy: Option<&str>,
    int_policy: &str,
    dtype: Option<&str>,
    budget: Option<usize>,
) -> PyResult<(Vec<OutTensor<'py>>, String)> {
    let params = MethodParams {
        weights,
        scale,
        density,
        seed,
    };
    let options = merge_options(
        py,
        base.is_some(),
        method,
        params,
        mask_policy,
        int_policy,
        dtype,
        OutputOptions::default(),
    )?;
    options
        .validate(candidates.len(), base.is_some())
        .map_err(|e| to_py_err(py, e))?;
    let inputs: Vec<Checkpoint> = candidates
        .iter()
        .zip(&labels)
        .map(|(c, label)| checkpoint(py, label, c))
        .collect::<PyResult<_>>()?;
    let base = base.map(|b| checkpoint(py, "base", &b)).transpose()?;
    let digest = soup_core::DigestKind::default();
    let merged = run(py, budget, digest, |c| {
        soup_core::merge_tensors(base.as_ref(), &inputs, &options, c)
    })?;
    let tensors = merged
        .tensors
        .into_iter()
        .map(|(t, data)| {
            let tag = format!("{:?}", t.dtype);
            (t.name, tag, t.shape, PyByteArray::new(py, &data))
        })
        .collect();
    Ok((tensors, json(&merged.report)?))
}

/// Prunes the float tensors of a state dict held in memory with soup-core's
/// selection (that of the file prune on a file holding them in this order);
/// returns, per tensor, its pruned bytes (`None` for one not pruned) and
/// the report as JSON.
#[pyfunction]
#[pyo3(signature = (tensors, sparsity, scope, of_remaining, include, exclude, nm=None, nm_transposed=Vec::new(), nm_skip_ragged=false, budget=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn prune_tensors<'py>(
    py: Python<'py>,
    tensors: Vec<PyTensor<'py>>,
    sparsity: Option<f64>,
    scope: &str,
    of_remaining: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    nm: Option<(u32, u32)>,
    nm_transposed: Vec<String>,
    nm_skip_ragged: bool,
    budget: Option<usize>,
) -> PyResult<(Vec<Option<Bound<'py, PyByteArray>>>, String)> {
    let nm = crate::prune_pattern(py, sparsity, nm)?;
    let scope: Scope = name(py, scope)?;
    let options = PruneOptions {
        sparsity: sparsity.unwrap_or(0.0),
        scope,
        of_remaining,
        include,
        exclude,
        nm,
        transposed: nm_transposed,
        skip_ragged: nm_skip_ragged,
        ..PruneOptions::default()
    };
    options.validate().map_err(|e| to_py_err(py, e))?;
    let mut types = Vec::with_capacity(tensors.len());
    for (name, tag, ..) in &tensors {
        let dtype = dtype(py, tag)?;
        types.push(FloatType::of(dtype).ok_or_else(|| {
            invalid(
                py,
                format!("tensor `{name}`: only float tensors are pruned, not {tag}"),
            )
        })?);
    }
    let views: Vec<TensorView<'_>> = tensors
        .iter()
        .zip(&types)
        .map(|((name, _, shape, data), &t)| {
            TensorView::from_bytes(name.as_str(), shape, t, data.as_bytes())
        })
        .collect::<soup_core::Result<_>>()
        .map_err(|e| to_py_err(py, e))?;
    let digest = soup_core::DigestKind::default();
    let pruned = run(py, budget, digest, |c| {
        soup_core::prune_tensors(&views, &options, c)
    })?;
    let out = pruned
        .masks
        .iter()
        .zip(&tensors)
        .zip(&types)
        .map(|((mask, (.., data)), &t)| {
            mask.as_ref().map(|mask| {
                let mut bytes = data.as_bytes().to_vec();
                let size = t.size();
                // Removed elements become +0.0; zeros (-0.0 too) stay as
                // they were.
                for (value, &keep) in bytes.chunks_exact_mut(size).zip(mask) {
                    let (last, rest) = value.split_last().expect("an element");
                    let zero = last & 0x7f == 0 && rest.iter().all(|&b| b == 0);
                    if !keep && !zero {
                        value.fill(0);
                    }
                }
                PyByteArray::new(py, &bytes)
            })
        })
        .collect();
    Ok((out, json(&pruned.report)?))
}

/// Writes tensors held in memory as one safetensors file at `path`
/// (soup-core's `write_tensors`: name order, atomic, `metadata` in the
/// header).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata=BTreeMap::new()))]
pub(crate) fn write_tensors(
    py: Python<'_>,
    path: PathBuf,
    tensors: Vec<PyTensor<'_>>,
    metadata: BTreeMap<String, String>,
) -> PyResult<()> {
    with_views(py, &tensors, |views| {
        soup_core::write_tensors(&path, views, &metadata)
    })
}

/// The mask report (as `check_mask` gives it, as JSON) of a state dict held
/// in memory against itself: every selected tensor's fingerprint.
#[pyfunction]
#[pyo3(signature = (tensors, label, include, exclude))]
pub(crate) fn mask_fingerprints(
    py: Python<'_>,
    tensors: Vec<PyTensor<'_>>,
    label: &str,
    include: Vec<String>,
    exclude: Vec<String>,
) -> PyResult<String> {
    let input = checkpoint(py, label, &tensors)?;
    let selection = Selection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?;
    let digest = soup_core::DigestKind::default();
    let report = run(py, None, digest, |c| {
        soup_core::check_masks(std::slice::from_ref(&input), Some(&input), &selection, c)
    })?;
    json(&report)
}

/// Whether soup-core prunes each of `entries` (`(name, rank, is_float)`):
/// its default rule, or the `include` patterns, less the `exclude` ones.
#[pyfunction]
#[pyo3(signature = (entries, include, exclude))]
pub(crate) fn prunable(
    py: Python<'_>,
    entries: Vec<(String, usize, bool)>,
    include: Vec<String>,
    exclude: Vec<String>,
) -> PyResult<Vec<bool>> {
    let rule = PruneSelection::new(&include, &exclude).map_err(|e| to_py_err(py, e))?;
    Ok(entries
        .iter()
        .map(|(name, rank, float)| rule.selects_parts(name, *rank, *float))
        .collect())
}

/// Registers this module's functions on `_core`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge_plan, m)?)?;
    m.add_function(wrap_pyfunction!(merge_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(prune_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(write_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(mask_fingerprints, m)?)?;
    m.add_function(wrap_pyfunction!(prunable, m)?)?;
    Ok(())
}
