//! Command-line arguments of the sparse-model-soup commands and their
//! handlers; the `trainer` binary adds them to its subcommands.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::eval::BnRecal;
use crate::schedule::ScheduleKind;
use crate::sms::config::{Baseline, SmsConfig, SoupKind, Vary};
use crate::sms::layout::{Chain, Layout};
use crate::sms::lr::RetrainKind;
use crate::sms::repeats::RepeatOptions;
use crate::sms::slurm;
use crate::sms::steps::Session;

/// The sparse-model-soup subcommands.
#[derive(Debug, Subcommand)]
pub enum SmsCommand {
    /// Run (or resume) the sparse-model-soup pipeline and print its table.
    Sms(Box<SmsArgs>),
    /// Print the commands of a run in order (for a cluster scheduler).
    Plan(RunArg),
    /// Show each step of a run: done, running, pending, failed or
    /// cancelled (with its job and log), or not submitted.
    Status(StatusArgs),
    /// Train (or copy) and evaluate the dense parent.
    Dense(RunArg),
    /// Make the pruned parent of a phase (phase 1 also trains or copies
    /// the dense model).
    Prepare(PhaseArgs),
    /// Retrain one candidate of a phase from its pruned parent.
    Candidate(CandidateArgs),
    /// Check the candidates' masks, merge them, recalibrate and evaluate.
    Soup(PhaseArgs),
    /// Run one baseline chain (imp, imp-long, reprune) through every phase.
    Baseline(BaselineArgs),
    /// Write report.json, report.csv and the plot, and print the table.
    Report(RunArg),
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

/// `trainer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where the steps of `trainer sms` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// In this process (and its children with --jobs).
    Local,
    /// As sbatch jobs on a Slurm cluster, chained by dependencies.
    Slurm,
}

/// What every Slurm job asks for (`--executor slurm`).
#[derive(Debug, Clone, Default, Args)]
pub struct SlurmArgs {
    /// Partition for every job.
    #[arg(long, value_name = "NAME")]
    pub slurm_partition: Option<String>,
    /// Time limit of every job (e.g. 2:00:00).
    #[arg(long, value_name = "TIME")]
    pub slurm_time: Option<String>,
    /// CPUs per task.
    #[arg(long, value_name = "N")]
    pub slurm_cpus_per_task: Option<u32>,
    /// Memory per job (e.g. 8G).
    #[arg(long, value_name = "SIZE")]
    pub slurm_mem: Option<String>,
    /// GPUs per task.
    #[arg(long, value_name = "N")]
    pub slurm_gpus_per_task: Option<u32>,
    /// Account to charge.
    #[arg(long, value_name = "NAME")]
    pub slurm_account: Option<String>,
    /// Any other sbatch option, as --name=value (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
}

impl From<&SlurmArgs> for slurm::Resources {
    fn from(a: &SlurmArgs) -> Self {
        slurm::Resources {
            partition: a.slurm_partition.clone(),
            time: a.slurm_time.clone(),
            cpus_per_task: a.slurm_cpus_per_task,
            mem: a.slurm_mem.clone(),
            gpus_per_task: a.slurm_gpus_per_task,
            account: a.slurm_account.clone(),
            extra: a.sbatch_arg.clone(),
        }
    }
}

