//! End-to-end tests of N:M checks: `soup check-mask --nm` (with
//! `--kernel`), `soup inspect --nm` and `soup merge --nm`, on small
//! checkpoints pruned to 2:4 here by the definition (in every group of 4
//! consecutive weights along the input dimension, the 2 largest by
//! magnitude stay).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fixtures::{perturb, write_checkpoint, Rng, Tensor};
use soup_core::{Dtype, Inspection, NmCheckReport};
use soup_tests::{files_in, soup};

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    (0..shape.len())
        .map(|d| shape[d + 1..].iter().product())
        .collect()
}

/// Prunes `t` to 2:4 along dimension `dim` (1 for [out, in, k...], 0 for a
/// transposed [in, out]): in each group the 2 smallest magnitudes go.
fn prune_2_4(t: &mut Tensor, dim: usize) {
    let st = strides(&t.shape);
    for start in 0..t.values.len() {
        let index: Vec<usize> = st
            .iter()
            .zip(&t.shape)
            .map(|(s, d)| start / s % d)
            .collect();
        if !index[dim].is_multiple_of(4) {
            continue;
        }
        let mut group: Vec<usize> = (0..4).map(|j| start + j * st[dim]).collect();
        group.sort_by(|&a, &b| t.values[a].abs().total_cmp(&t.values[b].abs()));
        for &i in &group[..2] {
            t.values[i] = 0.0;
        }
    }
}

/// A model with a linear, a convolution and a GPT-2-style `[in, out]`
/// weight, all 2:4, and a bias.
fn model(rng: &mut Rng) -> Vec<Tensor> {
    let mut normal = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    let mut tensors = vec![
        Tensor::new("fc.weight", Dtype::F32, &[8, 16], normal(128)),
        Tensor::new("conv.weight", Dtype::F32, &[4, 8, 3, 3], normal(288)),
        Tensor::new("attn.c_attn.weight", Dtype::F32, &[16, 4], normal(64)),
        Tensor::new("fc.bias", Dtype::F32, &[8], normal(8)),
    ];
    prune_2_4(&mut tensors[0], 1);
    prune_2_4(&mut tensors[1], 1);
    prune_2_4(&mut tensors[2], 0);
    tensors
}

fn write(dir: &Path, name: &str, tensors: &[Tensor]) -> PathBuf {
    let path = dir.join(name);
    write_checkpoint(&path, tensors, &[("format", "pt")], None).unwrap();
    path
}

fn check_nm(args: &[&str]) -> (i32, NmCheckReport, String) {
    let mut all = vec!["check-mask", "--json", "--nm", "2:4"];
    all.extend_from_slice(args);
    let run = soup(&all);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let report = serde_json::from_str(&run.stdout).expect("check-mask --nm --json");
    (run.code, report, run.stderr)
}

const TRANSPOSED: [&str; 2] = ["--nm-transposed", r"^attn\.c_attn\."];

