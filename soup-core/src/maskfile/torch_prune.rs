//! Checkpoints of `torch.nn.utils.prune`, to and from plain weights.
//!
//! A module pruned with `torch.nn.utils.prune` keeps its parameter `name`
//! as `name_orig` (a parameter, unchanged by pruning) and a buffer
//! `name_mask` (0 or 1, the parameter's dtype and shape); its `state_dict`
//! holds both, and `name` itself is recomputed as `name_orig * name_mask`
//! before each forward pass. [`from_torch_prune`] writes that product as
//! plain `name` (zeros where the mask is 0), so the checkpoint loads into an
//! unpruned module and soup sees its mask; [`to_torch_prune`] splits plain
//! weights back into `name_orig` (the weights) and `name_mask` (`w != 0`),
//! which load into a module pruned again with `prune.identity` (or any
//! method) before `load_state_dict`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::Accumulator;
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::select::Selection;
use crate::stream::Control;

const ORIG: &str = "_orig";
const MASK: &str = "_mask";

/// One tensor converted between the two forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchPruneTensor {
    /// The plain name (`name`, not `name_orig`).
    pub name: String,
    /// Elements.
    pub numel: u64,
    /// Zeros of the plain weights (positions whose mask is 0).
    pub zeros: u64,
}

/// What [`from_torch_prune`] or [`to_torch_prune`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchPruneReport {
    /// The input.
    pub input: PathBuf,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Content hash of the input.
    pub input_digest: String,
    /// The converted tensors, in the input's storage order.
    pub tensors: Vec<TorchPruneTensor>,
}

/// What becomes of one input tensor.
#[derive(Clone, Copy)]
enum Fate<'a> {
    /// Copied to output tensor `.0`.
    Copy(usize),
    /// `name_orig` multiplied by its mask into output tensor `.1`.
    Product(&'a TensorEntry, usize),
    /// A mask consumed by its `name_orig`.
    Dropped,
    /// Split into `name_orig` (output `.0`) and `name_mask` (`.0 + 1`).
    Split(usize),
}

/// Writes the `name_orig * name_mask` pairs of a `torch.nn.utils.prune`
/// checkpoint as plain `name` tensors; every other tensor is copied.
/// Masks must hold only 0 and 1.
pub fn from_torch_prune(
    input: &Checkpoint,
    target: &Path,
    options: &OutputOptions,
    control: &Control,
) -> Result<TorchPruneReport> {
    let path = input.path();
    let tensors = input.tensors();
    let mut fates = Vec::with_capacity(tensors.len());
    let mut layout = Vec::new();
    let mut names = Vec::new();
    for t in tensors {
        let pair_of_mask = t
            .name
            .strip_suffix(MASK)
            .is_some_and(|base| input.get(&format!("{base}{ORIG}")).is_some());
        if pair_of_mask {
            fates.push(Fate::Dropped);
            continue;
        }
        let Some(base) = t.name.strip_suffix(ORIG) else {
            fates.push(Fate::Copy(layout.len()));
            layout.push(OutputTensor::from(t));
            continue;
        };
        let mask_name = format!("{base}{MASK}");
        let mask = input.get(&mask_name).ok_or_else(|| {
            Error::tensor(path, &t.name, format!("has no `{mask_name}` beside it"))
        })?;
        if input.get(base).is_some() {
            return Err(Error::tensor(
                path,
                &t.name,
                format!("`{base}` exists too, so the plain name is taken"),
            ));
        }
        if t.float_type().is_none() || mask.float_type().is_none() || mask.shape != t.shape {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "{:?} {:?} with mask {:?} {:?}: expected float tensors of one shape",
                    t.dtype, t.shape, mask.dtype, mask.shape
                ),
            ));
        }
        fates.push(Fate::Product(mask, layout.len()));
        names.push(base.to_string());
        layout.push(OutputTensor {
            name: base.to_string(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
    }
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no `name{ORIG}` and `name{MASK}` pairs (not a torch.nn.utils.prune checkpoint)",
            path.display()
        )));
    }
    convert(
        input,
        target,
        options,
        control,
        "from-torch-prune",
        &fates,
        &layout,
    )
}

