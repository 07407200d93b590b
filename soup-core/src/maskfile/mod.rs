//! Masks as files of their own, and one reader for masks wherever they come
//! from.
//!
//! A mask file is a safetensors file holding, for each masked tensor of a
//! model, one U8 tensor of the same name: its mask (`w != 0`) packed into
//! bits, one bit per weight, in row-major order, least significant bit
//! first (element `i` is bit `i % 8` of byte `i / 8`; the last byte is
//! padded with zero bits). That is numpy's flat
//! `np.packbits(w.ravel() != 0, bitorder="little")`, read back with
//! `np.unpackbits(bits, count=w.size, bitorder="little").reshape(shape)`.
//! The packed tensor is 1-D, `ceil(numel / 8)` bytes: about 1/32 of an F32
//! model.
//!
//! The header's metadata says what it is: [`MASK_FORMAT_KEY`] holds
//! [`MASK_FORMAT`], `mask.bitorder` holds `little`, and `mask.tensors`
//! holds a JSON object giving, per tensor, the original `shape`, `dtype`
//! and `digest` (`sha256:<hex>` of the packed bits: the fingerprint `soup
//! check-mask` prints). Opening a mask file checks all of it, the digests
//! and the padding bits included, so a truncated or edited file is refused.
//!
//! [`MaskSource`] reads masks from a model (the mask of each float tensor)
//! or from a mask file alike, piece by piece, so every command that takes
//! a reference mask accepts either.

mod combine;
mod extract;
mod torch_prune;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::stream::{Piece, Rows};

pub use combine::{combine_masks, Combination, CombineOptions, CombineReport};
pub use extract::{extract_mask, MaskFileReport, MaskFileTensor};
pub use torch_prune::{from_torch_prune, to_torch_prune, TorchPruneReport, TorchPruneTensor};

/// The metadata key that marks a mask file.
pub const MASK_FORMAT_KEY: &str = "mask.format";
/// The value of [`MASK_FORMAT_KEY`] in the mask files this version writes
/// and reads.
pub const MASK_FORMAT: &str = "soup-packed-bits-v1";
const BITORDER_KEY: &str = "mask.bitorder";
const BITORDER: &str = "little";
const TENSORS_KEY: &str = "mask.tensors";

/// What a mask file records about one tensor's mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackedInfo {
    shape: Vec<usize>,
    dtype: String,
    digest: String,
}

/// The metadata keys of a mask file holding `tensors`.
fn mask_metadata(tensors: &BTreeMap<String, PackedInfo>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MASK_FORMAT_KEY.to_string(), MASK_FORMAT.to_string()),
        (BITORDER_KEY.to_string(), BITORDER.to_string()),
        (
            TENSORS_KEY.to_string(),
            serde_json::to_string(tensors).expect("serialisable"),
        ),
    ])
}

/// The digest of packed bits as a mask file records it.
fn digest_text(hash: [u8; 32]) -> String {
    format!("sha256:{}", crate::hash::hex(&hash))
}

/// One tensor's mask in a [`MaskSource`].
#[derive(Debug, Clone, Copy)]
pub struct MaskTensor<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// The shape of the masked tensor (not of the packed bits).
    pub shape: &'a [usize],
    /// The element type of the masked tensor.
    pub dtype: Dtype,
    entry: &'a TensorEntry,
    /// `None` for packed bits.
    float: Option<FloatType>,
}

impl MaskTensor<'_> {
    /// Elements of the masked tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes read for one element (rounded up to one for packed bits).
    pub(crate) fn elem_bytes(&self) -> usize {
        self.float.map_or(1, FloatType::size)
    }

    /// The stored bytes that hold elements `elems`.
    fn byte_range(&self, elems: &Range<usize>) -> Range<usize> {
        match self.float {
            Some(_) => self.entry.byte_range(elems),
            None => elems.start / 8..elems.end.div_ceil(8),
        }
    }
}

/// Where masks come from: a model (the mask of each float tensor is
/// `w != 0`) or a mask file (see the module documentation).
#[derive(Debug)]
pub struct MaskSource {
    checkpoint: Checkpoint,
    /// Per tensor of a mask file (storage order): the shape and element
    /// type of the tensor it masks.
    packed: Option<Vec<(Vec<usize>, Dtype)>>,
}

impl MaskSource {
    /// Opens `path` (a model or a mask file) as [`Checkpoint::open`] does,
    /// and checks a mask file completely (see [`MaskSource::new`]).
    pub fn open(path: impl AsRef<Path>) -> Result<MaskSource> {
        MaskSource::new(Checkpoint::open(path)?)
    }

