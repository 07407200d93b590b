//! `soup prune`: unstructured pruning (global or per tensor) or N:M.

use std::io::Write;

use anyhow::Result;
use soup_core::{plan_prune as plan, prune, PruneOptions};
use soup_core::{Checkpoint, OutputOptions};

use crate::cli::PruneArgs;
use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: PruneArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = PruneOptions {
        sparsity: args.sparsity.unwrap_or(0.0),
        scope: args.scope,
        of_remaining: args.of_remaining,
        criterion: args.criterion,
        include: args.include,
        exclude: args.exclude,
        output: OutputOptions {
            shard_size: args.shard_size,
            force: args.force,
        },
        nm: args.nm,
        transposed: args.nm_transposed,
        skip_ragged: args.nm_skip_ragged,
        keep_zeros: args.keep_zeros,
        scores: args.scores,
    };
    // Reject bad arguments before opening anything.
    options.validate()?;
    let input = Checkpoint::open(&args.input)?;
    let report = match &args.output {
        Some(target) => prune(&input, target, &options, &ctx.control())?,
        None => plan(&input, &options, &ctx.control())?,
    };
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[
        ("tensor", false),
        ("shape", false),
        ("elements", true),
        ("zeros before", true),
        ("zeros after", true),
        ("sparsity", true),
    ]);
    for t in &report.tensors {
        table.row(vec![
            t.name.clone(),
            shape(&t.shape),
            t.numel.to_string(),
            t.zeros_before.to_string(),
            t.zeros_after.to_string(),
            percent(t.sparsity),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    let of = if report.of_remaining {
        "of the non-zero weights"
    } else {
        "of all selected weights"
    };
    let done = if args.dry_run { "dry run" } else { "pruned" };
    match report.pattern {
        Some(p) => writeln!(
            out,
            "{done}: N:M {p}, groups of {} along the input dimension keep {}: {} of {} \
             weights in the removed set",
            p.m(),
            p.n(),
            report.target,
            report.candidates,
        )?,
        None => writeln!(
            out,
            "{done}: {} scope, fraction {} {of}: {} of {} candidates in the removed set",
            report.scope, report.sparsity, report.target, report.candidates,
        )?,
    }
    if !report.skipped.is_empty() {
        writeln!(
            out,
            "left unchanged (input dimension not a multiple of M): {}",
            report.skipped.join(", ")
        )?;
    }
    if let Some(t) = report.threshold {
        writeln!(out, "threshold: |w| <= {t:e} removed (ties by position)")?;
    }
    writeln!(
        out,
        "removed {} non-zero weights; sparsity {} over the {} selected weights in {} tensors \
         (was {}), {} over all {} float elements",
        report.removed,
        percent(report.sparsity_after),
        report.selected_elements,
        report.tensors.len(),
        percent(if report.selected_elements == 0 {
            0.0
        } else {
            report.zeros_before as f64 / report.selected_elements as f64
        }),
        percent(report.float_sparsity_after),
        report.float_elements,
    )?;
    match &args.output {
        Some(target) => writeln!(out, "written to {}", escape_path(target))?,
        None => writeln!(out, "nothing written (--dry-run)")?,
    }
    Ok(Outcome::Clean)
}
