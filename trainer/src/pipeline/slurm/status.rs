//! The state of every step of a submitted run (from the run folder,
//! `squeue` and `sacct`), and following a run until it ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{read_submitted, slurm_command, Submitted};
use super::{step_name, JobGraph};
use crate::error::{Error, Result};

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

/// The state of a step whose job Slurm reports in `slurm_state` (with
/// `reason`, for a pending job); its outputs do not exist.
pub fn state_of(slurm_state: &str, reason: &str) -> State {
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

/// The state of every step of the run `graph`.
pub fn status(graph: &dyn JobGraph) -> Result<Vec<StepStatus>> {
    let submitted = read_submitted(graph.root())?;
    let mut latest: HashMap<&str, &Submitted> = HashMap::new();
    for s in &submitted {
        latest.insert(s.step.as_str(), s);
    }
    let names: Vec<String> = graph.steps().iter().map(|s| step_name(&s.arg)).collect();
    // Ask the scheduler before looking at the files: a job that ends in
    // between then shows as done, never as failed.
    let wanted: Vec<String> = names
        .iter()
        .filter_map(|n| latest.get(n.as_str()).map(|j| j.job.clone()))
        .collect();
    let known = query(&wanted)?;
    let all = graph.steps();
    Ok(all
        .iter()
        .zip(names)
        .map(|(step, name)| {
            let sub = latest.get(name.as_str());
            let slurm = sub.and_then(|s| known.get(&s.job));
            let state = if step.done {
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

/// Follows the run until its last step (the report) is done (`Ok`) or
/// nothing is left pending or running (`Error::StepsFailed`, naming the
/// failed steps and their logs). `on_change` hears of every change of the
/// counts.
pub fn wait(
    graph: &dyn JobGraph,
    poll: Duration,
    mut on_change: impl FnMut(&Counts),
) -> Result<()> {
    let mut last = None;
    loop {
        let st = status(graph)?;
        let counts = Counts::of(&st);
        if last != Some(counts) {
            on_change(&counts);
            last = Some(counts);
        }
        if st.last().is_some_and(|s| s.state == State::Done) {
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
                run: graph.root().to_path_buf(),
                failed,
            });
        }
        std::thread::sleep(poll);
    }
}
