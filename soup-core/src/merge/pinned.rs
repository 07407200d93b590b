//! Pinned content digests of merges: uniform, weighted and greedy soups of
//! small generated inputs in every float type, a sharded output, small
//! windows, and the union and intersect mask policies. The digests were
//! computed before the merge was split into plan, pre-pass and kernel;
//! they hold as long as those merges stay byte-identical.

use super::*;
use crate::dtype::Accumulator;
use crate::greedy::{greedy_soup, GreedyOptions};
use crate::hash::{hash_checkpoint, DigestKind};
use crate::output::write_test_checkpoint;
use crate::stream::StreamOptions;

/// A deterministic value stream: roughly normal-ish values in [-2, 2),
/// with about a third exact zeros where `zero` says so.
fn values(seed: u64, n: usize, zero: impl Fn(usize) -> bool) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0;
            if zero(i) {
                0.0
            } else {
                v
            }
        })
        .collect()
}

fn encode(v: &[f64], t: FloatType) -> Vec<u8> {
    let mut out = Vec::new();
    if t == FloatType::F64 {
        f64::encode(v, t, &mut out);
    } else {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        f32::encode(&v, t, &mut out);
    }
    out
}

/// Candidate `k` with one tensor per float type (shared mask unless
/// `own_mask`) and an integer tensor.
fn candidate(path: &Path, k: u64, own_mask: bool) -> Checkpoint {
    let mut tensors = Vec::new();
    for (i, t) in [
        FloatType::F32,
        FloatType::F16,
        FloatType::BF16,
        FloatType::F64,
    ]
    .into_iter()
    .enumerate()
    {
        let n = 5000 + 37 * i;
        let shift = if own_mask { k as usize } else { 0 };
        let v = values(k * 10 + i as u64, n, |j| (j + shift) % 3 == 0);
        tensors.push((
            format!("layer{i}.weight"),
            t.dtype(),
            vec![n / 5, 5],
            encode(&v, t),
        ));
    }
    tensors.push((
        "steps".into(),
        Dtype::I64,
        vec![1],
        7i64.to_le_bytes().to_vec(),
    ));
    write_test_checkpoint(path, &tensors);
    Checkpoint::open(path).unwrap()
}

fn digest(path: &Path) -> String {
    let control = Control {
        digest: DigestKind::Sha256,
        ..Control::default()
    };
    hash_checkpoint(&Checkpoint::open(path).unwrap(), &control)
        .unwrap()
        .digest
}

fn small_windows() -> Control<'static> {
    Control {
        options: StreamOptions {
            budget_bytes: 20_000,
            piece_elems: 1000,
        },
        ..Control::default()
    }
}

