//! The trainer's calls into soup-core: pruning, mask checks and merging
//! happen on checkpoint files, exactly as `soup prune`, `soup check-mask`
//! and `soup merge` do them, so every step between phases can be redone by
//! hand with `soup`.

use std::path::{Path, PathBuf};

use soup_core::{greedy_soup, GreedyOptions};
use soup_core::{
    Checkpoint, Control, IntPolicy, MaskPolicy, MergeOptions, OutputOptions, Selection,
};
use soup_core::{Criterion, NmPattern, PruneOptions, Scope};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One trial of a greedy soup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreedyTrial {
    /// Candidate tried.
    pub candidate: u32,
    /// Validation accuracy of the soup with it (after BN recalibration).
    pub score: f64,
    /// Whether it was kept.
    pub kept: bool,
}

fn open_all(paths: &[PathBuf]) -> Result<Vec<Checkpoint>> {
    paths
        .iter()
        .map(|p| Checkpoint::open(p).map_err(Error::from))
        .collect()
}

/// The candidates' geometry, as `soup distance` measures it: pairwise L2
/// distances and cosine similarities of all float tensors, and each
/// candidate's distance to their barycentre. `None` for fewer than two.
pub fn geometry(candidates: &[PathBuf]) -> Result<Option<soup_core::DistanceReport>> {
    if candidates.len() < 2 {
        return Ok(None);
    }
    let inputs = open_all(candidates)?;
    let report = soup_core::distance(&inputs, &Selection::default(), &Control::default())?;
    Ok(Some(report))
}

/// Verifies that every candidate has exactly the parent's mask over the
/// prunable tensors; a difference stops the run.
pub fn check_masks(candidates: &[PathBuf], parent: &Path, prunable: &[String]) -> Result<()> {
    let inputs = open_all(candidates)?;
    let reference = Checkpoint::open(parent)?;
    let selection = Selection::new(&anchored(prunable), &[])?;
    let report =
        soup_core::check_masks(&inputs, Some(&reference), &selection, &Control::default())?;
    if report.identical {
        return Ok(());
    }
    let t = report
        .tensors
        .iter()
        .find(|t| t.differing > 0)
        .expect("a differing tensor");
    let (i, n) = t
        .differing_per_input
        .iter()
        .enumerate()
        .find(|(_, n)| **n > 0)
        .expect("a differing input");
    Err(Error::Run(format!(
        "mask check failed: {} differs from the pruned parent {} in tensor `{}` at {n} positions",
        candidates[i].display(),
        parent.display(),
        t.name
    )))
}

/// How the trainer merges checkpoints: uniformly, into one file that
/// replaces a leftover from an interrupted attempt, with `mask_policy`.
///
/// The models' only integer tensors are batch norm's `num_batches_tracked`
/// counters, which differ when candidates train for different numbers of
/// steps (`--vary retrain-length`); a soup takes the first input's, and
/// batch-norm recalibration then resets and recounts them.
fn merge_options(mask_policy: MaskPolicy) -> MergeOptions {
    MergeOptions {
        mask_policy,
        int_policy: IntPolicy::First,
        output: OutputOptions {
            shard_size: None,
            force: true,
        },
        ..MergeOptions::default()
    }
}

/// The mean of `inputs` into `output`, zero wherever every input is zero
/// (soup-core's union policy). Callers check the masks of the pruned
/// tensors first ([`check_masks`]) where the inputs share one: the one rule
/// for what is pruned says which tensors hold masks. The other float
/// tensors (biases, batch-norm statistics) are plain means, whatever exact
/// zeros they hold (a channel that no longer fires has a running mean of
/// exactly 0 in one candidate and not in another).
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<()> {
    let checkpoints = open_all(inputs)?;
    let options = merge_options(MaskPolicy::Union);
    soup_core::merge(&checkpoints, output, &options, &Control::default())?;
    Ok(())
}

/// Prunes `input` into `output` by global magnitude over the prunable
/// tensors (float tensors of rank >= 2 named `*weight`, minus `exclude`):
/// `fraction` of the remaining weights, or to total sparsity `fraction`.
/// Returns soup-core's report (counts, zeros and sums of squares of every
/// float tensor before and after). With `output` `None`, nothing is
/// written and the report is that of the same pruning (a dry run).
pub fn prune(
    input: &Path,
    output: Option<&Path>,
    fraction: f64,
    of_remaining: bool,
    exclude: &[String],
) -> Result<soup_core::PruneReport> {
    let options = PruneOptions {
        sparsity: fraction,
        scope: Scope::Global,
        of_remaining,
        criterion: Criterion::Magnitude,
        include: Vec::new(),
        exclude: exclude.to_vec(),
        output: OutputOptions {
            shard_size: None,
            force: true,
        },
        ..PruneOptions::default()
    };
    run_prune(input, output, &options)
}

