//! Property tests of merging and mask checking, through the library
//! (soup_core::merge and check_masks) on small generated checkpoints:
//! - a soup of identical copies is that checkpoint, bit for bit;
//! - the soup does not depend on the order of the inputs beyond float
//!   rounding, and matches an f64 reference mean;
//! - candidates that share a mask give a soup with exactly that mask;
//! - the budget and piece size change how work is cut up, never the result.
//!
//! Case counts are modest so the suite stays fast on two cores.

use std::path::{Path, PathBuf};

use fixtures::{write_checkpoint, Rng, Tensor};
use proptest::prelude::*;
use soup_core::Accumulator;
use soup_core::{
    check_masks, merge, Checkpoint, Control, Dtype, FloatType, MergeMethod, MergeOptions,
    Selection, StreamOptions,
};

const FLOATS: [Dtype; 4] = [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Tensor layouts: one to four tensors of 0 to 300 elements in any float
/// type, plus an I64 tensor.
fn layout() -> impl Strategy<Value = Vec<(Dtype, usize)>> {
    prop::collection::vec((prop::sample::select(FLOATS.to_vec()), 0usize..300), 1..4)
}

/// Values a checkpoint may hold, zeros of both signs and infinities
/// included.
fn wild(rng: &mut Rng) -> f64 {
    match rng.next_u64() % 10 {
        0 => 0.0,
        1 => -0.0,
        2 => f64::INFINITY,
        3 => -1e-6,
        4 => 65504.0,
        _ => rng.normal() * 10f64.powi((rng.next_u64() % 7) as i32 - 3),
    }
}

fn tensors(layout: &[(Dtype, usize)], mut value: impl FnMut(usize, usize) -> f64) -> Vec<Tensor> {
    let mut out: Vec<Tensor> = layout
        .iter()
        .enumerate()
        .map(|(t, &(dtype, n))| {
            let values = (0..n).map(|i| value(t, i)).collect();
            Tensor::new(&format!("layer{t}.weight"), dtype, &[n], values)
        })
        .collect();
    out.push(Tensor::new("steps", Dtype::I64, &[2], vec![3.0, 4.0]));
    out
}

fn write(dir: &Path, name: &str, tensors: &[Tensor]) -> PathBuf {
    let path = dir.join(name);
    write_checkpoint(&path, tensors, &[("format", "pt")], None).unwrap();
    path
}

fn open(paths: &[PathBuf]) -> Vec<Checkpoint> {
    paths.iter().map(|p| Checkpoint::open(p).unwrap()).collect()
}

fn control(options: StreamOptions) -> Control<'static> {
    Control {
        options,
        ..Control::default()
    }
}

fn merged(inputs: &[PathBuf], out: &Path, weights: Option<Vec<f64>>, options: StreamOptions) {
    let opts = MergeOptions {
        method: weights.map_or_else(MergeMethod::uniform, MergeMethod::weighted),
        ..MergeOptions::default()
    };
    merge(&open(inputs), out, &opts, &control(options)).unwrap();
}

/// Each tensor's data bytes, by name.
fn data(path: &Path) -> Vec<(String, Vec<u8>)> {
    let ck = Checkpoint::open(path).unwrap();
    ck.tensors()
        .iter()
        .map(|t| (t.name.clone(), ck.data(t).to_vec()))
        .collect()
}

/// Each float tensor's values widened to f64, by name.
fn values(path: &Path) -> Vec<(String, FloatType, Vec<f64>)> {
    let ck = Checkpoint::open(path).unwrap();
    ck.tensors()
        .iter()
        .filter_map(|t| {
            let ft = t.float_type()?;
            let mut v = Vec::new();
            f64::decode(ck.data(t), ft, &mut v);
            Some((t.name.clone(), ft, v))
        })
        .collect()
}

/// Unit roundoff of a float type.
fn eps(ft: FloatType) -> f64 {
    match ft {
        FloatType::F64 => f64::EPSILON / 2.0,
        FloatType::F32 => f32::EPSILON as f64 / 2.0,
        FloatType::F16 => 2f64.powi(-11),
        FloatType::BF16 => 2f64.powi(-8),
    }
}

