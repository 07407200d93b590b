//! Tests of the task-vector kernels on hand-computed blocks, the pre-pass
//! selection, and merges with a base.

use super::method::{Block, KernelAcc};
use super::*;
use crate::output::write_test_checkpoint;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `method` on one F32 block: `base`, the candidates, starting at
/// element `start`, with per-candidate `thresholds`.
fn run(
    method: &MergeMethod,
    base: &[f32],
    cands: &[&[f32]],
    start: usize,
    thr: &[f32],
) -> Vec<f32> {
    let built = method.build(cands.len(), true).unwrap();
    let base = f32_bytes(base);
    let cands: Vec<Vec<u8>> = cands.iter().map(|c| f32_bytes(c)).collect();
    let refs: Vec<&[u8]> = cands.iter().map(|c| &c[..]).collect();
    let block = Block {
        in_type: FloatType::F32,
        base: Some(&base),
        candidates: &refs,
        start,
        name_key: dare::name_key("w"),
        thresholds: thr,
    };
    let mut acc = vec![0f32; base.len() / 4];
    f32::combine(&*built.kernel, &block, &mut acc, &mut Vec::new());
    acc
}

fn params(weights: Option<Vec<f64>>, scale: Option<f64>, density: Option<f64>) -> MethodParams {
    MethodParams {
        weights,
        scale,
        density,
        seed: None,
    }
}

#[test]
fn task_arithmetic_adds_scaled_weighted_task_vectors() {
    let m = MergeMethod::named("task-arithmetic", params(Some(vec![1.0, 0.5]), None, None));
    let out = run(
        &m,
        &[1.0, 2.0, 0.0],
        &[&[2.0, 2.0, 1.0], &[1.0, 4.0, -2.0]],
        0,
        &[],
    );
    assert_eq!(out, vec![2.0, 3.0, 0.0]);
    let m = MergeMethod::named("task-arithmetic", params(None, Some(0.5), None));
    let out = run(&m, &[1.0, 2.0], &[&[3.0, 2.0], &[1.0, 0.0]], 0, &[]);
    assert_eq!(out, vec![2.0, 1.0]);
}

#[test]
fn ties_trims_elects_and_takes_the_disjoint_mean() {
    // Task vectors: [+3, -1, +0.5], [+1, +2, -0.5], [-2, -2, +1].
    let base = [0.0f32, 0.0, 0.0];
    let cands: [&[f32]; 3] = [&[3.0, -1.0, 0.5], &[1.0, 2.0, -0.5], &[-2.0, -2.0, 1.0]];
    let m = MergeMethod::named("ties", params(None, None, Some(1.0)));
    // Element 0: sum +2 -> positive: mean(3, 1) = 2. Element 1: sum -1 ->
    // negative: mean(-1, -2) = -1.5. Element 2: sum +1: mean(0.5, 1).
    assert_eq!(run(&m, &base, &cands, 0, &[]), vec![2.0, -1.5, 0.75]);
    // Thresholds 1, 2, 2 trim 0.5 and -0.5, -1... per candidate.
    let out = run(&m, &base, &cands, 0, &[1.0, 2.0, 2.0]);
    // Kept: [3, -1, _], [_, 2, _], [-2, -2, _] -> sums +1, -1, 0.
    assert_eq!(out, vec![3.0, -1.5, 0.0]);
    // Weights enter the election and the divisor.
    let m = MergeMethod::named("ties", params(Some(vec![1.0, 3.0, 1.0]), None, Some(1.0)));
    let out = run(&m, &base, &cands, 0, &[]);
    assert_eq!(out[0], (3.0 + 3.0) / 4.0);
}

#[test]
fn dare_drops_by_element_index_whatever_the_blocks() {
    let n = 4096;
    let base = vec![0f32; n];
    let a: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
    let p = MethodParams {
        density: Some(0.3),
        seed: Some(7),
        ..MethodParams::default()
    };
    let m = MergeMethod::named("dare-linear", p);
    // The pre-pass's rescaling factor arrives as the candidate's statistic.
    let whole = run(&m, &base, &[&a], 0, &[2.5]);
    let kept = whole.iter().filter(|v| **v != 0.0).count();
    assert!(
        (1000..1460).contains(&kept),
        "{kept} of {n} kept at density 0.3"
    );
    for (v, x) in whole.iter().zip(&a) {
        assert!(*v == 0.0 || *v == x * 2.5, "{v} {x}");
    }
    // The same elements in two blocks give the same drop.
    let first = run(&m, &base[..1000], &[&a[..1000]], 0, &[2.5]);
    let second = run(&m, &base[1000..], &[&a[1000..]], 1000, &[2.5]);
    assert_eq!([first, second].concat(), whole);
    // Another seed drops other elements.
    let p = MethodParams {
        density: Some(0.3),
        seed: Some(8),
        ..MethodParams::default()
    };
    assert_ne!(
        run(
            &MergeMethod::named("dare-linear", p),
            &base,
            &[&a],
            0,
            &[2.5]
        ),
        whole
    );
}

