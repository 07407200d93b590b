//! One step of a `trainer sms` run, as `trainer sms --out RUN --step STEP`
//! runs it (and the per-step commands of earlier versions, kept as hidden
//! aliases): `dense`, `prepare:P`, `candidate:P:I`, `soup:P`,
//! `baseline:NAME` and `report`, the names `--plan` prints. A step whose
//! outputs exist is skipped, so steps may run again, in any process.

use std::io::IsTerminal;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::sms::config::{Baseline, SmsConfig};
use crate::sms::layout::Chain;
use crate::sms::repeats::RepeatOptions;
use crate::sms::session::Session;
use crate::sms::slurm::Step;

impl FromStr for Step {
    type Err = Error;

    /// Parses a step as [`Step::arg`] writes it.
    fn from_str(s: &str) -> Result<Step> {
        let bad = || {
            Error::Config(format!(
                "--step {s:?}: expected dense, prepare:P, candidate:P:I, soup:P, \
                 baseline:NAME ({}) or report",
                Baseline::names()
            ))
        };
        let num = |v: &str| v.parse::<u32>().map_err(|_| bad());
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["dense"] => Step::Dense,
            ["prepare", p] => Step::Prepare(num(p)?),
            ["candidate", p, i] => Step::Candidate {
                phase: num(p)?,
                index: num(i)?,
            },
            ["soup", p] => Step::Soup(num(p)?),
            ["baseline", name] => Step::Baseline(Baseline::from_name(name).ok_or_else(bad)?),
            ["report"] => Step::Report,
            _ => return Err(bad()),
        })
    }
}

/// Where a step runs: the run's device and thread count unless given.
#[derive(Debug, Clone, Default)]
pub struct StepPlace {
    /// Device for this step (e.g. `cuda:1`).
    pub device: Option<String>,
    /// CPU threads for this step.
    pub threads: Option<usize>,
    /// No progress output.
    pub quiet: bool,
}

fn open(run: &Path, place: &StepPlace) -> Result<Session> {
    let mut session = Session::open(run)?;
    if let Some(t) = place.threads {
        tch::set_num_threads(t as i32);
    }
    if let Some(d) = &place.device {
        session.ws.device = crate::config::parse_device(d)?;
    }
    session.ws.verbose = !place.quiet;
    session.ws.bars = !place.quiet && std::io::stderr().is_terminal();
    Ok(session)
}

fn check_phase(session: &Session, phase: u32) -> Result<()> {
    if phase == 0 || phase > session.cfg.phases {
        return Err(Error::Config(format!(
            "phase {phase} is out of range: the run has phases 1 to {}",
            session.cfg.phases
        )));
    }
    Ok(())
}

/// Runs `step` of the run in `run`, printing what a step prints on
/// standard output (the soup's line, the report's table).
pub fn run_step(run: &Path, step: Step, place: &StepPlace) -> Result<()> {
    match step {
        Step::Dense => {
            open(run, place)?.ensure_dense()?;
        }
        Step::Prepare(phase) => {
            let session = open(run, place)?;
            check_phase(&session, phase)?;
            session.prepare(Chain::Soup, phase)?;
        }
        Step::Candidate { phase, index } => {
            let session = open(run, place)?;
            check_phase(&session, phase)?;
            if index >= session.cfg.soups.candidates {
                return Err(Error::Config(format!(
                    "candidate {index} is out of range: the run has {} candidates per phase",
                    session.cfg.soups.candidates
                )));
            }
            session.candidate(Chain::Soup, phase, index)?;
        }
        Step::Soup(phase) => {
            let session = open(run, place)?;
            check_phase(&session, phase)?;
            let info = session.soup(phase)?;
            println!(
                "phase {}: soup of {:?}: val {:.4}, test {:.4}, sparsity {:.2}%",
                info.phase,
                info.chosen,
                info.soup.val.top1,
                info.soup.test.top1,
                100.0 * info.soup.sparsity
            );
        }
        Step::Baseline(name) => {
            let session = open(run, place)?;
            if !session.cfg.baselines.contains(&name) {
                return Err(Error::Config(format!(
                    "the run was not configured with baseline {name:?} (--baselines)"
                )));
            }
            session.baseline(name)?;
        }
        Step::Report => {
            let cfg = SmsConfig::from_file(&crate::sms::Layout::new(run).config())?;
            if cfg.repeats > 1 {
                let opts = RepeatOptions {
                    jobs: 1,
                    side_by_side: 1,
                    verbose: false,
                    bars: false,
                };
                let summary = crate::sms::repeats::run_repeats(&cfg, run, opts)?;
                print!("{}", summary.table());
                return Ok(());
            }
            let session = Session::open(run)?;
            let report = crate::sms::rebuild_report(&session)?;
            print!("{}", report.table());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_parse_back() {
        use clap::ValueEnum;
        let cfg = SmsConfig {
            baselines: Baseline::value_variants().to_vec(),
            ..SmsConfig::default()
        };
        for step in crate::sms::slurm::steps(&cfg) {
            assert_eq!(step.arg().parse::<Step>().unwrap(), step);
        }
        for bad in [
            "prepare",
            "candidate:1",
            "soup:x",
            "baseline:gmp",
            "dense:1",
            "",
        ] {
            let err = bad.parse::<Step>().unwrap_err().to_string();
            assert!(err.contains("expected dense"), "{bad}: {err}");
            assert!(err.contains("imp, imp-long, imp-swa, reprune"), "{err}");
        }
        assert_eq!(
            "baseline:imp-swa".parse::<Step>().unwrap(),
            Step::Baseline(Baseline::ImpSwa)
        );
    }
}
