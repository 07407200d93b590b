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
//! runs one of the per-step commands (`trainer dense`, `prepare`,
//! `candidate`, `soup`, `baseline`, `report`), which skip work whose outputs
//! exist, so the run folder is the only record of what is done: a step is
//! done when its output files exist, and submitting a run again submits only
//! the steps that are not.
//!
//! Jobs carry `--kill-on-invalid-dep=yes`, so a failed job's dependents are
//! cancelled instead of waiting forever. Each submission writes its sbatch
//! scripts to `RUN/slurm/`, the jobs' logs go to `RUN/slurm/logs/`, and
//! `RUN/slurm/jobs.json` maps every submitted step to its job and log; a
//! step's state (pending, running, failed, cancelled) comes from `squeue`,
//! or `sacct` once the controller has forgotten the job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::sms::config::{Baseline, SmsConfig, Vary};
use crate::sms::layout::{Chain, Layout};

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

/// One unit of work whose completion the run folder records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Train (or copy) and evaluate the dense parent.
    Dense,
    /// Prune the soup chain's parent of a phase.
    Prepare(u32),
    /// Retrain one candidate of a phase.
    Candidate {
        /// Phase, from 1.
        phase: u32,
        /// Candidate, from 0.
        index: u32,
    },
    /// Merge, recalibrate and evaluate a phase's soup.
    Soup(u32),
    /// One baseline chain through every phase.
    Baseline(Baseline),
    /// The report.
    Report,
}

fn baseline_name(b: Baseline) -> &'static str {
    match b {
        Baseline::Imp => "imp",
        Baseline::ImpLong => "imp-long",
        Baseline::Reprune => "reprune",
    }
}

impl Step {
    /// The step's name in scripts, logs and `trainer status`.
    pub fn name(&self) -> String {
        match *self {
            Step::Dense => "dense".into(),
            Step::Prepare(p) => format!("prepare-{p}"),
            Step::Candidate { phase, index } => format!("candidate-{phase}-{index}"),
            Step::Soup(p) => format!("soup-{p}"),
            Step::Baseline(b) => format!("baseline-{}", baseline_name(b)),
            Step::Report => "report".into(),
        }
    }

    /// Whether the step's outputs exist (every file appears atomically, so
    /// one that exists is complete).
    pub fn done(&self, cfg: &SmsConfig, layout: &Layout) -> bool {
        let both = |a: PathBuf, b: PathBuf| a.exists() && b.exists();
        match *self {
            Step::Dense => both(layout.dense(), layout.dense_eval()),
            Step::Prepare(p) => both(
                layout.parent(Chain::Soup, p),
                layout.prune_info(Chain::Soup, p),
            ),
            Step::Candidate { phase, index } => both(
                layout.candidate(Chain::Soup, phase, index),
                layout.candidate_info(Chain::Soup, phase, index),
            ),
            Step::Soup(p) => layout.phase_info(Chain::Soup, p).exists(),
            Step::Baseline(b) => {
                let last = cfg.phases;
                let chain = match b {
                    Baseline::Imp => Chain::Imp(0),
                    Baseline::ImpLong => Chain::ImpLong,
                    Baseline::Reprune => Chain::Reprune,
                };
                // IMP chain 0 shares its first phase with soup candidate 0
                // when candidates differ by seed (see `Session::candidate_path`).
                let chain = if chain == Chain::Imp(0) && last == 1 && cfg.vary == Vary::Seed {
                    Chain::Soup
                } else {
                    chain
                };
                both(
                    layout.candidate(chain, last, 0),
                    layout.candidate_info(chain, last, 0),
                )
            }
            Step::Report => layout.report_json().exists(),
        }
    }
}

/// Every step of a run, in an order that respects their dependencies.
pub fn steps(cfg: &SmsConfig) -> Vec<Step> {
    let mut s = vec![Step::Dense];
    for phase in 1..=cfg.phases {
        s.push(Step::Prepare(phase));
        s.extend((0..cfg.candidates).map(|index| Step::Candidate { phase, index }));
        s.push(Step::Soup(phase));
    }
    s.extend(cfg.baselines.iter().map(|&b| Step::Baseline(b)));
    s.push(Step::Report);
    s
}

