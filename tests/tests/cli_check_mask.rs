//! End-to-end tests of `soup check-mask`, and of merge and check-mask giving
//! the same bytes whatever the budget and thread count: the built binary on
//! small checkpoints generated into temporary folders.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fixtures::{perturb, prune, write_checkpoint, Rng, Tensor};
use soup_core::{Dtype, MaskReport};
use soup_tests::{fixture, soup};

fn check_mask_json(args: &[&str]) -> (i32, MaskReport) {
    let mut all = vec!["check-mask", "--json"];
    all.extend_from_slice(args);
    let run = soup(&all);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let report = serde_json::from_str(&run.stdout).expect("check-mask --json is a MaskReport");
    (run.code, report)
}

#[test]
fn check_mask_exit_status_says_whether_masks_agree() {
    let c0 = fixture("candidate-0.safetensors");
    let c1 = fixture("candidate-1.safetensors");
    let c2 = fixture("candidate-2.safetensors");
    let other = fixture("other-mask.safetensors");
    let (code, report) = check_mask_json(&[s(&c0), s(&c1), s(&c2)]);
    assert_eq!(code, 0);
    assert!(report.identical && report.reference_is_input);
    assert_eq!(report.reference, c0);
    assert_eq!(report.inputs, vec![c0.clone(), c1.clone(), c2.clone()]);
    assert_eq!(report.compared, 9, "float tensors only");
    for t in &report.tensors {
        assert_eq!(t.differing, 0);
        assert_eq!(t.fingerprints.len(), 3);
        assert!(t.fingerprints.iter().all(|f| f == &t.reference_fingerprint));
    }
    let conv = &report.tensors[0];
    assert_eq!(
        (conv.name.as_str(), conv.numel, conv.zeros),
        ("conv1.weight", 72, 36)
    );
    assert_eq!(report.sparsity_of_pruned, 0.5);

    let (code, report) = check_mask_json(&[s(&c0), s(&other), s(&c1)]);
    assert_eq!(code, 1);
    assert!(!report.identical);
    let conv = &report.tensors[0];
    assert!(conv.differing > 0);
    assert_eq!(conv.differing_per_input[0], 0);
    assert_eq!(conv.differing_per_input[2], 0);
    assert_eq!(conv.differing_per_input[1], conv.differing);
    assert_ne!(conv.fingerprints[1], conv.reference_fingerprint);

    // The table for people ends with the verdict.
    let run = soup(["check-mask", s(&c0), s(&other)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("verdict: masks DIFFER"),
        "{}",
        run.stdout
    );
    let run = soup(["check-mask", s(&c0), s(&c1)]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("verdict: masks identical"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_mask_against_a_reference_parent() {
    let parent = fixture("parent.safetensors");
    let c0 = fixture("candidate-0.safetensors");
    let c1 = fixture("candidate-1-sharded");
    let other = fixture("other-mask.safetensors");
    let (code, report) = check_mask_json(&["--reference", s(&parent), s(&c0), s(&c1)]);
    assert_eq!(code, 0);
    assert!(!report.reference_is_input);
    assert_eq!(report.reference, parent);
    assert_eq!(report.inputs.len(), 2);
    assert!(report
        .tensors
        .iter()
        .all(|t| t.differing_per_input.len() == 2));
    // A single candidate may be checked against its parent.
    let (code, report) = check_mask_json(&["--reference", s(&parent), s(&other)]);
    assert_eq!(code, 1);
    assert_eq!(report.inputs, vec![other.clone()]);
    // Without a reference, one checkpoint is not enough.
    fails(&soup(["check-mask", s(&c0)]), "needs two checkpoints");
}

#[test]
fn check_mask_include_and_exclude_pick_tensors() {
    let c0 = fixture("candidate-0.safetensors");
    let other = fixture("other-mask.safetensors");
    let (_, report) = check_mask_json(&[s(&c0), s(&other), "--include", r"\.weight$"]);
    let names: Vec<_> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["conv1.weight", "bn1.weight", "conv2.weight", "fc.weight"]
    );
    let (_, report) = check_mask_json(&[
        s(&c0),
        s(&other),
        "--include",
        r"\.weight$",
        "--exclude",
        "^bn",
        "--exclude",
        "^fc",
    ]);
    let names: Vec<_> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conv1.weight", "conv2.weight"]);
    // Unpruned tensors: no mask differences, exit 0 although the pruned
    // ones differ.
    let (code, report) = check_mask_json(&[s(&c0), s(&other), "--include", "^bn1"]);
    assert_eq!(code, 0);
    assert!(report.identical);
    assert_eq!(report.sparsity_of_pruned, 0.0);
    fails(
        &soup([
            "check-mask",
            s(&c0),
            s(&other),
            "--include",
            "nothing-matches",
        ]),
        "no float tensors selected",
    );
    fails(
        &soup(["check-mask", s(&c0), s(&other), "--include", "("]),
        "invalid regex `(`",
    );
}

#[test]
fn check_mask_counts_negative_zero_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    let t = |v: Vec<f64>| vec![Tensor::new("w", Dtype::F16, &[4], v)];
    write_checkpoint(&a, &t(vec![1.0, 0.0, -0.0, 2.0]), &[], None).unwrap();
    write_checkpoint(&b, &t(vec![3.0, -0.0, 0.0, 1.0]), &[], None).unwrap();
    let (code, report) = check_mask_json(&[s(&a), s(&b)]);
    assert_eq!(code, 0);
    assert_eq!(report.tensors[0].zeros, 2);
}

/// A checkpoint whose tensors cross piece and window boundaries at odd
/// places, in every float type and with integer tensors.
fn awkward(dir: &Path, k: usize, parent: &[Tensor]) -> PathBuf {
    let mut rng = Rng::new(100 + k as u64);
    let tensors = perturb(parent, &mut rng, 0.1);
    let path = dir.join(format!("awkward-{k}.safetensors"));
    write_checkpoint(&path, &tensors, &[("format", "pt")], None).unwrap();
    path
}

#[test]
fn merge_and_check_mask_give_identical_bytes_for_every_budget_and_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(99);
    let mut parent = Vec::new();
    for (i, (dtype, n)) in [
        (Dtype::F32, 40_001usize),
        (Dtype::F16, 9_999),
        (Dtype::BF16, 33),
        (Dtype::F64, 12_345),
        (Dtype::F32, 0),
        (Dtype::F32, 1),
        (Dtype::F32, 70_000),
    ]
    .into_iter()
    .enumerate()
    {
        let values = (0..n).map(|_| rng.normal()).collect();
        parent.push(Tensor::new(&format!("t{i}.weight"), dtype, &[n], values));
        parent.push(Tensor::new(
            &format!("t{i}.steps"),
            Dtype::I64,
            &[3],
            vec![1.0, 2.0, i as f64],
        ));
    }
    for t in parent.iter_mut() {
        t.shape = if t.values.len() > 1 {
            vec![1, t.values.len()]
        } else {
            t.shape.clone()
        };
    }
    prune(&mut parent, 0.6);
    let inputs: Vec<PathBuf> = (0..3).map(|k| awkward(dir.path(), k, &parent)).collect();
    let args = |out: &Path| -> Vec<String> {
        vec![
            "merge".into(),
            s(&inputs[0]).into(),
            s(&inputs[1]).into(),
            s(&inputs[2]).into(),
            "-o".into(),
            s(out).into(),
        ]
    };
    let mut reference: Option<(Vec<u8>, String)> = None;
    for budget in ["64KiB", "100KB", "1MiB", "1GiB"] {
        for threads in ["1", "2", "3"] {
            let out = dir
                .path()
                .join(format!("soup-{budget}-{threads}.safetensors"));
            let mut a = args(&out);
            a.extend([
                "--budget".into(),
                budget.into(),
                "--threads".into(),
                threads.into(),
            ]);
            ok(&soup(&a));
            let bytes = std::fs::read(&out).unwrap();
            let mut c = vec!["check-mask".to_string(), "--json".into()];
            c.extend(inputs.iter().map(|p| s(p).to_string()));
            c.extend([
                "--budget".into(),
                budget.into(),
                "--threads".into(),
                threads.into(),
            ]);
            let check = soup(&c);
            ok(&check);
            // Paths differ per run only in the output name, which the
            // check-mask report does not contain.
            match &reference {
                None => reference = Some((bytes, check.stdout)),
                Some((want, want_check)) => {
                    assert!(
                        bytes == *want,
                        "merge output differs at --budget {budget} --threads {threads}"
                    );
                    assert_eq!(
                        &check.stdout, want_check,
                        "check-mask at --budget {budget} --threads {threads}"
                    );
                }
            }
        }
    }
    // And the soup is the mean.
    let (bytes, _) = reference.unwrap();
    let out = dir.path().join("soup.safetensors");
    std::fs::write(&out, bytes).unwrap();
    assert_close(&read(&out), &reference_mean(&inputs, &[1.0; 3]));
}
