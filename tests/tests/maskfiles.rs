//! Mask files (`soup mask ...`): extract, the readers of `apply-mask` and
//! `check-mask --reference`, vote/union/intersect, and the refusals, over
//! several budgets and thread counts (pieces cut anywhere in a tensor).

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, s};
use fixtures::{prune, small_model, write_checkpoint, Rng, Tensor};
use soup_core::{Checkpoint, Dtype, MaskSource};
use soup_tests::{files_in, soup};

/// A small pruned model (F32 or F16) with an odd-sized tensor, so the
/// last packed byte has padding bits.
fn model(path: &Path, seed: u64, dtype: Dtype, sparsity: f64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let mut tensors = small_model(&mut rng, dtype);
    let values = (0..77).map(|_| rng.normal()).collect();
    tensors.push(Tensor::new("odd.weight", dtype, &[7, 11], values));
    prune(&mut tensors, sparsity);
    write_checkpoint(path, &tensors, &[], None).unwrap();
    tensors
}

/// Per float tensor: the positions kept (non-zero).
fn kept(tensors: &[Tensor]) -> Vec<(String, Vec<bool>)> {
    tensors
        .iter()
        .filter(|t| matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64))
        .map(|t| (t.name.clone(), t.values.iter().map(|&v| v != 0.0).collect()))
        .collect()
}

/// The masks of a mask file or model, read through soup-core's reader.
fn read_masks(path: &Path) -> Vec<(String, Vec<bool>)> {
    let source = MaskSource::open(path).unwrap();
    source
        .tensors()
        .map(|t| {
            let mut bits = Vec::new();
            source.for_each(&t, 0..t.numel(), |_, k| bits.push(k));
            (t.name.to_string(), bits)
        })
        .collect()
}

const SETTINGS: [&[&str]; 3] = [
    &[],
    &["--budget", "1KiB", "--threads", "3"],
    &["--budget", "200", "--threads", "1"],
];

fn run(args: &[&str], settings: &[&str]) -> soup_tests::Run {
    soup(args.iter().chain(settings))
}

