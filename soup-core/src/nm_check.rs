//! Checking that tensors follow an N:M pattern exactly (`soup check-mask
//! --nm`, `soup merge --nm`, `soup inspect --nm`).
//!
//! The checked tensors are the prunable ones ([`PruneSelection`]: by
//! default float tensors of rank >= 2 named `*weight`, or those chosen by
//! include and exclude patterns), with their groups where
//! [`NmGeometry`] puts them; tensors named by the transposed patterns are
//! `[in, out]` and grouped along their first dimension. A tensor whose
//! shape has no groups (rank 1, or an input dimension that is not a
//! multiple of M) fails, with the reason.
//!
//! The check streams each checkpoint in bounded windows on all threads.
//! Each piece of a window counts the groups of the whole units that start
//! in it (a unit may run on into the next piece's bytes, which are mapped
//! all the same), so every group is counted exactly once, whatever the
//! window and piece sizes; the counts of a tensor's pieces are added in
//! order, which keeps the first violation the first in row-major order.

use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::nm::{count_violations, NmCount, NmGeometry, NmPattern, NmShapeProblem};
use crate::output::OutputTensor;
use crate::prune::PruneSelection;
use crate::semi_structured::{check_kernel, KernelCheck, SemiStructuredKernel};
use crate::stream::{drive, no_lag, CheckpointRows, Control, Piece, Rows, Units};

/// Which tensors an N:M check covers and where their groups lie.
#[derive(Debug, Clone)]
pub struct NmRule {
    pattern: NmPattern,
    selection: PruneSelection,
    transposed: Vec<Regex>,
}

impl NmRule {
    /// The rule for `pattern` over the prunable tensors chosen by `include`
    /// and `exclude` (see [`PruneSelection`]); tensors whose names match
    /// one of `transposed` are `[in, out]`. A bad regex is an error naming
    /// it.
    pub fn new(
        pattern: NmPattern,
        include: &[String],
        exclude: &[String],
        transposed: &[String],
    ) -> Result<NmRule> {
        let transposed = crate::select::compile_patterns(transposed)?;
        Ok(NmRule {
            pattern,
            selection: PruneSelection::new(include, exclude)?,
            transposed,
        })
    }

    /// The rule for `pattern` over the default prunable tensors, none
    /// transposed.
    pub fn standard(pattern: NmPattern) -> NmRule {
        NmRule {
            pattern,
            selection: PruneSelection::standard(),
            transposed: Vec::new(),
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> NmPattern {
        self.pattern
    }

    /// Whether the rule checks `tensor`.
    pub fn selects(&self, tensor: &TensorEntry) -> bool {
        self.selection.selects(tensor)
    }

    /// Whether a tensor called `name` is stored `[in, out]`.
    pub fn is_transposed(&self, name: &str) -> bool {
        self.transposed.iter().any(|r| r.is_match(name))
    }

    /// Where the groups of `tensor` lie, or why it has none.
    pub fn geometry(
        &self,
        tensor: &TensorEntry,
    ) -> std::result::Result<NmGeometry, NmShapeProblem> {
        NmGeometry::new(
            &tensor.shape,
            self.is_transposed(&tensor.name),
            self.pattern.m(),
        )
    }
}

/// The N:M check of one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorNm {
    /// Name.
    pub name: String,
    /// dtype name.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Whether it is grouped as `[in, out]`.
    pub transposed: bool,
    /// Groups checked.
    pub groups: u64,
    /// Groups with more than N non-zeros.
    pub violating: u64,
    /// Row-major index of the first element of the first violating group.
    pub first_violation: Option<u64>,
    /// The same element as an index per dimension.
    pub first_violation_at: Option<Vec<usize>>,
    /// Why the tensor has no groups (it then fails).
    pub shape_problem: Option<String>,
    /// The kernel's verdict, when a kernel was asked about.
    pub kernel: Option<KernelCheck>,
    /// Whether the tensor passes: it has groups, none violates the
    /// pattern, and the kernel (if any) takes it.
    pub passed: bool,
}

/// The N:M check of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmReport {
    /// The checkpoint.
    pub path: PathBuf,
    /// The pattern checked.
    pub pattern: NmPattern,
    /// The kernel whose rules were checked too.
    pub kernel: Option<SemiStructuredKernel>,
    /// The checked tensors, in storage order.
    pub tensors: Vec<TensorNm>,
    /// Tensors checked.
    pub checked: usize,
    /// Tensors that fail.
    pub failing: usize,
    /// Whether every checked tensor passes.
    pub passed: bool,
}

