//! `soup fold-lora` on a generated PEFT adapter folder: the folded weights
//! against an f64 computation here (rank and alpha patterns, rsLoRA,
//! fan_in_fan_out), the base's zeros kept exactly (check-mask agrees), and
//! the refusals as one line with nothing written. The numpy comparison
//! lives in python/tests/test_fold_lora.py.

mod common;

use std::path::Path;

use common::{fails, ok, s};
use fixtures::{write_checkpoint, Rng, Tensor};
use soup_core::{Accumulator, Checkpoint, Dtype};
use soup_tests::{files_in, soup};

fn values(path: &Path, name: &str) -> Vec<f64> {
    let c = Checkpoint::open(path).unwrap();
    let t = c.get(name).unwrap();
    let mut v = Vec::new();
    f64::decode(c.data(t), t.float_type().unwrap(), &mut v);
    v
}

/// A base with a sparse 8x12 and a dense 6x12 weight (or their transposes
/// with `fan_in_fan_out`) and an adapter for both, the second with its own
/// rank and alpha. Returns the expected folded weights.
fn case(dir: &Path, rslora: bool, fifo: bool) -> Vec<(String, Vec<f64>)> {
    let mut rng = Rng::new(u64::from(rslora) * 2 + u64::from(fifo));
    let mut base = Vec::new();
    let mut factors = Vec::new();
    let mut expected = Vec::new();
    for (module, out, inp, r, alpha, density) in [
        ("h.0.q", 8usize, 12usize, 4usize, 8.0f64, 0.5f64),
        ("h.1.q", 6, 12, 2, 3.0, 1.0),
    ] {
        let w: Vec<f64> = (0..out * inp)
            .map(|_| {
                if rng.uniform() < density {
                    rng.normal()
                } else {
                    0.0
                }
            })
            .collect();
        let a: Vec<f64> = (0..r * inp).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..out * r).map(|_| rng.normal()).collect();
        let scale = if rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        // Row-major W (out x in), stored transposed with fan_in_fan_out.
        let at = |i: usize, j: usize| if fifo { j * out + i } else { i * inp + j };
        let mut stored = vec![0.0; out * inp];
        let mut want = vec![0.0; out * inp];
        for i in 0..out {
            for j in 0..inp {
                let v = w[i * inp + j];
                let u: f64 = (0..r).map(|k| b[i * r + k] * a[k * inp + j]).sum::<f64>() * scale;
                stored[at(i, j)] = v;
                want[at(i, j)] = if v == 0.0 {
                    0.0
                } else {
                    ((v as f32) as f64 + u) as f32 as f64
                };
            }
        }
        let shape = if fifo { [inp, out] } else { [out, inp] };
        base.push(Tensor::new(
            &format!("{module}.weight"),
            Dtype::F32,
            &shape,
            stored,
        ));
        factors.push(Tensor::new(
            &format!("base_model.model.{module}.lora_A.weight"),
            Dtype::F32,
            &[r, inp],
            a,
        ));
        factors.push(Tensor::new(
            &format!("base_model.model.{module}.lora_B.weight"),
            Dtype::F32,
            &[out, r],
            b,
        ));
        expected.push((format!("{module}.weight"), want));
    }
    base.push(Tensor::new("h.0.q.bias", Dtype::F32, &[8], vec![0.5; 8]));
    write_checkpoint(&dir.join("base.safetensors"), &base, &[], None).unwrap();
    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    write_checkpoint(
        &adapter.join("adapter_model.safetensors"),
        &factors,
        &[],
        None,
    )
    .unwrap();
    let config = serde_json::json!({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": rslora,
        "fan_in_fan_out": fifo, "target_modules": ["q"],
        "rank_pattern": {"h.1.q": 2}, "alpha_pattern": {"h.1.q": 3},
    });
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).unwrap();
    expected
}

#[test]
fn folded_weights_are_w_plus_scaled_ba_on_the_bases_mask() {
    for rslora in [false, true] {
        for fifo in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let expected = case(dir.path(), rslora, fifo);
            let base = dir.path().join("base.safetensors");
            let out = dir.path().join("out.safetensors");
            ok(&soup([
                "fold-lora",
                s(&base),
                s(&dir.path().join("adapter")),
                "-o",
                s(&out),
                "--budget",
                "100",
                "--threads",
                "2",
            ]));
            for (name, want) in &expected {
                let got = values(&out, name);
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{name}: {g} vs {w} (rslora {rslora}, fifo {fifo})"
                    );
                    assert_eq!(*g == 0.0, *w == 0.0, "{name}");
                }
            }
            assert_eq!(values(&out, "h.0.q.bias"), vec![0.5; 8]);
            ok(&soup(["check-mask", s(&out), "--reference", s(&base)]));
            let c = Checkpoint::open(&out).unwrap();
            assert_eq!(c.metadata()["soup.operation"], "fold-lora");
        }
    }
}

#[test]
fn adapters_that_do_not_fit_the_base_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    case(dir.path(), false, false);
    let base = dir.path().join("base.safetensors");
    let adapter = dir.path().join("adapter");
    // A factor pair for a module the base lacks.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        adapter.join("adapter_config.json"),
        bad.join("adapter_config.json"),
    )
    .unwrap();
    let extra = vec![
        Tensor::new(
            "base_model.model.h.0.q.lora_A.weight",
            Dtype::F32,
            &[4, 12],
            vec![1.0; 48],
        ),
        Tensor::new(
            "base_model.model.h.0.q.lora_B.weight",
            Dtype::F32,
            &[8, 4],
            vec![1.0; 32],
        ),
        Tensor::new(
            "base_model.model.h.9.q.lora_A.weight",
            Dtype::F32,
            &[4, 12],
            vec![1.0; 48],
        ),
        Tensor::new(
            "base_model.model.h.9.q.lora_B.weight",
            Dtype::F32,
            &[8, 4],
            vec![1.0; 32],
        ),
    ];
    write_checkpoint(&bad.join("adapter_model.safetensors"), &extra, &[], None).unwrap();
    let out = dir.path().join("out.safetensors");
    let before = files_in(dir.path());
    fails(
        &soup(["fold-lora", s(&base), s(&bad), "-o", s(&out)]),
        "h.9.q.weight",
    );
    // Shapes that disagree with the base.
    let wrong = vec![
        Tensor::new(
            "base_model.model.h.0.q.lora_A.weight",
            Dtype::F32,
            &[4, 11],
            vec![1.0; 44],
        ),
        Tensor::new(
            "base_model.model.h.0.q.lora_B.weight",
            Dtype::F32,
            &[8, 4],
            vec![1.0; 32],
        ),
    ];
    write_checkpoint(&bad.join("adapter_model.safetensors"), &wrong, &[], None).unwrap();
    fails(
        &soup(["fold-lora", s(&base), s(&bad), "-o", s(&out)]),
        "do not fit `h.0.q.weight`",
    );
    fails(
        &soup(["fold-lora", s(&base), s(&base), "-o", s(&out)]),
        "not a PEFT adapter folder",
    );
    assert_eq!(files_in(dir.path()), before);
}
