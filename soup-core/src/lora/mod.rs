//! Folding a LoRA adapter into its base model (`soup fold-lora`).
//!
//! For every adapted weight `W` (see [`LoraAdapter`] for how PEFT names the
//! factors), the output holds `W + s * B A` with `s = alpha / r`, or
//! `alpha / sqrt(r)` under rsLoRA (`use_rslora`), and `(B A)^T` where the
//! base stores the weight as `in x out` (`fan_in_fan_out`, embeddings).
//! Every other tensor is copied.
//!
//! With the base's mask kept (the default), the update is applied only
//! where `W != 0`, so the folded model has exactly the base's zeros: the
//! sparse fine-tuning recipe of SQFT's SparsePEFT (Muñoz et al., 2024), where
//! the adapter's update is multiplied by the base's mask. The report gives,
//! per weight and over all of them, the L2 norm of the update and of the
//! part the mask removed; their ratio is the share of the update's norm
//! that was dropped. Without the mask the update is added everywhere and a
//! sparse base comes back dense.
//!
//! The base streams in bounded windows like every rewrite; the factors of
//! the adapted weights of one window are decoded to f64 before it (they are
//! `r (in + out)` values per weight), and each piece computes its own rows
//! of `B A` in f64, adds them to the base's values in f64 and writes the
//! base's dtype.

mod adapter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::dtype::Accumulator;
use crate::error::Result;
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::stream::Control;
use adapter::Adapted;
pub use adapter::{LoraAdapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS};

/// Parameters of [`fold_lora`].
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// Apply the update only where the base is non-zero (keep its mask).
    pub keep_mask: bool,
    /// Where and how to write.
    pub output: OutputOptions,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            keep_mask: true,
            output: OutputOptions::default(),
        }
    }
}

/// One folded weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldedTensor {
    /// The base's tensor (`module.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The adapter's rank for it.
    pub rank: usize,
    /// Its alpha.
    pub alpha: f64,
    /// The scale `s` of `s * B A`.
    pub scale: f64,
    /// L2 norm of `s * B A` over the whole weight.
    pub update_norm: f64,
    /// L2 norm of the part of the update where the base is zero: what the
    /// mask removed (without the mask, what densified the weight).
    pub removed_norm: f64,
    /// `removed_norm / update_norm` (0 for a zero update).
    pub removed_share: f64,
    /// Zeros of the base's weight.
    pub base_zeros: u64,
    /// Zeros of the folded weight.
    pub zeros: u64,
}

/// What [`fold_lora`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldReport {
    /// The base model.
    pub base: PathBuf,
    /// The adapter folder.
    pub adapter: PathBuf,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Whether the update was masked by the base's zeros.
    pub keep_mask: bool,
    /// The folded weights, in the base's storage order.
    pub tensors: Vec<FoldedTensor>,
    /// L2 norm of the whole update (all weights).
    pub update_norm: f64,
    /// L2 norm of the part of it where the base is zero (see
    /// [`FoldedTensor::removed_norm`]).
    pub removed_norm: f64,
    /// `removed_norm / update_norm`.
    pub removed_share: f64,
}

/// The factors of one weight in f64, arranged so that the update at row
/// `i`, column `j` of the base's tensor is `sum_k left[i r + k] right[j r + k]`
/// (the scale folded into `left`).
struct Factors {
    rank: usize,
    cols: usize,
    left: Vec<f64>,
    right: Vec<f64>,
}

fn decode(checkpoint: &Checkpoint, t: &crate::checkpoint::TensorEntry) -> Vec<f64> {
    let mut v = Vec::new();
    f64::decode(checkpoint.data(t), t.float_type().expect("float"), &mut v);
    v
}

/// Transposes a row-major `rows x cols` matrix.
fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; m.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = m[i * cols + j];
        }
    }
    t
}

impl Factors {
    fn new(adapter: &Checkpoint, a: &Adapted) -> Factors {
        let r = a.rank;
        let (fan_in, fan_out) = (a.a.shape[1], a.b.shape[0]);
        // A is r x in, B is out x r.
        let at = transpose(&decode(adapter, a.a), r, fan_in); // in x r
        let b = decode(adapter, a.b); // out x r
        let (mut left, right, cols) = match a.transposed {
            false => (b, at, fan_in),
            true => (at, b, fan_out),
        };
        left.iter_mut().for_each(|v| *v *= a.scale);
        Factors {
            rank: r,
            cols,
            left,
            right,
        }
    }

    fn update(&self, e: usize) -> f64 {
        let (i, j) = (e / self.cols, e % self.cols);
        let r = self.rank;
        let l = &self.left[i * r..(i + 1) * r];
        let rr = &self.right[j * r..(j + 1) * r];
        l.iter().zip(rr).map(|(x, y)| x * y).sum()
    }
}

/// Per-piece sums.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    update_sq: f64,
    removed_sq: f64,
    base_zeros: u64,
    zeros: u64,
}

