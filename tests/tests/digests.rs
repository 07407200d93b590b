//! Content digests end to end: `soup hash` prints `blake3:<hex>` by default
//! and `sha256:<hex>` with `--digest sha256`, written files record the same
//! strings as provenance, and `soup hash --file` prints the plain sha256 of
//! each file, as `sha256sum` (and the Hugging Face Hub) do.

use std::path::{Path, PathBuf};
use std::process::Command;

use fixtures::{write_checkpoint, Tensor};
use soup_core::{Checkpoint, Dtype};
use soup_tests::soup;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(dir: &Path, name: &str, shift: f64, shard_size: Option<u64>) -> PathBuf {
    let path = dir.join(name);
    let tensors = vec![
        Tensor::new(
            "a.weight",
            Dtype::F32,
            &[2, 4],
            vec![1.0 + shift, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 5.0],
        ),
        Tensor::new("a.bias", Dtype::F32, &[2], vec![0.5, -0.5]),
    ];
    write_checkpoint(&path, &tensors, &[("format", "pt")], shard_size).unwrap();
    path
}

fn hash_json(args: &[&str]) -> serde_json::Value {
    let run = soup(args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn hash_prints_blake3_by_default_and_sha256_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.safetensors", 0.0, None);
    let blake = hash_json(&["hash", "--json", s(&a)]);
    let sha = hash_json(&["hash", "--json", "--digest", "sha256", s(&a)]);
    let (b, h) = (
        blake["digest"].as_str().unwrap(),
        sha["digest"].as_str().unwrap(),
    );
    assert!(b.starts_with("blake3:") && b.len() == 7 + 64, "{b}");
    assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
    assert_ne!(b[7..], h[7..]);
    for t in blake["tensors"].as_array().unwrap() {
        assert!(t["digest"].as_str().unwrap().starts_with("blake3:"), "{t}");
    }
    // The table ends with the same string.
    let table = soup(["hash", s(&a)]);
    assert!(
        table.stdout.lines().last().unwrap().starts_with(b),
        "{}",
        table.stdout
    );
    // Sharding does not change the digest.
    let sharded = write(dir.path(), "sharded", 0.0, Some(16));
    assert_eq!(hash_json(&["hash", "--json", s(&sharded)])["digest"], b);
}

#[test]
fn provenance_records_the_digest_soup_hash_prints() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.safetensors", 0.0, None);
    let b = write(dir.path(), "b.safetensors", 1.0, None);
    for kind in ["blake3", "sha256"] {
        let out = dir.path().join(format!("merged-{kind}.safetensors"));
        let run = soup(["merge", "--digest", kind, s(&a), s(&b), "-o", s(&out)]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let ck = Checkpoint::open(&out).unwrap();
        let recorded: Vec<serde_json::Value> =
            serde_json::from_str(&ck.metadata()["soup.inputs"]).unwrap();
        for (entry, input) in recorded.iter().zip([&a, &b]) {
            let printed = hash_json(&["hash", "--json", "--digest", kind, s(input)]);
            assert_eq!(entry["path"], s(input));
            assert_eq!(entry["digest"], printed["digest"], "{kind}");
            assert!(entry["digest"].as_str().unwrap().starts_with(kind));
        }
    }
}

#[test]
fn hash_file_prints_what_sha256sum_prints() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.safetensors", 0.0, None);
    let sharded = write(dir.path(), "sharded", 0.0, Some(16));
    for input in [&a, &sharded] {
        let ck = Checkpoint::open(input).unwrap();
        let files: Vec<PathBuf> = ck.files().map(Path::to_path_buf).collect();
        let expected = Command::new("sha256sum").args(&files).output().unwrap();
        assert!(expected.status.success());
        let run = soup(["hash", "--file", s(input)]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, String::from_utf8(expected.stdout).unwrap());
    }
    let json = hash_json(&["hash", "--file", "--json", s(&a)]);
    assert_eq!(json["files"][0]["path"], s(&a));
    assert_eq!(json["files"][0]["sha256"].as_str().unwrap().len(), 64);
}

/// `soup hash --json` prints soup-core's report types (which deny unknown
/// fields), so the CLI and the Python package print one format.
#[test]
fn hash_json_is_the_core_report() {
    let a = soup_tests::fixture("parent.safetensors");
    let run = soup(["hash", "--json", s(&a)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: soup_core::HashReport = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report.path, a);
    assert!(!report.tensors.is_empty());
    assert!(report.digest.starts_with("blake3:"));
    let run = soup(["hash", "--file", "--json", s(&a)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let files: soup_core::FileHashReport = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(files.files.len(), 1);
}

/// Merge hashes BLAKE3 inside each piece's work (subtrees of the BLAKE3
/// tree, merged at the end) rather than in order: the digests it records
/// must still be exactly those `soup hash` prints, however the tensors are
/// cut into pieces: tensors of many chunks split at offsets that are not
/// chunk boundaries, a name longer than a chunk, empty, F16 and integer
/// tensors, a sharded input.
#[test]
fn merge_records_the_hash_digest_whatever_the_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let long_name = format!("blocks.{}.weight", "x".repeat(1500));
    let write = |name: &str, shift: f64, shard_size: Option<u64>| {
        let wave = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| match i % 3 {
                    0 => 0.0,
                    _ => ((i as f64) * 0.37 + shift).sin(),
                })
                .collect()
        };
        let tensors = vec![
            Tensor::new("w", Dtype::F32, &[300_001], wave(300_001)),
            Tensor::new(&long_name, Dtype::F32, &[5000], wave(5000)),
            Tensor::new("empty", Dtype::F32, &[0], vec![]),
            Tensor::new("half", Dtype::F16, &[70_001], wave(70_001)),
            Tensor::new("steps", Dtype::I64, &[3000], vec![7.0; 3000]),
        ];
        let path = dir.path().join(name);
        write_checkpoint(&path, &tensors, &[], shard_size).unwrap();
        path
    };
    let a = write("a.safetensors", 0.0, None);
    let b = write("b", 1.0, Some(1 << 20));
    for kind in ["blake3", "sha256"] {
        let printed: Vec<serde_json::Value> = [&a, &b]
            .iter()
            .map(|p| hash_json(&["hash", "--json", "--digest", kind, s(p)])["digest"].clone())
            .collect();
        for budget in ["64MiB", "100KiB", "3KiB"] {
            let out = dir.path().join(format!("m-{kind}-{budget}.safetensors"));
            let run = soup([
                "merge",
                "--digest",
                kind,
                "--budget",
                budget,
                s(&a),
                s(&b),
                "-o",
                s(&out),
            ]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            let ck = Checkpoint::open(&out).unwrap();
            let recorded: Vec<serde_json::Value> =
                serde_json::from_str(&ck.metadata()["soup.inputs"]).unwrap();
            for (entry, digest) in recorded.iter().zip(&printed) {
                assert_eq!(&entry["digest"], digest, "{kind} at budget {budget}");
            }
        }
    }
}