/// The N:M check of several checkpoints (`soup check-mask --nm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmCheckReport {
    /// The pattern checked.
    pub pattern: NmPattern,
    /// The kernel whose rules were checked too.
    pub kernel: Option<SemiStructuredKernel>,
    /// One report per checkpoint, in the order given.
    pub checkpoints: Vec<NmReport>,
    /// Whether every checked tensor of every checkpoint passes.
    pub passed: bool,
}

/// [`check_nm`] of each checkpoint in turn; a checkpoint with no tensor to
/// check is [`Error::NothingToCheck`].
pub fn check_nm_all(
    checkpoints: &[Checkpoint],
    rule: &NmRule,
    kernel: Option<SemiStructuredKernel>,
    control: &Control,
) -> Result<NmCheckReport> {
    let reports = checkpoints
        .iter()
        .map(|c| check_nm(c, rule, kernel, control))
        .collect::<Result<Vec<_>>>()?;
    if let Some(empty) = reports.iter().find(|r| r.checked == 0) {
        return Err(Error::NothingToCheck {
            path: empty.path.clone(),
            pattern: rule.pattern.to_string(),
        });
    }
    Ok(NmCheckReport {
        pattern: rule.pattern,
        kernel,
        passed: reports.iter().all(|r| r.passed),
        checkpoints: reports,
    })
}

/// `flat` as an index per dimension of `shape` (row-major).
pub fn unravel(shape: &[usize], mut flat: u64) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        let d = d.max(1) as u64;
        index[i] = (flat % d) as usize;
        flat /= d;
    }
    index
}

/// The whole units that start in `elems`: their range, and its elements.
fn units_of(geometry: &NmGeometry, elems: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    let len = geometry.unit_len();
    let units = geometry.units() as usize;
    (elems.start.div_ceil(len)).min(units)..(elems.end.div_ceil(len)).min(units)
}

/// Counts the violations of the units starting in `piece` of a tensor
/// whose bytes `read(element range)` gives.
pub(crate) fn count_piece<'b>(
    geometry: &NmGeometry,
    dtype: FloatType,
    pattern: NmPattern,
    elems: &std::ops::Range<usize>,
    read: impl FnOnce(std::ops::Range<usize>) -> Result<std::borrow::Cow<'b, [u8]>>,
) -> Result<NmCount> {
    let units = units_of(geometry, elems);
    if units.is_empty() {
        return Ok(NmCount::default());
    }
    let len = geometry.unit_len();
    let bytes = read(units.start * len..units.end * len)?;
    Ok(count_violations(
        &bytes,
        dtype,
        geometry,
        pattern,
        units.start as u64,
    ))
}

/// Checks every tensor of `checkpoint` that `rule` selects against its
/// pattern and, with `kernel`, against the kernel's rules.
pub fn check_nm(
    checkpoint: &Checkpoint,
    rule: &NmRule,
    kernel: Option<SemiStructuredKernel>,
    control: &Control,
) -> Result<NmReport> {
    let selected: Vec<&TensorEntry> = checkpoint
        .tensors()
        .iter()
        .filter(|t| rule.selects(t))
        .collect();
    let geometries: Vec<_> = selected.iter().map(|t| rule.geometry(t)).collect();
    // Rows: the tensors that have groups to read.
    let streamed: Vec<usize> = (0..selected.len())
        .filter(|&i| matches!(&geometries[i], Ok(g) if g.units() > 0))
        .collect();
    let rows = CheckpointRows::new(
        vec![checkpoint],
        streamed.iter().map(|&i| vec![selected[i]]).collect(),
        None,
    );
    let geometry = |row: usize| *geometries[streamed[row]].as_ref().expect("streamed");
    let mut counts = vec![NmCount::default(); selected.len()];
    drive(
        &rows,
        control,
        "checking N:M groups",
        Units::Pieces,
        |_| Ok(()),
        |piece: &Piece, _, _| {
            let t = rows.entry(piece.tensor, 0);
            let ty = t.float_type().expect("prunable tensors are float");
            count_piece(
                &geometry(piece.tensor),
                ty,
                rule.pattern,
                &piece.elems,
                |e| Ok(checkpoint.bytes(t, t.byte_range(&e)).into()),
            )
        },
        no_lag(),
        |window, found| {
            for (piece, c) in window.iter().zip(found) {
                let i = streamed[piece.tensor];
                counts[i] = counts[i].then(*c);
            }
            Ok(())
        },
    )?;
    checkpoint.check_unchanged()?;
    let tensors: Vec<TensorNm> = selected
        .iter()
        .zip(&geometries)
        .zip(counts)
        .map(|((t, g), c)| tensor_result(t, rule, g, c, kernel))
        .collect();
    let failing = tensors.iter().filter(|t| !t.passed).count();
    Ok(NmReport {
        path: checkpoint.path().to_path_buf(),
        pattern: rule.pattern,
        kernel,
        checked: tensors.len(),
        failing,
        passed: failing == 0,
        tensors,
    })
}

