//! Runs a run's steps on a Slurm cluster, whatever the run kind: one sbatch
//! job per group of steps, chained by `afterok` dependencies, and the state
//! of every step read back from the run folder and the scheduler.
//!
//! A run kind (`trainer sms`, `trainer pdt`) describes its run as a
//! [`JobGraph`]: every step as its `--step` names it, whether the step's
//! outputs exist, and the jobs that run the steps that are not done (each
//! job runs one step, several steps one after another, or one step per task
//! of a job array, and waits on the jobs it needs). Every job runs its
//! steps with `trainer KIND --out RUN --step STEP`, which skips work whose
//! outputs exist, so the run folder is the only record of what is done:
//! submitting a run again submits only the steps that are not.
//!
//! Jobs carry `--kill-on-invalid-dep=yes`, so a failed job's dependents are
//! cancelled instead of waiting forever. Each submission writes its sbatch
//! scripts to `RUN/slurm/`, the jobs' logs go to `RUN/slurm/logs/`, and
//! `RUN/slurm/jobs.json` maps every submitted step to its job and log; a
//! step's state (pending, running, failed, cancelled) comes from `squeue`,
//! or `sacct` once the controller has forgotten the job.

mod args;
mod record;
mod script;
mod status;
mod submit;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use args::{follow, status_table, Executor, SlurmArgs};
pub use record::Submitted;
pub use script::{script, shell_word, slurm_dir, Resources};
pub use status::{live, state_of, status, wait, Counts, State, StepStatus};
pub use submit::{submit, SubmittedJob};

/// What an array task's step holds in place of the task id
/// (`candidate:1:$SLURM_ARRAY_TASK_ID`).
pub const TASK: &str = "$SLURM_ARRAY_TASK_ID";

/// A run as a graph of Slurm jobs; each run kind implements it.
pub trait JobGraph {
    /// The run folder (absolute: the jobs may run on other machines).
    fn root(&self) -> &Path;
    /// The `trainer` subcommand that runs a step of this run kind (`sms`
    /// in `trainer sms --out RUN --step STEP`).
    fn command(&self) -> &'static str;
    /// Every step of the run, in an order that respects their dependencies;
    /// the last one finishes the run (the report).
    fn steps(&self) -> Vec<RunStep>;
    /// The jobs that run every step that is not done, each after the jobs
    /// it needs (indices into the list, which is in dependency order).
    fn jobs(&self) -> Vec<Job>;
}

/// One step of a run, and whether its outputs exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The step as `--step` names it (`candidate:1:0`).
    pub arg: String,
    /// Whether its outputs exist (every file appears atomically, so one
    /// that exists is complete).
    pub done: bool,
}

/// A step's name in scripts, logs and `trainer status`: its `--step` value
/// with `-` for `:` (`candidate-1-0`).
pub fn step_name(arg: &str) -> String {
    arg.replace(':', "-")
}

/// One sbatch job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Script and log name (`candidates-2`, `soup-2`).
    pub name: String,
    /// The `--step` values it runs, one after another; an array job runs
    /// one, where [`TASK`] stands for the task id.
    pub steps: Vec<String>,
    /// Array task ids; empty for a plain job.
    pub array: Vec<u32>,
    /// Indices (into the job list) of the jobs it waits for.
    pub after: Vec<usize>,
}

impl Job {
    /// A job that runs `steps` one after another once the jobs `after`
    /// have finished (`None`s, steps already done, are left out).
    pub fn new(name: impl Into<String>, steps: Vec<String>, after: &[Option<usize>]) -> Job {
        Job {
            name: name.into(),
            steps,
            array: Vec::new(),
            after: after.iter().flatten().copied().collect(),
        }
    }

    /// An array job: task `t` of `tasks` runs `step` with [`TASK`] replaced
    /// by `t`.
    pub fn array(
        name: impl Into<String>,
        step: String,
        tasks: Vec<u32>,
        after: &[Option<usize>],
    ) -> Job {
        Job {
            array: tasks,
            ..Job::new(name, vec![step], after)
        }
    }

    /// The steps it runs as `--step` names them, each with its array task.
    pub fn expanded(&self) -> Vec<(String, Option<u32>)> {
        if self.array.is_empty() {
            return self.steps.iter().map(|s| (s.clone(), None)).collect();
        }
        let step = self.steps.first().map_or("", String::as_str);
        self.array
            .iter()
            .map(|&t| (step.replace(TASK, &t.to_string()), Some(t)))
            .collect()
    }
}

/// Sorts and deduplicates every job's dependencies.
pub fn tidy(jobs: &mut [Job]) {
    for job in jobs {
        job.after.sort_unstable();
        job.after.dedup();
    }
}
