//! Command-line arguments of the sparse-model-soup commands; the `trainer`
//! binary adds them to its subcommands, and [`run`] (in `handlers.rs`)
//! carries each one out.

mod handlers;
mod schedule;
mod steps;

pub use handlers::run;
pub use schedule::{schedule_json, ScheduleArgs};
pub use steps::{run_step, StepPlace};

use std::path::PathBuf;

use clap::{Args, Subcommand};
use soup_core::NmPattern;

use crate::config::TrainArgs;
use crate::error::Result;
use crate::pipeline::lr::RetrainKind;
use crate::pipeline::slurm::SlurmArgs;
use crate::pipeline::SoupArgs;
use crate::schedule::ScheduleKind;
use crate::sms::config::{Baseline, SmsConfig};

/// The sparse-model-soup subcommands. The per-step commands (`dense`,
/// `prepare`, `candidate`, `soup`, `baseline`, `report`) and `plan` are
/// hidden: `trainer sms --out RUN --step STEP` and `--plan` are their
/// spellings now, and these stay for scripts written before.
#[derive(Debug, Subcommand)]
pub enum SmsCommand {
    /// Run (or resume) the sparse-model-soup pipeline (iterative magnitude
    /// pruning with soups) and print its table.
    Sms(Box<SmsArgs>),
    /// Print the commands of a run in order (for a cluster scheduler).
    #[command(hide = true)]
    Plan(RunArg),
    /// Train (or copy) and evaluate the dense parent.
    #[command(hide = true)]
    Dense(RunArg),
    /// Make the pruned parent of a phase (phase 1 also trains or copies
    /// the dense model).
    #[command(hide = true)]
    Prepare(PhaseArgs),
    /// Retrain one candidate of a phase from its pruned parent.
    #[command(hide = true)]
    Candidate(CandidateArgs),
    /// Check the candidates' masks, merge them, recalibrate and evaluate.
    #[command(hide = true)]
    Soup(PhaseArgs),
    /// Run one baseline chain (imp, imp-long, imp-swa, reprune) through
    /// every phase.
    #[command(hide = true)]
    Baseline(BaselineArgs),
    /// Write report.json, report.csv and the plot, and print the table.
    #[command(hide = true)]
    Report(RunArg),
    /// Print the per-phase sparsities and one phase's learning rates as
    /// JSON (for checking other implementations of the schedules).
    #[command(hide = true)]
    Schedule(ScheduleArgs),
}

/// `--run RUN`.
#[derive(Debug, Args)]
pub struct RunArg {
    /// The run folder (made by `trainer sms --out RUN`).
    #[arg(long)]
    pub run: PathBuf,
}

/// `--run RUN --phase P`.
#[derive(Debug, Args)]
pub struct PhaseArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Phase, from 1.
    #[arg(long)]
    pub phase: u32,
}

/// `trainer candidate`.
#[derive(Debug, Args)]
pub struct CandidateArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Phase, from 1.
    #[arg(long)]
    pub phase: u32,
    /// Candidate index, from 0.
    #[arg(long)]
    pub index: u32,
    /// Override the run's device for this job (e.g. cuda:1).
    #[arg(long)]
    pub device: Option<String>,
    /// Override the run's CPU thread count for this job.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `trainer baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// The baseline.
    #[arg(long, value_enum)]
    pub name: Baseline,
}

