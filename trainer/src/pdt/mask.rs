//! Masks of the pruned weights during training: global magnitude selection
//! on the live tensors through soup-core's in-memory front end (the same
//! counts, tie-break and prunable rule as `soup prune` on a file), and
//! enforcement after optimizer steps.

use tch::{Kind, Tensor};

use soup_core::{Control, Criterion, OutputOptions, PruneOptions, Scope, TensorView};

use crate::error::{Error, Result};
use crate::optim::Sgd;

/// The keep-masks of the pruned tensors, by optimizer slot.
#[derive(Debug)]
pub struct Mask {
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

impl Mask {
    /// The mask that keeps the non-zero entries of `names` as they are now
    /// (a pruned parent's mask).
    pub fn of_zeros(opt: &Sgd, names: &[String]) -> Mask {
        let drop = slots(opt, names)
            .into_iter()
            .map(|i| (i, tch::no_grad(|| opt.params[i].tensor.eq(0.0))))
            .collect();
        Mask { drop }
    }

    /// Global magnitude selection over `names` (less those matching
    /// `exclude`): the mask with exactly `round(sparsity * n)` zeros
    /// among the `n` selected weights, counting weights that are zero
    /// already (soup-core's plain pruning; see `soup_core::prune`).
    pub fn select(opt: &Sgd, names: &[String], exclude: &[String], sparsity: f64) -> Result<Mask> {
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
        let options = PruneOptions {
            sparsity,
            scope: Scope::Global,
            of_remaining: false,
            criterion: Criterion::Magnitude,
            include: Vec::new(),
            exclude: exclude.to_vec(),
            output: OutputOptions::default(),
        };
        let pruned = soup_core::prune_tensors(&views, &options, &Control::default())?;
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
        Ok(Mask { drop })
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
