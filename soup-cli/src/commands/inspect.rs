//! `soup inspect`: tensors, totals and metadata of a checkpoint.

use std::io::Write;

use anyhow::Result;
use soup_core::{inspect_nm, Checkpoint, NmRule};

use crate::cli::InspectArgs;
use crate::output::{bytes, escape, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: InspectArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let checkpoint = Checkpoint::open(&args.input)?;
    let rule = args
        .nm
        .map(|p| NmRule::new(p, &[], &[], &args.nm_transposed))
        .transpose()?;
    let report = inspect_nm(
        &checkpoint,
        !args.headers_only,
        rule.as_ref(),
        &ctx.control(),
    )?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut columns = vec![
        ("tensor", false),
        ("dtype", false),
        ("shape", false),
        ("elements", true),
        ("bytes", true),
        ("sparsity", true),
    ];
    if report.nm.is_some() {
        columns.push(("N:M", false));
    }
    let mut table = Table::new(&columns);
    for t in &report.tensors {
        let mut row = vec![
            t.name.clone(),
            t.dtype.clone(),
            shape(&t.shape),
            t.numel.to_string(),
            bytes(t.bytes),
            t.sparsity.map_or_else(|| "-".into(), percent),
        ];
        if report.nm.is_some() {
            row.push(match t.nm {
                None => "-".into(),
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
            });
        }
        table.row(row);
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
    if let Some(p) = report.nm {
        let checked: Vec<bool> = report.tensors.iter().filter_map(|t| t.nm).collect();
        let yes = checked.iter().filter(|&&b| b).count();
        writeln!(
            out,
            "{p}: {yes} of {} prunable tensors (check-mask --nm says why the others fail)",
            checked.len()
        )?;
    }
    for (k, v) in &report.metadata {
        writeln!(out, "metadata {} = {}", escape(k), escape(v))?;
    }
    Ok(Outcome::Clean)
}
