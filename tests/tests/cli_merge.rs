//! End-to-end tests of `soup merge`: the built binary on small checkpoints
//! generated into temporary folders. JSON output is read back into
//! soup-core's report structs, which deny unknown fields, so the JSON and
//! the structs cannot drift apart.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fixtures::{write_checkpoint, Tensor};
use soup_core::{Checkpoint, Dtype, MaskReport, MergeReport};
use soup_tests::{fixture, soup};

fn merge_json(args: &[&str]) -> MergeReport {
    let mut all = vec!["merge", "--json"];
    all.extend_from_slice(args);
    let run = soup(&all);
    ok(&run);
    serde_json::from_str(&run.stdout).expect("merge --json is a MergeReport")
}

#[test]
fn uniform_merge_matches_the_f64_mean() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 3, Dtype::F32, 1);
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[s(&inputs[0]), s(&inputs[1]), s(&inputs[2]), "-o", s(&out)]);
    assert_eq!(report.outputs, vec![out.clone()]);
    assert_eq!(report.weights, vec![1.0 / 3.0; 3]);
    assert_eq!(report.tensors, 10);
    assert_eq!(report.averaged, 9);
    assert!(report.mask_differences.is_empty());
    assert_close(&read(&out), &reference_mean(&inputs, &[1.0; 3]));
    // The people's version says the same in a sentence.
    let out2 = dir.path().join("soup2.safetensors");
    let run = soup(["merge", s(&inputs[0]), s(&inputs[1]), "-o", s(&out2)]);
    ok(&run);
    assert!(
        run.stdout.starts_with("merged 2 checkpoints into"),
        "{}",
        run.stdout
    );
}

#[test]
fn weighted_merge_matches_the_weighted_mean() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 3, Dtype::F32, 2);
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[
        s(&inputs[0]),
        s(&inputs[1]),
        s(&inputs[2]),
        "-o",
        s(&out),
        "--weights",
        "5,3,2",
    ]);
    assert_eq!(report.weights, vec![0.5, 0.3, 0.2]);
    assert_close(&read(&out), &reference_mean(&inputs, &[5.0, 3.0, 2.0]));
    // A zero weight leaves that input out of the mean (but not out of the
    // mask check), even when it is the first.
    let out = dir.path().join("zero.safetensors");
    merge_json(&[
        s(&inputs[0]),
        s(&inputs[1]),
        s(&inputs[2]),
        "-o",
        s(&out),
        "--weights",
        "0,1,1",
    ]);
    assert_close(&read(&out), &reference_mean(&inputs, &[0.0, 1.0, 1.0]));
}

#[test]
fn bad_weights_are_rejected_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 3, Dtype::F32, 3);
    let out = dir.path().join("soup.safetensors");
    for (weights, problem) in [
        ("--weights=-1,1,1", "finite and non-negative, got -1"),
        ("--weights=nan,1,1", "finite and non-negative, got NaN"),
        ("--weights=inf,1,1", "finite and non-negative, got inf"),
        ("--weights=0,0,0", "weights sum to zero"),
        ("--weights=1,1", "2 weights given for 3 inputs"),
        ("--weights=1,1,1,1", "4 weights given for 3 inputs"),
    ] {
        let run = soup([
            "merge",
            s(&inputs[0]),
            s(&inputs[1]),
            s(&inputs[2]),
            "-o",
            s(&out),
            weights,
        ]);
        fails(&run, problem);
        assert!(!out.exists());
    }
    // Unparseable weights are a usage error (clap), also exit 2.
    let run = soup([
        "merge",
        s(&inputs[0]),
        s(&inputs[1]),
        "-o",
        s(&out),
        "--weights",
        "a,b",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn dtype_option_sets_the_output_type_of_float_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 2, Dtype::F32, 4);
    let want = reference_mean(&inputs, &[1.0, 1.0]);
    for (name, dtype) in [
        ("bf16", Dtype::BF16),
        ("F16", Dtype::F16),
        ("f64", Dtype::F64),
        ("F32", Dtype::F32),
    ] {
        let out = dir.path().join(format!("soup-{name}.safetensors"));
        ok(&soup([
            "merge",
            s(&inputs[0]),
            s(&inputs[1]),
            "-o",
            s(&out),
            "--dtype",
            name,
        ]));
        let got = read(&out);
        for (t, dt, _) in &got {
            let expected = if t == "bn1.num_batches_tracked" {
                Dtype::I64
            } else {
                dtype
            };
            assert_eq!(*dt, expected, "{t} written as {name}");
        }
        // Compare in the output's precision (F64 output of F32 inputs is
        // as precise as the f32 accumulator).
        let got: Vec<_> = got
            .into_iter()
            .map(|(n, d, v)| (n, if d == Dtype::F64 { Dtype::F32 } else { d }, v))
            .collect();
        assert_close(&got, &want);
    }
    let out = dir.path().join("int.safetensors");
    let run = soup([
        "merge",
        s(&inputs[0]),
        s(&inputs[1]),
        "-o",
        s(&out),
        "--dtype",
        "I32",
    ]);
    fails(
        &run,
        "--dtype: `I32` is not a float type (F64, F32, F16 or BF16)",
    );
    let run = soup([
        "merge",
        s(&inputs[0]),
        s(&inputs[1]),
        "-o",
        s(&out),
        "--dtype",
        "F33",
    ]);
    fails(
        &run,
        "--dtype: `F33` is not a float type (F64, F32, F16 or BF16)",
    );
}

