//! Merging checkpoints out of core: every floating-point tensor is combined
//! by the [`MergeMethod`] (a uniform or weighted mean today), with the mask
//! check of `soup check-mask` done in the same pass.
//!
//! The method is a seam: the streaming, mask checks, integer policy and
//! output are shared, and a method only says how one block of every
//! input's values becomes the output's block (a kernel). A method that
//! needs a base model (task arithmetic, TIES) adds a variant and a kernel.
//!
//! The means are computed incrementally, `m += (x_k - m) * w_k / W_k` with
//! `W_k` the running weight sum, in f32 (f64 for F64 tensors). Unlike
//! `sum / n`, this returns identical inputs bit for bit and keeps zeros that
//! all inputs share exactly, which is what a soup of candidates with one
//! mask needs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{align, Checkpoint, TensorEntry};
use crate::dtype::{Accumulator, FloatType};
use crate::error::{Error, Result};
use crate::hash::DigestKind;
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Piece, Units};
use crate::tree_hash::{self, PieceHasher, Subtree};
use safetensors::Dtype;

/// What to do when the inputs' masks differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskPolicy {
    /// Refuse to merge (the default): a soup of differently pruned models
    /// is not sparse.
    #[default]
    Refuse,
    /// Plain mean: the result is non-zero wherever any input is.
    Union,
    /// Zero wherever any input is zero.
    Intersect,
}

/// What to do with integer and bool tensors (never averaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntPolicy {
    /// They must be equal in all inputs (the default).
    #[default]
    Equal,
    /// Take the first input's.
    First,
}

/// How the inputs' float tensors are combined.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// The plain mean (a uniform soup).
    #[default]
    Uniform,
    /// A weighted mean: one non-negative weight per input, normalised to
    /// sum 1.
    Weighted(Vec<f64>),
}

impl MergeMethod {
    /// The method's name, as recorded in the recipe.
    pub fn name(&self) -> &'static str {
        match self {
            MergeMethod::Uniform => "uniform",
            MergeMethod::Weighted(_) => "weighted",
        }
    }

    /// The normalised weight of each of `inputs` inputs; an error for
    /// weights that do not fit.
    pub fn weights(&self, inputs: usize) -> Result<Vec<f64>> {
        match self {
            MergeMethod::Uniform => normalise_weights(None, inputs),
            MergeMethod::Weighted(w) => normalise_weights(Some(w), inputs),
        }
    }
}

/// How one block of every input's values becomes the output's block.
#[derive(Debug, Clone)]
enum Kernel {
    /// The incremental mean `m += (x_k - m) * c_k`, seeded with input
    /// `seed` (the first with positive weight); inputs with `c_k = 0` are
    /// skipped.
    Mean { coefficients: Vec<f64>, seed: usize },
}