/// One sbatch job: a step, or the unfinished candidates of a phase as an
/// array.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Script and log name (`candidates-2`, `soup-2`).
    pub name: String,
    /// The steps it runs (one per array task for candidates).
    pub steps: Vec<Step>,
    /// The trainer's arguments; `$SLURM_ARRAY_TASK_ID` stands for the
    /// candidate index of an array task.
    pub args: Vec<String>,
    /// Array task ids (candidate indices); empty for a plain job.
    pub array: Vec<u32>,
    /// Indices (into the job list) of the jobs it waits for.
    pub after: Vec<usize>,
}

/// The jobs that finish the run in `layout`: every step that is not done,
/// each waiting on the unfinished steps it needs.
pub fn jobs(cfg: &SmsConfig, layout: &Layout) -> Vec<Job> {
    let run = layout.root.display().to_string();
    let mut jobs: Vec<Job> = Vec::new();
    let add = |jobs: &mut Vec<Job>,
               name: String,
               steps: Vec<Step>,
               args: Vec<String>,
               array: Vec<u32>,
               after: Vec<Option<usize>>| {
        jobs.push(Job {
            name,
            steps,
            args,
            array,
            after: after.into_iter().flatten().collect(),
        });
        Some(jobs.len() - 1)
    };
    let base = |cmd: &str| vec![cmd.to_string(), "--run".into(), run.clone()];
    let mut dense = None;
    if !Step::Dense.done(cfg, layout) {
        dense = add(
            &mut jobs,
            "dense".into(),
            vec![Step::Dense],
            base("dense"),
            vec![],
            vec![],
        );
    }
    let mut before_phase = dense;
    let (mut first_prepare, mut first_candidates) = (None, None);
    let mut soups = Vec::new();
    for phase in 1..=cfg.phases {
        let mut prepare = None;
        if !Step::Prepare(phase).done(cfg, layout) {
            let mut args = base("prepare");
            args.extend(["--phase".into(), phase.to_string()]);
            prepare = add(
                &mut jobs,
                format!("prepare-{phase}"),
                vec![Step::Prepare(phase)],
                args,
                vec![],
                vec![before_phase],
            );
        }
        let todo: Vec<Step> = (0..cfg.candidates)
            .map(|index| Step::Candidate { phase, index })
            .filter(|s| !s.done(cfg, layout))
            .collect();
        let mut candidates = None;
        if !todo.is_empty() {
            let mut args = base("candidate");
            args.extend([
                "--phase".into(),
                phase.to_string(),
                "--index".into(),
                "$SLURM_ARRAY_TASK_ID".into(),
            ]);
            let array = todo
                .iter()
                .map(|s| match s {
                    Step::Candidate { index, .. } => *index,
                    _ => unreachable!("only candidates"),
                })
                .collect();
            candidates = add(
                &mut jobs,
                format!("candidates-{phase}"),
                todo,
                args,
                array,
                vec![prepare.or(before_phase)],
            );
        }
        if phase == 1 {
            (first_prepare, first_candidates) = (prepare.or(dense), candidates);
        }
        let mut soup = None;
        if !Step::Soup(phase).done(cfg, layout) {
            let mut args = base("soup");
            args.extend(["--phase".into(), phase.to_string()]);
            soup = add(
                &mut jobs,
                format!("soup-{phase}"),
                vec![Step::Soup(phase)],
                args,
                vec![],
                vec![candidates.or(prepare).or(before_phase)],
            );
        }
        soups.push(soup);
        before_phase = soup.or(before_phase);
    }
    let mut baselines = Vec::new();
    // IMP-RePrune trains the IMP chains, IMP chain 0 among them: it waits
    // for the IMP job rather than train chain 0 at the same time.
    let mut order = cfg.baselines.clone();
    order.sort_by_key(|&b| b != Baseline::Imp);
    let mut imp = None;
    for b in order {
        let step = Step::Baseline(b);
        if !step.done(cfg, layout) {
            let mut args = base("baseline");
            args.extend(["--name".into(), baseline_name(b).into()]);
            let mut after = vec![first_prepare, first_candidates];
            if b == Baseline::Reprune {
                after.push(imp);
            }
            let job = add(&mut jobs, step.name(), vec![step], args, vec![], after);
            if b == Baseline::Imp {
                imp = job;
            }
            baselines.push(job);
        }
    }
    if !Step::Report.done(cfg, layout) {
        let mut after = soups;
        after.extend(baselines);
        after.push(dense);
        add(
            &mut jobs,
            "report".into(),
            vec![Step::Report],
            base("report"),
            vec![],
            after,
        );
    }
    for job in &mut jobs {
        job.after.sort_unstable();
        job.after.dedup();
    }
    jobs
}

