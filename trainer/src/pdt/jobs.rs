//! The steps of a run one at a time: `--jobs N` trains the candidates of a
//! segment in child processes (`trainer pdt --out RUN --step
//! candidate:CHAIN:K:I`), each writing its files into the run folder as the
//! parent would, and `--plan` lists every step for running them elsewhere
//! (other machines, cluster jobs) over a shared run folder.

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
        let exe = crate::jobs::current_exe()?;
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
                    .args(["--step", &format!("candidate:{}:{k}:{i}", chain.dir())]);
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
            crate::jobs::wait_all(children, &format!("segment {k}"))?;
        }
        Ok(())
    }

    /// The steps of the whole run, in an order that respects their
    /// dependencies, as `--step` names them: per chain, each segment's
    /// `prepare:CHAIN:K`, its candidates `candidate:CHAIN:K:I` (independent
    /// of each other) and `close:CHAIN:K`, then `finish:CHAIN`; last
    /// `report`. Chains are independent of each other. Running them one by
    /// one (on one machine or as cluster jobs) gives the run `trainer pdt`
    /// makes in one process.
    pub fn plan(&self) -> Vec<String> {
        let mut steps = Vec::new();
        for chain in self.chains() {
            let c = chain.dir();
            for seg in self.segments(chain) {
                let k = seg.index;
                steps.push(format!("prepare:{c}:{k}"));
                for i in 0..self.forks(chain, &seg) {
                    steps.push(format!("candidate:{c}:{k}:{i}"));
                }
                steps.push(format!("close:{c}:{k}"));
            }
            steps.push(format!("finish:{c}"));
        }
        steps.push("report".into());
        steps
    }

    /// Runs the one step that `step` names (see [`PdtRun::plan`]); a
    /// step whose outputs exist is skipped, one whose inputs are missing
    /// is an error naming them.
    pub fn run_step(&self, step: &str) -> Result<()> {
        let bad = || {
            Error::Config(format!(
                "--step {step:?}: expected prepare:CHAIN:K, candidate:CHAIN:K:I, close:CHAIN:K, \
                 finish:CHAIN or report, with CHAIN sms, plain or long, of this run"
            ))
        };
        let parts: Vec<&str> = step.split(':').collect();
        if parts == ["report"] {
            return crate::pdt::report::build(self)?.write(&self.root);
        }
        let chain = parts
            .get(1)
            .and_then(|c| Chain::parse(c))
            .filter(|c| self.chains().contains(c))
            .ok_or_else(bad)?;
        if parts[..] == ["finish", parts[1]] {
            return self.finish(chain).map(|_| ());
        }
        let segments = self.segments(chain);
        let k: usize = parts.get(2).and_then(|k| k.parse().ok()).ok_or_else(bad)?;
        let seg = segments.get(k).ok_or_else(bad)?;
        match (parts[0], parts.len()) {
            ("prepare", 3) => self.prepare(chain, k).map(|_| ()),
            ("close", 3) => self.close(chain, k).map(|_| ()),
            ("candidate", 4) => {
                let i: u32 = parts[3].parse().map_err(|_| bad())?;
                if i >= self.forks(chain, seg) {
                    return Err(bad());
                }
                self.candidate(chain, k, i).map(|_| ())
            }
            _ => Err(bad()),
        }
    }
}
