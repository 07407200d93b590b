//! A pruning-during-training run on a Slurm cluster, through the pipeline's
//! Slurm layer ([`crate::pipeline::slurm`]): this module only says what the
//! run's jobs are.
//!
//! Each chain (`sms`, `plain`, `long`) is a line of jobs, independent of the
//! other chains. The steps of a chain that follow each other run in one job
//! (`trainer pdt --out RUN --step STEP`, one command per step), up to a
//! segment whose candidates fork a soup: its candidates are one job array
//! (a task per candidate) that waits on the job before, and the segment's
//! soup (`close:CHAIN:K`) starts the next job, which waits on the array. So
//! the soup chain of a method that forks at every segment is
//! `prepare-sms-0`, `candidates-sms-0`, `close-sms-0..prepare-sms-1`,
//! `candidates-sms-1`, ..., `close-sms-N..finish-sms`, and a baseline chain
//! (which never forks) is one job. The report waits on every chain. Only
//! the steps that are not done are submitted.

use std::path::Path;

use crate::pdt::jobs::PdtStep;
use crate::pdt::records::Chain;
use crate::pdt::run::PdtRun;
use crate::pipeline::slurm::{step_name, tidy, Job, JobGraph, RunStep, TASK};

/// A pruning-during-training run as a graph of Slurm jobs.
#[derive(Debug, Clone, Copy)]
pub struct PdtGraph<'a> {
    /// The open run (its folder absolute).
    pub run: &'a PdtRun,
}

impl JobGraph for PdtGraph<'_> {
    fn root(&self) -> &Path {
        &self.run.root
    }

    fn command(&self) -> &'static str {
        "pdt"
    }

    fn steps(&self) -> Vec<RunStep> {
        self.run
            .steps()
            .into_iter()
            .map(|s| RunStep {
                arg: s.arg(),
                done: self.run.done(s),
            })
            .collect()
    }

    fn jobs(&self) -> Vec<Job> {
        jobs(self.run)
    }
}

/// Steps that run one after another in one job, and the job they wait on.
struct Line {
    steps: Vec<String>,
    after: Option<usize>,
}

impl Line {
    fn add(&mut self, done: &dyn Fn(PdtStep) -> bool, step: PdtStep) {
        if !done(step) {
            self.steps.push(step.arg());
        }
    }

    /// Ends the job being built (if it runs anything); later jobs of the
    /// chain wait on it.
    fn flush(&mut self, jobs: &mut Vec<Job>) {
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        let first = step_name(&steps[0]);
        let name = match steps.len() {
            1 => first,
            _ => format!("{first}..{}", step_name(&steps[steps.len() - 1])),
        };
        jobs.push(Job::new(name, steps, &[self.after]));
        self.after = Some(jobs.len() - 1);
    }
}

/// The jobs that finish `run`: every step that is not done, each job
/// waiting on the unfinished steps it needs.
pub fn jobs(run: &PdtRun) -> Vec<Job> {
    let chains: Vec<(Chain, Vec<u32>)> = run
        .chains()
        .into_iter()
        .map(|c| {
            let forks = run.segments(c).iter().map(|s| run.forks(c, s)).collect();
            (c, forks)
        })
        .collect();
    jobs_of(&chains, &|s| run.done(s))
}

