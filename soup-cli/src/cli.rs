//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use soup_core::{DigestKind, IntPolicy, MaskPolicy, NmPattern, Scope, SemiStructuredKernel};

/// Checkpoint surgery and sparse model souping for safetensors files.
///
/// Checkpoints are .safetensors files or Hugging Face sharded folders
/// (model.safetensors.index.json). Results go to standard output (a table, or
/// one JSON object with --json); progress and errors go to standard error.
/// Exit status: 0 success, 1 findings (masks or checkpoints differ), 2 error,
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "soup", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Never show progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Memory budget for data in flight, e.g. 64MiB. Peak memory stays close
    /// to this whatever the checkpoint size.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub budget: Option<u64>,
    /// Algorithm of the content digests that `hash` prints and written files
    /// record as provenance (`blake3:<hex>` or `sha256:<hex>`).
    #[arg(long, global = true, value_enum, default_value_t = DigestKind::default())]
    pub digest: DigestKind,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Merge(MergeArgs),
    CheckMask(CheckMaskArgs),
    Inspect(InspectArgs),
    Prune(PruneArgs),
    Diff(DiffArgs),
    Distance(DistanceArgs),
    Hash(HashArgs),
    Edit(EditArgs),
    ApplyMask(ApplyMaskArgs),
    Shard(ShardArgs),
    Unshard(UnshardArgs),
    Mask(crate::commands::mask::MaskArgs),
    FoldLora(crate::commands::fold_lora::FoldLoraArgs),
}

/// Average checkpoints that share one sparsity mask, or merge fine-tunes of
/// a base model (task arithmetic, TIES, DARE) keeping the base's mask.
///
/// Float tensors (F64, F32, F16, BF16) are combined in f32 (f64 for F64);
/// integer and bool tensors must be equal in all inputs. The masks are
/// checked as `soup check-mask` does, and the merge is refused if they differ
/// unless --mask-policy says how to resolve it.
///
/// With --base, the inputs are fine-tunes of BASE and --method names a
/// task-vector method; by default (--mask-policy base) the result is zero
/// exactly where the base is, and fine-tunes whose masks differ are reported
/// with the share of their task vector's norm that the base's mask removed.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Checkpoints to average, or fine-tunes of --base (files or sharded
    /// folders).
    #[arg(required = true, num_args = 1.., value_name = "CHECKPOINT")]
    pub inputs: Vec<PathBuf>,
    /// Output file, or folder with --shard-size.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// The base model the inputs were fine-tuned from (task-vector methods).
    #[arg(long, value_name = "BASE", conflicts_with = "greedy")]
    pub base: Option<PathBuf>,
    /// Merge method: uniform (default), weighted (default with --weights),
    /// or with --base: task-arithmetic, ties, dare-linear, dare-ties.
    ///
    /// TIES: Yadav et al. 2023; DARE: Yu et al. 2024; both as mergekit
    /// computes them (see the README).
    #[arg(long, value_name = "METHOD", value_parser = method_names())]
    pub method: Option<String>,
    /// Task-vector methods: factor of the combined task vector (default 1;
    /// mergekit's `lambda`), applied after the --weights.
    #[arg(long, value_name = "L", allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// ties, dare-linear, dare-ties: share of each task vector's surviving
    /// weights kept, in (0, 1].
    #[arg(long, value_name = "D")]
    pub density: Option<f64>,
    /// dare-linear, dare-ties: seed of the random drop (default 0). The drop
    /// depends only on the seed, tensor name and element, not on --budget
    /// or --threads.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Weighted mean, one weight per input: 0.5,0.3,0.2 (normalised); with
    /// --base, the weight of each fine-tune's task vector (as given).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "W,W,...",
        allow_hyphen_values = true
    )]
    pub weights: Option<Vec<f64>>,
    /// What to do when the inputs' masks differ (default: refuse; base with
    /// --base).
    #[arg(long, value_enum)]
    pub mask_policy: Option<MaskPolicy>,
    /// What to do with integer and bool tensors that differ.
    #[arg(long, value_enum, default_value_t = IntPolicy::default())]
    pub int_policy: IntPolicy,
    /// Write float tensors in this dtype (F32, F16, BF16, F64).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Write Hugging Face shards of at most SIZE (e.g. 2GB) into the folder
    /// given by --output.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub shard_size: Option<u64>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Greedy soup: rank candidates by score, start from the best, and keep
    /// each next one only if the soup's score does not drop.
    ///
    /// Trial soups are written to a temporary folder beside the output and
    /// removed afterwards; every trial is printed. Needs --eval-cmd.
    #[arg(long, requires = "eval_cmd", conflicts_with = "weights")]
    pub greedy: bool,
    /// Command that scores a checkpoint: `{}` is replaced by its path, and
    /// the last line printed must be a number (higher is better).
    ///
    /// It runs in a process group of its own: when soup is interrupted
    /// (Ctrl-C, SIGTERM, SIGHUP), soup ends the whole group (SIGTERM, then
    /// SIGKILL two seconds later) instead of waiting for it.
    #[arg(long, value_name = "CMD", requires = "greedy")]
    pub eval_cmd: Option<String>,
    /// First-round scores of the inputs, in order, instead of evaluating
    /// each one: 0.91,0.90,...
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "S,S,...",
        requires = "greedy",
        allow_hyphen_values = true
    )]
    pub scores: Option<Vec<f64>>,
    /// Keep a candidate only if it strictly improves the score (by default
    /// ties are kept, as in SMS).
    #[arg(long, requires = "greedy")]
    pub strict: bool,
    /// Refuse to write a result that breaks this N:M pattern (e.g. 2:4).
    ///
    /// The merged prunable tensors (float, rank >= 2, named `*weight`)
    /// whose input dimension holds whole groups are checked as
    /// `check-mask --nm` checks them, after they are written and before the
    /// output is moved into place: the first tensor that breaks the pattern
    /// is named and nothing is written. Candidates that share a 2:4 mask
    /// always pass; a --mask-policy union of different masks may not.
    #[arg(long, value_name = "N:M")]
    pub nm: Option<NmPattern>,
    /// Tensors stored as [in, out] whose groups run along their first
    /// dimension (repeatable), as in `check-mask --nm-transposed`.
    #[arg(long, value_name = "REGEX", requires = "nm")]
    pub nm_transposed: Vec<String>,
}

