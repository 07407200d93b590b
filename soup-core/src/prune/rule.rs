//! What counts as prunable: one rule for `soup prune`, the trainer's
//! sparsity figures and its in-training pruning.
//!
//! By default the weights of convolution and linear layers are prunable:
//! floating-point tensors of rank >= 2 whose names end in `weight`. Biases
//! (rank 1), normalization parameters (rank 1) and buffers
//! (`running_mean`, `num_batches_tracked`...) never are. Include patterns
//! replace the name-and-rank rule; exclude patterns always apply. Integer
//! and bool tensors are never prunable.

use crate::checkpoint::TensorEntry;
use crate::error::Result;
use crate::select::Selection;

/// The prunable rule with its include and exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct PruneSelection {
    selection: Selection,
    default_rule: bool,
}

impl PruneSelection {
    /// Compiles the patterns; a bad one is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PruneSelection> {
        Ok(PruneSelection {
            selection: Selection::new(include, exclude)?,
            default_rule: include.is_empty(),
        })
    }

    /// The default rule with no patterns (conv and linear weights).
    pub fn standard() -> PruneSelection {
        PruneSelection {
            selection: Selection::default(),
            default_rule: true,
        }
    }

    /// Whether a tensor called `name`, of `rank` dimensions, is prunable;
    /// `is_float` says whether its elements are floating point. Callers that
    /// hold tensors of their own (the trainer's libtorch tensors) ask this.
    pub fn selects_parts(&self, name: &str, rank: usize, is_float: bool) -> bool {
        is_float
            && self.selection.matches(name)
            && (!self.default_rule || (rank >= 2 && name.ends_with("weight")))
    }

    /// Whether `tensor` of a checkpoint is prunable.
    pub fn selects(&self, tensor: &TensorEntry) -> bool {
        self.selects_parts(
            &tensor.name,
            tensor.shape.len(),
            tensor.float_type().is_some(),
        )
    }
}

/// Whether a tensor is prunable under the default rule (no patterns): a
/// float tensor of rank >= 2 named `*weight`.
pub fn is_prunable(name: &str, rank: usize, is_float: bool) -> bool {
    PruneSelection::standard().selects_parts(name, rank, is_float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_and_linear_weights_only() {
        assert!(is_prunable("layer1.0.conv1.weight", 4, true));
        assert!(is_prunable("fc.weight", 2, true));
        assert!(!is_prunable("fc.bias", 1, true));
        assert!(!is_prunable("bn1.weight", 1, true));
        assert!(!is_prunable("bn1.running_mean", 1, true));
        assert!(!is_prunable("bn1.num_batches_tracked", 0, false));
        assert!(!is_prunable("embed.weight", 2, false));
        let rule = PruneSelection::new(&[], &["^fc".into()]).unwrap();
        assert!(!rule.selects_parts("fc.weight", 2, true));
        assert!(rule.selects_parts("conv1.weight", 4, true));
        // Include patterns replace the name-and-rank rule.
        let rule = PruneSelection::new(&["bias$".into()], &[]).unwrap();
        assert!(rule.selects_parts("fc.bias", 1, true));
        assert!(!rule.selects_parts("fc.weight", 2, true));
    }
}
