//! `soup check-mask`: do checkpoints share one sparsity mask?

use std::io::Write;

use anyhow::{bail, Result};
use soup_core::{check_masks, check_masks_against, MaskSource, Selection};

use crate::cli::CheckMaskArgs;
use crate::output::{escape_path, percent, shape, write_json, Context, Outcome, Table};

pub fn run(args: CheckMaskArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    if args.reference.is_none() && args.inputs.len() < 2 {
        bail!("check-mask needs two checkpoints, or one with --reference PARENT");
    }
    let selection = Selection::new(&args.include, &args.exclude)?;
    let reference = args.reference.as_ref().map(MaskSource::open).transpose()?;
    let inputs = super::open_all(&args.inputs)?;
    let report = match &reference {
        Some(r) => check_masks_against(&inputs, r, &selection, &ctx.control())?,
        None => check_masks(&inputs, None, &selection, &ctx.control())?,
    };
    if report.compared == 0 {
        bail!("no float tensors selected for comparison");
    }
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