/// `trainer baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// imp, imp-long or reprune.
    #[arg(long)]
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
    /// Data set: fashion-mnist, or a folder of IDX or CIFAR binary files.
    #[arg(long)]
    pub data: Option<String>,
    /// Architecture: mlp, cnn, resnet20, resnet56, wrn-D-W, wrn-D-W-ref,
    /// resnet18, resnet50.
    #[arg(long)]
    pub model: Option<String>,
    /// Final sparsity over prunable weights, in [0, 1).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Prune-retrain phases.
    #[arg(long)]
    pub phases: Option<u32>,
    /// Candidates per phase (m).
    #[arg(long)]
    pub candidates: Option<u32>,
    /// Retraining epochs per phase (fractions allowed).
    #[arg(long)]
    pub epochs_per_phase: Option<f64>,
    /// Train the dense parent for this many epochs first.
    #[arg(long)]
    pub pretrain_epochs: Option<u64>,
    /// Start from this trained dense checkpoint instead.
    #[arg(long)]
    pub from: Option<String>,
    /// uniform or greedy.
    #[arg(long)]
    pub soup: Option<SoupKind>,
    /// Greedy soups demand a strict gain in validation accuracy.
    #[arg(long)]
    pub strict: bool,
    /// What candidates vary: seed, weight-decay, retrain-length or lr.
    #[arg(long)]
    pub vary: Option<Vary>,
    /// Per-candidate values for --vary (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub vary_values: Option<Vec<f64>>,
    /// Retraining schedule: allr, llr, clr, slr, lrw or ft.
    #[arg(long)]
    pub schedule: Option<RetrainKind>,
    /// Share of an epoch's batches for batch-norm recalibration.
    #[arg(long)]
    pub bn_recal_fraction: Option<f64>,
    /// Batch-norm recalibration: cumulative (plain average over the
    /// batches) or ema (momentum 0.1, as the reference code).
    #[arg(long, value_enum)]
    pub bn_recal: Option<BnRecal>,
    /// Baselines to run: imp, imp-long, reprune (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub baselines: Option<Vec<Baseline>>,
    /// Images per training batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of pretraining (eta_max).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Pretraining schedule: constant, step, linear or cosine.
    #[arg(long)]
    pub pretrain_schedule: Option<ScheduleKind>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Never prune tensors matching this regex (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Base seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads for libtorch (0: its default).
    #[arg(long)]
    pub threads: Option<usize>,
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
    /// Robustness evaluation of every reported model.
    #[command(flatten)]
    pub ood: crate::robust::OodArgs,
    /// Image-folder settings.
    #[command(flatten)]
    pub folder: crate::data::FolderArgs,
    /// Write the configuration, print the plan and stop (with
    /// `--executor slurm`: also write the sbatch scripts and print the
    /// sbatch commands instead of submitting them).
    #[arg(long)]
    pub plan: bool,
    /// Run the steps here (local) or submit them to Slurm as jobs (slurm);
    /// submitting again submits only the steps that are not done.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// With --executor slurm: follow the jobs until the run ends, then
    /// print the table (exit status 2 when a step fails).
    #[arg(long)]
    pub wait: bool,
    /// Every Slurm job's resources.
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
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    c.$field = v.clone();
                }
            )*};
        }
        set!(
            data,
            model,
            sparsity,
            phases,
            candidates,
            epochs_per_phase,
            pretrain_epochs,
            soup,
            vary,
            vary_values,
            schedule,
            bn_recal_fraction,
            bn_recal,
            baselines,
            batch_size,
            lr,
            pretrain_schedule,
            momentum,
            weight_decay,
            seed,
            device,
            threads,
            repeats
        );
        if self.from.is_some() {
            c.from = self.from.clone();
        }
        if self.strict {
            c.strict = true;
        }
        if !self.exclude.is_empty() {
            c.exclude = self.exclude.clone();
        }
        c.ood = self.ood.apply(c.ood)?;
        c.folder = self.folder.apply(c.folder);
        c.folder.validate()?;
        c.validate()?;
        Ok(c)
    }
}

fn interactive(session: &mut Session, quiet: bool) {
    session.verbose = !quiet;
    session.bars = !quiet && std::io::stderr().is_terminal();
}

