//! Runs a sparse-model-soup run on a Slurm cluster: one sbatch job per
//! step, chained by `afterok` dependencies, and the state of every step
//! read back from the run folder and the scheduler.
//!
//! The graph: dense pretraining; per phase the prune step, the candidates
//! as one job array (a task per candidate), and the soup, which waits on the
//! array; the next phase's prune step waits on the soup. Each baseline chain
//! is one job that waits on the first phase's parent and candidates (it
//! starts from them), IMP-RePrune also on IMP (it reuses IMP's chain); the
//! report waits on every soup and baseline. Every job
//! runs one step (`trainer sms --out RUN --step STEP`), which skips work
//! whose outputs exist, so the run folder is the only record of what is done: a step is
//! done when its output files exist, and submitting a run again submits only
//! the steps that are not.
//!
//! Jobs carry `--kill-on-invalid-dep=yes`, so a failed job's dependents are
//! cancelled instead of waiting forever. Each submission writes its sbatch
//! scripts to `RUN/slurm/`, the jobs' logs go to `RUN/slurm/logs/`, and
//! `RUN/slurm/jobs.json` maps every submitted step to its job and log; a
//! step's state (pending, running, failed, cancelled) comes from `squeue`,
//! or `sacct` once the controller has forgotten the job.

mod graph;
mod record;
mod script;
mod status;
mod submit;
#[cfg(test)]
mod tests;

pub use graph::{jobs, steps, Job, Step};
pub use record::Submitted;
pub use script::{script, slurm_dir, Resources};
pub use status::{live, status, wait, Counts, State, StepStatus};
pub use submit::{submit, SubmittedJob};
