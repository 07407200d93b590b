//! Masks and sparsity of in-memory models: the mask of the pruned weights
//! (taken from a pruned model's zeros, or chosen by global magnitude on the
//! live tensors through soup-core's in-memory front end, with the same
//! counts, tie-break and prunable rule as `soup prune` on a file), enforced
//! after every optimizer step; sparsity over the pruned tensors and over
//! all parameters; and the parameter norm ALLR compares before and after
//! pruning.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use soup_core::{Control, Criterion, NmPattern, OutputOptions, PruneOptions, Scope, TensorView};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::optim::Sgd;
use crate::pipeline::lr::PruneImpact;

/// The mask of the pruned tensors: which weights stay at zero, by
/// optimizer slot.
#[derive(Debug)]
pub struct PruneMask {
    /// (index into `Sgd::params`, `true` where the weight is pruned).
    pub drop: Vec<(usize, Tensor)>,
}

/// The optimizer slots of `names` (the tensors pruning may touch), in name
/// order (the order soup-core sees them in, as in a saved checkpoint).
fn slots(opt: &Sgd, names: &[String]) -> Vec<usize> {
    let mut idx: Vec<usize> = opt
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| names.contains(&p.name))
        .map(|(i, _)| i)
        .collect();
    idx.sort_by(|&a, &b| opt.params[a].name.cmp(&opt.params[b].name));
    idx
}

impl PruneMask {
    /// The mask that keeps the non-zero entries of `names` as they are now
    /// (a pruned parent's mask).
    pub fn of_zeros(opt: &Sgd, names: &[String]) -> PruneMask {
        let drop = slots(opt, names)
            .into_iter()
            .map(|i| (i, tch::no_grad(|| opt.params[i].tensor.eq(0.0))))
            .collect();
        PruneMask { drop }
    }

    /// Global magnitude selection over `names` (less those matching
    /// `exclude`): the mask with exactly `round(sparsity * n)` zeros
    /// among the `n` selected weights, counting weights that are zero
    /// already (soup-core's plain pruning; see `soup_core::prune`).
    pub fn select(
        opt: &Sgd,
        names: &[String],
        exclude: &[String],
        sparsity: f64,
    ) -> Result<PruneMask> {
        let options = PruneOptions {
            sparsity,
            scope: Scope::Global,
            of_remaining: false,
            criterion: Criterion::Magnitude,
            include: Vec::new(),
            exclude: exclude.to_vec(),
            output: OutputOptions::default(),
            ..PruneOptions::default()
        };
        Self::select_with(opt, names, &options)
    }

    /// N:M selection over `names` (all of which must hold whole groups of
    /// M along their input dimension): in every group the N largest
    /// weights by magnitude stay, weights already zero stay zero
    /// (soup-core's `--nm` pruning with `--keep-zeros`).
    pub fn select_nm(opt: &Sgd, names: &[String], pattern: NmPattern) -> Result<PruneMask> {
        let options = PruneOptions {
            nm: Some(pattern),
            keep_zeros: true,
            ..PruneOptions::default()
        };
        Self::select_with(opt, names, &options)
    }