/// Quotes `s` for a POSIX shell, leaving `$SLURM_ARRAY_TASK_ID` expanded.
fn shell_word(s: &str) -> String {
    if s == "$SLURM_ARRAY_TASK_ID" {
        return "\"$SLURM_ARRAY_TASK_ID\"".into();
    }
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `RUN/slurm`.
pub fn slurm_dir(layout: &Layout) -> PathBuf {
    layout.root.join("slurm")
}

fn logs_dir(layout: &Layout) -> PathBuf {
    slurm_dir(layout).join("logs")
}

fn jobs_file(layout: &Layout) -> PathBuf {
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
fn log_path(layout: &Layout, step: Step, job_id: &str) -> PathBuf {
    logs_dir(layout).join(format!("{}.{job_id}.log", step.name()))
}

/// One submitted step (`RUN/slurm/jobs.json` lists them, latest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submitted {
    /// Step name (`candidate-1-2`).
    pub step: String,
    /// The job id as Slurm prints it (`1234`, or `1234_2` for an array task).
    pub job: String,
    /// The step's log.
    pub log: PathBuf,
}

fn read_submitted(layout: &Layout) -> Result<Vec<Submitted>> {
    let path = jobs_file(layout);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable job list: {e}", path.display())))
}

fn write_submitted(layout: &Layout, all: &[Submitted]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(all).expect("serialisable");
    text.push('\n');
    write_atomic(&jobs_file(layout), text.as_bytes())
}

/// The state of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Its outputs exist.
    Done,
    /// Its job runs.
    Running,
    /// Its job waits in the queue.
    Pending,
    /// Its job ended without its outputs.
    Failed,
    /// Its job was cancelled (by hand, or because a job it waits for failed).
    Cancelled,
    /// Not done and never submitted.
    NotSubmitted,
}

/// One line of `trainer status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Step name.
    pub step: String,
    /// Its state.
    pub state: State,
    /// Its latest job (`1234`, `1234_2`).
    pub job: Option<String>,
    /// Slurm's state and reason, when it gives them (`FAILED`,
    /// `CANCELLED (DependencyNeverSatisfied)`).
    pub slurm: Option<String>,
    /// The job's log.
    pub log: Option<PathBuf>,
}

