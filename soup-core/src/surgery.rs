//! Checkpoint surgery: renaming, dropping and casting tensors and editing
//! metadata ([`edit`]), zeroing one checkpoint wherever another is zero
//! ([`apply_mask`]), and changing the file layout ([`relayout`]: `soup
//! shard` and `soup unshard`).
//!
//! Each operation streams its input once in bounded windows, writes its
//! output atomically and records provenance, like [`merge()`](crate::merge()).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::dtype::{Accumulator, FloatType};
use crate::error::{Error, PairKind, Result};
use crate::maskfile::{MaskSource, MaskTensor};
use crate::output::{Output, OutputOptions, OutputTensor};
use crate::provenance;
use crate::select::Selection;
use crate::stream::Control;

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::invalid(format!("invalid regex `{pattern}`: {e}")))
}

/// Parameters of [`edit`], as the user wrote them (parsed and checked
/// before any data is read).
///
/// Tensors are chosen by their original names: `keep` (if any) keeps only
/// matches, `drop` removes matches, `cast_only` limits `cast`. Renames then
/// apply in order, each replacing every match (`$1`, `${name}` refer to
/// groups). Metadata: deletions, then settings; `soup.*` keys are soup's own.
#[derive(Debug, Clone, Default)]
pub struct EditOptions {
    /// `REGEX=REPLACEMENT` renames.
    pub rename: Vec<String>,
    /// Drop tensors whose names match one of these.
    pub drop: Vec<String>,
    /// Keep only tensors whose names match one of these.
    pub keep: Vec<String>,
    /// Cast float tensors to this dtype (`F32`, `F16`, `BF16`, `F64`).
    pub cast: Option<String>,
    /// Cast only tensors whose names match one of these.
    pub cast_only: Vec<String>,
    /// `KEY=VALUE` metadata to set.
    pub set_meta: Vec<String>,
    /// Metadata keys to delete.
    pub del_meta: Vec<String>,
    /// Where and how to write.
    pub output: OutputOptions,
}

/// What [`edit`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditReport {
    /// The input.
    pub input: PathBuf,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Content hash of the input.
    pub input_digest: String,
    /// Tensors written.
    pub tensors: usize,
    /// `(old, new)` names of renamed tensors.
    pub renamed: Vec<(String, String)>,
    /// Dropped tensors.
    pub dropped: Vec<String>,
    /// `(name, from, to)` of cast tensors (original names).
    pub cast: Vec<(String, String, String)>,
    /// Metadata of the output (without soup's provenance keys).
    pub metadata: BTreeMap<String, String>,
}

/// One input tensor's fate.
struct Fate {
    out: Option<usize>,
    cast: Option<(FloatType, FloatType)>,
}

fn split_pair(kind: PairKind, s: &str) -> Result<(&str, &str)> {
    s.split_once('=').ok_or_else(|| Error::NotAPair {
        kind,
        value: s.to_string(),
    })
}

