//! The `trainer` command: argument parsing and dispatch to the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use trainer::robust::{corruption_accuracies, mean_accuracy, EvalSummary, OodReport};
use trainer::run::{run_training, ProgressOutput};
use trainer::{
    evaluate, parse_device, Arch, Dataset, Model, ModelSpec, ScheduleKind, Split, TrainConfig,
};

/// Dense training, evaluation and checkpoints of image classifiers on libtorch.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a freshly initialised checkpoint.
    Init(InitArgs),
    /// Train a model densely into a run folder.
    Train(TrainCommand),
    /// Evaluate a checkpoint on the test split, clean and under corruptions.
    Eval(EvalArgs),
    /// Time training steps on random data.
    Bench(BenchArgs),
    /// Prune while training from scratch (gmp, dpf, bimp), with sparse
    /// model soups between pruning steps, and print the results table.
    Pdt(Box<trainer::pdt::cli::PdtArgs>),
    /// Show each step of a `trainer sms` or `trainer pdt` run: done,
    /// running, pending, failed or cancelled (with its Slurm job and log),
    /// or not submitted.
    Status(trainer::status::StatusArgs),
    #[command(flatten)]
    Sms(trainer::sms::cli::SmsCommand),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Architecture: mlp, cnn, resnet20, resnet56, wrn-D-W, wrn-D-W-ref,
    /// resnet18, resnet50.
    #[arg(long)]
    model: String,
    /// Number of classes.
    #[arg(long)]
    num_classes: i64,
    /// Input shape CxHxW.
    #[arg(long, default_value = "3x32x32", value_parser = parse_shape)]
    input: [i64; 3],
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Output checkpoint (.safetensors).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct TrainCommand {
    /// TOML file with any of the settings below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder to create (config.toml, metrics.jsonl, final.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out after its last finished epoch (give the
    /// same settings; only --device and --threads may change).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    train: trainer::TrainArgs,
    /// Training epochs [default: 10].
    #[arg(long)]
    epochs: Option<u64>,
    /// Learning-rate schedule: constant, step, linear, cosine [default: cosine].
    #[arg(long)]
    schedule: Option<ScheduleKind>,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Architecture of the checkpoint.
    #[arg(long)]
    model: String,
    /// Checkpoint to evaluate (.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data set: `fashion-mnist` or a folder.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Images per batch.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ood: trainer::OodArgs,
    #[command(flatten)]
    folder: trainer::data::FolderArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Architecture.
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// Input shape CxHxW.
    #[arg(long, default_value = "3x32x32", value_parser = parse_shape)]
    input: [i64; 3],
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    num_classes: i64,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn parse_shape(s: &str) -> Result<[i64; 3], String> {
    let dims: Vec<i64> = s
        .split('x')
        .map(|d| d.parse().map_err(|_| format!("bad shape {s:?}")))
        .collect::<Result<_, _>>()?;
    dims.try_into()
        .map_err(|_| format!("shape {s:?} is not CxHxW"))
}

fn main() -> ExitCode {
    trainer::runtime::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trainer: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sms(c) => trainer::sms::cli::run(c)?,
        Command::Pdt(a) => trainer::pdt::cli::run(&a)?,
        Command::Status(a) => trainer::status::run(&a)?,
        Command::Init(a) => {
            tch::manual_seed(a.seed);
            let arch: Arch = a.model.parse()?;
            let model = Model::new(
                arch,
                ModelSpec {
                    num_classes: a.num_classes,
                    input: a.input,
                },
                tch::Device::Cpu,
            );
            model
                .save(&a.output)
                .with_context(|| format!("writing {}", a.output.display()))?;
        }
        Command::Train(a) => {
            let cfg = train_config(&a)?;
            let progress = if std::io::stderr().is_terminal() {
                ProgressOutput::Bar
            } else {
                ProgressOutput::Lines
            };
            let m = run_training(&cfg, &a.out, progress, a.resume)
                .with_context(|| format!("run {}", a.out.display()))?;
            println!("{}", serde_json::to_string(&m)?);
        }
        Command::Eval(a) => {
            let ood_spec = a.ood.spec()?;
            let device = parse_device(&a.device)?;
            let options = a.folder.apply(Default::default());
            options.validate()?;
            let data = Dataset::load_with(&a.data, 0, &options)?;
            let [c, h, w] = data.input_shape().map(|d| d as i64);
            let spec = ModelSpec {
                num_classes: data.num_classes as i64,
                input: [c, h, w],
            };
            let model = Model::new(a.model.parse()?, spec, device);
            model.load(&a.checkpoint)?;
            let r = evaluate(&model, data.eval_batches(Split::Test, a.batch_size, device))?;
            data.check()?;
            let corruptions =
                corruption_accuracies(&model, &data, &ood_spec, device, a.batch_size as i64)?;
            let ood = OodReport {
                test_acc: r.top1,
                ood_acc: mean_accuracy(&corruptions),
                corruptions,
            };
            if a.json {
                let summary = EvalSummary { test: r, ood };
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{:<20} {:>10}", "samples", r.samples);
                println!("{:<20} {:>10.4}", "loss", r.loss);
                println!("{:<20} {:>10.4}", "top1", r.top1);
                println!("{:<20} {:>10.4}", "balanced_accuracy", r.balanced_accuracy);
                println!("{:<20} {:>10.4}", "ece_15", r.ece);
                if let Some(acc) = ood.ood_acc {
                    println!("{:<20} {:>10.4}", "ood_acc", acc);
                    println!();
                    println!("{:<20} {:>8} {:>10}", "corruption", "severity", "top1");
                    for (name, per) in &ood.corruptions {
                        for (s, acc) in per {
                            println!("{name:<20} {s:>8} {acc:>10.4}");
                        }
                    }
                }
            }
        }
        Command::Bench(a) => {
            if a.threads > 0 {
                tch::set_num_threads(a.threads as i32);
            }
            let spec = ModelSpec {
                num_classes: a.num_classes,
                input: a.input,
            };
            let device = parse_device(&a.device)?;
            let t = trainer::train::time_train_step(
                a.model.parse()?,
                spec,
                a.batch_size,
                a.warmup,
                a.steps,
                device,
            );
            println!(
                "{}",
                serde_json::json!({"impl": "trainer", "model": a.model, "batch_size": a.batch_size,
                    "threads": tch::get_num_threads(), "ms_per_step": t.as_secs_f64() * 1e3})
            );
        }
    }
    Ok(())
}

/// Defaults, then the config file, then the flags.
fn train_config(a: &TrainCommand) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    a.train.apply(&mut c.train);
    if let Some(e) = a.epochs {
        c.epochs = e;
    }
    if let Some(s) = a.schedule {
        c.schedule = s;
    }
    Ok(c)
}
