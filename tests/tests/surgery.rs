//! End-to-end tests of the surgery verbs: diff, hash, edit, apply-mask,
//! shard and unshard, with round trips and bad input.

use std::path::{Path, PathBuf};

use fixtures::{small_model, write_checkpoint, Rng, Tensor};
use serde::Deserialize;
use soup_core::DiffReport;
use soup_core::{ApplyMaskReport, EditReport, RelayoutReport};
use soup_core::{Checkpoint, Control, Dtype};
use soup_tests::{files_in, fixture, soup, Run};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json<T: for<'a> Deserialize<'a>>(run: &Run) -> T {
    assert_eq!(run.code, 0, "soup failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("JSON matches the report type")
}

/// `soup hash --json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HashOutput {
    #[allow(dead_code)]
    path: PathBuf,
    digest: String,
    tensors: Vec<TensorHash>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TensorHash {
    name: String,
    digest: String,
}

fn hash(p: &Path) -> HashOutput {
    json(&soup(["hash", "--json", path(p)]))
}

fn diff(a: &Path, b: &Path, extra: &[&str]) -> (i32, DiffReport) {
    let mut args = vec!["diff", "--json", path(a), path(b)];
    args.extend_from_slice(extra);
    let run = soup(&args);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    (
        run.code,
        serde_json::from_str(&run.stdout).expect("DiffReport"),
    )
}

#[test]
fn diff_reports_per_tensor_and_exits_by_verdict() {
    let c0 = fixture("candidate-0.safetensors");
    let c1 = fixture("candidate-1.safetensors");
    // The same tensors in another layout are equal.
    let (code, r) = diff(&c1, &fixture("candidate-1-sharded"), &[]);
    assert_eq!(code, 0);
    assert!(
        r.equal
            && r.tensors
                .iter()
                .all(|t| t.max_abs_diff == Some(0.0) || t.max_abs_diff.is_none())
    );
    // Two candidates differ in values, not in masks.
    let (code, r) = diff(&c0, &c1, &[]);
    assert_eq!(code, 1);
    let conv = r.tensors.iter().find(|t| t.name == "conv2.weight").unwrap();
    assert!(conv.differing > 0 && conv.max_abs_diff.unwrap() > 0.0);
    assert_eq!(conv.mask_differences, Some(0));
    assert!(conv.cosine.unwrap() > 0.9 && conv.rel_l2.unwrap() < 0.5);
    let int = r
        .tensors
        .iter()
        .find(|t| t.name == "bn1.num_batches_tracked")
        .unwrap();
    assert!(int.equal && int.cosine.is_none());
    // Within a tolerance they are equal.
    assert_eq!(diff(&c0, &c1, &["--atol", "1"]).0, 0);
    assert_eq!(diff(&c0, &c1, &["--rtol", "0.5"]).0, 0);
    assert_eq!(diff(&c0, &c1, &["--rtol", "0.001"]).0, 1);
    // Masks that differ are counted.
    let (_, r) = diff(&c0, &fixture("other-mask.safetensors"), &[]);
    assert!(r
        .tensors
        .iter()
        .any(|t| t.mask_differences.unwrap_or(0) > 0));
    // A dtype change is a difference even where values survive the cast.
    let (code, r) = diff(
        &c0,
        &fixture("candidate-0-f16.safetensors"),
        &["--atol", "1"],
    );
    assert_eq!(code, 1);
    assert!(r
        .tensors
        .iter()
        .any(|t| t.note.as_deref() == Some("dtypes differ")));
    // The table.
    let run = soup(["diff", path(&c0), path(&c1)]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("conv2.weight") && run.stdout.contains("DIFFERENT"));
    let run = soup(["diff", path(&c0), path(&c0)]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("verdict: equal"));
}

#[test]
fn hash_ignores_metadata_order_and_layout_but_not_names() {
    let c1 = fixture("candidate-1.safetensors");
    let single = hash(&c1);
    let sharded = hash(&fixture("candidate-1-sharded"));
    assert_eq!(single.digest, sharded.digest);
    assert_eq!(single.tensors, sharded.tensors);
    let lib =
        soup_core::hash_checkpoint(&Checkpoint::open(&c1).unwrap(), &Control::default()).unwrap();
    assert_eq!(lib.digest, single.digest);

    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.safetensors");
    let run = soup([
        "edit",
        path(&c1),
        "-o",
        path(&meta),
        "--set-meta",
        "note=hello",
        "--del-meta",
        "format",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(hash(&meta).digest, single.digest);

    let renamed = dir.path().join("renamed.safetensors");
    let run = soup([
        "edit",
        path(&c1),
        "-o",
        path(&renamed),
        "--rename",
        "^fc\\.=head.",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let h = hash(&renamed);
    assert_ne!(h.digest, single.digest);
    let unchanged = |name: &str| {
        let a = single.tensors.iter().find(|t| t.name == name).unwrap();
        let b = h.tensors.iter().find(|t| t.name == name).unwrap();
        a == b
    };
    assert!(unchanged("conv1.weight"));
    assert!(h.tensors.iter().any(|t| t.name == "head.weight"));
    let table = soup(["hash", path(&c1)]);
    assert!(table.stdout.contains(&single.digest) && table.stdout.contains("conv1.weight"));
}

#[test]
fn edit_round_trips_and_records_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = fixture("candidate-0.safetensors");
    let original = hash(&c0);
    // Rename there and back.
    let there = dir.path().join("there.safetensors");
    let r: EditReport = json(&soup([
        "edit",
        "--json",
        path(&c0),
        "-o",
        path(&there),
        "--rename",
        "^(.*)\\.weight$=${1}.w",
        "--rename",
        "^bn1\\.=norm1.",
    ]));
    assert!(r
        .renamed
        .contains(&("bn1.weight".to_string(), "norm1.w".to_string())));
    assert!(r
        .renamed
        .contains(&("conv2.weight".to_string(), "conv2.w".to_string())));
    let back = dir.path().join("back.safetensors");
    let run = soup([
        "edit",
        path(&there),
        "-o",
        path(&back),
        "--rename",
        "\\.w$=.weight",
        "--rename",
        "^norm1\\.=bn1.",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(hash(&back).digest, original.digest);

    // Provenance and metadata.
    let ck = Checkpoint::open(&there).unwrap();
    assert_eq!(ck.metadata()["soup.operation"], "edit");
    assert_eq!(ck.metadata()["format"], "pt");
    assert!(ck.metadata()["soup.inputs"].contains(&original.digest));
    let recipe: serde_json::Value = serde_json::from_str(&ck.metadata()["soup.recipe"]).unwrap();
    assert_eq!(recipe["rename"][0], "^(.*)\\.weight$=${1}.w");

    // Keep and drop.
    let kept = dir.path().join("kept.safetensors");
    let r: EditReport = json(&soup([
        "edit",
        "--json",
        path(&c0),
        "-o",
        path(&kept),
        "--keep",
        "^conv",
        "--drop",
        "bias$",
    ]));
    assert_eq!(r.tensors, 2);
    let names: Vec<String> = Checkpoint::open(&kept)
        .unwrap()
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["conv1.weight", "conv2.weight"]);
    let (code, d) = diff(&c0, &kept, &[]);
    assert_eq!(code, 1);
    assert!(d.only_in_a.contains(&"fc.weight".to_string()) && d.only_in_b.is_empty());
    assert_eq!(d.differing_tensors, 0);

    // Cast some tensors to F16 and back: values within F16 precision, and
    // casting the result again reproduces it bit for bit.
    let half = dir.path().join("half.safetensors");
    let r: EditReport = json(&soup([
        "edit",
        "--json",
        path(&c0),
        "-o",
        path(&half),
        "--cast",
        "f16",
        "--only",
        "weight$",
    ]));
    assert_eq!(r.cast.len(), 4, "{:?}", r.cast);
    let ck = Checkpoint::open(&half).unwrap();
    assert_eq!(ck.get("conv1.weight").unwrap().dtype, Dtype::F16);
    assert_eq!(ck.get("conv2.bias").unwrap().dtype, Dtype::F32);
    assert_eq!(ck.get("bn1.num_batches_tracked").unwrap().dtype, Dtype::I64);
    let full = dir.path().join("full.safetensors");
    assert_eq!(
        soup(["edit", path(&half), "-o", path(&full), "--cast", "F32"]).code,
        0
    );
    assert_eq!(diff(&c0, &full, &["--rtol", "1e-3"]).0, 0);
    let half2 = dir.path().join("half2.safetensors");
    assert_eq!(
        soup([
            "edit",
            path(&full),
            "-o",
            path(&half2),
            "--cast",
            "F16",
            "--only",
            "weight$"
        ])
        .code,
        0
    );
    assert_eq!(hash(&half2).digest, hash(&half).digest);
    // Masks survive the casts.
    assert_eq!(soup(["check-mask", path(&c0), path(&full)]).code, 0);
}

#[test]
fn apply_mask_transfers_a_parents_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixture("parent.safetensors");
    let dense = dir.path().join("dense.safetensors");
    write_checkpoint(
        &dense,
        &small_model(&mut Rng::new(5), Dtype::F32),
        &[],
        None,
    )
    .unwrap();
    let out = dir.path().join("masked.safetensors");
    let r: ApplyMaskReport = json(&soup([
        "apply-mask",
        "--json",
        path(&dense),
        "--mask",
        path(&parent),
        "-o",
        path(&out),
    ]));
    assert_eq!(r.zeroed, 36 + 576 + 80);
    assert_eq!(
        soup(["check-mask", "--reference", path(&parent), path(&out)]).code,
        0
    );
    // Non-zero values are the input's.
    let (_, d) = diff(&dense, &out, &[]);
    let conv = d.tensors.iter().find(|t| t.name == "conv2.weight").unwrap();
    assert_eq!(conv.differing, 576);
    assert_eq!(
        d.tensors
            .iter()
            .find(|t| t.name == "conv2.bias")
            .unwrap()
            .differing,
        0
    );
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(ck.metadata()["soup.operation"], "apply-mask");
    assert!(ck.metadata()["soup.inputs"].contains(&hash(&parent).digest));
    // A checkpoint masked by its own mask is unchanged.
    let same = dir.path().join("same.safetensors");
    let r: ApplyMaskReport = json(&soup([
        "apply-mask",
        "--json",
        path(&parent),
        "--mask",
        path(&parent),
        "-o",
        path(&same),
    ]));
    assert_eq!(r.zeroed, 0);
    assert_eq!(hash(&same).digest, hash(&parent).digest);
}

#[test]
fn shard_and_unshard_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = fixture("candidate-0.safetensors");
    let shards = dir.path().join("shards");
    let r: RelayoutReport = json(&soup([
        "shard",
        "--json",
        path(&c0),
        "-o",
        path(&shards),
        "--shard-size",
        "2KB",
    ]));
    assert!(r.outputs.len() >= 3, "{:?}", r.outputs);
    assert!(shards.join("model.safetensors.index.json").is_file());
    assert_eq!(hash(&shards).digest, hash(&c0).digest);
    let single = dir.path().join("single.safetensors");
    let r: RelayoutReport = json(&soup([
        "unshard",
        "--json",
        path(&shards),
        "-o",
        path(&single),
    ]));
    assert_eq!(r.outputs, std::slice::from_ref(&single));
    assert_eq!(hash(&single).digest, hash(&c0).digest);
    assert_eq!(diff(&c0, &single, &[]).0, 0);
    let ck = Checkpoint::open(&single).unwrap();
    assert_eq!(ck.metadata()["format"], "pt");
    assert_eq!(ck.metadata()["soup.operation"], "unshard");
    assert!(!ck.metadata().contains_key("soup.shard"));
    // An existing folder needs --force.
    let again = soup([
        "shard",
        path(&c0),
        "-o",
        path(&shards),
        "--shard-size",
        "4KB",
    ]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    let forced = soup([
        "shard",
        path(&c0),
        "-o",
        path(&shards),
        "--shard-size",
        "4KB",
        "--force",
    ]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(hash(&shards).digest, hash(&c0).digest);
    assert_eq!(files_in(dir.path()), ["shards", "single.safetensors"]);
}

fn mismatched(dir: &Path) -> PathBuf {
    let mut model = small_model(&mut Rng::new(1), Dtype::F32);
    let fc = model.iter_mut().find(|t| t.name == "fc.weight").unwrap();
    *fc = Tensor::new("fc.weight", Dtype::F32, &[16, 10], fc.values.clone());
    let p = dir.join("transposed.safetensors");
    write_checkpoint(&p, &model, &[], None).unwrap();
    p
}

/// Bad input for each verb: a clear error naming the problem, exit 2,
/// nothing written.
#[test]
fn bad_surgery_requests_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let c0 = fixture("candidate-0.safetensors");
    let out = dir.path().join("out.safetensors");
    let o = path(&out);
    let transposed = mismatched(inputs.path());
    let parent = fixture("parent.safetensors");
    let missing = dir.path().join("missing");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["edit", path(&c0), "-o", o, "--rename", "conv(=x"],
            "invalid regex `conv(`",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--rename", "conv"],
            "rename `conv` is not of the form REGEX=REPLACEMENT (in --rename)",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--rename", "^conv[12]=conv"],
            "name collision: `conv1.weight` and `conv2.weight` would both be called `conv.weight`",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--rename", ".*="],
            "without a name",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--drop", "."],
            "leave no tensors",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--keep", "nothing"],
            "leave no tensors",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--drop", "["],
            "invalid regex `[`",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--cast", "I64"],
            "cannot cast to I64: only to a float type (F64, F32, F16, BF16) (in --cast)",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--cast", "F17"],
            "unknown dtype `F17`",
        ),
        (vec!["edit", path(&c0), "-o", o, "--only", "conv"], "--cast"),
        (
            vec!["edit", path(&c0), "-o", o, "--set-meta", "novalue"],
            "metadata entry `novalue` is not of the form KEY=VALUE (in --set-meta)",
        ),
        (
            vec!["edit", path(&c0), "-o", o, "--set-meta", "soup.operation=x"],
            "cannot set metadata key `soup.operation`",
        ),
        (
            vec!["edit", path(&c0), "-o", path(&c0), "--force"],
            "would overwrite input",
        ),
        (
            vec![
                "apply-mask",
                path(&c0),
                "--mask",
                path(&transposed),
                "-o",
                o,
            ],
            "tensor `fc.weight` has shape [10, 16]",
        ),
        (
            vec![
                "apply-mask",
                path(&c0),
                "--mask",
                path(&parent),
                "-o",
                o,
                "--include",
                "(",
            ],
            "invalid regex",
        ),
        (
            vec![
                "apply-mask",
                path(&c0),
                "--mask",
                path(&parent),
                "-o",
                o,
                "--include",
                "nothing",
            ],
            "no float tensors selected",
        ),
        (
            vec!["diff", path(&c0), path(&transposed), "--atol", "-1"],
            "atol must be finite and non-negative",
        ),
        (vec!["diff", path(&c0), path(&missing)], "missing"),
        (vec!["hash", path(&missing)], "missing"),
        (
            vec!["unshard", path(&c0), "-o", o],
            "not a sharded checkpoint",
        ),
        (
            vec!["shard", path(&c0), "-o", o, "--shard-size", "0"],
            "size",
        ),
    ];
    for (args, message) in &cases {
        let run = soup(args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(
            files_in(dir.path()).is_empty(),
            "{args:?} left {:?}",
            files_in(dir.path())
        );
    }
    // Mismatched shapes are reported by diff, not refused.
    let (code, r) = diff(&c0, &transposed, &[]);
    assert_eq!(code, 1);
    let fc = r.tensors.iter().find(|t| t.name == "fc.weight").unwrap();
    assert_eq!(fc.note.as_deref(), Some("shapes differ"));
    // Excluding the mismatched tensor makes apply-mask possible.
    let run = soup([
        "apply-mask",
        path(&c0),
        "--mask",
        path(&transposed),
        "-o",
        o,
        "--exclude",
        "^fc\\.",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
