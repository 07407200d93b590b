//! Pruning `ndarray` arrays held in memory: the selection of
//! [`prune_tensors`] (hence of the file front end), applied in place.

use ndarray::ArrayD;

use super::{prune_tensors, PruneOptions, PruneReport, TensorView};
use crate::array::Element;
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::stream::Control;

/// Prunes float arrays in memory with [`prune_tensors`] (the same selection
/// as [`super::prune`] on a file holding them in this order) and applies
/// the masks in place: removed elements become `+0.0`, elements already
/// zero and arrays that are not prunable are left as they are. Returns the
/// report. `T` must be a float type (F64, F32, F16, BF16).
pub fn prune_arrays<T: Element>(
    arrays: &mut [(String, ArrayD<T>)],
    options: &PruneOptions,
    control: &Control,
) -> Result<PruneReport> {
    let dtype = FloatType::of(T::DTYPE).ok_or_else(|| {
        Error::invalid(format!(
            "only float arrays are pruned, not {}",
            crate::dtype::name(T::DTYPE)
        ))
    })?;
    let bytes: Vec<Vec<u8>> = arrays
        .iter()
        .map(|(_, a)| crate::merge::le_bytes(a))
        .collect();
    let views: Vec<TensorView<'_>> = arrays
        .iter()
        .zip(&bytes)
        .map(|((name, a), data)| TensorView::from_bytes(name.as_str(), a.shape(), dtype, &data[..]))
        .collect::<Result<_>>()?;
    let pruned = prune_tensors(&views, options, control)?;
    for (((_, array), mask), before) in arrays.iter_mut().zip(&pruned.masks).zip(&bytes) {
        let Some(mask) = mask else { continue };
        let mut removed = mask.clone();
        crate::dtype::for_each_nonzero(before, dtype, |i, nz| removed[i] = nz && !mask[i]);
        // Both in row-major order.
        for (value, &removed) in array.iter_mut().zip(&removed) {
            if removed {
                *value = T::zeroed();
            }
        }
    }
    Ok(pruned.report)
}