#[test]
fn each_float_input_type_merges_in_its_own_type() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16] {
        let sub = dir.path().join(format!("{dtype:?}"));
        std::fs::create_dir(&sub).unwrap();
        let (_, inputs) = candidates(&sub, 3, dtype, 5);
        let out = sub.join("soup.safetensors");
        ok(&soup([
            "merge",
            s(&inputs[0]),
            s(&inputs[1]),
            s(&inputs[2]),
            "-o",
            s(&out),
        ]));
        let got = read(&out);
        assert!(got
            .iter()
            .all(|(n, d, _)| *d == dtype || n.ends_with("tracked")));
        assert_close(&got, &reference_mean(&inputs, &[1.0; 3]));
    }
}

/// Two candidates whose `steps` (I64) and `flag` (BOOL) tensors may differ.
fn with_ints(dir: &Path, steps: [f64; 2], flags: [f64; 2]) -> Vec<PathBuf> {
    (0..2)
        .map(|k| {
            let path = dir.join(format!("ints-{k}.safetensors"));
            let tensors = vec![
                Tensor::new("w", Dtype::F32, &[4], vec![1.0 + k as f64, 0.0, 2.0, 3.0]),
                Tensor::new("steps", Dtype::I64, &[2], vec![steps[k], 5.0]),
                Tensor::new("flag", Dtype::BOOL, &[1], vec![flags[k]]),
            ];
            write_checkpoint(&path, &tensors, &[], None).unwrap();
            path
        })
        .collect()
}

#[test]
fn equal_int_and_bool_tensors_are_carried_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = with_ints(dir.path(), [7.0, 7.0], [1.0, 1.0]);
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[s(&inputs[0]), s(&inputs[1]), "-o", s(&out)]);
    assert_eq!((report.tensors, report.averaged), (3, 1));
    let got = read(&out);
    assert_eq!(got[0], ("flag".into(), Dtype::BOOL, vec![1.0]));
    assert_eq!(got[1], ("steps".into(), Dtype::I64, vec![7.0, 5.0]));
    assert_eq!(got[2].2, vec![1.5, 0.0, 2.0, 3.0]);
}