/// Renames, drops, casts and edits metadata. See [`EditOptions`].
pub fn edit(
    input: &Checkpoint,
    target: &Path,
    options: &EditOptions,
    control: &Control,
) -> Result<EditReport> {
    let renames: Vec<(Regex, &str)> = options
        .rename
        .iter()
        .map(|r| {
            let (pattern, replacement) = split_pair(PairKind::Rename, r)?;
            Ok((compile(pattern)?, replacement))
        })
        .collect::<Result<_>>()?;
    let drop: Vec<Regex> = options
        .drop
        .iter()
        .map(|p| compile(p))
        .collect::<Result<_>>()?;
    let keep: Vec<Regex> = options
        .keep
        .iter()
        .map(|p| compile(p))
        .collect::<Result<_>>()?;
    let only: Vec<Regex> = options
        .cast_only
        .iter()
        .map(|p| compile(p))
        .collect::<Result<_>>()?;
    if !only.is_empty() && options.cast.is_none() {
        return Err(Error::CastTypeMissing);
    }
    let cast = match &options.cast {
        None => None,
        Some(name) => {
            let dtype = crate::dtype::parse(name)?;
            Some(FloatType::of(dtype).ok_or_else(|| Error::CastNotFloat {
                dtype: name.clone(),
            })?)
        }
    };
    let mut metadata = provenance::common_metadata(&[input]);
    for key in &options.del_meta {
        if key.starts_with(provenance::PREFIX) {
            return Err(Error::invalid(format!(
                "metadata key `{key}` belongs to soup's provenance and is rewritten on every write"
            )));
        }
        metadata.remove(key);
    }
    for pair in &options.set_meta {
        let (key, value) = split_pair(PairKind::Metadata, pair)?;
        if key.is_empty()
            || key.starts_with(provenance::PREFIX)
            || key == crate::header::METADATA_KEY
        {
            return Err(Error::invalid(format!(
                "cannot set metadata key `{key}` (empty, reserved, or soup's own)"
            )));
        }
        metadata.insert(key.to_string(), value.to_string());
    }

    let mut fates = Vec::with_capacity(input.tensors().len());
    let mut layout = Vec::new();
    let mut renamed = Vec::new();
    let mut dropped = Vec::new();
    let mut casts = Vec::new();
    let mut taken: HashMap<String, String> = HashMap::new();
    for t in input.tensors() {
        let kept = (keep.is_empty() || keep.iter().any(|r| r.is_match(&t.name)))
            && !drop.iter().any(|r| r.is_match(&t.name));
        if !kept {
            dropped.push(t.name.clone());
            fates.push(Fate {
                out: None,
                cast: None,
            });
            continue;
        }
        let mut name = t.name.clone();
        for (re, replacement) in &renames {
            name = re.replace_all(&name, *replacement).into_owned();
        }
        if name.is_empty() && name != t.name {
            return Err(Error::invalid(format!(
                "renaming leaves tensor `{}` without a name",
                t.name
            )));
        }
        if name == crate::header::METADATA_KEY {
            return Err(Error::invalid(format!(
                "renaming tensor `{}` to `{name}`: the name is reserved for the header's metadata",
                t.name
            )));
        }
        if let Some(other) = taken.insert(name.clone(), t.name.clone()) {
            return Err(Error::invalid(format!(
                "name collision: `{other}` and `{}` would both be called `{name}`",
                t.name
            )));
        }
        if name != t.name {
            renamed.push((t.name.clone(), name.clone()));
        }
        let conversion = match (cast, t.float_type()) {
            (Some(to), Some(from))
                if from != to && (only.is_empty() || only.iter().any(|r| r.is_match(&t.name))) =>
            {
                casts.push((
                    t.name.clone(),
                    crate::dtype::name(from.dtype()),
                    crate::dtype::name(to.dtype()),
                ));
                Some((from, to))
            }
            _ => None,
        };
        fates.push(Fate {
            out: Some(layout.len()),
            cast: conversion,
        });
        layout.push(OutputTensor {
            name,
            dtype: conversion.map_or(t.dtype, |(_, to)| to.dtype()),
            shape: t.shape.clone(),
        });
    }
    if layout.is_empty() {
        return Err(Error::invalid(format!(
            "{}: the edit would leave no tensors",
            input.path().display()
        )));
    }
    let recipe = serde_json::json!({
        "rename": options.rename,
        "drop": options.drop,
        "keep": options.keep,
        "cast": cast.map(|t| crate::dtype::name(t.dtype())),
        "only": options.cast_only,
        "set_meta": options.set_meta,
        "del_meta": options.del_meta,
    });
    let report_metadata = metadata.clone();
    let (outputs, sha) = write_streamed(
        input,
        target,
        &layout,
        metadata,
        "edit",
        recipe,
        &options.output,
        control,
        &|i, bytes, out_bytes: &mut Vec<u8>| {
            let fate = &fates[i];
            let o = fate.out?;
            match fate.cast {
                None => Some((o, None)),
                Some((from, to)) => {
                    out_bytes.clear();
                    if from == FloatType::F64 {
                        let mut v = Vec::new();
                        f64::decode(bytes, from, &mut v);
                        f64::encode(&v, to, out_bytes);
                    } else {
                        let mut v = Vec::new();
                        f32::decode(bytes, from, &mut v);
                        f32::encode(&v, to, out_bytes);
                    }
                    Some((o, Some(to)))
                }
            }
        },
    )?;
    Ok(EditReport {
        input: input.path().to_path_buf(),
        outputs,
        input_digest: sha,
        tensors: layout.len(),
        renamed,
        dropped,
        cast: casts,
        metadata: report_metadata,
    })
}

