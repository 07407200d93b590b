//! `soup shard` and `soup unshard`: the same tensors in another file layout.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use soup_core::{relayout, Checkpoint, OutputOptions};

use crate::cli::{ShardArgs, UnshardArgs};
use crate::output::{bytes, escape_path, write_json, Context, Outcome};

pub fn shard(args: ShardArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = OutputOptions {
        shard_size: Some(args.shard_size),
        force: args.force,
    };
    let input = Checkpoint::open(&args.input)?;
    copy(&input, &args.output, &options, out, ctx)
}

pub fn unshard(args: UnshardArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let input = Checkpoint::open(&args.input)?;
    if !input.is_sharded() {
        bail!(
            "{}: not a sharded checkpoint (expected a folder with model.safetensors.index.json)",
            args.input.display()
        );
    }
    let options = OutputOptions {
        shard_size: None,
        force: args.force,
    };
    copy(&input, &args.output, &options, out, ctx)
}

fn copy(
    checkpoint: &Checkpoint,
    target: &Path,
    options: &OutputOptions,
    out: &mut dyn Write,
    ctx: &Context,
) -> Result<Outcome> {
    let report = relayout(checkpoint, target, options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    for file in &report.outputs {
        writeln!(out, "wrote {}", escape_path(file))?;
    }
    writeln!(
        out,
        "{} tensors, {} of data, content digest {}",
        report.tensors,
        bytes(report.bytes),
        report.input_digest
    )?;
    Ok(Outcome::Clean)
}