/// Prunes `input` into `output` to the N:M `pattern` over exactly the
/// tensors `names` (groups of M consecutive weights along the input
/// dimension keep their N largest by magnitude), as `soup prune --nm`
/// does. With `keep_zeros`, weights already zero stay zero, so pruning a
/// model inside its mask never revives a weight. Without an output, what
/// that pruning does (a dry run).
pub fn prune_nm(
    input: &Path,
    output: Option<&Path>,
    pattern: NmPattern,
    keep_zeros: bool,
    names: &[String],
) -> Result<soup_core::PruneReport> {
    let options = PruneOptions {
        include: anchored(names),
        nm: Some(pattern),
        keep_zeros,
        output: OutputOptions {
            shard_size: None,
            force: true,
        },
        ..PruneOptions::default()
    };
    run_prune(input, output, &options)
}

/// Prunes `input` with `options` into `output`, or without an output
/// reports what that pruning does (a dry run).
fn run_prune(
    input: &Path,
    output: Option<&Path>,
    options: &PruneOptions,
) -> Result<soup_core::PruneReport> {
    let checkpoint = Checkpoint::open(input)?;
    let control = Control::default();
    let report = match output {
        Some(output) => soup_core::prune(&checkpoint, output, options, &control)?,
        None => soup_core::plan_prune(&checkpoint, options, &control)?,
    };
    Ok(report)
}

/// Selection patterns that match exactly the tensors `names`.
fn anchored(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("^{}$", regex::escape(n)))
        .collect()
}

/// A greedy soup of `inputs` (first-round scores `scores`) into `output`,
/// scoring trial soups with `score`; each trial soup is a mean as in
/// [`merge`], whose callers check masks first. Returns the chosen candidates (indices
/// into `inputs`, in the order added) and every trial after the first (the
/// best candidate alone).
pub fn greedy(
    inputs: &[PathBuf],
    scores: &[f64],
    output: &Path,
    strict: bool,
    mut score: impl FnMut(&Path) -> Result<f64>,
) -> Result<(Vec<u32>, Vec<GreedyTrial>)> {
    let checkpoints = open_all(inputs)?;
    let options = GreedyOptions {
        strict,
        scores: Some(scores.to_vec()),
        merge: merge_options(MaskPolicy::Union),
    };
    let mut scorer = |p: &Path| -> soup_core::Result<f64> {
        score(p).map_err(|e| soup_core::Error::Evaluator(e.to_string()))
    };
    let report = greedy_soup(
        &checkpoints,
        output,
        &mut scorer,
        &options,
        &Control::default(),
    )?;
    let index = |p: &Path| -> u32 {
        inputs
            .iter()
            .position(|q| q == p)
            .expect("greedy reports its inputs") as u32
    };
    let chosen = report.chosen.iter().map(|p| index(p)).collect();
    let trials = report
        .trials
        .iter()
        .skip(1)
        .map(|t| GreedyTrial {
            candidate: index(&t.candidate),
            score: t.score,
            kept: t.kept,
        })
        .collect();
    Ok((chosen, trials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tch::Tensor;

    fn write(path: &Path, weight: &[f32], running_mean: &[f32]) {
        let tensors = vec![
            (
                "conv.weight".to_string(),
                Tensor::from_slice(weight).view([2, 1, 1, 2]),
            ),
            (
                "bn.running_mean".to_string(),
                Tensor::from_slice(running_mean),
            ),
        ];
        crate::checkpoint::save(path, &tensors, HashMap::new()).unwrap();
    }

    #[test]
    fn exact_zeros_outside_the_pruned_tensors_are_no_mask() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        // One mask over the pruned weight; a channel that fires in one
        // candidate only leaves an exact zero in the other's statistics.
        write(&p("parent"), &[0.0, 1.0, 0.0, 2.0], &[0.5, 0.5]);
        write(&p("a"), &[0.0, 3.0, 0.0, 4.0], &[0.0, 1.0]);
        write(&p("b"), &[0.0, 5.0, 0.0, 6.0], &[2.0, 3.0]);
        let inputs = [p("a"), p("b")];
        let pruned = ["conv.weight".to_string()];
        check_masks(&inputs, &p("parent"), &pruned).unwrap();
        merge(&inputs, &p("soup")).unwrap();
        let soup = Checkpoint::open(p("soup")).unwrap();
        let f32s = |name: &str| -> Vec<f32> {
            let t = soup.get(name).unwrap();
            soup.data(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        assert_eq!(f32s("conv.weight"), [0.0, 4.0, 0.0, 5.0]);
        assert_eq!(f32s("bn.running_mean"), [1.0, 2.0]);
        // A pruned weight whose mask differs is still refused.
        write(&p("c"), &[1.0, 5.0, 0.0, 6.0], &[2.0, 3.0]);
        let err = check_masks(&[p("a"), p("c")], &p("parent"), &pruned).unwrap_err();
        assert!(err.to_string().contains("conv.weight"), "{err}");
    }
}
