//! Tests of merging: methods, weights, mask and integer policies.

use super::*;
use crate::output::write_test_checkpoint;
use safetensors::Dtype;

/// A checkpoint with an F32 tensor `w` and an I64 tensor `steps`.
fn write(path: &Path, w: &[f32], steps: i64) -> Checkpoint {
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_test_checkpoint(
        path,
        &[
            ("w".into(), Dtype::F32, vec![w.len()], bytes),
            (
                "steps".into(),
                Dtype::I64,
                vec![1],
                steps.to_le_bytes().to_vec(),
            ),
        ],
    );
    Checkpoint::open(path).unwrap()
}

/// Refusals are variants a caller can match, naming what differs.
#[test]
fn refusals_are_structured() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir.path().join("a.safetensors"), &[1.0, 0.0, 2.0], 5);
    let b = write(&dir.path().join("b.safetensors"), &[1.0, 3.0, 0.0], 5);
    let c = write(&dir.path().join("c.safetensors"), &[2.0, 0.0, 4.0], 6);
    let target = dir.path().join("out.safetensors");
    let control = Control::default();
    let e = merge(&[a, b], &target, &MergeOptions::default(), &control).unwrap_err();
    assert!(
        matches!(&e, Error::MasksDiffer { tensor, positions: 2, .. } if tensor == "w"),
        "{e}"
    );
    let a = Checkpoint::open(dir.path().join("a.safetensors")).unwrap();
    let e = merge(&[a, c], &target, &MergeOptions::default(), &control).unwrap_err();
    assert!(
        matches!(&e, Error::IntegersDiffer { tensor, .. } if tensor == "steps"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("--"),
        "no CLI flags in library errors: {e}"
    );
    assert!(!target.exists());
    // A weighted method that does not fit the inputs is refused before
    // anything is written.
    let a = Checkpoint::open(dir.path().join("a.safetensors")).unwrap();
    let options = MergeOptions {
        method: MergeMethod::weighted(vec![1.0]),
        ..MergeOptions::default()
    };
    let e = merge(&[a], &target, &options, &control);
    assert!(e.is_ok(), "one input, one weight");
    let a = Checkpoint::open(dir.path().join("a.safetensors")).unwrap();
    let c = Checkpoint::open(dir.path().join("c.safetensors")).unwrap();
    let e = merge(
        &[a, c],
        &dir.path().join("x.safetensors"),
        &options,
        &control,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}
