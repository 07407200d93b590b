//! End-to-end tests of `soup prune`: exact counts, the tie-break, scopes,
//! iterative phases, untouched tensors, provenance, bad input, and parity
//! with `torch.nn.utils.prune`.

use std::path::{Path, PathBuf};

use fixtures::{small_model, write_checkpoint, Rng};
use proptest::prelude::*;
use soup_core::Accumulator;
use soup_core::{removal_count, PruneReport};
use soup_core::{Checkpoint, Dtype};
use soup_tests::{fixture, python, soup, soup_bin, Run};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn values(ck: &Checkpoint, name: &str) -> Vec<f64> {
    let t = ck.get(name).expect("tensor exists");
    let mut out = Vec::new();
    f64::decode(ck.data(t), t.float_type().expect("float"), &mut out);
    out
}

fn report(run: &Run) -> PruneReport {
    assert_eq!(run.code, 0, "soup failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("prune --json matches PruneReport")
}

fn prune(input: &Path, output: &Path, args: &[&str]) -> PruneReport {
    let mut all = vec!["prune", path(input), "-o", path(output), "--json"];
    all.extend_from_slice(args);
    report(&soup(all))
}

/// The folder holds only `expected` (no temporary files left behind).
fn assert_only(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "files in {}", dir.display());
}

const SELECTED: [&str; 3] = ["conv1.weight", "conv2.weight", "fc.weight"];

fn model(dir: &Path, seed: u64, dtype: Dtype) -> PathBuf {
    let p = dir.join("dense.safetensors");
    let mut tensors = small_model(&mut Rng::new(seed), dtype);
    // Exact ties across tensors: the tie-break decides among them.
    let shared: Vec<f64> = tensors[0].values[..20].to_vec();
    tensors[6].values[..20].copy_from_slice(&shared);
    write_checkpoint(&p, &tensors, &[("format", "pt")], None).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Two --of-remaining phases of q: each removes exactly round(q * alive)
    /// of the alive weights, so from a dense start the zeros are exactly
    /// k1 + round(q * (n - k1)) with k1 = round(q * n), within one of
    /// (1 - (1 - q)^2) * n. Pruned weights never come back, kept magnitudes
    /// are >= removed ones in each phase, unselected tensors are untouched,
    /// and each output passes check-mask against itself.
    #[test]
    fn of_remaining_phases_compose_exactly(seed in 0u64..1000, q in 0.05f64..0.95, half in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let dtype = if half { Dtype::BF16 } else { Dtype::F32 };
        let dense = model(dir.path(), seed, dtype);
        let p1 = dir.path().join("p1.safetensors");
        let p2 = dir.path().join("p2.safetensors");
        let q_arg = q.to_string();
        let r1 = prune(&dense, &p1, &["--sparsity", &q_arg, "--of-remaining"]);
        let r2 = prune(&p1, &p2, &["--sparsity", &q_arg, "--of-remaining"]);
        let n = r1.selected_elements;
        let z0 = r1.zeros_before;
        let k1 = removal_count(q, n - z0);
        prop_assert_eq!(r1.removed, k1);
        prop_assert_eq!(r2.removed, removal_count(q, n - z0 - k1));
        prop_assert_eq!(r2.zeros_after, z0 + k1 + removal_count(q, n - z0 - k1));
        if z0 == 0 {
            let ideal = (1.0 - (1.0 - q).powi(2)) * n as f64;
            prop_assert!((r2.zeros_after as f64 - ideal).abs() <= 1.0);
        }

        let cks: Vec<Checkpoint> = [&dense, &p1, &p2].iter().map(|p| Checkpoint::open(p).unwrap()).collect();
        for phase in 0..2 {
            let (before, after) = (&cks[phase], &cks[phase + 1]);
            let mut kept_min = f64::INFINITY;
            let mut removed_max = 0.0f64;
            for name in SELECTED {
                let (b, a) = (values(before, name), values(after, name));
                for (x, y) in b.iter().zip(&a) {
                    if *x == 0.0 { prop_assert_eq!(*y, 0.0, "pruned weights come back in {}", name); }
                    else if *y == 0.0 { removed_max = removed_max.max(x.abs()); }
                    else { prop_assert_eq!(x, y); kept_min = kept_min.min(x.abs()); }
                }
            }
            prop_assert!(removed_max <= kept_min, "removed {} > kept {}", removed_max, kept_min);
            for t in before.tensors().iter().filter(|t| !SELECTED.contains(&t.name.as_str())) {
                prop_assert_eq!(before.data(t), after.data(after.get(&t.name).unwrap()), "{} changed", &t.name);
            }
        }
        for p in [&p1, &p2] {
            prop_assert_eq!(soup(["check-mask", path(p), path(p)]).code, 0);
        }
    }

    /// The layer scope removes round(S * n) in every tensor on its own.
    #[test]
    fn layer_scope_counts_are_exact_per_tensor(seed in 0u64..1000, s in 0.0f64..0.99) {
        let dir = tempfile::tempdir().unwrap();
        let dense = model(dir.path(), seed, Dtype::F32);
        let out = dir.path().join("out.safetensors");
        let r = prune(&dense, &out, &["--sparsity", &s.to_string(), "--scope", "layer"]);
        prop_assert_eq!(r.tensors.len(), 3);
        for t in &r.tensors {
            prop_assert_eq!(t.zeros_after, t.zeros_before.max(removal_count(s, t.numel)), "{}", &t.name);
        }
    }
}

