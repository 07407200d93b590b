//! Score data: what a criterion takes besides the weights.
//!
//! The Wanda criterion takes, for each pruned tensor, the L2 norm of the
//! activations of each of its input channels (`||x_j||_2` over the
//! calibration tokens, as Wanda computes it). The data is a set of tensors
//! (a safetensors file, or tensors in memory) holding, under the pruned
//! tensor's own name, a 1-D float tensor with one non-negative finite value
//! per input channel: `in` values for a linear weight `[out, in]` or a
//! convolution weight `[out, in, k...]`, and for a weight stored as
//! `[in, out]` (named by the transposed patterns) its first dimension.
//! Other tensors in the data are ignored. A missing vector, a wrong length
//! or a value that is negative or not finite is an error naming the data
//! and the tensor.

use std::collections::HashMap;

use super::groups::Layout;
use super::score::{ChannelNorms, WandaKey};
use super::source::Source;
use crate::dtype::Accumulator;
use crate::error::{Error, Result};

/// The Wanda keys of the `selected` tensors of `source`, from `scores`
/// (`label` names the score data in errors).
pub(crate) fn wanda_key<S: Source, T: Source>(
    source: &S,
    selected: &[usize],
    layout: &Layout,
    scores: &T,
    label: &str,
) -> Result<WandaKey> {
    let by_name: HashMap<&str, usize> = (0..scores.count())
        .map(|i| (scores.describe(i).0, i))
        .collect();
    let mut tensors = vec![None; source.count()];
    for &i in selected {
        let (name, _, shape) = source.describe(i);
        if shape.len() < 2 {
            return Err(Error::invalid(format!(
                "tensor `{name}` of shape {shape:?} has no input dimension to score by \
                 activation norms"
            )));
        }
        let dim = usize::from(!layout.transposed[i]);
        let channels = shape[dim];
        let inner: usize = shape[dim + 1..].iter().product();
        let Some(&s) = by_name.get(name) else {
            return Err(Error::invalid(format!(
                "{label}: no score vector for tensor `{name}` (a 1-D tensor of that name \
                 with its {channels} input-channel norms)"
            )));
        };
        let (_, _, score_shape) = scores.describe(s);
        let Some(ty) = scores.float_type(s) else {
            return Err(Error::invalid(format!(
                "{label}: score vector `{name}` is not a float tensor"
            )));
        };
        if score_shape != [channels] {
            return Err(Error::invalid(format!(
                "{label}: score vector `{name}` has shape {score_shape:?}, but tensor \
                 `{name}` of shape {shape:?} has {channels} input channels"
            )));
        }
        let mut norms = Vec::new();
        f64::decode(scores.bytes(s, &(0..channels)), ty, &mut norms);
        if let Some(j) = norms.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::invalid(format!(
                "{label}: score vector `{name}` holds {} at index {j}; norms must be finite \
                 and non-negative",
                norms[j]
            )));
        }
        tensors[i] = Some(ChannelNorms {
            norms,
            inner: inner.max(1),
        });
    }
    Ok(WandaKey { tensors })
}
