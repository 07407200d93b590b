//! Comparing sparsity masks (`soup check-mask`).
//!
//! The mask of a float tensor is `w != 0` (so `-0.0` is zero). Each input's
//! mask is packed into bits (see [`crate::dtype::pack_mask`]) piece by piece;
//! the packed bits are compared with the reference's and hashed into a
//! fingerprint, so no mask is ever held whole in memory.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{align, Checkpoint, TensorEntry};
use crate::error::{Error, Result};
use crate::select::Selection;
use crate::stream::{drive, CheckpointRows, Control, Lagged, Piece, Units};

/// The comparison of one tensor's masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorMask {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub numel: u64,
    /// Zeros in the reference.
    pub zeros: u64,
    /// Fraction of zeros in the reference.
    pub sparsity: f64,
    /// Positions where at least one input's mask differs from the reference.
    pub differing: u64,
    /// Per input (in the order given), positions differing from the reference.
    pub differing_per_input: Vec<u64>,
    /// sha256 of the reference's bit-packed mask.
    pub reference_fingerprint: Fingerprint,
    /// sha256 of each input's bit-packed mask.
    pub fingerprints: Vec<Fingerprint>,
}

/// The fingerprint of a mask: the sha256 of its bit-packed form. Held as
/// its 32 bytes; shown, serialised and parsed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = Error;
    fn from_str(text: &str) -> Result<Fingerprint> {
        let bad = || Error::invalid(format!("`{text}` is not 64 hex digits"));
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The result of comparing masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskReport {
    /// The checkpoint the others were compared with.
    pub reference: PathBuf,
    /// Whether the reference is one of the inputs (the first) or a separate
    /// parent given with `--reference`.
    pub reference_is_input: bool,
    /// The inputs compared with it.
    pub inputs: Vec<PathBuf>,
    /// One entry per compared float tensor, in storage order.
    pub tensors: Vec<TensorMask>,
    /// Float tensors compared.
    pub compared: usize,
    /// Zeros / elements over the compared tensors that have at least one zero
    /// in the reference (the pruned tensors).
    pub sparsity_of_pruned: f64,
    /// Elements of the tensors counted in `sparsity_of_pruned`.
    pub pruned_elements: u64,
    /// Zeros / elements over all compared tensors.
    pub sparsity_of_compared: f64,
    /// Whether every mask equals the reference's.
    pub identical: bool,
}

/// Compares the masks of `inputs` with `reference` (or with the first input
/// when `reference` is `None`), over the float tensors that `selection`
/// picks. All checkpoints must share names, shapes and dtypes.
pub fn check_masks(
    inputs: &[Checkpoint],
    reference: Option<&Checkpoint>,
    selection: &Selection,
    control: &Control,
) -> Result<MaskReport> {
    let mut all: Vec<&Checkpoint> = Vec::with_capacity(inputs.len() + 1);
    let reference_is_input = reference.is_none();
    all.extend(reference.or(inputs.first()));
    let skip = usize::from(reference_is_input);
    all.extend(inputs.iter().skip(skip));
    let rows: Vec<Vec<&TensorEntry>> = align(&all)?
        .into_iter()
        .filter(|row| row[0].float_type().is_some() && selection.matches(&row[0].name))
        .collect();
    let n = all.len();
    let count = rows.len();
    // Per tensor: flat arrays, one slot per tensor (and input), rather
    // than a vector per tensor.
    let mut zeros = vec![0u64; count];
    let mut differing = vec![0u64; count];
    let mut per_input = vec![0u64; count * n];
    let rows = CheckpointRows::new(all.clone(), rows, None);
    // Fingerprints are sequential per input, so they lag one window behind:
    // while the threads pack window w (memory-bound), they also hash the
    // masks of window w - 1 (compute-bound), one lagged task per input.
    // Per input: the hash of the tensor in progress, and the finished
    // digests (32 bytes per tensor).
    let hashers: Vec<Mutex<Fingerprints>> = (0..n).map(|_| Mutex::default()).collect();
    let fingerprint = |k: usize, window: &[Piece], packed: &[PackedPiece]| {
        let mut f = hashers[k].lock().expect("not poisoned");
        for (piece, p) in window.iter().zip(packed) {
            if piece.first {
                f.current = Some(Sha256::new());
            }
            f.current.as_mut().expect("started").update(p.mask(k));
            if piece.last {
                let digest = f.current.take().expect("started").finalize();
                f.done.push(Fingerprint(digest.into()));
            }
        }
    };
    drive(
        &rows,
        control,
        "comparing masks",
        Units::Pieces,
        |_| Ok(()),
        |piece, _, _| Ok(pack_piece(&rows, n, piece)),
        Lagged {
            tasks: n,
            run: fingerprint,
        },
        |window, packed| {
            for (piece, p) in window.iter().zip(packed) {
                let t = piece.tensor;
                zeros[t] += p.zeros;
                differing[t] += p.differing;
                for (total, d) in per_input[t * n..(t + 1) * n].iter_mut().zip(&p.per_input) {
                    *total += d;
                }
            }
            Ok(())
        },
    )?;
    let digests: Vec<Vec<Fingerprint>> = hashers
        .into_iter()
        .map(|f| f.into_inner().expect("not poisoned").done)
        .collect();
    let firsts: Vec<&TensorEntry> = (0..count).map(|t| rows.entry(t, 0)).collect();
    // The rows of every input are not needed for the report.
    drop(rows);

    // Position of the first input among `all` (after a separate reference).
    let first_input = 1 - skip;
    let mut tensors: Vec<TensorMask> = Vec::with_capacity(count);
    for (t, entry) in firsts.into_iter().enumerate() {
        let numel = entry.numel() as u64;
        tensors.push(TensorMask {
            name: entry.name.clone(),
            shape: entry.shape.clone(),
            numel,
            zeros: zeros[t],
            sparsity: ratio(zeros[t], numel),
            differing: differing[t],
            differing_per_input: per_input[t * n + first_input..(t + 1) * n].to_vec(),
            reference_fingerprint: digests[0][t],
            fingerprints: digests[first_input..].iter().map(|d| d[t]).collect(),
        });
    }
    let pruned: Vec<&TensorMask> = tensors.iter().filter(|t| t.zeros > 0).collect();
    let pruned_zeros: u64 = pruned.iter().map(|t| t.zeros).sum();
    let pruned_elements: u64 = pruned.iter().map(|t| t.numel).sum();
    let all_zeros: u64 = tensors.iter().map(|t| t.zeros).sum();
    let all_elements: u64 = tensors.iter().map(|t| t.numel).sum();
    Ok(MaskReport {
        reference: all[0].path().to_path_buf(),
        reference_is_input,
        inputs: inputs.iter().map(|c| c.path().to_path_buf()).collect(),
        compared: tensors.len(),
        identical: tensors.iter().all(|t| t.differing == 0),
        tensors,
        sparsity_of_pruned: ratio(pruned_zeros, pruned_elements),
        pruned_elements,
        sparsity_of_compared: ratio(all_zeros, all_elements),
    })
}

/// Packs every checkpoint's mask of `piece` and counts the positions where
/// each differs from the reference's (the first checkpoint's).
fn pack_piece(rows: &CheckpointRows, n: usize, piece: &Piece) -> PackedPiece {
    let ty = rows
        .entry(piece.tensor, 0)
        .float_type()
        .expect("float rows only");
    let stride = piece.elems.len().div_ceil(8);
    let mut masks = vec![0u8; stride * n];
    let mut nonzero_ref = 0;
    for (k, bits) in masks.chunks_exact_mut(stride.max(1)).enumerate().take(n) {
        let nz = crate::dtype::pack_mask_into(rows.bytes(k, piece), ty, bits);
        if k == 0 {
            nonzero_ref = nz;
        }
    }
    let mask = |k: usize| &masks[k * stride..(k + 1) * stride];
    let mut per = vec![0u64; n];
    let mut any = 0u64;
    // Eight mask bytes (64 positions) at a time.
    let words = stride / 8;
    let word =
        |m: &[u8], i: usize| u64::from_le_bytes(m[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let reference = mask(0);
    for i in 0..words {
        let r = word(reference, i);
        let mut or = 0u64;
        for (k, p) in per.iter_mut().enumerate().skip(1) {
            let x = r ^ word(mask(k), i);
            *p += x.count_ones() as u64;
            or |= x;
        }
        any += or.count_ones() as u64;
    }
    for (i, &r) in reference.iter().enumerate().skip(words * 8) {
        let mut or = 0u8;
        for (k, p) in per.iter_mut().enumerate().skip(1) {
            let x = r ^ mask(k)[i];
            *p += x.count_ones() as u64;
            or |= x;
        }
        any += or.count_ones() as u64;
    }
    PackedPiece {
        zeros: piece.elems.len() as u64 - nonzero_ref,
        stride,
        masks,
        per_input: per,
        differing: any,
    }
}

/// The mask fingerprints of one input.
#[derive(Default)]
struct Fingerprints {
    current: Option<Sha256>,
    done: Vec<Fingerprint>,
}

/// One piece's masks (bit-packed, per checkpoint, in one buffer) and counts.
struct PackedPiece {
    /// Bytes per checkpoint's mask in `masks`.
    stride: usize,
    masks: Vec<u8>,
    zeros: u64,
    per_input: Vec<u64>,
    differing: u64,
}

impl PackedPiece {
    /// Checkpoint `k`'s packed mask.
    fn mask(&self, k: usize) -> &[u8] {
        &self.masks[k * self.stride..(k + 1) * self.stride]
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints are 32 bytes in memory and the same 64 hex digits as
    /// before in JSON, both ways.
    #[test]
    fn fingerprints_serialise_as_hex_and_parse_back() {
        let f = Fingerprint(Sha256::digest(b"mask").into());
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            format!("\"{}\"", hex::encode(Sha256::digest(b"mask")))
        );
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), f);
        assert_eq!(f.to_string().parse::<Fingerprint>().unwrap(), f);
        for bad in ["", "zz", &"0".repeat(63), &"g".repeat(64), &"é".repeat(32)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
        assert_eq!(std::mem::size_of::<Fingerprint>(), 32);
    }

    mod hex {
        pub fn encode(bytes: impl AsRef<[u8]>) -> String {
            crate::hash::hex(bytes.as_ref())
        }
    }
}
