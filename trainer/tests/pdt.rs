//! End-to-end tests of `trainer pdt` on a tiny generated data set and a
//! Fashion-MNIST subset: GMP's pruning steps on the cubic schedule, masks
//! shared by a segment's candidates and its soup, DPF's exact zeros in the
//! delivered model, BIMP's phases, the report, and resuming after a kill.

use std::path::{Path, PathBuf};
use std::process::Command;

use soup_core::{check_masks, Checkpoint, Control, Selection};

#[path = "pdt/disagreement.rs"]
mod disagreement;
#[path = "pdt/nm.rs"]
mod nm;
mod support;
#[path = "support/svg.rs"]
mod svg;
use support::{assert_same_report, tiny_dataset};

fn scratch_with_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_dataset(&data);
    (dir, data)
}

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

fn pdt_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        ("--method", "gmp"),
        ("--model", "cnn"),
        ("--sparsity", "0.8"),
        ("--epochs", "3"),
        ("--candidates", "3"),
        ("--prune-every", "5it"),
        ("--batch-size", "32"),
        ("--lr", "0.05"),
        ("--threads", "1"),
        ("--device", "cpu"),
        ("--corruptions", "none"),
    ];
    let mut args = vec!["pdt".to_string(), "--quiet".to_string()];
    for (flag, value) in base {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_pdt(data: &Path, out: &Path, extra: &[&str]) -> String {
    let o = trainer().args(pdt_args(data, out, extra)).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "trainer pdt failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn prunable(ck: &Checkpoint) -> Vec<String> {
    ck.tensors()
        .iter()
        .filter(|t| t.name.ends_with(".weight") && t.shape.len() >= 2)
        .map(|t| t.name.clone())
        .collect()
}

fn f32s(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.get(name).unwrap();
    ck.data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Zeros and weights over the prunable tensors of a checkpoint file.
fn zeros(path: &Path) -> (usize, usize) {
    let ck = Checkpoint::open(path).unwrap();
    prunable(&ck).iter().fold((0, 0), |(z, n), name| {
        let v = f32s(&ck, name);
        (z + v.iter().filter(|x| **x == 0.0).count(), n + v.len())
    })
}

/// `S (1 - (1 - (t - t0) / (t1 - t0))^3)`, written out independently of
/// the trainer's code.
fn cubic(s: f64, t0: f64, t1: f64, t: f64) -> f64 {
    if t >= t1 {
        return s;
    }
    if t <= t0 {
        return 0.0;
    }
    s * (1.0 - (1.0 - (t - t0) / (t1 - t0)).powi(3))
}

fn segment_dirs(chain: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(chain)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn gmp_prunes_on_the_cubic_schedule_and_soups_keep_the_mask() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let table = run_pdt(&data, &run, &["--baselines", "plain"]);
    assert!(table.contains("gmp+sms"), "{table}");

    // 360 training images in batches of 32: 12 iterations per epoch, 36 in
    // all; pruning from round(3.6) = 4 to 27, every 5 iterations.
    let (t0, t1, total) = (4.0, 27.0, 36u64);
    let mut starts = Vec::new();
    for chain in ["sms", "plain"] {
        let segs = segment_dirs(&run.join(chain));
        assert_eq!(segs.len(), 6, "{chain}: {segs:?}");
        for (k, seg) in segs.iter().enumerate() {
            let record = json(&seg.join("segment.json"));
            let start = record["segment"]["start"].as_u64().unwrap();
            if chain == "sms" {
                starts.push(start);
            }
            // The parent on file has exactly the schedule's zeros, to
            // within one weight.
            let (z, n) = zeros(&seg.join("parent.safetensors"));
            let want = if k == 0 {
                0.0
            } else {
                cubic(0.8, t0, t1, start as f64) * n as f64
            };
            assert!(
                (z as f64 - want).abs() <= 1.0,
                "{chain} segment {k} at {start}: {z} zeros, schedule {want}"
            );
            if chain == "plain" {
                assert_eq!(record["candidates"], 1);
                continue;
            }
            // Every candidate and the soup have the parent's mask.
            assert_eq!(record["candidates"], 3, "{chain} segment {k}");
            assert_eq!(record["masks_identical"], true);
            let parent = Checkpoint::open(seg.join("parent.safetensors")).unwrap();
            let names = prunable(&parent);
            let mut inputs: Vec<Checkpoint> = (0..3)
                .map(|i| Checkpoint::open(seg.join(format!("candidate-{i}.safetensors"))).unwrap())
                .collect();
            inputs.push(Checkpoint::open(seg.join("soup.safetensors")).unwrap());
            let include: Vec<String> = names.iter().map(|n| format!("^{n}$")).collect();
            let selection = Selection::new(&include, &[]).unwrap();
            let report =
                check_masks(&inputs, Some(&parent), &selection, &Control::default()).unwrap();
            assert!(report.identical, "segment {k}: masks differ");
            // The candidates differ from each other (their seeds do).
            if k > 0 {
                let a = f32s(&inputs[0], &names[0]);
                let b = f32s(&inputs[1], &names[0]);
                assert_ne!(a, b, "segment {k}: candidates 0 and 1 are equal");
            }
        }
    }
    assert_eq!(starts, vec![0, 9, 14, 19, 24, 27]);
    assert!(starts.iter().all(|&s| s < total));

    // The report names every run, and its sparsity is counted in the
    // checkpoint it names.
    let report = json(&run.join("report.json"));
    assert_eq!(report["method"], "gmp");
    assert_eq!(report["target_sparsity"], 0.8);
    let runs = report["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gmp", "gmp+sms"]);
    for r in runs {
        let (z, n) = zeros(&run.join(r["checkpoint"].as_str().unwrap()));
        assert_eq!(r["sparsity"].as_f64().unwrap(), z as f64 / n as f64);
        assert!((z as f64 - 0.8 * n as f64).abs() <= 1.0);
        assert_eq!(r["epochs"], 3);
    }
    assert!(run.join("report.csv").exists());
    // The plot: a line per run with a marker per curve point, in the
    // sparsity panel from 0 at epoch 0, and one in the legend.
    let drawn = svg::read(&std::fs::read_to_string(run.join("pdt.svg")).unwrap());
    assert_eq!(drawn.legend, names);
    let points: usize = report["curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| 2 * c["points"].as_array().unwrap().len() + 2)
        .sum();
    assert_eq!(drawn.markers.values().sum::<usize>(), points);
    svg::assert_round_ticks(&drawn, 3);
}

#[test]
fn dpf_delivers_exact_zeros_and_its_soups_average_dense_weights() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_pdt(&data, &run, &["--method", "dpf", "--candidates", "2"]);
    let segs = segment_dirs(&run.join("sms"));
    let last = segs.last().unwrap();
    // Candidates hold dense weights: the mask is applied only in the
    // forward pass, so hardly any weight is zero in them.
    let (z, n) = zeros(&last.join("candidate-0.safetensors"));
    assert!(z * 100 < n, "{z} of {n} zeros in a DPF candidate");
    // The soup is the plain mean of the candidates' dense weights.
    let avg = Checkpoint::open(last.join("soup-avg.safetensors")).unwrap();
    let c: Vec<Checkpoint> = (0..2)
        .map(|i| Checkpoint::open(last.join(format!("candidate-{i}.safetensors"))).unwrap())
        .collect();
    let name = &prunable(&avg)[0];
    let (a, b, m) = (f32s(&c[0], name), f32s(&c[1], name), f32s(&avg, name));
    for ((x, y), z) in a.iter().zip(&b).zip(&m) {
        assert!((0.5 * (x + y) - z).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0));
    }
    // The delivered model is masked at the target, with exact zeros.
    let report = json(&run.join("report.json"));
    let row = &report["runs"][0];
    assert_eq!(row["name"], "dpf+sms");
    let (z, n) = zeros(&run.join(row["checkpoint"].as_str().unwrap()));
    assert!((z as f64 - 0.8 * n as f64).abs() <= 1.0, "{z} of {n}");
}