fn slurm_command(program: &str, args: &[String]) -> Result<String> {
    let shown = format!("{program} {}", args.first().map_or("", String::as_str));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Slurm {
            command: shown.clone(),
            msg: format!("cannot run it ({e}); is Slurm installed and SLURM_CONF set?"),
        })?;
    if !out.status.success() {
        // Slurm's clients explain themselves in their last line (earlier
        // ones retrace how they got there).
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Slurm {
            command: shown,
            msg: format!("{} ({})", last.trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Slurm's state and reason for each of `jobs`, keyed by job id (`12`,
/// `12_3`): from `squeue`, then `sacct` for the jobs the controller has
/// forgotten (where accounting is on).
fn query(jobs: &[String]) -> Result<HashMap<String, (String, String)>> {
    let mut found = HashMap::new();
    if jobs.is_empty() {
        return Ok(found);
    }
    // The array job ids: squeue lists their tasks one per line (--array).
    let mut ids: Vec<&str> = jobs
        .iter()
        .map(|j| j.split('_').next().unwrap_or(j))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let out = slurm_command(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            "--states=all".into(),
            format!("--jobs={}", ids.join(",")),
            "--format=%i|%T|%r".into(),
        ],
    );
    let out = match out {
        Ok(out) => out,
        // squeue refuses the whole list when one id is unknown to it; ask
        // one by one then.
        Err(Error::Slurm { msg, .. }) if msg.contains("Invalid job id") && ids.len() > 1 => {
            let mut all = String::new();
            for id in ids {
                let one = jobs
                    .iter()
                    .filter(|j| j.split('_').next() == Some(id))
                    .cloned()
                    .collect::<Vec<_>>();
                for (k, v) in query(&one)? {
                    all.push_str(&format!("{k}|{}|{}\n", v.0, v.1));
                }
            }
            all
        }
        Err(Error::Slurm { msg, .. }) if msg.contains("Invalid job id") => String::new(),
        Err(e) => return Err(e),
    };
    for line in out.lines() {
        let mut f = line.trim().splitn(3, '|');
        if let (Some(id), Some(state), reason) = (f.next(), f.next(), f.next()) {
            found.insert(
                id.to_string(),
                (state.to_string(), reason.unwrap_or("").to_string()),
            );
        }
    }
    let missing: Vec<&String> = jobs.iter().filter(|j| !found.contains_key(*j)).collect();
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        // Without accounting sacct fails or prints nothing: the jobs then
        // stay unknown.
        if let Ok(out) = slurm_command(
            "sacct",
            &[
                "--noheader".into(),
                "--parsable2".into(),
                "--allocations".into(),
                format!("--jobs={}", list.join(",")),
                "--format=JobID,State".into(),
            ],
        ) {
            for line in out.lines() {
                if let Some((id, state)) = line.split_once('|') {
                    let state = state.split_whitespace().next().unwrap_or("");
                    found.insert(id.to_string(), (state.to_string(), String::new()));
                }
            }
        }
    }
    Ok(found)
}

fn state_of(slurm_state: &str, reason: &str) -> State {
    match slurm_state {
        "PENDING" if reason == "DependencyNeverSatisfied" => State::Cancelled,
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => State::Pending,
        "RUNNING" | "CONFIGURING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "SUSPENDED"
        | "STOPPED" | "RESIZING" => State::Running,
        "CANCELLED" => State::Cancelled,
        // COMPLETED without the step's outputs is a failure too.
        _ => State::Failed,
    }
}

/// The state of every step of the run in `layout`.
pub fn status(cfg: &SmsConfig, layout: &Layout) -> Result<Vec<StepStatus>> {
    let submitted = read_submitted(layout)?;
    let mut latest: HashMap<&str, &Submitted> = HashMap::new();
    for s in &submitted {
        latest.insert(s.step.as_str(), s);
    }
    let all = steps(cfg);
    // Ask the scheduler before looking at the files: a job that ends in
    // between then shows as done, never as failed.
    let wanted: Vec<String> = all
        .iter()
        .filter_map(|s| latest.get(s.name().as_str()).map(|j| j.job.clone()))
        .collect();
    let known = query(&wanted)?;
    Ok(all
        .iter()
        .map(|step| {
            let name = step.name();
            let sub = latest.get(name.as_str());
            let slurm = sub.and_then(|s| known.get(&s.job));
            let state = if step.done(cfg, layout) {
                State::Done
            } else {
                match (sub, slurm) {
                    (None, _) => State::NotSubmitted,
                    (Some(_), Some((st, reason))) => state_of(st, reason),
                    // Neither squeue nor sacct knows it any more: it ended
                    // without its outputs.
                    (Some(_), None) => State::Failed,
                }
            };
            StepStatus {
                step: name,
                state,
                job: sub.map(|s| s.job.clone()),
                slurm: slurm.map(|(st, reason)| match reason.as_str() {
                    "" | "None" => st.clone(),
                    r => format!("{st} ({r})"),
                }),
                log: sub.map(|s| s.log.clone()),
            }
        })
        .collect())
}

/// The live (pending or running) jobs among `status`.
pub fn live(status: &[StepStatus]) -> Vec<String> {
    let mut jobs: Vec<String> = status
        .iter()
        .filter(|s| matches!(s.state, State::Pending | State::Running))
        .filter_map(|s| s.job.clone())
        .collect();
    jobs.dedup();
    jobs
}

/// What a submission did: each job's name, id and array tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedJob {
    /// Job name (`candidates-1`).
    pub name: String,
    /// Slurm's job id.
    pub id: String,
    /// Array tasks (candidate indices); empty for a plain job.
    pub array: Vec<u32>,
}