#[test]
fn check_mask_nm_counts_groups_and_names_the_first_violation() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = model(&mut Rng::new(1));
    let good = write(dir.path(), "good.safetensors", &tensors);
    let mut args = vec![s(&good)];
    args.extend(TRANSPOSED);
    let (code, report, _) = check_nm(&args);
    assert_eq!(code, 0);
    assert!(report.passed);
    let r = &report.checkpoints[0];
    let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc.weight", "conv.weight", "attn.c_attn.weight"]);
    let groups: Vec<u64> = r.tensors.iter().map(|t| t.groups).collect();
    assert_eq!(groups, [32, 72, 16]);
    assert!(r.tensors[2].transposed);

    // Without --nm-transposed the [in, out] tensor is grouped along its
    // rows, where it was not pruned.
    let (code, report, _) = check_nm(&[s(&good)]);
    assert_eq!(code, 1);
    let failing: Vec<&str> = report.checkpoints[0]
        .tensors
        .iter()
        .filter(|t| !t.passed)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(failing, ["attn.c_attn.weight"]);

    // Three non-zeros in group 2 of row 3 of the linear weight, and in the
    // group at output channel 1, input channels 4..8, position (2, 0) of the
    // convolution (and a later one).
    let fc = &mut tensors[0];
    for j in 0..3 {
        fc.values[3 * 16 + 8 + j] = 1.0;
    }
    let conv = &mut tensors[1];
    for c in 4..7 {
        conv.values[72 + c * 9 + 6] = 1.0;
        conv.values[3 * 72 + c * 9] = 1.0;
    }
    let bad = write(dir.path(), "bad.safetensors", &tensors);
    let mut args = vec![s(&good), s(&bad)];
    args.extend(TRANSPOSED);
    let (code, report, _) = check_nm(&args);
    assert_eq!(code, 1);
    assert!(report.checkpoints[0].passed && !report.checkpoints[1].passed);
    let r = &report.checkpoints[1];
    assert_eq!(r.failing, 2);
    let fc = &r.tensors[0];
    assert_eq!((fc.violating, fc.first_violation), (1, Some(3 * 16 + 8)));
    assert_eq!(fc.first_violation_at, Some(vec![3, 8]));
    let conv = &r.tensors[1];
    assert_eq!(conv.violating, 2);
    assert_eq!(conv.first_violation_at, Some(vec![1, 4, 2, 0]));

    // The table names the failing tensors and ends with the verdict.
    let mut table = vec!["check-mask", "--nm", "2:4", s(&bad)];
    table.extend(TRANSPOSED);
    let run = soup(&table);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.contains("FAIL: 1 groups break 2:4"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[1, 4, 2, 0]"), "{}", run.stdout);
    assert!(
        run.stdout.contains("verdict: 2 tensors FAIL"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_mask_nm_fails_ragged_tensors_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = model(&mut Rng::new(2));
    tensors.push(Tensor::new(
        "conv1.weight",
        Dtype::F32,
        &[4, 3, 3, 3],
        vec![1.0; 108],
    ));
    let path = write(dir.path(), "m.safetensors", &tensors);
    let mut args = vec![s(&path)];
    args.extend(TRANSPOSED);
    let (code, report, _) = check_nm(&args);
    assert_eq!(code, 1);
    let ragged = report.checkpoints[0].tensors.last().unwrap();
    assert_eq!(ragged.name, "conv1.weight");
    assert!(!ragged.passed);
    let why = ragged.shape_problem.as_deref().unwrap();
    assert!(
        why.contains("length 3") && why.contains("multiple of 4"),
        "{why}"
    );
    args.extend(["--exclude", r"^conv1\."]);
    assert_eq!(check_nm(&args).0, 0);

    // Nothing selected, a missing file, a bad pattern: errors (exit 2).
    let run = soup([
        "check-mask",
        "--nm",
        "2:4",
        "--include",
        "nothing",
        s(&path),
    ]);
    fails(&run, "no tensors selected");
    let missing = dir.path().join("missing.safetensors");
    let run = soup(["check-mask", "--nm", "2:4", s(&missing)]);
    fails(&run, "missing.safetensors");
    let run = soup(["check-mask", "--nm", "4:4", s(&path)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = soup(["check-mask", "--kernel", "cutlass", s(&path)]);
    assert_eq!(run.code, 2, "--kernel needs --nm: {}", run.stderr);
}

#[test]
fn check_mask_kernel_applies_the_shape_and_dtype_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let mut normal = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    let mut tensors = vec![
        Tensor::new("big.weight", Dtype::F16, &[32, 64], normal(2048)),
        Tensor::new("small.weight", Dtype::F16, &[16, 16], normal(256)),
        Tensor::new("f32.weight", Dtype::F32, &[32, 32], normal(1024)),
    ];
    for t in &mut tensors {
        prune_2_4(t, 1);
    }
    let path = write(dir.path(), "k.safetensors", &tensors);
    let verdicts = |kernel: &str| -> Vec<bool> {
        let (_, report, _) = check_nm(&["--kernel", kernel, s(&path)]);
        assert_eq!(report.kernel.unwrap().name(), kernel);
        report.checkpoints[0]
            .tensors
            .iter()
            .map(|t| t.kernel.as_ref().unwrap().passed)
            .collect()
    };
    // CUTLASS: F16 needs rows and columns multiples of 32 and 64; F32 is
    // stored 1:2, which a 2:4 check does not show.
    assert_eq!(verdicts("cutlass"), [true, false, false]);
    // cuSPARSELt: F16 multiples of 16; no F32.
    assert_eq!(verdicts("cusparselt"), [true, true, false]);
    let (code, report, _) = check_nm(&["--kernel", "cutlass", s(&path)]);
    assert_eq!(code, 1);
    let problems = &report.checkpoints[0].tensors[1]
        .kernel
        .as_ref()
        .unwrap()
        .problems;
    assert!(
        problems.iter().any(|p| p.contains("rows 16")),
        "{problems:?}"
    );
}

#[test]
fn merge_nm_keeps_a_shared_mask_and_refuses_a_union_that_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4);
    let parent = model(&mut rng);
    let a = write(
        dir.path(),
        "a.safetensors",
        &perturb(&parent, &mut rng, 0.1),
    );
    let b = write(
        dir.path(),
        "b.safetensors",
        &perturb(&parent, &mut rng, 0.1),
    );
    let soup_path = dir.path().join("soup.safetensors");
    let mut args = vec!["merge", s(&a), s(&b), "-o", s(&soup_path), "--nm", "2:4"];
    args.extend(TRANSPOSED);
    ok(&soup(&args));
    let mut check = vec![s(&soup_path)];
    check.extend(TRANSPOSED);
    assert_eq!(
        check_nm(&check).0,
        0,
        "the soup of a shared 2:4 mask is 2:4"
    );

    // Another 2:4 mask: the union of the two has groups of 3 or 4.
    let other = write(dir.path(), "other.safetensors", &model(&mut Rng::new(5)));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let union = out.join("union.safetensors");
    let mut args = vec!["merge", s(&a), s(&other), "-o", s(&union)];
    args.extend(["--mask-policy", "union", "--nm", "2:4"]);
    args.extend(TRANSPOSED);
    let run = soup(&args);
    fails(
        &run,
        "tensor `fc.weight` of the result breaks the 2:4 pattern",
    );
    assert!(run.stderr.contains("union.safetensors"), "{}", run.stderr);
    assert!(
        files_in(&out).is_empty(),
        "nothing written: {:?}",
        files_in(&out)
    );
    // The same merge without --nm writes a result that check-mask fails.
    ok(&soup(&args[..args.len() - 4]));
    let mut check = vec![s(&union)];
    check.extend(TRANSPOSED);
    assert_eq!(check_nm(&check).0, 1);
}

#[test]
fn inspect_nm_says_per_tensor_whether_it_is_2_4() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = model(&mut Rng::new(6));
    for j in 0..3 {
        tensors[0].values[j] = 1.0;
    }
    let path = write(dir.path(), "m.safetensors", &tensors);
    let run = soup(["inspect", "--json", "--nm", "2:4", s(&path)]);
    ok(&run);
    let report: Inspection = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report.nm.map(|p| p.to_string()).as_deref(), Some("2:4"));
    let nm: Vec<(&str, Option<bool>)> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.nm))
        .collect();
    assert_eq!(
        nm,
        [
            ("fc.weight", Some(false)),
            ("conv.weight", Some(true)),
            ("attn.c_attn.weight", Some(false)),
            ("fc.bias", None)
        ]
    );
    let mut args = vec!["inspect", "--nm", "2:4", s(&path)];
    args.extend(TRANSPOSED);
    let run = soup(&args);
    ok(&run);
    assert!(run.stdout.contains("N:M"), "{}", run.stdout);
    assert!(
        run.stdout.contains("2:4: 2 of 3 prunable tensors"),
        "{}",
        run.stdout
    );
    // Without --nm the report has no N:M fields.
    let run = soup(["inspect", "--json", s(&path)]);
    assert!(!run.stdout.contains("\"nm\""), "{}", run.stdout);
    let run = soup(["inspect", "--nm", "2:4", "--headers-only", s(&path)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}