impl Kernel {
    fn new(method: &MergeMethod, inputs: usize) -> Result<(Kernel, Vec<f64>)> {
        match method {
            MergeMethod::Uniform | MergeMethod::Weighted(_) => {
                let weights = method.weights(inputs)?;
                let mut running = 0.0;
                let coefficients = weights
                    .iter()
                    .map(|&w| {
                        running += w;
                        if w > 0.0 {
                            w / running
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let seed = weights.iter().position(|&w| w > 0.0).expect("positive sum");
                Ok((Kernel::Mean { coefficients, seed }, weights))
            }
        }
    }

    /// Combines `block(k)` of every input (elements of `in_type`) into
    /// `acc`, using `x` as scratch.
    fn combine<'b, A: Accumulator>(
        &self,
        block: impl Fn(usize) -> &'b [u8],
        in_type: FloatType,
        acc: &mut [A],
        x: &mut Vec<A>,
    ) {
        match self {
            Kernel::Mean { coefficients, seed } => {
                let len = acc.len();
                A::decode_into(block(*seed), in_type, acc);
                for (k, &c) in coefficients.iter().enumerate() {
                    if k == *seed || c <= 0.0 {
                        continue;
                    }
                    x.resize(len, A::ZERO);
                    A::fold_encoded(acc, block(k), in_type, A::from_f64(c), x);
                }
            }
        }
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

/// The outcome of a merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeReport {
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Input paths.
    pub inputs: Vec<PathBuf>,
    /// Content hash of each input.
    pub input_digest: Vec<String>,
    /// Normalised weights.
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
    /// where its mask differs from the first input's (only under the union
    /// and intersect policies; refuse stops at the first).
    pub mask_differences: Vec<(String, Vec<u64>)>,
}

/// Validates and normalises merge weights.
pub fn normalise_weights(weights: Option<&[f64]>, inputs: usize) -> Result<Vec<f64>> {
    let Some(w) = weights else {
        return Ok(vec![1.0 / inputs as f64; inputs]);
    };
    if w.len() != inputs {
        return Err(Error::invalid(format!(
            "{} weights given for {inputs} inputs",
            w.len()
        )));
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(Error::invalid(format!(
            "weights must be finite and non-negative, got {bad}"
        )));
    }
    let largest = w.iter().copied().fold(0.0, f64::max);
    if largest <= 0.0 {
        return Err(Error::invalid("weights sum to zero"));
    }
    let sum: f64 = w.iter().sum();
    if sum.is_finite() {
        return Ok(w.iter().map(|v| v / sum).collect());
    }
    // The sum overflowed (1e308 + 1e308): scale by the largest weight first.
    let scaled: f64 = w.iter().map(|v| v / largest).sum();
    Ok(w.iter().map(|v| v / largest / scaled).collect())
}

/// Averages `inputs` into `target`. See the module documentation.
pub fn merge(
    inputs: &[Checkpoint],
    target: &Path,
    options: &MergeOptions,
    control: &Control,
) -> Result<MergeReport> {
    if inputs.is_empty() {
        return Err(Error::invalid("nothing to merge"));
    }
    let refs: Vec<&Checkpoint> = inputs.iter().collect();
    let rows = align(&refs)?;
    let (kernel, weights) = Kernel::new(&options.method, inputs.len())?;
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

    let input_paths: Vec<&Path> = inputs.iter().flat_map(|c| c.files_with_index()).collect();
    let mut recipe = serde_json::json!({
        "method": options.method.name(),
        "weights": weights,
        "mask_policy": options.mask_policy,
        "int_policy": options.int_policy,
        "dtype": options.dtype.map(|t| crate::dtype::name(t.dtype())),
    });
    recipe
        .as_object_mut()
        .expect("object")
        .extend(options.recipe_extra.clone());
    if let Some(rule) = &options.nm {
        recipe["nm"] = rule.pattern().to_string().into();
    }
    let placeholder = control.digest.placeholder();
    let describe = |hashes: &[String]| -> Vec<(String, String)> {
        inputs
            .iter()
            .zip(hashes)
            .map(|(c, h)| (c.path().display().to_string(), h.clone()))
            .collect()
    };
    let mut metadata = provenance::common_metadata(&refs);
    provenance::record(
        &mut metadata,
        "merge",
        recipe.clone(),
        &describe(&vec![placeholder; inputs.len()]),
    );
    let mut output = Output::create(
        target,
        &out_tensors,
        metadata,
        &input_paths,
        &options.output,
    )?;
    // The output keeps its own compact copy of the layout.
    let bytes = out_tensors.iter().map(|t| t.nbytes() as u64).sum();
    let out_dtypes: Vec<Dtype> = out_tensors.iter().map(|t| t.dtype).collect();
    drop(out_tensors);

    // BLAKE3 is hashed inside each piece's work, while its bytes are in
    // the cache (see crate::tree_hash); SHA-256 must see each input in
    // order, so it runs on the side.
    let in_pieces = control.digest == DigestKind::Blake3;
    let rows = CheckpointRows::new(refs.clone(), rows, (!in_pieces).then_some(control.digest));
    let plan = Plan {
        inputs,
        rows: &rows,
        out_dtypes: &out_dtypes,
        kernel: &kernel,
        options,
        output: &output,
    };
    let (hashes, mask_differences) = plan.run(control, in_pieces)?;
    if let Some(rule) = &options.nm {
        let written: Vec<OutputTensor> = (0..count)
            .map(|t| OutputTensor {
                dtype: out_dtypes[t],
                ..OutputTensor::from(rows.entry(t, 0))
            })
            .collect();
        crate::nm_check::check_written(&output, &written, rule, control)?;
    }

    let mut metadata = provenance::common_metadata(&refs);
    provenance::record(&mut metadata, "merge", recipe, &describe(&hashes));
    *output.metadata_mut() = metadata;
    for input in inputs {
        input.check_unchanged()?;
    }
    let outputs = output.commit()?;
    Ok(MergeReport {
        outputs,
        inputs: inputs.iter().map(|c| c.path().to_path_buf()).collect(),
        input_digest: hashes,
        weights,
        tensors: count,
        averaged,
        bytes,
        mask_policy: options.mask_policy,
        mask_differences,
    })
}

/// Per tensor whose masks differ: its name and, per input, the positions
/// where that input's mask differs from the first input's.
type MaskDifferences = Vec<(String, Vec<u64>)>;

struct Plan<'a> {
    inputs: &'a [Checkpoint],
    rows: &'a CheckpointRows<'a>,
    /// The output's dtype of each row.
    out_dtypes: &'a [Dtype],
    kernel: &'a Kernel,
    options: &'a MergeOptions,
    output: &'a Output,
}

impl Plan<'_> {
    /// Streams every window through the driver: merges its pieces while
    /// the inputs' bytes are hashed on the side, then checks masks. Written
    /// data is handed to the disk window by window (see
    /// [`Output::sync_data`]), so the final fsync finds little left to do.
    fn run(&self, control: &Control, in_pieces: bool) -> Result<(Vec<String>, MaskDifferences)> {
        let n = self.inputs.len();
        let rows = self.rows;
        let mut trees = TreeDigests::new(n);
        // Per row and input, one flat array.
        let mut diffs = vec![0u64; self.out_dtypes.len() * n];
        let (sync_request, sync_wanted) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::scope(|scope| -> Result<()> {
            // Hands what is written so far to the disk while the merge goes
            // on, so that the disk and the CPUs work at the same time. On an
            // early return `sync_request` is dropped and this thread ends.
            let syncer = scope.spawn(move || -> Result<()> {
                while sync_wanted.recv().is_ok() {
                    self.output.sync_data()?;
                }
                Ok(())
            });
            drive(
                rows,
                control,
                "merging",
                Units::Pieces,
                |_| Ok(()),
                |piece, _, _| self.merge_piece(rows, piece, in_pieces),
                no_lag(),
                |window, merged| {
                    for (piece, merged) in window.iter().zip(merged) {
                        let t = piece.tensor;
                        for (total, d) in diffs[t * n..(t + 1) * n].iter_mut().zip(&merged.diffs) {
                            *total += d;
                        }
                        if in_pieces {
                            trees.add(rows.entry(t, 0), piece, &merged.subtrees);
                        }
                    }
                    if self.options.mask_policy == MaskPolicy::Refuse {
                        self.refuse_on_difference(window, &diffs)?;
                    }
                    // Busy syncer: the next request covers this window too.
                    let _ = sync_request.try_send(());
                    Ok(())
                },
            )?;
            drop(sync_request);
            syncer.join().expect("syncer does not panic")
        })?;
        let hashes = match in_pieces {
            true => trees.digests(&rows.name_order(0)),
            false => rows.digests().expect("hashed"),
        };
        let differences = diffs
            .chunks_exact(n)
            .enumerate()
            .filter(|(_, d)| d.iter().any(|&x| x > 0))
            .map(|(t, d)| (rows.entry(t, 0).name.clone(), d.to_vec()))
            .collect();
        Ok((hashes, differences))
    }

    fn refuse_on_difference(&self, window: &[Piece], diffs: &[u64]) -> Result<()> {
        let n = self.inputs.len();
        for piece in window.iter().filter(|p| p.last) {
            let d = &diffs[piece.tensor * n..(piece.tensor + 1) * n];
            if let Some(k) = d.iter().position(|&x| x > 0) {
                return Err(Error::MasksDiffer {
                    tensor: self.rows.entry(piece.tensor, 0).name.clone(),
                    positions: d[k],
                    input: self.inputs[k].path().to_path_buf(),
                    reference: self.inputs[0].path().to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Merges one piece and writes it; returns, per input, the positions
    /// where its mask differs from the first input's, and with `hash` the
    /// BLAKE3 subtrees of the piece.
    fn merge_piece(&self, rows: &CheckpointRows, piece: &Piece, hash: bool) -> Result<Merged> {
        let row = rows.row(piece.tensor);
        let n = self.inputs.len();
        let bytes: Vec<&[u8]> = (0..n).map(|k| rows.bytes(k, piece)).collect();
        let range = row[0].byte_range(&piece.elems);
        let offset = range.start;
        let mut hashers = Vec::new();
        if hash {
            let t = row[0];
            let prefix = crate::hash::tensor_prefix(&t.name, t.dtype, &t.shape);
            let range = range.start as u64..range.end as u64;
            hashers = (0..n)
                .map(|k| {
                    let data = self.inputs[k].data(row[k]);
                    (
                        data,
                        PieceHasher::new(&prefix, data.len() as u64, range.clone()),
                    )
                })
                .collect();
        }
        let finish = |hashers: Vec<(&[u8], PieceHasher)>, diffs: Vec<u64>| Merged {
            diffs,
            subtrees: hashers
                .into_iter()
                .map(|(data, mut h)| {
                    h.feed(data, u64::MAX);
                    h.finish()
                })
                .collect(),
        };
        let Some(in_type) = row[0].float_type() else {
            if self.options.int_policy == IntPolicy::Equal {
                if let Some(k) = (1..n).find(|&k| bytes[k] != bytes[0]) {
                    return Err(Error::IntegersDiffer {
                        tensor: row[0].name.clone(),
                        dtype: crate::dtype::name(row[0].dtype),
                        first: self.inputs[0].path().to_path_buf(),
                        other: self.inputs[k].path().to_path_buf(),
                    });
                }
            }
            self.output.write(piece.tensor, offset, bytes[0])?;
            return Ok(finish(hashers, vec![0; n]));
        };
        let out_type = crate::dtype::FloatType::of(self.out_dtypes[piece.tensor])
            .expect("float output for float input");
        let diffs = SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let diffs = if in_type == FloatType::F64 {
                self.mean::<f64>(
                    &bytes,
                    (in_type, out_type),
                    (offset, &mut hashers),
                    &mut scratch.f64,
                    &mut scratch.out,
                )
            } else {
                self.mean::<f32>(
                    &bytes,
                    (in_type, out_type),
                    (offset, &mut hashers),
                    &mut scratch.f32,
                    &mut scratch.out,
                )
            };
            let out_offset = piece.elems.start * out_type.size();
            self.output
                .write(piece.tensor, out_offset, &scratch.out)
                .map(|()| diffs)
        })?;
        Ok(finish(hashers, diffs))
    }

    /// The (weighted) mean of one piece of every input, encoded into `out`;
    /// returns, per input, the positions where its mask differs from the
    /// first input's. Works in spans whose bytes, over all inputs, fit in
    /// the L2 cache: each input's hasher reads the span first (from
    /// memory), then blocks that stay in the L1 cache are packed into
    /// masks, compared, and folded into the running mean one input at a
    /// time. `at` is the piece's byte offset in its tensor.
    fn mean<A: Accumulator>(
        &self,
        bytes: &[&[u8]],
        (in_type, out_type): (FloatType, FloatType),
        (at, hashers): (usize, &mut [(&[u8], PieceHasher)]),
        scratch: &mut Blocks<A>,
        out: &mut Vec<u8>,
    ) -> Vec<u64> {
        let n = bytes.len();
        let size = in_type.size();
        let elems = bytes[0].len() / size;
        let intersect = self.options.mask_policy == MaskPolicy::Intersect;
        let mut diffs = vec![0u64; n];
        scratch.masks.resize_with(n, Vec::new);
        // Every byte is written below: only a larger buffer is zeroed.
        out.resize(elems * out_type.size(), 0);
        let span = (SPAN_BYTES / (n * size)).max(BLOCK) / BLOCK * BLOCK;
        let mut start = 0;
        while start < elems {
            if start % span == 0 {
                let until = (at + (start + span).min(elems) * size) as u64;
                for (data, hasher) in hashers.iter_mut() {
                    hasher.feed(data, until);
                }
            }
            let end = (start + BLOCK).min(elems);
            let len = end - start;
            let block = |k: usize| &bytes[k][start * size..end * size];
            for (k, mask) in scratch.masks.iter_mut().enumerate() {
                mask.resize(len.div_ceil(8), 0);
                crate::dtype::pack_mask_into(block(k), in_type, mask);
            }
            let (reference, others) = scratch.masks.split_first().expect("inputs");
            for (d, mask) in diffs[1..].iter_mut().zip(others) {
                *d += xor_count(reference, mask);
            }
            scratch.acc.resize(len, A::ZERO);
            self.kernel
                .combine(block, in_type, &mut scratch.acc, &mut scratch.x);
            if intersect {
                for (i, m) in scratch.acc.iter_mut().enumerate() {
                    let alive = scratch
                        .masks
                        .iter()
                        .all(|mask| mask[i / 8] >> (i % 8) & 1 == 1);
                    if !alive {
                        *m = A::ZERO;
                    }
                }
            }
            let dst = &mut out[start * out_type.size()..end * out_type.size()];
            A::encode_into(&scratch.acc, out_type, dst);
            start = end;
        }
        diffs
    }
}

/// Elements per block of [`Plan::mean`]: a few KiB per input, so a block of
/// every input stays in the L1/L2 cache. A multiple of 8 (whole mask bytes).
const BLOCK: usize = 2048;

/// Input bytes per span of [`Plan::mean`], all inputs together: hashed
/// first, then averaged while still in the L2 cache (at least 1 MiB per
/// core on the machines soup targets).
const SPAN_BYTES: usize = 512 << 10;

/// What merging one piece returns: per input, the positions where its mask
/// differs from the first input's, and (when BLAKE3 is hashed in the
/// pieces) the piece's subtrees.
struct Merged {
    diffs: Vec<u64>,
    subtrees: Vec<Vec<Subtree>>,
}

/// Each input's BLAKE3 digests, rebuilt from the subtrees of its pieces
/// (handed over in stream order).
struct TreeDigests {
    /// Per input, the subtrees of the tensor in progress.
    open: Vec<Vec<Subtree>>,
    /// Per input, the digest of each finished tensor, in row order (32
    /// bytes each).
    done: Vec<Vec<[u8; 32]>>,
}

impl TreeDigests {
    fn new(inputs: usize) -> TreeDigests {
        TreeDigests {
            open: vec![Vec::new(); inputs],
            done: vec![Vec::new(); inputs],
        }
    }

    /// Adds the subtrees of `piece` of tensor `t`, one list per input.
    fn add(&mut self, t: &TensorEntry, piece: &Piece, subtrees: &[Vec<Subtree>]) {
        for (k, subtrees) in subtrees.iter().enumerate() {
            self.open[k].extend_from_slice(subtrees);
            if piece.last {
                let prefix = crate::hash::tensor_prefix(&t.name, t.dtype, &t.shape);
                let total = (prefix.len() + t.nbytes()) as u64;
                let hash = tree_hash::combine(&self.open[k], total);
                self.done[k].push(*hash.as_bytes());
                self.open[k].clear();
            }
        }
    }

    /// The checkpoint digest of each input; `name_order` lists the rows
    /// in name order.
    fn digests(&self, name_order: &[u32]) -> Vec<String> {
        self.done
            .iter()
            .map(|done| {
                let sorted = name_order.iter().map(|&r| &done[r as usize]);
                crate::hash::combine_raw(DigestKind::Blake3, sorted)
            })
            .collect()
    }
}

/// Reusable buffers of one thread, so pieces allocate nothing.
#[derive(Default)]
struct Scratch {
    f32: Blocks<f32>,
    f64: Blocks<f64>,
    out: Vec<u8>,
}

#[derive(Default)]
struct Blocks<A> {
    acc: Vec<A>,
    x: Vec<A>,
    masks: Vec<Vec<u8>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Positions where two packed masks differ.
fn xor_count(a: &[u8], b: &[u8]) -> u64 {
    let mut count = 0u64;
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
        count += (x ^ y).count_ones() as u64;
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        count += (x ^ y).count_ones() as u64;
    }
    count
}

#[cfg(test)]
mod tests;
