//! Comparing sparsity masks (`soup check-mask`).
//!
//! The mask of a float tensor is `w != 0` (so `-0.0` is zero). Each input's
//! mask is packed into bits (see [`crate::dtype::pack_mask`]) piece by piece;
//! the packed bits are compared with the reference's and hashed into a
//! fingerprint, so no mask is ever held whole in memory.
//!
//! Masks are usually equal, so an input's mask is hashed only from the first
//! piece where it differs from the reference's: until then its hash would be
//! the reference's, which is where it starts from (the reference's hash at
//! the start of the window, kept aside between windows, fed the reference's
//! pieces of the window before that piece). An input whose mask equals the
//! reference's over the whole tensor gets the reference's fingerprint.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{align, Checkpoint, TensorEntry};
use crate::error::{Error, Result};
use crate::maskfile::{MaskSource, MaskTensor};
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
/// picks. All checkpoints must share names, shapes and dtypes. Without a
/// reference it needs two inputs; a selection of no float tensor is
/// [`Error::NothingSelected`].
pub fn check_masks(
    inputs: &[Checkpoint],
    reference: Option<&Checkpoint>,
    selection: &Selection,
    control: &Control,
) -> Result<MaskReport> {
    compare(inputs, reference, None, selection, control)
}

/// [`check_masks`] against a reference that may be a mask file: every
/// selected float tensor of the inputs must have a mask of its shape there.
pub fn check_masks_against(
    inputs: &[Checkpoint],
    reference: &MaskSource,
    selection: &Selection,
    control: &Control,
) -> Result<MaskReport> {
    match reference.is_mask_file() {
        false => compare(
            inputs,
            Some(reference.checkpoint()),
            None,
            selection,
            control,
        ),
        true => compare(inputs, None, Some(reference), selection, control),
    }
}

