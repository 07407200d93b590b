//! Running steps in child processes: `--jobs N` trains up to N candidates
//! side by side, each a run of the `trainer` binary on the shared run
//! folder. One loop serves every method: each child gets its own CUDA
//! device where there are several, and on a CPU the run's `--threads`
//! (or, when it sets none, the cores shared out among the children).

use std::path::PathBuf;
use std::process::{Child, Command};

use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;

use crate::error::{Error, Result};

/// The running `trainer` binary, which the child processes run again.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::Run(format!("cannot find myself: {e}")))
}

/// Where the children compute: the run's device and thread count.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// The device the run computes on.
    pub device: Device,
    /// The run's CPU thread count (0: not set).
    pub threads: usize,
}

impl Placement {
    /// The flags that place child `slot` of a batch of `batch` children:
    /// `--device cuda:K` spreading them over the CUDA devices when there
    /// are several, `--threads T` on a CPU (the run's own count where it
    /// sets one, since results depend on it, else the cores shared out).
    pub fn flags(&self, slot: usize, batch: usize) -> Vec<String> {
        let cuda = tch::Cuda::device_count() as usize;
        match self.device {
            Device::Cuda(_) if cuda > 1 => {
                vec!["--device".into(), format!("cuda:{}", slot % cuda)]
            }
            Device::Cpu => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = match self.threads {
                    0 => (cores / batch).max(1),
                    t => t,
                };
                vec!["--threads".into(), threads.to_string()]
            }
            _ => Vec::new(),
        }
    }
}

/// Runs one child per entry of `todo` (candidate indices), at most `jobs`
/// at a time: `command(i)` gives the `trainer` arguments of candidate `i`,
/// to which the placement flags are added. Fails, naming the candidate and
/// `of` (`phase 2`, `segment 3`), if a child fails; every child of a batch
/// is waited for first.
pub fn run_children(
    todo: &[u32],
    jobs: usize,
    placement: Placement,
    of: &str,
    command: impl Fn(u32) -> Vec<String>,
) -> Result<()> {
    let exe = current_exe()?;
    for batch in todo.chunks(jobs.max(1)) {
        let mut children = Vec::new();
        for (slot, &i) in batch.iter().enumerate() {
            let child = Command::new(&exe)
                .args(command(i))
                .args(placement.flags(slot, batch.len()))
                .spawn()
                .map_err(|e| Error::Run(format!("cannot start {}: {e}", exe.display())))?;
            children.push((i, child));
        }
        wait_all(children, of)?;
    }
    Ok(())
}

/// Waits for every child (candidate index, process) and fails, naming the
/// candidate and `of`, if one of them failed. All are waited for first, so
/// none is left running behind an error.
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

/// `s` as one word of a POSIX shell command line: as it is when it holds
/// only safe characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_on_a_cpu_get_the_runs_threads_or_a_share_of_the_cores() {
        let run_sets = Placement {
            device: Device::Cpu,
            threads: 3,
        };
        assert_eq!(run_sets.flags(1, 4), ["--threads", "3"]);
        let unset = Placement {
            device: Device::Cpu,
            threads: 0,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let want = (cores / 2).max(1).to_string();
        assert_eq!(unset.flags(0, 2), ["--threads", want.as_str()]);
    }

    #[test]
    fn paths_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/runs/a-1@x"), "/runs/a-1@x");
        assert_eq!(shell_quote("/runs/it's"), r"'/runs/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
