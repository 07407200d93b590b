//! `soup diff`: compare two checkpoints tensor by tensor.

use std::io::Write;

use anyhow::Result;
use soup_core::{diff, Checkpoint, DiffOptions};

use crate::cli::DiffArgs;
use crate::output::{escape, escape_path, shape, write_json, Context, Outcome, Table};

pub fn run(args: DiffArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = DiffOptions {
        atol: args.atol,
        rtol: args.rtol,
    };
    let a = Checkpoint::open(&args.a)?;
    let b = Checkpoint::open(&args.b)?;
    let report = diff(&a, &b, &options, &ctx.control())?;
    let outcome = if report.equal {
        Outcome::Clean
    } else {
        Outcome::Findings
    };
    if ctx.json {
        write_json(out, &report)?;
        return Ok(outcome);
    }
    // A NaN (JSON's `null`) is `nan`, like `inf`, not Rust's `NaN`.
    let number = |v: f64, text: String| {
        if v.is_nan() {
            "nan".to_string()
        } else {
            text
        }
    };
    let opt = |v: Option<f64>| match v {
        None => "-".to_string(),
        Some(v) => number(v, format!("{v:.3e}")),
    };
    let mut table = Table::new(&[
        ("tensor", false),
        ("shape", false),
        ("differ", true),
        ("max |a-b|", true),
        ("rel L2", true),
        ("cosine", true),
        ("mask diff", true),
        ("note", false),
    ]);
    for t in report.tensors.iter().filter(|t| args.all || !t.equal) {
        table.row(vec![
            t.name.clone(),
            if t.shape_a == t.shape_b {
                shape(&t.shape_a)
            } else {
                format!("{} vs {}", shape(&t.shape_a), shape(&t.shape_b))
            },
            t.differing.to_string(),
            opt(t.max_abs_diff),
            opt(t.rel_l2),
            t.cosine
                .map_or_else(|| "-".to_string(), |c| number(c, format!("{c:.6}"))),
            t.mask_differences
                .map_or_else(|| "-".to_string(), |m| m.to_string()),
            match &t.note {
                Some(n) => format!("{n} ({} vs {})", t.dtype_a, t.dtype_b),
                None => String::new(),
            },
        ]);
    }
    if args.all || report.differing_tensors > 0 {
        table.write(out)?;
        writeln!(out)?;
    }
    for name in &report.only_in_a {
        writeln!(out, "only in {}: {}", escape_path(&report.a), escape(name))?;
    }
    for name in &report.only_in_b {
        writeln!(out, "only in {}: {}", escape_path(&report.b), escape(name))?;
    }
    if !report.metadata_differences.is_empty() {
        writeln!(
            out,
            "metadata differs (not compared): {}",
            escape(&report.metadata_differences.join(", "))
        )?;
    }
    writeln!(
        out,
        "verdict: {} ({} of {} common tensors differ, atol {}, rtol {})",
        if report.equal { "equal" } else { "DIFFERENT" },
        report.differing_tensors,
        report.tensors.len(),
        report.atol,
        report.rtol
    )?;
    Ok(outcome)
}
