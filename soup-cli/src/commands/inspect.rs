//! `soup inspect`: tensors, totals and metadata of a checkpoint.

use std::io::Write;

use anyhow::Result;
use soup_core::{inspect, Checkpoint};

use crate::cli::InspectArgs;
use crate::output::{bytes, escape, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: InspectArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let checkpoint = Checkpoint::open(&args.input)?;
    let report = inspect(&checkpoint, !args.headers_only, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[
        ("tensor", false),
        ("dtype", false),
        ("shape", false),
        ("elements", true),
        ("bytes", true),
        ("sparsity", true),
    ]);
    for t in &report.tensors {
        table.row(vec![
            t.name.clone(),
            t.dtype.clone(),
            shape(&t.shape),
            t.numel.to_string(),
            bytes(t.bytes),
            t.sparsity.map_or_else(|| "-".into(), percent),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "{} tensors, {} elements, {} in {} file(s)",
        report.tensors.len(),
        report.numel,
        bytes(report.bytes),
        report.files.len()
    )?;
    if !args.headers_only && report.float_numel > 0 {
        writeln!(
            out,
            "float zeros: {} of {} ({})",
            report.float_zeros,
            report.float_numel,
            percent(report.float_zeros as f64 / report.float_numel as f64)
        )?;
    }
    for (k, v) in &report.metadata {
        writeln!(out, "metadata {} = {}", escape(k), escape(v))?;
    }
    Ok(Outcome::Clean)
}