/// Runs one of the sparse-model-soup subcommands, printing results on
/// standard output.
pub fn run(command: SmsCommand) -> Result<()> {
    let exe = std::env::args().next().unwrap_or_else(|| "trainer".into());
    match command {
        SmsCommand::Sms(args) => {
            let cfg = args.config()?;
            if args.executor == Executor::Slurm {
                if cfg.repeats > 1 {
                    return Err(Error::Config(
                        "--repeats runs with --executor local; submit each repeat's run to Slurm on its own".into(),
                    ));
                }
                return submit_to_slurm(&args, cfg);
            }
            if args.wait {
                return Err(Error::Config(
                    "--wait follows Slurm jobs: give it with --executor slurm".into(),
                ));
            }
            if cfg.repeats > 1 {
                return run_repeats(&cfg, &args, &exe);
            }
            let mut session = Session::create(cfg, &args.out)?;
            if args.plan {
                for line in crate::sms::plan(&session, &exe) {
                    println!("{line}");
                }
                return Ok(());
            }
            interactive(&mut session, args.quiet);
            let report = crate::sms::run(&session, args.jobs.max(1))?;
            print!("{}", report.table());
            println!(
                "report: {} (also report.csv, accuracy_vs_sparsity.svg)",
                session.layout.report_json().display()
            );
        }
        SmsCommand::Plan(a) => {
            let session = Session::open(&a.run)?;
            for line in crate::sms::plan(&session, &exe) {
                println!("{line}");
            }
        }
        SmsCommand::Status(a) => {
            let (cfg, layout) = open_light(&a.run)?;
            let st = slurm::status(&cfg, &layout)?;
            if a.json {
                println!("{}", serde_json::json!({ "run": layout.root, "steps": st }));
            } else {
                print!("{}", status_table(&st));
            }
        }
        SmsCommand::Dense(a) => {
            let mut session = Session::open(&a.run)?;
            interactive(&mut session, false);
            session.ensure_dense()?;
        }
        SmsCommand::Prepare(a) => {
            let mut session = Session::open(&a.run)?;
            interactive(&mut session, false);
            check_phase(&session, a.phase)?;
            session.prepare(Chain::Soup, a.phase)?;
        }
        SmsCommand::Candidate(a) => {
            let mut cfg_session = Session::open(&a.run)?;
            if let Some(t) = a.threads {
                tch::set_num_threads(t as i32);
            }
            if let Some(d) = &a.device {
                cfg_session.device = crate::config::parse_device(d)?;
            }
            interactive(&mut cfg_session, false);
            check_phase(&cfg_session, a.phase)?;
            if a.index >= cfg_session.cfg.candidates {
                return Err(Error::Config(format!(
                    "--index {} is out of range: the run has {} candidates per phase",
                    a.index, cfg_session.cfg.candidates
                )));
            }
            cfg_session.candidate(Chain::Soup, a.phase, a.index)?;
        }
        SmsCommand::Soup(a) => {
            let mut session = Session::open(&a.run)?;
            interactive(&mut session, false);
            check_phase(&session, a.phase)?;
            let info = session.soup(a.phase)?;
            println!(
                "phase {}: soup of {:?}: val {:.4}, test {:.4}, sparsity {:.2}%",
                info.phase,
                info.chosen,
                info.soup.val.top1,
                info.soup.test.top1,
                100.0 * info.soup.sparsity
            );
        }
        SmsCommand::Baseline(a) => {
            let mut session = Session::open(&a.run)?;
            interactive(&mut session, false);
            if !session.cfg.baselines.contains(&a.name) {
                return Err(Error::Config(format!(
                    "the run was not configured with baseline {:?} (--baselines)",
                    a.name
                )));
            }
            session.baseline(a.name)?;
        }
        SmsCommand::Report(a) => {
            let cfg = SmsConfig::from_file(&crate::sms::Layout::new(&a.run).config())?;
            if cfg.repeats > 1 {
                let opts = RepeatOptions {
                    jobs: 1,
                    side_by_side: 1,
                    verbose: false,
                    bars: false,
                };
                let summary = crate::sms::repeats::run_repeats(&cfg, &a.run, opts)?;
                print!("{}", summary.table());
                return Ok(());
            }
            let session = Session::open(&a.run)?;
            let report = crate::sms::rebuild_report(&session)?;
            print!("{}", report.table());
        }
    }
    Ok(())
}

/// `trainer sms --repeats R`: the plan of every repeat, or every repeat run
/// and the summary table.
fn run_repeats(cfg: &SmsConfig, args: &SmsArgs, exe: &str) -> Result<()> {
    use crate::sms::repeats::{repeat_config, repeat_dir};
    if args.plan {
        crate::sms::steps::write_config(cfg, &args.out)?;
        for r in 0..cfg.repeats {
            let session = Session::create(repeat_config(cfg, r), &repeat_dir(&args.out, r))?;
            for line in crate::sms::plan(&session, exe) {
                println!("{line}");
            }
        }
        return Ok(());
    }
    let opts = RepeatOptions {
        jobs: args.jobs.max(1),
        side_by_side: args.repeat_jobs.max(1),
        verbose: !args.quiet,
        bars: !args.quiet && std::io::stderr().is_terminal(),
    };
    let summary = crate::sms::repeats::run_repeats(cfg, &args.out, opts)?;
    print!("{}", summary.table());
    println!(
        "summary: {} (also summary.csv; each repeat's report in repeat-R/)",
        args.out.join("summary.json").display()
    );
    Ok(())
}

