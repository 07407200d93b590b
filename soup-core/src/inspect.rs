//! Summaries of a checkpoint (`soup inspect`): every tensor with its dtype,
//! shape, size and sparsity, totals, and metadata; on request, whether each
//! prunable tensor follows an N:M pattern, found in the same pass over the
//! data as the zeros (see [`crate::nm_check`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::nm::{NmCount, NmGeometry, NmPattern};
use crate::nm_check::{count_piece, NmRule};
use crate::stream::{drive, no_lag, CheckpointRows, Control, Units};

/// One tensor of an inspected checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSummary {
    /// Name.
    pub name: String,
    /// dtype name (`F32`...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub numel: u64,
    /// Bytes of data.
    pub bytes: u64,
    /// Zeros (float tensors only).
    pub zeros: Option<u64>,
    /// Fraction of zeros (float tensors only).
    pub sparsity: Option<f64>,
    /// The file holding it.
    pub file: PathBuf,
    /// Whether it follows the N:M pattern asked for: `None` when no pattern
    /// was asked for or the pattern's rule does not select the tensor;
    /// `false` for a selected tensor whose shape has no groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nm: Option<bool>,
}

/// What `soup inspect` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspection {
    /// The checkpoint.
    pub path: PathBuf,
    /// Files behind it.
    pub files: Vec<PathBuf>,
    /// Tensors in storage order.
    pub tensors: Vec<TensorSummary>,
    /// Total elements.
    pub numel: u64,
    /// Total bytes of tensor data.
    pub bytes: u64,
    /// Zeros over all float tensors.
    pub float_zeros: u64,
    /// Elements of all float tensors.
    pub float_numel: u64,
    /// Header metadata.
    pub metadata: BTreeMap<String, String>,
    /// The N:M pattern the tensors were checked against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nm: Option<NmPattern>,
}

/// Counts the zeros of every float tensor when `count_zeros` is set (one
/// streaming pass); otherwise reads only the headers.
pub fn inspect(
    checkpoint: &Checkpoint,
    count_zeros: bool,
    control: &Control,
) -> Result<Inspection> {
    inspect_nm(checkpoint, count_zeros, None, control)
}

/// [`inspect`], and with `nm` (which needs `count_zeros`, the pass over
/// the data) whether each tensor the rule selects follows its pattern.
pub fn inspect_nm(
    checkpoint: &Checkpoint,
    count_zeros: bool,
    nm: Option<&NmRule>,
    control: &Control,
) -> Result<Inspection> {
    let tensors = checkpoint.tensors();
    let mut zeros: Vec<Option<u64>> = tensors.iter().map(|t| t.float_type().map(|_| 0)).collect();
    // Per tensor the rule selects: its groups, or `None` without any.
    let geometries: Vec<Option<Option<NmGeometry>>> = tensors
        .iter()
        .map(|t| {
            let rule = nm.filter(|r| count_zeros && r.selects(t))?;
            Some(rule.geometry(t).ok())
        })
        .collect();
    let mut counts = vec![NmCount::default(); tensors.len()];
    if count_zeros {
        let floats: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].float_type().is_some())
            .collect();
        let rows = CheckpointRows::new(
            vec![checkpoint],
            floats.iter().map(|&i| vec![&tensors[i]]).collect(),
            None,
        );
        drive(
            &rows,
            control,
            "counting zeros",
            Units::Pieces,
            |_| Ok(()),
            |p, _, _| {
                let t = rows.entry(p.tensor, 0);
                let ty = t.float_type().expect("float rows");
                let mut bits = Vec::new();
                let nonzero = crate::dtype::pack_mask(rows.bytes(0, p), ty, &mut bits);
                let nm = match (&geometries[floats[p.tensor]], nm) {
                    (Some(Some(g)), Some(rule)) if g.units() > 0 => {
                        count_piece(g, ty, rule.pattern(), &p.elems, |e| {
                            Ok(checkpoint.bytes(t, t.byte_range(&e)).into())
                        })?
                    }
                    _ => NmCount::default(),
                };
                Ok((p.elems.len() as u64 - nonzero, nm))
            },
            no_lag(),
            |window, found| {
                for (p, (z, c)) in window.iter().zip(found) {
                    let i = floats[p.tensor];
                    if let Some(total) = zeros[i].as_mut() {
                        *total += z;
                    }
                    counts[i] = counts[i].then(*c);
                }
                Ok(())
            },
        )?;
    }
    let summaries: Vec<TensorSummary> = tensors
        .iter()
        .zip(&zeros)
        .zip(geometries.iter().zip(&counts))
        .map(|((t, z), (g, c))| TensorSummary {
            name: t.name.clone(),
            dtype: crate::dtype::name(t.dtype),
            shape: t.shape.clone(),
            numel: t.numel() as u64,
            bytes: t.nbytes() as u64,
            zeros: z.filter(|_| count_zeros),
            sparsity: z.filter(|_| count_zeros).map(|z| {
                if t.numel() == 0 {
                    0.0
                } else {
                    z as f64 / t.numel() as f64
                }
            }),
            file: checkpoint.file_of(t).to_path_buf(),
            nm: g.map(|g| g.is_some() && c.violating == 0),
        })
        .collect();
    Ok(Inspection {
        path: checkpoint.path().to_path_buf(),
        files: checkpoint.files().map(|p| p.to_path_buf()).collect(),
        numel: summaries.iter().map(|t| t.numel).sum(),
        bytes: checkpoint.data_bytes(),
        float_zeros: summaries.iter().filter_map(|t| t.zeros).sum(),
        float_numel: summaries
            .iter()
            .filter(|t| t.zeros.is_some())
            .map(|t| t.numel)
            .sum(),
        tensors: summaries,
        metadata: checkpoint.metadata().clone(),
        nm: nm.filter(|_| count_zeros).map(NmRule::pattern),
    })
}
