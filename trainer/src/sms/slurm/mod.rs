//! Runs a sparse-model-soup run on a Slurm cluster through the pipeline's
//! Slurm layer ([`crate::pipeline::slurm`]): this module only says what the
//! run's steps and jobs are.
//!
//! The graph: dense pretraining; per phase the prune step, the candidates
//! as one job array (a task per candidate), and the soup, which waits on the
//! array; the next phase's prune step waits on the soup. Each baseline chain
//! is one job that waits on the first phase's parent and candidates (it
//! starts from them), IMP-RePrune also on IMP (it reuses IMP's chain); the
//! report waits on every soup and baseline. Every job runs one step
//! (`trainer sms --out RUN --step STEP`); a step is done when its output
//! files exist.

mod graph;
#[cfg(test)]
mod tests;

pub use graph::{jobs, steps, SmsGraph, Step};
