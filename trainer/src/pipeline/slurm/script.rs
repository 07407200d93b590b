//! The sbatch scripts: the resources every job asks for, and the script of
//! one job (its `#SBATCH` lines, log file and the per-step commands it
//! runs).

use std::path::{Path, PathBuf};

use super::{step_name, Job, JobGraph, TASK};
use crate::error::{Error, Result};

/// What every job asks the scheduler for (each field becomes an `#SBATCH`
/// line of every script; `None` leaves it to the cluster's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Partition (queue).
    pub partition: Option<String>,
    /// Time limit, in any form sbatch accepts (`30`, `2:00:00`, `1-0`).
    pub time: Option<String>,
    /// CPUs per task.
    pub cpus_per_task: Option<u32>,
    /// Memory per node (`4G`).
    pub mem: Option<String>,
    /// GPUs per task.
    pub gpus_per_task: Option<u32>,
    /// Account to charge.
    pub account: Option<String>,
    /// Further sbatch options, each one `#SBATCH` line (`--qos=high`).
    pub extra: Vec<String>,
}

impl Resources {
    /// The `#SBATCH` options, in a fixed order.
    pub fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        let mut add = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("--{flag}={v}"));
            }
        };
        add("partition", self.partition.clone());
        add("time", self.time.clone());
        add("cpus-per-task", self.cpus_per_task.map(|n| n.to_string()));
        add("mem", self.mem.clone());
        add("gpus-per-task", self.gpus_per_task.map(|n| n.to_string()));
        add("account", self.account.clone());
        o.extend(self.extra.iter().cloned());
        o
    }

    /// Rejects options that would break the scripts: every extra option
    /// starts with `-`, and no value spans lines.
    pub fn validate(&self) -> Result<()> {
        for o in self.options() {
            if o.contains('\n') || o.contains('\r') {
                return Err(Error::Config(format!("sbatch option {o:?} spans lines")));
            }
        }
        for o in &self.extra {
            if !o.starts_with('-') {
                return Err(Error::Config(format!(
                    "sbatch option {o:?} does not start with '-' (give it as --name=value)"
                )));
            }
        }
        Ok(())
    }
}

/// Quotes `s` for a POSIX shell, leaving a trailing `$SLURM_ARRAY_TASK_ID`
/// (the task of an array job, as in `candidate:1:$SLURM_ARRAY_TASK_ID`)
/// expanded.
pub fn shell_word(s: &str) -> String {
    if let Some(head) = s.strip_suffix(TASK) {
        if head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_".contains(c))
        {
            return format!("\"{head}{TASK}\"");
        }
    }
    crate::pipeline::executor::shell_quote(s)
}

/// `RUN/slurm`.
pub fn slurm_dir(root: &Path) -> PathBuf {
    root.join("slurm")
}

pub(super) fn logs_dir(root: &Path) -> PathBuf {
    slurm_dir(root).join("logs")
}

pub(super) fn jobs_file(root: &Path) -> PathBuf {
    slurm_dir(root).join("jobs.json")
}

/// The sbatch script of `job` of `graph`. Slurm fills in `%A` (the array's
/// job id), `%a` (the task) and `%j` (a plain job's id) in the log name.
pub fn script(graph: &dyn JobGraph, job: &Job, exe: &Path, res: &Resources) -> String {
    let root = graph.root();
    let log = if job.array.is_empty() {
        logs_dir(root).join(format!("{}.%j.log", job.name))
    } else {
        // One log per task, named like its step.
        let stem = step_name(&job.steps[0]).replace(TASK, "%a");
        logs_dir(root).join(format!("{stem}.%A.log"))
    };
    let kind = graph.command();
    let mut s = format!(
        "#!/bin/bash\n# Job {} of the run {} (written by trainer {kind}).\n",
        job.name,
        root.display()
    );
    let mut opts = vec![
        format!("--job-name={kind}-{}", job.name),
        format!("--output={}", log.display()),
    ];
    if !job.array.is_empty() {
        let tasks: Vec<String> = job.array.iter().map(u32::to_string).collect();
        opts.push(format!("--array={}", tasks.join(",")));
    }
    opts.extend(res.options());
    for o in opts {
        s.push_str(&format!("#SBATCH {o}\n"));
    }
    if job.steps.len() > 1 {
        // The steps run in order; the first that fails fails the job.
        s.push_str("set -e\n");
    }
    let run = root.display().to_string();
    for (i, step) in job.steps.iter().enumerate() {
        let mut cmd = vec![shell_word(&exe.display().to_string())];
        cmd.extend([kind, "--out", &run, "--step", step].map(shell_word));
        let last = i + 1 == job.steps.len();
        s.push_str(&format!(
            "{}{}\n",
            if last { "exec " } else { "" },
            cmd.join(" ")
        ));
    }
    s
}

/// Where the log of step `step` (a `--step` value) of a job is, given the
/// job's id: an array task's own log, or the job's.
pub(super) fn log_path(root: &Path, job: &Job, step: &str, job_id: &str) -> PathBuf {
    let stem = if job.array.is_empty() {
        job.name.clone()
    } else {
        step_name(step)
    };
    logs_dir(root).join(format!("{stem}.{job_id}.log"))
}
