//! Masks and sparsity of in-memory models: the mask enforced after every
//! optimizer step while a pruned model retrains, sparsity over the pruned
//! tensors and over all parameters, and the parameter norm ALLR compares
//! before and after pruning.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::model::Model;
use crate::optim::Sgd;

/// The masks of the prunable weights, taken from the pruned parent, with
/// the optimizer slots they apply to.
#[derive(Debug)]
pub struct Masks {
    /// (index into `Sgd::params`, positions to keep at zero)
    zeros: Vec<(usize, Tensor)>,
}

impl Masks {
    /// The zeros of `model`'s prunable weights as they are now, by the slot
    /// of `opt` each belongs to (tensors without zeros are left out).
    pub fn of(model: &Model, opt: &Sgd) -> Masks {
        let prunable = model.prunable_names();
        let zeros = opt
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| prunable.contains(&p.name))
            .map(|(i, p)| (i, tch::no_grad(|| p.tensor.eq(0.0))))
            .filter(|(_, z)| z.any().int64_value(&[]) != 0)
            .collect();
        Masks { zeros }
    }

    /// `w[mask == 0] = +0.0` (and the same for the momentum buffer).
    pub fn enforce(&self, opt: &mut Sgd, momentum_too: bool) {
        tch::no_grad(|| {
            for (i, zeros) in &self.zeros {
                let p = &mut opt.params[*i];
                let _ = p.tensor.masked_fill_(zeros, 0.0);
                if momentum_too {
                    if let Some(buf) = p.momentum_buffer.as_mut() {
                        let _ = buf.masked_fill_(zeros, 0.0);
                    }
                }
            }
        });
    }
}

/// L2 norm of all trainable parameters (weights and biases).
pub fn param_norm(model: &Model) -> f64 {
    tch::no_grad(|| {
        model
            .vs
            .trainable_variables()
            .iter()
            .map(|t| {
                t.to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// Zeros / elements of each pruned tensor (`pruned`: their names).
pub fn layer_sparsity(model: &Model, pruned: &[String]) -> BTreeMap<String, f64> {
    let sd = model.state_dict();
    pruned
        .iter()
        .cloned()
        .map(|name| {
            let t = &sd[&name];
            let zeros = tch::no_grad(|| t.eq(0.0).sum(Kind::Int64).int64_value(&[]));
            let share = zeros as f64 / (t.numel() as f64).max(1.0);
            (name, share)
        })
        .collect()
}

/// (zeros / elements over the pruned tensors, named in `pruned`, zeros /
/// elements over all trainable parameters).
pub fn sparsity(model: &Model, pruned: &[String]) -> (f64, f64) {
    let (mut pz, mut pn, mut az, mut an) = (0i64, 0i64, 0i64, 0i64);
    tch::no_grad(|| {
        for (name, t) in model.vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            let zeros = t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            let n = t.numel() as i64;
            az += zeros;
            an += n;
            if pruned.contains(&name) {
                pz += zeros;
                pn += n;
            }
        }
    });
    let ratio = |a: i64, b: i64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (ratio(pz, pn), ratio(az, an))
}
