//! `soup mask extract`: a model's masks written as a mask file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{digest_text, mask_metadata, PackedInfo};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::select::Selection;
use crate::stream::Control;

/// One mask of a written mask file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskFileTensor {
    /// Tensor name.
    pub name: String,
    /// Shape of the masked tensor.
    pub shape: Vec<usize>,
    /// Elements.
    pub numel: u64,
    /// Zeros (cleared bits).
    pub zeros: u64,
    /// `sha256:<hex>` of the packed bits (the fingerprint `check-mask`
    /// prints).
    pub digest: String,
}

/// What a command that writes a mask file did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskFileReport {
    /// The inputs.
    pub inputs: Vec<PathBuf>,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// The masks written, in storage order.
    pub tensors: Vec<MaskFileTensor>,
    /// Bytes of packed bits written.
    pub packed_bytes: u64,
    /// Bytes of tensor data of the masked tensors in the (first) input.
    pub input_bytes: u64,
}

/// Sequential digests of packed masks, fed pieces in stream order.
#[derive(Default)]
pub(super) struct PackedDigests {
    current: Option<Sha256>,
    pub(super) done: Vec<String>,
}

impl PackedDigests {
    pub(super) fn feed(&mut self, first: bool, last: bool, bits: &[u8]) {
        if first {
            self.current = Some(Sha256::new());
        }
        let h = self.current.as_mut().expect("a tensor in progress");
        h.update(bits);
        if last {
            let h = self.current.take().expect("a tensor in progress");
            self.done.push(digest_text(h.finalize().into()));
        }
    }
}

/// The metadata of a mask file being written (digests still zero, of
/// their final length) and its packed layout.
pub(super) fn packed_layout(
    tensors: &[(String, Vec<usize>, Dtype)],
) -> (Vec<OutputTensor>, BTreeMap<String, PackedInfo>) {
    let placeholder = digest_text([0; 32]);
    let layout = tensors
        .iter()
        .map(|(name, shape, _)| OutputTensor {
            name: name.clone(),
            dtype: Dtype::U8,
            shape: vec![shape.iter().product::<usize>().div_ceil(8)],
        })
        .collect();
    let infos = tensors
        .iter()
        .map(|(name, shape, dtype)| {
            let info = PackedInfo {
                shape: shape.clone(),
                dtype: crate::dtype::name(*dtype),
                digest: placeholder.clone(),
            };
            (name.clone(), info)
        })
        .collect();
    (layout, infos)
}

/// Writes the masks of the float tensors of `input` that `selection` picks
/// as a mask file at `target` (see the module documentation of
/// [`crate::MaskSource`]'s format).
pub fn extract_mask(
    input: &Checkpoint,
    target: &Path,
    selection: &Selection,
    options: &OutputOptions,
    control: &Control,
) -> Result<MaskFileReport> {
    let tensors = input.tensors();
    let mut slot = vec![None; tensors.len()];
    let mut chosen = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        if t.float_type().is_some() && selection.matches(&t.name) {
            slot[i] = Some(chosen.len());
            chosen.push((t.name.clone(), t.shape.clone(), t.dtype));
        }
    }
    if chosen.is_empty() {
        return Err(Error::NothingSelected {
            path: input.path().to_path_buf(),
            purpose: "for the mask",
        });
    }
    let (layout, mut infos) = packed_layout(&chosen);
    let name = input.path().display().to_string();
    let recipe = serde_json::json!({
        "include": selection.include_patterns(),
        "exclude": selection.exclude_patterns(),
    });
    let mut metadata = mask_metadata(&infos);
    provenance::record(
        &mut metadata,
        "mask-extract",
        recipe.clone(),
        &[(name.clone(), control.digest.placeholder())],
    );
    let files: Vec<&Path> = input.files_with_index().collect();
    let mut output = Output::create(target, &layout, metadata, &files, options)?;
    let mut digests = PackedDigests::default();
    let mut zeros = vec![0u64; chosen.len()];
    let sha = crate::rewrite::stream(
        input,
        &|_| 0,
        control,
        "extracting masks",
        true,
        |_| Ok(()),
        |p, _, _| -> Result<Option<(Vec<u8>, u64)>> {
            let Some(o) = slot[p.tensor] else {
                return Ok(None);
            };
            let t = &tensors[p.tensor];
            let bytes = input.bytes(t, t.byte_range(&p.elems));
            let mut bits = vec![0u8; p.elems.len().div_ceil(8)];
            let ones =
                crate::dtype::pack_mask_into(bytes, t.float_type().expect("float"), &mut bits);
            // Pieces start on multiples of 8 elements.
            output.write(o, p.elems.start / 8, &bits)?;
            Ok(Some((bits, p.elems.len() as u64 - ones)))
        },
        |p, r| {
            if let (Some(o), Some((bits, z))) = (slot[p.tensor], r) {
                zeros[o] += z;
                digests.feed(p.first, p.last, &bits);
            }
        },
    )?
    .expect("hashed");
    for ((name, _, _), digest) in chosen.iter().zip(&digests.done) {
        infos.get_mut(name).expect("listed").digest = digest.clone();
    }
    let mut metadata = mask_metadata(&infos);
    provenance::record(&mut metadata, "mask-extract", recipe, &[(name, sha)]);
    *output.metadata_mut() = metadata;
    input.check_unchanged()?;
    let outputs = output.commit()?;
    let report_tensors: Vec<MaskFileTensor> = chosen
        .iter()
        .zip(&zeros)
        .zip(digests.done)
        .map(|(((name, shape, _), &z), digest)| MaskFileTensor {
            name: name.clone(),
            numel: shape.iter().product::<usize>() as u64,
            shape: shape.clone(),
            zeros: z,
            digest,
        })
        .collect();
    Ok(MaskFileReport {
        inputs: vec![input.path().to_path_buf()],
        outputs,
        packed_bytes: layout.iter().map(|t| t.nbytes() as u64).sum(),
        input_bytes: tensors
            .iter()
            .zip(&slot)
            .filter(|(_, s)| s.is_some())
            .map(|(t, _)| t.nbytes() as u64)
            .sum(),
        tensors: report_tensors,
    })
}
