//! `soup merge`: uniform or weighted mean of checkpoints sharing one mask.

use std::io::Write;

use anyhow::Result;
use soup_core::{greedy_soup, CommandScorer, GreedyOptions};
use soup_core::{merge, FloatType, MergeMethod, MergeOptions, NmRule, OutputOptions};

use crate::cli::MergeArgs;
use crate::output::{bytes, escape_path, write_json, Context, Outcome, Table};

pub fn run(args: MergeArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let dtype = match &args.dtype {
        None => None,
        Some(name) => {
            let dtype = soup_core::parse_dtype(name)?;
            Some(FloatType::of(dtype).ok_or_else(|| {
                anyhow::anyhow!("--dtype must be a float type (F64, F32, F16, BF16), got {name}")
            })?)
        }
    };
    let options = MergeOptions {
        method: match &args.weights {
            Some(w) => MergeMethod::Weighted(w.clone()),
            None => MergeMethod::Uniform,
        },
        mask_policy: args.mask_policy.into(),
        int_policy: args.int_policy.into(),
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
    // Reject bad weights before opening anything.
    options.method.weights(args.inputs.len())?;
    let inputs = super::open_all(&args.inputs)?;
    let report = merge(&inputs, &args.output, &options, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
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
                "masks differed in {} tensors; resolved by --mask-policy {:?}",
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
    if let Some(scores) = &options.scores {
        if scores.len() != args.inputs.len() {
            anyhow::bail!(
                "--scores has {} values for {} inputs",
                scores.len(),
                args.inputs.len()
            );
        }
    }
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
