//! Where everything of a sparse-model-soup run lives inside its folder.
//!
//! ```text
//! RUN/config.toml                     the resolved configuration
//! RUN/dense/final.safetensors         the dense model (trained or copied)
//! RUN/dense/recalibrated.safetensors  the dense parent: that model, batch norm recalibrated
//! RUN/dense/eval.json                 its evaluation
//! RUN/phase-P/parent.safetensors      the parent pruned for phase P
//! RUN/phase-P/prune.json              what pruning removed (ALLR needs it)
//! RUN/phase-P/candidate-I.safetensors candidate I retrained from the parent, recalibrated
//! RUN/phase-P/candidate-I.json        its evaluation
//! RUN/phase-P/soup-avg.safetensors    the average of the chosen candidates
//! RUN/phase-P/soup.safetensors        that average, batch norm recalibrated
//! RUN/phase-P/phase.json              the phase's results (written last)
//! RUN/baselines/<chain>/phase-P/...   baseline chains, same layout
//! RUN/report.json, report.csv, accuracy_vs_sparsity.svg
//! ```
//!
//! Every file is written to a temporary name and renamed into place, so a
//! file that exists is complete: resuming skips every step whose output
//! exists and never reads a half-written checkpoint.

use std::path::{Path, PathBuf};

use crate::methods::Variant;

/// A chain of prune-retrain phases inside a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// The sparse-model-soup chain (parent of each phase: the previous soup).
    Soup,
    /// IMP chain `j` (one candidate per phase, seed = base + j). Chain 0 is
    /// the IMP baseline; chains 0..M are averaged by IMP-RePrune.
    Imp(u32),
    /// IMP with M-times longer retraining.
    ImpLong,
    /// IMP whose phases deliver the SWA average of their retraining.
    ImpSwa,
    /// IMP-RePrune: per phase, the average of the IMP chains re-pruned and
    /// retrained.
    Reprune,
}

impl Chain {
    /// The folder of this chain inside the run.
    pub fn dir(self, run: &Path) -> PathBuf {
        match self {
            Chain::Soup => run.to_path_buf(),
            Chain::Imp(j) => run.join("baselines").join(format!("imp-{j}")),
            Chain::ImpLong => run.join("baselines").join("imp-long"),
            Chain::ImpSwa => run.join("baselines").join("imp-swa"),
            Chain::Reprune => run.join("baselines").join("reprune"),
        }
    }

    /// A short name for messages and reports.
    pub fn name(self) -> String {
        match self {
            Chain::Soup => "sms".into(),
            Chain::Imp(j) => format!("{}-{j}", super::method().name()),
            Chain::ImpLong => super::method().run_name(Variant::Long),
            Chain::ImpSwa => format!("{}-swa", super::method().name()),
            Chain::Reprune => "reprune".into(),
        }
    }
}

/// Paths of one run folder.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The run folder.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of the run folder `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    /// `RUN/config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// The dense training run folder.
    pub fn dense_dir(&self) -> PathBuf {
        self.root.join("dense")
    }
    /// The dense parent.
    pub fn dense(&self) -> PathBuf {
        self.dense_dir().join("final.safetensors")
    }
    /// The dense parent as reported and pruned: the dense model with its
    /// batch-norm statistics recalibrated.
    pub fn dense_finished(&self) -> PathBuf {
        self.dense_dir().join("recalibrated.safetensors")
    }
    /// The dense parent's evaluation.
    pub fn dense_eval(&self) -> PathBuf {
        self.dense_dir().join("eval.json")
    }
    /// A phase folder of a chain.
    pub fn phase_dir(&self, chain: Chain, phase: u32) -> PathBuf {
        chain.dir(&self.root).join(format!("phase-{phase}"))
    }
    /// The pruned parent of a phase.
    pub fn parent(&self, chain: Chain, phase: u32) -> PathBuf {
        self.phase_dir(chain, phase).join("parent.safetensors")
    }
    /// What pruning a phase's parent removed.
    pub fn prune_info(&self, chain: Chain, phase: u32) -> PathBuf {
        self.phase_dir(chain, phase).join("prune.json")
    }
    /// Candidate `index` of a phase.
    pub fn candidate(&self, chain: Chain, phase: u32, index: u32) -> PathBuf {
        self.phase_dir(chain, phase)
            .join(format!("candidate-{index}.safetensors"))
    }
    /// The evaluation of candidate `index`.
    pub fn candidate_info(&self, chain: Chain, phase: u32, index: u32) -> PathBuf {
        self.phase_dir(chain, phase)
            .join(format!("candidate-{index}.json"))
    }
    /// The averaged soup before batch-norm recalibration (or, for
    /// IMP-RePrune, the average of the chains before re-pruning).
    pub fn soup_avg(&self, chain: Chain, phase: u32) -> PathBuf {
        self.phase_dir(chain, phase).join("soup-avg.safetensors")
    }
    /// The soup carried forward.
    pub fn soup(&self, chain: Chain, phase: u32) -> PathBuf {
        self.phase_dir(chain, phase).join("soup.safetensors")
    }
    /// The phase's results, written last.
    pub fn phase_info(&self, chain: Chain, phase: u32) -> PathBuf {
        self.phase_dir(chain, phase).join("phase.json")
    }
    /// `RUN/report.json`.
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }
    /// `RUN/report.csv`.
    pub fn report_csv(&self) -> PathBuf {
        self.root.join("report.csv")
    }
    /// `RUN/accuracy_vs_sparsity.svg`.
    pub fn plot(&self) -> PathBuf {
        self.root.join("accuracy_vs_sparsity.svg")
    }
}
