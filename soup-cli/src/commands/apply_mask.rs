//! `soup apply-mask`: zero a checkpoint wherever another one is zero.

use std::io::Write;

use anyhow::Result;
use soup_core::{apply_mask, Checkpoint, MaskOptions, MaskSource, OutputOptions};

use crate::cli::ApplyMaskArgs;
use crate::output::{escape_path, write_json, Context, Outcome, Table};

pub fn run(args: ApplyMaskArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = MaskOptions {
        include: args.include,
        exclude: args.exclude,
        output: OutputOptions {
            shard_size: None,
            force: args.force,
        },
    };
    soup_core::Selection::new(&options.include, &options.exclude)?;
    let input = Checkpoint::open(&args.input)?;
    let mask = MaskSource::open(&args.mask)?;
    let report = apply_mask(&input, &mask, &args.output, &options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[
        ("tensor", false),
        ("elements", true),
        ("zeros before", true),
        ("zeroed", true),
        ("zeros after", true),
    ]);
    for t in &report.tensors {
        table.row(vec![
            t.name.clone(),
            t.numel.to_string(),
            t.zeros_before.to_string(),
            t.zeroed.to_string(),
            t.zeros_after.to_string(),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "zeroed {} elements in {} tensors; written to {}",
        report.zeroed,
        report.tensors.len(),
        escape_path(&args.output)
    )?;
    Ok(Outcome::Clean)
}
