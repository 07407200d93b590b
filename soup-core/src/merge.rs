//! Averaging checkpoints out of core: uniform or weighted means of every
//! floating-point tensor, with the mask check of `soup check-mask` done in
//! the same pass.
//!
//! The mean is computed incrementally, `m += (x_k - m) * w_k / W_k` with
//! `W_k` the running weight sum, in f32 (f64 for F64 tensors). Unlike
//! `sum / n`, this returns identical inputs bit for bit and keeps zeros that
//! all inputs share exactly, which is what a soup of candidates with one
//! mask needs.

use std::cell::RefCell;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{align, Checkpoint, TensorEntry};
use crate::dtype::{Accumulator, FloatType};
use crate::error::{Error, Result};
use crate::hash::TensorHasher;
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::stream::{windows, Control, Piece};

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

/// Parameters of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// One weight per input (normalised to sum 1); `None` for a uniform mean.
    pub weights: Option<Vec<f64>>,
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
    let weights = normalise_weights(options.weights.as_deref(), inputs.len())?;
    // Coefficient of each input in the incremental mean; the first input
    // with positive weight seeds the accumulator.
    let mut running = 0.0;
    let coefficients: Vec<f64> = weights
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

    let input_paths: Vec<&Path> = inputs.iter().flat_map(|c| c.files()).collect();
    let mut recipe = serde_json::json!({
        "weights": weights,
        "mask_policy": options.mask_policy,
        "int_policy": options.int_policy,
        "dtype": options.dtype.map(|t| crate::dtype::name(t.dtype())),
    });
    recipe
        .as_object_mut()
        .expect("object")
        .extend(options.recipe_extra.clone());
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

    let plan = Plan {
        inputs,
        rows: &rows,
        out_tensors: &out_tensors,
        coefficients: &coefficients,
        seed,
        options,
        output: &output,
    };
    let (hashes, mask_differences) = plan.run(control)?;

    let mut metadata = provenance::common_metadata(&refs);
    provenance::record(&mut metadata, "merge", recipe, &describe(&hashes));
    *output.metadata_mut() = metadata;
    let outputs = output.commit()?;
    Ok(MergeReport {
        outputs,
        inputs: inputs.iter().map(|c| c.path().to_path_buf()).collect(),
        input_digest: hashes,
        weights,
        tensors: rows.len(),
        averaged: rows.iter().filter(|r| r[0].float_type().is_some()).count(),
        bytes: out_tensors.iter().map(|t| t.nbytes() as u64).sum(),
        mask_policy: options.mask_policy,
        mask_differences,
    })
}

/// Per tensor whose masks differ: its name and, per input, the positions
/// where that input's mask differs from the first input's.
type MaskDifferences = Vec<(String, Vec<u64>)>;

struct Plan<'a> {
    inputs: &'a [Checkpoint],
    rows: &'a [Vec<&'a TensorEntry>],
    out_tensors: &'a [OutputTensor],
    coefficients: &'a [f64],
    seed: usize,
    options: &'a MergeOptions,
    output: &'a Output,
}

/// Per-input running content hash.
#[derive(Default)]
struct HashState {
    kind: crate::hash::DigestKind,
    current: Option<TensorHasher>,
    done: Vec<(String, String)>,
}

