//! The in-memory front end of merging: the same plan, pre-pass, kernels
//! and mask policies as the file front end ([`super::merge`],
//! [`super::merge_with_base`]), with the result collected in memory
//! instead of written to a file. Inputs are checkpoints held in memory
//! ([`Checkpoint::from_tensors`]) or files; [`merge_arrays`] takes and
//! returns `ndarray` arrays.
//!
//! ```
//! use soup_core::ndarray::{arr2, ArrayD};
//! use soup_core::{
//!     merge_arrays, prune_arrays, Control, MergeMethod, MergeOptions, MethodParams,
//!     PruneOptions,
//! };
//!
//! # fn main() -> soup_core::Result<()> {
//! let named = |w: ArrayD<f32>| vec![("fc.weight".to_string(), w)];
//! let base = named(arr2(&[[1.0f32, 0.0], [2.0, -1.0]]).into_dyn());
//! let tuned = [
//!     named(arr2(&[[1.5f32, 0.0], [2.0, -1.5]]).into_dyn()),
//!     named(arr2(&[[1.0f32, 0.0], [2.5, -1.0]]).into_dyn()),
//! ];
//! let control = Control::default();
//! // TIES against the base; the base's zero stays zero.
//! let options = MergeOptions {
//!     method: MergeMethod::named("ties", MethodParams { density: Some(1.0), ..Default::default() }),
//!     mask_policy: soup_core::MaskPolicy::Base,
//!     ..MergeOptions::default()
//! };
//! let (mut merged, report) = merge_arrays(Some(&base), &tuned, &options, &control)?;
//! assert_eq!(report.method, "ties");
//! assert_eq!(merged[0].1, arr2(&[[1.5f32, 0.0], [2.5, -1.5]]).into_dyn());
//! // Then prune it to half zeros, in place: the zero counts, and of the
//! // tied 1.5 and -1.5 the first goes.
//! let prune = PruneOptions { sparsity: 0.5, ..PruneOptions::default() };
//! let pruned = prune_arrays(&mut merged, &prune, &control)?;
//! assert_eq!(pruned.removed, 1);
//! assert_eq!(merged[0].1, arr2(&[[0.0f32, 0.0], [2.5, -1.5]]).into_dyn());
//! # Ok(())
//! # }
//! ```

use std::sync::Mutex;

use ndarray::{ArrayD, IxDyn};

use super::{run, MergeOptions, MergeReport};
use crate::array::Element;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::output::{OutputTensor, TensorBytes};
use crate::stream::Control;

/// How errors about the merged result in memory name it.
pub(super) const RESULT: &str = "the merged tensors";

/// Named arrays in a fixed order (the storage order that pruning's
/// tie-break follows), as [`merge_arrays`] and `prune_arrays` take them.
pub type NamedArrays<T> = Vec<(String, ArrayD<T>)>;

/// One merged tensor: name, dtype and shape, and its little-endian bytes.
pub type MergedTensor = (OutputTensor, Vec<u8>);

/// The outcome of a merge into memory ([`merge_tensors`]).
#[derive(Debug, Clone)]
pub struct TensorsMerge {
    /// The merged tensors, in the order of the first input (the base when
    /// there is one): name, dtype and shape, and the little-endian bytes.
    pub tensors: Vec<MergedTensor>,
    /// The report, as the file front end gives it (`outputs` is empty).
    pub report: MergeReport,
}

/// Merges `candidates` (with a task-vector method: the fine-tunes of
/// `base`) into memory, with the same plan, pre-pass and kernel as
/// [`super::merge`] and [`super::merge_with_base`]: the bytes are those
/// that the file front end writes for the same inputs and options.
/// `options.output` is not used.
pub fn merge_tensors(
    base: Option<&Checkpoint>,
    candidates: &[Checkpoint],
    options: &MergeOptions,
    control: &Control,
) -> Result<TensorsMerge> {
    let (report, tensors) = run(base, candidates, None, options, control)?;
    Ok(TensorsMerge { tensors, report })
}

/// [`merge_tensors`] over arrays of one element type `T`: candidates
/// called "candidate 0", "candidate 1", ... and "base" in errors. The
/// merged arrays come back in the first input's order; `options.dtype`,
/// when given, must be `T`'s.
pub fn merge_arrays<T: Element>(
    base: Option<&[(String, ArrayD<T>)]>,
    candidates: &[NamedArrays<T>],
    options: &MergeOptions,
    control: &Control,
) -> Result<(NamedArrays<T>, MergeReport)> {
    if let Some(t) = options.dtype.filter(|t| t.dtype() != T::DTYPE) {
        return Err(Error::invalid(format!(
            "arrays of {} cannot be merged into {}",
            crate::dtype::name(T::DTYPE),
            crate::dtype::name(t.dtype())
        )));
    }
    let base = base.map(|b| checkpoint("base", b)).transpose()?;
    let candidates: Vec<Checkpoint> = candidates
        .iter()
        .enumerate()
        .map(|(k, c)| checkpoint(&format!("candidate {k}"), c))
        .collect::<Result<_>>()?;
    let merged = merge_tensors(base.as_ref(), &candidates, options, control)?;
    let arrays = merged
        .tensors
        .into_iter()
        .map(|(t, bytes)| {
            let values: Vec<T> = bytes.chunks_exact(size_of::<T>()).map(T::from_le).collect();
            let array = ArrayD::from_shape_vec(IxDyn(&t.shape), values).expect("shape holds data");
            (t.name, array)
        })
        .collect();
    Ok((arrays, merged.report))
}

/// The little-endian bytes of `array` in row-major order.
pub(crate) fn le_bytes<T: Element>(array: &ArrayD<T>) -> Vec<u8> {
    let values = array.as_standard_layout();
    let values = values.as_slice().expect("standard layout");
    match cfg!(target_endian = "little") {
        true => bytemuck::cast_slice(values).to_vec(),
        false => values
            .iter()
            .flat_map(|v| {
                bytemuck::bytes_of(v)
                    .iter()
                    .rev()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

/// A checkpoint in memory holding `arrays`, called `label`.
fn checkpoint<T: Element>(label: &str, arrays: &[(String, ArrayD<T>)]) -> Result<Checkpoint> {
    let bytes: Vec<Vec<u8>> = arrays.iter().map(|(_, a)| le_bytes(a)).collect();
    let tensors: Vec<TensorBytes<'_>> = arrays
        .iter()
        .zip(&bytes)
        .map(|((name, a), data)| TensorBytes {
            name,
            dtype: T::DTYPE,
            shape: a.shape(),
            data,
        })
        .collect();
    Checkpoint::from_tensors(label, &tensors)
}

/// The merged tensors held in memory while the driver writes them.
pub(super) struct Tensors(Vec<Mutex<Vec<u8>>>);

impl Tensors {
    pub(super) fn new(layout: &[OutputTensor]) -> Tensors {
        Tensors(
            layout
                .iter()
                .map(|t| Mutex::new(vec![0; t.nbytes()]))
                .collect(),
        )
    }

    /// Reads `buf.len()` bytes at byte `offset` of tensor `index`.
    pub(super) fn read(&self, index: usize, offset: usize, buf: &mut [u8]) {
        let data = self.0[index].lock().expect("not poisoned");
        buf.copy_from_slice(&data[offset..offset + buf.len()]);
    }

    pub(super) fn into_bytes(self) -> Vec<Vec<u8>> {
        self.0
            .into_iter()
            .map(|m| m.into_inner().expect("not poisoned"))
            .collect()
    }
}

impl super::driver::Sink for Tensors {
    fn write(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        let mut data = self.0[index].lock().expect("not poisoned");
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}