    /// The mask soup-core's in-memory pruning with `options` chooses over
    /// the live tensors `names`.
    fn select_with(opt: &Sgd, names: &[String], options: &PruneOptions) -> Result<PruneMask> {
        let idx = slots(opt, names);
        let values: Vec<(String, Vec<usize>, Vec<f32>)> = idx
            .iter()
            .map(|&i| {
                let p = &opt.params[i];
                let shape: Vec<usize> = p.tensor.size().iter().map(|&d| d as usize).collect();
                // Row-major values, whatever the tensor's memory layout.
                let flat = tch::no_grad(|| {
                    p.tensor
                        .to_kind(Kind::Float)
                        .to_device(tch::Device::Cpu)
                        .contiguous()
                        .view(-1)
                });
                let v = Vec::<f32>::try_from(&flat)
                    .map_err(|e| Error::Run(format!("reading {}: {e}", p.name)))?;
                Ok((p.name.clone(), shape, v))
            })
            .collect::<Result<_>>()?;
        let views = values
            .iter()
            .map(|(n, s, v)| TensorView::f32(n.as_str(), s, v))
            .collect::<soup_core::Result<Vec<_>>>()?;
        let pruned = soup_core::prune_tensors(&views, options, &Control::default())?;
        let drop = idx
            .iter()
            .zip(pruned.masks)
            .filter_map(|(&i, m)| m.map(|m| (i, m)))
            .map(|(i, m)| {
                let t = &opt.params[i].tensor;
                let keep = Tensor::from_slice(&m).view(t.size().as_slice());
                (i, keep.logical_not().to_device(t.device()))
            })
            .collect();
        Ok(PruneMask { drop })
    }

    /// Zeros in the masks and elements under them.
    pub fn counts(&self) -> (i64, i64) {
        self.drop.iter().fold((0, 0), |(z, n), (_, d)| {
            let zeros = d.sum(Kind::Int64).int64_value(&[]);
            (z + zeros, n + d.numel() as i64)
        })
    }

    /// `w = 0` where the mask drops, and the same for the momentum buffer
    /// when `momentum_too`. Pruned weights become `+0.0`.
    pub fn apply(&self, opt: &mut Sgd, momentum_too: bool) {
        tch::no_grad(|| {
            for (i, drop) in &self.drop {
                let p = &mut opt.params[*i];
                let _ = p.tensor.masked_fill_(drop, 0.0);
                if momentum_too {
                    if let Some(buf) = p.momentum_buffer.as_mut() {
                        let _ = buf.masked_fill_(drop, 0.0);
                    }
                }
            }
        });
    }
}

/// Zeros and elements of `names` in the optimizer's tensors now.
pub fn zero_counts(opt: &Sgd, names: &[String]) -> (i64, i64) {
    slots(opt, names).into_iter().fold((0, 0), |(z, n), i| {
        let t = &opt.params[i].tensor;
        let zeros = tch::no_grad(|| t.eq(0.0).sum(Kind::Int64).int64_value(&[]));
        (z + zeros, n + t.numel() as i64)
    })
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

/// The one rule for what a run prunes: the prunable tensors (`prunable`,
/// by soup-core's rule) less those matching `exclude`, in their order.
/// Mask enforcement, mask checks, reported sparsity and FLOPs all use this
/// set, computed once per run.
pub fn pruned_names(prunable: Vec<String>, exclude: &[String]) -> Vec<String> {
    let keep = soup_core::Selection::new(&[], exclude)
        .expect("exclusions are checked when the configuration is read");
    prunable.into_iter().filter(|n| keep.matches(n)).collect()
}

/// A model's parameter norm and sparsity over the pruned tensors: what a
/// pruning step is measured by, before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// L2 norm of all trainable parameters ([`param_norm`]).
    pub norm: f64,
    /// Zeros / elements over the pruned tensors ([`sparsity`]).
    pub sparsity: f64,
}

impl Footprint {
    /// The footprint of `model` now.
    pub fn of(model: &Model, pruned: &[String]) -> Footprint {
        Footprint {
            norm: param_norm(model),
            sparsity: sparsity(model, pruned).0,
        }
    }
}

/// What a pruning step did, from the model's footprints before and after:
/// the norms, and the share of the remaining weights it removed (`asked`
/// where the step was asked for such a share, else measured).
pub fn prune_impact(before: Footprint, after: Footprint, asked: Option<f64>) -> PruneImpact {
    PruneImpact {
        norm_before: before.norm,
        norm_after: after.norm,
        fraction: asked.unwrap_or(if before.sparsity < 1.0 {
            (after.sparsity - before.sparsity) / (1.0 - before.sparsity)
        } else {
            0.0
        }),
    }
}
