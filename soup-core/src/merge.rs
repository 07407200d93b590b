//! Merging checkpoints out of core: every floating-point tensor is combined
//! by a merge method, with the mask check of `soup check-mask` done in the
//! same pass.
//!
//! A merge is a plan, an optional pre-pass and a kernel on the one
//! streaming driver:
//!
//! - The plan ([`merge`], [`merge_with_base`]) fixes the inputs and their
//!   roles (the candidates, and a base model for the task-vector methods),
//!   what is combined (float tensors; integer and bool tensors follow the
//!   [`IntPolicy`]), the output, and the [`MaskPolicy`], so that every
//!   method keeps masks the same way.
//! - The pre-pass (`prepass`) gathers per-tensor statistics a method asks
//!   for before it combines (the magnitude threshold of TIES's trim).
//! - The kernel (a method of [`METHODS`], one module each) turns one block
//!   of every input's values into the output's block. A method declares
//!   the inputs and parameters it takes in its registry line.
//!
//! The driver (`driver`) streams every tensor in bounded windows, hashes
//! the inputs for provenance, compares each input's mask with the first
//! input's (the base's, when there is one), applies the mask policy to
//! the kernel's output, and writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{align, Checkpoint};
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::hash::DigestKind;
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::stream::{CheckpointRows, Control};
use safetensors::Dtype;

mod dare;
mod driver;
mod mean;
mod memory;
mod method;
mod prepass;
mod task_arithmetic;
mod task_vector;
mod ties;

pub use mean::normalise_weights;
pub(crate) use memory::le_bytes;
pub use memory::{merge_arrays, merge_tensors, MergedTensor, NamedArrays, TensorsMerge};
pub use method::{MergeMethod, MethodEntry, MethodParams, Param, METHODS};

vocabulary! {
    /// What to do when the inputs' masks differ (from the first candidate's,
    /// or from the base's when there is one).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum MaskPolicy ("mask policy", default Refuse) {
        /// Refuse to merge (the default without a base): a soup of
        /// differently pruned models is not sparse.
        Refuse = "refuse",
        /// Plain mean: the result is non-zero wherever any input is.
        Union = "union",
        /// Zero wherever any input is zero.
        Intersect = "intersect",
        /// With a base: keep the base's mask (the default with a base).
        ///
        /// The result is zero exactly where the base is, task vectors never
        /// revive a pruned weight, and trims and drops count only the
        /// base's surviving weights. Fine-tunes whose masks differ are
        /// reported, with the share of their task vector's norm that the
        /// base's mask removed.
        Base = "base",
        /// With a base: no mask handling (the dense result, as without
        /// masks).
        Dense = "none",
    }
}

vocabulary! {
    /// What to do with integer and bool tensors (never averaged).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum IntPolicy ("integer policy", default Equal) {
        /// They must be equal in all inputs (the default).
        Equal = "equal",
        /// Take the first input's.
        First = "first",
    }
}

impl MaskPolicy {
    /// Whether the policy applies to a merge with a base model (`base`) or
    /// without one: `base` needs one, `union` and `intersect` take none.
    pub fn applies(self, base: bool) -> bool {
        match self {
            MaskPolicy::Refuse | MaskPolicy::Dense => true,
            MaskPolicy::Union | MaskPolicy::Intersect => !base,
            MaskPolicy::Base => base,
        }
    }

    /// [`MaskPolicy::applies`], as an error that lists the policies that
    /// do.
    pub fn check(self, base: bool) -> Result<()> {
        if self.applies(base) {
            return Ok(());
        }
        use crate::vocab::Vocabulary;
        let valid: Vec<&str> = MaskPolicy::ALL
            .iter()
            .filter(|p| p.applies(base))
            .map(|p| p.name())
            .collect();
        let (last, rest) = valid.split_last().expect("refuse always applies");
        Err(Error::MaskPolicyMismatch {
            policy: self,
            base,
            valid: format!("{} or {last}", rest.join(", ")),
        })
    }
}

/// Parameters of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// How float tensors are combined.
    pub method: MergeMethod,
    /// Mask policy.
    pub mask_policy: MaskPolicy,
    /// Integer policy.
    pub int_policy: IntPolicy,
    /// Output type of float tensors (default: the input's).
    pub dtype: Option<FloatType>,
    /// Where and how to write.
    pub output: OutputOptions,
    /// Extra fields for the recorded recipe (greedy soups add their trials).
    pub recipe_extra: serde_json::Map<String, serde_json::Value>,
    /// An N:M pattern the result must keep: the written tensors that the
    /// rule selects are checked before the output is moved into place, and
    /// one that breaks the pattern fails the merge with nothing written.
    pub nm: Option<crate::nm_check::NmRule>,
}

