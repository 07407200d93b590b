//! Candidates side by side: `--jobs N` trains the candidates of a segment
//! in child processes (`trainer pdt --out RUN --step CHAIN:SEGMENT:INDEX`),
//! each writing its files into the run folder as the parent would.

use std::process::Command;

use tch::Device;

use crate::error::{Error, Result};
use crate::pdt::records::Chain;
use crate::pdt::run::PdtRun;

impl PdtRun {
    pub(crate) fn candidates_in_parallel(
        &self,
        chain: Chain,
        k: usize,
        m: u32,
        jobs: usize,
    ) -> Result<()> {
        let exe =
            std::env::current_exe().map_err(|e| Error::Run(format!("cannot find myself: {e}")))?;
        let todo: Vec<u32> = (0..m)
            .filter(|&i| !self.candidate_paths(chain, k, i).1.exists())
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for batch in todo.chunks(jobs) {
            let mut children = Vec::new();
            for &i in batch {
                let mut cmd = Command::new(&exe);
                cmd.args(["pdt", "--quiet", "--out"])
                    .arg(&self.root)
                    .args(["--step", &format!("{}:{k}:{i}", chain.dir())]);
                // The run's own thread count where it sets one (results
                // depend on it), else the cores shared out.
                let threads = match self.cfg.train.threads {
                    0 => (cores / batch.len()).max(1),
                    t => t,
                };
                if self.session.device == Device::Cpu {
                    cmd.args(["--threads", &threads.to_string()]);
                }
                let child = cmd
                    .spawn()
                    .map_err(|e| Error::Run(format!("cannot start {}: {e}", exe.display())))?;
                children.push((i, child));
            }
            for (i, mut child) in children {
                let status = child
                    .wait()
                    .map_err(|e| Error::Run(format!("candidate {i}: {e}")))?;
                if !status.success() {
                    return Err(Error::Run(format!(
                        "candidate {i} of segment {k} failed ({status})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Trains the one candidate that `step` names (`CHAIN:SEGMENT:INDEX`,
    /// as `--jobs` passes it to a child process).
    pub fn run_step(&self, step: &str) -> Result<()> {
        let bad = || {
            Error::Config(format!(
                "--step {step:?}: expected CHAIN:SEGMENT:INDEX with CHAIN sms, plain or long"
            ))
        };
        let parts: Vec<&str> = step.split(':').collect();
        let [c, k, i] = parts[..] else {
            return Err(bad());
        };
        let chain = Chain::parse(c).ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        let i: u32 = i.parse().map_err(|_| bad())?;
        let segments = self.segments(chain);
        if k >= segments.len() || i >= self.forks(chain, &segments[k]) {
            return Err(Error::Config(format!(
                "--step {step:?} is out of range for this run"
            )));
        }
        self.candidate(chain, k, i).map(|_| ())
    }
}
