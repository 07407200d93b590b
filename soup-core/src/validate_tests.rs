//! The checks that the option structs and operations make before any
//! work, shared by every front end: each is an error of its own kind, with
//! the valid choices listed from the core's enums.

use std::path::Path;

use crate::output::write_test_checkpoint;
use crate::{
    check_masks, distance, Checkpoint, Control, Error, GreedyOptions, MaskPolicy, MergeOptions,
    Selection, Vocabulary,
};

fn model(path: &Path) -> Checkpoint {
    let data: Vec<u8> = [1f32, 0.0, 2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let t = vec![("w".to_string(), safetensors::Dtype::F32, vec![3], data)];
    write_test_checkpoint(path, &t);
    Checkpoint::open(path).unwrap()
}

#[test]
fn mask_policies_that_do_not_fit_the_merge_are_refused_with_those_that_do() {
    for &policy in MaskPolicy::ALL {
        for base in [false, true] {
            let options = MergeOptions {
                mask_policy: policy,
                method: if base {
                    crate::MergeMethod::named("task-arithmetic", Default::default())
                } else {
                    crate::MergeMethod::uniform()
                },
                ..MergeOptions::default()
            };
            let result = options.validate(2, base);
            if policy.applies(base) {
                assert!(result.is_ok(), "{policy} base={base}: {result:?}");
                continue;
            }
            let e = result.unwrap_err();
            assert!(matches!(e, Error::MaskPolicyMismatch { .. }), "{e:?}");
            let text = e.to_string();
            assert!(text.contains(&format!("`{policy}`")), "{text}");
            for p in MaskPolicy::ALL.iter().filter(|p| p.applies(base)) {
                assert!(text.contains(p.name()), "{text} lacks {p}");
            }
        }
    }
    assert_eq!(
        MaskPolicy::Base.check(false).unwrap_err().to_string(),
        "the mask policy `base` needs a base model: use refuse, union, intersect or none"
    );
}

#[test]
fn a_mask_check_of_one_checkpoint_without_a_reference_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(&dir.path().join("a.safetensors"));
    let e = check_masks(&[a], None, &Selection::default(), &Control::default()).unwrap_err();
    assert!(e.to_string().contains("needs two checkpoints"), "{e}");
}

#[test]
fn nothing_selected_is_an_error_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(&dir.path().join("a.safetensors"));
    let b = model(&dir.path().join("b.safetensors"));
    let none = Selection::new(&["^nothing$".to_string()], &[]).unwrap();
    let inputs = [a, b];
    let e = check_masks(&inputs, None, &none, &Control::default()).unwrap_err();
    assert!(matches!(e, Error::NothingSelected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("a.safetensors: no float tensors selected for comparison"),
        "{e}"
    );
    let e = distance(&inputs, &none, &Control::default()).unwrap_err();
    assert!(matches!(e, Error::NothingSelected { .. }), "{e:?}");
}

#[test]
fn greedy_scores_must_match_the_candidates() {
    let options = GreedyOptions {
        scores: Some(vec![1.0, 2.0]),
        ..GreedyOptions::default()
    };
    assert_eq!(
        options.validate(3).unwrap_err().to_string(),
        "2 scores given for 3 candidates"
    );
    assert!(options.validate(2).is_ok());
}

#[test]
fn float_types_parse_in_any_case_and_others_are_listed() {
    assert_eq!(
        "bf16".parse::<crate::FloatType>().unwrap(),
        crate::FloatType::BF16
    );
    let e = "I32".parse::<crate::FloatType>().unwrap_err().to_string();
    assert_eq!(e, "`I32` is not a float type (F64, F32, F16 or BF16)");
}