/// Writes every job's script to `RUN/slurm/` and submits the jobs in order,
/// each waiting (`afterok`) on the jobs it needs. With `dry_run`, submits
/// nothing and returns the sbatch commands as shell lines instead (job ids
/// held in shell variables). Refuses while jobs of the run are still live.
pub fn submit(
    cfg: &SmsConfig,
    layout: &Layout,
    exe: &Path,
    res: &Resources,
    dry_run: bool,
) -> Result<(Vec<SubmittedJob>, Vec<String>)> {
    res.validate()?;
    if !dry_run {
        let st = status(cfg, layout)?;
        let live = live(&st);
        if !live.is_empty() {
            return Err(Error::JobsInQueue {
                run: layout.root.clone(),
                jobs: live,
            });
        }
    }
    let jobs = jobs(cfg, layout);
    let dir = slurm_dir(layout);
    std::fs::create_dir_all(logs_dir(layout)).map_err(|e| Error::io(logs_dir(layout), e))?;
    let mut ids: Vec<String> = Vec::new();
    let mut shell = Vec::new();
    let mut done = Vec::new();
    let mut record = read_submitted(layout)?;
    let var = |name: &str| name.replace('-', "_");
    for job in &jobs {
        let path = dir.join(format!("{}.sbatch", job.name));
        write_atomic(&path, script(job, layout, exe, res).as_bytes())?;
        let mut args = vec!["--parsable".to_string()];
        if !job.after.is_empty() {
            let on: Vec<String> = if dry_run {
                job.after
                    .iter()
                    .map(|&i| format!("${}", var(&jobs[i].name)))
                    .collect()
            } else {
                job.after.iter().map(|&i| ids[i].clone()).collect()
            };
            args.push(format!("--dependency=afterok:{}", on.join(":")));
            args.push("--kill-on-invalid-dep=yes".into());
        }
        args.push(path.display().to_string());
        if dry_run {
            // The dependency stays unquoted so that its variables expand.
            let words: Vec<String> = args
                .iter()
                .map(|a| {
                    if a.starts_with("--dependency=") {
                        a.clone()
                    } else {
                        shell_word(a)
                    }
                })
                .collect();
            shell.push(format!("{}=$(sbatch {})", var(&job.name), words.join(" ")));
            ids.push(String::new());
            continue;
        }
        let out = slurm_command("sbatch", &args)?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Slurm {
                command: "sbatch --parsable".into(),
                msg: format!("unexpected output {out:?}"),
            });
        }
        for step in &job.steps {
            let job_id = match step {
                Step::Candidate { index, .. } => format!("{id}_{index}"),
                _ => id.clone(),
            };
            record.push(Submitted {
                step: step.name(),
                log: log_path(layout, *step, &id),
                job: job_id,
            });
        }
        // Recorded after each job, so a submission that fails half-way
        // still knows its live jobs.
        write_submitted(layout, &record)?;
        ids.push(id.clone());
        done.push(SubmittedJob {
            name: job.name.clone(),
            id,
            array: job.array.clone(),
        });
    }
    Ok((done, shell))
}

/// How far a run is: steps by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Steps in the run.
    pub total: usize,
    /// Done.
    pub done: usize,
    /// Running.
    pub running: usize,
    /// Pending.
    pub pending: usize,
    /// Failed or cancelled.
    pub failed: usize,
}

impl Counts {
    fn of(status: &[StepStatus]) -> Counts {
        let mut c = Counts {
            total: status.len(),
            ..Counts::default()
        };
        for s in status {
            match s.state {
                State::Done => c.done += 1,
                State::Running => c.running += 1,
                State::Pending => c.pending += 1,
                State::Failed | State::Cancelled => c.failed += 1,
                State::NotSubmitted => {}
            }
        }
        c
    }
}

