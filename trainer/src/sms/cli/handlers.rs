//! The handlers of the sparse-model-soup subcommands: each one opens (or
//! starts) its run and prints its results on standard output.

use std::io::IsTerminal;

use super::{run_step, Executor, SmsArgs, SmsCommand, StepPlace};
use crate::error::{Error, Result};
use crate::sms::config::SmsConfig;
use crate::sms::layout::Layout;
use crate::sms::repeats::RepeatOptions;
use crate::sms::session::Session;
use crate::sms::slurm::{self, Step};

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