/// `trainer sms`: every setting of [`SmsConfig`] as a flag (flags override
/// `--config`).
#[derive(Debug, Args)]
pub struct SmsArgs {
    /// Run folder; rerunning the same command resumes it.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file with any of the settings below.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The training settings every training command shares (data, model,
    /// batch size, optimizer, seeds, device).
    #[command(flatten)]
    pub train: TrainArgs,
    /// The soup settings every method shares (sparsity, candidates, what
    /// they vary, how they are merged, exclusions, recalibration,
    /// robustness evaluation).
    #[command(flatten)]
    pub soups: SoupArgs,
    /// Prune-retrain phases.
    #[arg(long)]
    pub phases: Option<u32>,
    /// Retraining epochs per phase (fractions allowed).
    #[arg(long)]
    pub epochs_per_phase: Option<f64>,
    /// Train the dense parent for this many epochs first.
    #[arg(long)]
    pub pretrain_epochs: Option<u64>,
    /// Start from this trained dense checkpoint instead.
    #[arg(long)]
    pub from: Option<String>,
    /// Retraining schedule: allr, llr, clr, slr, lrw or ft [default: allr].
    #[arg(long, value_enum, ignore_case = true)]
    pub schedule: Option<RetrainKind>,
    /// Baselines to run (comma-separated): imp, imp-long (M times the
    /// epochs), imp-swa (each phase delivers its SWA average, see
    /// --imp-swa-from), reprune.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub baselines: Option<Vec<Baseline>>,
    /// Pretraining schedule: constant, step, linear or cosine.
    #[arg(long)]
    pub pretrain_schedule: Option<ScheduleKind>,
    /// Deliver each candidate as the average of its weights (SWA) over the
    /// last 1 - F of its retraining, recalibrated like every model.
    #[arg(long, value_name = "F")]
    pub swa_from: Option<f64>,
    /// Average every N iterations with --swa-from and in the imp-swa
    /// baseline [default: one epoch].
    #[arg(long, value_name = "N")]
    pub swa_every: Option<u64>,
    /// The imp-swa baseline averages its weights over the last 1 - F of
    /// each phase's retraining (independent of --swa-from) [default: 0.75].
    #[arg(long, value_name = "F")]
    pub imp_swa_from: Option<f64>,
    /// Prune the dense parent once to this N:M pattern (2:4: at most 2
    /// non-zeros in every 4 consecutive weights along the input dimension)
    /// and run every phase on that fixed mask. Tensors whose input
    /// dimension is not a multiple of M stay dense (the report names them).
    #[arg(long, value_name = "N:M", conflicts_with = "nm_ladder")]
    pub nm: Option<NmPattern>,
    /// One N:M pattern per phase, never denser than the one before (e.g.
    /// 2:4,1:4,1:8): each phase prunes the previous phase's model to its
    /// pattern inside the mask it has. Sets --phases to its length.
    #[arg(long, value_name = "N:M,...", value_delimiter = ',')]
    pub nm_ladder: Option<Vec<NmPattern>>,
    /// Train this many candidates side by side (processes; one GPU each
    /// where there are several).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Run the whole pipeline R times with base seeds seed + 1000 r (in
    /// RUN/repeat-r/) and report mean ± std over repeats.
    #[arg(long)]
    pub repeats: Option<u32>,
    /// Run this many repeats side by side, each in its own process.
    #[arg(long, default_value_t = 1)]
    pub repeat_jobs: usize,
    /// Run only this step of the run in --out (as --plan prints them:
    /// dense, prepare:P, candidate:P:I, soup:P, baseline:NAME, report);
    /// --device and --threads may differ from the run's.
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Write the configuration, print the plan and stop (with
    /// `--executor slurm`: also write the sbatch scripts and print the
    /// sbatch commands instead of submitting them).
    #[arg(long)]
    pub plan: bool,
    /// Where the steps run (`--executor`, `--wait`) and every Slurm job's
    /// resources.
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl SmsArgs {
    /// The configuration: defaults, then `--config`, then flags.
    pub fn config(&self) -> Result<SmsConfig> {
        let mut c = match &self.config {
            Some(path) => SmsConfig::from_file(path)?,
            None => SmsConfig::default(),
        };
        self.train.apply(&mut c.train);
        self.soups.apply(&mut c.soups)?;
        crate::config::set_given!(
            self,
            c,
            phases,
            epochs_per_phase,
            pretrain_epochs,
            schedule,
            baselines,
            pretrain_schedule,
            repeats
        );
        if self.from.is_some() {
            c.from = self.from.clone();
        }
        if self.swa_from.is_some() {
            c.swa_from = self.swa_from;
        }
        if self.swa_every.is_some() {
            c.swa_every = self.swa_every;
        }
        if let Some(f) = self.imp_swa_from {
            c.imp_swa_from = f;
        }
        if let Some(p) = self.nm {
            c.nm = Some(p);
            c.nm_ladder.clear();
        }
        if let Some(ladder) = &self.nm_ladder {
            c.nm_ladder = ladder.clone();
            c.nm = None;
            if self.phases.is_none() {
                c.phases = ladder.len() as u32;
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Sms {
        #[command(flatten)]
        args: SmsArgs,
    }

    #[test]
    fn shared_training_flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "lr = 0.2\nseed = 3\nbatch_size = 64\nphases = 4\n").unwrap();
        let parsed = Sms::try_parse_from([
            "sms",
            "--out",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--lr",
            "0.05",
            "--warmup-epochs",
            "0.5",
            "--split-seed",
            "9",
            "--phases",
            "2",
        ])
        .unwrap();
        let c = parsed.args.config().unwrap();
        // Flags win over the file, the file over the defaults.
        assert_eq!(
            (c.train.lr, c.train.warmup_epochs, c.train.split_seed),
            (0.05, 0.5, 9)
        );
        assert_eq!((c.train.seed, c.train.batch_size, c.phases), (3, 64, 2));
        assert_eq!(c.train.model, "cnn");
        assert_eq!(c.pretrain_config().train, c.train);
    }
}
