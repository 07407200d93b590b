//! `soup prune` outputs pinned by their sha256: the unstructured prune
//! (global and per tensor, of all or of the remaining weights, every float
//! type, a tensor that spans several pieces, exact ties) writes the same
//! bytes as it did before the prune code was reshaped around groupings.
//! The runs use relative paths inside a temporary folder, so the recorded
//! provenance holds no machine-specific path.

use std::path::Path;
use std::process::Command;

use fixtures::{small_model, write_checkpoint, Rng, Tensor};
use sha2::{Digest, Sha256};
use soup_core::Dtype;
use soup_tests::soup_bin;

fn model(dir: &Path, dtype: Dtype) {
    let mut rng = Rng::new(7);
    let mut tensors = small_model(&mut rng, dtype);
    // Coarse values: many exact ties, across pieces of 2^18 elements.
    let big: Vec<f64> = (0..600 * 512)
        .map(|_| (rng.normal() * 20.0).round() / 20.0)
        .collect();
    tensors.push(Tensor::new("big.weight", dtype, &[600, 512], big));
    write_checkpoint(
        &dir.join("in.safetensors"),
        &tensors,
        &[("format", "pt")],
        None,
    )
    .unwrap();
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// (dtype, arguments, sha256 of the output).
const PINNED: &[(&str, &[&str], &str)] = &[
    (
        "F32",
        &["--sparsity", "0.5"],
        "2692b9215eec818830b6737b7148f0cc616970a37fd18eba134dd3424917746a",
    ),
    (
        "F32",
        &["--sparsity", "0.8", "--scope", "layer"],
        "406626e13ae478388f26296a1d9dcd1f8f9caa35a8825dd54356e9d3740f5eeb",
    ),
    (
        "F32",
        &["--sparsity", "0.3", "--of-remaining"],
        "a86a5f08de86c84c2f38186f6d36ebf178240f643930092a8075d8b161ca40d9",
    ),
    (
        "F16",
        &["--sparsity", "0.6"],
        "86b1ca7de91eae29c4cbdc4f58396f167e6696d5f26b54e08187e6205d025131",
    ),
    (
        "BF16",
        &["--sparsity", "0.7", "--scope", "layer"],
        "8262e826956b58b2445a8dbe918362746bd3824f37138ab296c0791e0cd35ef9",
    ),
    (
        "F64",
        &["--sparsity", "0.45"],
        "3d989a4a415807b857bb6cb67f64ffd0bc1da3fa75af8367c55c16c17c69ca68",
    ),
    (
        "F32",
        &["--sparsity", "0.5", "--include", "bias$"],
        "2f031e5eb87dcf5bc495490881cba34fed81cceccf1ee0f7d0df4e0fe740ddc9",
    ),
];

#[test]
fn unstructured_prune_outputs_are_unchanged() {
    let mut failures = Vec::new();
    for (dtype, args, want) in PINNED {
        let dir = tempfile::tempdir().unwrap();
        let ty = match *dtype {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            _ => Dtype::F64,
        };
        model(dir.path(), ty);
        let out = Command::new(soup_bin())
            .current_dir(dir.path())
            .args(["prune", "in.safetensors", "-o", "out.safetensors"])
            .args(*args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = sha256(&dir.path().join("out.safetensors"));
        if got != *want {
            failures.push(format!("{dtype} {args:?}: {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "changed outputs:\n{}",
        failures.join("\n")
    );
}
