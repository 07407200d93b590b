//! Comparing two checkpoints tensor by tensor (`soup diff`): largest absolute
//! difference, relative L2 distance, cosine similarity and mask differences
//! of float tensors, in one streaming pass over both.
//!
//! Float values are compared as numbers (widened to f64), so `0.0` equals
//! `-0.0` and an F16 value equals the same value stored as F32; a tensor is
//! nevertheless reported different when its dtype or shape differs.
//! Element `a` of the first checkpoint matches `b` of the second when
//! `|a - b| <= atol + rtol * |b|` (numpy's `isclose`) or both are the same
//! NaN. Integer and bool tensors are compared bit for bit. Metadata is
//! listed but does not decide equality.
//!
//! A NaN that meets anything but the same NaN makes the tensors differ, and
//! its gap is not a number: the largest difference, relative L2 distance
//! and cosine of that tensor are NaN (`nan` in soup's tables, `null` in
//! JSON, which has no NaN). Positions holding the same NaN on both sides
//! match and take no part in the distances. Infinities that differ make
//! the largest difference and the relative L2 distance infinite.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::Accumulator;
use crate::error::{Error, Result};
use crate::stream::{drive, no_lag, CheckpointRows, Control, Units};

/// Tolerances. The default is exact equality.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiffOptions {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the second checkpoint's value).
    pub rtol: f64,
}

/// The comparison of one tensor present in both checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDiff {
    /// Name.
    pub name: String,
    /// dtype in the first checkpoint.
    pub dtype_a: String,
    /// dtype in the second.
    pub dtype_b: String,
    /// Shape in the first.
    pub shape_a: Vec<usize>,
    /// Shape in the second.
    pub shape_b: Vec<usize>,
    /// Elements compared (0 when the shapes differ).
    pub compared: u64,
    /// Elements outside the tolerance (bit differences for non-float).
    pub differing: u64,
    /// Positions where one is zero and the other is not (float only).
    pub mask_differences: Option<u64>,
    /// Largest `|a - b|` (float only; NaN where a NaN meets another value,
    /// see the module documentation).
    pub max_abs_diff: Option<f64>,
    /// `||a - b|| / ||a||` (float only; `None` when `a` is all zeros and
    /// `b` is not; NaN as for `max_abs_diff`).
    pub rel_l2: Option<f64>,
    /// `a . b / (||a|| ||b||)` (float only; `None` when either is all zeros;
    /// NaN as for `max_abs_diff`).
    pub cosine: Option<f64>,
    /// Same dtype, same shape and no element outside the tolerance.
    pub equal: bool,
    /// Why the values could not be compared, if they could not.
    pub note: Option<String>,
}

/// What `soup diff` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffReport {
    /// First checkpoint.
    pub a: PathBuf,
    /// Second checkpoint.
    pub b: PathBuf,
    /// Absolute tolerance used.
    pub atol: f64,
    /// Relative tolerance used.
    pub rtol: f64,
    /// Tensor names only in the first.
    pub only_in_a: Vec<String>,
    /// Tensor names only in the second.
    pub only_in_b: Vec<String>,
    /// Tensors in both, in the first's storage order.
    pub tensors: Vec<TensorDiff>,
    /// How many of them differ.
    pub differing_tensors: usize,
    /// Metadata keys whose values differ or that only one has (informative).
    pub metadata_differences: Vec<String>,
    /// Same tensor names, and every tensor equal.
    pub equal: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    compared: u64,
    differing: u64,
    mask: u64,
    max_abs: f64,
    d2: f64,
    a2: f64,
    b2: f64,
    ab: f64,
    /// A NaN met a value other than the same NaN.
    nan: bool,
}

impl Acc {
    fn add(&mut self, o: Acc) {
        self.compared += o.compared;
        self.differing += o.differing;
        self.mask += o.mask;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.d2 += o.d2;
        self.a2 += o.a2;
        self.b2 += o.b2;
        self.ab += o.ab;
        self.nan |= o.nan;
    }
}

