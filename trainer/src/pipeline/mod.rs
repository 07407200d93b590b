//! The layer every pruning method stands on: what a sparse-model-soup run
//! needs whatever the method.
//!
//! - [`settings`]: the soup settings every method shares, with their flags
//!   and their one validation.
//! - [`mask`]: the one rule for which tensors are pruned, masks enforced
//!   while a pruned model trains, sparsity and parameter norms.
//! - [`checkpoint_ops`]: pruning, mask checks, merging and greedy soups of
//!   checkpoint files through soup-core (what `soup prune`, `soup
//!   check-mask` and `soup merge` do).
//! - [`workspace`]: what every step of a run works with (data, device,
//!   model description, the pruned tensors); [`evaluation`]: the one
//!   evaluation path of every reported model (batch-norm recalibration,
//!   save, evaluate), greedy scores and ensembles; [`disagreement`]: how
//!   often two candidates' test predictions differ.
//! - [`lr`]: learning-rate schedules for retraining after pruning (ALLR
//!   and the others) and what a pruning step did ([`lr::PruneImpact`]).
//! - [`records`]: the JSON records of a run folder; a step whose record
//!   exists is done (resume).
//! - [`repeats`]: a whole run made R times with other base seeds, and the
//!   summary of the repeats (mean ± std, paired differences, table, CSV).
//! - [`executor`]: running candidates side by side in child processes
//!   (`--jobs`), progress bars, shell quoting of printed commands;
//!   [`slurm`]: a run's steps as a graph of sbatch jobs on a Slurm cluster
//!   (`--executor slurm`), their states (`trainer status`) and `--wait`.
//! - [`segments`]: the trait every pruning method implements
//!   ([`PruningMethod`]: its segments, pruning step, learning rate and
//!   training hooks) and the segments a run trains in; [`timeline`]: the
//!   time line of a run in iterations, the cubic sparsity schedule and the
//!   grid of pruning steps on it.
//!
//! Nothing here knows a particular method.

pub mod checkpoint_ops;
pub mod disagreement;
pub mod evaluation;
pub mod executor;
pub mod lr;
pub mod mask;
pub mod records;
pub mod repeats;
pub mod segments;
pub mod settings;
pub mod slurm;
pub mod timeline;
pub mod workspace;

pub use disagreement::Disagreement;
pub use evaluation::Evaluation;
pub use mask::{pruned_names, PruneMask};
pub use segments::{segments_at, Context, FixedMask, PruningMethod, Segment};
pub use settings::{SoupArgs, SoupKind, SoupSettings, Vary};
pub use timeline::{cubic, PruneEvery, Timeline};
pub use workspace::Workspace;
