//! The in-memory front end of merging gives the file front end's bytes.

use super::*;
use crate::output::{write_test_checkpoint, TensorBytes};
use crate::stream::StreamOptions;
use crate::MethodParams;
use safetensors::Dtype;

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A sparse base (about half zeros) and three fine-tunes of it with the
/// same mask; an F16 tensor and an I64 one ride along.
fn models() -> (Tensors, Vec<Tensors>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 3000;
    let base: Vec<f32> = (0..n)
        .map(|_| match rng.next() {
            x if x.abs() < 0.5 => 0.0,
            x => x,
        })
        .collect();
    let model = |w: &[f32], rng: &mut Rng| -> Tensors {
        let half: Vec<u8> = w[..64]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x + 0.01 * rng.next()).to_le_bytes())
            .collect();
        vec![
            ("layer.weight".into(), Dtype::F32, vec![30, 100], f32s(w)),
            ("layer.scale".into(), Dtype::F16, vec![64], half),
            (
                "steps".into(),
                Dtype::I64,
                vec![1],
                7i64.to_le_bytes().to_vec(),
            ),
        ]
    };
    let base_model = model(&base, &mut Rng(1));
    let tuned = (0..3)
        .map(|_| {
            let w: Vec<f32> = base
                .iter()
                .map(|&b| if b == 0.0 { 0.0 } else { b + 0.1 * rng.next() })
                .collect();
            model(&w, &mut rng)
        })
        .collect();
    (base_model, tuned)
}

fn in_memory(label: &str, tensors: &Tensors) -> Checkpoint {
    let views: Vec<TensorBytes<'_>> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| TensorBytes {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    Checkpoint::from_tensors(label, &views).unwrap()
}

/// Every method, with and without a base, over several chunk budgets:
/// the tensors merged in memory are byte for byte those of the file.
#[test]
fn merge_in_memory_equals_the_file_merge() {
    let (base, tuned) = models();
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.safetensors");
    write_test_checkpoint(&base_path, &base);
    let paths: Vec<_> = tuned
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let p = dir.path().join(format!("tuned-{k}.safetensors"));
            write_test_checkpoint(&p, t);
            p
        })
        .collect();
    let params = |density: Option<f64>, weights: Option<Vec<f64>>| MethodParams {
        density,
        weights,
        scale: Some(0.8),
        seed: None,
    };
    let seeded = |mut m: MergeMethod| {
        m.params.seed = Some(42);
        m
    };
    let cases = [
        (MergeMethod::uniform(), false, MaskPolicy::Refuse),
        (
            MergeMethod::weighted(vec![1.0, 2.0, 3.0]),
            false,
            MaskPolicy::Refuse,
        ),
        (
            MergeMethod::named("task-arithmetic", params(None, None)),
            true,
            MaskPolicy::Base,
        ),
        (
            MergeMethod::named("ties", params(Some(0.4), None)),
            true,
            MaskPolicy::Base,
        ),
        (
            MergeMethod::named("ties", params(Some(0.4), None)),
            true,
            MaskPolicy::Dense,
        ),
        (
            seeded(MergeMethod::named(
                "dare-linear",
                params(Some(0.5), Some(vec![0.5, 1.0, 0.7])),
            )),
            true,
            MaskPolicy::Base,
        ),
        (
            MergeMethod::named("dare-ties", params(Some(0.5), None)),
            true,
            MaskPolicy::Base,
        ),
    ];
    for (i, (method, with_base, mask_policy)) in cases.into_iter().enumerate() {
        for budget in [64 << 20, 4096] {
            let control = Control {
                options: StreamOptions {
                    budget_bytes: budget,
                    piece_elems: 512,
                },
                ..Control::default()
            };
            let options = MergeOptions {
                method: method.clone(),
                mask_policy,
                ..MergeOptions::default()
            };
            let target = dir.path().join(format!("out-{i}-{budget}.safetensors"));
            let files: Vec<Checkpoint> =
                paths.iter().map(|p| Checkpoint::open(p).unwrap()).collect();
            let base_file = Checkpoint::open(&base_path).unwrap();
            let file_report = match with_base {
                true => merge_with_base(&base_file, &files, &target, &options, &control),
                false => merge(&files, &target, &options, &control),
            }
            .unwrap();
            let memory: Vec<Checkpoint> = tuned
                .iter()
                .enumerate()
                .map(|(k, t)| in_memory(&format!("state dict {k}"), t))
                .collect();
            let base_memory = in_memory("base", &base);
            let merged = merge_tensors(
                with_base.then_some(&base_memory),
                &memory,
                &options,
                &control,
            )
            .unwrap();
            let written = Checkpoint::open(&target).unwrap();
            let names: Vec<&str> = merged
                .tensors
                .iter()
                .map(|(t, _)| t.name.as_str())
                .collect();
            let order = match with_base {
                true => &base,
                false => &tuned[0],
            };
            let expected: Vec<&str> = order.iter().map(|t| t.0.as_str()).collect();
            assert_eq!(names, expected, "the first input's order");
            for (t, bytes) in &merged.tensors {
                let entry = written.get(&t.name).unwrap();
                assert_eq!((entry.dtype, &entry.shape), (t.dtype, &t.shape));
                assert!(
                    written.data(entry) == &bytes[..],
                    "{} ({mask_policy:?}), budget {budget}: `{}` differs",
                    method.name,
                    t.name
                );
            }
            assert!(merged.report.outputs.is_empty());
            assert_eq!(merged.report.weights, file_report.weights);
            assert_eq!(
                merged.report.task_vectors.len(),
                file_report.task_vectors.len()
            );
            for (m, f) in merged
                .report
                .task_vectors
                .iter()
                .zip(&file_report.task_vectors)
            {
                assert_eq!((m.norm, m.dropped), (f.norm, f.dropped));
            }
        }
    }
}

/// Errors of an in-memory merge name the inputs by their labels, and an
/// N:M pattern is checked on the result in memory.
#[test]
fn merge_in_memory_errors_name_the_labels() {
    let (base, tuned) = models();
    let mut other = tuned[1].clone();
    let alive = other[0].3.chunks(4).position(|v| v != [0; 4]).unwrap();
    other[0].3[alive * 4..alive * 4 + 4].copy_from_slice(&0f32.to_le_bytes());
    let control = Control::default();
    let a = in_memory("state dict 0", &tuned[0]);
    let b = in_memory("state dict 1", &other);
    let e = merge_tensors(None, &[a, b], &MergeOptions::default(), &control).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("state dict 1") && text.contains("layer.weight"),
        "{text}"
    );
    let a = in_memory("state dict 0", &base);
    let options = MergeOptions {
        nm: Some(crate::nm_check::NmRule::standard("2:4".parse().unwrap())),
        ..MergeOptions::default()
    };
    let e = merge_tensors(None, &[a], &options, &control).unwrap_err();
    assert!(matches!(e, Error::PatternBroken { .. }), "{e}");
}
