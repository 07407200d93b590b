//! `soup hash`: content digests of a checkpoint's tensors, or the sha256 of
//! its files.

use std::io::Write;

use anyhow::Result;
use soup_core::{hash_checkpoint, Checkpoint, FileHashReport};

use crate::cli::HashArgs;
use crate::output::{escape_path, write_json, Context, Outcome, Table};

pub fn run(args: HashArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let checkpoint = Checkpoint::open(&args.input)?;
    if args.file {
        let report = FileHashReport::of(&checkpoint)?;
        if ctx.json {
            write_json(out, &report)?;
        } else {
            // sha256sum's format, so that `sha256sum -c` can check it.
            for f in &report.files {
                writeln!(out, "{}  {}", f.sha256, escape_path(&f.path))?;
            }
        }
        return Ok(Outcome::Clean);
    }
    let report = hash_checkpoint(&checkpoint, &ctx.control())?.report(&args.input);
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[("tensor", false), ("digest", false)]);
    for t in &report.tensors {
        table.row(vec![t.name.clone(), t.digest.clone()]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(out, "{}  {}", report.digest, escape_path(&report.path))?;
    Ok(Outcome::Clean)
}
