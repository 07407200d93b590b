//! Tests of the groupings and criteria against a direct reference: N:M on
//! linear, convolution and transposed weights (every float type, magnitude
//! and Wanda scores, pieces smaller than a unit), Wanda with the global and
//! per-tensor groupings, the float-tensor statistics, and bad requests.

use super::*;
use crate::dtype::{Accumulator, FloatType};
use crate::output::write_test_checkpoint;
use crate::stream::StreamOptions;
use half::{bf16, f16};
use proptest::prelude::*;

/// A test tensor: `dims` = `[outer, channels, inner]` of a weight whose
/// input dimension is `channels`, stored with `shape`.
#[derive(Debug, Clone)]
struct T {
    shape: Vec<usize>,
    dims: [usize; 3],
    transposed: bool,
    dtype: Dtype,
    values: Vec<f64>,
    norms: Vec<f64>,
}

fn encode(v: &[f64], dtype: Dtype) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match dtype {
            Dtype::F64 => x.to_le_bytes().to_vec(),
            Dtype::F32 => (x as f32).to_le_bytes().to_vec(),
            Dtype::F16 => f16::from_f64(x).to_le_bytes().to_vec(),
            Dtype::BF16 => bf16::from_f64(x).to_le_bytes().to_vec(),
            _ => unreachable!(),
        })
        .collect()
}

fn stored(t: &T) -> Vec<f64> {
    let mut back = Vec::new();
    f64::decode(
        &encode(&t.values, t.dtype),
        FloatType::of(t.dtype).unwrap(),
        &mut back,
    );
    back
}

fn name(i: usize, t: &T) -> String {
    if t.transposed {
        format!("h{i}.c_fc.weight")
    } else {
        format!("l{i}.weight")
    }
}

/// The key a criterion gives an element, or -1 for a zero (removed first).
fn key(t: &T, v: f64, idx: usize, wanda: bool) -> f64 {
    if v == 0.0 {
        return -1.0;
    }
    if wanda {
        let [_, c, k] = t.dims;
        v.abs() * t.norms[(idx / k) % c]
    } else {
        v.abs()
    }
}

/// The reference N:M masks: per group, sort (key, index) ascending and
/// remove the first M - N.
fn reference_nm(tensors: &[T], n: usize, m: usize, wanda: bool) -> Vec<Vec<bool>> {
    tensors
        .iter()
        .map(|t| {
            let v = stored(t);
            let mut keep: Vec<bool> = v.iter().map(|x| *x != 0.0).collect();
            let [o, c, k] = t.dims;
            for a in 0..o {
                for g in 0..c / m {
                    for b in 0..k {
                        let mut group: Vec<(f64, usize)> = (0..m)
                            .map(|j| {
                                let idx = (a * c + g * m + j) * k + b;
                                (key(t, v[idx], idx, wanda), idx)
                            })
                            .collect();
                        group.sort_by(|x, y| x.partial_cmp(y).unwrap());
                        for &(_, idx) in &group[..m - n] {
                            keep[idx] = false;
                        }
                    }
                }
            }
            keep
        })
        .collect()
}

/// The reference of a global (or per-tensor) Wanda prune of fraction `s`.
fn reference_cut(tensors: &[T], s: f64, per_tensor: bool) -> Vec<Vec<bool>> {
    let mut keep: Vec<Vec<bool>> = tensors
        .iter()
        .map(|t| stored(t).iter().map(|x| *x != 0.0).collect())
        .collect();
    let groups: Vec<Vec<usize>> = if per_tensor {
        (0..tensors.len()).map(|i| vec![i]).collect()
    } else {
        vec![(0..tensors.len()).collect()]
    };
    for members in groups {
        let mut all: Vec<(f64, usize, usize)> = Vec::new();
        for &ti in &members {
            for (i, v) in stored(&tensors[ti]).iter().enumerate() {
                all.push((key(&tensors[ti], *v, i, true), ti, i));
            }
        }
        all.sort_by(|x, y| x.partial_cmp(y).unwrap());
        for &(_, ti, i) in &all[..removal_count(s, all.len() as u64) as usize] {
            keep[ti][i] = false;
        }
    }
    keep
}

