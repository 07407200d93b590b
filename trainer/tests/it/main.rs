//! The trainer's integration tests: the command line, the library API the
//! sparse-model-soup loop builds on, and agreement with PyTorch.

mod cli;
mod library;
mod python;
mod robust;
#[path = "../support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};

/// The arguments of `trainer eval` of the `cnn` checkpoint `ck` on `data`
/// on the CPU, followed by `extra`.
pub fn eval_cnn_args<'a>(ck: &'a Path, data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "eval",
        "--model",
        "cnn",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    args
}

/// Writes a small MNIST-style IDX folder (raw files) whose classes are easy
/// to tell apart: class k lights up a bar at row 2k+1, plus noise.
pub fn write_idx_folder(dir: &Path, train: usize, test: usize, side: usize) {
    let mut seed = 12345u64;
    let mut pixel = move |class: usize, y: usize, _x: usize| {
        if y == 2 * class + 1 {
            return 200;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 59) as u8 * 8
    };
    support::write_idx(dir, "train", train, side, &mut pixel);
    support::write_idx(dir, "t10k", test, side, &mut pixel);
}

/// Writes a CIFAR-10 binary folder with `per_file` records per file.
pub fn write_cifar10_folder(dir: &Path, per_file: usize) {
    let names = [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ];
    for (k, name) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            bytes.push((i % 10) as u8);
            bytes.extend((0..3072).map(|j| ((j * 7 + i * 13 + k) % 256) as u8));
        }
        fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// The Python interpreter of the project's environment, or `None` (with a
/// notice) when `SOUP_PYTHON` is unset; a failure instead when
/// `SOUP_REQUIRE_PYTHON=1`.
pub fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SOUP_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("SOUP_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "{test}: SOUP_PYTHON is unset but SOUP_REQUIRE_PYTHON=1; run `eval \"$(scripts/setup.sh --full)\"`"
            );
            eprintln!("skipping {test}: SOUP_PYTHON is unset (scripts/setup.sh --full sets it)");
            None
        }
    }
}

/// Runs a script of trainer/python with the project's Python; panics with
/// its output when it fails.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = std::process::Command::new(python)
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} {args:?} failed:\n{text}");
    text
}
