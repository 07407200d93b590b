//! `task-arithmetic` (Ilharco et al., 2023, "Editing models with task
//! arithmetic"): `base + scale * sum_k w_k * tau_k`, as mergekit's
//! `task_arithmetic` (no normalisation by the weights).

use super::method::{kernel_entry_points, Block, Built, Kernel, KernelAcc, MethodEntry, Param};
use super::task_vector;

/// The registry line.
pub(super) const ENTRY: MethodEntry = MethodEntry {
    name: "task-arithmetic",
    summary: "base + scale * the weighted sum of the task vectors",
    base: true,
    params: &[Param::Weights, Param::Scale],
    build: |p, n| {
        let weights = task_vector::weights(p, n)?;
        let scale = task_vector::scale(p)?;
        let kernel = Box::new(TaskArithmetic {
            weights: weights.clone(),
            scale,
        });
        Ok(Built { kernel, weights })
    },
};

struct TaskArithmetic {
    weights: Vec<f64>,
    scale: f64,
}

impl TaskArithmetic {
    fn combine<A: KernelAcc>(&self, block: &Block, acc: &mut [A], scratch: &mut Vec<A>) {
        let len = acc.len();
        let (base, taus) = task_vector::decode(block, len, scratch);
        let w: Vec<A> = self.weights.iter().map(|&w| A::from_f64(w)).collect();
        let scale = A::from_f64(self.scale);
        for (i, out) in acc.iter_mut().enumerate() {
            let mut mixed = A::ZERO;
            for (k, &w) in w.iter().enumerate() {
                mixed = mixed + w * taus[k * len + i];
            }
            *out = base[i] + scale * mixed;
        }
    }
}

impl Kernel for TaskArithmetic {
    kernel_entry_points!();
}
