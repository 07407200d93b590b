//! `soup hash`: content hashes of a checkpoint's tensors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use soup_core::{hash_checkpoint, Checkpoint};

use crate::cli::HashArgs;
use crate::output::{write_json, Context, Outcome, Table};

/// The JSON form of `soup hash`.
#[derive(Serialize)]
struct HashOutput<'a> {
    path: PathBuf,
    sha256: &'a str,
    tensors: Vec<TensorHash<'a>>,
}

#[derive(Serialize)]
struct TensorHash<'a> {
    name: &'a str,
    sha256: &'a str,
}

pub fn run(args: HashArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let checkpoint = Checkpoint::open(&args.input)?;
    let hash = hash_checkpoint(&checkpoint, &ctx.control())?;
    if ctx.json {
        let report = HashOutput {
            path: args.input.clone(),
            sha256: &hash.sha256,
            tensors: hash
                .tensors
                .iter()
                .map(|(name, sha256)| TensorHash { name, sha256 })
                .collect(),
        };
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[("tensor", false), ("sha256", false)]);
    for (name, digest) in &hash.tensors {
        table.row(vec![name.clone(), digest.clone()]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(out, "{}  {}", hash.sha256, args.input.display())?;
    Ok(Outcome::Clean)
}
