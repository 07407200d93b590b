//! Bad input, end to end: every case must end with exit status 2, one line
//! on standard error that names the file and the problem, and nothing left
//! in the output folder (neither the output nor a temporary file).
//!
//! Broken files are built from byte literals, one per known problem, in the
//! manner of the safetensors crate's own attack tests.

use std::path::{Path, PathBuf};

use fixtures::{write_checkpoint, Tensor};
use soup_core::Dtype;
use soup_tests::{soup, Run};

/// A scratch folder with an `out/` subfolder for outputs.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn out_dir(&self) -> PathBuf {
        self.path("out")
    }
    fn output(&self) -> PathBuf {
        self.out_dir().join("merged.safetensors")
    }
    /// Writes a small valid checkpoint named `name`.
    fn good(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        write_checkpoint(&path, &model(Dtype::F32, 0.0), &[("format", "pt")], None).unwrap();
        path
    }
    /// Writes raw bytes to `name`.
    fn raw(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn model(dtype: Dtype, shift: f64) -> Vec<Tensor> {
    vec![
        Tensor::new(
            "a.weight",
            dtype,
            &[2, 4],
            vec![1.0 + shift, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 5.0],
        ),
        Tensor::new("a.bias", dtype, &[2], vec![0.5, -0.5]),
        Tensor::new("steps", Dtype::I64, &[], vec![7.0]),
    ]
}

/// A safetensors file with header `json` and `data` zero bytes after it.
fn file(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// Asserts the rejection contract: exit 2, one stderr line naming `names`
/// (file paths, tensor names) and the `problem`, an empty output folder.
#[track_caller]
fn assert_rejected(run: &Run, names: &[&str], problem: &str, out_dir: &Path) {
    assert_eq!(run.code, 2, "exit status\nstderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", run.stderr);
    let line = lines[0];
    assert!(line.starts_with("soup: error: "), "{line}");
    for name in names {
        assert!(line.contains(name), "stderr should name `{name}`: {line}");
    }
    assert!(
        line.contains(problem),
        "stderr should say `{problem}`: {line}"
    );
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "output folder should be empty: {left:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `merge good bad`, `check-mask good bad` and `inspect bad` and checks
/// that each rejects `bad` with `problem`.
#[track_caller]
fn rejected_everywhere(scratch: &Scratch, bad: &Path, problem: &str) {
    let good = scratch.good("good.safetensors");
    let out = scratch.output();
    let merge = soup(["merge", s(&good), s(bad), "-o", s(&out)]);
    assert_rejected(&merge, &[s(bad)], problem, &scratch.out_dir());
    let check = soup(["check-mask", s(&good), s(bad)]);
    assert_rejected(&check, &[s(bad)], problem, &scratch.out_dir());
    let inspect = soup(["inspect", s(bad)]);
    assert_rejected(&inspect, &[s(bad)], problem, &scratch.out_dir());
}

fn write(scratch: &Scratch, name: &str, tensors: &[Tensor]) -> PathBuf {
    let path = scratch.path(name);
    write_checkpoint(&path, tensors, &[("format", "pt")], None).unwrap();
    path
}

/// Writes a two-shard checkpoint folder `name` and returns it.
fn sharded(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path(name);
    write_checkpoint(&dir, &model(Dtype::F32, 0.0), &[("format", "pt")], Some(16)).unwrap();
    dir
}

mod candidates;
mod one_file;
mod output;
mod shards;