/// A piece's destination: `(output tensor, cast to)`; the closure fills the
/// converted bytes when it casts. `None` drops the piece.
type Route<'a> =
    dyn Fn(usize, &[u8], &mut Vec<u8>) -> Option<(usize, Option<FloatType>)> + Sync + 'a;

/// Streams `input` into a new output laid out as `layout`, routing each
/// piece with `route`, and records provenance for `operation`.
#[allow(clippy::too_many_arguments)]
fn write_streamed(
    input: &Checkpoint,
    target: &Path,
    layout: &[OutputTensor],
    metadata: BTreeMap<String, String>,
    operation: &str,
    recipe: serde_json::Value,
    output_options: &OutputOptions,
    control: &Control,
    route: &Route,
) -> Result<(Vec<PathBuf>, String)> {
    let name = input.path().display().to_string();
    let mut provisional = metadata.clone();
    provenance::record(
        &mut provisional,
        operation,
        recipe.clone(),
        &[(name.clone(), control.digest.placeholder())],
    );
    let files: Vec<&Path> = input.files_with_index().collect();
    let mut output = Output::create(target, layout, provisional, &files, output_options)?;
    let sha = crate::rewrite::stream(
        input,
        &|_| 0,
        control,
        operation,
        true,
        |_| Ok(()),
        |p, _, _| {
            let t = &input.tensors()[p.tensor];
            let range = t.byte_range(&p.elems);
            let bytes = input.bytes(t, range.clone());
            let mut converted = Vec::new();
            match route(p.tensor, bytes, &mut converted) {
                None => Ok(()),
                Some((o, None)) => output.write(o, range.start, bytes),
                Some((o, Some(to))) => output.write(o, p.elems.start * to.size(), &converted),
            }
        },
        |_, ()| {},
    )?
    .expect("hashed");
    let mut metadata = metadata;
    provenance::record(&mut metadata, operation, recipe, &[(name, sha.clone())]);
    *output.metadata_mut() = metadata;
    input.check_unchanged()?;
    Ok((output.commit()?, sha))
}

/// What [`relayout`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayoutReport {
    /// The input.
    pub input: PathBuf,
    /// Files written (shards and index, or one file).
    pub outputs: Vec<PathBuf>,
    /// Content hash of the input, which the output shares.
    pub input_digest: String,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub bytes: u64,
}

/// Copies `input` unchanged into a new layout: Hugging Face shards of at
/// most `output.shard_size` bytes (`soup shard`), or one file when it is
/// `None` (`soup unshard`). Tensors, values and metadata are kept, so the
/// content hash does not change.
pub fn relayout(
    input: &Checkpoint,
    target: &Path,
    output: &OutputOptions,
    control: &Control,
) -> Result<RelayoutReport> {
    let layout: Vec<OutputTensor> = input.tensors().iter().map(OutputTensor::from).collect();
    let operation = if output.shard_size.is_some() {
        "shard"
    } else {
        "unshard"
    };
    let recipe = serde_json::json!({ "shard_size": output.shard_size });
    let metadata = provenance::common_metadata(&[input]);
    let (outputs, sha) = write_streamed(
        input,
        target,
        &layout,
        metadata,
        operation,
        recipe,
        output,
        control,
        &|i, _, _| Some((i, None)),
    )?;
    Ok(RelayoutReport {
        input: input.path().to_path_buf(),
        outputs,
        input_digest: sha,
        tensors: layout.len(),
        bytes: input.data_bytes(),
    })
}