/// Splits the float tensors that `selection` picks among the prunable ones
/// (rank 2 or more, named `*weight`, see [`crate::is_prunable`]) into
/// `name_orig` and `name_mask`, as `torch.nn.utils.prune` saves them; every
/// other tensor is copied.
pub fn to_torch_prune(
    input: &Checkpoint,
    target: &Path,
    selection: &Selection,
    options: &OutputOptions,
    control: &Control,
) -> Result<TorchPruneReport> {
    let path = input.path();
    let mut fates = Vec::new();
    let mut layout = Vec::new();
    let mut taken: HashMap<String, &str> = HashMap::new();
    for t in input.tensors() {
        let float = t.float_type().is_some();
        let split = crate::is_prunable(&t.name, t.shape.len(), float) && selection.matches(&t.name);
        if !split {
            fates.push(Fate::Copy(layout.len()));
            layout.push(OutputTensor::from(t));
            continue;
        }
        fates.push(Fate::Split(layout.len()));
        for suffix in [ORIG, MASK] {
            layout.push(OutputTensor {
                name: format!("{}{suffix}", t.name),
                ..OutputTensor::from(t)
            });
        }
    }
    for o in &layout {
        if let Some(other) = taken.insert(o.name.clone(), &o.name) {
            return Err(Error::tensor(
                path,
                other,
                "the split would write this name twice",
            ));
        }
    }
    if !fates.iter().any(|f| matches!(f, Fate::Split(_))) {
        return Err(Error::invalid(format!(
            "{}: no prunable float tensors selected",
            path.display()
        )));
    }
    convert(
        input,
        target,
        options,
        control,
        "to-torch-prune",
        &fates,
        &layout,
    )
}

/// Streams `input` into `layout` as `fates` say.
fn convert(
    input: &Checkpoint,
    target: &Path,
    options: &OutputOptions,
    control: &Control,
    operation: &str,
    fates: &[Fate],
    layout: &[OutputTensor],
) -> Result<TorchPruneReport> {
    let tensors = input.tensors();
    let name = input.path().display().to_string();
    let recipe = serde_json::json!({});
    let mut metadata = provenance::common_metadata(&[input]);
    let mut provisional = metadata.clone();
    provenance::record(
        &mut provisional,
        operation,
        recipe.clone(),
        &[(name.clone(), control.digest.placeholder())],
    );
    let files: Vec<&Path> = input.files_with_index().collect();
    let mut output = Output::create(target, layout, provisional, &files, options)?;
    let mut zeros = vec![0u64; tensors.len()];
    let sha = crate::rewrite::stream(
        input,
        &|i| match fates[i] {
            Fate::Product(mask, _) => mask.dtype.bitsize() / 8,
            _ => 0,
        },
        control,
        operation,
        true,
        |_| Ok(()),
        |p, _, _| -> Result<u64> {
            let t = &tensors[p.tensor];
            let range = t.byte_range(&p.elems);
            let bytes = input.bytes(t, range.clone());
            match fates[p.tensor] {
                Fate::Dropped => Ok(0),
                Fate::Copy(o) => output.write(o, range.start, bytes).map(|()| 0),
                Fate::Product(mask, o) => {
                    let ty = t.float_type().expect("float");
                    let mrange = mask.byte_range(&p.elems);
                    let mut m = Vec::new();
                    f64::decode(
                        input.bytes(mask, mrange.clone()),
                        mask.float_type().expect("float"),
                        &mut m,
                    );
                    input.release(mask, mrange);
                    let mut out = bytes.to_vec();
                    let size = ty.size();
                    let mut z = 0;
                    for (j, &v) in m.iter().enumerate() {
                        if v == 0.0 {
                            out[j * size..(j + 1) * size].fill(0);
                        } else if v != 1.0 {
                            return Err(Error::tensor(
                                input.path(),
                                &mask.name,
                                format!("holds {v}: a pruning mask holds only 0 and 1"),
                            ));
                        }
                    }
                    crate::dtype::for_each_nonzero(&out, ty, |_, nz| z += u64::from(!nz));
                    output.write(o, range.start, &out).map(|()| z)
                }
                Fate::Split(o) => {
                    output.write(o, range.start, bytes)?;
                    let ty = t.float_type().expect("float");
                    let mut one = Vec::new();
                    f64::encode(&[1.0], ty, &mut one);
                    let mut out = vec![0u8; bytes.len()];
                    let mut z = 0;
                    crate::dtype::for_each_nonzero(bytes, ty, |j, nz| {
                        if nz {
                            out[j * ty.size()..(j + 1) * ty.size()].copy_from_slice(&one);
                        } else {
                            z += 1;
                        }
                    });
                    output.write(o + 1, range.start, &out).map(|()| z)
                }
            }
        },
        |p, z| zeros[p.tensor] += z,
    )?
    .expect("hashed");
    provenance::record(&mut metadata, operation, recipe, &[(name, sha.clone())]);
    *output.metadata_mut() = metadata;
    input.check_unchanged()?;
    let outputs = output.commit()?;
    let converted = tensors
        .iter()
        .zip(fates)
        .zip(&zeros)
        .filter_map(|((t, f), &z)| {
            let name = match f {
                Fate::Product(..) => t.name.strip_suffix(ORIG)?.to_string(),
                Fate::Split(_) => t.name.clone(),
                _ => return None,
            };
            Some(TorchPruneTensor {
                name,
                numel: t.numel() as u64,
                zeros: z,
            })
        })
        .collect();
    Ok(TorchPruneReport {
        input: input.path().to_path_buf(),
        outputs,
        input_digest: sha,
        tensors: converted,
    })
}