/// Writes `base` with `adapter` folded in to `target` (see the module
/// documentation). Every factor of the adapter must belong to a weight of
/// the base, with shapes that fit; the error lists those that do not.
pub fn fold_lora(
    base: &Checkpoint,
    adapter: &LoraAdapter,
    target: &Path,
    options: &FoldOptions,
    control: &Control,
) -> Result<FoldReport> {
    let adapted = adapter.match_base(base)?;
    let tensors = base.tensors();
    let index: HashMap<&str, usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut of_tensor: Vec<Option<&Adapted>> = vec![None; tensors.len()];
    for a in &adapted {
        of_tensor[index[a.base.name.as_str()]] = Some(a);
    }
    let layout: Vec<OutputTensor> = tensors.iter().map(OutputTensor::from).collect();
    let mut recipe = adapter.recipe();
    recipe["keep_mask"] = options.keep_mask.into();
    let base_name = base.path().display().to_string();
    let weights = adapter.weights();
    let adapter_name = weights.path().display().to_string();
    let adapter_digest = crate::hash::hash_checkpoint(weights, control)?.digest;
    let described = |sha: String| {
        vec![
            (base_name.clone(), sha),
            (adapter_name.clone(), adapter_digest.clone()),
        ]
    };
    let mut metadata = provenance::common_metadata(&[base]);
    let mut provisional = metadata.clone();
    provenance::record(
        &mut provisional,
        "fold-lora",
        recipe.clone(),
        &described(control.digest.placeholder()),
    );
    let mut files: Vec<&Path> = base.files_with_index().collect();
    files.extend(weights.files_with_index());
    let mut output = Output::create(target, &layout, provisional, &files, &options.output)?;
    let mut sums = vec![Sums::default(); tensors.len()];
    let keep_mask = options.keep_mask;
    let sha = crate::rewrite::stream(
        base,
        &|_| 0,
        control,
        "folding",
        true,
        |window| {
            let mut factors: HashMap<usize, Factors> = HashMap::new();
            for p in window {
                if let Some(a) = of_tensor[p.tensor] {
                    factors
                        .entry(p.tensor)
                        .or_insert_with(|| Factors::new(weights, a));
                }
            }
            Ok(factors)
        },
        |p, factors, _| -> Result<Sums> {
            let t = &tensors[p.tensor];
            let range = t.byte_range(&p.elems);
            let bytes = base.bytes(t, range.clone());
            let Some(f) = factors.get(&p.tensor) else {
                output.write(p.tensor, range.start, bytes)?;
                return Ok(Sums::default());
            };
            let ty = t.float_type().expect("float");
            let mut w = Vec::new();
            f64::decode(bytes, ty, &mut w);
            let mut s = Sums::default();
            for (j, v) in w.iter_mut().enumerate() {
                let u = f.update(p.elems.start + j);
                s.update_sq += u * u;
                if *v == 0.0 {
                    s.base_zeros += 1;
                    s.removed_sq += u * u;
                    if keep_mask {
                        continue;
                    }
                }
                *v += u;
            }
            let mut out = Vec::with_capacity(bytes.len());
            f64::encode(&w, ty, &mut out);
            crate::dtype::for_each_nonzero(&out, ty, |_, nz| s.zeros += u64::from(!nz));
            output.write(p.tensor, range.start, &out)?;
            Ok(s)
        },
        |p, s| {
            let total = &mut sums[p.tensor];
            total.update_sq += s.update_sq;
            total.removed_sq += s.removed_sq;
            total.base_zeros += s.base_zeros;
            total.zeros += s.zeros;
        },
    )?
    .expect("hashed");
    provenance::record(&mut metadata, "fold-lora", recipe, &described(sha));
    *output.metadata_mut() = metadata;
    base.check_unchanged()?;
    weights.check_unchanged()?;
    let outputs = output.commit()?;
    let share = |removed: f64, update: f64| if update > 0.0 { removed / update } else { 0.0 };
    let mut folded = Vec::with_capacity(adapted.len());
    for (i, a) in of_tensor.iter().enumerate() {
        let Some(a) = a else { continue };
        let s = sums[i];
        let (update, removed) = (s.update_sq.sqrt(), s.removed_sq.sqrt());
        folded.push(FoldedTensor {
            name: tensors[i].name.clone(),
            shape: tensors[i].shape.clone(),
            rank: a.rank,
            alpha: a.alpha,
            scale: a.scale,
            update_norm: update,
            removed_norm: removed,
            removed_share: share(removed, update),
            base_zeros: s.base_zeros,
            zeros: s.zeros,
        });
    }
    let update = sums.iter().map(|s| s.update_sq).sum::<f64>().sqrt();
    let removed = sums.iter().map(|s| s.removed_sq).sum::<f64>().sqrt();
    Ok(FoldReport {
        base: base.path().to_path_buf(),
        adapter: adapter.folder().to_path_buf(),
        outputs,
        keep_mask,
        tensors: folded,
        update_norm: update,
        removed_norm: removed,
        removed_share: share(removed, update),
    })
}