#[test]
fn differing_int_tensors_are_an_error_unless_int_policy_first() {
    let dir = tempfile::tempdir().unwrap();
    for (steps, flags, tensor) in [
        ([7.0, 8.0], [1.0, 1.0], "`steps`"),
        ([7.0, 7.0], [1.0, 0.0], "`flag`"),
    ] {
        let inputs = with_ints(dir.path(), steps, flags);
        let out = dir.path().join("soup.safetensors");
        let run = soup(["merge", s(&inputs[0]), s(&inputs[1]), "-o", s(&out)]);
        fails(&run, tensor);
        assert!(run.stderr.contains("--int-policy first"), "{}", run.stderr);
        assert!(!out.exists());
        ok(&soup([
            "merge",
            s(&inputs[0]),
            s(&inputs[1]),
            "-o",
            s(&out),
            "--int-policy",
            "first",
        ]));
        let got = read(&out);
        assert_eq!(got[0].2, vec![flags[0]]);
        assert_eq!(got[1].2, vec![steps[0], 5.0]);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Two inputs whose masks differ at known places.
fn differing_masks(dir: &Path) -> [PathBuf; 2] {
    let a = vec![
        Tensor::new("w", Dtype::F32, &[6], vec![1.0, 0.0, 2.0, 0.0, 4.0, -0.0]),
        Tensor::new("b", Dtype::F32, &[2], vec![1.0, 3.0]),
    ];
    let b = vec![
        Tensor::new("w", Dtype::F32, &[6], vec![3.0, 6.0, 0.0, 0.0, 2.0, 0.0]),
        Tensor::new("b", Dtype::F32, &[2], vec![3.0, 1.0]),
    ];
    let pa = dir.join("a.safetensors");
    let pb = dir.join("b.safetensors");
    write_checkpoint(&pa, &a, &[], None).unwrap();
    write_checkpoint(&pb, &b, &[], None).unwrap();
    [pa, pb]
}

#[test]
fn mask_policy_refuse_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = differing_masks(dir.path());
    let out = dir.path().join("soup.safetensors");
    for extra in [None, Some("--mask-policy=refuse")] {
        let mut args = vec!["merge", s(&a), s(&b), "-o", s(&out)];
        args.extend(extra);
        let run = soup(&args);
        fails(&run, "masks differ: tensor `w` has 2 positions where");
        assert!(!out.exists());
    }
}

#[test]
fn mask_policy_union_is_the_plain_mean() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = differing_masks(dir.path());
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[s(&a), s(&b), "-o", s(&out), "--mask-policy", "union"]);
    assert_eq!(report.mask_differences, vec![("w".to_string(), vec![0, 2])]);
    let got = read(&out);
    assert_eq!(got[1].2, vec![2.0, 3.0, 1.0, 0.0, 3.0, 0.0]);
    assert_eq!(got[0].2, vec![2.0, 2.0]);
}

#[test]
fn table_names_the_mask_policy_as_the_flag_spells_it() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = differing_masks(dir.path());
    let out = dir.path().join("soup.safetensors");
    let run = soup([
        "merge",
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--mask-policy",
        "union",
    ]);
    ok(&run);
    assert!(
        run.stdout.contains("resolved by --mask-policy union\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn mask_policy_intersect_zeroes_where_any_input_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = differing_masks(dir.path());
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[s(&a), s(&b), "-o", s(&out), "--mask-policy", "intersect"]);
    assert_eq!(report.mask_differences.len(), 1);
    let got = read(&out);
    assert_eq!(got[1].2, vec![2.0, 0.0, 0.0, 0.0, 3.0, 0.0]);
    assert_eq!(got[0].2, vec![2.0, 2.0]);
    // The soup's mask is the intersection of the inputs' masks.
    let run = soup(["check-mask", "--json", "--reference", s(&out), s(&a), s(&b)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: MaskReport = serde_json::from_str(&run.stdout).unwrap();
    let w = report.tensors.iter().find(|t| t.name == "w").unwrap();
    assert_eq!(w.differing_per_input, vec![1, 1]);
}

#[test]
fn sharded_inputs_and_sharded_output_give_the_same_soup() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.safetensors");
    let c0 = fixture("candidate-0.safetensors");
    let c1 = fixture("candidate-1.safetensors");
    let c1_sharded = fixture("candidate-1-sharded");
    ok(&soup(["merge", s(&c0), s(&c1), "-o", s(&single)]));
    // A sharded input (the folder, or its index file) gives the same data.
    for input in [
        c1_sharded.clone(),
        c1_sharded.join("model.safetensors.index.json"),
    ] {
        let out = dir.path().join("from-sharded.safetensors");
        ok(&soup([
            "merge",
            s(&c0),
            s(&input),
            "-o",
            s(&out),
            "--force",
        ]));
        assert_eq!(read(&out), read(&single));
    }
    // A sharded output: several files and an index.
    let folder = dir.path().join("sharded-soup");
    let report = merge_json(&[
        s(&c0),
        s(&c1_sharded),
        "-o",
        s(&folder),
        "--shard-size",
        "2KB",
    ]);
    assert!(report.outputs.len() >= 3, "{:?}", report.outputs);
    assert!(report
        .outputs
        .contains(&folder.join("model.safetensors.index.json")));
    for file in &report.outputs {
        assert!(
            file.starts_with(&folder) && file.exists(),
            "{}",
            file.display()
        );
        if file.extension().is_some_and(|e| e == "safetensors") {
            // At most 2 KB of data per shard, unless one tensor is larger.
            let shard = Checkpoint::open(file).unwrap();
            assert!(
                shard.data_bytes() <= 2000 || shard.tensors().len() == 1,
                "{}",
                file.display()
            );
        }
    }
    assert_eq!(read(&folder), read(&single));
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 10);
    // No staging leftovers beside the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".soup-tmp")),
        "{names:?}"
    );
}

