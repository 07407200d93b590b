//! The handlers of the sparse-model-soup subcommands: each one opens (or
//! starts) its run and prints its results on standard output.

use std::io::IsTerminal;

use super::{run_step, SmsArgs, SmsCommand, StepPlace};
use crate::error::{Error, Result};
use crate::pipeline::slurm;
use crate::sms::config::SmsConfig;
use crate::sms::layout::Layout;
use crate::sms::repeats::RepeatOptions;
use crate::sms::session::Session;
use crate::sms::slurm::{SmsGraph, Step};

/// The hidden per-step commands print their progress.
fn loud() -> StepPlace {
    StepPlace::default()
}

fn interactive(session: &mut Session, quiet: bool) {
    session.ws.verbose = !quiet;
    session.ws.bars = !quiet && std::io::stderr().is_terminal();
}

/// Runs one of the sparse-model-soup subcommands, printing results on
/// standard output.
pub fn run(command: SmsCommand) -> Result<()> {
    let exe = std::env::args().next().unwrap_or_else(|| "trainer".into());
    match command {
        SmsCommand::Schedule(args) => {
            println!("{}", super::schedule_json(&args)?);
        }
        SmsCommand::Sms(args) => {
            if let Some(step) = &args.step {
                let place = StepPlace {
                    device: args.train.device.clone(),
                    threads: args.train.threads,
                    quiet: args.quiet,
                };
                return run_step(&args.out, step.parse()?, &place);
            }
            let cfg = args.config()?;
            args.slurm.validate(args.jobs, cfg.repeats, args.plan)?;
            if args.slurm.slurm() {
                return submit_to_slurm(&args, cfg);
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
        SmsCommand::Dense(a) => run_step(&a.run, Step::Dense, &loud())?,
        SmsCommand::Prepare(a) => run_step(&a.run, Step::Prepare(a.phase), &loud())?,
        SmsCommand::Candidate(a) => {
            let step = Step::Candidate {
                phase: a.phase,
                index: a.index,
            };
            let place = StepPlace {
                device: a.device,
                threads: a.threads,
                quiet: false,
            };
            run_step(&a.run, step, &place)?;
        }
        SmsCommand::Soup(a) => run_step(&a.run, Step::Soup(a.phase), &loud())?,
        SmsCommand::Baseline(a) => run_step(&a.run, Step::Baseline(a.name), &loud())?,
        SmsCommand::Report(a) => run_step(&a.run, Step::Report, &loud())?,
    }
    Ok(())
}

/// `trainer sms --repeats R`: the plan of every repeat, or every repeat run
/// and the summary table.
fn run_repeats(cfg: &SmsConfig, args: &SmsArgs, exe: &str) -> Result<()> {
    use crate::sms::repeats::{repeat_config, repeat_dir};
    if args.plan {
        crate::sms::session::write_config(cfg, &args.out)?;
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
        "summary: {} (also summary.csv, summary.svg; each repeat's report in repeat-R/)",
        args.out.join("summary.json").display()
    );
    Ok(())
}

/// `trainer sms --executor slurm`: writes the configuration, submits the
/// steps that are not done, and with `--wait` follows them to the end.
fn submit_to_slurm(args: &SmsArgs, cfg: SmsConfig) -> Result<()> {
    cfg.claim(&args.out)?;
    // Jobs run elsewhere: give them absolute paths.
    let root = args
        .out
        .canonicalize()
        .map_err(|e| Error::io(&args.out, e))?;
    let layout = Layout::new(&root);
    let graph = SmsGraph {
        cfg: &cfg,
        layout: &layout,
    };
    if !slurm::follow(&graph, &args.slurm, args.plan, args.quiet)? {
        return Ok(());
    }
    let path = layout.report_json();
    let report: crate::sms::Report = crate::pipeline::records::read_json(&path)?;
    print!("{}", report.table());
    println!(
        "report: {} (also report.csv, accuracy_vs_sparsity.svg)",
        path.display()
    );
    Ok(())
}