/// Prune weights: unstructured (--sparsity) or N:M (--nm).
///
/// Prunes the selected tensors: by default the float tensors of rank >= 2
/// whose names end in `weight`. With --sparsity S, exactly round(S * n)
/// weights are removed (n: selected weights, or the non-zero ones with
/// --of-remaining; halves round to even), the smallest first. With --nm N:M,
/// in every group of M consecutive weights along the input dimension
/// (`[out, in]`: along a row; `[out, in, kh, kw]`: along the input channels
/// at each output channel and kernel position; tensors named by
/// --nm-transposed: along the first dimension) the N largest stay. Among
/// equal scores the one earlier in (tensor storage order, index) goes
/// first. Zeros stay zero and are never revived. Reports the sparsity
/// reached per tensor and overall.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The checkpoint to prune.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output file, or folder with --shard-size.
    #[arg(short, long, value_name = "PATH", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Fraction of weights to remove, in [0, 1).
    #[arg(
        long,
        value_name = "S",
        allow_negative_numbers = true,
        required_unless_present = "nm"
    )]
    pub sparsity: Option<f64>,
    /// N:M semi-structured sparsity: keep the N largest of every M weights
    /// along the input dimension (1 <= N < M <= 32; 2:4 is what GPUs
    /// accelerate).
    #[arg(long, value_name = "N:M",
          conflicts_with_all = ["sparsity", "of_remaining", "scope"])]
    pub nm: Option<NmPattern>,
    /// With --nm: leave tensors whose input dimension is not a multiple of
    /// M unchanged (they are listed) instead of refusing them.
    #[arg(long, requires = "nm")]
    pub nm_skip_ragged: bool,
    /// Tensors stored as [in, out] (Hugging Face GPT-2's Conv1D:
    /// `attn.c_attn.weight`, `attn.c_proj.weight`, `mlp.c_fc.weight`,
    /// `mlp.c_proj.weight`): their input dimension is the first (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub nm_transposed: Vec<String>,
    /// How weights are ranked: magnitude (|w|), wanda (|w| times the
    /// activation norm of the weight's input channel, from --scores) or
    /// random:SEED.
    #[arg(long, value_name = "CRITERION", default_value = "magnitude")]
    pub criterion: soup_core::Criterion,
    /// Score data for --criterion wanda: a safetensors file holding, under
    /// each pruned tensor's name, a 1-D tensor of its input-channel
    /// activation L2 norms.
    #[arg(long, value_name = "FILE")]
    pub scores: Option<PathBuf>,
    /// Weights that are already zero stay zero (going from an unstructured
    /// mask to N:M on top of it). soup always ranks zeros first and never
    /// revives a weight, so this is recorded and changes nothing.
    #[arg(long)]
    pub keep_zeros: bool,
    /// One magnitude threshold for all selected tensors (global) or the same
    /// fraction in each tensor (layer).
    #[arg(long, value_enum, default_value_t = Scope::default())]
    pub scope: Scope,
    /// Remove the fraction S of the weights that are still non-zero (one
    /// iterative-pruning phase) instead of reaching total sparsity S.
    #[arg(long)]
    pub of_remaining: bool,
    /// Prune float tensors whose names match this regex instead of the
    /// default selection (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Never prune tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Report what would be pruned without writing anything.
    #[arg(long, conflicts_with = "output")]
    pub dry_run: bool,
    /// Write Hugging Face shards of at most SIZE into the folder --output.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub shard_size: Option<u64>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Compare two checkpoints tensor by tensor.