    /// Reads masks from `checkpoint`: a mask file when its metadata has
    /// [`MASK_FORMAT_KEY`], a model otherwise. A mask file must hold
    /// exactly the packed tensors its metadata lists, of the right
    /// lengths, with zero padding bits and the recorded digests.
    pub fn new(checkpoint: Checkpoint) -> Result<MaskSource> {
        let Some(format) = checkpoint.metadata().get(MASK_FORMAT_KEY) else {
            return Ok(MaskSource {
                checkpoint,
                packed: None,
            });
        };
        let path = checkpoint.path().to_path_buf();
        let bad = |reason: String| Error::format(&path, reason);
        if format != MASK_FORMAT {
            return Err(bad(format!(
                "mask file format `{format}` is not `{MASK_FORMAT}`, the one this version reads"
            )));
        }
        let order = checkpoint.metadata().get(BITORDER_KEY);
        if order.map(String::as_str) != Some(BITORDER) {
            return Err(bad(format!(
                "mask file bit order {order:?} is not `{BITORDER}`"
            )));
        }
        let listed: BTreeMap<String, PackedInfo> = checkpoint
            .metadata()
            .get(TENSORS_KEY)
            .ok_or_else(|| bad(format!("mask file without `{TENSORS_KEY}` metadata")))
            .and_then(|text| {
                serde_json::from_str(text)
                    .map_err(|e| bad(format!("mask file metadata `{TENSORS_KEY}`: {e}")))
            })?;
        let mut shapes = Vec::with_capacity(checkpoint.tensors().len());
        for t in checkpoint.tensors() {
            let info = listed.get(&t.name).ok_or_else(|| {
                Error::tensor(&path, &t.name, "not listed in the mask file's metadata")
            })?;
            let numel = crate::header::element_count(&info.shape)
                .ok_or_else(|| Error::tensor(&path, &t.name, "mask shape overflows"))?;
            if t.dtype != Dtype::U8 || t.shape != [numel.div_ceil(8)] {
                return Err(Error::tensor(
                    &path,
                    &t.name,
                    format!(
                        "packed mask is {:?} {:?}, expected U8 [{}] for shape {:?}",
                        t.dtype,
                        t.shape,
                        numel.div_ceil(8),
                        info.shape
                    ),
                ));
            }
            let data = checkpoint.data(t);
            if numel % 8 != 0 && data.last().is_some_and(|b| b >> (numel % 8) != 0) {
                return Err(Error::tensor(&path, &t.name, "padding bits are not zero"));
            }
            let digest = digest_text(Sha256::digest(data).into());
            if digest != info.digest {
                return Err(Error::tensor(
                    &path,
                    &t.name,
                    format!(
                        "packed bits have digest {digest}, the metadata says {}",
                        info.digest
                    ),
                ));
            }
            checkpoint.release(t, 0..t.nbytes());
            let dtype = crate::dtype::parse(&info.dtype)
                .ok()
                .filter(|d| FloatType::of(*d).is_some())
                .ok_or_else(|| {
                    Error::tensor(
                        &path,
                        &t.name,
                        format!("masked dtype `{}` is not a float type", info.dtype),
                    )
                })?;
            shapes.push((info.shape.clone(), dtype));
        }
        if let Some(missing) = listed.keys().find(|n| checkpoint.get(n).is_none()) {
            return Err(Error::tensor(
                &path,
                missing,
                "listed in the mask file's metadata but not stored",
            ));
        }
        Ok(MaskSource {
            checkpoint,
            packed: Some(shapes),
        })
    }

    /// Whether this is a mask file (rather than a model).
    pub fn is_mask_file(&self) -> bool {
        self.packed.is_some()
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        self.checkpoint.path()
    }

