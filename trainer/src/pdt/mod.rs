//! Pruning during training: methods that prune a model while it trains
//! from scratch (GMP, DPF, BIMP), and sparse model soups for them.
//!
//! A method splits training into segments
//! ([`PruningMethod::segments`]). At the start of each segment it may
//! prune (GMP and BIMP prune the weights by global magnitude through
//! soup-core; DPF only moves its sparsity target), and inside a segment it
//! acts through the training loop's hooks: a fixed mask enforced after
//! every step, or DPF's dynamic mask. Sparse model soups fork `m`
//! candidates at the start of a long enough segment, train each to the
//! segment's end, check their masks, average them and continue from the
//! recalibrated average ([`run`]). The steps of a run also run one at a
//! time (`trainer pdt --out RUN --step STEP`, [`jobs`]), in child processes
//! (`--jobs`) or as a graph of Slurm jobs ([`slurm`], `--executor slurm`).
//!
//! The methods are modules of [`crate::methods`], found through its
//! registry; this module is the run machinery they share and imports none
//! of them.

pub mod cli;
mod close;
pub mod config;
pub mod jobs;
pub mod records;
pub mod repeats;
pub mod report;
pub mod run;
pub mod slurm;

pub use crate::pipeline::segments::{segments_at, Context, FixedMask, PruningMethod, Segment};
pub use crate::pipeline::timeline::{cubic, PruneEvery, Timeline};
pub use config::{PdtBaseline, PdtConfig};
pub use report::PdtReport;
