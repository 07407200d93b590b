//! soup-core: the out-of-core engine behind the `soup` tool and the
//! sparse-model-soup trainer.
//!
//! It reads safetensors checkpoints (single files or Hugging Face sharded
//! sets) through memory maps after validating their headers completely,
//! and streams through them in bounded windows spread over all cores, so
//! memory stays flat however large the checkpoints are. On top of that it
//! averages checkpoints ([`merge()`]), merges fine-tunes of a base with
//! task arithmetic, TIES or DARE while keeping its mask ([`merge_with_base`]), compares sparsity masks
//! ([`check_masks`]), prunes by magnitude with exact counts ([`prune()`]),
//! builds greedy soups with any [`Scorer`] ([`greedy_soup`]), merges and
//! prunes tensors held in memory with the same code ([`merge_tensors`],
//! and over `ndarray` arrays [`merge_arrays`] and [`prune_arrays`]), compares
//! ([`diff()`]), edits and reshards checkpoints ([`edit()`], [`relayout`],
//! [`apply_mask`]), hashes and inspects them. Every file it writes appears
//! atomically and records its provenance. An input that shrinks while it is
//! mapped is an error naming the file once [`install_sigbus_handler`] has
//! run, not a crash, and an input changed in any other way while it is
//! read is an error before anything is written; temporary files of killed
//! runs are swept by the next write into their folder
//! ([`sweep_stale_temps`]), on the host and in the container that wrote
//! them.
//!
//! The modules are private: everything public is re-exported below, under
//! one path each.
//!
//! ```no_run
//! use soup_core::{check_masks, merge, Checkpoint, Control, MergeOptions, Selection};
//!
//! # fn main() -> soup_core::Result<()> {
//! let candidates = vec![
//!     Checkpoint::open("run/phase-1/candidate-0.safetensors")?,
//!     Checkpoint::open("run/phase-1/candidate-1.safetensors")?,
//! ];
//! let control = Control::default();
//! let report = check_masks(&candidates, None, &Selection::default(), &control)?;
//! assert!(report.identical, "candidates must share one mask");
//! merge(&candidates, "run/phase-1/soup.safetensors".as_ref(), &MergeOptions::default(), &control)?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

#[macro_use]
mod vocab;

mod array;
mod checkpoint;
mod diff;
mod distance;
mod dtype;
mod error;
mod greedy;
mod hash;
mod header;
mod inspect;
mod lora;
mod mask;
mod maskfile;
mod merge;
mod nm;
mod nm_check;
mod output;
mod provenance;
mod prune;
mod rewrite;
mod safety;
mod select;
mod semi_structured;
mod stream;
mod surgery;
mod tree_hash;
#[cfg(test)]
mod validate_tests;

pub use array::Element;
pub use checkpoint::{align, Checkpoint, TensorEntry, INDEX_FILE};
pub use diff::{diff, DiffOptions, DiffReport, TensorDiff};
pub use distance::{distance, DistanceReport};
pub use dtype::{parse as parse_dtype, Accumulator, Dtype, FloatType};
pub use error::{Error, HeaderProblem, PairKind, Result};
pub use greedy::{greedy_soup, CommandScorer, GreedyOptions, GreedyReport, Scorer, Trial};
pub use hash::{
    file_sha256, file_sha256s, hash_checkpoint, hash_checkpoints, CheckpointHash, DigestKind,
    FileDigest, FileHashReport, HashReport, TensorDigest,
};
pub use header::{
    byte_len, element_count, parse as parse_header, serialize as serialize_header, Header,
    RawTensor, MAX_HEADER_LEN, METADATA_KEY,
};
pub use inspect::{inspect, inspect_nm, Inspection, TensorSummary};
pub use lora::{
    fold_lora, FoldOptions, FoldReport, FoldedTensor, LoraAdapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
};
pub use mask::{check_masks, check_masks_against, Fingerprint, MaskReport, TensorMask};
pub use maskfile::{
    combine_masks, extract_mask, from_torch_prune, to_torch_prune, Combination, CombineOptions,
    CombineReport, MaskFileReport, MaskFileTensor, MaskSource, MaskTensor, TorchPruneReport,
    TorchPruneTensor, MASK_FORMAT, MASK_FORMAT_KEY,
};
pub use merge::{
    merge, merge_arrays, merge_tensors, merge_with_base, normalise_weights, IntPolicy, MaskPolicy,
    MergeMethod, MergeOptions, MergeReport, MergedTensor, MethodEntry, MethodParams, NamedArrays,
    Param, TaskVectorNorm, TensorsMerge, METHODS,
};
/// The `ndarray` version whose arrays [`Checkpoint::array`] returns.
pub use ndarray;
pub use nm::{count_violations, NmCount, NmGeometry, NmPattern, NmShapeProblem};
pub use nm_check::{check_nm, check_nm_all, unravel, NmCheckReport, NmReport, NmRule, TensorNm};
pub use output::{
    write_file_atomic, write_tensors, Output, OutputOptions, OutputTensor, TensorBytes,
};
pub use prune::{
    is_prunable, plan as plan_prune, prune, prune_arrays, prune_tensors, prune_tensors_scored,
    removal_count, validate_sparsity, Criterion, FloatTensorStats, Grouping, PruneOptions,
    PruneReport, PruneSelection, Scope, TensorPrune, TensorView, TensorsPrune,
};
pub use safety::{
    install_sigbus_handler, own_prefix as own_temp_prefix, sweep_stale_temps, GREEDY_PREFIX,
    SIGBUS_EXIT, TEMP_PREFIX,
};
pub use select::Selection;
pub use semi_structured::{
    check_kernel, implies, kernel_matrix, KernelCheck, SemiStructuredKernel, ShapeConstraint,
};
pub use stream::{Control, NoProgress, Progress, StreamOptions};
pub use surgery::{
    apply_mask, edit, relayout, ApplyMaskReport, EditOptions, EditReport, MaskOptions,
    MaskedTensor, RelayoutReport,
};
pub use vocab::{name_list, Vocabulary};
