//! Writing: the pass that applies the selection. It streams every tensor
//! of the source once and, in each prunable piece, either removes the keys
//! below its group's cut and, of the keys equal to it, as many as the count
//! still needs (in storage order), or decides the piece's N:M groups
//! ([`super::groups`]); it hands the result to a [`Sink`] (the output file,
//! or buffers in memory). Pieces of other tensors are copied unchanged.
//! Every float piece also yields its zeros and its sums of squares before
//! and after (in f64), which the report gives per tensor.

use rayon::prelude::*;

use super::groups::prune_nm_piece;
use super::score::{f16_keys, key16, magnitude_at, Key, ABS32};
use super::select::Cut;
use super::source::{Sink, Source};
use crate::dtype::{Accumulator, FloatType};
use crate::error::Result;
use crate::nm::NmGeometry;
use crate::stream::{Control, Piece};

/// Totals of one tensor (or piece) after the write pass.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) zeros_before: u64,
    pub(crate) removed: u64,
    /// Sum of the squares of the removed values.
    pub(crate) sum_squares: f64,
    /// Sum of the squares of all values before (f64).
    pub(crate) sum_squares_before: f64,
    /// Sum of the squares of all values after (f64).
    pub(crate) sum_squares_after: f64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.zeros_before += other.zeros_before;
        self.removed += other.removed;
        self.sum_squares += other.sum_squares;
        self.sum_squares_before += other.sum_squares_before;
        self.sum_squares_after += other.sum_squares_after;
    }
}

/// What the write pass applies to the selected tensors.
pub(crate) enum Plan<'a> {
    /// `cuts[g]` to the tensors of group `g` (`group_of` maps tensors to
    /// groups).
    Cuts {
        group_of: &'a [Option<usize>],
        cuts: &'a [Cut],
    },
    /// N:M: keep `n` in each group of the tensors that have a geometry.
    Nm {
        geometry: &'a [Option<NmGeometry>],
        n: usize,
    },
}

/// What to do with one piece.
#[derive(Clone, Copy)]
enum Action {
    Copy,
    Cut(Cut, u64),
    Nm(NmGeometry, usize),
}

/// Applies `plan` to every tensor of `source`, writing to `sink` when
/// there is one. Returns the per-tensor counts and, with `hash`, the
/// source's content hash.
pub(crate) fn write_pass<S: Source, K: Key>(
    source: &S,
    key: &K,
    plan: &Plan<'_>,
    sink: Option<&dyn Sink>,
    hash: bool,
    control: &Control,
) -> Result<(Vec<Counts>, Option<String>)> {
    let (group_of, cuts): (&[Option<usize>], &[Cut]) = match plan {
        Plan::Cuts { group_of, cuts } => (group_of, cuts),
        Plan::Nm { .. } => (&[], &[]),
    };
    let group = |t: usize| group_of.get(t).copied().flatten();
    let mut remaining: Vec<u64> = cuts.iter().map(|c| c.ties).collect();
    let partial = |g: usize| cuts[g].partial();
    let mut counts = vec![Counts::default(); source.count()];
    let what = if sink.is_some() {
        "pruning"
    } else {
        "counting"
    };
    let all: Vec<usize> = (0..source.count()).collect();
    let sha = source.stream(
        control,
        what,
        &all,
        hash,
        |window: &[Piece]| {
            let needs = window.iter().any(|p| group(p.tensor).is_some_and(partial));
            let eq: Vec<u64> = if needs {
                window
                    .par_iter()
                    .map(|p| match group(p.tensor) {
                        Some(g) if partial(g) => {
                            super::select::count_equal(source, key, p, cuts[g].thr)
                        }
                        _ => 0,
                    })
                    .collect()
            } else {
                vec![0; window.len()]
            };
            // Ties are handed out in storage order: earlier pieces first.
            Ok(window
                .iter()
                .zip(eq)
                .map(|(p, eq)| match group(p.tensor) {
                    None => 0,
                    Some(g) if partial(g) => {
                        let take = remaining[g].min(eq);
                        remaining[g] -= take;
                        take
                    }
                    Some(g) if cuts[g].ties == cuts[g].eq => u64::MAX,
                    Some(_) => 0,
                })
                .collect::<Vec<u64>>())
        },
        |p: &Piece, budgets: &Vec<u64>, i| {
            let action = match plan {
                Plan::Cuts { .. } => {
                    group(p.tensor).map_or(Action::Copy, |g| Action::Cut(cuts[g], budgets[i]))
                }
                Plan::Nm { geometry, n } => {
                    geometry[p.tensor].map_or(Action::Copy, |g| Action::Nm(g, *n))
                }
            };
            prune_piece(source, key, p, action, sink)
        },
        |window, results| {
            for (p, c) in window.iter().zip(results) {
                counts[p.tensor].add(*c);
            }
            Ok(())
        },
    )?;
    Ok((counts, sha))
}

