//! Sparse model soups: iterative magnitude pruning where
//! each phase retrains several copies of the pruned parent and averages them.
//! This is the run machinery of the `imp` method of the registry
//! ([`crate::methods::imp`], [`method`]),
//! run by `trainer sms`.
//!
//! A run lives in a folder ([`layout`]). [`run`] drives it end to end; the
//! same steps are also separate commands (`trainer prepare`, `candidate`,
//! `soup`, `baseline`, `report`) whose order [`plan`] prints, so a cluster
//! scheduler can run each candidate as its own job; [`slurm`] submits them
//! to Slurm as a dependency graph. Pruning, mask checks and merging go
//! through soup-core ([`crate::pipeline::checkpoint_ops`]).

mod baselines;
mod candidates;
pub mod cli;
pub mod config;
pub mod layout;
mod parents;
pub mod records;
pub mod repeats;
pub mod report;
pub mod session;
pub mod slurm;
mod souping;

pub use config::{Baseline, SmsConfig};
pub use layout::{Chain, Layout};
pub use records::{CandidateInfo, Evaluation, GreedyTrial, PhaseInfo, PruneInfo};
pub use repeats::{RepeatOptions, Summary};
pub use report::Report;
pub use session::{write_config, Session};

use crate::error::Result;
use crate::methods::{imp, Method};
use crate::pipeline::executor::{run_children, shell_quote, Placement};

/// The method this pipeline runs: iterative magnitude pruning (with
/// soups), registered as [`imp::NAME`].
pub fn method() -> Method {
    Method::named(imp::NAME).expect("imp is registered")
}

/// Runs (or resumes) the whole pipeline: dense parent, every phase, the
/// baselines, and the report. With `jobs > 1` the candidates of a phase
/// train side by side in child processes (`trainer candidate`), one CUDA
/// device each where there are several.
pub fn run(session: &Session, jobs: usize) -> Result<Report> {
    let dense = session.ensure_dense()?;
    let mut phases = Vec::new();
    for phase in 1..=session.cfg.phases {
        session.prepare(Chain::Soup, phase)?;
        if jobs > 1 {
            run_candidates_in_parallel(session, phase, jobs)?;
        }
        for i in 0..session.cfg.soups.candidates {
            session.candidate(Chain::Soup, phase, i)?;
        }
        phases.push(session.soup(phase)?);
    }
    for &b in &session.cfg.baselines {
        session.baseline(b)?;
    }
    let report = report::build(session, &dense, &phases)?;
    report.write(session)?;
    Ok(report)
}

/// Rebuilds the report from a finished run folder.
pub fn rebuild_report(session: &Session) -> Result<Report> {
    let dense = session.ensure_dense()?;
    let phases = (1..=session.cfg.phases)
        .map(|p| session.soup(p))
        .collect::<Result<Vec<_>>>()?;
    let report = report::build(session, &dense, &phases)?;
    report.write(session)?;
    Ok(report)
}

fn run_candidates_in_parallel(session: &Session, phase: u32, jobs: usize) -> Result<()> {
    let todo: Vec<u32> = (0..session.cfg.soups.candidates)
        .filter(|&i| {
            let (p, info) = session.candidate_path(Chain::Soup, phase, i);
            !(p.exists() && info.exists())
        })
        .collect();
    let run = session.layout.root.display().to_string();
    let placement = Placement {
        device: session.ws.device,
        threads: session.cfg.train.threads,
    };
    run_children(&todo, jobs, placement, &format!("phase {phase}"), |i| {
        let (phase, i) = (phase.to_string(), i.to_string());
        ["candidate", "--run", &run, "--phase", &phase, "--index", &i]
            .map(String::from)
            .to_vec()
    })
}

/// The commands that make up the run in `run`, in order: what a cluster
/// scheduler runs, one line per job (the candidates of a phase are
/// independent of each other).
pub fn plan(session: &Session, exe: &str) -> Vec<String> {
    let run = shell_quote(&session.layout.root.display().to_string());
    let mut lines = Vec::new();
    for phase in 1..=session.cfg.phases {
        lines.push(format!("{exe} prepare --run {run} --phase {phase}"));
        for i in 0..session.cfg.soups.candidates {
            lines.push(format!(
                "{exe} candidate --run {run} --phase {phase} --index {i}"
            ));
        }
        lines.push(format!("{exe} soup --run {run} --phase {phase}"));
    }
    for b in &session.cfg.baselines {
        let name = serde_json::to_value(b).expect("serialisable");
        lines.push(format!(
            "{exe} baseline --run {run} --name {}",
            name.as_str().expect("a string")
        ));
    }
    lines.push(format!("{exe} report --run {run}"));
    lines
}
