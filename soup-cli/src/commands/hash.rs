//! `soup hash`: content digests of a checkpoint's tensors, or the sha256 of
//! its files.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use soup_core::file_sha256s;
use soup_core::{hash_checkpoint, Checkpoint};

use crate::cli::HashArgs;
use crate::output::{escape_path, write_json, Context, Outcome, Table};

/// The JSON form of `soup hash`.
#[derive(Serialize)]
struct HashOutput<'a> {
    path: PathBuf,
    digest: &'a str,
    tensors: Vec<TensorHash<'a>>,
}

#[derive(Serialize)]
struct TensorHash<'a> {
    name: &'a str,
    digest: &'a str,
}

/// The JSON form of `soup hash --file`.
#[derive(Serialize)]
struct FileHashes {
    files: Vec<FileHash>,
}

#[derive(Serialize)]
struct FileHash {
    path: PathBuf,
    sha256: String,
}

pub fn run(args: HashArgs, out: &mut dyn Write, ctx: &Context) -> Result<Outcome> {
    let checkpoint = Checkpoint::open(&args.input)?;
    if args.file {
        let files = file_sha256s(&checkpoint)?;
        if ctx.json {
            let files = files
                .into_iter()
                .map(|(path, sha256)| FileHash { path, sha256 })
                .collect();
            write_json(out, &FileHashes { files })?;
        } else {
            // sha256sum's format, so that `sha256sum -c` can check it.
            for (path, sha256) in &files {
                writeln!(out, "{sha256}  {}", escape_path(path))?;
            }
        }
        return Ok(Outcome::Clean);
    }
    let hash = hash_checkpoint(&checkpoint, &ctx.control())?;
    if ctx.json {
        let report = HashOutput {
            path: args.input.clone(),
            digest: &hash.digest,
            tensors: hash
                .tensors
                .iter()
                .map(|(name, digest)| TensorHash { name, digest })
                .collect(),
        };
        write_json(out, &report)?;
        return Ok(Outcome::Clean);
    }
    let mut table = Table::new(&[("tensor", false), ("digest", false)]);
    for (name, digest) in &hash.tensors {
        table.row(vec![name.clone(), digest.clone()]);
    }
    table.write(out)?;
    writeln!(out)?;
    writeln!(out, "{}  {}", hash.digest, escape_path(&args.input))?;
    Ok(Outcome::Clean)
}
