//! `soup distance`: the geometry of a set of checkpoints (pairwise L2 and
//! cosine, distance to the barycentre).

use std::io::Write;

use anyhow::Result;
use soup_core::{distance, Selection};

use crate::cli::DistanceArgs;
use crate::output::{escape_path, write_json, Context, Outcome, Table};

pub fn run(args: DistanceArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let selection = Selection::new(&args.include, &args.exclude)?;
    let inputs = super::open_all(&args.inputs)?;
    let report = distance(&inputs, &selection, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let n = report.inputs.len();
    writeln!(out, "inputs:")?;
    for (i, path) in report.inputs.iter().enumerate() {
        writeln!(out, "  {i}: {}", escape_path(path))?;
    }
    writeln!(out)?;
    let mut table = Table::new(&[("a", true), ("b", true), ("l2", true), ("cosine", true)]);
    for i in 0..n {
        for j in i + 1..n {
            table.row(vec![
                i.to_string(),
                j.to_string(),
                format!("{:.6e}", report.l2[i][j]),
                report.cosine[i][j].map_or_else(|| "-".to_string(), |c| format!("{c:.8}")),
            ]);
        }
    }
    table.write(out)?;
    writeln!(out)?;
    let mut table = Table::new(&[("input", true), ("to barycentre", true)]);
    for (i, d) in report.to_barycentre.iter().enumerate() {
        table.row(vec![i.to_string(), format!("{d:.6e}")]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "over {} float tensors, {} elements per input",
        report.tensors, report.elements
    )?;
    Ok(Outcome::Clean)
}
