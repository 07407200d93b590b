//! N:M semi-structured sparsity: the pattern, and where its groups lie in a
//! tensor.
//!
//! A tensor is N:M sparse when, in every group of M consecutive weights
//! along its input dimension, at most N are non-zero. GPUs accelerate 2:4
//! (PyTorch's `to_sparse_semi_structured`, CUTLASS and cuSPARSELt kernels).
//!
//! # Where the groups lie
//! - A linear weight `[out, in]`: groups of M consecutive elements of a row.
//! - A convolution weight `[out, in, k...]`: along the input channels at
//!   each output channel and kernel position, as NVIDIA's ASP groups them:
//!   the elements `(o, c, y, x)` for `c` in `g*M .. g*M + M` form a group.
//! - A linear weight stored as `[in, out]` (Hugging Face GPT-2's `Conv1D`
//!   and models derived from it): groups run along the first dimension,
//!   `(i, o)` for `i` in `g*M .. g*M + M` ("transposed").
//!
//! All three are one layout: the tensor is `outer x len x inner` elements in
//! row-major order with the grouped dimension in the middle (`[out, in]`:
//! `inner = 1`; `[out, in, k...]`: `inner = prod(k...)`; transposed
//! `[in, out]`: `outer = 1, inner = out`). Element `j` of a group lies
//! `j * inner` after the group's first element, and the `M * inner`
//! elements of one *unit* hold exactly `inner` whole groups. Units are
//! contiguous and in order, so any range of whole units can be checked or
//! pruned on its own, which is what lets the streaming front ends split a
//! tensor into windows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dtype::{for_each_nonzero, FloatType};
use crate::error::{Error, Result};

/// Largest group size M accepted.
pub const MAX_GROUP: u32 = 32;

/// An N:M pattern: at most `n` non-zeros in every group of `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NmPattern {
    n: u32,
    m: u32,
}

impl NmPattern {
    /// The pattern `n:m`; requires `1 <= n < m <= 32`.
    pub fn new(n: u32, m: u32) -> Result<NmPattern> {
        if n == 0 || n >= m || m > MAX_GROUP {
            return Err(Error::invalid(format!(
                "N:M pattern {n}:{m} is not valid: it needs 1 <= N < M <= {MAX_GROUP}"
            )));
        }
        Ok(NmPattern { n, m })
    }

    /// Non-zeros allowed per group.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Group size.
    pub fn m(&self) -> u32 {
        self.m
    }
}

impl fmt::Display for NmPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

impl FromStr for NmPattern {
    type Err = Error;

    /// Parses `N:M`, for example `2:4`.
    fn from_str(s: &str) -> Result<NmPattern> {
        let bad = || Error::invalid(format!("`{s}` is not an N:M pattern such as 2:4"));
        let (n, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let n = n.trim().parse::<u32>().map_err(|_| bad())?;
        let m = m.trim().parse::<u32>().map_err(|_| bad())?;
        NmPattern::new(n, m)
    }
}

impl Serialize for NmPattern {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NmPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<NmPattern, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a tensor has no N:M groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NmShapeProblem {
    /// Fewer than two dimensions (a bias, a norm's scale).
    Rank(usize),
    /// Only a rank-2 tensor can be stored transposed.
    TransposedRank(usize),
    /// The grouped dimension's length is not a multiple of M.
    Ragged {
        /// Index of the grouped dimension.
        dim: usize,
        /// Its length.
        len: usize,
        /// The group size.
        m: u32,
    },
}

impl fmt::Display for NmShapeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NmShapeProblem::Rank(r) => write!(f, "rank {r} has no input dimension to group"),
            NmShapeProblem::TransposedRank(r) => {
                write!(
                    f,
                    "only a 2-D [in, out] tensor can be grouped transposed, not rank {r}"
                )
            }
            NmShapeProblem::Ragged { dim, len, m } => write!(
                f,
                "its input dimension (dimension {dim}, length {len}) is not a multiple of {m}"
            ),
        }
    }
}

/// Where the N:M groups of one tensor lie (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmGeometry {
    m: usize,
    inner: usize,
    units: u64,
}