#[test]
fn methods_refuse_parameters_they_do_not_take() {
    let e = MergeMethod::named("task-arithmetic", params(None, None, Some(0.5)));
    assert!(e
        .check(2, true)
        .unwrap_err()
        .to_string()
        .contains("takes no density"));
    let e = MergeMethod::named("ties", params(None, None, None));
    assert!(e
        .check(2, true)
        .unwrap_err()
        .to_string()
        .contains("needs a density"));
    let e = MergeMethod::named("ties", params(None, None, Some(1.5)));
    assert!(e.check(2, true).is_err());
    assert!(
        MergeMethod::uniform().check(2, true).is_err(),
        "no base for a mean"
    );
    let e = MergeMethod::named("dare-ties", params(None, None, Some(0.5)));
    assert!(e
        .check(2, false)
        .unwrap_err()
        .to_string()
        .contains("needs a base"));
    assert!(MergeMethod::named("nope", MethodParams::default())
        .check(2, false)
        .is_err());
}

fn write(path: &Path, w: &[f32]) -> Checkpoint {
    let t = vec![(
        "w".to_string(),
        safetensors::Dtype::F32,
        vec![w.len()],
        f32_bytes(w),
    )];
    write_test_checkpoint(path, &t);
    Checkpoint::open(path).unwrap()
}

fn read(path: &Path) -> Vec<f32> {
    let c = Checkpoint::open(path).unwrap();
    let t = c.get("w").unwrap();
    c.data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn ties_with_a_sparse_base_keeps_its_zeros_and_trims_survivors_only() {
    let dir = tempfile::tempdir().unwrap();
    // Base zeros at 0 and 3. Fine-tune a has moved a pruned weight (a mask
    // difference); b keeps the mask.
    let base = write(
        &dir.path().join("base.safetensors"),
        &[0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
    );
    let a = write(
        &dir.path().join("a.safetensors"),
        &[5.0, 1.5, 1.1, 0.0, 0.2, 1.4],
    );
    let b = write(
        &dir.path().join("b.safetensors"),
        &[0.0, 1.2, 0.7, 0.0, 1.0, 2.0],
    );
    let options = MergeOptions {
        method: MergeMethod::named("ties", params(None, None, Some(0.5))),
        mask_policy: MaskPolicy::Base,
        ..MergeOptions::default()
    };
    let out = dir.path().join("out.safetensors");
    let report = merge_with_base(&base, &[a, b], &out, &options, &Control::default()).unwrap();
    // Survivors: 4 elements, so each keeps 2. a: |0.5, 0.1, -0.8, 0.4| keeps
    // 0.5 and -0.8; b: |0.2, -0.3, 0, 1.0| keeps -0.3 and 1.0.
    let got = read(&out);
    let want = [0.0, 1.5, 1.0 - 0.3, 0.0, 1.0 - 0.8, 2.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    assert_eq!(report.mask_differences, vec![("w".to_string(), vec![1, 0])]);
    assert!((report.task_vectors[0].dropped - 5.0).abs() < 1e-9);
    assert_eq!(report.task_vectors[1].dropped, 0.0);
    // Refuse stops at the difference, naming the base as the reference.
    let options = MergeOptions {
        mask_policy: MaskPolicy::Refuse,
        ..options
    };
    let base = Checkpoint::open(dir.path().join("base.safetensors")).unwrap();
    let a = Checkpoint::open(dir.path().join("a.safetensors")).unwrap();
    let out2 = dir.path().join("out2.safetensors");
    let e = merge_with_base(&base, &[a], &out2, &options, &Control::default()).unwrap_err();
    assert!(
        matches!(&e, Error::MasksDiffer { reference, .. } if reference.ends_with("base.safetensors")),
        "{e}"
    );
    assert!(!out2.exists());
}
