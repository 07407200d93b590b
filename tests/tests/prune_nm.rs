//! End-to-end tests of `soup prune --nm`: the pattern holds along the input
//! dimension of linear, convolution and transposed (`[in, out]`) weights,
//! the JSON report names the grouping and pattern, ragged tensors are
//! refused or skipped, Wanda scores are validated, and bad input leaves
//! nothing behind.

mod common;

use std::path::Path;

use common::{assert_one_error_line, ok, s, Scratch};
use fixtures::{Rng, Tensor};
use soup_core::Accumulator;
use soup_core::{Checkpoint, Dtype, PruneReport};
use soup_tests::{files_in, soup};

fn model(rng: &mut Rng) -> Vec<Tensor> {
    let mut normal = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    vec![
        Tensor::new("conv.weight", Dtype::F32, &[6, 8, 3, 3], normal(432)),
        Tensor::new("conv.bias", Dtype::F32, &[6], normal(6)),
        Tensor::new("h.0.attn.c_attn.weight", Dtype::F16, &[8, 12], normal(96)),
        Tensor::new("fc.weight", Dtype::BF16, &[5, 16], normal(80)),
    ]
}

fn values(ck: &Checkpoint, name: &str) -> Vec<f64> {
    let t = ck.get(name).unwrap();
    let mut v = Vec::new();
    f64::decode(ck.data(t), t.float_type().unwrap(), &mut v);
    v
}

/// The most non-zeros in a group of `m` along dimension `dim` of a tensor
/// of `shape` (row-major `values`).
fn most_per_group(values: &[f64], shape: &[usize], dim: usize, m: usize) -> usize {
    let len = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let outer: usize = shape[..dim].iter().product();
    let mut most = 0;
    for a in 0..outer {
        for g in 0..len / m {
            for b in 0..inner {
                let nz = (0..m)
                    .filter(|j| values[(a * len + g * m + j) * inner + b] != 0.0)
                    .count();
                most = most.max(nz);
            }
        }
    }
    most
}

#[test]
fn nm_2_4_holds_along_the_input_dimension_of_every_layout() {
    let dir = Scratch::empty();
    let input = dir.write("in.safetensors", &model(&mut Rng::new(3)));
    let out = dir.path("pruned.safetensors");
    let run = soup([
        "prune",
        s(&input),
        "-o",
        s(&out),
        "--nm",
        "2:4",
        "--nm-transposed",
        r"attn\.c_attn\.weight$",
        "--json",
    ]);
    let report: PruneReport = serde_json::from_str(&ok(&run).stdout).unwrap();
    assert_eq!(serde_json::to_value(report.grouping).unwrap(), "nm");
    assert_eq!(report.pattern.unwrap().to_string(), "2:4");
    assert_eq!(report.sparsity, 0.5);
    assert_eq!(report.zeros_after, (432 + 96 + 80) / 2);
    let flags: Vec<(&str, bool)> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.transposed))
        .collect();
    assert_eq!(
        flags,
        [
            ("conv.weight", false),
            ("h.0.attn.c_attn.weight", true),
            ("fc.weight", false)
        ]
    );
    assert_eq!(report.float_tensors.len(), 4);
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(
        most_per_group(&values(&ck, "conv.weight"), &[6, 8, 9], 1, 4),
        2
    );
    assert_eq!(
        most_per_group(&values(&ck, "h.0.attn.c_attn.weight"), &[8, 12], 0, 4),
        2
    );
    assert_eq!(most_per_group(&values(&ck, "fc.weight"), &[5, 16], 1, 4), 2);
    // The bias is not touched.
    let inp = Checkpoint::open(&input).unwrap();
    assert_eq!(values(&ck, "conv.bias"), values(&inp, "conv.bias"));
    // Provenance records the pattern.
    let meta = ck
        .metadata()
        .get("soup.recipe")
        .cloned()
        .unwrap_or_default();
    assert!(meta.contains("\"nm\":\"2:4\""), "{meta}");
}

