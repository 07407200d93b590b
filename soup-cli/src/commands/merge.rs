//! `soup merge`: uniform or weighted mean of checkpoints sharing one mask,
//! or a task-vector merge of fine-tunes of a base model.

use std::io::Write;

use anyhow::Result;
use soup_core::{greedy_soup, CommandScorer, GreedyOptions};
use soup_core::{merge, merge_with_base, FloatType, MergeMethod, MergeOptions, OutputOptions};
use soup_core::{MaskPolicy, MergeReport, MethodParams, NmRule, METHODS};

use crate::cli::MergeArgs;
use crate::output::{bytes, escape_path, write_json, Context, Outcome, Table};

pub fn run(args: MergeArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let dtype = match &args.dtype {
        None => None,
        Some(name) => Some(
            name.parse::<FloatType>()
                .map_err(|e| anyhow::anyhow!("--dtype: {e}"))?,
        ),
    };
    let name = match (&args.method, &args.weights) {
        (Some(m), _) => m.as_str(),
        (None, _) if args.base.is_some() => {
            let with_base: Vec<&str> = METHODS.iter().filter(|m| m.base).map(|m| m.name).collect();
            anyhow::bail!("--base needs --method ({})", with_base.join(", "))
        }
        (None, Some(_)) => "weighted",
        (None, None) => "uniform",
    };
    let params = MethodParams {
        weights: args.weights.clone(),
        scale: args.scale,
        density: args.density,
        seed: args.seed,
    };
    let default_policy = match args.base {
        Some(_) => MaskPolicy::Base,
        None => MaskPolicy::Refuse,
    };
    let options = MergeOptions {
        method: MergeMethod::named(name, params),
        mask_policy: args.mask_policy.unwrap_or(default_policy),
        int_policy: args.int_policy,
        dtype,
        output: OutputOptions {
            shard_size: args.shard_size,
            force: args.force,
        },
        recipe_extra: Default::default(),
        nm: args
            .nm
            .map(|p| NmRule::new(p, &[], &[], &args.nm_transposed))
            .transpose()?,
    };
    if args.greedy {
        return greedy(args, options, out, ctx);
    }
    if args.base.is_none() && args.inputs.len() < 2 {
        anyhow::bail!("merge needs at least two checkpoints (or --base and one fine-tune)");
    }
    // Reject a bad method, bad weights or a mask policy that does not fit
    // before opening anything.
    options.validate(args.inputs.len(), args.base.is_some())?;
    let inputs = super::open_all(&args.inputs)?;
    let report = match &args.base {
        Some(base) => {
            let base = super::open_all(std::slice::from_ref(base))?.remove(0);
            merge_with_base(&base, &inputs, &args.output, &options, &ctx.control())?
        }
        None => merge(&inputs, &args.output, &options, &ctx.control())?,
    };
    if ctx.json {
        write_json(out, &report)?;
    } else if report.base.is_some() {
        write_base_merge(out, &report, &args.output)?;
    } else {
        writeln!(
            out,
            "merged {} checkpoints into {} ({} tensors, {} averaged, {})",
            report.inputs.len(),
            escape_path(&args.output),
            report.tensors,
            report.averaged,
            bytes(report.bytes)
        )?;
        for (path, w) in report.inputs.iter().zip(&report.weights) {
            writeln!(out, "  weight {w:.4}  {}", escape_path(path))?;
        }
        if !report.mask_differences.is_empty() {
            writeln!(
                out,
                "masks differed in {} tensors; resolved by --mask-policy {}",
                report.mask_differences.len(),
                report.mask_policy
            )?;
        }
        if let Some(p) = args.nm {
            writeln!(out, "every checked tensor of the result is {p}")?;
        }
    }
    Ok(Outcome::Clean)
}

/// The human report of a merge with a base: the method, the weights, the
/// tensors whose masks differ from the base's (as `check-mask` lists
/// them), and what the base's mask removed from each task vector.
fn write_base_merge(
    out: &mut dyn Write,
    report: &MergeReport,
    target: &std::path::Path,
) -> Result<()> {
    let base = report.base.as_deref().expect("a base");
    writeln!(
        out,
        "merged {} fine-tunes of {} with {} into {} ({} tensors, {} merged, {})",
        report.inputs.len(),
        escape_path(base),
        report.method,
        escape_path(target),
        report.tensors,
        report.averaged,
        bytes(report.bytes)
    )?;
    for (path, w) in report.inputs.iter().zip(&report.weights) {
        writeln!(out, "  weight {w:.4}  {}", escape_path(path))?;
    }
    if !report.mask_differences.is_empty() {
        writeln!(
            out,
            "masks differ from the base's in {} tensors (--mask-policy {}):",
            report.mask_differences.len(),
            report.mask_policy
        )?;
        let mut table = Table::new(&[("tensor", false), ("fine-tune", false), ("positions", true)]);
        for (tensor, diffs) in &report.mask_differences {
            for (path, &d) in report.inputs.iter().zip(diffs).filter(|(_, &d)| d > 0) {
                table.row(vec![
                    tensor.clone(),
                    path.display().to_string(),
                    d.to_string(),
                ]);
            }
        }
        table.write(out)?;
    }
    for tv in report.task_vectors.iter().filter(|tv| tv.dropped > 0.0) {
        writeln!(
            out,
            "  the base's mask removed {:.2}% of the task vector's norm of {}",
            100.0 * tv.dropped / tv.norm,
            escape_path(&tv.input)
        )?;
    }
    Ok(())
}

/// `soup merge --greedy`: score, rank, and grow the soup one candidate at a
/// time.
fn greedy(
    args: MergeArgs,
    merge: MergeOptions,
    out: &mut dyn Write,
    ctx: &Context,
) -> Result<Outcome> {
    let command = args.eval_cmd.as_deref().expect("clap requires --eval-cmd");
    // A signal to soup alone also stops the evaluator (which runs in a
    // process group of its own) instead of waiting for it.
    let mut scorer = CommandScorer::new(command)?.interrupt_on(ctx.interrupt_flag());
    let options = GreedyOptions {
        strict: args.strict,
        scores: args.scores.clone(),
        merge,
    };
    options.validate(args.inputs.len())?;
    let inputs = super::open_all(&args.inputs)?;
    let report = greedy_soup(&inputs, &args.output, &mut scorer, &options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[
        ("trial", true),
        ("candidate", false),
        ("own score", true),
        ("soup score", true),
        ("kept", false),
    ]);
    for (i, t) in report.trials.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            t.candidate.display().to_string(),
            format!("{}", t.candidate_score),
            format!("{}", t.score),
            if t.kept { "yes" } else { "no" }.to_string(),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "greedy soup of {} of {} candidates (score {}{}) written to {}",
        report.chosen.len(),
        report.trials.len(),
        report.score,
        if report.strict { ", strict" } else { "" },
        escape_path(&args.output)
    )?;
    Ok(Outcome::Clean)
}
