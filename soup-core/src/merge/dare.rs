//! `dare-linear` and `dare-ties` (Yu et al., 2024, "Language models are
//! Super Mario: absorbing abilities from homologous models as a free
//! lunch"): drop each task-vector entry with probability `1 - density`,
//! rescale the kept ones, then add the weighted task vectors
//! (`dare-linear`) or combine them with the sign election of TIES
//! (`dare-ties`).
//!
//! Following mergekit's `dare_linear` and `dare_ties` where they differ
//! from the paper: neither divides by the weights (no normalisation), and
//! the rescaling (mergekit's `rescale: true`) is not the paper's
//! `1 / density` but the factor that gives the kept entries of each task
//! vector, per tensor, the L1 norm of the whole task vector (over the
//! base's surviving elements under the base mask policy); it is found by
//! the pre-pass ([`super::prepass`]). Both agree in expectation. At
//! density 1 nothing is dropped or rescaled.
//!
//! The drop is a counter-based random stream, so it depends only on the
//! seed, the tensor's name, the candidate and the element's index, never
//! on how the work was cut up or on the number of threads: with
//! `mix` the SplitMix64 finaliser, `fnv` the 64-bit FNV-1a hash of the
//! tensor's name and `G = 0x9e3779b97f4a7c15`, candidate `k` (from 0) keeps
//! element `i` when `mix(s_k + (i + 1) * G) >> 11` is below
//! `density * 2^53`, where `s_k = mix(seed ^ mix(fnv ^ mix(k)))`.

use super::method::{
    kernel_entry_points, Block, Built, Kernel, KernelAcc, MethodEntry, Param, Statistic,
};
use super::task_vector;

/// `dare-linear`.
pub(super) const LINEAR: MethodEntry = MethodEntry {
    name: "dare-linear",
    summary: "DARE: random drop and rescale of task vectors, weighted sum",
    base: true,
    params: &[Param::Weights, Param::Scale, Param::Density, Param::Seed],
    build: |p, n| Dare::build(p, n, false, "dare-linear"),
};

/// `dare-ties`.
pub(super) const TIES: MethodEntry = MethodEntry {
    name: "dare-ties",
    summary: "DARE's random drop and rescale, then TIES's sign election",
    base: true,
    params: &[Param::Weights, Param::Scale, Param::Density, Param::Seed],
    build: |p, n| Dare::build(p, n, true, "dare-ties"),
};

/// The SplitMix64 finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit FNV-1a hash of a tensor's name.
pub(crate) fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The drop of one candidate in one tensor: which elements it keeps.
pub(super) struct Drop {
    stream: u64,
    limit: u64,
    all: bool,
}

impl Drop {
    /// Candidate `k`'s drop in the tensor whose name hashes to `key`.
    pub(super) fn new(seed: u64, key: u64, k: usize, density: f64) -> Drop {
        Drop {
            stream: mix(seed ^ mix(key ^ mix(k as u64))),
            limit: (density * (1u64 << 53) as f64) as u64,
            all: density >= 1.0,
        }
    }

    /// The counter of element `i` (pass it to [`Drop::keeps`] for element
    /// `i`, then `i + 1`, ...).
    pub(super) fn counter(&self, i: usize) -> u64 {
        self.stream
            .wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))
    }

    /// Whether the element of `counter` is kept; moves to the next element.
    #[inline]
    pub(super) fn keeps(&self, counter: &mut u64) -> bool {
        let keep = self.all || mix(*counter) >> 11 < self.limit;
        *counter = counter.wrapping_add(GOLDEN);
        keep
    }
}

struct Dare {
    weights: Vec<f64>,
    scale: f64,
    density: f64,
    seed: u64,
    elect: bool,
}

impl Dare {
    fn build(
        p: &super::method::MethodParams,
        n: usize,
        elect: bool,
        name: &str,
    ) -> crate::error::Result<Built> {
        let weights = task_vector::weights(p, n)?;
        let kernel = Box::new(Dare {
            weights: weights.clone(),
            scale: task_vector::scale(p)?,
            density: task_vector::density(p, name)?,
            seed: p.seed.unwrap_or(0),
            elect,
        });
        Ok(Built { kernel, weights })
    }

    fn combine<A: KernelAcc>(&self, block: &Block, acc: &mut [A], scratch: &mut Vec<A>) {
        let len = acc.len();
        let (base, taus) = task_vector::decode(block, len, scratch);
        let w: Vec<A> = self.weights.iter().map(|&w| A::from_f64(w)).collect();
        let scale = A::from_f64(self.scale);
        for (k, tau) in taus.chunks_exact_mut(len).enumerate() {
            let drop = Drop::new(self.seed, block.name_key, k, self.density);
            let factor = A::from_f64(block.thresholds.get(k).copied().unwrap_or(1.0) as f64);
            let mut counter = drop.counter(block.start);
            for t in tau.iter_mut() {
                *t = match drop.keeps(&mut counter) {
                    true => w[k] * (*t * factor),
                    false => A::ZERO,
                };
            }
        }
        let taus = &*taus;
        for (i, out) in acc.iter_mut().enumerate() {
            let mixed = if self.elect {
                let votes = w.iter().enumerate().map(|(k, &w)| (taus[k * len + i], w));
                task_vector::elect(votes).0
            } else {
                (0..w.len()).fold(A::ZERO, |m, k| m + taus[k * len + i])
            };
            *out = base[i] + scale * mixed;
        }
    }
}

impl Kernel for Dare {
    fn statistic(&self) -> Option<Statistic> {
        (self.density < 1.0).then_some(Statistic::DareRescale {
            density: self.density,
            seed: self.seed,
        })
    }
    kernel_entry_points!();
}
