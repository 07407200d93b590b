//! `soup mask vote|union|intersect`: masks combined position by position.
//!
//! Every combination counts, per weight, the inputs that keep it and keeps
//! it in the result when at least `K` do: `K = 1` is the union, `K = n`
//! the intersection, and a vote takes `K = n / 2 + 1` (a strict majority)
//! unless told otherwise, as mask soups do.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::extract::{packed_layout, PackedDigests};
use super::{mask_metadata, MaskFileTensor, MaskRows, MaskSource};
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions};
use crate::provenance;
use crate::select::Selection;
use crate::stream::{drive, no_lag, Control, Units};

/// How masks are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combination {
    /// Kept where at least `min_votes` inputs keep it (default: a strict
    /// majority, `n / 2 + 1`).
    Vote {
        /// Inputs that must keep a weight.
        min_votes: Option<usize>,
    },
    /// Kept where any input keeps it.
    Union,
    /// Kept where every input keeps it.
    Intersect,
}

impl Combination {
    /// The names of the combinations (`soup mask vote|union|intersect`).
    pub const NAMES: [&'static str; 3] = ["vote", "union", "intersect"];

    /// The combination called `name` (a vote by a strict majority).
    pub fn named(name: &str) -> Result<Combination> {
        match name {
            "vote" => Ok(Combination::Vote { min_votes: None }),
            "union" => Ok(Combination::Union),
            "intersect" => Ok(Combination::Intersect),
            _ => {
                let (last, rest) = Combination::NAMES.split_last().expect("names");
                Err(Error::UnknownName {
                    what: "mask combination",
                    given: name.to_string(),
                    valid: format!("{} or {last}", rest.join(", ")),
                })
            }
        }
    }

    /// The combination's name.
    pub fn name(self) -> &'static str {
        match self {
            Combination::Vote { .. } => Combination::NAMES[0],
            Combination::Union => Combination::NAMES[1],
            Combination::Intersect => Combination::NAMES[2],
        }
    }

    /// The votes a weight needs among `n` inputs.
    pub fn threshold(self, n: usize) -> Result<usize> {
        let k = match self {
            Combination::Vote { min_votes } => min_votes.unwrap_or(n / 2 + 1),
            Combination::Union => 1,
            Combination::Intersect => n,
        };
        if k == 0 || k > n {
            return Err(Error::invalid(format!(
                "a mask vote needs between 1 and {n} votes (one per input), not {k}"
            )));
        }
        Ok(k)
    }
}

/// Parameters of [`combine_masks`].
#[derive(Debug, Clone)]
pub struct CombineOptions {
    /// How to combine.
    pub combination: Combination,
    /// Which masks (by tensor name) of the first input to combine.
    pub selection: Selection,
    /// Where and how to write.
    pub output: OutputOptions,
}

/// What [`combine_masks`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombineReport {
    /// The inputs (models or mask files).
    pub inputs: Vec<PathBuf>,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// How they were combined.
    pub combination: Combination,
    /// Inputs that had to keep a weight for the result to keep it.
    pub min_votes: usize,
    /// The masks written, in the first input's storage order.
    pub tensors: Vec<MaskFileTensor>,
    /// Bytes of packed bits written.
    pub packed_bytes: u64,
}

