//! `soup mask`: masks as files of their own (packed bits), mask algebra,
//! and `torch.nn.utils.prune` checkpoints to and from plain weights.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use soup_core::{
    combine_masks, extract_mask, from_torch_prune, to_torch_prune, Checkpoint, Combination,
    CombineOptions, MaskFileTensor, MaskSource, OutputOptions, Selection, TorchPruneReport,
};

use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

/// Masks as files: extract, combine, convert.
///
/// A mask file holds one U8 tensor per masked tensor, under the same name:
/// its mask (w != 0) packed into bits, row-major, least significant bit
/// first (numpy's `np.packbits(w.ravel() != 0, bitorder="little")`), with
/// the original shape, dtype and a sha256 digest in the metadata. It is
/// about 1/32 of an F32 model, and `apply-mask --mask` and `check-mask
/// --reference` take it wherever they take a model.
#[derive(Debug, Args)]
pub struct MaskArgs {
    #[command(subcommand)]
    pub command: MaskCommand,
}

#[derive(Debug, Subcommand)]
pub enum MaskCommand {
    /// Write a model's masks (its float tensors) as a mask file.
    Extract(ExtractArgs),
    /// Keep a weight where a majority of the masks keep it (or --min-votes).
    Vote(CombineArgs),
    /// Keep a weight where any mask keeps it.
    Union(CombineArgs),
    /// Keep a weight where every mask keeps it.
    Intersect(CombineArgs),
    /// Turn a torch.nn.utils.prune checkpoint (name_orig and name_mask
    /// pairs) into plain weights with zeros (name = name_orig * name_mask).
    FromTorchPrune(TorchArgs),
    /// Split plain weights into name_orig and name_mask (w != 0), as
    /// torch.nn.utils.prune saves them (the reverse of from-torch-prune).
    ToTorchPrune(TorchArgs),
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The model whose masks to write.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output mask file.
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

#[derive(Debug, Args)]
pub struct CombineArgs {
    /// Models or mask files, in any mix (two or more).
    #[arg(required = true, num_args = 2.., value_name = "MASK")]
    pub inputs: Vec<PathBuf>,
    /// Output mask file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// For vote: masks that must keep a weight (default: a strict majority).
    #[arg(long, value_name = "K")]
    pub min_votes: Option<usize>,
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

#[derive(Debug, Args)]
pub struct TorchArgs {
    /// The checkpoint to convert.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// to-torch-prune: only prunable tensors whose names match this regex
    /// (repeatable; default: every float `*weight` of rank 2 or more).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// to-torch-prune: skip tensors whose names match this regex.
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: MaskArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let control = ctx.control();
    let output = |force| OutputOptions {
        shard_size: None,
        force,
    };
    match args.command {
        MaskCommand::Extract(a) => {
            let selection = Selection::new(&a.include, &a.exclude)?;
            let input = Checkpoint::open(&a.input)?;
            let report = extract_mask(&input, &a.output, &selection, &output(a.force), &control)?;
            if ctx.json {
                write_json(out, &report)?;
            } else {
                masks_table(out, &report.tensors)?;
                writeln!(
                    out,
                    "wrote {} masks, {} bytes of packed bits for {} bytes of weights, to {}",
                    report.tensors.len(),
                    report.packed_bytes,
                    report.input_bytes,
                    escape_path(&a.output)
                )?;
            }
        }
        MaskCommand::Vote(a) => combine(a, Combination::Vote { min_votes: None }, out, ctx)?,
        MaskCommand::Union(a) => combine(a, Combination::Union, out, ctx)?,
        MaskCommand::Intersect(a) => combine(a, Combination::Intersect, out, ctx)?,
        MaskCommand::FromTorchPrune(a) => {
            if !a.include.is_empty() || !a.exclude.is_empty() {
                anyhow::bail!("from-torch-prune converts every name_orig/name_mask pair: --include and --exclude do not apply");
            }
            let input = Checkpoint::open(&a.input)?;
            let report = from_torch_prune(&input, &a.output, &output(a.force), &control)?;
            torch_report(out, ctx, &report, "joined")?;
        }
        MaskCommand::ToTorchPrune(a) => {
            let selection = Selection::new(&a.include, &a.exclude)?;
            let input = Checkpoint::open(&a.input)?;
            let report = to_torch_prune(&input, &a.output, &selection, &output(a.force), &control)?;
            torch_report(out, ctx, &report, "split")?;
        }
    }
    Ok(Outcome::Clean)
}

fn combine(
    a: CombineArgs,
    combination: Combination,
    out: &mut dyn Write,
    ctx: &Context,
) -> Result<()> {
    let combination = match (combination, a.min_votes) {
        (Combination::Vote { .. }, k) => Combination::Vote { min_votes: k },
        (_, Some(_)) => anyhow::bail!("--min-votes applies to `soup mask vote` only"),
        (c, None) => c,
    };
    let options = CombineOptions {
        combination,
        selection: Selection::new(&a.include, &a.exclude)?,
        output: OutputOptions {
            shard_size: None,
            force: a.force,
        },
    };
    combination.threshold(a.inputs.len())?;
    let inputs: Vec<MaskSource> = a
        .inputs
        .iter()
        .map(MaskSource::open)
        .collect::<soup_core::Result<_>>()?;
    let report = combine_masks(&inputs, &a.output, &options, &ctx.control())?;
    if ctx.json {
        return write_json(out, &report);
    }
    masks_table(out, &report.tensors)?;
    writeln!(
        out,
        "kept each weight that at least {} of {} masks keep; wrote {} masks to {}",
        report.min_votes,
        report.inputs.len(),
        report.tensors.len(),
        escape_path(&a.output)
    )?;
    Ok(())
}

fn masks_table(out: &mut dyn Write, tensors: &[MaskFileTensor]) -> Result<()> {
    let mut table = Table::new(&[
        ("tensor", false),
        ("shape", false),
        ("sparsity", true),
        ("digest", false),
    ]);
    for t in tensors {
        table.row(vec![
            t.name.clone(),
            shape(&t.shape),
            percent(t.zeros as f64 / t.numel.max(1) as f64),
            t.digest.chars().take(23).collect(),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    Ok(())
}

fn torch_report(
    out: &mut dyn Write,
    ctx: &Context,
    report: &TorchPruneReport,
    what: &str,
) -> Result<()> {
    if ctx.json {
        return write_json(out, report);
    }
    let mut table = Table::new(&[("tensor", false), ("elements", true), ("sparsity", true)]);
    for t in &report.tensors {
        table.row(vec![
            t.name.clone(),
            t.numel.to_string(),
            percent(t.zeros as f64 / t.numel.max(1) as f64),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "{what} {} tensors; written to {}",
        report.tensors.len(),
        escape_path(report.outputs.first().map_or(&report.input, |p| p))
    )?;
    Ok(())
}