#[test]
fn merges_keep_their_pinned_digests() {
    let dir = tempfile::tempdir().unwrap();
    let name = |k: u64, own: bool| {
        let own = if own { "-own" } else { "" };
        dir.path().join(format!("c{k}{own}.safetensors"))
    };
    for k in 0..3 {
        for own in [false, true] {
            candidate(&name(k, own), k, own);
        }
    }
    let open = |own: bool| -> Vec<Checkpoint> {
        (0..3)
            .map(|k| Checkpoint::open(name(k, own)).unwrap())
            .collect()
    };
    let mut got = Vec::new();
    let mut run =
        |name: &str, inputs: Vec<Checkpoint>, options: MergeOptions, control: &Control| {
            let out = dir.path().join(name);
            merge(&inputs, &out, &options, control).unwrap();
            got.push((name.to_string(), digest(&out)));
        };
    run(
        "uniform.safetensors",
        open(false),
        MergeOptions::default(),
        &Control::default(),
    );
    let weighted = MergeOptions {
        method: MergeMethod::weighted(vec![0.5, 0.3, 0.2]),
        ..MergeOptions::default()
    };
    run(
        "weighted.safetensors",
        open(false),
        weighted.clone(),
        &small_windows(),
    );
    let to_f16 = MergeOptions {
        dtype: Some(FloatType::F16),
        ..weighted
    };
    run(
        "weighted-f16.safetensors",
        open(false),
        to_f16,
        &Control::default(),
    );
    let sharded = MergeOptions {
        output: OutputOptions {
            shard_size: Some(12_000),
            force: false,
        },
        ..MergeOptions::default()
    };
    run("sharded", open(false), sharded, &small_windows());
    for policy in [MaskPolicy::Union, MaskPolicy::Intersect] {
        let options = MergeOptions {
            mask_policy: policy,
            ..MergeOptions::default()
        };
        run(
            &format!("{policy:?}.safetensors"),
            open(true),
            options,
            &Control::default(),
        );
    }
    // Greedy: scores that keep the first two tried and drop the third.
    let mut calls = 0;
    let mut scorer = |_: &Path| -> Result<f64> {
        calls += 1;
        Ok([0.9, 0.8, 0.95, 0.96, 0.7][calls - 1])
    };
    let out = dir.path().join("greedy.safetensors");
    let options = GreedyOptions {
        scores: None,
        strict: false,
        merge: MergeOptions::default(),
    };
    greedy_soup(
        &open(false),
        &out,
        &mut scorer,
        &options,
        &Control::default(),
    )
    .unwrap();
    got.push(("greedy.safetensors".into(), digest(&out)));

    // The sharded output holds the same tensors as the uniform one.
    let pinned = [
        (
            "uniform.safetensors",
            "sha256:625e8e8db02dade9f3611062cadf0c2b02b9d731a567cb939ebf267db88d84f7",
        ),
        (
            "weighted.safetensors",
            "sha256:c446784c92ed4c26455b6e6ced88c4e3df34eca0bcfad20a281d276429aa980a",
        ),
        (
            "weighted-f16.safetensors",
            "sha256:fa12a33e4185245f12e1bfc56589e1d8d952b92b9b4c80a8ac6f366338c1157e",
        ),
        (
            "sharded",
            "sha256:625e8e8db02dade9f3611062cadf0c2b02b9d731a567cb939ebf267db88d84f7",
        ),
        (
            "Union.safetensors",
            "sha256:bbef27d3bcb7ca834caa47564fa6292e0ff0af696d3ed57a7647e1532a899e79",
        ),
        (
            "Intersect.safetensors",
            "sha256:4a4d98f093581f7c965918cc67e75313857f982670f4a219aea86ded0df32454",
        ),
        (
            "greedy.safetensors",
            "sha256:2a806b82bb4ffd768f797b3bfb6ba094d09117b64c0c84b3b6dff6c4eebe0736",
        ),
    ];
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got, pinned);
}

/// The task-vector merges with a pre-pass (TIES's trim, DARE's rescaling)
/// of a base and three fine-tunes sharing its mask, in whole windows and
/// small ones (pieces of 1000 elements): pinned before the pre-pass was
/// changed to decode the base once per block for all fine-tunes.
#[test]
fn task_vector_merges_keep_their_pinned_digests() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<Checkpoint> = (0..4)
        .map(|k| candidate(&dir.path().join(format!("t{k}.safetensors")), k, false))
        .collect();
    let (base, tunes) = inputs.split_first().unwrap();
    let mut got = Vec::new();
    for (method, density) in [("ties", 0.3), ("dare-ties", 0.5), ("dare-linear", 0.2)] {
        let params = MethodParams {
            weights: Some(vec![1.0, 0.5, 2.0]),
            density: Some(density),
            seed: (method != "ties").then_some(3),
            ..MethodParams::default()
        };
        let options = MergeOptions {
            method: MergeMethod::named(method, params),
            mask_policy: MaskPolicy::Base,
            ..MergeOptions::default()
        };
        for (i, control) in [Control::default(), small_windows()].iter().enumerate() {
            let out = dir.path().join(format!("{method}-{i}.safetensors"));
            merge_with_base(base, tunes, &out, &options, control).unwrap();
            got.push((method, digest(&out)));
        }
    }
    let pinned = [
        (
            "ties",
            "sha256:be111b19cd34eae55776600408f5bbfebc5972c7514342b9785fa697b7d3bb74",
        ),
        (
            "dare-ties",
            "sha256:bfd05e580d6e7096c3b06520139acac69cf5c87edbaae658ac6489e1d561d8ca",
        ),
        (
            "dare-linear",
            "sha256:39b86fd35f7f3ca569bf3cbbaa1f015a3789d599120a002d1ad3884216526624",
        ),
    ];
    // Each merge, in whole and in small windows, gives the pinned digest.
    let want: Vec<(&str, &str)> = pinned.iter().flat_map(|&p| [p, p]).collect();
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (*a, b.as_str())).collect();
    assert_eq!(got, want);
}