fn tensor_result(
    t: &TensorEntry,
    rule: &NmRule,
    geometry: &std::result::Result<NmGeometry, NmShapeProblem>,
    count: NmCount,
    kernel: Option<SemiStructuredKernel>,
) -> TensorNm {
    let transposed = rule.is_transposed(&t.name);
    let kernel = kernel.map(|k| check_kernel(k, t.dtype, &t.shape, transposed, rule.pattern));
    let shape_problem = geometry.as_ref().err().map(|p| p.to_string());
    TensorNm {
        name: t.name.clone(),
        dtype: crate::dtype::name(t.dtype),
        shape: t.shape.clone(),
        transposed,
        groups: count.groups,
        violating: count.violating,
        first_violation: count.first_violation,
        first_violation_at: count.first_violation.map(|f| unravel(&t.shape, f)),
        passed: shape_problem.is_none()
            && count.violating == 0
            && kernel.as_ref().is_none_or(|k| k.passed),
        shape_problem,
        kernel,
    }
}

/// The tensors of a written output that a check reads: per stream row,
/// the output's tensor index, groups and float type.
struct Written(Vec<(usize, NmGeometry, FloatType)>);

impl Rows for Written {
    fn rows(&self) -> usize {
        self.0.len()
    }
    fn numel(&self, row: usize) -> usize {
        let (_, g, _) = &self.0[row];
        g.units() as usize * g.unit_len()
    }
    fn elem_bytes(&self, row: usize) -> usize {
        self.0[row].2.size()
    }
}

/// Reads `buf.len()` bytes of a written tensor: `(tensor, byte offset,
/// buf)`.
pub(crate) type ReadBack<'a> = dyn Fn(usize, usize, &mut [u8]) -> Result<()> + Sync + 'a;

/// Checks the tensors of an output called `target` (laid out as
/// `tensors`, read back with `read(tensor, byte offset, buffer)`) that
/// `rule` selects after they are written and before the output is
/// committed; the first tensor that breaks the pattern is an error
/// ([`Error::PatternBroken`]). Tensors without groups are not checked.
pub(crate) fn check_written(
    target: &std::path::Path,
    read: &ReadBack<'_>,
    tensors: &[OutputTensor],
    rule: &NmRule,
    control: &Control,
) -> Result<()> {
    let checked: Vec<(usize, NmGeometry, FloatType)> = tensors
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let ty = FloatType::of(t.dtype)?;
            if !rule.selection.selects_parts(&t.name, t.shape.len(), true) {
                return None;
            }
            let transposed = rule.is_transposed(&t.name);
            let g = NmGeometry::new(&t.shape, transposed, rule.pattern.m()).ok()?;
            (g.units() > 0).then_some((i, g, ty))
        })
        .collect();
    let rows = Written(checked);
    let mut counts = vec![NmCount::default(); rows.0.len()];
    drive(
        &rows,
        control,
        "checking the result's N:M groups",
        Units::Pieces,
        |_| Ok(()),
        |piece: &Piece, _, _| {
            let (i, g, ty) = &rows.0[piece.tensor];
            count_piece(g, *ty, rule.pattern, &piece.elems, |e| {
                let mut buf = vec![0u8; e.len() * ty.size()];
                read(*i, e.start * ty.size(), &mut buf)?;
                Ok(buf.into())
            })
        },
        no_lag(),
        |window, found| {
            for (piece, c) in window.iter().zip(found) {
                counts[piece.tensor] = counts[piece.tensor].then(*c);
            }
            for piece in window.iter().filter(|p| p.last) {
                let c = counts[piece.tensor];
                if let Some(first) = c.first_violation {
                    let t = &tensors[rows.0[piece.tensor].0];
                    return Err(Error::PatternBroken {
                        path: target.to_path_buf(),
                        tensor: t.name.clone(),
                        pattern: rule.pattern.to_string(),
                        violating: c.violating,
                        groups: c.groups,
                        first: unravel(&t.shape, first),
                    });
                }
            }
            Ok(())
        },
    )
}

#[cfg(test)]
#[path = "nm_check_tests.rs"]
mod tests;