/// Compares `a` with `b`. See the module documentation.
pub fn diff(
    a: &Checkpoint,
    b: &Checkpoint,
    options: &DiffOptions,
    control: &Control,
) -> Result<DiffReport> {
    for (name, v) in [("atol", options.atol), ("rtol", options.rtol)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::invalid(format!(
                "{name} must be finite and non-negative, got {v}"
            )));
        }
    }
    let only_in_a: Vec<String> = a
        .tensors()
        .iter()
        .filter(|t| b.get(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    let only_in_b: Vec<String> = b
        .tensors()
        .iter()
        .filter(|t| a.get(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    let pairs: Vec<(&TensorEntry, &TensorEntry)> = a
        .tensors()
        .iter()
        .filter_map(|t| b.get(&t.name).map(|u| (t, u)))
        .collect();
    // Which pairs can be compared element by element, and why not.
    let notes: Vec<Option<String>> = pairs
        .iter()
        .map(|(x, y)| {
            if x.shape != y.shape {
                Some("shapes differ".to_string())
            } else if x.float_type().is_none() || y.float_type().is_none() {
                (x.dtype != y.dtype).then(|| "dtypes differ".to_string())
            } else {
                None
            }
        })
        .collect();
    // Only the pairs compared element by element are streamed.
    let streamed: Vec<usize> = (0..pairs.len()).filter(|&i| notes[i].is_none()).collect();
    let rows = CheckpointRows::new(
        vec![a, b],
        streamed
            .iter()
            .map(|&i| vec![pairs[i].0, pairs[i].1])
            .collect(),
        None,
    );
    let mut accs = vec![Acc::default(); pairs.len()];
    drive(
        &rows,
        control,
        "comparing",
        Units::Pieces,
        |_| Ok(()),
        |p, _, _| {
            if p.elems.is_empty() {
                return Ok(Acc::default());
            }
            let (x, y) = (rows.entry(p.tensor, 0), rows.entry(p.tensor, 1));
            let (bx, by) = (rows.bytes(0, p), rows.bytes(1, p));
            Ok(match (x.float_type(), y.float_type()) {
                (Some(tx), Some(ty)) => {
                    let (mut vx, mut vy) = (Vec::new(), Vec::new());
                    f64::decode(bx, tx, &mut vx);
                    f64::decode(by, ty, &mut vy);
                    compare_floats(&vx, &vy, options)
                }
                _ => {
                    let size = x.dtype.bitsize().div_ceil(8).max(1);
                    let differing = bx
                        .chunks(size)
                        .zip(by.chunks(size))
                        .filter(|(u, v)| u != v)
                        .count() as u64;
                    Acc {
                        compared: p.elems.len() as u64,
                        differing,
                        ..Acc::default()
                    }
                }
            })
        },
        no_lag(),
        |window, results| {
            for (p, r) in window.iter().zip(results) {
                accs[streamed[p.tensor]].add(*r);
            }
            Ok(())
        },
    )?;

    let tensors: Vec<TensorDiff> = pairs
        .iter()
        .zip(notes)
        .zip(accs)
        .map(|(((x, y), note), acc)| {
            let float = x.float_type().is_some() && y.float_type().is_some() && note.is_none();
            let note = note.or_else(|| (x.dtype != y.dtype).then(|| "dtypes differ".into()));
            let rel_l2 = if acc.nan {
                Some(f64::NAN)
            } else if acc.d2 == f64::INFINITY {
                Some(f64::INFINITY)
            } else if acc.a2 > 0.0 {
                Some(acc.d2.sqrt() / acc.a2.sqrt())
            } else if acc.d2 == 0.0 {
                Some(0.0)
            } else {
                None
            };
            let cosine = if acc.nan {
                Some(f64::NAN)
            } else {
                (acc.a2 > 0.0 && acc.b2 > 0.0).then(|| acc.ab / (acc.a2.sqrt() * acc.b2.sqrt()))
            };
            let max_abs = if acc.nan { f64::NAN } else { acc.max_abs };
            TensorDiff {
                name: x.name.clone(),
                dtype_a: crate::dtype::name(x.dtype),
                dtype_b: crate::dtype::name(y.dtype),
                shape_a: x.shape.clone(),
                shape_b: y.shape.clone(),
                compared: acc.compared,
                differing: acc.differing,
                mask_differences: float.then_some(acc.mask),
                max_abs_diff: float.then_some(max_abs),
                rel_l2: if float { rel_l2 } else { None },
                cosine: if float { cosine } else { None },
                equal: note.is_none() && acc.differing == 0,
                note,
            }
        })
        .collect();
    let mut metadata_differences: Vec<String> = a
        .metadata()
        .iter()
        .filter(|(k, v)| b.metadata().get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(
            b.metadata()
                .keys()
                .filter(|k| !a.metadata().contains_key(*k))
                .cloned(),
        )
        .collect();
    metadata_differences.sort();
    let differing_tensors = tensors.iter().filter(|t| !t.equal).count();
    Ok(DiffReport {
        a: a.path().to_path_buf(),
        b: b.path().to_path_buf(),
        atol: options.atol,
        rtol: options.rtol,
        equal: differing_tensors == 0 && only_in_a.is_empty() && only_in_b.is_empty(),
        only_in_a,
        only_in_b,
        tensors,
        differing_tensors,
        metadata_differences,
    })
}

fn compare_floats(x: &[f64], y: &[f64], options: &DiffOptions) -> Acc {
    let mut acc = Acc {
        compared: x.len() as u64,
        ..Acc::default()
    };
    for (&u, &v) in x.iter().zip(y) {
        let d = (u - v).abs();
        let same = u.to_bits() == v.to_bits() || d <= options.atol + options.rtol * v.abs();
        acc.differing += (!same) as u64;
        acc.mask += ((u != 0.0) != (v != 0.0)) as u64;
        if u.is_nan() || v.is_nan() {
            // The same NaN on both sides matches and is left out of the
            // distances; a NaN against anything else makes them NaN
            // (`f64::max` would drop a NaN, hence the flag).
            acc.nan |= !same;
            continue;
        }
        if d.is_finite() {
            acc.max_abs = acc.max_abs.max(d);
            acc.d2 += d * d;
        } else if !same {
            // Infinities that differ: the gap is unbounded, not zero.
            acc.max_abs = f64::INFINITY;
            acc.d2 = f64::INFINITY;
        }
        acc.a2 += u * u;
        acc.b2 += v * v;
        acc.ab += u * v;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_follows_isclose() {
        let o = DiffOptions {
            atol: 0.0,
            rtol: 0.0,
        };
        let acc = compare_floats(&[1.0, 0.0, -0.0, 2.0], &[1.0, -0.0, 0.0, 2.5], &o);
        assert_eq!((acc.differing, acc.mask, acc.max_abs), (1, 0, 0.5));
        let o = DiffOptions {
            atol: 0.1,
            rtol: 0.2,
        };
        assert_eq!(compare_floats(&[2.0], &[2.5], &o).differing, 0);
        assert_eq!(compare_floats(&[0.0], &[1.0], &o).mask, 1);
    }

    #[test]
    fn nan_against_a_number_is_a_nan_difference() {
        let o = DiffOptions {
            atol: 0.0,
            rtol: 0.0,
        };
        let acc = compare_floats(&[f64::NAN, 2.0], &[1.0, 2.0], &o);
        assert_eq!(acc.differing, 1);
        assert!(acc.nan);
        let mut sum = Acc::default();
        sum.add(acc);
        sum.add(compare_floats(&[5.0], &[1.0], &o));
        assert!(sum.nan, "a NaN survives adding windows");
        let same_nan = compare_floats(&[f64::NAN, 1.0], &[f64::NAN, 1.5], &o);
        assert_eq!((same_nan.differing, same_nan.nan), (1, false));
        assert_eq!(
            (same_nan.max_abs, same_nan.d2, same_nan.a2),
            (0.5, 0.25, 1.0)
        );
        let inf = compare_floats(&[f64::INFINITY], &[1.0], &o);
        assert_eq!(
            (inf.max_abs, inf.d2, inf.nan),
            (f64::INFINITY, f64::INFINITY, false)
        );
    }
}