/// Combines the masks of `inputs` (models or mask files, in any mix) into
/// a mask file at `target`. The masks are those of the first input that
/// the selection picks; every other input must have a mask of the same
/// shape for each.
pub fn combine_masks(
    inputs: &[MaskSource],
    target: &Path,
    options: &CombineOptions,
    control: &Control,
) -> Result<CombineReport> {
    if inputs.len() < 2 {
        return Err(Error::invalid("combining masks needs two or more inputs"));
    }
    let n = inputs.len();
    let need = options.combination.threshold(n)?;
    let first = &inputs[0];
    let mut rows = Vec::new();
    for t in first.tensors() {
        if !options.selection.matches(t.name) {
            continue;
        }
        let mut row = vec![t];
        for other in &inputs[1..] {
            row.push(other.find(t.name, t.shape, first.path())?);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no masks selected to combine",
            first.path().display()
        )));
    }
    let chosen: Vec<_> = rows
        .iter()
        .map(|r| (r[0].name.to_string(), r[0].shape.to_vec(), r[0].dtype))
        .collect();
    let (layout, mut infos) = packed_layout(&chosen);
    let recipe = serde_json::json!({
        "combination": options.combination,
        "min_votes": need,
        "include": options.selection.include_patterns(),
        "exclude": options.selection.exclude_patterns(),
    });
    let operation = "mask-combine";
    let described = |digests: &[String]| -> Vec<(String, String)> {
        inputs
            .iter()
            .zip(digests)
            .map(|(s, d)| (s.path().display().to_string(), d.clone()))
            .collect()
    };
    let mut metadata = mask_metadata(&infos);
    provenance::record(
        &mut metadata,
        operation,
        recipe.clone(),
        &described(&vec![control.digest.placeholder(); n]),
    );
    let files: Vec<&Path> = inputs
        .iter()
        .flat_map(|s| s.checkpoint().files_with_index())
        .collect();
    let mut output = Output::create(target, &layout, metadata, &files, &options.output)?;
    let rows = MaskRows {
        sources: inputs,
        rows,
    };
    let mut digests = PackedDigests::default();
    let mut zeros = vec![0u64; chosen.len()];
    drive(
        &rows,
        control,
        "combining masks",
        Units::Pieces,
        |_| Ok(()),
        |p, _, _| -> Result<(Vec<u8>, u64)> {
            let len = p.elems.len().div_ceil(8);
            let mut bits = vec![0u8; len * n];
            for (k, (s, t)) in inputs.iter().zip(&rows.rows[p.tensor]).enumerate() {
                s.pack_into(t, p.elems.clone(), &mut bits[k * len..(k + 1) * len]);
            }
            let mut out = vec![0u8; len];
            let mut ones = 0u64;
            for (b, o) in out.iter_mut().enumerate() {
                for bit in 0..8 {
                    let votes = (0..n)
                        .filter(|&k| bits[k * len + b] >> bit & 1 != 0)
                        .count();
                    if votes >= need {
                        *o |= 1 << bit;
                    }
                }
                ones += u64::from(o.count_ones());
            }
            output.write(p.tensor, p.elems.start / 8, &out)?;
            Ok((out, p.elems.len() as u64 - ones))
        },
        no_lag(),
        |window, results| {
            for (p, (bits, z)) in window.iter().zip(results) {
                zeros[p.tensor] += z;
                digests.feed(p.first, p.last, bits);
            }
            Ok(())
        },
    )?;
    let input_digests: Vec<String> = inputs
        .iter()
        .map(|s| Ok(crate::hash::hash_checkpoint(s.checkpoint(), control)?.digest))
        .collect::<Result<_>>()?;
    for ((name, _, _), digest) in chosen.iter().zip(&digests.done) {
        infos.get_mut(name).expect("listed").digest = digest.clone();
    }
    let mut metadata = mask_metadata(&infos);
    provenance::record(&mut metadata, operation, recipe, &described(&input_digests));
    *output.metadata_mut() = metadata;
    for s in inputs {
        s.checkpoint().check_unchanged()?;
    }
    let outputs = output.commit()?;
    Ok(CombineReport {
        inputs: inputs.iter().map(|s| s.path().to_path_buf()).collect(),
        outputs,
        combination: options.combination,
        min_votes: need,
        packed_bytes: layout.iter().map(|t| t.nbytes() as u64).sum(),
        tensors: chosen
            .iter()
            .zip(&zeros)
            .zip(digests.done)
            .map(|(((name, shape, _), &z), digest)| MaskFileTensor {
                name: name.clone(),
                numel: shape.iter().product::<usize>() as u64,
                shape: shape.clone(),
                zeros: z,
                digest,
            })
            .collect(),
    })
}