impl MergeOptions {
    /// Checks the options for `candidates` candidates, with a base model
    /// or without (`base`), before any file is opened: the method and its
    /// parameters, and the mask policy. Returns the weight of each
    /// candidate (normalised for the means, as given for the task-vector
    /// methods). [`merge`] and [`merge_with_base`] check the same.
    pub fn validate(&self, candidates: usize, base: bool) -> Result<Vec<f64>> {
        let weights = self.method.check(candidates, base)?;
        self.mask_policy.check(base)?;
        Ok(weights)
    }
}

/// How much of a fine-tune's task vector the base's mask removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskVectorNorm {
    /// The fine-tune.
    pub input: PathBuf,
    /// L2 norm of its task vector over the merged float tensors.
    pub norm: f64,
    /// L2 norm of the part where the base is zero (removed by the `base`
    /// mask policy).
    pub dropped: f64,
}

/// The outcome of a merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeReport {
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// The method.
    #[serde(default)]
    pub method: String,
    /// The base model (task-vector methods).
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// Content hash of the base.
    #[serde(default)]
    pub base_digest: Option<String>,
    /// Input paths (the candidates).
    pub inputs: Vec<PathBuf>,
    /// Content hash of each input.
    pub input_digest: Vec<String>,
    /// Weights: normalised for the means, as given for the task-vector
    /// methods.
    pub weights: Vec<f64>,
    /// Tensors written.
    pub tensors: usize,
    /// Of which averaged.
    pub averaged: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// Mask policy applied.
    pub mask_policy: MaskPolicy,
    /// Per tensor whose masks differ: name and, per input, the positions
    /// where its mask differs from the first input's (the base's when
    /// there is one; the base is not listed). Refuse stops at the first.
    pub mask_differences: Vec<(String, Vec<u64>)>,
    /// Under the base mask policy, per fine-tune, its task vector's norm
    /// and the part of it the base's mask removed.
    #[serde(default)]
    pub task_vectors: Vec<TaskVectorNorm>,
}

/// Merges the candidates `inputs` into `target` with a method that takes
/// no base (a uniform or weighted soup). See the module documentation.
pub fn merge(
    inputs: &[Checkpoint],
    target: &Path,
    options: &MergeOptions,
    control: &Control,
) -> Result<MergeReport> {
    run(None, inputs, Some(target), options, control).map(|(report, _)| report)
}

/// Merges the fine-tunes `candidates` of `base` into `target` with a
/// task-vector method (task arithmetic, TIES, DARE). See the module
/// documentation.
pub fn merge_with_base(
    base: &Checkpoint,
    candidates: &[Checkpoint],
    target: &Path,
    options: &MergeOptions,
    control: &Control,
) -> Result<MergeReport> {
    run(Some(base), candidates, Some(target), options, control).map(|(report, _)| report)
}

