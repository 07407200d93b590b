//! The dependency graph of a run on Slurm: its steps, which are done (their
//! output files exist), and the sbatch jobs that finish the rest, each with
//! the jobs it waits on.

use std::path::{Path, PathBuf};

use crate::pipeline::slurm::{tidy, Job, JobGraph, RunStep, TASK};
use crate::pipeline::Vary;
use crate::sms::config::{Baseline, SmsConfig};
use crate::sms::layout::{Chain, Layout};

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

impl Step {
    /// The step as `trainer sms --step` names it (`prepare:1`,
    /// `candidate:1:0`, `baseline:imp`).
    pub fn arg(&self) -> String {
        match *self {
            Step::Dense => "dense".into(),
            Step::Prepare(p) => format!("prepare:{p}"),
            Step::Candidate { phase, index } => format!("candidate:{phase}:{index}"),
            Step::Soup(p) => format!("soup:{p}"),
            Step::Baseline(b) => format!("baseline:{}", b.name()),
            Step::Report => "report".into(),
        }
    }

    /// The step's name in scripts, logs and `trainer status`.
    pub fn name(&self) -> String {
        match *self {
            Step::Dense => "dense".into(),
            Step::Prepare(p) => format!("prepare-{p}"),
            Step::Candidate { phase, index } => format!("candidate-{phase}-{index}"),
            Step::Soup(p) => format!("soup-{p}"),
            Step::Baseline(b) => format!("baseline-{}", b.name()),
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
                let chain = b.chain();
                // IMP chain 0 shares its first phase with soup candidate 0
                // when candidates differ by seed (see `Session::candidate_path`).
                let chain = if chain == Chain::Imp(0) && last == 1 && cfg.soups.vary == Vary::Seed {
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
        s.extend((0..cfg.soups.candidates).map(|index| Step::Candidate { phase, index }));
        s.push(Step::Soup(phase));
    }
    s.extend(cfg.baselines.iter().map(|&b| Step::Baseline(b)));
    s.push(Step::Report);
    s
}

/// A sparse-model-soup run as a graph of Slurm jobs.
#[derive(Debug, Clone, Copy)]
pub struct SmsGraph<'a> {
    /// Its configuration.
    pub cfg: &'a SmsConfig,
    /// Its folder (absolute).
    pub layout: &'a Layout,
}

impl JobGraph for SmsGraph<'_> {
    fn root(&self) -> &Path {
        &self.layout.root
    }

    fn command(&self) -> &'static str {
        "sms"
    }

    fn steps(&self) -> Vec<RunStep> {
        steps(self.cfg)
            .into_iter()
            .map(|s| RunStep {
                arg: s.arg(),
                done: s.done(self.cfg, self.layout),
            })
            .collect()
    }

    fn jobs(&self) -> Vec<Job> {
        jobs(self.cfg, self.layout)
    }
}

/// The jobs that finish the run in `layout`: every step that is not done,
/// each waiting on the unfinished steps it needs. The candidates of a phase
/// are one array job (a task per candidate index).
pub fn jobs(cfg: &SmsConfig, layout: &Layout) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    let add = |jobs: &mut Vec<Job>, job: Job| {
        jobs.push(job);
        Some(jobs.len() - 1)
    };
    // A job of one step, named like it.
    let one = |step: Step, after: &[Option<usize>]| Job::new(step.name(), vec![step.arg()], after);
    let mut dense = None;
    if !Step::Dense.done(cfg, layout) {
        dense = add(&mut jobs, one(Step::Dense, &[]));
    }
    let mut before_phase = dense;
    let (mut first_prepare, mut first_candidates) = (None, None);
    let mut soups = Vec::new();
    for phase in 1..=cfg.phases {
        let mut prepare = None;
        if !Step::Prepare(phase).done(cfg, layout) {
            prepare = add(&mut jobs, one(Step::Prepare(phase), &[before_phase]));
        }
        let todo: Vec<u32> = (0..cfg.soups.candidates)
            .filter(|&index| !Step::Candidate { phase, index }.done(cfg, layout))
            .collect();
        let mut candidates = None;
        if !todo.is_empty() {
            let job = Job::array(
                format!("candidates-{phase}"),
                format!("candidate:{phase}:{TASK}"),
                todo,
                &[prepare.or(before_phase)],
            );
            candidates = add(&mut jobs, job);
        }
        if phase == 1 {
            (first_prepare, first_candidates) = (prepare.or(dense), candidates);
        }
        let mut soup = None;
        if !Step::Soup(phase).done(cfg, layout) {
            let after = candidates.or(prepare).or(before_phase);
            soup = add(&mut jobs, one(Step::Soup(phase), &[after]));
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
            let mut after = vec![first_prepare, first_candidates];
            if b == Baseline::Reprune {
                after.push(imp);
            }
            let job = add(&mut jobs, one(step, &after));
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
        add(&mut jobs, one(Step::Report, &after));
    }
    tidy(&mut jobs);
    jobs
}
