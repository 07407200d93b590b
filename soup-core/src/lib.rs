//! soup-core: the out-of-core engine behind the `soup` tool and the
//! sparse-model-soup trainer.
//!
//! It reads safetensors checkpoints (single files or Hugging Face sharded
//! sets) through memory maps after validating their headers completely,
//! and streams through them in bounded windows spread over all cores, so
//! memory stays flat however large the checkpoints are. On top of that it
//! averages checkpoints ([`merge()`]), compares sparsity masks
//! ([`check_masks`]), prunes by magnitude with exact counts ([`prune()`]),
//! builds greedy soups with any [`Scorer`] ([`greedy_soup`]), compares
//! ([`diff()`]), edits and reshards checkpoints ([`surgery`]), hashes and
//! inspects them. Every file it writes appears atomically and records its
//! provenance. What it guarantees when an input changes underneath it, and
//! how killed runs' temporary files are cleaned up, is in [`safety`].
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

pub mod checkpoint;
pub mod diff;
mod distance;
pub mod dtype;
pub mod error;
pub mod greedy;
pub mod hash;
pub mod header;
pub mod inspect;
pub mod mask;
pub mod merge;
pub mod output;
pub mod provenance;
pub mod prune;
mod rewrite;
pub mod safety;
pub mod select;
pub mod stream;
pub mod surgery;

pub use checkpoint::{align, Checkpoint, TensorEntry};
pub use diff::{diff, DiffOptions, DiffReport};
pub use distance::{distance, DistanceReport};
pub use dtype::{Dtype, FloatType};
pub use error::{Error, Result};
pub use greedy::{greedy_soup, CommandScorer, GreedyOptions, GreedyReport, Scorer};
pub use hash::{hash_checkpoint, CheckpointHash};
pub use inspect::{inspect, Inspection};
pub use mask::{check_masks, MaskReport};
pub use merge::{merge, IntPolicy, MaskPolicy, MergeMethod, MergeOptions, MergeReport};
pub use output::{Output, OutputOptions, OutputTensor};
pub use prune::{
    is_prunable, plan as plan_prune, prune, prune_tensors, Criterion, PruneOptions, PruneReport,
    PruneSelection, Scope, TensorView, TensorsPrune,
};
pub use select::Selection;
pub use stream::{Control, NoProgress, Progress, StreamOptions};
pub use surgery::{apply_mask, edit, relayout, EditOptions, MaskOptions};
