//! Summaries of a checkpoint (`soup inspect`): every tensor with its dtype,
//! shape, size and sparsity, totals, and metadata.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
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
}

/// Counts the zeros of every float tensor when `count_zeros` is set (one
/// streaming pass); otherwise reads only the headers.
pub fn inspect(
    checkpoint: &Checkpoint,
    count_zeros: bool,
    control: &Control,
) -> Result<Inspection> {
    let tensors = checkpoint.tensors();
    let mut zeros: Vec<Option<u64>> = tensors.iter().map(|t| t.float_type().map(|_| 0)).collect();
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
                let ty = rows.entry(p.tensor, 0).float_type().expect("float rows");
                let mut bits = Vec::new();
                let nonzero = crate::dtype::pack_mask(rows.bytes(0, p), ty, &mut bits);
                Ok(p.elems.len() as u64 - nonzero)
            },
            no_lag(),
            |window, counts| {
                for (p, c) in window.iter().zip(counts) {
                    if let Some(z) = zeros[floats[p.tensor]].as_mut() {
                        *z += c;
                    }
                }
                Ok(())
            },
        )?;
    }
    let summaries: Vec<TensorSummary> = tensors
        .iter()
        .zip(&zeros)
        .map(|(t, z)| TensorSummary {
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
    })
}
