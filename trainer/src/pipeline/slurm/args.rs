//! The Slurm flags every run command shares (`--executor`, `--wait`, the
//! jobs' resources), submitting a run and following it from the command
//! line, and the table of `trainer status`.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};

use super::{status::Counts, submit, wait, JobGraph, Resources, State, StepStatus};
use crate::error::{Error, Result};
use crate::pipeline::executor::current_exe;

/// Where the steps of a run go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// In this process (and its children with --jobs).
    Local,
    /// As sbatch jobs on a Slurm cluster, chained by dependencies.
    Slurm,
}

/// Where the steps run, and what every Slurm job asks for (`--executor
/// slurm`).
#[derive(Debug, Clone, Args)]
pub struct SlurmArgs {
    /// Run the steps here (local) or submit them to Slurm as jobs (slurm);
    /// submitting again submits only the steps that are not done.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// With --executor slurm: follow the jobs until the run ends, then
    /// print the table (exit status 2 when a step fails).
    #[arg(long)]
    pub wait: bool,
    /// Partition for every job.
    #[arg(long, value_name = "NAME")]
    pub slurm_partition: Option<String>,
    /// Time limit of every job (e.g. 2:00:00).
    #[arg(long, value_name = "TIME")]
    pub slurm_time: Option<String>,
    /// CPUs per task.
    #[arg(long, value_name = "N")]
    pub slurm_cpus_per_task: Option<u32>,
    /// Memory per job (e.g. 8G).
    #[arg(long, value_name = "SIZE")]
    pub slurm_mem: Option<String>,
    /// GPUs per task.
    #[arg(long, value_name = "N")]
    pub slurm_gpus_per_task: Option<u32>,
    /// Account to charge.
    #[arg(long, value_name = "NAME")]
    pub slurm_account: Option<String>,
    /// Any other sbatch option, as --name=value (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
}

impl From<&SlurmArgs> for Resources {
    fn from(a: &SlurmArgs) -> Self {
        Resources {
            partition: a.slurm_partition.clone(),
            time: a.slurm_time.clone(),
            cpus_per_task: a.slurm_cpus_per_task,
            mem: a.slurm_mem.clone(),
            gpus_per_task: a.slurm_gpus_per_task,
            account: a.slurm_account.clone(),
            extra: a.sbatch_arg.clone(),
        }
    }
}

impl SlurmArgs {
    /// Whether the run goes to Slurm.
    pub fn slurm(&self) -> bool {
        self.executor == Executor::Slurm
    }

    /// Rejects flags that do not go with the executor: `--wait` without
    /// Slurm or with `--plan` (which submits nothing); `--repeats` and
    /// `--jobs` with Slurm.
    pub fn validate(&self, jobs: usize, repeats: u32, plan: bool) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.into()));
        if !self.slurm() {
            if self.wait {
                return bad("--wait follows Slurm jobs: give it with --executor slurm");
            }
            return Ok(());
        }
        if plan && self.wait {
            return bad("--wait follows submitted jobs, and --plan submits none: give one of them");
        }
        if repeats > 1 {
            return bad(
                "--repeats runs with --executor local; submit each repeat's run to Slurm on its own",
            );
        }
        if jobs > 1 {
            return bad("--jobs is for --executor local; on Slurm every candidate is its own task");
        }
        Resources::from(self).validate()
    }
}

/// Submits the steps of `graph` that are not done and prints each job
/// (with `plan`: writes the scripts and prints the sbatch commands
/// instead). With `--wait`, follows the jobs to the end of the run and
/// returns `true` (the caller prints the run's table); an error names the
/// steps that failed.
pub fn follow(graph: &dyn JobGraph, args: &SlurmArgs, plan: bool, quiet: bool) -> Result<bool> {
    let res = Resources::from(args);
    let exe = current_exe()?;
    let (jobs, shell) = submit(graph, &exe, &res, plan)?;
    if plan {
        for line in shell {
            println!("{line}");
        }
        return Ok(false);
    }
    for j in &jobs {
        if j.array.is_empty() {
            println!("{} {}", j.id, j.name);
        } else {
            let tasks: Vec<String> = j.array.iter().map(u32::to_string).collect();
            println!("{} {} (tasks {})", j.id, j.name, tasks.join(","));
        }
    }
    let root = graph.root();
    if !args.wait {
        if jobs.is_empty() {
            eprintln!(
                "nothing to submit: every step of {} is done",
                root.display()
            );
        } else if !quiet {
            eprintln!(
                "submitted {} jobs; follow them with `trainer status --out {}`",
                jobs.len(),
                root.display()
            );
        }
        return Ok(false);
    }
    let bar = if !quiet && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(graph.steps().len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let result = wait(graph, std::time::Duration::from_secs(1), |c: &Counts| {
        let msg = format!(
            "{} running, {} pending, {} failed",
            c.running, c.pending, c.failed
        );
        match &bar {
            Some(bar) => {
                bar.set_position(c.done as u64);
                bar.set_message(msg);
            }
            None if !quiet => eprintln!("slurm: {}/{} steps done, {msg}", c.done, c.total),
            None => {}
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    Ok(true)
}

/// `trainer status` as an aligned table.
pub fn status_table(st: &[StepStatus]) -> String {
    let mut rows = vec![[
        "step".to_string(),
        "state".into(),
        "job".into(),
        "slurm".into(),
        "log".into(),
    ]];
    for s in st {
        let state = serde_json::to_value(s.state).expect("serialisable");
        // The log matters for what did not finish.
        let log = match s.state {
            State::Done => String::new(),
            _ => s
                .log
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
        };
        rows.push([
            s.step.clone(),
            state.as_str().unwrap_or("").to_string(),
            s.job.clone().unwrap_or_default(),
            s.slurm.clone().unwrap_or_default(),
            log,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