#[test]
fn global_prune_counts_ties_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let dense = model(dir.path(), 5, Dtype::F32);
    let out = dir.path().join("out.safetensors");
    let r = prune(&dense, &out, &["--sparsity", "0.5"]);
    assert_eq!(r.selected_elements, 72 + 1152 + 160);
    assert_eq!(r.zeros_after, removal_count(0.5, r.selected_elements));
    assert_eq!(r.target, r.zeros_after);
    let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, SELECTED);
    // Human output too.
    let table = soup(["prune", path(&dense), "--dry-run", "--sparsity", "0.5"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("conv2.weight") && table.stdout.contains("nothing written"));

    // The dry run reports the same and writes nothing.
    let dry: PruneReport = report(&soup([
        "prune",
        path(&dense),
        "--dry-run",
        "--json",
        "--sparsity",
        "0.5",
    ]));
    assert_eq!(
        dry,
        PruneReport {
            outputs: vec![],
            input_digest: None,
            ..r.clone()
        }
    );
    assert_only(dir.path(), &["dense.safetensors", "out.safetensors"]);

    // Provenance names the operation, recipe and input hash.
    let ck = Checkpoint::open(&out).unwrap();
    let meta = ck.metadata();
    assert_eq!(meta["soup.operation"], "prune");
    assert_eq!(meta["format"], "pt");
    let recipe: serde_json::Value = serde_json::from_str(&meta["soup.recipe"]).unwrap();
    assert_eq!(recipe["sparsity"], 0.5);
    assert_eq!(recipe["scope"], "global");
    let hash = soup(["hash", "--json", path(&dense)]);
    let hash: serde_json::Value = serde_json::from_str(&hash.stdout).unwrap();
    assert!(meta["soup.inputs"].contains(hash["digest"].as_str().unwrap()));
    assert_eq!(r.input_digest.as_deref(), hash["digest"].as_str());
}

#[test]
fn include_and_exclude_change_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    let dense = model(dir.path(), 9, Dtype::F32);
    let out = dir.path().join("a.safetensors");
    let r = prune(
        &dense,
        &out,
        &[
            "--sparsity",
            "0.3",
            "--exclude",
            "^conv1\\.",
            "--exclude",
            "^fc\\.",
        ],
    );
    let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conv2.weight"]);
    let out = dir.path().join("b.safetensors");
    let r = prune(
        &dense,
        &out,
        &[
            "--sparsity",
            "0.3",
            "--include",
            "bias$",
            "--scope",
            "layer",
        ],
    );
    let names: Vec<&str> = r.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bn1.bias", "conv2.bias", "fc.bias"]);
    assert_eq!(r.tensors[0].zeros_after, removal_count(0.3, 8));
}

#[test]
fn sharded_input_and_output_prune_like_single_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b");
    let ra = prune(
        &fixture("candidate-1.safetensors"),
        &a,
        &["--sparsity", "0.8"],
    );
    let rb = prune(
        &fixture("candidate-1-sharded"),
        &b,
        &["--sparsity", "0.8", "--shard-size", "3000"],
    );
    assert_eq!(ra.tensors, rb.tensors);
    assert!(rb.outputs.len() > 2, "shards and index: {:?}", rb.outputs);
    let d = soup(["diff", path(&a), path(&b)]);
    assert_eq!(d.code, 0, "{}{}", d.stdout, d.stderr);
}

/// Bad input: a clear one-line error naming the problem, exit 2, nothing
/// written.
#[test]
fn bad_prune_requests_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let dense = model(dir.path(), 1, Dtype::F32);
    let out = dir.path().join("out.safetensors");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--sparsity", "1"],
            "sparsity must be at least 0 and below 1",
        ),
        (
            &["--sparsity", "1.5"],
            "sparsity must be at least 0 and below 1",
        ),
        (
            &["--sparsity", "-0.1"],
            "sparsity must be at least 0 and below 1",
        ),
        (&["--sparsity", "NaN"], "sparsity"),
        (&["--sparsity", "half"], "--sparsity"),
        (
            &["--sparsity", "0.5", "--exclude", "."],
            "no tensors selected",
        ),
        (
            &["--sparsity", "0.5", "--include", "nothing-matches"],
            "no tensors selected",
        ),
        (
            &["--sparsity", "0.5", "--include", "conv("],
            "invalid regex `conv(`",
        ),
        (&["--sparsity", "0.5", "--scope", "row"], "row"),
    ];
    for (args, message) in cases {
        let mut all = vec!["prune", path(&dense), "-o", path(&out)];
        all.extend_from_slice(args);
        let run = soup(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_only(dir.path(), &["dense.safetensors"]);
    }
    let e = soup([
        "prune",
        path(&dense),
        "-o",
        path(&dense),
        "--sparsity",
        "0.5",
        "--force",
    ]);
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("would overwrite input"), "{}", e.stderr);
    let e = soup(["prune", path(&dense), "--sparsity", "0.5"]);
    assert_eq!(e.code, 2, "an output or --dry-run is required");
    let missing = dir.path().join("missing.safetensors");
    let e = soup([
        "prune",
        path(&missing),
        "-o",
        path(&out),
        "--sparsity",
        "0.5",
    ]);
    assert_eq!(e.code, 2);
    assert!(e.stderr.contains("missing.safetensors"), "{}", e.stderr);
    assert_only(dir.path(), &["dense.safetensors"]);
}

/// `soup prune --scope global` against `torch.nn.utils.prune` on the same
/// weights: the same pruned set apart from ties at the threshold.
#[test]
fn prune_matches_torch_global_unstructured() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = soup_tests::workspace().join("tests/python/prune_vs_torch.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(soup_bin())
        .arg(dir.path())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}
