//! The record of what was submitted (`RUN/slurm/jobs.json`), and running
//! Slurm's client commands with their errors explained.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::script::jobs_file;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

/// One submitted step (`RUN/slurm/jobs.json` lists them, latest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submitted {
    /// Step name (`candidate-1-2`).
    pub step: String,
    /// The job id as Slurm prints it (`1234`, or `1234_2` for an array task).
    pub job: String,
    /// The step's log.
    pub log: PathBuf,
}

pub(super) fn read_submitted(root: &Path) -> Result<Vec<Submitted>> {
    let path = jobs_file(root);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable job list: {e}", path.display())))
}

pub(super) fn write_submitted(root: &Path, all: &[Submitted]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(all).expect("serialisable");
    text.push('\n');
    write_atomic(&jobs_file(root), text.as_bytes())
}

pub(super) fn slurm_command(program: &str, args: &[String]) -> Result<String> {
    let shown = format!("{program} {}", args.first().map_or("", String::as_str));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Slurm {
            command: shown.clone(),
            msg: format!("cannot run it ({e}); is Slurm installed and SLURM_CONF set?"),
        })?;
    if !out.status.success() {
        // Slurm's clients explain themselves in their last line (earlier
        // ones retrace how they got there).
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Slurm {
            command: shown,
            msg: format!("{} ({})", last.trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