    /// The underlying checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    fn at(&self, i: usize) -> Option<MaskTensor<'_>> {
        let entry = &self.checkpoint.tensors()[i];
        match &self.packed {
            Some(shapes) => Some(MaskTensor {
                name: &entry.name,
                shape: &shapes[i].0,
                dtype: shapes[i].1,
                entry,
                float: None,
            }),
            None => entry.float_type().map(|ft| MaskTensor {
                name: &entry.name,
                shape: &entry.shape,
                dtype: entry.dtype,
                entry,
                float: Some(ft),
            }),
        }
    }

    /// Every mask it holds, in storage order: each float tensor of a
    /// model, each packed tensor of a mask file.
    pub fn tensors(&self) -> impl Iterator<Item = MaskTensor<'_>> {
        (0..self.checkpoint.tensors().len()).filter_map(|i| self.at(i))
    }

    /// The mask of tensor `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<MaskTensor<'_>> {
        let entry = self.checkpoint.get(name)?;
        // `get` hands out a reference into `tensors()`: its index follows
        // from the addresses.
        let base = self.checkpoint.tensors().as_ptr() as usize;
        let i = (entry as *const TensorEntry as usize - base) / std::mem::size_of::<TensorEntry>();
        self.at(i)
    }

    /// The mask of the tensor `name` of `input`, which has shape `shape`:
    /// an error naming both files when it has none or one of another
    /// shape.
    pub fn find(&self, name: &str, shape: &[usize], input: &Path) -> Result<MaskTensor<'_>> {
        let m = self
            .get(name)
            .ok_or_else(|| match self.checkpoint.get(name) {
                Some(t) => Error::Mismatch(format!(
                    "tensor `{name}` of the mask {} is {:?}, not a float tensor",
                    self.path().display(),
                    t.dtype
                )),
                None => Error::NotInMask {
                    tensor: name.to_string(),
                    input: input.to_path_buf(),
                    mask: self.path().to_path_buf(),
                },
            })?;
        if m.shape != shape {
            return Err(Error::Mismatch(format!(
                "tensor `{name}` has shape {shape:?} in {} but {:?} in the mask {}",
                input.display(),
                m.shape,
                self.path().display()
            )));
        }
        Ok(m)
    }

    /// Packs the mask of elements `elems` of `t` into `out` (exactly
    /// `elems.len().div_ceil(8)` bytes, least significant bit first) and
    /// returns how many are set.
    pub fn pack_into(&self, t: &MaskTensor, elems: Range<usize>, out: &mut [u8]) -> u64 {
        let bytes = self.checkpoint.bytes(t.entry, t.byte_range(&elems));
        if let Some(ft) = t.float {
            return crate::dtype::pack_mask_into(bytes, ft, out);
        }
        let len = elems.len();
        if elems.start % 8 == 0 {
            out.copy_from_slice(&bytes[..len.div_ceil(8)]);
        } else {
            out.fill(0);
            let shift = elems.start % 8;
            for j in 0..len {
                let bit = (bytes[(shift + j) / 8] >> ((shift + j) % 8)) & 1;
                out[j / 8] |= bit << (j % 8);
            }
        }
        if len % 8 != 0 {
            if let Some(last) = out.last_mut() {
                *last &= (1u8 << (len % 8)) - 1;
            }
        }
        out.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Calls `f(j, kept)` for every element `elems.start + j` of `t`.
    pub fn for_each(&self, t: &MaskTensor, elems: Range<usize>, mut f: impl FnMut(usize, bool)) {
        let len = elems.len();
        if let Some(ft) = t.float {
            let bytes = self.checkpoint.bytes(t.entry, t.byte_range(&elems));
            return crate::dtype::for_each_nonzero(bytes, ft, f);
        }
        let mut bits = vec![0u8; len.div_ceil(8)];
        self.pack_into(t, elems, &mut bits);
        for j in 0..len {
            f(j, bits[j / 8] >> (j % 8) & 1 != 0);
        }
    }

    /// Tells the kernel that `elems` of `t` will be read soon.
    pub fn prefetch(&self, t: &MaskTensor, elems: Range<usize>) {
        self.checkpoint.prefetch(t.entry, t.byte_range(&elems));
    }

    /// Drops the mapped pages of `elems` of `t` (see [`Checkpoint::release`]).
    pub fn release(&self, t: &MaskTensor, elems: Range<usize>) {
        self.checkpoint.release(t.entry, t.byte_range(&elems));
    }
}

/// Rows of masks for the streaming driver: row `r` is one tensor's mask in
/// every source.
pub(crate) struct MaskRows<'a> {
    pub(crate) sources: &'a [MaskSource],
    pub(crate) rows: Vec<Vec<MaskTensor<'a>>>,
}

impl Rows for MaskRows<'_> {
    fn rows(&self) -> usize {
        self.rows.len()
    }
    fn numel(&self, row: usize) -> usize {
        self.rows[row][0].numel()
    }
    fn elem_bytes(&self, row: usize) -> usize {
        self.rows[row].iter().map(MaskTensor::elem_bytes).sum()
    }
    fn prefetch(&self, piece: &Piece) {
        for (s, t) in self.sources.iter().zip(&self.rows[piece.tensor]) {
            s.prefetch(t, piece.elems.clone());
        }
    }
    fn release(&self, piece: &Piece) {
        for (s, t) in self.sources.iter().zip(&self.rows[piece.tensor]) {
            s.release(t, piece.elems.clone());
        }
    }
}