fn tensor_strategy(m: usize) -> impl Strategy<Value = T> {
    let dtype = prop_oneof![
        Just(Dtype::F32),
        Just(Dtype::F16),
        Just(Dtype::BF16),
        Just(Dtype::F64)
    ];
    // 0: linear [o, c], 1: conv [o, c, kh, kw], 2: transposed [c, o].
    (0usize..3, 1usize..4, 1usize..4, 1usize..4, 1usize..4, dtype).prop_flat_map(
        move |(kind, o, groups, kh, kw, dtype)| {
            let c = groups * m;
            let (shape, dims) = match kind {
                0 => (vec![o, c], [o, c, 1]),
                1 => (vec![o, c, kh, kw], [o, c, kh * kw]),
                _ => (vec![c, o + kh], [1, c, o + kh]),
            };
            let numel = dims.iter().product::<usize>();
            let value = prop_oneof![
                Just(0.0),
                (-4i32..=4).prop_map(|v| v as f64 * 0.25),
                -2.0f64..2.0,
            ];
            let norm = prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(3.0)];
            (
                prop::collection::vec(value, numel),
                prop::collection::vec(norm, c),
            )
                .prop_map(move |(values, norms)| T {
                    shape: shape.clone(),
                    dims,
                    transposed: kind == 2,
                    dtype,
                    values,
                    norms,
                })
        },
    )
}

fn files(dir: &Path, tensors: &[T]) -> (PathBuf, PathBuf) {
    let mut weights: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                name(i, t),
                t.dtype,
                t.shape.clone(),
                encode(&t.values, t.dtype),
            )
        })
        .collect();
    weights.push((
        "b.bias".into(),
        Dtype::F32,
        vec![2],
        encode(&[0.5, 0.0], Dtype::F32),
    ));
    let input = dir.join("in.safetensors");
    write_test_checkpoint(&input, &weights);
    let norms: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = t.norms.len();
            (
                name(i, t),
                Dtype::F32,
                vec![c],
                encode(&t.norms, Dtype::F32),
            )
        })
        .collect();
    let scores = dir.join("norms.safetensors");
    write_test_checkpoint(&scores, &norms);
    (input, scores)
}

fn views(tensors: &[T]) -> Vec<TensorView<'static>> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = FloatType::of(t.dtype).unwrap();
            TensorView::from_bytes(name(i, t), &t.shape, ty, encode(&t.values, t.dtype)).unwrap()
        })
        .collect()
}

fn norm_views(tensors: &[T]) -> Vec<TensorView<'static>> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let bytes = encode(&t.norms, Dtype::F64);
            TensorView::from_bytes(name(i, t), &[t.norms.len()], FloatType::F64, bytes).unwrap()
        })
        .collect()
}