/// The merge into `target`, or without one into memory: then the result
/// is returned as one output tensor each, with its bytes.
fn run(
    base: Option<&Checkpoint>,
    candidates: &[Checkpoint],
    target: Option<&Path>,
    options: &MergeOptions,
    control: &Control,
) -> Result<(MergeReport, Vec<memory::MergedTensor>)> {
    if candidates.is_empty() {
        return Err(Error::invalid("nothing to merge"));
    }
    let built = options.method.build(candidates.len(), base.is_some())?;
    options.mask_policy.check(base.is_some())?;
    // The driver's inputs: the base first, when there is one.
    let refs: Vec<&Checkpoint> = base.into_iter().chain(candidates).collect();
    let rows = align(&refs)?;
    let count = rows.len();
    let averaged = rows.iter().filter(|r| r[0].float_type().is_some()).count();

    let out_tensors: Vec<OutputTensor> = rows
        .iter()
        .map(|row| OutputTensor {
            name: row[0].name.clone(),
            dtype: match (row[0].float_type(), options.dtype) {
                (Some(_), Some(t)) => t.dtype(),
                _ => row[0].dtype,
            },
            shape: row[0].shape.clone(),
        })
        .collect();

    let input_paths: Vec<&Path> = refs.iter().flat_map(|c| c.files_with_index()).collect();
    let mut recipe = serde_json::json!({
        "method": options.method.name(),
        "weights": built.weights,
        "mask_policy": options.mask_policy,
        "int_policy": options.int_policy,
        "dtype": options.dtype.map(|t| crate::dtype::name(t.dtype())),
    });
    let fields = recipe.as_object_mut().expect("object");
    if let Some(base) = base {
        fields.insert("base".into(), base.path().display().to_string().into());
        let params = &options.method.params;
        fields.insert("scale".into(), params.scale.into());
        fields.insert("density".into(), params.density.into());
        fields.insert("seed".into(), params.seed.into());
    }
    fields.extend(options.recipe_extra.clone());
    if let Some(rule) = &options.nm {
        recipe["nm"] = rule.pattern().to_string().into();
    }
    let placeholder = control.digest.placeholder();
    let describe = |hashes: &[String]| -> Vec<(String, String)> {
        refs.iter()
            .zip(hashes)
            .map(|(c, h)| (c.path().display().to_string(), h.clone()))
            .collect()
    };
    let mut metadata = provenance::common_metadata(&refs);
    provenance::record(
        &mut metadata,
        "merge",
        recipe.clone(),
        &describe(&vec![placeholder; refs.len()]),
    );
    let output = match target {
        Some(target) => Destination::File(Box::new(Output::create(
            target,
            &out_tensors,
            metadata,
            &input_paths,
            &options.output,
        )?)),
        None => Destination::Memory(memory::Tensors::new(&out_tensors)),
    };
    let bytes = out_tensors.iter().map(|t| t.nbytes() as u64).sum();
    let out_dtypes: Vec<Dtype> = out_tensors.iter().map(|t| t.dtype).collect();
    // The output file keeps its own compact copy of the layout.
    let out_tensors = match output {
        Destination::File(_) => {
            drop(out_tensors);
            Vec::new()
        }
        Destination::Memory(_) => out_tensors,
    };

    // With the base's mask kept, trims count only its surviving weights.
    let keep_base_mask =
        base.is_some() && matches!(options.mask_policy, MaskPolicy::Base | MaskPolicy::Refuse);
    let thresholds = match built.kernel.statistic() {
        Some(statistic) => {
            let plain = CheckpointRows::new(refs.clone(), rows.clone(), None);
            prepass::thresholds(&plain, statistic, keep_base_mask, control)?
        }
        None => Vec::new(),
    };

    // BLAKE3 is hashed inside each piece's work, while its bytes are in
    // the cache (see crate::tree_hash); SHA-256 must see each input in
    // order, so it runs on the side.
    let in_pieces = control.digest == DigestKind::Blake3;
    let rows = CheckpointRows::new(refs.clone(), rows, (!in_pieces).then_some(control.digest));
    let plan = driver::Plan {
        inputs: &refs,
        base: base.is_some(),
        rows: &rows,
        out_dtypes: &out_dtypes,
        kernel: &*built.kernel,
        thresholds: &thresholds,
        options,
        output: match &output {
            Destination::File(file) => &**file as &dyn driver::Sink,
            Destination::Memory(tensors) => tensors,
        },
    };
    let streamed = plan.run(control, in_pieces)?;
    let mut hashes = streamed.hashes;
    if let Some(rule) = &options.nm {
        let written: Vec<OutputTensor> = (0..count)
            .map(|t| OutputTensor {
                dtype: out_dtypes[t],
                ..OutputTensor::from(rows.entry(t, 0))
            })
            .collect();
        match &output {
            Destination::File(file) => crate::nm_check::check_written(
                file.target(),
                &|i, offset, buf| file.read(i, offset, buf),
                &written,
                rule,
                control,
            )?,
            Destination::Memory(tensors) => crate::nm_check::check_written(
                Path::new(memory::RESULT),
                &|i, offset, buf| {
                    tensors.read(i, offset, buf);
                    Ok(())
                },
                &written,
                rule,
                control,
            )?,
        }
    }

    for input in &refs {
        input.check_unchanged()?;
    }
    let (outputs, in_memory) = match output {
        Destination::File(mut output) => {
            let mut metadata = provenance::common_metadata(&refs);
            provenance::record(&mut metadata, "merge", recipe, &describe(&hashes));
            *output.metadata_mut() = metadata;
            (output.commit()?, Vec::new())
        }
        Destination::Memory(tensors) => (
            Vec::new(),
            out_tensors.into_iter().zip(tensors.into_bytes()).collect(),
        ),
    };
    let skip = usize::from(base.is_some());
    let base_digest = base.map(|_| hashes.remove(0));
    let task_vectors = match base.is_some() && options.mask_policy == MaskPolicy::Base {
        true => candidates
            .iter()
            .zip(&streamed.norms)
            .map(|(c, &(total, dropped))| TaskVectorNorm {
                input: c.path().to_path_buf(),
                norm: total.sqrt(),
                dropped: dropped.sqrt(),
            })
            .collect(),
        false => Vec::new(),
    };
    let report = MergeReport {
        outputs,
        method: options.method.name().to_string(),
        base: base.map(|b| b.path().to_path_buf()),
        base_digest,
        inputs: candidates.iter().map(|c| c.path().to_path_buf()).collect(),
        input_digest: hashes,
        weights: built.weights,
        tensors: count,
        averaged,
        bytes,
        mask_policy: options.mask_policy,
        mask_differences: streamed
            .mask_differences
            .into_iter()
            .map(|(name, d)| (name, d[skip..].to_vec()))
            .collect(),
        task_vectors,
    };
    Ok((report, in_memory))
}

/// Where a merge writes.
enum Destination {
    File(Box<Output>),
    Memory(memory::Tensors),
}

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod pinned;
#[cfg(test)]
mod tests;