/// Sum of the squares of the values in `bytes`, in f64.
fn sum_squares(bytes: &[u8], ty: FloatType) -> f64 {
    let mut values = [0f64; 1024];
    let mut lanes = [0f64; 4];
    let size = ty.size();
    for block in bytes.chunks(size * values.len()) {
        let n = block.len() / size;
        f64::decode_into(block, ty, &mut values[..n]);
        for c in values[..n].chunks(4) {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Prunes (or only counts) one piece as `action` says; copies unselected
/// pieces unchanged.
fn prune_piece<S: Source, K: Key>(
    source: &S,
    key: &K,
    p: &Piece,
    action: Action,
    sink: Option<&dyn Sink>,
) -> Result<Counts> {
    let bytes = source.bytes(p.tensor, &p.elems);
    let Some(ty) = source.float_type(p.tensor) else {
        if let Some(out) = sink {
            // Whole-tensor byte offsets for any dtype (sub-byte too).
            let (_, dtype, _) = source.describe(p.tensor);
            let start = p.elems.start * dtype.bitsize() / 8;
            out.write(p.tensor, start, bytes)?;
        }
        return Ok(Counts::default());
    };
    let offset = ty.size() * p.elems.start;
    let mut buf = vec![0u8; bytes.len()];
    let mut counts = match action {
        Action::Copy => {
            let mut nonzero = 0u64;
            crate::dtype::for_each_nonzero(bytes, ty, |_, nz| nonzero += nz as u64);
            let sq = sum_squares(bytes, ty);
            if let Some(out) = sink {
                out.write(p.tensor, offset, bytes)?;
            }
            return Ok(Counts {
                zeros_before: p.elems.len() as u64 - nonzero,
                sum_squares_before: sq,
                sum_squares_after: sq,
                ..Counts::default()
            });
        }
        Action::Cut(cut, budget) if K::F32_MAGNITUDE && ty == FloatType::F32 => {
            prune_f32(bytes, cut.thr as u32, budget, &mut buf)
        }
        Action::Cut(cut, budget) if K::F32_MAGNITUDE && ty.size() == 2 => {
            prune_16(bytes, ty, cut.thr as u32, budget, &mut buf)
        }
        Action::Cut(cut, budget) => {
            buf.copy_from_slice(bytes);
            let at = (p.tensor, p.elems.start);
            prune_keys(key, at, bytes, ty, cut.thr, budget, Some(&mut buf))
        }
        Action::Nm(geometry, n) => {
            buf.copy_from_slice(bytes);
            prune_nm_piece(source, key, p.tensor, &p.elems, &geometry, n, &mut buf)
        }
    };
    counts.sum_squares_before = sum_squares(bytes, ty);
    counts.sum_squares_after = sum_squares(&buf, ty);
    if let Some(out) = sink {
        out.write(p.tensor, offset, &buf)?;
    }
    Ok(counts)
}

/// [`prune_piece`] for any keys and float type, element by element:
/// removes from `bytes` (the elements from `start` on of tensor `tensor`)
/// the keys below `thr` and up to `budget` keys equal to it, zeroing them
/// in `buf` (a copy of `bytes`) when there is one.
fn prune_keys<K: Key>(
    key: &K,
    (tensor, start): (usize, usize),
    bytes: &[u8],
    ty: FloatType,
    thr: u64,
    mut budget: u64,
    mut buf: Option<&mut [u8]>,
) -> Counts {
    let size = ty.size();
    let mut counts = Counts::default();
    key.each(tensor, start, bytes, ty, |j, k| {
        if k == 0 {
            counts.zeros_before += 1;
        } else if k < thr || (k == thr && budget > 0) {
            if k == thr {
                budget -= 1;
            }
            counts.removed += 1;
            let m = magnitude_at(bytes, ty, j);
            counts.sum_squares += m * m;
            if let Some(b) = buf.as_mut() {
                b[j * size..(j + 1) * size].fill(0);
            }
        }
    });
    counts
}

/// [`prune_keys`] for BF16 or F16 data (`ty`) with F32 keys, on the 16-bit
/// words: the keys come from the bits (see [`key16`]) and the removed
/// magnitudes from the keys, so nothing is converted. `out` (empty when
/// only counting) receives the pruned bytes.
///
/// The sum of squares must be the same bits as [`prune_keys`]'s, which adds
/// the square of each removed element in storage order. That chain of
/// dependent additions is what limits the speed, so it holds only the
/// removed elements: per block, a loop without branches decides which
/// elements go (the first `budget` ties in storage order go too, marked in
/// a second loop only for blocks that hold a tie while the budget lasts),
/// the squares of those are packed in order into a buffer, and the buffer
/// is added up in order. Skipping the kept elements changes no bit:
/// adding `+0.0` to a sum that starts at `+0.0` and only grows leaves it
/// as it is.
fn prune_16(bytes: &[u8], ty: FloatType, thr: u32, budget: u64, out: &mut [u8]) -> Counts {
    #[inline(always)]
    fn plain(bytes: &[u8], ty: FloatType, thr: u32, budget: u64, out: &mut [u8]) -> Counts {
        let table = f16_keys();
        if ty == FloatType::BF16 {
            prune_16_with(bytes, thr, budget, out, |w| {
                key16(w, FloatType::BF16, table)
            })
        } else {
            prune_16_with(bytes, thr, budget, out, |w| key16(w, FloatType::F16, table))
        }
    }
    crate::dtype::avx2_or_plain!(
        avx2,
        plain,
        (bytes: &[u8], ty: FloatType, thr: u32, budget: u64, out: &mut [u8]) -> Counts
    );
}

/// Elements per block of [`prune_16_with`] (its buffers stay in the L1
/// cache).
const BLOCK16: usize = 512;

#[inline(always)]
fn prune_16_with(
    bytes: &[u8],
    thr: u32,
    budget: u64,
    out: &mut [u8],
    key: impl Fn(u16) -> u32,
) -> Counts {
    // A budget of u64::MAX removes every tie: keys up to `thr` go
    // (thr <= ABS32 < u32::MAX, so `thr + 1` cannot overflow).
    let (below, mut budget) = if budget == u64::MAX {
        (thr + 1, 0)
    } else {
        (thr, budget)
    };
    let write = !out.is_empty();
    let (mut zeros, mut removed, mut squares) = (0u64, 0u64, 0f64);
    let mut gone = [0u8; BLOCK16];
    let mut squares_all = [0f64; BLOCK16];
    let mut packed = [0f64; BLOCK16];
    let word = |c: &[u8]| u16::from_le_bytes(c.try_into().expect("2 bytes"));
    for (b, block) in bytes.chunks(2 * BLOCK16).enumerate() {
        let len = block.len() / 2;
        let gone = &mut gone[..len];
        let mut ties = 0u64;
        for ((g, sq), c) in gone
            .iter_mut()
            .zip(&mut squares_all)
            .zip(block.chunks_exact(2))
        {
            let k = key(word(c));
            let nonzero = k != 0;
            *g = (nonzero & (k < below)) as u8;
            zeros += (!nonzero) as u64;
            ties += (nonzero & (k == thr)) as u64;
            let m = f32::from_bits(k) as f64;
            *sq = m * m;
        }
        if budget > 0 && ties > 0 {
            for (g, c) in gone.iter_mut().zip(block.chunks_exact(2)) {
                if budget == 0 {
                    break;
                }
                let k = key(word(c));
                if k == thr && k != 0 {
                    *g = 1;
                    budget -= 1;
                }
            }
        }
        let mut n = 0;
        for (&g, &sq) in gone.iter().zip(&squares_all) {
            packed[n] = sq;
            n += g as usize;
        }
        removed += n as u64;
        for &s in &packed[..n] {
            squares += s;
        }
        if write {
            let dst = &mut out[2 * BLOCK16 * b..][..2 * len];
            for ((o, c), &g) in dst
                .chunks_exact_mut(2)
                .zip(block.chunks_exact(2))
                .zip(&*gone)
            {
                let keep = (g as u16).wrapping_sub(1);
                o.copy_from_slice(&(word(c) & keep).to_le_bytes());
            }
        }
    }
    Counts {
        zeros_before: zeros,
        removed,
        sum_squares: squares,
        ..Counts::default()
    }
}

/// [`prune_piece`] for F32 data with F32 keys, the common case, written so
/// that the main loop has no branches and vectorizes: it removes the keys
/// below `thr` (all of `thr` too when `budget` is `u64::MAX`); a second
/// loop runs only for pieces that hold some of a partially removed tie
/// class. `out` (empty when only counting) receives the pruned bytes.
fn prune_f32(bytes: &[u8], thr: u32, budget: u64, out: &mut [u8]) -> Counts {
    const LANES: usize = 8;
    let (below, mut budget) = if budget == u64::MAX {
        // thr <= ABS32 < u32::MAX, so this cannot overflow.
        (thr + 1, 0)
    } else {
        (thr, budget)
    };
    let write = !out.is_empty();
    let mut zeros = [0u64; LANES];
    let mut removed = [0u64; LANES];
    // Per-lane partial sums in f32 (they vectorize), widened per piece.
    let mut squares = [0f32; LANES];
    let mut lane = |w: u32, l: usize| -> u32 {
        let k = w & ABS32;
        let nonzero = k != 0;
        // Zeros stay as they are (a -0.0 stays -0.0), uncounted as removed.
        let gone = (k < below) & nonzero;
        zeros[l] += (!nonzero) as u64;
        removed[l] += gone as u64;
        let m = f32::from_bits(k);
        squares[l] += if gone { m * m } else { 0.0 };
        if gone {
            0
        } else {
            w
        }
    };
    let word = |c: &[u8]| u32::from_le_bytes(c.try_into().expect("4 bytes"));
    let blocks = bytes.len() / (4 * LANES) * (4 * LANES);
    if write {
        for (o, c) in out[..blocks]
            .chunks_exact_mut(4 * LANES)
            .zip(bytes[..blocks].chunks_exact(4 * LANES))
        {
            for l in 0..LANES {
                let v = lane(word(&c[4 * l..4 * l + 4]), l);
                o[4 * l..4 * l + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    } else {
        for c in bytes[..blocks].chunks_exact(4 * LANES) {
            for l in 0..LANES {
                lane(word(&c[4 * l..4 * l + 4]), l);
            }
        }
    }
    for j in blocks / 4..bytes.len() / 4 {
        let v = lane(word(&bytes[4 * j..4 * j + 4]), 0);
        if write {
            out[4 * j..4 * j + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let mut counts = Counts {
        zeros_before: zeros.iter().sum(),
        removed: removed.iter().sum(),
        sum_squares: squares.iter().map(|&v| v as f64).sum(),
        ..Counts::default()
    };
    if budget > 0 && thr != 0 {
        // The first `budget` elements equal to the threshold also go.
        for j in 0..bytes.len() / 4 {
            if budget == 0 {
                break;
            }
            if word(&bytes[4 * j..4 * j + 4]) & ABS32 == thr {
                budget -= 1;
                counts.removed += 1;
                let m = f32::from_bits(thr) as f64;
                counts.sum_squares += m * m;
                if write {
                    out[4 * j..4 * j + 4].fill(0);
                }
            }
        }
    }
    counts
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod write_tests;
