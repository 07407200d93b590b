//! Steps side by side in child processes: the `--jobs N` machinery that
//! trains several candidates at once, shared by `trainer sms` and
//! `trainer pdt`, and the progress bar of a step run in this process.

use std::path::PathBuf;
use std::process::Child;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Error, Result};

/// The running `trainer` binary, which the child processes run again.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::Run(format!("cannot find myself: {e}")))
}

/// Waits for every child (candidate index, process) and fails, naming the
/// candidate and `of` (`phase 2`, `segment 3`), if one of them failed.
/// All are waited for first, so none is left running behind an error.
pub fn wait_all(children: Vec<(u32, Child)>, of: &str) -> Result<()> {
    let mut failed = None;
    for (i, mut child) in children {
        let status = child
            .wait()
            .map_err(|e| Error::Run(format!("candidate {i}: {e}")))?;
        if !status.success() && failed.is_none() {
            failed = Some(format!("candidate {i} of {of} failed ({status})"));
        }
    }
    failed.map_or(Ok(()), |m| Err(Error::Run(m)))
}

/// A progress bar of `len` steps labelled `msg`, or a hidden one when bars
/// are off (quiet runs, no terminal).
pub fn progress_bar(show: bool, len: u64, msg: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {elapsed}<{eta}")
            .expect("a valid template"),
    );
    bar.set_message(msg);
    bar
}
