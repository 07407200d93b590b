//! Helpers shared by the end-to-end tests of the `soup` commands
//! (cli_merge, cli_check_mask, cli_inspect): running soup and checking its
//! exit, writing candidate checkpoints, and comparing a written checkpoint
//! with an f64 reference mean.

// Each test binary uses only some of them.
#![allow(dead_code)]

mod scratch;
#[allow(unused_imports)] // the cli_* tests use none of them
pub use scratch::*;

use std::path::{Path, PathBuf};

use fixtures::{perturb, prune, small_model, write_checkpoint, Rng};
use soup_core::Accumulator;
use soup_core::{Checkpoint, Dtype, FloatType};
use soup_tests::Run;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
pub fn ok(run: &Run) -> &Run {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run
}

#[track_caller]
pub fn fails(run: &Run, problem: &str) {
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(problem),
        "want `{problem}`: {}",
        run.stderr
    );
}

/// `m` candidates of a small pruned model sharing the parent's mask, in
/// `dtype`, each with a `format` key and a `run` key of its own. Returns
/// the parent and the candidates.
pub fn candidates(dir: &Path, m: usize, dtype: Dtype, seed: u64) -> (PathBuf, Vec<PathBuf>) {
    let mut rng = Rng::new(seed);
    let mut parent = small_model(&mut rng, dtype);
    prune(&mut parent, 0.5);
    let parent_path = dir.join("parent.safetensors");
    write_checkpoint(&parent_path, &parent, &[("format", "pt")], None).unwrap();
    let paths = (0..m)
        .map(|k| {
            let path = dir.join(format!("candidate-{k}.safetensors"));
            let run = k.to_string();
            let tensors = perturb(&parent, &mut rng, 0.05);
            write_checkpoint(&path, &tensors, &[("format", "pt"), ("run", &run)], None).unwrap();
            path
        })
        .collect();
    (parent_path, paths)
}

/// Every tensor of a checkpoint: name, dtype and values as f64 (integers
/// widened).
pub fn read(path: &Path) -> Vec<(String, Dtype, Vec<f64>)> {
    let ck = Checkpoint::open(path).unwrap();
    let mut out: Vec<_> = ck
        .tensors()
        .iter()
        .map(|t| {
            let bytes = ck.data(t);
            let values = match t.float_type() {
                Some(ft) => {
                    let mut v = Vec::new();
                    f64::decode(bytes, ft, &mut v);
                    v
                }
                None => match t.dtype {
                    Dtype::I64 => bytes
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    Dtype::BOOL | Dtype::U8 => bytes.iter().map(|&b| b as f64).collect(),
                    other => panic!("test reads no {other:?}"),
                },
            };
            (t.name.clone(), t.dtype, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The f64 weighted mean of the inputs' float tensors (integers: the
/// first input's).
pub fn reference_mean(inputs: &[PathBuf], weights: &[f64]) -> Vec<(String, Dtype, Vec<f64>)> {
    let total: f64 = weights.iter().sum();
    let all: Vec<_> = inputs.iter().map(|p| read(p)).collect();
    let mut out = all[0].clone();
    for (t, (_, dtype, values)) in out.iter_mut().enumerate() {
        if FloatType::of(*dtype).is_none() {
            continue;
        }
        for (i, v) in values.iter_mut().enumerate() {
            *v = all
                .iter()
                .zip(weights)
                .map(|(ck, w)| ck[t].2[i] * w)
                .sum::<f64>()
                / total;
        }
    }
    out
}

/// Relative tolerance of values written in `dtype`.
pub fn tolerance(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F64 => 1e-12,
        Dtype::F32 => 1e-6,
        Dtype::F16 => 1e-3,
        Dtype::BF16 => 8e-3,
        _ => 0.0,
    }
}

#[track_caller]
pub fn assert_close(got: &[(String, Dtype, Vec<f64>)], want: &[(String, Dtype, Vec<f64>)]) {
    assert_eq!(got.len(), want.len());
    for ((name, dtype, g), (wname, _, w)) in got.iter().zip(want) {
        assert_eq!(name, wname);
        assert_eq!(g.len(), w.len(), "{name}");
        let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= tolerance(*dtype) * scale,
                "{name}[{i}] ({dtype:?}): got {a}, want {b}"
            );
            // The reference mean is zero exactly where every input is.
            assert_eq!(*a == 0.0, *b == 0.0, "{name}[{i}]: mask changed");
        }
    }
}