/// Follows the run until its report exists (`Ok`) or nothing is left
/// pending or running (`Error::StepsFailed`, naming the failed steps and
/// their logs). `on_change` hears of every change of the counts.
pub fn wait(
    cfg: &SmsConfig,
    layout: &Layout,
    poll: Duration,
    mut on_change: impl FnMut(&Counts),
) -> Result<()> {
    let mut last = None;
    loop {
        let st = status(cfg, layout)?;
        let counts = Counts::of(&st);
        if last != Some(counts) {
            on_change(&counts);
            last = Some(counts);
        }
        if Step::Report.done(cfg, layout) {
            return Ok(());
        }
        if counts.running == 0 && counts.pending == 0 {
            let failed = st
                .iter()
                .filter(|s| s.state != State::Done)
                .map(|s| {
                    let state = serde_json::to_value(s.state).expect("serialisable");
                    let mut line = format!("{} {}", s.step, state.as_str().unwrap_or(""));
                    if let Some(job) = &s.job {
                        line.push_str(&format!(" (job {job}"));
                        if s.state == State::Failed {
                            if let Some(log) = &s.log {
                                line.push_str(&format!(", log {}", log.display()));
                            }
                        }
                        line.push(')');
                    }
                    line
                })
                .collect();
            return Err(Error::StepsFailed {
                run: layout.root.clone(),
                failed,
            });
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(phases: u32, candidates: u32, baselines: Vec<Baseline>) -> SmsConfig {
        SmsConfig {
            phases,
            candidates,
            baselines,
            ..SmsConfig::default()
        }
    }

    fn touch(path: PathBuf) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn a_fresh_run_is_a_chain_of_phases_with_candidate_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let jobs = jobs(&cfg(2, 3, vec![Baseline::Reprune, Baseline::Imp]), &layout);
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dense",
                "prepare-1",
                "candidates-1",
                "soup-1",
                "prepare-2",
                "candidates-2",
                "soup-2",
                "baseline-imp",
                "baseline-reprune",
                "report"
            ]
        );
        let after = |n: &str| -> Vec<&str> {
            let j = jobs.iter().find(|j| j.name == n).unwrap();
            j.after.iter().map(|&i| jobs[i].name.as_str()).collect()
        };
        assert_eq!(after("prepare-1"), ["dense"]);
        assert_eq!(after("candidates-1"), ["prepare-1"]);
        assert_eq!(after("soup-1"), ["candidates-1"]);
        assert_eq!(after("prepare-2"), ["soup-1"]);
        assert_eq!(after("baseline-imp"), ["prepare-1", "candidates-1"]);
        assert_eq!(
            after("baseline-reprune"),
            ["prepare-1", "candidates-1", "baseline-imp"]
        );
        assert_eq!(
            after("report"),
            [
                "dense",
                "soup-1",
                "soup-2",
                "baseline-imp",
                "baseline-reprune"
            ]
        );
        assert_eq!(jobs[2].array, [0, 1, 2]);
    }

    #[test]
    fn resubmission_leaves_out_finished_steps() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let c = cfg(2, 3, vec![]);
        touch(layout.dense());
        touch(layout.dense_eval());
        touch(layout.parent(Chain::Soup, 1));
        touch(layout.prune_info(Chain::Soup, 1));
        touch(layout.candidate(Chain::Soup, 1, 0));
        touch(layout.candidate_info(Chain::Soup, 1, 0));
        // A candidate without its results is not done.
        touch(layout.candidate(Chain::Soup, 1, 2));
        let jobs = jobs(&c, &layout);
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "candidates-1",
                "soup-1",
                "prepare-2",
                "candidates-2",
                "soup-2",
                "report"
            ]
        );
        assert_eq!(jobs[0].array, [1, 2]);
        assert!(jobs[0].after.is_empty());
        // The report waits only on what is still to come.
        let report = jobs.last().unwrap();
        let after: Vec<&str> = report
            .after
            .iter()
            .map(|&i| jobs[i].name.as_str())
            .collect();
        assert_eq!(after, ["soup-1", "soup-2"]);
    }

    #[test]
    fn scripts_carry_the_requested_resources() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&dir.path().join("my run"));
        let jobs = jobs(&cfg(1, 2, vec![]), &layout);
        let res = Resources {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: Some(4),
            mem: Some("8G".into()),
            gpus_per_task: Some(1),
            account: Some("proj".into()),
            extra: vec!["--qos=high".into()],
        };
        let s = script(&jobs[2], &layout, Path::new("/opt/trainer"), &res);
        for line in [
            "#SBATCH --partition=gpu",
            "#SBATCH --time=1:00:00",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=8G",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --account=proj",
            "#SBATCH --qos=high",
            "#SBATCH --array=0,1",
        ] {
            assert!(s.lines().any(|l| l == line), "no {line:?} in\n{s}");
        }
        let run = shell_word(&layout.root.display().to_string());
        assert!(run.starts_with('\''), "{run}");
        assert!(
            s.contains(&format!(
                "exec /opt/trainer candidate --run {run} --phase 1 --index \"$SLURM_ARRAY_TASK_ID\""
            )),
            "{s}"
        );
        let bad = Resources {
            extra: vec!["qos=high".into()],
            ..Resources::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn slurm_states_map_to_step_states() {
        assert_eq!(state_of("PENDING", "Dependency"), State::Pending);
        assert_eq!(
            state_of("PENDING", "DependencyNeverSatisfied"),
            State::Cancelled
        );
        assert_eq!(state_of("RUNNING", "None"), State::Running);
        assert_eq!(state_of("CANCELLED", "None"), State::Cancelled);
        assert_eq!(state_of("TIMEOUT", "None"), State::Failed);
        assert_eq!(state_of("COMPLETED", "None"), State::Failed);
    }
}
