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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    /// The arrays get exactly the masks of `prune_tensors`; `-0.0` stays
    /// `-0.0`, removed values become `+0.0`, and arrays that are not
    /// prunable (a bias) are left as they are.
    #[test]
    fn arrays_are_pruned_in_place_with_the_core_masks() {
        let weight = arr2(&[[-0.0f32, 0.5, -3.0], [0.25, 2.0, -1.0]]).into_dyn();
        let bias = arr1(&[0.001f32, 0.002]).into_dyn();
        let mut arrays = vec![
            ("fc.weight".to_string(), weight.clone()),
            ("fc.bias".to_string(), bias.clone()),
        ];
        let options = PruneOptions {
            sparsity: 0.5,
            ..PruneOptions::default()
        };
        let control = Control::default();
        let report = prune_arrays(&mut arrays, &options, &control).unwrap();
        let flat: Vec<f32> = weight.iter().copied().collect();
        let view = TensorView::f32("fc.weight", &[2, 3], &flat).unwrap();
        let masks = prune_tensors(&[view], &options, &control).unwrap();
        let mask = masks.masks[0].as_ref().unwrap();
        for (i, (&after, &before)) in arrays[0].1.iter().zip(weight.iter()).enumerate() {
            match mask[i] {
                true => assert_eq!(after.to_bits(), before.to_bits()),
                false if before == 0.0 => assert_eq!(after.to_bits(), before.to_bits()),
                false => assert_eq!(after.to_bits(), 0f32.to_bits()),
            }
        }
        assert_eq!(arrays[0].1.iter().filter(|v| **v == 0.0).count(), 3);
        assert_eq!(report.removed, 2);
        assert_eq!(arrays[1].1, bias, "a bias is not prunable");
    }
}
