//! `soup prune`: unstructured magnitude pruning, global or per tensor.

use std::io::Write;

use anyhow::Result;
use soup_core::{plan_prune as plan, prune, PruneOptions, Scope};
use soup_core::{Checkpoint, OutputOptions};

use crate::cli::{PruneArgs, ScopeArg};
use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: PruneArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let options = PruneOptions {
        sparsity: args.sparsity,
        scope: match args.scope {
            ScopeArg::Global => Scope::Global,
            ScopeArg::Layer => Scope::Layer,
        },
        of_remaining: args.of_remaining,
        criterion: Default::default(),
        include: args.include,
        exclude: args.exclude,
        output: OutputOptions {
            shard_size: args.shard_size,
            force: args.force,
        },
    };
    // Reject bad arguments before opening anything.
    soup_core::validate_sparsity(options.sparsity)?;
    soup_core::PruneSelection::new(&options.include, &options.exclude)?;
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
    writeln!(
        out,
        "{}: {} scope, fraction {} {of}: {} of {} candidates in the removed set",
        if args.dry_run { "dry run" } else { "pruned" },
        match report.scope {
            Scope::Global => "global",
            Scope::Layer => "layer",
        },
        report.sparsity,
        report.target,
        report.candidates,
    )?;
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
