//! Submitting a run's jobs with `sbatch`, in dependency order.

use std::path::Path;

use super::record::{read_submitted, slurm_command, write_submitted, Submitted};
use super::script::{log_path, logs_dir, script, shell_word, slurm_dir, Resources};
use super::status::{live, status};
use super::{step_name, JobGraph};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

/// What a submission did: each job's name, id and array tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedJob {
    /// Job name (`candidates-1`).
    pub name: String,
    /// Slurm's job id.
    pub id: String,
    /// Array tasks; empty for a plain job.
    pub array: Vec<u32>,
}

/// Writes every job's script to `RUN/slurm/` and submits the jobs in order,
/// each waiting (`afterok`) on the jobs it needs. With `dry_run`, submits
/// nothing and returns the sbatch commands as shell lines instead (job ids
/// held in shell variables). Refuses while jobs of the run are still live.
pub fn submit(
    graph: &dyn JobGraph,
    exe: &Path,
    res: &Resources,
    dry_run: bool,
) -> Result<(Vec<SubmittedJob>, Vec<String>)> {
    res.validate()?;
    let root = graph.root();
    if root.to_string_lossy().chars().any(char::is_whitespace) {
        return Err(Error::Config(format!(
            "{}: sbatch splits its #SBATCH lines at white space, so the jobs' log paths \
             would break: choose a run folder whose path has none",
            root.display()
        )));
    }
    if !dry_run {
        let st = status(graph)?;
        let live = live(&st);
        if !live.is_empty() {
            return Err(Error::JobsInQueue {
                run: root.to_path_buf(),
                jobs: live,
            });
        }
    }
    let jobs = graph.jobs();
    let dir = slurm_dir(root);
    std::fs::create_dir_all(logs_dir(root)).map_err(|e| Error::io(logs_dir(root), e))?;
    let mut ids: Vec<String> = Vec::new();
    let mut shell = Vec::new();
    let mut done = Vec::new();
    let mut record = read_submitted(root)?;
    // A shell variable per job, named like it.
    let var = |name: &str| name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    for job in &jobs {
        let path = dir.join(format!("{}.sbatch", job.name));
        write_atomic(&path, script(graph, job, exe, res).as_bytes())?;
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
        for (step, task) in job.expanded() {
            record.push(Submitted {
                step: step_name(&step),
                log: log_path(root, job, &step, &id),
                job: task.map_or_else(|| id.clone(), |t| format!("{id}_{t}")),
            });
        }
        // Recorded after each job, so a submission that fails half-way
        // still knows its live jobs.
        write_submitted(root, &record)?;
        ids.push(id.clone());
        done.push(SubmittedJob {
            name: job.name.clone(),
            id,
            array: job.array.clone(),
        });
    }
    Ok((done, shell))
}
