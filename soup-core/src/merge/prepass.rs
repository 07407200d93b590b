//! The pre-pass: per-tensor statistics a method needs before it combines,
//! gathered by streaming through the base and the candidates on the same
//! driver as the merge (bounded memory, all cores).
//!
//! [`Statistic::TopMagnitude`] (the trim of TIES) finds, per tensor and
//! candidate, the smallest magnitude among the `floor(density * n)` largest
//! magnitudes of the task vector, by an exact radix selection over the
//! bits of the f32 magnitudes (non-negative floats order like their bits):
//! a first sweep counts the magnitudes per top 16 bits, a second one the
//! low 16 bits inside the bucket that holds the threshold. Each sweep
//! decodes a block of the base once for all candidates. With the base
//! mask kept, only the base's surviving elements are counted and ranked.
//! As in mergekit, a tensor with surviving elements keeps at least one.
//!
//! [`Statistic::DareRescale`] (the rescaling of DARE) sums, per tensor and
//! candidate, the magnitudes of the task vector before and after DARE's
//! drop (the same random stream as the kernel's), over the eligible
//! elements, in f64; the factor that gives the kept entries the L1 norm of
//! the whole task vector is the ratio of the two sums rounded to f32, as
//! mergekit computes it in f32 (1 where either sum is below 1e-7).

use std::collections::HashMap;

use super::dare;
use super::method::Statistic;
use crate::dtype::{Accumulator, FloatType};
use crate::error::Result;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Units};

const BUCKETS: usize = 1 << 16;

/// Per row and candidate (row-major), the result of the statistic: for
/// [`Statistic::TopMagnitude`] the threshold (magnitudes at or above it
/// are kept; NaN keeps nothing, 0 everything), for
/// [`Statistic::DareRescale`] the factor of the kept entries.
pub(super) fn thresholds(
    rows: &CheckpointRows,
    statistic: Statistic,
    masked: bool,
    control: &Control,
) -> Result<Vec<f32>> {
    match statistic {
        Statistic::TopMagnitude { density } => top_magnitude(rows, density, masked, control),
        Statistic::DareRescale { density, seed } => {
            dare_factors(rows, density, seed, masked, control)
        }
    }
}

fn top_magnitude(
    rows: &CheckpointRows,
    density: f64,
    masked: bool,
    control: &Control,
) -> Result<Vec<f32>> {
    let count = crate::stream::Rows::rows(rows);
    let n = rows.row(0).len() - 1;
    // Per row and candidate: (top bits of the threshold, rank left in that
    // bucket), from the first sweep.
    let mut found = vec![(0u32, 0u64); count * n];
    let mut result = vec![0f32; count * n];
    for sweep in 0..2 {
        let mut open: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut next = found.clone();
        let found_ref = &found;
        drive(
            rows,
            control,
            "pre-pass",
            Units::Pieces,
            |_| Ok(()),
            |piece, _, _| -> Result<Vec<u64>> {
                let row = rows.row(piece.tensor);
                let Some(in_type) = row[0].float_type() else {
                    return Ok(Vec::new());
                };
                let base = rows.bytes(0, piece);
                let cands: Vec<&[u8]> = (0..n).map(|k| rows.bytes(k + 1, piece)).collect();
                let wanted: Vec<u32> = (0..n).map(|k| found_ref[piece.tensor * n + k].0).collect();
                let mut hist = vec![0u64; n * BUCKETS + 1];
                let sweep = Sweep {
                    first: sweep == 0,
                    wanted: &wanted,
                };
                if in_type == FloatType::F64 {
                    histograms::<f64>(base, &cands, in_type, masked, sweep, &mut hist);
                } else {
                    histograms::<f32>(base, &cands, in_type, masked, sweep, &mut hist);
                }
                Ok(hist)
            },
            no_lag(),
            |window, hists| {
                for (piece, hist) in window.iter().zip(hists) {
                    if hist.is_empty() {
                        continue;
                    }
                    let t = piece.tensor;
                    let total = open.entry(t).or_insert_with(|| vec![0; n * BUCKETS + 1]);
                    for (a, b) in total.iter_mut().zip(hist) {
                        *a += b;
                    }
                    if !piece.last {
                        continue;
                    }
                    let total = open.remove(&t).expect("opened");
                    let eligible = total[n * BUCKETS];
                    for k in 0..n {
                        let h = &total[k * BUCKETS..(k + 1) * BUCKETS];
                        let slot = t * n + k;
                        if sweep == 0 {
                            let keep = (density * eligible as f64).floor() as u64;
                            let keep = keep.max(1).min(eligible);
                            next[slot] = match keep {
                                0 => (u32::MAX, 0),
                                _ => select(h, keep),
                            };
                        } else if found[slot].0 == u32::MAX {
                            result[slot] = f32::NAN;
                        } else {
                            let (low, _) = select(h, found[slot].1);
                            result[slot] = f32::from_bits(found[slot].0 << 16 | low);
                        }
                    }
                }
                Ok(())
            },
        )?;
        found = next;
    }
    Ok(result)
}

/// The bucket holding the `rank`-th largest value (from 1) of histogram
/// `h`, and the rank left inside that bucket.
fn select(h: &[u64], rank: u64) -> (u32, u64) {
    let mut above = 0u64;
    for (bucket, &c) in h.iter().enumerate().rev() {
        if above + c >= rank {
            return (bucket as u32, rank - above);
        }
        above += c;
    }
    // Fewer values than the rank (not reached: rank <= count): keep all.
    (0, 1)
}

