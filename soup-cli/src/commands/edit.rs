//! `soup edit`: rename, drop, keep and cast tensors; edit metadata.

use std::io::Write;

use anyhow::Result;
use soup_core::{edit, Checkpoint, EditOptions, OutputOptions};

use crate::cli::EditArgs;
use crate::output::{escape, escape_path, write_json, Context, Outcome};

pub fn run(args: EditArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = EditOptions {
        rename: args.rename,
        drop: args.drop,
        keep: args.keep,
        cast: args.cast,
        cast_only: args.only,
        set_meta: args.set_meta,
        del_meta: args.del_meta,
        output: OutputOptions {
            shard_size: None,
            force: args.force,
        },
    };
    let input = Checkpoint::open(&args.input)?;
    let report = edit(&input, &args.output, &options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    for (old, new) in &report.renamed {
        writeln!(out, "renamed  {} -> {}", escape(old), escape(new))?;
    }
    for name in &report.dropped {
        writeln!(out, "dropped  {}", escape(name))?;
    }
    for (name, from, to) in &report.cast {
        writeln!(out, "cast     {} {from} -> {to}", escape(name))?;
    }
    writeln!(
        out,
        "wrote {} tensors to {} ({} renamed, {} dropped, {} cast)",
        report.tensors,
        escape_path(&args.output),
        report.renamed.len(),
        report.dropped.len(),
        report.cast.len()
    )?;
    Ok(Outcome::Clean)
}