/// Smallest positive subnormal of a float type.
fn tiny(ft: FloatType) -> f64 {
    match ft {
        FloatType::F64 => 5e-324,
        FloatType::F32 => 1.5e-45,
        FloatType::F16 => 6e-8,
        FloatType::BF16 => 1e-40,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn identical_copies_merge_to_themselves_bit_for_bit(
        layout in layout(),
        seed in any::<u64>(),
        m in 2usize..5,
        weights in prop::collection::vec(0.1f64..10.0, 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(seed);
        let model = tensors(&layout, |_, _| wild(&mut rng));
        let one = write(dir.path(), "one.safetensors", &model);
        let inputs = vec![one.clone(); m];
        let out = dir.path().join("soup.safetensors");
        merged(&inputs, &out, Some(weights[..m].to_vec()), StreamOptions::default());
        prop_assert_eq!(data(&out), data(&one));
    }

    #[test]
    fn merge_is_order_independent_and_matches_the_f64_mean(
        layout in layout(),
        seed in any::<u64>(),
        m in 2usize..6,
        weights in prop::collection::vec(0.0f64..4.0, 6),
        rotate in 1usize..6,
    ) {
        let weights: Vec<f64> = weights[..m].iter().map(|w| w + 0.05).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(seed);
        let inputs: Vec<PathBuf> = (0..m)
            .map(|k| {
                let model = tensors(&layout, |_, _| rng.normal() * 3.0);
                write(dir.path(), &format!("c{k}.safetensors"), &model)
            })
            .collect();
        let out = dir.path().join("soup.safetensors");
        merged(&inputs, &out, Some(weights.clone()), StreamOptions::default());
        let mut rotated_inputs = inputs.clone();
        let mut rotated_weights = weights.clone();
        rotated_inputs.rotate_left(rotate % m);
        rotated_weights.rotate_left(rotate % m);
        let out2 = dir.path().join("rotated.safetensors");
        merged(&rotated_inputs, &out2, Some(rotated_weights), StreamOptions::default());

        let total: f64 = weights.iter().sum();
        let all: Vec<_> = inputs.iter().map(|p| values(p)).collect();
        for (t, ((name, ft, got), (_, _, got2))) in values(&out).iter().zip(values(&out2)).enumerate() {
            for i in 0..got.len() {
                let xs: Vec<f64> = all.iter().map(|ck| ck[t].2[i]).collect();
                let want = xs.iter().zip(&weights).map(|(x, w)| x * w).sum::<f64>() / total;
                let largest = xs.iter().fold(0f64, |a, x| a.max(x.abs()));
                // Accumulation error (f32, or f64 for F64) plus one rounding
                // to the output type.
                let acc = if *ft == FloatType::F64 { eps(FloatType::F64) } else { eps(FloatType::F32) };
                let tol = 4.0 * m as f64 * acc * largest + eps(*ft) * want.abs() + tiny(*ft);
                prop_assert!((got[i] - want).abs() <= tol,
                    "{}[{}] {:?}: got {}, want {} (tol {})", name, i, ft, got[i], want, tol);
                prop_assert!((got[i] - got2[i]).abs() <= 2.0 * tol,
                    "{}[{}]: order changed {} to {}", name, i, got[i], got2[i]);
            }
        }
    }

    #[test]
    fn candidates_sharing_a_mask_keep_it_exactly(
        layout in layout(),
        seed in any::<u64>(),
        m in 2usize..6,
        weights in prop::collection::vec(0.0f64..4.0, 6),
        sparsity in 0.0f64..1.0,
    ) {
        let weights: Vec<f64> = weights[..m].iter().map(|w| w + 0.01).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(seed);
        // The parent: magnitudes well inside every type's normal range, a
        // random fraction of zeros (some of them -0.0).
        let parent: Vec<Vec<f64>> = layout
            .iter()
            .map(|&(_, n)| {
                (0..n)
                    .map(|_| {
                        if rng.uniform() < sparsity {
                            if rng.uniform() < 0.5 { 0.0 } else { -0.0 }
                        } else {
                            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                            sign * 10f64.powf(rng.uniform() * 6.0 - 3.0)
                        }
                    })
                    .collect()
            })
            .collect();
        let inputs: Vec<PathBuf> = (0..m)
            .map(|k| {
                // Same-sign relative noise on the non-zeros.
                let model = tensors(&layout, |t, i| parent[t][i] * (1.0 + 0.9 * (rng.uniform() - 0.5)));
                write(dir.path(), &format!("c{k}.safetensors"), &model)
            })
            .collect();
        let ckpts = open(&inputs);
        let report = check_masks(&ckpts, None, &Selection::default(), &Control::default()).unwrap();
        prop_assert!(report.identical);
        let out = dir.path().join("soup.safetensors");
        merged(&inputs, &out, Some(weights), StreamOptions::default());
        for (t, (name, _, got)) in values(&out).iter().enumerate() {
            for (i, v) in got.iter().enumerate() {
                prop_assert_eq!(*v != 0.0, parent[t][i] != 0.0, "{}[{}] = {}", name, i, v);
            }
        }
        // check-mask agrees: the soup has the candidates' mask.
        let soup = Checkpoint::open(&out).unwrap();
        let report = check_masks(&ckpts, Some(&soup), &Selection::default(), &Control::default()).unwrap();
        prop_assert!(report.identical);
    }

    #[test]
    fn budget_and_piece_size_never_change_the_result(
        layout in layout(),
        seed in any::<u64>(),
        m in 2usize..5,
        budget in 1usize..4096,
        piece in 1usize..600,
        sparsity in 0.0f64..0.9,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(seed);
        let zero: Vec<Vec<bool>> = layout
            .iter()
            .map(|&(_, n)| (0..n).map(|_| rng.uniform() < sparsity).collect())
            .collect();
        let inputs: Vec<PathBuf> = (0..m)
            .map(|k| {
                // Masks mostly shared, with a few differences.
                let model = tensors(&layout, |t, i| {
                    if zero[t][i] != (rng.uniform() < 0.02) { 0.0 } else { rng.normal() }
                });
                write(dir.path(), &format!("c{k}.safetensors"), &model)
            })
            .collect();
        let small = StreamOptions { budget_bytes: budget, piece_elems: piece };
        for policy in [soup_core::MaskPolicy::Union, soup_core::MaskPolicy::Intersect] {
            let opts = MergeOptions { mask_policy: policy, ..MergeOptions::default() };
            let out = dir.path().join("default.safetensors");
            let out2 = dir.path().join("small.safetensors");
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&out2);
            let a = merge(&open(&inputs), &out, &opts, &Control::default()).unwrap();
            let b = merge(&open(&inputs), &out2, &opts, &control(small)).unwrap();
            prop_assert_eq!(&a.mask_differences, &b.mask_differences);
            prop_assert_eq!(&a.input_digest, &b.input_digest);
            prop_assert_eq!(data(&out), data(&out2));
        }
        let ckpts = open(&inputs);
        let a = check_masks(&ckpts, None, &Selection::default(), &Control::default()).unwrap();
        let b = check_masks(&ckpts, None, &Selection::default(), &control(small)).unwrap();
        prop_assert_eq!(a, b);
        let hash = soup_core::hash_checkpoint(&ckpts[0], &Control::default()).unwrap();
        prop_assert_eq!(hash, soup_core::hash_checkpoint(&ckpts[0], &control(small)).unwrap());
    }
}

/// Regression: the incremental mean turned identical -0.0 into +0.0 and
/// identical infinities into NaN (`m + (x - m) * c` with `x - m` = NaN).
#[test]
fn identical_negative_zeros_and_infinities_survive_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in FLOATS {
        let model = vec![Tensor::new(
            "w",
            dtype,
            &[4],
            vec![-0.0, f64::INFINITY, f64::NEG_INFINITY, 1.0],
        )];
        let one = write(dir.path(), &format!("{dtype:?}.safetensors"), &model);
        let out = dir.path().join(format!("{dtype:?}-soup.safetensors"));
        merged(
            &[one.clone(), one.clone(), one.clone()],
            &out,
            None,
            StreamOptions::default(),
        );
        assert_eq!(data(&out), data(&one), "{dtype:?}");
    }
}