/// A run's configuration and layout, without loading its data (for
/// submitting and for status, which never train).
fn open_light(run: &std::path::Path) -> Result<(SmsConfig, Layout)> {
    let layout = Layout::new(run);
    if !layout.config().exists() {
        return Err(Error::Config(format!(
            "{} holds no run (no config.toml)",
            run.display()
        )));
    }
    let cfg = SmsConfig::from_file(&layout.config())?;
    Ok((cfg, layout))
}

/// `trainer sms --executor slurm`: writes the configuration, submits the
/// steps that are not done, and with `--wait` follows them to the end.
fn submit_to_slurm(args: &SmsArgs, cfg: SmsConfig) -> Result<()> {
    if args.jobs > 1 {
        return Err(Error::Config(
            "--jobs is for --executor local; on Slurm every candidate is its own task".into(),
        ));
    }
    let res = slurm::Resources::from(&args.slurm);
    res.validate()?;
    cfg.claim(&args.out)?;
    // Jobs run elsewhere: give them absolute paths.
    let root = args
        .out
        .canonicalize()
        .map_err(|e| Error::io(&args.out, e))?;
    let layout = Layout::new(&root);
    let exe = std::env::current_exe()
        .map_err(|e| Error::Run(format!("cannot find the trainer binary: {e}")))?;
    let (jobs, shell) = slurm::submit(&cfg, &layout, &exe, &res, args.plan)?;
    if args.plan {
        for line in shell {
            println!("{line}");
        }
        return Ok(());
    }
    for j in &jobs {
        if j.array.is_empty() {
            println!("{} {}", j.id, j.name);
        } else {
            let tasks: Vec<String> = j.array.iter().map(u32::to_string).collect();
            println!("{} {} (tasks {})", j.id, j.name, tasks.join(","));
        }
    }
    if !args.wait {
        if jobs.is_empty() {
            eprintln!(
                "nothing to submit: the run is finished ({})",
                layout.report_json().display()
            );
        } else if !args.quiet {
            eprintln!(
                "submitted {} jobs; follow them with `trainer status --run {}`",
                jobs.len(),
                root.display()
            );
        }
        return Ok(());
    }
    let bar = if !args.quiet && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(slurm::steps(&cfg).len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let result = slurm::wait(&cfg, &layout, std::time::Duration::from_secs(1), |c| {
        let msg = format!(
            "{} running, {} pending, {} failed",
            c.running, c.pending, c.failed
        );
        match &bar {
            Some(bar) => {
                bar.set_position(c.done as u64);
                bar.set_message(msg);
            }
            None if !args.quiet => eprintln!("slurm: {}/{} steps done, {msg}", c.done, c.total),
            None => {}
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    let path = layout.report_json();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let report: crate::sms::Report = serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable report: {e}", path.display())))?;
    print!("{}", report.table());
    println!(
        "report: {} (also report.csv, accuracy_vs_sparsity.svg)",
        path.display()
    );
    Ok(())
}

/// `trainer status` as an aligned table.
fn status_table(st: &[slurm::StepStatus]) -> String {
    let mut rows = vec![[
        "step".to_string(),
        "state".into(),
        "job".into(),
        "slurm".into(),
        "log".into(),
    ]];
    for s in st {
        let state = serde_json::to_value(s.state).expect("serialisable");
        // The log matters for what did not finish.
        let log = match s.state {
            slurm::State::Done => String::new(),
            _ => s
                .log
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
        };
        rows.push([
            s.step.clone(),
            state.as_str().unwrap_or("").to_string(),
            s.job.clone().unwrap_or_default(),
            s.slurm.clone().unwrap_or_default(),
            log,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn check_phase(session: &Session, phase: u32) -> Result<()> {
    if phase == 0 || phase > session.cfg.phases {
        return Err(Error::Config(format!(
            "--phase {phase} is out of range: the run has phases 1 to {}",
            session.cfg.phases
        )));
    }
    Ok(())
}