#[test]
fn ragged_tensors_are_refused_by_name_or_skipped() {
    let dir = Scratch::empty();
    let mut tensors = model(&mut Rng::new(4));
    tensors.push(Tensor::new(
        "head.weight",
        Dtype::F32,
        &[3, 10],
        vec![1.0; 30],
    ));
    let input = dir.write("in.safetensors", &tensors);
    let out = dir.path("pruned.safetensors");
    let run = soup(["prune", s(&input), "-o", s(&out), "--nm", "2:4"]);
    // Without --nm-transposed the [8, 12] tensor groups along 12: fine;
    // head.weight's 10 columns are not a multiple of 4.
    assert_one_error_line(&run, &["in.safetensors", "head.weight", "length 10"]);
    assert!(!out.exists());
    assert_eq!(files_in(&dir.path("")), ["in.safetensors", "out"]);
    let run = soup([
        "prune",
        s(&input),
        "-o",
        s(&out),
        "--nm",
        "2:4",
        "--nm-skip-ragged",
        "--json",
    ]);
    let report: PruneReport = serde_json::from_str(&ok(&run).stdout).unwrap();
    assert_eq!(report.skipped, ["head.weight"]);
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(values(&ck, "head.weight"), vec![1.0; 30]);
    // A transposed pattern on a convolution weight is refused.
    let run = soup([
        "prune",
        s(&input),
        "-o",
        s(&dir.path("t.safetensors")),
        "--nm",
        "2:4",
        "--nm-skip-ragged",
        "--nm-transposed",
        "conv",
    ]);
    assert_one_error_line(&run, &["conv.weight", "[in, out]"]);
}

#[test]
fn bad_patterns_and_combinations_are_usage_errors() {
    let dir = Scratch::empty();
    let input = dir.write("in.safetensors", &model(&mut Rng::new(5)));
    let out = dir.path("pruned.safetensors");
    for args in [
        vec!["--nm", "4:2"],
        vec!["--nm", "2:64"],
        vec!["--nm", "two:four"],
        vec!["--nm", "2:4", "--sparsity", "0.5"],
        vec!["--nm", "2:4", "--of-remaining"],
        vec!["--nm-skip-ragged", "--sparsity", "0.5"],
        vec!["--nm", "2:4", "--criterion", "wanda"],
        vec!["--nm", "2:4", "--criterion", "bogus"],
    ] {
        let mut all = vec!["prune", s(&input), "-o", s(&out)];
        all.extend(args.iter().copied());
        let run = soup(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!out.exists(), "{args:?}");
    }
}

#[test]
fn wanda_scores_are_checked_and_used() {
    let dir = Scratch::empty();
    let tensors = vec![Tensor::new(
        "fc.weight",
        Dtype::F32,
        &[2, 4],
        vec![1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0],
    )];
    let input = dir.write("in.safetensors", &tensors);
    let good = dir.write(
        "norms.safetensors",
        &[Tensor::new(
            "fc.weight",
            Dtype::F32,
            &[4],
            vec![10.0, 10.0, 0.1, 0.1],
        )],
    );
    let short = dir.write(
        "short.safetensors",
        &[Tensor::new("fc.weight", Dtype::F32, &[3], vec![1.0; 3])],
    );
    let other = dir.write(
        "other.safetensors",
        &[Tensor::new("conv.weight", Dtype::F32, &[4], vec![1.0; 4])],
    );
    let out = dir.path("pruned.safetensors");
    let prune = |scores: &Path| {
        soup([
            "prune",
            s(&input),
            "-o",
            s(&out),
            "--nm",
            "2:4",
            "--criterion",
            "wanda",
            "--scores",
            s(scores),
        ])
    };
    assert_one_error_line(
        &prune(&short),
        &["short.safetensors", "fc.weight", "4 input channels"],
    );
    assert!(!out.exists());
    assert_one_error_line(
        &prune(&other),
        &["other.safetensors", "no score vector", "fc.weight"],
    );
    assert!(!out.exists());
    ok(&prune(&good));
    // |w| * norm: the first two columns win in both rows.
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(
        values(&ck, "fc.weight"),
        [1.0, 2.0, 0.0, 0.0, 4.0, 3.0, 0.0, 0.0]
    );
}
