//! `trainer status`: the state of every step of a run made by `trainer
//! sms` or `trainer pdt` (done, running, pending, failed or cancelled with
//! its Slurm job and log, or not submitted). The run's kind comes from its
//! `config.toml`.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, Result};
use crate::pdt::run::PdtRun;
use crate::pdt::slurm::PdtGraph;
use crate::pipeline::slurm::{status, status_table, StepStatus};
use crate::sms::slurm::SmsGraph;
use crate::sms::{Layout, SmsConfig};

/// `trainer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run folder (the `--out` of `trainer sms` or `trainer pdt`).
    #[arg(long = "out", visible_alias = "run", value_name = "RUN")]
    pub run: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The kinds of run that `trainer status` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `trainer sms`.
    Sms,
    /// `trainer pdt`.
    Pdt,
}

/// The kind of the run in `run`, from the keys of its `config.toml`: a
/// `trainer pdt` configuration names its `method`, a `trainer sms` one its
/// `phases`. A folder that holds repeats (`repeat-R/`) is no run of its own.
pub fn run_kind(run: &Path) -> Result<RunKind> {
    let path = run.join("config.toml");
    if !path.exists() {
        return Err(Error::Config(format!(
            "{} holds no run (no config.toml)",
            run.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if let Some(r) = table.get("repeats").and_then(toml::Value::as_integer) {
        if r > 1 {
            return Err(Error::Config(format!(
                "{} holds {r} repeats of a run: ask for the status of one of them ({})",
                run.display(),
                run.join("repeat-0").display()
            )));
        }
    }
    if table.contains_key("method") {
        Ok(RunKind::Pdt)
    } else if table.contains_key("phases") {
        Ok(RunKind::Sms)
    } else {
        Err(Error::Config(format!(
            "{}: not the configuration of a `trainer sms` or `trainer pdt` run",
            path.display()
        )))
    }
}

/// The state of every step of the run in `run`, whatever its kind.
pub fn steps(run: &Path) -> Result<Vec<StepStatus>> {
    match run_kind(run)? {
        RunKind::Sms => {
            let layout = Layout::new(run);
            let cfg = SmsConfig::from_file(&layout.config())?;
            status(&SmsGraph {
                cfg: &cfg,
                layout: &layout,
            })
        }
        RunKind::Pdt => {
            // The segments depend on the data's size: the run opens whole,
            // on the CPU.
            let open = PdtRun::open_to_list_steps(run)?;
            status(&PdtGraph { run: &open })
        }
    }
}

/// Runs `trainer status`, printing a table (or JSON) on standard output.
pub fn run(args: &StatusArgs) -> Result<()> {
    let st = steps(&args.run)?;
    if args.json {
        println!("{}", serde_json::json!({ "run": args.run, "steps": st }));
    } else {
        print!("{}", status_table(&st));
    }
    Ok(())
}
