//! Several candidates that do not fit together.

use super::*;

/// Runs merge and check-mask over `a` and `b` and expects `problem`,
/// naming both files.
#[track_caller]
fn candidates_rejected(scratch: &Scratch, a: &Path, b: &Path, problem: &str) {
    let out = scratch.output();
    let merge = soup(["merge", s(a), s(b), "-o", s(&out)]);
    assert_rejected(&merge, &[s(a), s(b)], problem, &scratch.out_dir());
    let check = soup(["check-mask", s(a), s(b)]);
    assert_rejected(&check, &[s(a), s(b)], problem, &scratch.out_dir());
}

#[test]
fn candidates_with_different_names_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut renamed = model(Dtype::F32, 0.0);
    renamed[1].name = "a.beta".into();
    let b = write(&scratch, "b.safetensors", &renamed);
    candidates_rejected(&scratch, &a, &b, "tensor `a.beta` is in");
    // A tensor missing from the second input is named too.
    let mut fewer = model(Dtype::F32, 0.0);
    fewer.remove(1);
    let c = write(&scratch, "c.safetensors", &fewer);
    candidates_rejected(&scratch, &a, &c, "tensor `a.bias` is in");
}

#[test]
fn candidates_with_different_shapes_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut reshaped = model(Dtype::F32, 0.0);
    reshaped[0].shape = vec![4, 2];
    let b = write(&scratch, "b.safetensors", &reshaped);
    candidates_rejected(&scratch, &a, &b, "tensor `a.weight` has shape [2, 4]");
}

#[test]
fn candidates_with_different_dtypes_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let b = write(&scratch, "b.safetensors", &model(Dtype::BF16, 0.0));
    candidates_rejected(&scratch, &a, &b, "tensor `a.weight` has dtype F32");
}

#[test]
fn differing_int_tensors_are_rejected_by_default() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut other = model(Dtype::F32, 0.0);
    other[2].values = vec![8.0];
    let b = write(&scratch, "b.safetensors", &other);
    let run = soup(["merge", s(&a), s(&b), "-o", s(&scratch.output())]);
    assert_rejected(
        &run,
        &[s(&a), s(&b), "`steps`"],
        "never averaged",
        &scratch.out_dir(),
    );
}

#[test]
fn differing_masks_are_refused_by_default_and_leave_no_output() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut other = model(Dtype::F32, 0.0);
    other[0].values[1] = 9.0;
    let b = write(&scratch, "b.safetensors", &other);
    let run = soup(["merge", s(&a), s(&b), "-o", s(&scratch.output())]);
    assert_rejected(
        &run,
        &[s(&a), s(&b), "`a.weight`"],
        "masks differ",
        &scratch.out_dir(),
    );
    // Also when the output is a sharded folder.
    let run = soup([
        "merge",
        s(&a),
        s(&b),
        "-o",
        s(&scratch.out_dir().join("sharded")),
        "--shard-size",
        "16",
    ]);
    assert_rejected(&run, &[s(&a), s(&b)], "masks differ", &scratch.out_dir());
}
