//! One module per subcommand, each with a `run` function taking its
//! arguments, an output writer and the context.

mod apply_mask;
mod check_mask;
mod diff;
mod distance;
mod edit;
pub mod fold_lora;
mod hash;
mod inspect;
pub mod mask;
mod merge;
mod prune;
mod shard;

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use soup_core::Checkpoint;

use crate::cli::Command;
use crate::output::{Context, Outcome};

/// Runs one subcommand.
pub fn run(command: Command, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    match command {
        Command::Merge(args) => merge::run(args, out, ctx),
        Command::CheckMask(args) => check_mask::run(args, out, ctx),
        Command::Inspect(args) => inspect::run(args, out, ctx),
        Command::Prune(args) => prune::run(args, out, ctx),
        Command::Diff(args) => diff::run(args, out, ctx),
        Command::Distance(args) => distance::run(args, out, ctx),
        Command::Hash(args) => hash::run(args, out, ctx),
        Command::Edit(args) => edit::run(args, out, ctx),
        Command::ApplyMask(args) => apply_mask::run(args, out, ctx),
        Command::Shard(args) => shard::shard(args, out, ctx),
        Command::Unshard(args) => shard::unshard(args, out, ctx),
        Command::Mask(args) => mask::run(args, out, ctx),
        Command::FoldLora(args) => fold_lora::run(args, out, ctx),
    }
}

/// Opens every checkpoint, validating all headers before any work starts.
pub fn open_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Checkpoint>> {
    paths
        .iter()
        .map(|p| Checkpoint::open(p.as_ref()).map_err(Into::into))
        .collect()
}
