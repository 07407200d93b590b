//! The merge on the streaming driver: per piece, the inputs' masks are
//! packed and compared, the kernel combines a block at a time, the mask
//! policy is applied, and the result is written; the inputs are hashed
//! along the way.

use std::cell::RefCell;

use super::method::{Block, Kernel, KernelAcc};
use super::{IntPolicy, MaskPolicy, MergeOptions};
use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::hash::DigestKind;
use crate::output::Output;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Piece, Units};
use crate::tree_hash::{self, PieceHasher, Subtree};
use safetensors::Dtype;

/// Per tensor whose masks differ: its name and, per input, the positions
/// where that input's mask differs from the first input's.
type MaskDifferences = Vec<(String, Vec<u64>)>;

/// What streaming the merge found.
pub(super) struct Streamed {
    /// Each input's content digest.
    pub(super) hashes: Vec<String>,
    /// See [`super::MergeReport::mask_differences`].
    pub(super) mask_differences: MaskDifferences,
    /// Under the base mask policy, per candidate, the sum of squares of its
    /// task vector and of the part where the base is zero.
    pub(super) norms: Vec<(f64, f64)>,
}

pub(super) struct Plan<'a> {
    /// The inputs: the base first when `base`, then the candidates.
    pub(super) inputs: &'a [&'a Checkpoint],
    pub(super) base: bool,
    pub(super) rows: &'a CheckpointRows<'a>,
    /// The output's dtype of each row.
    pub(super) out_dtypes: &'a [Dtype],
    pub(super) kernel: &'a dyn Kernel,
    /// The pre-pass result, per row and candidate (empty without one).
    pub(super) thresholds: &'a [f32],
    pub(super) options: &'a MergeOptions,
    pub(super) output: &'a dyn Sink,
}

/// Where the merged bytes go: an output file, or tensors in memory.
pub(super) trait Sink: Sync {
    /// Writes `bytes` at byte `offset` of output tensor `index`.
    fn write(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()>;
    /// Hands what is written so far to the disk (nothing for memory).
    fn sync_data(&self) -> Result<()> {
        Ok(())
    }
}

impl Sink for Output {
    fn write(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        Output::write(self, index, offset, bytes)
    }
    fn sync_data(&self) -> Result<()> {
        Output::sync_data(self)
    }
}

impl Plan<'_> {
    fn candidates(&self) -> usize {
        self.inputs.len() - usize::from(self.base)
    }

    /// Whether the result keeps exactly the base's zeros.
    fn keeps_base_mask(&self) -> bool {
        self.base && self.options.mask_policy == MaskPolicy::Base
    }

