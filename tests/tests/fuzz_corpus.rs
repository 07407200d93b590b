//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! fuzz harness on stable Rust, so that the normal test suite checks every
//! input the fuzzer kept, with the same checks. The harness source is
//! shared with the cargo-fuzz targets (see `fuzz/src/harness.rs`).

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The committed corpus folder (of this checkout: the path is taken when
/// this file is compiled).
fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_without_a_finding() {
    let mut failures = Vec::new();
    for (target, run) in harness::TARGETS {
        let files = corpus(target);
        // The seeds alone are more than this; an empty folder means the
        // corpus went missing, which would make this test pass vacuously.
        assert!(
            files.len() >= 4,
            "fuzz/corpus/{target} holds only {} files",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{target}: {}: {why}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "findings:\n{}", failures.join("\n"));
}

/// The seeds made by `fuzz/make_seeds.sh` reach the checks of their target
/// (a harness that refused everything would fuzz nothing), except the ones
/// built to be refused.
#[test]
fn the_seeds_reach_the_checks_of_their_target() {
    use harness::Outcome::{Accepted, Refused};
    let cases: &[(&str, &str, harness::Outcome)] = &[
        ("header", "candidate-0.safetensors", Accepted),
        ("header", "model-00002-of-00003.safetensors", Accepted),
        ("header", "minimal.safetensors", Accepted),
        ("header", "empty.safetensors", Accepted),
        ("open", "parent.safetensors", Accepted),
        ("open", "candidate-0-f16.safetensors", Accepted),
        ("open", "sharded-3", Accepted),
        ("merge", "same-mask", Accepted),
        ("merge", "other-mask", Accepted),
        ("merge", "f16-with-itself", Accepted),
        ("merge", "minimal-pair", Accepted),
        // Different dtypes for one tensor name cannot be merged.
        ("merge", "f16-with-f32", Refused),
    ];
    for (target, name, expected) in cases {
        let run = harness::TARGETS
            .iter()
            .find(|(t, _)| t == target)
            .unwrap()
            .1;
        let data = std::fs::read(corpus_root().join(target).join(name))
            .unwrap_or_else(|e| panic!("seed {target}/{name}: {e}"));
        assert_eq!(run(&data), *expected, "seed {target}/{name}");
    }
}

#[test]
fn multi_file_inputs_split_into_their_parts() {
    let parts: [&[u8]; 3] = [b"{}", b"", b"abc"];
    let joined = harness::join_parts(&parts);
    assert_eq!(harness::split_parts(&joined), parts);
    assert_eq!(harness::split_parts(b"one file"), [b"one file"]);
    // The sharded seed names its shards the way the harness writes them.
    let seed = std::fs::read(corpus_root().join("open/sharded-3")).unwrap();
    let parts = harness::split_parts(&seed);
    assert_eq!(parts.len(), 4, "index and three shards");
    let index = String::from_utf8_lossy(parts[0]);
    for k in 1..parts.len() {
        assert!(
            index.contains(&harness::shard_name(k)),
            "index names {}",
            harness::shard_name(k)
        );
    }
}
