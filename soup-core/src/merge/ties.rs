//! `ties` (Yadav et al., 2023, "TIES-Merging: resolving interference when
//! merging models"): trim each task vector to its `density` share of
//! largest magnitudes, elect a sign per weight, and take the disjoint mean
//! of the task vectors that agree with it.
//!
//! Following mergekit's `ties` where it differs from the paper: the trim
//! keeps `floor(density * n)` entries of each tensor (`n` its elements, or
//! under the base mask policy its surviving elements); the election is the
//! sign of the sum of the weighted task vectors; the disjoint mean divides
//! by the sum of the agreeing candidates' weights (1 where none agrees);
//! there is no rescaling, and `scale` (the paper's lambda, default 1)
//! multiplies the result. Magnitudes are ranked in f32; every entry whose
//! magnitude equals the smallest kept one is kept, so ties at the threshold
//! can keep a few more than `floor(density * n)` (mergekit keeps an
//! arbitrary subset of them).

use super::method::{
    kernel_entry_points, Block, Built, Kernel, KernelAcc, MethodEntry, Param, Statistic,
};
use super::task_vector;

/// The registry line.
pub(super) const ENTRY: MethodEntry = MethodEntry {
    name: "ties",
    summary: "TIES: trim task vectors by magnitude, elect signs, disjoint mean",
    base: true,
    params: &[Param::Weights, Param::Scale, Param::Density],
    build: |p, n| {
        let weights = task_vector::weights(p, n)?;
        let kernel = Box::new(Ties {
            weights: weights.clone(),
            scale: task_vector::scale(p)?,
            density: task_vector::density(p, "ties")?,
        });
        Ok(Built { kernel, weights })
    },
};

struct Ties {
    weights: Vec<f64>,
    scale: f64,
    density: f64,
}

impl Ties {
    fn combine<A: KernelAcc>(&self, block: &Block, acc: &mut [A], scratch: &mut Vec<A>) {
        let len = acc.len();
        let (base, taus) = task_vector::decode(block, len, scratch);
        let w: Vec<A> = self.weights.iter().map(|&w| A::from_f64(w)).collect();
        let scale = A::from_f64(self.scale);
        // Trim, and weight what is kept.
        for (k, tau) in taus.chunks_exact_mut(len).enumerate() {
            let threshold = block.thresholds.get(k).copied().unwrap_or(0.0);
            for t in tau.iter_mut() {
                let magnitude = (t.to_f64() as f32).abs();
                *t = if magnitude >= threshold {
                    w[k] * *t
                } else {
                    A::ZERO
                };
            }
        }
        let taus = &*taus;
        for (i, out) in acc.iter_mut().enumerate() {
            let votes = w.iter().enumerate().map(|(k, &w)| (taus[k * len + i], w));
            let (mixed, mut divisor) = task_vector::elect(votes);
            if divisor == A::ZERO {
                divisor = A::from_f64(1.0);
            }
            *out = base[i] + scale * (mixed / divisor);
        }
    }
}

impl Kernel for Ties {
    fn statistic(&self) -> Option<Statistic> {
        (self.density < 1.0).then_some(Statistic::TopMagnitude {
            density: self.density,
        })
    }
    kernel_entry_points!();
}