impl NmGeometry {
    /// The groups of size `m` of a tensor of `shape`, along dimension 1, or
    /// along dimension 0 for a `transposed` (`[in, out]`) rank-2 tensor.
    pub fn new(
        shape: &[usize],
        transposed: bool,
        m: u32,
    ) -> std::result::Result<NmGeometry, NmShapeProblem> {
        if shape.len() < 2 {
            return Err(NmShapeProblem::Rank(shape.len()));
        }
        if transposed && shape.len() != 2 {
            return Err(NmShapeProblem::TransposedRank(shape.len()));
        }
        let dim = usize::from(!transposed);
        let len = shape[dim];
        if len % m as usize != 0 {
            return Err(NmShapeProblem::Ragged { dim, len, m });
        }
        let inner: usize = shape[dim + 1..].iter().product();
        let numel: u64 = shape.iter().map(|&d| d as u64).product();
        let unit = m as u64 * inner as u64;
        Ok(NmGeometry {
            m: m as usize,
            inner,
            units: numel.checked_div(unit).unwrap_or(0),
        })
    }

    /// Group size M.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Distance in elements between neighbours of one group.
    pub fn stride(&self) -> usize {
        self.inner
    }

    /// Elements in one unit: `M * inner`, holding `inner` whole groups.
    pub fn unit_len(&self) -> usize {
        self.m * self.inner
    }

    /// Units in the tensor.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Groups in the tensor.
    pub fn groups(&self) -> u64 {
        self.units * self.inner as u64
    }

    /// Row-major index in the tensor of element `j` of group `group`
    /// (groups are numbered unit by unit, then by offset in the unit).
    pub fn element(&self, group: u64, j: usize) -> u64 {
        let unit = group / self.inner as u64;
        let r = group % self.inner as u64;
        unit * self.unit_len() as u64 + r + (j * self.inner) as u64
    }

    /// Calls `f(group, offsets)` for each group of a range of whole units,
    /// `group` counted from the first unit of the range, `offsets` the group's
    /// element positions relative to the range's start.
    pub fn for_each_group(&self, units: usize, mut f: impl FnMut(u64, &[usize])) {
        let mut offsets = vec![0usize; self.m];
        for u in 0..units {
            for r in 0..self.inner {
                let start = u * self.unit_len() + r;
                for (j, o) in offsets.iter_mut().enumerate() {
                    *o = start + j * self.inner;
                }
                f((u * self.inner + r) as u64, &offsets);
            }
        }
    }
}

/// The outcome of checking part or all of a tensor against an N:M pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NmCount {
    /// Groups checked.
    pub groups: u64,
    /// Groups with more than N non-zeros.
    pub violating: u64,
    /// Row-major index of the first element of the first violating group.
    pub first_violation: Option<u64>,
}

impl NmCount {
    /// Adds the count of the range that follows this one.
    pub fn then(self, later: NmCount) -> NmCount {
        NmCount {
            groups: self.groups + later.groups,
            violating: self.violating + later.violating,
            first_violation: self.first_violation.or(later.first_violation),
        }
    }
}

/// Checks a range of whole units of a tensor (`bytes`, little-endian values
/// of `dtype`, starting at unit `first_unit`) against `pattern`. `-0.0`
/// counts as zero. `bytes` must hold a multiple of
/// `geometry.unit_len()` elements.
pub fn count_violations(
    bytes: &[u8],
    dtype: FloatType,
    geometry: &NmGeometry,
    pattern: NmPattern,
    first_unit: u64,
) -> NmCount {
    let unit_len = geometry.unit_len();
    let elements = bytes.len() / dtype.size();
    debug_assert_eq!(elements % unit_len.max(1), 0, "whole units");
    let units = elements.checked_div(unit_len).unwrap_or(0);
    let mut nonzero = Vec::with_capacity(elements);
    for_each_nonzero(bytes, dtype, |_, nz| nonzero.push(nz));
    let mut count = NmCount {
        groups: (units * geometry.inner) as u64,
        ..NmCount::default()
    };
    let n = pattern.n() as usize;
    geometry.for_each_group(units, |group, offsets| {
        let kept = offsets.iter().filter(|&&o| nonzero[o]).count();
        if kept > n {
            count.violating += 1;
            if count.first_violation.is_none() {
                let base = first_unit * geometry.inner as u64;
                count.first_violation = Some(geometry.element(base + group, 0));
            }
        }
    });
    count
}

#[cfg(test)]
mod tests;
