//! The steps of a run one at a time: `--jobs N` trains the candidates of a
//! segment in child processes (`trainer pdt --out RUN --step
//! candidate:CHAIN:K:I`), each writing its files into the run folder as the
//! parent would, and `--plan` lists every step for running them elsewhere
//! (other machines, cluster jobs) over a shared run folder; a step is done
//! when its record exists.

use crate::error::{Error, Result};
use crate::pdt::records::Chain;
use crate::pdt::run::PdtRun;
use crate::pipeline::executor::{run_children, Placement};

/// One step of a run (see [`PdtRun::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdtStep {
    /// A segment's parent: its pruning step.
    Prepare(Chain, usize),
    /// One candidate of a segment, trained to the segment's end.
    Candidate(Chain, usize, u32),
    /// A segment's soup (or its only candidate) and record.
    Close(Chain, usize),
    /// A chain's delivered model and its evaluation.
    Finish(Chain),
    /// The report.
    Report,
}

impl PdtStep {
    /// The step as `--step` names it (`candidate:sms:3:0`).
    pub fn arg(&self) -> String {
        match *self {
            PdtStep::Prepare(c, k) => format!("prepare:{}:{k}", c.dir()),
            PdtStep::Candidate(c, k, i) => format!("candidate:{}:{k}:{i}", c.dir()),
            PdtStep::Close(c, k) => format!("close:{}:{k}", c.dir()),
            PdtStep::Finish(c) => format!("finish:{}", c.dir()),
            PdtStep::Report => "report".into(),
        }
    }
}

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
        self.steps().iter().map(PdtStep::arg).collect()
    }

    /// The steps of [`PdtRun::plan`].
    pub fn steps(&self) -> Vec<PdtStep> {
        let mut steps = Vec::new();
        for chain in self.chains() {
            for seg in self.segments(chain) {
                let k = seg.index;
                steps.push(PdtStep::Prepare(chain, k));
                for i in 0..self.forks(chain, &seg) {
                    steps.push(PdtStep::Candidate(chain, k, i));
                }
                steps.push(PdtStep::Close(chain, k));
            }
            steps.push(PdtStep::Finish(chain));
        }
        steps.push(PdtStep::Report);
        steps
    }

    /// Whether the outputs of `step` exist (its record, written last).
    pub fn done(&self, step: PdtStep) -> bool {
        match step {
            PdtStep::Prepare(c, k) => self.seg_dir(c, k).join("prune.json").exists(),
            PdtStep::Candidate(c, k, i) => self.candidate_paths(c, k, i).1.exists(),
            PdtStep::Close(c, k) => self.seg_dir(c, k).join("segment.json").exists(),
            PdtStep::Finish(c) => self.root.join(c.dir()).join("final.json").exists(),
            PdtStep::Report => self.root.join("report.json").exists(),
        }
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
