//! The uniform and the weighted mean (soups of candidates; no base).
//!
//! The means are computed incrementally, `m += (x_k - m) * w_k / W_k` with
//! `W_k` the running weight sum, in f32 (f64 for F64 tensors). Unlike
//! `sum / n`, this returns identical inputs bit for bit and keeps zeros that
//! all inputs share exactly, which is what a soup of candidates with one
//! mask needs.

use super::method::{kernel_entry_points, Block, Built, Kernel, KernelAcc, MethodEntry, Param};
use crate::error::{Error, Result};

/// `uniform`: the plain mean.
pub(super) const UNIFORM: MethodEntry = MethodEntry {
    name: "uniform",
    summary: "the plain mean of the candidates (a uniform soup)",
    base: false,
    params: &[],
    build: |_, n| Mean::build(None, n),
};

/// `weighted`: the weighted mean.
pub(super) const WEIGHTED: MethodEntry = MethodEntry {
    name: "weighted",
    summary: "a weighted mean of the candidates (weights normalised to sum 1)",
    base: false,
    params: &[Param::Weights],
    build: |p, n| match &p.weights {
        Some(w) => Mean::build(Some(w), n),
        None => Err(Error::invalid("the weighted mean needs weights")),
    },
};

/// The incremental mean `m += (x_k - m) * c_k`, seeded with input `seed`
/// (the first with positive weight); inputs with `c_k = 0` are skipped.
struct Mean {
    coefficients: Vec<f64>,
    seed: usize,
}

impl Mean {
    fn build(weights: Option<&[f64]>, inputs: usize) -> Result<Built> {
        let weights = normalise_weights(weights, inputs)?;
        let mut running = 0.0;
        let coefficients = weights
            .iter()
            .map(|&w| {
                running += w;
                if w > 0.0 {
                    w / running
                } else {
                    0.0
                }
            })
            .collect();
        let seed = weights.iter().position(|&w| w > 0.0).expect("positive sum");
        let kernel = Box::new(Mean { coefficients, seed });
        Ok(Built { kernel, weights })
    }

    fn combine<A: KernelAcc>(&self, block: &Block, acc: &mut [A], x: &mut Vec<A>) {
        let len = acc.len();
        let inputs = block.candidates;
        A::decode_into(inputs[self.seed], block.in_type, acc);
        for (k, &c) in self.coefficients.iter().enumerate() {
            if k == self.seed || c <= 0.0 {
                continue;
            }
            x.resize(len, A::ZERO);
            A::fold_encoded(acc, inputs[k], block.in_type, A::from_f64(c), x);
        }
    }
}

impl Kernel for Mean {
    kernel_entry_points!();
}

/// Validates and normalises merge weights.
pub fn normalise_weights(weights: Option<&[f64]>, inputs: usize) -> Result<Vec<f64>> {
    let Some(w) = weights else {
        return Ok(vec![1.0 / inputs as f64; inputs]);
    };
    if w.len() != inputs {
        return Err(Error::invalid(format!(
            "{} weights given for {inputs} inputs",
            w.len()
        )));
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(Error::invalid(format!(
            "weights must be finite and non-negative, got {bad}"
        )));
    }
    let largest = w.iter().copied().fold(0.0, f64::max);
    if largest <= 0.0 {
        return Err(Error::invalid("weights sum to zero"));
    }
    let sum: f64 = w.iter().sum();
    if sum.is_finite() {
        return Ok(w.iter().map(|v| v / sum).collect());
    }
    // The sum overflowed (1e308 + 1e308): scale by the largest weight first.
    let scaled: f64 = w.iter().map(|v| v / largest).sum();
    Ok(w.iter().map(|v| v / largest / scaled).collect())
}
