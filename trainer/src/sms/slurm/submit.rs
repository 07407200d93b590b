//! Submitting a run's jobs with `sbatch`, in dependency order, and the
//! record of what was submitted (`RUN/slurm/jobs.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::graph::{jobs, Step};
use super::script::{jobs_file, log_path, logs_dir, script, shell_word, slurm_dir, Resources};
use super::status::{live, status};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::sms::config::SmsConfig;
use crate::sms::layout::Layout;

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

pub(super) fn read_submitted(layout: &Layout) -> Result<Vec<Submitted>> {
    let path = jobs_file(layout);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable job list: {e}", path.display())))
}

pub(super) fn write_submitted(layout: &Layout, all: &[Submitted]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(all).expect("serialisable");
    text.push('\n');
    write_atomic(&jobs_file(layout), text.as_bytes())
}

pub(super) fn slurm_command(program: &str, args: &[String]) -> Result<String> {
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
