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
use crate::error::Result;
use crate::hash::hex;
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
    pub reference_fingerprint: String,
    /// sha256 of each input's bit-packed mask.
    pub fingerprints: Vec<String>,
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
    let mut zeros = vec![0u64; rows.len()];
    let mut differing = vec![0u64; rows.len()];
    let mut per_input = vec![vec![0u64; n]; rows.len()];
    let rows = CheckpointRows::new(all.clone(), rows, None);
    // Fingerprints are sequential per input, so they lag one window behind:
    // while the threads pack window w (memory-bound), they also hash the
    // masks of window w - 1 (compute-bound), one lagged task per input.
    // Per input: the hash of the tensor in progress, and the finished
    // digests (32 bytes per tensor; hex only in the report).
    let hashers: Vec<Mutex<Fingerprints>> = (0..n).map(|_| Mutex::default()).collect();
    let fingerprint = |k: usize, window: &[Piece], packed: &[PackedPiece]| {
        let mut f = hashers[k].lock().expect("not poisoned");
        for (piece, p) in window.iter().zip(packed) {
            if piece.first {
                f.current = Some(Sha256::new());
            }
            f.current.as_mut().expect("started").update(&p.masks[k]);
            if piece.last {
                let digest = f.current.take().expect("started").finalize();
                f.done.push(digest.into());
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
                zeros[piece.tensor] += p.zeros;
                differing[piece.tensor] += p.differing;
                for (t, p) in per_input[piece.tensor].iter_mut().zip(&p.per_input) {
                    *t += p;
                }
            }
            Ok(())
        },
    )?;
    let digests: Vec<Vec<[u8; 32]>> = hashers
        .into_iter()
        .map(|f| f.into_inner().expect("not poisoned").done)
        .collect();
    let rows: Vec<&TensorEntry> = (0..zeros.len()).map(|t| rows.entry(t, 0)).collect();

    // Position of the first input among `all` (after a separate reference).
    let first_input = 1 - skip;
    let tensors: Vec<TensorMask> = rows
        .iter()
        .enumerate()
        .map(|(t, entry)| {
            let numel = entry.numel() as u64;
            let fp: Vec<String> = digests.iter().map(|d| hex(&d[t])).collect();
            TensorMask {
                name: entry.name.clone(),
                shape: entry.shape.clone(),
                numel,
                zeros: zeros[t],
                sparsity: ratio(zeros[t], numel),
                differing: differing[t],
                differing_per_input: per_input[t][first_input..].to_vec(),
                reference_fingerprint: fp[0].clone(),
                fingerprints: fp[first_input..].to_vec(),
            }
        })
        .collect();
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
    let mut masks = Vec::with_capacity(n);
    let mut nonzero_ref = 0;
    for k in 0..n {
        let mut bits = Vec::new();
        let bytes = rows.bytes(k, piece);
        let nz = crate::dtype::pack_mask(bytes, ty, &mut bits);
        if k == 0 {
            nonzero_ref = nz;
        }
        masks.push(bits);
    }
    let mut per = vec![0u64; n];
    let mut any = 0u64;
    // Eight mask bytes (64 positions) at a time.
    let words = masks[0].len() / 8;
    let word =
        |m: &[u8], i: usize| u64::from_le_bytes(m[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    for i in 0..words {
        let r = word(&masks[0], i);
        let mut or = 0u64;
        for (k, m) in masks.iter().enumerate().skip(1) {
            let x = r ^ word(m, i);
            per[k] += x.count_ones() as u64;
            or |= x;
        }
        any += or.count_ones() as u64;
    }
    for i in words * 8..masks[0].len() {
        let r = masks[0][i];
        let mut or = 0u8;
        for (k, m) in masks.iter().enumerate().skip(1) {
            let x = r ^ m[i];
            per[k] += x.count_ones() as u64;
            or |= x;
        }
        any += or.count_ones() as u64;
    }
    PackedPiece {
        zeros: piece.elems.len() as u64 - nonzero_ref,
        masks,
        per_input: per,
        differing: any,
    }
}

/// The mask fingerprints of one input.
#[derive(Default)]
struct Fingerprints {
    current: Option<Sha256>,
    done: Vec<[u8; 32]>,
}

/// One piece's masks (bit-packed, per checkpoint) and counts.
struct PackedPiece {
    masks: Vec<Vec<u8>>,
    zeros: u64,
    per_input: Vec<u64>,
    differing: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