/// Runs both front ends; asserts they agree and returns the file's masks
/// and report.
fn both(
    tensors: &[T],
    options: &PruneOptions,
    budget: usize,
) -> std::result::Result<(Vec<Vec<bool>>, PruneReport), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (input, scores) = files(dir.path(), tensors);
    let wanda = options.criterion == Criterion::Wanda;
    let options = PruneOptions {
        scores: wanda.then_some(scores),
        ..options.clone()
    };
    let control = Control {
        options: StreamOptions {
            budget_bytes: budget,
            piece_elems: 8,
        },
        ..Control::default()
    };
    let ck = Checkpoint::open(&input).unwrap();
    let out = dir.path().join("out.safetensors");
    let report = prune(&ck, &out, &options, &control).unwrap();
    let out = Checkpoint::open(&out).unwrap();
    let masks: Vec<Vec<bool>> = (0..tensors.len())
        .map(|i| {
            let t = out.get(&name(i, &tensors[i])).unwrap();
            let mut v = Vec::new();
            f64::decode(out.data(t), t.float_type().unwrap(), &mut v);
            v.iter().map(|x| *x != 0.0).collect()
        })
        .collect();
    let views = views(tensors);
    let norms = norm_views(tensors);
    let memory = prune_tensors_scored(
        &views,
        wanda.then_some(&norms[..]),
        &PruneOptions {
            scores: None,
            ..options.clone()
        },
        &control,
    )
    .unwrap();
    for (i, mask) in memory.masks.iter().enumerate() {
        prop_assert_eq!(mask.as_ref().unwrap(), &masks[i], "in memory, tensor {}", i);
    }
    let mut file_report = report.clone();
    file_report.input = PathBuf::new();
    file_report.outputs.clear();
    file_report.input_digest = None;
    // The file has one more (unselected) float tensor.
    file_report.float_tensors.pop();
    file_report.float_elements -= 2;
    file_report.float_zeros_after -= 1;
    file_report.float_sparsity_after = memory.report.float_sparsity_after;
    prop_assert_eq!(&file_report, &memory.report);
    Ok((masks, report))
}