#[test]
fn extracted_masks_round_trip_through_apply_mask_and_check_mask() {
    let dir = tempfile::tempdir().unwrap();
    let parent_path = dir.path().join("parent.safetensors");
    let dense_path = dir.path().join("dense.safetensors");
    let parent = model(&parent_path, 1, Dtype::F32, 0.6);
    model(&dense_path, 2, Dtype::F32, 0.0);
    for (i, settings) in SETTINGS.iter().enumerate() {
        let mask = dir.path().join(format!("mask-{i}.safetensors"));
        ok(&run(
            &["mask", "extract", s(&parent_path), "-o", s(&mask)],
            settings,
        ));
        assert!(MaskSource::open(&mask).unwrap().is_mask_file());
        assert_eq!(read_masks(&mask), kept(&parent));
        // About 1/32 of the F32 weights, plus the header.
        let weights = Checkpoint::open(&parent_path).unwrap().data_bytes();
        let packed = Checkpoint::open(&mask).unwrap().data_bytes();
        assert_eq!(
            packed,
            kept(&parent)
                .iter()
                .map(|(_, k)| k.len().div_ceil(8) as u64)
                .sum::<u64>()
        );
        assert!(packed * 30 < weights, "{packed} of {weights}");
        let via_file = dir.path().join(format!("via-file-{i}.safetensors"));
        let via_model = dir.path().join(format!("via-model-{i}.safetensors"));
        ok(&run(
            &[
                "apply-mask",
                s(&dense_path),
                "--mask",
                s(&mask),
                "-o",
                s(&via_file),
            ],
            settings,
        ));
        ok(&soup([
            "apply-mask",
            s(&dense_path),
            "--mask",
            s(&parent_path),
            "-o",
            s(&via_model),
        ]));
        let data = |p: &PathBuf| {
            let c = Checkpoint::open(p).unwrap();
            c.tensors()
                .iter()
                .map(|t| c.data(t).to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(data(&via_file), data(&via_model));
        ok(&run(
            &["check-mask", s(&via_file), "--reference", s(&mask)],
            settings,
        ));
        let differs = run(
            &["check-mask", s(&dense_path), "--reference", s(&mask)],
            settings,
        );
        assert_eq!(differs.code, 1, "{}", differs.stderr);
        // The fingerprints check-mask prints against the file are those
        // against the model.
        let json =
            |r: soup_tests::Run| -> serde_json::Value { serde_json::from_str(&r.stdout).unwrap() };
        let a = json(soup([
            "check-mask",
            "--json",
            s(&dense_path),
            "--reference",
            s(&mask),
        ]));
        let b = json(soup([
            "check-mask",
            "--json",
            s(&dense_path),
            "--reference",
            s(&parent_path),
        ]));
        assert_eq!(a["tensors"], b["tensors"]);
    }
}

#[test]
fn vote_union_and_intersect_count_kept_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut masks = Vec::new();
    let mut inputs = Vec::new();
    for k in 0..5u64 {
        let p = dir.path().join(format!("m{k}.safetensors"));
        masks.push(kept(&model(&p, 10 + k, Dtype::F16, 0.5)));
        inputs.push(p);
    }
    // One input as a mask file, the others as models.
    let file = dir.path().join("m0.mask");
    ok(&soup(["mask", "extract", s(&inputs[0]), "-o", s(&file)]));
    inputs[0] = file;
    for (verb, extra, need) in [
        ("vote", None, 3),
        ("vote", Some("2"), 2),
        ("union", None, 1),
        ("intersect", None, 5),
    ] {
        for (i, settings) in SETTINGS.iter().enumerate() {
            let out = dir.path().join(format!("{verb}-{need}-{i}.safetensors"));
            let mut args = vec!["mask", verb];
            args.extend(inputs.iter().map(|p| s(p)));
            args.extend(["-o", s(&out)]);
            if let Some(k) = extra {
                args.extend(["--min-votes", k]);
            }
            ok(&run(&args, settings));
            let want: Vec<(String, Vec<bool>)> = masks[0]
                .iter()
                .enumerate()
                .map(|(t, (name, m))| {
                    let votes = |j: usize| masks.iter().filter(|mk| mk[t].1[j]).count();
                    (
                        name.clone(),
                        (0..m.len()).map(|j| votes(j) >= need).collect(),
                    )
                })
                .collect();
            assert_eq!(read_masks(&out), want, "{verb} {need} {settings:?}");
        }
    }
}

#[test]
fn bad_mask_inputs_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    model(&a, 3, Dtype::F32, 0.5);
    // Another model whose `odd.weight` has another shape.
    let mut rng = Rng::new(4);
    let mut other = small_model(&mut rng, Dtype::F32);
    other.push(Tensor::new(
        "odd.weight",
        Dtype::F32,
        &[11, 7],
        vec![1.0; 77],
    ));
    let b = dir.path().join("b.safetensors");
    write_checkpoint(&b, &other, &[], None).unwrap();
    let mask_b = dir.path().join("b.mask");
    ok(&soup(["mask", "extract", s(&b), "-o", s(&mask_b)]));
    // A mask file without one of the tensors.
    let partial = dir.path().join("partial.mask");
    ok(&soup([
        "mask",
        "extract",
        s(&a),
        "-o",
        s(&partial),
        "--exclude",
        "odd",
    ]));
    let out = dir.path().join("out.safetensors");
    let before = files_in(dir.path());
    let shape = "tensor `odd.weight` has shape [7, 11]";
    fails(
        &soup(["apply-mask", s(&a), "--mask", s(&mask_b), "-o", s(&out)]),
        shape,
    );
    fails(
        &soup(["check-mask", s(&a), "--reference", s(&mask_b)]),
        shape,
    );
    fails(
        &soup(["mask", "vote", s(&a), s(&mask_b), s(&a), "-o", s(&out)]),
        shape,
    );
    fails(
        &soup(["apply-mask", s(&a), "--mask", s(&partial), "-o", s(&out)]),
        "`odd.weight`",
    );
    fails(
        &soup([
            "mask",
            "vote",
            s(&a),
            s(&a),
            "--min-votes",
            "3",
            "-o",
            s(&out),
        ]),
        "between 1 and 2 votes",
    );
    fails(
        &soup([
            "mask",
            "union",
            s(&a),
            s(&a),
            "--min-votes",
            "1",
            "-o",
            s(&out),
        ]),
        "--min-votes applies to `soup mask vote` only",
    );
    fails(
        &soup([
            "mask",
            "extract",
            s(&a),
            "-o",
            s(&out),
            "--include",
            "nothing",
        ]),
        "no float tensors selected",
    );
    // A mask file whose packed bits were cut short.
    let bytes = std::fs::read(&partial).unwrap();
    let cut = dir.path().join("cut.mask");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let before_cut = files_in(dir.path());
    fails(
        &soup(["apply-mask", s(&a), "--mask", s(&cut), "-o", s(&out)]),
        "cut.mask",
    );
    assert_eq!(files_in(dir.path()), before_cut);
    let mut before = before;
    before.push("cut.mask".into());
    before.sort();
    assert_eq!(files_in(dir.path()), before);
}
