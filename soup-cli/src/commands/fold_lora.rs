//! `soup fold-lora`: fold a PEFT LoRA adapter into its base model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use soup_core::{fold_lora, Checkpoint, FoldOptions, LoraAdapter, OutputOptions};

use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

/// Fold a LoRA adapter into its base: W + s * B A for every adapted weight.
///
/// ADAPTER is a PEFT adapter folder (adapter_config.json and
/// adapter_model.safetensors). s = lora_alpha / r, or lora_alpha / sqrt(r)
/// with use_rslora; rank_pattern and alpha_pattern give per-module values;
/// with fan_in_fan_out (GPT-2's Conv1D) and for embeddings the update is
/// transposed. By default the update is applied only where the base is
/// non-zero, so a pruned base keeps its exact mask (SparsePEFT); the report
/// gives, per weight and in total, the share of the update's L2 norm that
/// the mask removed.
#[derive(Debug, Args)]
pub struct FoldLoraArgs {
    /// The base model (file or sharded folder).
    #[arg(value_name = "BASE")]
    pub base: PathBuf,
    /// The PEFT adapter folder.
    #[arg(value_name = "ADAPTER")]
    pub adapter: PathBuf,
    /// Output file, or folder with --shard-size.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Add the update everywhere, also where the base is zero (a sparse
    /// base comes back dense).
    #[arg(long)]
    pub no_mask: bool,
    /// Write Hugging Face shards of at most SIZE (e.g. 2GB) into the folder
    /// given by --output.
    #[arg(long, value_name = "SIZE", value_parser = crate::cli::parse_size)]
    pub shard_size: Option<u64>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: FoldLoraArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = FoldOptions {
        keep_mask: !args.no_mask,
        output: OutputOptions {
            shard_size: args.shard_size,
            force: args.force,
        },
    };
    let base = Checkpoint::open(&args.base)?;
    let adapter = LoraAdapter::open(&args.adapter)?;
    let report = fold_lora(&base, &adapter, &args.output, &options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[
        ("tensor", false),
        ("shape", false),
        ("rank", true),
        ("scale", true),
        ("base sparsity", true),
        ("update norm", true),
        ("masked off", true),
    ]);
    for t in &report.tensors {
        let numel: usize = t.shape.iter().product();
        table.row(vec![
            t.name.clone(),
            shape(&t.shape),
            t.rank.to_string(),
            format!("{:.4}", t.scale),
            percent(t.base_zeros as f64 / numel.max(1) as f64),
            format!("{:.4e}", t.update_norm),
            percent(t.removed_share),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "folded {} weights; {} of the update's L2 norm {}; written to {}",
        report.tensors.len(),
        percent(report.removed_share),
        if report.keep_mask {
            "fell on the base's zeros and was masked off"
        } else {
            "fell on the base's zeros (kept: --no-mask)"
        },
        escape_path(&args.output)
    )?;
    Ok(Outcome::Clean)
}