#[test]
fn bimp_splits_its_budget_into_phases_on_the_imp_schedule() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_pdt(
        &data,
        &run,
        &["--method", "bimp", "--phases", "2", "--candidates", "1"],
    );
    // 36 iterations: dense until 4, then 32 split over 2 phases.
    let segs = segment_dirs(&run.join("sms"));
    let bounds: Vec<(u64, u64)> = segs
        .iter()
        .map(|s| {
            let r = json(&s.join("segment.json"));
            (
                r["segment"]["start"].as_u64().unwrap(),
                r["segment"]["end"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(bounds, vec![(0, 4), (4, 20), (20, 36)]);
    let q = 1.0 - 0.2f64.sqrt();
    for (p, seg) in segs.iter().enumerate().skip(1) {
        let (z, n) = zeros(&seg.join("parent.safetensors"));
        let want = (1.0 - (1.0 - q).powi(p as i32)) * n as f64;
        assert!((z as f64 - want).abs() <= 1.0, "phase {p}: {z} vs {want}");
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_report() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    let extra = ["--baselines", "plain"];
    run_pdt(&data, &whole, &extra);

    let killed = dir.path().join("killed");
    let marker = killed.join("sms/seg-002/candidate-1.json");
    support::kill_when(trainer().args(pdt_args(&data, &killed, &extra)), &marker);
    assert!(!killed.join("report.json").exists());
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();
    // Resume with the candidates in child processes.
    run_pdt(&data, &killed, &["--baselines", "plain", "--jobs", "2"]);
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        before,
        "finished work was redone"
    );
    assert_same_report(&whole, &killed);

    // Other settings in the same folder are refused, naming the folder.
    let o = trainer()
        .args(pdt_args(&data, &killed, &["--sparsity", "0.5"]))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different configuration"), "{err}");
}

#[test]
fn the_plans_steps_run_one_by_one_give_the_report_of_one_run() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    let extra = ["--baselines", "plain", "--epochs", "2"];
    run_pdt(&data, &whole, &extra);

    let stepped = dir.path().join("stepped");
    let mut args = pdt_args(&data, &stepped, &extra);
    args.push("--plan".into());
    let o = trainer().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stepped.join("report.json").exists(), "--plan only plans");
    let plan = String::from_utf8(o.stdout).unwrap();
    let steps: Vec<&str> = plan
        .lines()
        .map(|l| l.rsplit_once(" --step ").expect("a step command").1)
        .collect();
    assert_eq!(steps.last(), Some(&"report"));
    for chain in ["sms", "plain"] {
        assert!(
            steps.contains(&format!("finish:{chain}").as_str()),
            "{plan}"
        );
    }
    // The soup chain forks candidates (they may run anywhere, in any
    // order after their segment's prepare step); the plain chain does not.
    assert!(steps
        .iter()
        .any(|s| s.starts_with("candidate:sms:") && s.ends_with(":2")));
    assert!(!steps
        .iter()
        .any(|s| s.starts_with("candidate:plain:") && s.ends_with(":1")));
    // Each step in its own process, as cluster jobs would run them.
    for step in &steps {
        let o = trainer()
            .args(["pdt", "--quiet", "--out"])
            .arg(&stepped)
            .args(["--step", step])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_same_report(&whole, &stepped);
    // A step out of order names what is missing.
    let again = dir.path().join("again");
    let mut args = pdt_args(&data, &again, &extra);
    args.push("--plan".into());
    assert!(trainer().args(&args).output().unwrap().status.success());
    let o = trainer()
        .args(["pdt", "--quiet", "--out"])
        .arg(&again)
        .args(["--step", "close:sms:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"));
}

#[test]
fn bad_settings_are_one_line_errors() {
    let (dir, data) = scratch_with_data();
    for (flag, value, says, one_line) in [
        (
            "--method",
            "obd",
            "invalid value 'obd' for '--method",
            false,
        ), // clap's, with the registry's names
        ("--method", "imp", "runs through `trainer sms`", true),
        ("--sparsity", "1.5", "--sparsity", true),
        ("--prune-every", "0it", "--prune-every", false), // clap's usage error
    ] {
        let out = dir.path().join(format!("bad{flag}"));
        let o = trainer()
            .args(pdt_args(&data, &out, &[flag, value]))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
        if one_line {
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
        assert!(!out.join("config.toml").exists());
    }
}

/// A Fashion-MNIST subset (2,000 training and 500 test images) as an IDX
/// folder, or `None` with a notice where the data set is not installed.
fn fashion_subset(dir: &Path) -> Option<PathBuf> {
    use trainer::data::{Split, FASHION_MNIST_DIR};
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        assert!(
            std::env::var("SOUP_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "{FASHION_MNIST_DIR} is missing; scripts/setup.sh installs it"
        );
        eprintln!("skipping: {FASHION_MNIST_DIR} is missing");
        return None;
    }
    let full = trainer::Dataset::load("fashion-mnist", 0).unwrap();
    let out = dir.join("fashion");
    std::fs::create_dir(&out).unwrap();
    for (stem, split, n) in [("train", Split::Train, 2000), ("t10k", Split::Test, 500)] {
        let set = full.split(split);
        let (mut images, mut labels) = (vec![0, 0, 8, 3], vec![0, 0, 8, 1]);
        for d in [n, 28, 28] {
            images.extend_from_slice(&(d as u32).to_be_bytes());
        }
        labels.extend_from_slice(&(n as u32).to_be_bytes());
        images.extend_from_slice(&set.images[..n * 784]);
        labels.extend(set.labels[..n].iter().map(|&l| l as u8));
        std::fs::write(out.join(format!("{stem}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(out.join(format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
    }
    Some(out)
}

#[test]
fn gmp_on_a_fashion_mnist_subset_reports_every_run_as_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = fashion_subset(dir.path()) else {
        return;
    };
    let run = dir.path().join("run");
    let table = run_pdt(
        &data,
        &run,
        &[
            "--epochs",
            "2",
            "--prune-every",
            "10it",
            "--sparsity",
            "0.9",
            "--batch-size",
            "64",
            "--lr",
            "0.1",
            "--baselines",
            "plain,long",
        ],
    );
    for name in ["gmp ", "gmp+sms", "gmp-long"] {
        assert!(table.contains(name), "{name}:\n{table}");
    }
    let report = json(&run.join("report.json"));
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        let ck = run.join(r["checkpoint"].as_str().unwrap());
        let (z, n) = zeros(&ck);
        assert!((z as f64 - 0.9 * n as f64).abs() <= 1.0);
        let acc = r["test_acc"].as_f64().unwrap();
        assert!(acc > 0.45, "{}: it did not learn ({acc})", r["name"]);
        // The reported accuracy is the saved checkpoint's.
        let o = trainer()
            .args(["eval", "--model", "cnn", "--device", "cpu", "--json"])
            .args(["--corruptions", "none", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&ck)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ev["top1"].as_f64().unwrap(), acc, "{}", r["name"]);
    }
    let long = runs.iter().find(|r| r["name"] == "gmp-long").unwrap();
    assert_eq!(long["epochs"], 6);
    let curves = report["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 3);
    // Every chain's curve is measured like its delivered model
    // (recalibrated), soup or not: the last point is the final model.
    for curve in curves {
        let name = curve["name"].as_str().unwrap();
        let last = curve["points"].as_array().unwrap().last().unwrap();
        let delivered = runs.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(last["test_acc"], delivered["test_acc"], "{name}");
    }
    let drawn = svg::read(&std::fs::read_to_string(run.join("pdt.svg")).unwrap());
    assert_eq!(drawn.legend, ["gmp", "gmp+sms", "gmp-long"]);
    svg::assert_round_ticks(&drawn, 3);
}

#[test]
fn greedy_soups_of_candidates_that_vary_weight_decay() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_pdt(
        &data,
        &run,
        &[
            "--epochs",
            "2",
            "--soup",
            "greedy",
            "--vary",
            "weight-decay",
            "--vary-values",
            "0,0.0005,0.002",
        ],
    );
    for seg in segment_dirs(&run.join("sms")) {
        let record = json(&seg.join("segment.json"));
        assert_eq!(record["masks_identical"], true);
        let chosen: Vec<u64> = record["chosen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            !chosen.is_empty() && chosen.iter().all(|&c| c < 3),
            "{chosen:?}"
        );
        for (i, wd) in [0.0, 0.0005, 0.002].iter().enumerate() {
            let c = json(&seg.join(format!("candidate-{i}.json")));
            assert_eq!(c["weight_decay"].as_f64().unwrap(), *wd);
            assert_eq!(c["seed"], 0, "only the weight decay varies");
        }
        // With one candidate chosen the soup is that candidate (then
        // recalibrated): its weights are the candidate's.
        if chosen.len() == 1 {
            let soup = Checkpoint::open(seg.join("soup-avg.safetensors")).unwrap();
            let cand =
                Checkpoint::open(seg.join(format!("candidate-{}.safetensors", chosen[0]))).unwrap();
            let name = &prunable(&soup)[0];
            assert_eq!(f32s(&soup, name), f32s(&cand, name));
        }
    }
    let o = trainer()
        .args(pdt_args(
            &data,
            &dir.path().join("bad"),
            &["--vary", "retrain-length", "--vary-values", "1,2,3"],
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not apply"));
}

#[test]
fn reported_sparsity_counts_exactly_the_tensors_pruned_when_some_are_excluded() {
    // The rule `trainer sms` follows (tests/sms/pipeline.rs): prunable
    // tensors less the exclusions are masked, checked and reported.
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_pdt(
        &data,
        &run,
        &[
            "--epochs",
            "2",
            "--candidates",
            "2",
            "--exclude",
            "^conv1\\.",
        ],
    );
    let report = json(&run.join("report.json"));
    let row = &report["runs"][0];
    assert_eq!(row["name"], "gmp+sms");
    let path = run.join(row["checkpoint"].as_str().unwrap());
    let ck = Checkpoint::open(&path).unwrap();
    let all = prunable(&ck);
    assert!(all.contains(&"conv1.weight".to_string()));
    // The excluded tensor stays dense; the others carry all the zeros.
    assert!(f32s(&ck, "conv1.weight").iter().all(|x| *x != 0.0));
    let pruned: Vec<String> = all.into_iter().filter(|n| n != "conv1.weight").collect();
    let (z, n) = pruned.iter().fold((0, 0), |(z, n), name| {
        let v = f32s(&ck, name);
        (z + v.iter().filter(|x| **x == 0.0).count(), n + v.len())
    });
    assert_eq!(row["sparsity"].as_f64().unwrap(), z as f64 / n as f64);
    assert!((z as f64 - 0.8 * n as f64).abs() <= 1.0);
    let eval = json(&run.join("sms/final.json"));
    let layers: Vec<&String> = eval["layer_sparsity"].as_object().unwrap().keys().collect();
    assert_eq!(layers, pruned.iter().collect::<Vec<_>>());
}
