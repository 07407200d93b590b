//! What the task-vector methods share: the task vector of candidate `k` is
//! `tau_k = theta_k - base`, and the result is `base + scale * mixed`, where
//! `mixed` combines the (weighted, trimmed or dropped) task vectors. Each
//! method is its own module; this one holds their common parameters and
//! the decoding of a block into the base and the task vectors.

use super::method::{Block, MethodParams};
use crate::dtype::Accumulator;
use crate::error::{Error, Result};

/// The weight of each of `n` candidates: as given (any finite values,
/// negative ones subtract a task vector), or 1 each.
pub(super) fn weights(params: &MethodParams, n: usize) -> Result<Vec<f64>> {
    let Some(w) = &params.weights else {
        return Ok(vec![1.0; n]);
    };
    if w.len() != n {
        return Err(Error::invalid(format!(
            "{} weights given for {n} fine-tuned models",
            w.len()
        )));
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("weights must be finite, got {bad}")));
    }
    Ok(w.clone())
}

/// The factor of the combined task vector (default 1).
pub(super) fn scale(params: &MethodParams) -> Result<f64> {
    match params.scale {
        Some(s) if !s.is_finite() => Err(Error::invalid(format!("scale must be finite, got {s}"))),
        s => Ok(s.unwrap_or(1.0)),
    }
}

/// The density of a trimming or dropping method: required, in (0, 1].
pub(super) fn density(params: &MethodParams, method: &str) -> Result<f64> {
    match params.density {
        None => Err(Error::invalid(format!(
            "merge method `{method}` needs a density"
        ))),
        Some(d) if d > 0.0 && d <= 1.0 => Ok(d),
        Some(d) => Err(Error::invalid(format!(
            "density must be in (0, 1], got {d}"
        ))),
    }
}

/// Decodes the block into `scratch`: the base's values, then each
/// candidate's task vector, `len` values each. Returns `(base, taus)`
/// with `taus[k * len..(k + 1) * len]` the task vector of candidate `k`.
pub(super) fn decode<'s, A: Accumulator>(
    block: &Block,
    len: usize,
    scratch: &'s mut Vec<A>,
) -> (&'s [A], &'s mut [A]) {
    let n = block.candidates.len();
    scratch.resize(len * (n + 1), A::ZERO);
    let (base, taus) = scratch.split_at_mut(len);
    A::decode_into(block.base.expect("a base"), block.in_type, base);
    for (k, tau) in taus.chunks_exact_mut(len).enumerate() {
        A::decode_into(block.candidates[k], block.in_type, tau);
        for (t, &b) in tau.iter_mut().zip(base.iter()) {
            *t = *t - b;
        }
    }
    (base, taus)
}

/// The sign election of TIES (mergekit's `sum` consensus): with `wd` the
/// weighted task vectors' values at one element and `w` their weights,
/// the majority sign is that of their sum (positive for a zero sum); the
/// returned `(mixed, divisor)` sum the values and weights of the
/// candidates whose value has that sign (a zero value has none).
#[inline]
pub(super) fn elect<A: Accumulator>(wd: impl Iterator<Item = (A, A)> + Clone) -> (A, A) {
    let sum = wd.clone().fold(A::ZERO, |s, (v, _)| s + v);
    let positive = sum >= A::ZERO;
    let mut mixed = A::ZERO;
    let mut divisor = A::ZERO;
    for (v, w) in wd {
        if (positive && v > A::ZERO) || (!positive && v < A::ZERO) {
            mixed = mixed + v;
            divisor = divisor + w;
        }
    }
    (mixed, divisor)
}