/// The jobs of a run whose chains have segments that train the given
/// numbers of candidates, leaving out the steps that are `done`.
pub fn jobs_of(chains: &[(Chain, Vec<u32>)], done: &dyn Fn(PdtStep) -> bool) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut ends = Vec::new();
    for &(chain, ref forks) in chains {
        let mut line = Line {
            steps: Vec::new(),
            after: None,
        };
        for (k, &m) in forks.iter().enumerate() {
            line.add(done, PdtStep::Prepare(chain, k));
            if m > 1 {
                let todo: Vec<u32> = (0..m)
                    .filter(|&i| !done(PdtStep::Candidate(chain, k, i)))
                    .collect();
                if !todo.is_empty() {
                    line.flush(&mut jobs);
                    let c = chain.dir();
                    jobs.push(Job::array(
                        format!("candidates-{c}-{k}"),
                        format!("candidate:{c}:{k}:{TASK}"),
                        todo,
                        &[line.after],
                    ));
                    line.after = Some(jobs.len() - 1);
                }
            } else {
                line.add(done, PdtStep::Candidate(chain, k, 0));
            }
            line.add(done, PdtStep::Close(chain, k));
        }
        line.add(done, PdtStep::Finish(chain));
        line.flush(&mut jobs);
        ends.push(line.after);
    }
    if !done(PdtStep::Report) {
        jobs.push(Job::new("report", vec![PdtStep::Report.arg()], &ends));
    }
    tidy(&mut jobs);
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.name.as_str()).collect()
    }

    fn after<'a>(jobs: &'a [Job], name: &str) -> Vec<&'a str> {
        let j = jobs.iter().find(|j| j.name == name).unwrap();
        j.after.iter().map(|&i| jobs[i].name.as_str()).collect()
    }

    #[test]
    fn soups_fork_candidate_arrays_and_baselines_are_one_job() {
        // Segment 0 (from the initialisation) and 2 fork three candidates;
        // segment 1 is too short to fork.
        let chains = [(Chain::Sms, vec![3, 1, 3]), (Chain::Plain, vec![1, 1, 1])];
        let jobs = jobs_of(&chains, &|_| false);
        assert_eq!(
            names(&jobs),
            [
                "prepare-sms-0",
                "candidates-sms-0",
                "close-sms-0..prepare-sms-2",
                "candidates-sms-2",
                "close-sms-2..finish-sms",
                "prepare-plain-0..finish-plain",
                "report",
            ]
        );
        assert_eq!(jobs[1].array, [0, 1, 2]);
        assert_eq!(jobs[1].steps, ["candidate:sms:0:$SLURM_ARRAY_TASK_ID"]);
        assert_eq!(
            jobs[2].steps,
            [
                "close:sms:0",
                "prepare:sms:1",
                "candidate:sms:1:0",
                "close:sms:1",
                "prepare:sms:2"
            ]
        );
        assert_eq!(jobs[5].steps.len(), 3 * 3 + 1);
        assert_eq!(after(&jobs, "prepare-sms-0"), Vec::<&str>::new());
        assert_eq!(after(&jobs, "candidates-sms-0"), ["prepare-sms-0"]);
        assert_eq!(
            after(&jobs, "close-sms-0..prepare-sms-2"),
            ["candidates-sms-0"]
        );
        assert_eq!(
            after(&jobs, "candidates-sms-2"),
            ["close-sms-0..prepare-sms-2"]
        );
        assert_eq!(
            after(&jobs, "close-sms-2..finish-sms"),
            ["candidates-sms-2"]
        );
        // Chains are independent; the report waits on each.
        assert_eq!(
            after(&jobs, "prepare-plain-0..finish-plain"),
            Vec::<&str>::new()
        );
        assert_eq!(
            after(&jobs, "report"),
            ["close-sms-2..finish-sms", "prepare-plain-0..finish-plain"]
        );
    }

    #[test]
    fn resubmission_leaves_out_finished_steps() {
        let chains = [(Chain::Sms, vec![3, 3]), (Chain::Plain, vec![1, 1])];
        let finished = [
            PdtStep::Prepare(Chain::Sms, 0),
            PdtStep::Candidate(Chain::Sms, 0, 1),
            PdtStep::Prepare(Chain::Plain, 0),
            PdtStep::Candidate(Chain::Plain, 0, 0),
            PdtStep::Close(Chain::Plain, 0),
            PdtStep::Prepare(Chain::Plain, 1),
            PdtStep::Candidate(Chain::Plain, 1, 0),
            PdtStep::Close(Chain::Plain, 1),
            PdtStep::Finish(Chain::Plain),
        ];
        let jobs = jobs_of(&chains, &|s| finished.contains(&s));
        assert_eq!(
            names(&jobs),
            [
                "candidates-sms-0",
                "close-sms-0..prepare-sms-1",
                "candidates-sms-1",
                "close-sms-1..finish-sms",
                "report",
            ]
        );
        assert_eq!(jobs[0].array, [0, 2]);
        assert!(jobs[0].after.is_empty());
        assert_eq!(after(&jobs, "report"), ["close-sms-1..finish-sms"]);
        // A finished run submits nothing.
        assert!(jobs_of(&chains, &|_| true).is_empty());
    }
}
