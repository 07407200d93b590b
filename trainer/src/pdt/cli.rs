//! `trainer pdt`: its flags (over the run configuration) and handler.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::methods::{Method, MethodArgs};
use crate::pdt::run::PdtRun;
use crate::pdt::{PdtBaseline, PdtConfig, PruneEvery};
use crate::pipeline::executor::{current_exe, shell_quote};
use crate::pipeline::slurm::{follow, SlurmArgs};
use crate::pipeline::SoupArgs;
use crate::schedule::ScheduleKind;

/// `trainer pdt`: every setting of [`PdtConfig`] as a flag (flags override
/// `--config`).
#[derive(Debug, Args)]
pub struct PdtArgs {
    /// Run folder; rerunning the same command resumes it.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file with any of the settings below.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The pruning method (those that `trainer pdt` runs; `imp` is
    /// `trainer sms`).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Training epochs (the whole budget, pruning included).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Baselines: plain (the method alone), long (alone with m times the
    /// epochs), comma-separated.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub baselines: Option<Vec<PdtBaseline>>,
    /// Fraction of training where pruning starts [default: 0.1].
    #[arg(long)]
    pub prune_start: Option<f64>,
    /// Fraction of training where the target is reached [default: 0.75].
    #[arg(long)]
    pub prune_end: Option<f64>,
    /// A pruning step every N epochs (2, 0.5) or iterations (100it) [default: 1].
    #[arg(long)]
    pub prune_every: Option<PruneEvery>,
    /// Every method's own flags (DPF's --dpf-interval, BIMP's --phases,
    /// ...).
    #[command(flatten)]
    pub methods: MethodArgs,
    /// Fork candidates only at segments of at least this many epochs [default: 0].
    #[arg(long)]
    pub sms_min_segment: Option<f64>,
    /// Learning-rate schedule over training: constant, step, linear or cosine.
    #[arg(long)]
    pub schedule: Option<ScheduleKind>,
    /// The training flags every training command shares (data, model,
    /// batch size, learning rate, optimizer, seeds, device, threads). The
    /// seed is the base seed: candidate i trains with seed + i.
    #[command(flatten)]
    pub train: crate::config::TrainArgs,
    /// The soup settings every method shares (sparsity, candidates, what
    /// they vary, how they are merged, exclusions, recalibration,
    /// robustness evaluation).
    #[command(flatten)]
    pub soups: SoupArgs,
    /// Train this many candidates side by side (processes).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Make the whole run R times with base seeds seed + 1000 r (in
    /// RUN/repeat-r/) and report mean ± std over repeats (summary.json,
    /// summary.csv, summary.svg).
    #[arg(long, value_name = "R")]
    pub repeats: Option<u32>,
    /// Write the configuration, print the command of every step of the run
    /// (one per line, in an order that respects their dependencies) and
    /// stop (with `--executor slurm`: write the sbatch scripts and print
    /// the sbatch commands instead of submitting them).
    #[arg(long)]
    pub plan: bool,
    /// Run only this step of the run in --out (as --plan prints them:
    /// prepare:CHAIN:K, candidate:CHAIN:K:I, close:CHAIN:K, finish:CHAIN,
    /// report).
    #[arg(long)]
    pub step: Option<String>,
    /// Where the steps run (`--executor`, `--wait`) and every Slurm job's
    /// resources.
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl PdtArgs {
    /// The configuration: defaults, then `--config`, then flags.
    pub fn config(&self) -> Result<PdtConfig> {
        let mut c = match &self.config {
            Some(path) => PdtConfig::from_file(path)?,
            None => PdtConfig::default(),
        };
        self.train.apply(&mut c.train);
        self.soups.apply(&mut c.soups)?;
        self.methods.apply(&mut c.methods);
        // An N:M pattern sets the final sparsity unless it is given.
        if let (Some(p), None) = (c.methods.gmp.nm, self.soups.sparsity) {
            c.soups.sparsity = crate::pdt::config::nm_sparsity(p);
        }
        crate::config::set_given!(
            self,
            c,
            method,
            baselines,
            prune_start,
            prune_end,
            prune_every,
            sms_min_segment,
            epochs,
            schedule,
            repeats
        );
        c.validate()?;
        Ok(c)
    }
}

/// Runs `trainer pdt`, printing the table on standard output.
pub fn run(args: &PdtArgs) -> Result<()> {
    if let Some(step) = &args.step {
        let mut run = PdtRun::open(&args.out)?;
        if let Some(t) = args.train.threads {
            tch::set_num_threads(t as i32);
        }
        if let Some(d) = &args.train.device {
            run.ws.device = crate::config::parse_device(d)?;
        }
        run.set_verbose(!args.quiet);
        return run.run_step(step);
    }
    let cfg = args.config()?;
    args.slurm.validate(args.jobs, cfg.repeats, args.plan)?;
    if args.slurm.slurm() {
        return submit_to_slurm(args, cfg);
    }
    if cfg.repeats > 1 {
        return run_repeats(args, &cfg);
    }
    let mut run = PdtRun::create(cfg, &args.out)?;
    if args.plan {
        let exe = current_exe()?;
        let out = shell_quote(&args.out.display().to_string());
        for step in run.plan() {
            println!("{} pdt --out {out} --step {step}", exe.display());
        }
        return Ok(());
    }
    run.set_verbose(!args.quiet);
    run.bars = !args.quiet && std::io::stderr().is_terminal();
    let report = run.run(args.jobs.max(1))?;
    print!("{}", report.table());
    println!(
        "report: {} (also report.csv, pdt.svg)",
        args.out.join("report.json").display()
    );
    Ok(())
}

/// `trainer pdt --executor slurm`: writes the configuration, submits the
/// steps that are not done, and with `--wait` follows them to the end and
/// prints the table.
fn submit_to_slurm(args: &PdtArgs, cfg: PdtConfig) -> Result<()> {
    let mut run = PdtRun::create_to_list_steps(cfg, &args.out)?;
    // Jobs run elsewhere: give them absolute paths (of the folder the
    // claim made).
    let root = args
        .out
        .canonicalize()
        .map_err(|e| Error::io(&args.out, e))?;
    run.root.clone_from(&root);
    let graph = crate::pdt::slurm::PdtGraph { run: &run };
    if !follow(&graph, &args.slurm, args.plan, args.quiet)? {
        return Ok(());
    }
    let path = root.join("report.json");
    let report: crate::pdt::PdtReport = crate::pipeline::records::read_json(&path)?;
    print!("{}", report.table());
    println!("report: {} (also report.csv, pdt.svg)", path.display());
    Ok(())
}

/// `trainer pdt --repeats R`: the plan of every repeat, or every repeat
/// run and the summary table.
fn run_repeats(args: &PdtArgs, cfg: &PdtConfig) -> Result<()> {
    use crate::pdt::repeats::repeat_config;
    use crate::pipeline::repeats::repeat_dir;
    if args.plan {
        cfg.validate()?;
        cfg.claim(&args.out)?;
        let exe = current_exe()?;
        for r in 0..cfg.repeats {
            let dir = repeat_dir(&args.out, r);
            let run = PdtRun::create(repeat_config(cfg, r), &dir)?;
            let out = shell_quote(&dir.display().to_string());
            for step in run.plan() {
                println!("{} pdt --out {out} --step {step}", exe.display());
            }
        }
        return Ok(());
    }
    let bars = !args.quiet && std::io::stderr().is_terminal();
    let jobs = args.jobs.max(1);
    let summary = crate::pdt::repeats::run_repeats(cfg, &args.out, jobs, !args.quiet, bars)?;
    print!("{}", summary.table());
    println!(
        "summary: {} (also summary.csv, summary.svg; each repeat's report in repeat-R/)",
        args.out.join("summary.json").display()
    );
    Ok(())
}