impl Plan<'_> {
    /// Streams every window: merges its pieces while hashing the inputs'
    /// bytes, then checks masks and releases pages. Written data is handed
    /// to the disk window by window (see [`Output::sync_data`]), so the
    /// final fsync finds little left to do.
    fn run(&self, control: &Control) -> Result<(Vec<String>, MaskDifferences)> {
        let n = self.inputs.len();
        let sizes: Vec<(usize, usize)> = self
            .rows
            .iter()
            .map(|row| {
                let per_elem = row[0].dtype.bitsize().div_ceil(8);
                (row[0].numel(), per_elem * n)
            })
            .collect();
        let total: u64 = self.inputs.iter().map(|c| c.data_bytes()).sum();
        let mut diffs: Vec<Vec<u64>> = vec![vec![0; n]; self.rows.len()];
        let hash_states: Vec<Mutex<HashState>> = (0..n)
            .map(|_| {
                Mutex::new(HashState {
                    kind: control.digest,
                    ..HashState::default()
                })
            })
            .collect();
        control.progress.start("merging", total);
        let all_windows = windows(&sizes, control.options);
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
            for window in &all_windows {
                control.check()?;
                let merged = self.run_window(window, &hash_states);
                for (piece, piece_diffs) in window.iter().zip(merged?) {
                    for (total, d) in diffs[piece.tensor].iter_mut().zip(piece_diffs) {
                        *total += d;
                    }
                }
                if self.options.mask_policy == MaskPolicy::Refuse {
                    self.refuse_on_difference(window, &diffs)?;
                }
                self.for_each_range(window, |k, t, r| self.inputs[k].release(t, r));
                let bytes: usize = window
                    .iter()
                    .map(|p| p.elems.len() * sizes[p.tensor].1)
                    .sum();
                control.progress.advance(bytes as u64);
                // Busy syncer: the next request covers this window too.
                let _ = sync_request.try_send(());
            }
            drop(sync_request);
            syncer.join().expect("syncer does not panic")
        })?;
        control.progress.finish();
        let hashes = hash_states
            .into_iter()
            .map(|s| {
                let s = s.into_inner().expect("not poisoned");
                crate::hash::combine_with(
                    s.kind,
                    s.done.iter().map(|(a, b)| (a.as_str(), b.as_str())),
                )
            })
            .collect();
        let differences = self
            .rows
            .iter()
            .zip(diffs)
            .filter(|(_, d)| d.iter().any(|&x| x > 0))
            .map(|(row, d)| (row[0].name.clone(), d))
            .collect();
        Ok((hashes, differences))
    }

    /// Hashes the window's bytes of every input and merges its pieces, on
    /// all threads. The tasks are taken longest first (one hash task per
    /// input, then the pieces), so the threads finish together.
    fn run_window(
        &self,
        window: &[Piece],
        hash_states: &[Mutex<HashState>],
    ) -> Result<Vec<Vec<u64>>> {
        let n = self.inputs.len();
        let results: Vec<Mutex<Option<Result<Vec<u64>>>>> =
            window.iter().map(|_| Mutex::new(None)).collect();
        crate::stream::run_tasks(n + window.len(), |task| {
            if task < n {
                let mut state = hash_states[task].lock().expect("not poisoned");
                self.hash_window(task, window, &mut state);
            } else {
                let result = self.merge_piece(&window[task - n]);
                *results[task - n].lock().expect("not poisoned") = Some(result);
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .expect("not poisoned")
                    .expect("every piece ran")
            })
            .collect()
    }

    /// Calls `f(input, tensor, byte range)` for every input's bytes of
    /// every piece of `window`.
    fn for_each_range(&self, window: &[Piece], f: impl Fn(usize, &TensorEntry, Range<usize>)) {
        for piece in window {
            for (k, entry) in self.rows[piece.tensor].iter().enumerate() {
                f(k, entry, entry.byte_range(&piece.elems));
            }
        }
    }

    fn hash_window(&self, k: usize, window: &[Piece], state: &mut HashState) {
        for piece in window {
            let t = self.rows[piece.tensor][k];
            if piece.first {
                state.current = Some(TensorHasher::with_kind(
                    state.kind, &t.name, t.dtype, &t.shape,
                ));
            }
            let bytes = self.inputs[k].bytes(t, t.byte_range(&piece.elems));
            state.current.as_mut().expect("started").update(bytes);
            if piece.last {
                let digest = state.current.take().expect("started").finish();
                state.done.push((t.name.clone(), digest));
            }
        }
    }

    fn refuse_on_difference(&self, window: &[Piece], diffs: &[Vec<u64>]) -> Result<()> {
        for piece in window.iter().filter(|p| p.last) {
            let d = &diffs[piece.tensor];
            if let Some(k) = d.iter().position(|&x| x > 0) {
                return Err(Error::Mismatch(format!(
                    "masks differ: tensor `{}` has {} positions where {} differs from {}; \
                     see `soup check-mask`, or merge anyway with --mask-policy union|intersect",
                    self.rows[piece.tensor][0].name,
                    d[k],
                    self.inputs[k].path().display(),
                    self.inputs[0].path().display(),
                )));
            }
        }
        Ok(())
    }

    /// Merges one piece and writes it; returns, per input, the positions
    /// where its mask differs from the first input's.
    fn merge_piece(&self, piece: &Piece) -> Result<Vec<u64>> {
        let row = &self.rows[piece.tensor];
        let n = self.inputs.len();
        let bytes: Vec<&[u8]> = row
            .iter()
            .enumerate()
            .map(|(k, t)| self.inputs[k].bytes(t, t.byte_range(&piece.elems)))
            .collect();
        let offset = row[0].byte_range(&piece.elems).start;
        let Some(in_type) = row[0].float_type() else {
            if self.options.int_policy == IntPolicy::Equal {
                if let Some(k) = (1..n).find(|&k| bytes[k] != bytes[0]) {
                    return Err(Error::Mismatch(format!(
                        "tensor `{}` ({:?}) differs between {} and {}: integer and bool tensors \
                         are never averaged (use --int-policy first to take the first input's)",
                        row[0].name,
                        row[0].dtype,
                        self.inputs[0].path().display(),
                        self.inputs[k].path().display()
                    )));
                }
            }
            self.output.write(piece.tensor, offset, bytes[0])?;
            return Ok(vec![0; n]);
        };
        let out_type = crate::dtype::FloatType::of(self.out_tensors[piece.tensor].dtype)
            .expect("float output for float input");
        let diffs = SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let diffs = if in_type == FloatType::F64 {
                self.mean::<f64>(
                    &bytes,
                    in_type,
                    out_type,
                    &mut scratch.f64,
                    &mut scratch.out,
                )
            } else {
                self.mean::<f32>(
                    &bytes,
                    in_type,
                    out_type,
                    &mut scratch.f32,
                    &mut scratch.out,
                )
            };
            let out_offset = piece.elems.start * out_type.size();
            self.output
                .write(piece.tensor, out_offset, &scratch.out)
                .map(|()| diffs)
        })?;
        Ok(diffs)
    }

    /// The (weighted) mean of one piece of every input, encoded into `out`;
    /// returns, per input, the positions where its mask differs from the
    /// first input's. Works in blocks that stay in the L1 cache: pack every
    /// input's mask, count differences, then fold the inputs into the
    /// running mean one at a time.
    fn mean<A: Accumulator>(
        &self,
        bytes: &[&[u8]],
        in_type: FloatType,
        out_type: FloatType,
        scratch: &mut Blocks<A>,
        out: &mut Vec<u8>,
    ) -> Vec<u64> {
        let n = bytes.len();
        let size = in_type.size();
        let elems = bytes[0].len() / size;
        let intersect = self.options.mask_policy == MaskPolicy::Intersect;
        let coefficients: Vec<A> = self.coefficients.iter().map(|&c| A::from_f64(c)).collect();
        let mut diffs = vec![0u64; n];
        scratch.masks.resize_with(n, Vec::new);
        out.clear();
        out.resize(elems * out_type.size(), 0);
        let mut start = 0;
        while start < elems {
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
            A::decode_into(block(self.seed), in_type, &mut scratch.acc);
            for (k, &c) in coefficients.iter().enumerate() {
                if k == self.seed || self.coefficients[k] <= 0.0 {
                    continue;
                }
                scratch.x.resize(len, A::ZERO);
                A::decode_into(block(k), in_type, &mut scratch.x);
                A::fold(&mut scratch.acc, &scratch.x, c);
            }
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
