//! Groupings: which elements compete with each other for removal.
//!
//! - [`Grouping::Global`]: all selected tensors form one group; a removal
//!   count over the group is cut by radix selection ([`super::select`]).
//! - [`Grouping::PerTensor`]: each selected tensor is a group of its own,
//!   cut the same way.
//! - [`Grouping::Nm`]: groups of M consecutive weights along each tensor's
//!   input dimension (see [`crate::nm`] for where they lie in linear,
//!   convolution and transposed `[in, out]` weights); in each group the N
//!   elements with the largest keys stay and the other M - N are zero
//!   afterwards. Among equal keys the earlier element (lower row-major
//!   index) is removed first, as in the other groupings. Zeros have the
//!   smallest key under every criterion, so an already-zero weight never
//!   takes one of the N places from a non-zero one, and no weight is ever
//!   revived: the output has at most N non-zeros in every group.
//!
//! N:M selection needs no threshold: each group is decided on its own, by
//! counting for each element how many of its group rank above it. The
//! write pass hands out pieces of a tensor; a piece is widened to the whole
//! units ([`NmGeometry::unit_len`]) that cover it, its groups are decided,
//! and only the piece's own elements are written, so windows of the stream
//! stay bounded and every group is decided the same way whichever piece
//! sees it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::score::{magnitude_at, Key};
use super::source::Source;
use super::write::Counts;
use super::PruneOptions;
use crate::error::{Error, Result};
use crate::nm::{NmGeometry, NmShapeProblem};

vocabulary! {
    /// How the selected elements are grouped for removal.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum Grouping ("grouping", default Global) {
        /// One group over all selected tensors.
        Global = "global",
        /// One group per selected tensor.
        PerTensor = "per-tensor",
        /// Groups of M along each tensor's input dimension, keeping N.
        Nm = "nm",
    }
}

/// Where the input dimension of each tensor lies, and its N:M groups.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// Per source tensor: stored as `[in, out]`.
    pub(crate) transposed: Vec<bool>,
    /// Per source tensor, with an N:M pattern: the groups of a selected
    /// tensor.
    pub(crate) geometry: Vec<Option<NmGeometry>>,
    /// Selected tensors left as they are because their input dimension is
    /// not a multiple of M (with `skip_ragged`).
    pub(crate) skipped: Vec<String>,
}

/// Resolves the layout of the selected tensors; with an N:M pattern, drops
/// the ragged tensors from `selected` (with `skip_ragged`) or refuses them,
/// naming every one. `label` names the checkpoint in errors.
pub(crate) fn layout<S: Source>(
    source: &S,
    selected: &mut Vec<usize>,
    options: &PruneOptions,
    label: &str,
) -> Result<Layout> {
    let rules = crate::select::compile_patterns(&options.transposed)?;
    let mut layout = Layout {
        transposed: vec![false; source.count()],
        geometry: vec![None; source.count()],
        skipped: Vec::new(),
    };
    let mut problems = Vec::new();
    for &i in selected.iter() {
        let (name, _, shape) = source.describe(i);
        let transposed = rules.iter().any(|r| r.is_match(name));
        if transposed && shape.len() != 2 {
            problems.push(format!(
                "tensor `{name}` of shape {shape:?}: {}",
                NmShapeProblem::TransposedRank(shape.len())
            ));
            continue;
        }
        layout.transposed[i] = transposed;
        let Some(pattern) = options.nm else { continue };
        match NmGeometry::new(shape, transposed, pattern.m()) {
            Ok(g) => layout.geometry[i] = Some(g),
            Err(NmShapeProblem::Ragged { .. }) if options.skip_ragged => {
                layout.skipped.push(name.to_string())
            }
            Err(p) => problems.push(format!("tensor `{name}` of shape {shape:?}: {p}")),
        }
    }
    if !problems.is_empty() {
        let what = match options.nm {
            Some(p) => format!("the N:M pattern {p} cannot group"),
            None => "cannot prune".to_string(),
        };
        return Err(Error::invalid(format!(
            "{label}: {what} {} tensor{}: {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("; ")
        )));
    }
    if options.nm.is_some() {
        selected.retain(|&i| layout.geometry[i].is_some());
    }
    Ok(layout)
}

/// Bit `j` set: element `j` of the group (keys `ks`) is removed, keeping
/// the `n` largest keys (among equal keys, the later element stays).
#[inline(always)]
fn removed_in_group(ks: &[u64], n: usize) -> u32 {
    let mut mask = 0u32;
    for (j, &kj) in ks.iter().enumerate() {
        let mut above = 0usize;
        for (i, &ki) in ks.iter().enumerate() {
            above += ((ki > kj) | ((ki == kj) & (i > j))) as usize;
        }
        mask |= ((above >= n) as u32) << j;
    }
    mask
}

/// Prunes the elements `elems` of tensor `tensor` to N:M (`n` kept per
/// group of `geometry`), zeroing the removed ones in `out` (the piece's
/// bytes, copied). Returns the zeros before, the removed count and their
/// sum of squares (f64).
pub(crate) fn prune_nm_piece<S: Source, K: Key>(
    source: &S,
    key: &K,
    tensor: usize,
    elems: &Range<usize>,
    geometry: &NmGeometry,
    n: usize,
    out: &mut [u8],
) -> Counts {
    let mut counts = Counts::default();
    let unit = geometry.unit_len();
    if elems.is_empty() || unit == 0 {
        return counts;
    }
    let span = elems.start / unit * unit..elems.end.div_ceil(unit) * unit;
    let ty = source.float_type(tensor).expect("float");
    let size = ty.size();
    let bytes = source.bytes(tensor, &span);
    let mut keys = vec![0u64; span.len()];
    key.each(tensor, span.start, bytes, ty, |j, k| keys[j] = k);
    let own = elems.start - span.start..elems.end - span.start;
    counts.zeros_before = keys[own.clone()].iter().filter(|&&k| k == 0).count() as u64;
    let mut remove = |o: usize| {
        if own.contains(&o) && keys[o] != 0 {
            let m = magnitude_at(bytes, ty, o);
            counts.removed += 1;
            counts.sum_squares += m * m;
            let at = o - own.start;
            out[at * size..(at + 1) * size].fill(0);
        }
    };
    let m = geometry.m();
    if geometry.stride() == 1 {
        for (g, ks) in keys.chunks_exact(m).enumerate() {
            let mut mask = removed_in_group(ks, n);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                remove(g * m + j);
            }
        }
    } else {
        let mut ks = [0u64; crate::nm::MAX_GROUP as usize];
        geometry.for_each_group(span.len() / unit, |_, offsets| {
            for (k, &o) in ks.iter_mut().zip(offsets) {
                *k = keys[o];
            }
            let mut mask = removed_in_group(&ks[..m], n);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                remove(offsets[j]);
            }
        });
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::removed_in_group;

    #[test]
    fn keeps_the_largest_and_removes_earlier_ties_first() {
        assert_eq!(removed_in_group(&[1, 4, 3, 2], 2), 0b1001);
        // All equal: the two earliest go.
        assert_eq!(removed_in_group(&[5, 5, 5, 5], 2), 0b0011);
        assert_eq!(removed_in_group(&[0, 0, 0, 7], 2), 0b0011);
        assert_eq!(removed_in_group(&[3, 1, 3, 3], 1), 0b0111);
    }
}