///
/// Per tensor: largest absolute difference, relative L2 distance
/// ||a-b||/||a||, cosine similarity and mask differences; names found in only
/// one file. Values match when |a-b| <= atol + rtol*|b| (default: exactly).
/// Exit 0 when equal, 1 when different.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// First checkpoint.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Second checkpoint.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Absolute tolerance.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub atol: f64,
    /// Relative tolerance.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub rtol: f64,
    /// List every tensor, not only those that differ.
    #[arg(long)]
    pub all: bool,
}

/// Content digests of a checkpoint.
///
/// A digest of every tensor over (name, dtype, shape, data), and one over
/// all tensors: `blake3:<hex>` by default, `sha256:<hex>` with `--digest sha256`.
/// Metadata, tensor order and file layout (sharding) do not change them;
/// any change of a value, name, dtype or shape does. These are the digests
/// that written files record in soup.inputs.
///
/// With --file, prints instead the plain sha256 of each file (one per
/// shard), as sha256sum does and the Hugging Face Hub lists them, to check
/// a download.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// A .safetensors file or sharded folder.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Print the sha256 of each whole file instead of content digests.
    #[arg(long)]
    pub file: bool,
}

/// Rename, drop, keep or cast tensors, and edit metadata.
///
/// --keep, --drop and --only match the original names; renames apply after,
/// in order, each replacing every match (sed's s///g; $1 and ${name} refer
/// to groups).
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The checkpoint to edit.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Rename tensors: 'REGEX=REPLACEMENT' (repeatable).
    #[arg(long, value_name = "REGEX=REPLACEMENT")]
    pub rename: Vec<String>,
    /// Drop tensors whose names match (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub drop: Vec<String>,
    /// Keep only tensors whose names match (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub keep: Vec<String>,
    /// Cast float tensors to DTYPE (F64, F32, F16, BF16).
    #[arg(long, value_name = "DTYPE")]
    pub cast: Option<String>,
    /// Cast only tensors whose names match (repeatable).
    #[arg(long, value_name = "REGEX", requires = "cast")]
    pub only: Vec<String>,
    /// Set a metadata entry (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set_meta: Vec<String>,
    /// Delete a metadata entry (repeatable).
    #[arg(long, value_name = "KEY")]
    pub del_meta: Vec<String>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Zero a checkpoint wherever another one is zero.