/// Which sweep of the radix selection runs: the first counts the top 16
/// bits of every magnitude, the second the low 16 bits of those whose top
/// bits are the candidate's `wanted` bucket.
struct Sweep<'w> {
    first: bool,
    wanted: &'w [u32],
}

/// Adds the piece's eligible magnitudes `|candidate_k - base|` (as f32
/// bits) to candidate `k`'s histogram `hist[k * BUCKETS..]`, and their
/// count to `hist[n * BUCKETS]`.
fn histograms<A: Accumulator>(
    base: &[u8],
    cands: &[&[u8]],
    t: FloatType,
    masked: bool,
    sweep: Sweep,
    hist: &mut [u64],
) {
    let n = cands.len();
    let mut eligible = 0u64;
    blocks::<A>(base, cands, t, |k, _, b, c| {
        let h = &mut hist[k * BUCKETS..(k + 1) * BUCKETS];
        let wanted = sweep.wanted[k];
        for (&b, &c) in b.iter().zip(c) {
            if masked && b == A::ZERO {
                continue;
            }
            let bits = ((c - b).to_f64() as f32).abs().to_bits();
            if sweep.first {
                h[(bits >> 16) as usize] += 1;
            } else if bits >> 16 == wanted {
                h[(bits & 0xffff) as usize] += 1;
            }
            if k == 0 {
                eligible += 1;
            }
        }
    });
    hist[n * BUCKETS] = eligible;
}

/// Decodes a piece of the base and the candidates block by block, the
/// base once per block, and calls `f(k, from, base, candidate_k)` with
/// the decoded values of the block that starts at the piece's element
/// `from`, for each candidate `k` in turn.
fn blocks<A: Accumulator>(
    base: &[u8],
    cands: &[&[u8]],
    t: FloatType,
    mut f: impl FnMut(usize, usize, &[A], &[A]),
) {
    let mut b: Vec<A> = Vec::with_capacity(BLOCK);
    let mut c: Vec<A> = Vec::with_capacity(BLOCK);
    let elems = base.len() / t.size();
    for from in (0..elems).step_by(BLOCK) {
        let range = from * t.size()..(from + BLOCK).min(elems) * t.size();
        A::decode(&base[range.clone()], t, &mut b);
        for (k, cand) in cands.iter().enumerate() {
            A::decode(&cand[range.clone()], t, &mut c);
            f(k, from, &b, &c);
        }
    }
}

const BLOCK: usize = 2048;

/// DARE's rescaling factor per row and candidate (see the module doc).
fn dare_factors(
    rows: &CheckpointRows,
    density: f64,
    seed: u64,
    masked: bool,
    control: &Control,
) -> Result<Vec<f32>> {
    let count = crate::stream::Rows::rows(rows);
    let n = rows.row(0).len() - 1;
    let mut result = vec![1f32; count * n];
    let mut open: HashMap<usize, Vec<f64>> = HashMap::new();
    drive(
        rows,
        control,
        "pre-pass",
        Units::Pieces,
        |_| Ok(()),
        |piece, _, _| -> Result<Vec<f64>> {
            let row = rows.row(piece.tensor);
            let Some(in_type) = row[0].float_type() else {
                return Ok(Vec::new());
            };
            let key = dare::name_key(&row[0].name);
            let base = rows.bytes(0, piece);
            let cands: Vec<&[u8]> = (0..n).map(|k| rows.bytes(k + 1, piece)).collect();
            let drops: Vec<dare::Drop> = (0..n)
                .map(|k| dare::Drop::new(seed, key, k, density))
                .collect();
            let start = piece.elems.start;
            let sums = if in_type == FloatType::F64 {
                l1::<f64>(base, &cands, in_type, masked, &drops, start)
            } else {
                l1::<f32>(base, &cands, in_type, masked, &drops, start)
            };
            Ok(sums)
        },
        no_lag(),
        |window, results| {
            for (piece, sums) in window.iter().zip(results) {
                if sums.is_empty() {
                    continue;
                }
                let t = piece.tensor;
                let total = open.entry(t).or_insert_with(|| vec![0.0; 2 * n]);
                for (a, b) in total.iter_mut().zip(sums) {
                    *a += b;
                }
                if !piece.last {
                    continue;
                }
                let total = open.remove(&t).expect("opened");
                for k in 0..n {
                    let (before, after) = (total[2 * k] as f32, total[2 * k + 1] as f32);
                    if before >= 1e-7 && after >= 1e-7 {
                        result[t * n + k] = before / after;
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(result)
}

/// Per candidate `k`, the sums of `|candidate_k - base|` over the
/// eligible elements of a piece that starts at element `start`: all of
/// them (`2 * k`), and those `drops[k]` keeps (`2 * k + 1`).
fn l1<A: Accumulator>(
    base: &[u8],
    cands: &[&[u8]],
    t: FloatType,
    masked: bool,
    drops: &[dare::Drop],
    start: usize,
) -> Vec<f64> {
    let mut sums = vec![0f64; 2 * cands.len()];
    blocks::<A>(base, cands, t, |k, from, b, c| {
        let drop = &drops[k];
        let mut counter = drop.counter(start + from);
        let (mut before, mut after) = (sums[2 * k], sums[2 * k + 1]);
        for (&b, &c) in b.iter().zip(c) {
            let keep = drop.keeps(&mut counter);
            if masked && b == A::ZERO {
                continue;
            }
            let magnitude = (c - b).to_f64().abs();
            before += magnitude;
            if keep {
                after += magnitude;
            }
        }
        sums[2 * k] = before;
        sums[2 * k + 1] = after;
    });
    sums
}