    /// Streams every window through the driver: merges its pieces while
    /// the inputs' bytes are hashed on the side, then checks masks. Written
    /// data is handed to the disk window by window (see
    /// [`Output::sync_data`]), so the final fsync finds little left to do.
    pub(super) fn run(&self, control: &Control, in_pieces: bool) -> Result<Streamed> {
        let n = self.inputs.len();
        let rows = self.rows;
        let mut trees = TreeDigests::new(n);
        // Per row and input, one flat array.
        let mut diffs = vec![0u64; self.out_dtypes.len() * n];
        let mut norms = vec![(0f64, 0f64); self.candidates()];
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
                        for (total, d) in norms.iter_mut().zip(&merged.norms) {
                            total.0 += d.0;
                            total.1 += d.1;
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
        let mask_differences = diffs
            .chunks_exact(n)
            .enumerate()
            .filter(|(_, d)| d.iter().any(|&x| x > 0))
            .map(|(t, d)| (rows.entry(t, 0).name.clone(), d.to_vec()))
            .collect();
        Ok(Streamed {
            hashes,
            mask_differences,
            norms,
        })
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
        let finish = |hashers: Vec<(&[u8], PieceHasher)>, diffs: Vec<u64>, norms| Merged {
            diffs,
            norms,
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
            return Ok(finish(hashers, vec![0; n], Vec::new()));
        };
        let out_type = crate::dtype::FloatType::of(self.out_dtypes[piece.tensor])
            .expect("float output for float input");
        let (diffs, norms) = SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let found = if in_type == FloatType::F64 {
                self.combine::<f64>(
                    piece,
                    &bytes,
                    (in_type, out_type),
                    (offset, &mut hashers),
                    &mut scratch.f64,
                    &mut scratch.out,
                )
            } else {
                self.combine::<f32>(
                    piece,
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
                .map(|()| found)
        })?;
        Ok(finish(hashers, diffs, norms))
    }

    /// Combines one piece of every input, encoded into `out`; returns, per
    /// input, the positions where its mask differs from the first input's,
    /// and under the base mask policy the candidates' task-vector sums of
    /// squares (see [`Streamed::norms`]). Works in spans whose bytes, over
    /// all inputs, fit in the L2 cache: each input's hasher reads the span
    /// first (from memory), then blocks that stay in the L1 cache are
    /// packed into masks, compared, and combined by the kernel. `at` is the
    /// piece's byte offset in its tensor.
    fn combine<A: KernelAcc>(
        &self,
        piece: &Piece,
        bytes: &[&[u8]],
        (in_type, out_type): (FloatType, FloatType),
        (at, hashers): (usize, &mut [(&[u8], PieceHasher)]),
        scratch: &mut Blocks<A>,
        out: &mut Vec<u8>,
    ) -> (Vec<u64>, Vec<(f64, f64)>) {
        let n = bytes.len();
        let size = in_type.size();
        let elems = bytes[0].len() / size;
        let intersect = self.options.mask_policy == MaskPolicy::Intersect;
        let keep_base_mask = self.keeps_base_mask();
        let first = usize::from(self.base);
        let candidates = n - first;
        let t = piece.tensor;
        let thresholds = match self.thresholds.is_empty() {
            true => &[][..],
            false => &self.thresholds[t * candidates..(t + 1) * candidates],
        };
        let name_key = match self.base {
            true => super::dare::name_key(&self.rows.entry(t, 0).name),
            false => 0,
        };
        let mut diffs = vec![0u64; n];
        let mut norms = vec![(0f64, 0f64); if keep_base_mask { candidates } else { 0 }];
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
            if keep_base_mask {
                task_vector_norms(
                    block,
                    &scratch.masks[0],
                    in_type,
                    &mut norms,
                    &mut scratch.x,
                );
            }
            let blocks: Vec<&[u8]> = (first..n).map(block).collect();
            let view = Block {
                in_type,
                base: self.base.then(|| block(0)),
                candidates: &blocks,
                start: piece.elems.start + start,
                name_key,
                thresholds,
            };
            scratch.acc.resize(len, A::ZERO);
            A::combine(self.kernel, &view, &mut scratch.acc, &mut scratch.x);
            if intersect || keep_base_mask {
                let masks = match keep_base_mask {
                    true => &scratch.masks[..1],
                    false => &scratch.masks[..],
                };
                for (i, m) in scratch.acc.iter_mut().enumerate() {
                    let alive = masks.iter().all(|mask| mask[i / 8] >> (i % 8) & 1 == 1);
                    if !alive {
                        *m = A::ZERO;
                    }
                }
            }
            // The block is final here (kernel and mask policy applied): a
            // per-tensor check of the result, such as an N:M pattern, reads
            // `scratch.acc` here (elements `piece.elems.start + start..`).
            let dst = &mut out[start * out_type.size()..end * out_type.size()];
            A::encode_into(&scratch.acc, out_type, dst);
            start = end;
        }
        (diffs, norms)
    }
}

/// Adds, per candidate (inputs 1..), the sum of squares of its task vector
/// over the block and of the part where the base's mask (`base_mask`) is
/// zero.
fn task_vector_norms<'b, A: KernelAcc>(
    block: impl Fn(usize) -> &'b [u8],
    base_mask: &[u8],
    in_type: FloatType,
    norms: &mut [(f64, f64)],
    x: &mut Vec<A>,
) {
    let len = block(0).len() / in_type.size();
    x.resize(2 * len, A::ZERO);
    let (base, cand) = x.split_at_mut(len);
    A::decode_into(block(0), in_type, base);
    for (k, norm) in norms.iter_mut().enumerate() {
        A::decode_into(block(k + 1), in_type, cand);
        for (i, (&c, &b)) in cand.iter().zip(base.iter()).enumerate() {
            let d = (c - b).to_f64();
            norm.0 += d * d;
            if base_mask[i / 8] >> (i % 8) & 1 == 0 {
                norm.1 += d * d;
            }
        }
    }
}

/// Elements per block of [`Plan::combine`]: a few KiB per input, so a
/// block of every input stays in the L1/L2 cache. A multiple of 8 (whole
/// mask bytes).
const BLOCK: usize = 2048;

/// Input bytes per span of [`Plan::combine`], all inputs together: hashed
/// first, then combined while still in the L2 cache (at least 1 MiB per
/// core on the machines soup targets).
const SPAN_BYTES: usize = 512 << 10;

/// What merging one piece returns: per input, the positions where its mask
/// differs from the first input's, the task-vector norms (see
/// [`Streamed::norms`]), and (when BLAKE3 is hashed in the pieces) the
/// piece's subtrees.
struct Merged {
    diffs: Vec<u64>,
    norms: Vec<(f64, f64)>,
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
