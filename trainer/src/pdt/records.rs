//! The records a pruning-during-training run keeps beside its checkpoints
//! (see [`crate::pdt::run`] for the layout), and the chains they belong
//! to. Each record is written last, atomically, so one that exists marks a
//! finished step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::methods::{Method, Variant};
use crate::pdt::Segment;
use crate::pipeline::lr::PruneImpact;

/// A chain of segments in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    /// The method with sparse model soups.
    Sms,
    /// The method alone.
    Plain,
    /// The method alone with `m` times the epochs.
    Long,
}

impl Chain {
    /// The chain's folder name.
    pub fn dir(self) -> &'static str {
        match self {
            Chain::Sms => "sms",
            Chain::Plain => "plain",
            Chain::Long => "long",
        }
    }

    /// The report's name of the chain for `method` (`gmp+sms`, `gmp`,
    /// `gmp-long`), by the registry's one naming rule.
    pub fn run_name(self, method: Method) -> String {
        method.run_name(match self {
            Chain::Sms => Variant::Sms,
            Chain::Plain => Variant::Plain,
            Chain::Long => Variant::Long,
        })
    }

    /// The chain whose folder is `s`.
    pub fn parse(s: &str) -> Option<Chain> {
        match s {
            "sms" => Some(Chain::Sms),
            "plain" => Some(Chain::Plain),
            "long" => Some(Chain::Long),
            _ => None,
        }
    }
}

/// What a segment's pruning step did (`prune.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRecord {
    /// The sparsity asked for.
    pub target: f64,
    /// Zeros among the pruned tensors' weights after the step.
    pub zeros: i64,
    /// Weights in the pruned tensors.
    pub weights: i64,
    /// The step's effect on the norm (ALLR's input); `None` for the first
    /// segment, which starts from the initialisation.
    pub impact: Option<PruneImpact>,
}

/// A trained candidate (`candidate-I.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateRecord {
    /// Index in the segment.
    pub index: u32,
    /// Seed of batch order and augmentation.
    pub seed: u64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Peak learning rate.
    pub eta_max: f64,
    /// Optimizer steps.
    pub iterations: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Wall time, seconds.
    pub time_s: f64,
}

/// A finished segment (`segment.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRecord {
    /// The segment.
    pub segment: Segment,
    /// Epochs of training done at its end.
    pub epochs: f64,
    /// Candidates trained (1: no soup).
    pub candidates: u32,
    /// Candidates averaged into the soup (in the order added).
    pub chosen: Vec<u32>,
    /// Whether every candidate kept the parent's mask (checked through
    /// soup-core for fixed-mask methods; `None` when not checked).
    pub masks_identical: Option<bool>,
    /// Sparsity over the pruned tensors of the model the method would
    /// deliver at this point (DPF: its masked weights).
    pub sparsity: f64,
    /// Test accuracy of that model as training left it (for the curve;
    /// final models are evaluated after recalibration).
    pub test_acc: f64,
    /// The result's checkpoint, relative to the run folder.
    pub result: PathBuf,
    /// With several candidates: how often two of them predict a different
    /// class on the clean test split (each candidate as the method
    /// delivers it, batch-norm statistics as its training left them).
    /// `None` without a soup, and in records written before it was
    /// measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<crate::pipeline::Disagreement>,
}

pub(crate) use crate::pipeline::records::{mkdir, read_json, write_json};