///
/// Every selected float tensor (default: all float tensors of the input)
/// must exist in the mask checkpoint with the same shape.
#[derive(Debug, Args)]
pub struct ApplyMaskArgs {
    /// The checkpoint to mask.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// The checkpoint whose zeros are applied, or a mask file (`soup mask
    /// extract`).
    #[arg(long, value_name = "REF")]
    pub mask: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Only tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Skip tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Split a checkpoint into Hugging Face shards.
///
/// Writes model-0000k-of-0000n.safetensors files of at most SIZE bytes of
/// tensor data each (a larger tensor gets a shard of its own) and
/// model.safetensors.index.json into the folder DIR.
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// The checkpoint to split.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output folder.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Largest shard, e.g. 2GB or 500MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub shard_size: u64,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Join a sharded checkpoint into one file.
#[derive(Debug, Args)]
pub struct UnshardArgs {
    /// A sharded folder (or its index file).
    #[arg(value_name = "DIR")]
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Check that checkpoints share one sparsity mask.
///
/// The mask of a float tensor is w != 0 (-0.0 counts as zero). Without
/// --reference every input is compared with the first. Exit 0 when all masks
/// are identical, 1 when they differ.
#[derive(Debug, Args)]
pub struct CheckMaskArgs {
    /// Checkpoints to compare (with --nm: to check, one or more).
    #[arg(required = true, value_name = "CHECKPOINT")]
    pub inputs: Vec<PathBuf>,
    /// Compare every input with this checkpoint's mask (the pruned parent),
    /// or with a mask file (`soup mask extract`).
    #[arg(long, value_name = "PARENT", conflicts_with = "nm")]
    pub reference: Option<PathBuf>,
    /// Only tensors whose names match this regex (repeatable).
    ///
    /// With --nm, these replace the default choice of prunable tensors
    /// (float tensors of rank >= 2 named `*weight`), as in `soup prune`.
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Skip tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Check that each checkpoint follows the N:M pattern (e.g. 2:4) instead
    /// of comparing masks.
    ///
    /// In every group of M consecutive weights along the input dimension
    /// at most N are non-zero: along a linear weight's rows, along the
    /// input channels of a convolution weight at each output channel and
    /// kernel position. Each prunable tensor is checked exactly; a tensor
    /// whose input dimension is not a multiple of M fails, with the reason.
    /// Exit 0 when every tensor passes, 1 when some fail.
    #[arg(long, value_name = "N:M")]
    pub nm: Option<NmPattern>,
    /// Tensors stored as [in, out] (e.g. GPT-2's Conv1D `attn.c_attn.weight`)
    /// whose groups run along their first dimension (repeatable).
    #[arg(long, value_name = "REGEX", requires = "nm")]
    pub nm_transposed: Vec<String>,
    /// Also check PyTorch's shape and dtype rules of this semi-structured
    /// kernel (cutlass or cusparselt).
    ///
    /// The tensor's matrix (input dimension last: a convolution weight as
    /// [out * kh * kw, in], an [in, out] tensor transposed) must be at
    /// least and a multiple of the kernel's minimum rows and columns for
    /// its dtype, the dtype in the kernel's table (PyTorch 2.13's
    /// torch/sparse/semi_structured.py), and the pattern the kernel stores
    /// (CUTLASS keeps F32 as 1:2).
    #[arg(long, value_enum, value_name = "KERNEL", requires = "nm")]
    pub kernel: Option<SemiStructuredKernel>,
}

/// Measure how far apart checkpoints are (soup geometry).
///
/// Over the float tensors, seen as one vector per checkpoint: pairwise L2
/// distances and cosine similarities, and each checkpoint's L2 distance to
/// the barycentre (the uniform mean). Streamed with f64 sums in bounded
/// memory.
#[derive(Debug, Args)]
pub struct DistanceArgs {
    /// Checkpoints to compare (two or more).
    #[arg(required = true, num_args = 2.., value_name = "CHECKPOINT")]
    pub inputs: Vec<PathBuf>,
    /// Only tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Skip tensors whose names match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
}

/// Show the tensors, totals and metadata of a checkpoint.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .safetensors file or sharded folder.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Read headers only: skip counting zeros (instant on any size).
    #[arg(long, conflicts_with = "nm")]
    pub headers_only: bool,
    /// Also say, per prunable tensor, whether it follows this N:M pattern
    /// (e.g. 2:4), counted in the same pass as the zeros.
    #[arg(long, value_name = "N:M")]
    pub nm: Option<NmPattern>,
    /// Tensors stored as [in, out] whose groups run along their first
    /// dimension (repeatable), as in `check-mask --nm-transposed`.
    #[arg(long, value_name = "REGEX", requires = "nm")]
    pub nm_transposed: Vec<String>,
}

/// Parses sizes such as `2GB`, `512MiB`, `64k` or `1000000` (bytes). Decimal
/// units are powers of 1000, binary ones (KiB, MiB, GiB) powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}` (examples: 2GB, 512MiB, 1000000)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        _ => {
            return Err(format!(
                "invalid size unit in `{s}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = value * scale;
    if !(1.0..=9.0e18).contains(&bytes) {
        return Err(format!("size `{s}` out of range"));
    }
    Ok(bytes as u64)
}

/// The names of the merge methods, from soup-core's registry.
fn method_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        soup_core::METHODS
            .iter()
            .map(|m| clap::builder::PossibleValue::new(m.name).help(m.summary)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
