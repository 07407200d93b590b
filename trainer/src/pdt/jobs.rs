//! The steps of a run one at a time: `--jobs N` trains the candidates of a
//! segment in child processes (`trainer pdt --out RUN --step
//! candidate:CHAIN:K:I`), each writing its files into the run folder as the
//! parent would, and `--plan` lists every step for running them elsewhere
//! (other machines, cluster jobs) over a shared run folder.

use crate::error::{Error, Result};
use crate::pdt::records::Chain;
use crate::pdt::run::PdtRun;
use crate::pipeline::executor::{run_children, Placement};

impl PdtRun {
    /// Runs every chain and writes the report.
    pub fn run(&self, jobs: usize) -> Result<crate::pdt::PdtReport> {
        for chain in self.chains() {
            self.run_chain(chain, jobs)?;
        }
        let report = crate::pdt::report::build(self)?;
        report.write(&self.root)?;
        Ok(report)
    }

    pub(crate) fn candidates_in_parallel(
        &self,
        chain: Chain,
        k: usize,
        m: u32,
        jobs: usize,
    ) -> Result<()> {
        let todo: Vec<u32> = (0..m)
            .filter(|&i| !self.candidate_paths(chain, k, i).1.exists())
            .collect();
        let out = self.root.display().to_string();
        let placement = Placement {
            device: self.ws.device,
            threads: self.cfg.train.threads,
        };
        run_children(&todo, jobs, placement, &format!("segment {k}"), |i| {
            let step = format!("candidate:{}:{k}:{i}", chain.dir());
            ["pdt", "--quiet", "--out", &out, "--step", &step]
                .map(String::from)
                .to_vec()
        })
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