/// Parameters of [`apply_mask`].
#[derive(Debug, Clone, Default)]
pub struct MaskOptions {
    /// Only tensors whose names match one of these (default: every float
    /// tensor of the input).
    pub include: Vec<String>,
    /// Skip tensors whose names match one of these.
    pub exclude: Vec<String>,
    /// Where and how to write.
    pub output: OutputOptions,
}

/// One masked tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedTensor {
    /// Name.
    pub name: String,
    /// Elements.
    pub numel: u64,
    /// Zeros in the input.
    pub zeros_before: u64,
    /// Non-zero input elements set to zero because the mask is zero there.
    pub zeroed: u64,
    /// Zeros in the output.
    pub zeros_after: u64,
}

/// What [`apply_mask`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyMaskReport {
    /// The input.
    pub input: PathBuf,
    /// The checkpoint whose zeros were applied.
    pub mask: PathBuf,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Content hash of the input.
    pub input_digest: String,
    /// Content hash of the mask checkpoint.
    pub mask_digest: String,
    /// The masked tensors, in the input's storage order.
    pub tensors: Vec<MaskedTensor>,
    /// Elements zeroed in all.
    pub zeroed: u64,
}

/// Zeros `input` wherever `mask` is zero (a model's `w == 0`, so `-0.0`
/// too, or a mask file's cleared bit), in the selected float tensors; other
/// tensors are copied. Every selected tensor must have a mask of the same
/// shape in `mask`.
pub fn apply_mask(
    input: &Checkpoint,
    mask: &MaskSource,
    target: &Path,
    options: &MaskOptions,
    control: &Control,
) -> Result<ApplyMaskReport> {
    let selection = Selection::new(&options.include, &options.exclude)?;
    let tensors = input.tensors();
    let mut partner: Vec<Option<MaskTensor>> = vec![None; tensors.len()];
    for (i, t) in tensors.iter().enumerate() {
        if t.float_type().is_none() || !selection.matches(&t.name) {
            continue;
        }
        partner[i] = Some(mask.find(&t.name, &t.shape, input.path())?);
    }
    if partner.iter().all(Option::is_none) {
        return Err(Error::NothingSelected {
            path: input.path().to_path_buf(),
            purpose: "to mask",
        });
    }
    let layout: Vec<OutputTensor> = tensors.iter().map(OutputTensor::from).collect();
    let recipe = serde_json::json!({
        "mask": mask.path().display().to_string(),
        "include": options.include,
        "exclude": options.exclude,
    });
    let mask_hash = crate::hash::hash_checkpoint(mask.checkpoint(), control)?.digest;
    let name = input.path().display().to_string();
    let describe = |sha: &str| {
        vec![
            (name.clone(), sha.to_string()),
            (mask.path().display().to_string(), mask_hash.clone()),
        ]
    };
    let mut metadata = provenance::common_metadata(&[input]);
    provenance::record(
        &mut metadata,
        "apply-mask",
        recipe.clone(),
        &describe(&control.digest.placeholder()),
    );
    let mut files: Vec<&Path> = input.files_with_index().collect();
    files.extend(mask.checkpoint().files_with_index());
    let mut output = Output::create(target, &layout, metadata, &files, &options.output)?;
    let mut counts = vec![(0u64, 0u64); tensors.len()];
    let sha = crate::rewrite::stream(
        input,
        &|i| partner[i].map_or(0, |m| m.elem_bytes()),
        control,
        "masking",
        true,
        |_| Ok(()),
        |p, _, _| -> Result<(u64, u64)> {
            let t = &tensors[p.tensor];
            let range = t.byte_range(&p.elems);
            let bytes = input.bytes(t, range.clone());
            let Some(m) = partner[p.tensor] else {
                output.write(p.tensor, range.start, bytes)?;
                return Ok((0, 0));
            };
            let ty = t.float_type().expect("float");
            let mut keep = vec![true; p.elems.len()];
            mask.for_each(&m, p.elems.clone(), |j, nz| keep[j] = nz);
            mask.release(&m, p.elems.clone());
            let size = ty.size();
            let mut out = bytes.to_vec();
            let (mut zeros, mut zeroed) = (0u64, 0u64);
            crate::dtype::for_each_nonzero(bytes, ty, |j, nz| {
                if !nz {
                    zeros += 1;
                } else if !keep[j] {
                    zeroed += 1;
                    out[j * size..(j + 1) * size].fill(0);
                }
            });
            output.write(p.tensor, range.start, &out)?;
            Ok((zeros, zeroed))
        },
        |p, (z, d)| {
            counts[p.tensor].0 += z;
            counts[p.tensor].1 += d;
        },
    )?
    .expect("hashed");
    let mut metadata = provenance::common_metadata(&[input]);
    provenance::record(&mut metadata, "apply-mask", recipe, &describe(&sha));
    *output.metadata_mut() = metadata;
    input.check_unchanged()?;
    mask.checkpoint().check_unchanged()?;
    let outputs = output.commit()?;
    let masked: Vec<MaskedTensor> = tensors
        .iter()
        .zip(&partner)
        .zip(&counts)
        .filter(|((_, m), _)| m.is_some())
        .map(|((t, _), &(z, d))| MaskedTensor {
            name: t.name.clone(),
            numel: t.numel() as u64,
            zeros_before: z,
            zeroed: d,
            zeros_after: z + d,
        })
        .collect();
    Ok(ApplyMaskReport {
        input: input.path().to_path_buf(),
        mask: mask.path().to_path_buf(),
        outputs,
        input_digest: sha,
        mask_digest: mask_hash,
        zeroed: masked.iter().map(|t| t.zeroed).sum(),
        tensors: masked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::write_test_checkpoint;
    use safetensors::Dtype;

    /// Every refusal of a malformed edit or mask request is a variant the
    /// caller can match, and none of their texts names a command-line flag.
    #[test]
    fn bad_requests_are_structured_errors_without_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        write_test_checkpoint(&path, &[("w".into(), Dtype::F32, vec![2], vec![0u8; 8])]);
        let a = Checkpoint::open(&path).unwrap();
        let target = dir.path().join("out.safetensors");
        let control = Control::default();
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        let forced = EditOptions {
            output: OutputOptions {
                force: true,
                ..OutputOptions::default()
            },
            ..EditOptions::default()
        };
        let edit_with = |o: EditOptions| edit(&a, &target, &o, &control).unwrap_err();

        let errors = [
            edit_with(EditOptions {
                rename: vec!["conv".into()],
                ..EditOptions::default()
            }),
            edit_with(EditOptions {
                set_meta: vec!["novalue".into()],
                ..EditOptions::default()
            }),
            edit_with(EditOptions {
                cast_only: vec!["w".into()],
                ..EditOptions::default()
            }),
            edit_with(EditOptions {
                cast: Some("I64".into()),
                ..EditOptions::default()
            }),
            edit_with(EditOptions {
                output: OutputOptions {
                    shard_size: Some(0),
                    ..OutputOptions::default()
                },
                ..EditOptions::default()
            }),
            edit(&a, &folder, &forced, &control).unwrap_err(),
        ];
        assert!(
            matches!(&errors[0], Error::NotAPair { kind: PairKind::Rename, value } if value == "conv")
        );
        assert!(
            matches!(&errors[1], Error::NotAPair { kind: PairKind::Metadata, value } if value == "novalue")
        );
        assert!(matches!(&errors[2], Error::CastTypeMissing));
        assert!(matches!(&errors[3], Error::CastNotFloat { dtype } if dtype == "I64"));
        assert!(matches!(&errors[4], Error::ShardSizeZero), "{}", errors[4]);
        assert!(
            matches!(&errors[5], Error::OutputIsFolder { path } if *path == folder),
            "{}",
            errors[5]
        );
        for e in &errors {
            assert!(!e.to_string().contains("--"), "a flag in `{e}`");
        }
        assert!(!target.exists());
    }
}