#[test]
fn force_replaces_an_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 2, Dtype::F32, 6);
    for shard_size in [None, Some("1KB")] {
        let out = dir.path().join("soup");
        let mut args = vec!["merge", s(&inputs[0]), s(&inputs[1]), "-o", s(&out)];
        args.extend(
            shard_size
                .map(|v| ["--shard-size", v])
                .into_iter()
                .flatten(),
        );
        if shard_size.is_some() {
            // Only a folder holding exactly a sharded checkpoint is replaced
            // (tests/tests/safety.rs checks that any other folder is kept).
            ok(&soup([
                "shard",
                s(&inputs[0]),
                "-o",
                s(&out),
                "--shard-size",
                "2KB",
            ]));
        } else {
            std::fs::write(&out, b"old").unwrap();
        }
        fails(&soup(&args), "output exists (use --force to replace it)");
        args.push("--force");
        ok(&soup(&args));
        assert_close(&read(&out), &reference_mean(&inputs, &[1.0, 1.0]));
        if out.is_dir() {
            std::fs::remove_dir_all(&out).unwrap();
        } else {
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn provenance_records_recipe_version_and_input_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, inputs) = candidates(dir.path(), 3, Dtype::F32, 7);
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[
        s(&inputs[0]),
        s(&inputs[1]),
        s(&inputs[2]),
        "-o",
        s(&out),
        "--weights",
        "1,1,2",
        "--mask-policy",
        "intersect",
        "--int-policy",
        "first",
        "--dtype",
        "BF16",
    ]);
    let ck = Checkpoint::open(&out).unwrap();
    let meta = ck.metadata();
    // Common keys are kept; keys whose values differ are dropped.
    assert_eq!(meta["format"], "pt");
    assert!(!meta.contains_key("run"));
    assert_eq!(meta["soup.operation"], "merge");
    assert_eq!(
        meta["soup.version"],
        format!("soup {}", env!("CARGO_PKG_VERSION"))
    );
    let recipe: serde_json::Value = serde_json::from_str(&meta["soup.recipe"]).unwrap();
    assert_eq!(recipe["weights"], serde_json::json!([0.25, 0.25, 0.5]));
    assert_eq!(recipe["mask_policy"], "intersect");
    assert_eq!(recipe["int_policy"], "first");
    assert_eq!(recipe["dtype"], "BF16");
    let recorded: Vec<serde_json::Value> = serde_json::from_str(&meta["soup.inputs"]).unwrap();
    assert_eq!(recorded.len(), 3);
    for ((entry, input), reported) in recorded.iter().zip(&inputs).zip(&report.input_digest) {
        let hash =
            soup_core::hash_checkpoint(&Checkpoint::open(input).unwrap(), &Default::default())
                .unwrap()
                .digest;
        assert!(hash.starts_with("blake3:"), "{hash}");
        assert_eq!(entry["path"], s(input));
        assert_eq!(entry["digest"], hash.as_str());
        assert_eq!(reported, &hash);
    }
    // A soup of soups records its own inputs, not theirs.
    let out2 = dir.path().join("soup2.safetensors");
    ok(&soup(["merge", s(&out), s(&out), "-o", s(&out2)]));
    let meta2 = Checkpoint::open(&out2).unwrap().metadata().clone();
    assert_eq!(meta2["format"], "pt");
    let recipe2: serde_json::Value = serde_json::from_str(&meta2["soup.recipe"]).unwrap();
    assert_eq!(recipe2["weights"], serde_json::json!([0.5, 0.5]));
    // Merging one file with itself returns it bit for bit.
    assert_eq!(read(&out2), read(&out));
}

#[test]
fn sharded_input_hash_equals_its_single_file_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soup.safetensors");
    let report = merge_json(&[
        s(&fixture("candidate-1.safetensors")),
        s(&fixture("candidate-1-sharded")),
        "-o",
        s(&out),
    ]);
    assert_eq!(report.input_digest[0], report.input_digest[1]);
}
