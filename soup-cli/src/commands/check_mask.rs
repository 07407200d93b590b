//! `soup check-mask`: do checkpoints share one sparsity mask? With `--nm`:
//! does each checkpoint follow an N:M pattern (and a kernel's rules)?

use std::io::Write;

use anyhow::Result;
use soup_core::{check_masks, check_masks_against, MaskSource, Selection};
use soup_core::{check_nm_all, NmCheckReport, NmRule};

use crate::cli::CheckMaskArgs;
use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: CheckMaskArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    if args.nm.is_some() {
        return run_nm(args, out, ctx);
    }
    let selection = Selection::new(&args.include, &args.exclude)?;
    let reference = args.reference.as_ref().map(MaskSource::open).transpose()?;
    let inputs = super::open_all(&args.inputs)?;
    let report = match &reference {
        Some(r) => check_masks_against(&inputs, r, &selection, &ctx.control())?,
        None => check_masks(&inputs, None, &selection, &ctx.control())?,
    };
    if ctx.json {
        write_json(out, &report)?;
    } else {
        let mut table = Table::new(&[
            ("tensor", false),
            ("shape", false),
            ("sparsity", true),
            ("differ", true),
            ("fingerprint", false),
        ]);
        for t in &report.tensors {
            table.row(vec![
                t.name.clone(),
                shape(&t.shape),
                percent(t.sparsity),
                t.differing.to_string(),
                t.reference_fingerprint.to_string()[..16].to_string(),
            ]);
        }
        table.write(out)?;
        writeln!(out)?;
        writeln!(
            out,
            "reference: {}{}",
            escape_path(&report.reference),
            if report.reference_is_input {
                " (first input)"
            } else {
                ""
            }
        )?;
        writeln!(out, "tensors compared: {}", report.compared)?;
        writeln!(
            out,
            "sparsity: {} of {} weights in tensors with zeros ({} over all compared tensors)",
            percent(report.sparsity_of_pruned),
            report.pruned_elements,
            percent(report.sparsity_of_compared)
        )?;
        if report.identical {
            writeln!(out, "verdict: masks identical")?;
        } else {
            let differing = report.tensors.iter().filter(|t| t.differing > 0).count();
            writeln!(out, "verdict: masks DIFFER in {differing} tensors")?;
            for (i, path) in report.inputs.iter().enumerate() {
                let n: u64 = report
                    .tensors
                    .iter()
                    .map(|t| t.differing_per_input[i])
                    .sum();
                if n > 0 {
                    writeln!(out, "  {}: {n} positions differ", escape_path(path))?;
                }
            }
        }
    }
    Ok(if report.identical {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// `check-mask --nm`: the pattern of every selected tensor of each input.
fn run_nm(args: CheckMaskArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let pattern = args.nm.expect("--nm given");
    let rule = NmRule::new(pattern, &args.include, &args.exclude, &args.nm_transposed)?;
    let inputs = super::open_all(&args.inputs)?;
    let report = check_nm_all(&inputs, &rule, args.kernel, &ctx.control())?;
    if ctx.json {
        write_json(out, &report)?;
    } else {
        write_nm_table(&report, out)?;
    }
    Ok(if report.passed {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn write_nm_table(report: &NmCheckReport, out: &mut dyn Write) -> Result<()> {
    let kernel = report
        .kernel
        .map(|k| format!(", {k} kernel rules"))
        .unwrap_or_default();
    for (i, checkpoint) in report.checkpoints.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{}: {}{kernel}",
            escape_path(&checkpoint.path),
            report.pattern
        )?;
        let mut table = Table::new(&[
            ("tensor", false),
            ("dtype", false),
            ("shape", false),
            ("groups", true),
            ("violating", true),
            ("first violation", false),
            ("verdict", false),
        ]);
        for t in &checkpoint.tensors {
            let mut why: Vec<String> = Vec::new();
            why.extend(t.shape_problem.clone());
            if t.violating > 0 {
                why.push(format!("{} groups break {}", t.violating, report.pattern));
            }
            if let Some(k) = &t.kernel {
                why.extend(k.problems.iter().cloned());
            }
            table.row(vec![
                t.name.clone(),
                t.dtype.clone(),
                format!(
                    "{}{}",
                    shape(&t.shape),
                    if t.transposed { " (in, out)" } else { "" }
                ),
                t.groups.to_string(),
                t.violating.to_string(),
                t.first_violation_at
                    .as_ref()
                    .map_or_else(|| "-".into(), |at| format!("{at:?}")),
                if t.passed {
                    "ok".into()
                } else {
                    format!("FAIL: {}", why.join("; "))
                },
            ]);
        }
        table.write(out)?;
        writeln!(
            out,
            "tensors checked: {}, failing: {}",
            checkpoint.checked, checkpoint.failing
        )?;
    }
    writeln!(out)?;
    if report.passed {
        writeln!(
            out,
            "verdict: every checked tensor is {}{kernel}",
            report.pattern
        )?;
    } else {
        let failing: usize = report.checkpoints.iter().map(|c| c.failing).sum();
        writeln!(out, "verdict: {failing} tensors FAIL")?;
    }
    Ok(())
}