fn transposed() -> Vec<String> {
    vec![r"c_fc\.weight$".into()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// N:M keeps, in each group, the N largest keys (earlier ties removed
    /// first), on every layout, type and criterion, with pieces smaller
    /// than a unit; both front ends agree; counts are exact.
    #[test]
    fn nm_matches_the_reference(
        (m, n, tensors) in (prop_oneof![Just(2usize), Just(4), Just(8)])
            .prop_flat_map(|m| (Just(m), 1..m, prop::collection::vec(tensor_strategy(m), 1..4))),
        wanda in any::<bool>(),
        budget in 16usize..300,
    ) {
        let options = PruneOptions {
            nm: Some(NmPattern::new(n as u32, m as u32).unwrap()),
            transposed: transposed(),
            criterion: if wanda { Criterion::Wanda } else { Criterion::Magnitude },
            ..Default::default()
        };
        let (masks, report) = both(&tensors, &options, budget)?;
        let want = reference_nm(&tensors, n, m, wanda);
        prop_assert_eq!(&masks, &want);
        let kept: usize = want.iter().flatten().filter(|k| **k).count();
        let numel: usize = tensors.iter().map(|t| t.values.len()).sum();
        prop_assert_eq!(report.zeros_after, (numel - kept) as u64);
        prop_assert_eq!(report.target, (numel / m * (m - n)) as u64);
        prop_assert_eq!(report.grouping, Grouping::Nm);
        for (t, r) in tensors.iter().zip(&report.tensors) {
            prop_assert_eq!(r.transposed, t.transposed);
        }
    }

    /// Wanda scores with the global and per-tensor groupings: the radix
    /// selection cuts at the reference's count and tie rule.
    #[test]
    fn wanda_cut_matches_the_reference(
        tensors in prop::collection::vec(tensor_strategy(2), 1..4),
        s in 0.0f64..0.999,
        layer in any::<bool>(),
        budget in 16usize..300,
    ) {
        let options = PruneOptions {
            sparsity: s,
            scope: if layer { Scope::Layer } else { Scope::Global },
            transposed: transposed(),
            criterion: Criterion::Wanda,
            ..Default::default()
        };
        let (masks, _) = both(&tensors, &options, budget)?;
        prop_assert_eq!(masks, reference_cut(&tensors, s, layer));
    }
}

#[test]
fn float_tensors_report_zeros_and_norms_of_every_float_tensor() {
    let t = T {
        shape: vec![2, 4],
        dims: [2, 4, 1],
        transposed: false,
        dtype: Dtype::F32,
        values: vec![1.0, -2.0, 0.0, 3.0, 0.5, 0.25, -4.0, 1.0],
        norms: vec![1.0; 4],
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = files(dir.path(), &[t]);
    let ck = Checkpoint::open(&input).unwrap();
    let options = PruneOptions {
        nm: Some("2:4".parse().unwrap()),
        ..Default::default()
    };
    let report = plan(&ck, &options, &Control::default()).unwrap();
    let w = &report.float_tensors[0];
    assert_eq!((w.name.as_str(), w.numel), ("l0.weight", 8));
    assert_eq!((w.zeros_before, w.zeros_after), (1, 4));
    assert_eq!(
        w.sum_squares_before,
        1.0 + 4.0 + 9.0 + 0.25 + 0.0625 + 16.0 + 1.0
    );
    assert_eq!(w.sum_squares_after, 4.0 + 9.0 + 16.0 + 1.0);
    let b = &report.float_tensors[1];
    assert_eq!(
        (b.name.as_str(), b.zeros_before, b.zeros_after),
        ("b.bias", 1, 1)
    );
    assert_eq!((b.sum_squares_before, b.sum_squares_after), (0.25, 0.25));
    assert_eq!(report.removed_sum_squares, 1.0 + 0.25 + 0.0625);
    assert_eq!(
        report.pattern.map(|p| p.to_string()).as_deref(),
        Some("2:4")
    );
}

#[test]
fn bad_nm_requests_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write_test_checkpoint(
        &input,
        &[
            (
                "a.weight".into(),
                Dtype::F32,
                vec![2, 6],
                encode(&[1.0; 12], Dtype::F32),
            ),
            (
                "b.weight".into(),
                Dtype::F32,
                vec![2, 8],
                encode(&[1.0; 16], Dtype::F32),
            ),
        ],
    );
    let ck = Checkpoint::open(&input).unwrap();
    let nm = PruneOptions {
        nm: Some("2:4".parse().unwrap()),
        ..Default::default()
    };
    let err = plan(&ck, &nm, &Control::default()).unwrap_err().to_string();
    assert!(
        err.contains("`a.weight`") && err.contains("length 6"),
        "{err}"
    );
    assert!(!err.contains("b.weight"), "{err}");
    let skip = PruneOptions {
        skip_ragged: true,
        ..nm.clone()
    };
    let report = plan(&ck, &skip, &Control::default()).unwrap();
    assert_eq!(report.skipped, ["a.weight"]);
    assert_eq!(report.tensors.len(), 1);
    for bad in [
        PruneOptions {
            sparsity: 0.5,
            ..nm.clone()
        },
        PruneOptions {
            scope: Scope::Layer,
            ..nm.clone()
        },
        PruneOptions {
            sparsity: 0.5,
            skip_ragged: true,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    // Wanda without, or with a bad, score file.
    let wanda = PruneOptions {
        criterion: Criterion::Wanda,
        ..nm.clone()
    };
    let err = plan(
        &ck,
        &PruneOptions {
            skip_ragged: true,
            ..wanda.clone()
        },
        &Control::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs score data"), "{err}");
    let scores = dir.path().join("norms.safetensors");
    write_test_checkpoint(
        &scores,
        &[(
            "b.weight".into(),
            Dtype::F32,
            vec![4],
            encode(&[1.0; 4], Dtype::F32),
        )],
    );
    let with = |skip_ragged| PruneOptions {
        scores: Some(scores.clone()),
        skip_ragged,
        ..wanda.clone()
    };
    let err = plan(&ck, &with(true), &Control::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("norms.safetensors")
            && err.contains("`b.weight`")
            && err.contains("8 input channels"),
        "{err}"
    );
    let err = plan(
        &ck,
        &PruneOptions {
            nm: None,
            skip_ragged: false,
            sparsity: 0.5,
            ..with(false)
        },
        &Control::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no score vector for tensor `a.weight`"),
        "{err}"
    );
}
