//! The sbatch scripts: the resources every job asks for, and the script of
//! one job (its `#SBATCH` lines, log file and the per-step command it runs).

use std::path::{Path, PathBuf};

use super::graph::{Job, Step};
use crate::error::{Error, Result};
use crate::sms::layout::Layout;

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
/// (the candidate of an array task, as in `candidate:1:$SLURM_ARRAY_TASK_ID`)
/// expanded.
pub(super) fn shell_word(s: &str) -> String {
    const TASK: &str = "$SLURM_ARRAY_TASK_ID";
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
pub fn slurm_dir(layout: &Layout) -> PathBuf {
    layout.root.join("slurm")
}

pub(super) fn logs_dir(layout: &Layout) -> PathBuf {
    slurm_dir(layout).join("logs")
}

pub(super) fn jobs_file(layout: &Layout) -> PathBuf {
    slurm_dir(layout).join("jobs.json")
}

/// The sbatch script of `job`. Slurm fills in `%A` (the array's job id),
/// `%a` (the task) and `%j` (a plain job's id) in the log name.
pub fn script(job: &Job, layout: &Layout, exe: &Path, res: &Resources) -> String {
    let log = if job.array.is_empty() {
        logs_dir(layout).join(format!("{}.%j.log", job.name))
    } else {
        // One log per candidate, named like its step.
        let stem = job.name.replace("candidates-", "candidate-");
        logs_dir(layout).join(format!("{stem}-%a.%A.log"))
    };
    let mut s = format!(
        "#!/bin/bash\n# Step {} of the sparse-model-soup run {} (written by trainer sms).\n",
        job.name,
        layout.root.display()
    );
    let mut opts = vec![
        format!("--job-name=sms-{}", job.name),
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
    let mut cmd = vec![shell_word(&exe.display().to_string())];
    cmd.extend(job.args.iter().map(|a| shell_word(a)));
    s.push_str(&format!("exec {}\n", cmd.join(" ")));
    s
}

/// Where a step's log is, given its job id and (for candidates) the task.
pub(super) fn log_path(layout: &Layout, step: Step, job_id: &str) -> PathBuf {
    logs_dir(layout).join(format!("{}.{job_id}.log", step.name()))
}