/// [`check_masks`], or with `packed` against a mask file (its masks then
/// stand in for those of checkpoint 0, which is the first input again).
fn compare(
    inputs: &[Checkpoint],
    reference: Option<&Checkpoint>,
    packed: Option<&MaskSource>,
    selection: &Selection,
    control: &Control,
) -> Result<MaskReport> {
    let mut all: Vec<&Checkpoint> = Vec::with_capacity(inputs.len() + 1);
    let reference_is_input = reference.is_none() && packed.is_none();
    if inputs.is_empty() || (reference_is_input && inputs.len() < 2) {
        return Err(Error::invalid(
            "a mask check needs two checkpoints, or one and a reference",
        ));
    }
    all.extend(reference.or(inputs.first()));
    let skip = usize::from(reference_is_input);
    all.extend(inputs.iter().skip(skip));
    let rows: Vec<Vec<&TensorEntry>> = align(&all)?
        .into_iter()
        .filter(|row| row[0].float_type().is_some() && selection.matches(&row[0].name))
        .collect();
    if rows.is_empty() {
        return Err(Error::NothingSelected {
            path: inputs[0].path().to_path_buf(),
            purpose: "for comparison",
        });
    }
    let packed: Option<(&MaskSource, Vec<MaskTensor>)> = match packed {
        None => None,
        Some(source) => {
            let masks = rows
                .iter()
                .map(|row| source.find(&row[0].name, &row[0].shape, inputs[0].path()))
                .collect::<Result<_>>()?;
            Some((source, masks))
        }
    };
    let n = all.len();
    let count = rows.len();
    // Per tensor: flat arrays, one slot per tensor (and input), rather
    // than a vector per tensor.
    let mut zeros = vec![0u64; count];
    let mut differing = vec![0u64; count];
    let mut per_input = vec![0u64; count * n];
    let mut rows = CheckpointRows::new(all.clone(), rows, None);
    if packed.is_some() {
        rows = rows.with_extra(vec![1; count]);
    }
    // Fingerprints are sequential per input, so they lag one window behind:
    // while the threads pack window w (memory-bound), they also hash the
    // masks of window w - 1 (compute-bound), one lagged task per input.
    // Per input: the hash of the tensor in progress, and the finished
    // digests (32 bytes per tensor).
    let hashers: Vec<Mutex<Fingerprints>> = (0..n).map(|_| Mutex::default()).collect();
    // The reference's hash of the tensor in progress at the start of the
    // window whose fingerprints are being hashed (set between windows).
    let window_start: Mutex<Option<Sha256>> = Mutex::default();
    let fingerprint = |k: usize, window: &[Piece], packed: &[PackedPiece]| {
        let mut f = hashers[k].lock().expect("not poisoned");
        for (i, (piece, p)) in window.iter().zip(packed).enumerate() {
            if piece.first {
                f.current = (k == 0).then(Sha256::new);
            }
            if f.current.is_none() && p.per_input[k] > 0 {
                f.current = Some(reference_hash(window, packed, i, &window_start));
            }
            if let Some(h) = f.current.as_mut() {
                h.update(p.mask(k));
            }
            if piece.last {
                let digest = f.current.take().map(|h| Fingerprint(h.finalize().into()));
                f.done.push(digest);
            }
        }
    };
    drive(
        &rows,
        control,
        "comparing masks",
        Units::Pieces,
        |_| Ok(()),
        |piece, _, _| {
            let reference = packed.as_ref().map(|(s, m)| (*s, &m[piece.tensor]));
            Ok(pack_piece(&rows, n, piece, reference))
        },
        Lagged {
            tasks: n,
            run: fingerprint,
        },
        |window, packed| {
            // No task runs now, and the reference's fingerprint task has
            // hashed every window before this one.
            *window_start.lock().expect("not poisoned") =
                hashers[0].lock().expect("not poisoned").current.clone();
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
    let mut hashed = hashers
        .into_iter()
        .map(|f| f.into_inner().expect("not poisoned").done);
    let reference_digests: Vec<Fingerprint> = hashed
        .next()
        .expect("a reference")
        .into_iter()
        .map(|d| d.expect("the reference is always hashed"))
        .collect();
    let mut digests: Vec<Vec<Fingerprint>> = vec![reference_digests];
    for done in hashed {
        let own = done.into_iter().zip(&digests[0]);
        digests.push(own.map(|(d, r)| d.unwrap_or(*r)).collect());
    }
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
        reference: match &packed {
            Some((source, _)) => source.path().to_path_buf(),
            None => all[0].path().to_path_buf(),
        },
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
/// each differs from the reference's (the first checkpoint's, or the mask
/// `reference` when given).
fn pack_piece(
    rows: &CheckpointRows,
    n: usize,
    piece: &Piece,
    reference: Option<(&MaskSource, &MaskTensor)>,
) -> PackedPiece {
    let ty = rows
        .entry(piece.tensor, 0)
        .float_type()
        .expect("float rows only");
    let stride = piece.elems.len().div_ceil(8);
    let mut masks = vec![0u8; stride * n];
    let mut nonzero_ref = 0;
    for (k, bits) in masks.chunks_exact_mut(stride.max(1)).enumerate().take(n) {
        let nz = match reference {
            Some((source, mask)) if k == 0 => {
                let nz = source.pack_into(mask, piece.elems.clone(), bits);
                source.release(mask, piece.elems.clone());
                nz
            }
            _ => crate::dtype::pack_mask_into(rows.bytes(k, piece), ty, bits),
        };
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

/// The reference's hash (checkpoint 0) of the tensor of piece `i` of
/// `window`, up to that piece: from the tensor's first piece when it is in
/// the window, else from `window_start`.
fn reference_hash(
    window: &[Piece],
    packed: &[PackedPiece],
    i: usize,
    window_start: &Mutex<Option<Sha256>>,
) -> Sha256 {
    let (mut h, from) = match window[..=i].iter().rposition(|p| p.first) {
        Some(first) => (Sha256::new(), first),
        None => {
            let start = window_start.lock().expect("not poisoned");
            (start.clone().expect("a tensor in progress"), 0)
        }
    };
    for p in &packed[from..i] {
        h.update(p.mask(0));
    }
    h
}

/// The mask fingerprints of one input.
#[derive(Default)]
struct Fingerprints {
    /// The hash of the tensor in progress; `None` for an input other than
    /// the reference while its mask has equalled the reference's.
    current: Option<Sha256>,
    /// Per finished tensor: the fingerprint, or `None` where the mask
    /// equals the reference's.
    done: Vec<Option<Fingerprint>>,
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

    /// Fingerprints are the sha256 of each whole packed mask whether an
    /// input's mask equals the reference's throughout, differs from its
    /// first piece on, or first differs in a later piece of a later window
    /// (where its hash starts from the reference's), with the reference
    /// first among the inputs or separate, and in any stream layout.
    #[test]
    fn fingerprints_are_the_hash_of_each_whole_mask() {
        use crate::dtype::FloatType;
        use crate::output::write_test_checkpoint;
        use crate::stream::StreamOptions;
        let dir = tempfile::tempdir().unwrap();
        let n = 1000;
        let base: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 0 { 0.0 } else { i as f32 })
            .collect();
        // Input k differs from the reference at `flips[k]` (per tensor).
        let flips: [&[usize]; 4] = [&[], &[], &[0, 500], &[999]];
        let mut paths = Vec::new();
        for (k, f) in flips.iter().enumerate() {
            let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = ["a", "b"]
                .iter()
                .enumerate()
                .map(|(t, name)| {
                    let mut w = base.clone();
                    for &i in f.iter() {
                        let i = (i + 7 * t) % n;
                        w[i] = if w[i] == 0.0 { 1.0 } else { 0.0 };
                    }
                    let bytes = w.iter().flat_map(|v| v.to_le_bytes()).collect();
                    (name.to_string(), safetensors::Dtype::F32, vec![n], bytes)
                })
                .collect();
            let path = dir.path().join(format!("c{k}.safetensors"));
            write_test_checkpoint(&path, &tensors);
            paths.push(path);
        }
        let open = |p: &PathBuf| Checkpoint::open(p).unwrap();
        let expected = |c: &Checkpoint| -> Vec<Fingerprint> {
            c.tensors()
                .iter()
                .map(|t| {
                    let mut bits = Vec::new();
                    crate::dtype::pack_mask(c.data(t), FloatType::F32, &mut bits);
                    Fingerprint(Sha256::digest(&bits).into())
                })
                .collect()
        };
        for (budget, piece) in [(64 << 20, 1 << 18), (4000, 64), (900, 8), (10_000, 200)] {
            let control = Control {
                options: StreamOptions {
                    budget_bytes: budget,
                    piece_elems: piece,
                },
                ..Control::default()
            };
            let inputs: Vec<Checkpoint> = paths.iter().map(open).collect();
            let report = check_masks(&inputs, None, &Selection::default(), &control).unwrap();
            let reference = open(&paths[0]);
            let reports = [
                report,
                check_masks(
                    &inputs[1..],
                    Some(&reference),
                    &Selection::default(),
                    &control,
                )
                .unwrap(),
            ];
            for (r, report) in reports.iter().enumerate() {
                let want: Vec<Vec<Fingerprint>> = inputs[r..].iter().map(expected).collect();
                for (t, tensor) in report.tensors.iter().enumerate() {
                    let what = format!("budget {budget}, piece {piece}, {}", tensor.name);
                    assert_eq!(
                        tensor.reference_fingerprint,
                        expected(&reference)[t],
                        "{what}"
                    );
                    let got: Vec<Fingerprint> = tensor.fingerprints.clone();
                    let want: Vec<Fingerprint> = want.iter().map(|w| w[t]).collect();
                    assert_eq!(got, want, "{what}");
                }
                // Input 1 equals the reference; inputs 2 and 3 do not.
                let f = &report.tensors[1].fingerprints;
                assert_eq!(f[1 - r], report.tensors[1].reference_fingerprint);
                assert_ne!(f[2 - r], f[1 - r]);
                assert_ne!(f[3 - r], f[1 - r]);
            }
        }
    }

    mod hex {
        pub fn encode(bytes: impl AsRef<[u8]>) -> String {
            crate::hash::hex(bytes.as_ref())
        }
    }
}
