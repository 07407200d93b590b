//! End-to-end tests of `trainer sms` on a tiny generated data set: the
//! phase sparsity schedule, masks kept through retraining, soups that are
//! averages of their candidates, greedy choices, and resuming after a kill.

use std::path::{Path, PathBuf};
use std::process::Command;

use soup_core::{check_masks, Checkpoint, Control, Selection};

mod support;
use support::{assert_same_report, tiny_dataset};

/// A temporary folder holding the tiny data set in `data/`.
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

fn sms_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        ("--model", "cnn"),
        ("--sparsity", "0.75"),
        ("--phases", "2"),
        ("--candidates", "3"),
        ("--epochs-per-phase", "1"),
        ("--pretrain-epochs", "2"),
        ("--batch-size", "32"),
        ("--lr", "0.05"),
        ("--threads", "1"),
        ("--device", "cpu"),
    ];
    let mut args = vec!["sms".to_string(), "--quiet".to_string()];
    // Flags given in `extra` replace the defaults above.
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

fn run_sms(data: &Path, out: &Path, extra: &[&str]) -> String {
    let o = trainer().args(sms_args(data, out, extra)).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "trainer sms failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn f32s(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(t.dtype, soup_core::Dtype::F32);
    ck.data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn prunable(ck: &Checkpoint) -> Vec<String> {
    ck.tensors()
        .iter()
        .filter(|t| t.name.ends_with(".weight") && t.shape.len() >= 2)
        .map(|t| t.name.clone())
        .collect()
}

fn zeros_over(ck: &Checkpoint, names: &[String]) -> (usize, usize) {
    let mut z = 0;
    let mut n = 0;
    for name in names {
        let v = f32s(ck, name);
        z += v.iter().filter(|x| **x == 0.0).count();
        n += v.len();
    }
    (z, n)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn pipeline_prunes_on_schedule_keeps_masks_and_averages_candidates() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let table = run_sms(&data, &run, &["--baselines", "imp,imp-long,reprune"]);
    for column in [
        "soup",
        "best_cand",
        "mean_cand",
        "imp",
        "imp_long",
        "reprune",
    ] {
        assert!(table.contains(column), "no {column} column:\n{table}");
    }

    let q = 1.0 - 0.25f64.powf(0.5);
    for phase in 1..=2u32 {
        let pdir = run.join(format!("phase-{phase}"));
        let parent = Checkpoint::open(pdir.join("parent.safetensors")).unwrap();
        let names = prunable(&parent);
        // The schedule: after phase p, 1 - (1 - q)^p of the prunable weights
        // are zero, up to the rounding of one weight count per phase.
        let (z, n) = zeros_over(&parent, &names);
        let target = 1.0 - (1.0 - q).powi(phase as i32);
        assert!(
            (z as f64 / n as f64 - target).abs() <= phase as f64 / n as f64,
            "phase {phase}: {z}/{n} vs {target}"
        );

        let candidates: Vec<Checkpoint> = (0..3)
            .map(|i| Checkpoint::open(pdir.join(format!("candidate-{i}.safetensors"))).unwrap())
            .collect();
        // Pruned weights are exactly +0.0 after retraining.
        for c in &candidates {
            for name in &names {
                let (p, v) = (f32s(&parent, name), f32s(c, name));
                for (a, b) in p.iter().zip(&v) {
                    if *a == 0.0 {
                        assert_eq!(b.to_bits(), 0, "{name}: a pruned weight moved to {b}");
                    }
                }
            }
        }
        // Every candidate has the parent's mask.
        let include: Vec<String> = names
            .iter()
            .map(|n| format!("^{}$", regex::escape(n)))
            .collect();
        let sel = Selection::new(&include, &[]).unwrap();
        let report = check_masks(&candidates, Some(&parent), &sel, &Control::default()).unwrap();
        assert!(report.identical);

        // The soup before recalibration is the mean of the candidates, not
        // one of them; recalibration changes only batch-norm statistics.
        let avg = Checkpoint::open(pdir.join("soup-avg.safetensors")).unwrap();
        let soup = Checkpoint::open(pdir.join("soup.safetensors")).unwrap();
        for t in avg
            .tensors()
            .iter()
            .filter(|t| t.dtype == soup_core::Dtype::F32)
        {
            let cs: Vec<Vec<f32>> = candidates.iter().map(|c| f32s(c, &t.name)).collect();
            let a = f32s(&avg, &t.name);
            for (k, v) in a.iter().enumerate() {
                let mean = cs.iter().map(|c| c[k] as f64).sum::<f64>() / 3.0;
                assert!(
                    (*v as f64 - mean).abs() <= 1e-6 * (1.0 + mean.abs()),
                    "{}",
                    t.name
                );
            }
            let is_stat = t.name.ends_with("running_mean") || t.name.ends_with("running_var");
            if !is_stat {
                assert_eq!(f32s(&soup, &t.name), a, "{}", t.name);
            }
            if names.contains(&t.name) {
                assert!(
                    cs.iter().all(|c| *c != a),
                    "{}: the soup equals a candidate",
                    t.name
                );
            }
        }
        // The soup keeps the parent's sparsity exactly.
        assert_eq!(zeros_over(&soup, &names), zeros_over(&parent, &names));
    }

    let report = json(&run.join("report.json"));
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for key in [
        "phase",
        "sparsity",
        "soup_test_acc",
        "best_candidate_test_acc",
        "mean_candidate_test_acc",
        "imp_test_acc",
        "imp_long_test_acc",
        "reprune_test_acc",
        "soup_checkpoint",
    ] {
        assert!(!phases[1][key].is_null(), "report lacks {key}");
    }
    // IMP-RePrune averages chains with different masks, then prunes the
    // average back to the phase's sparsity.
    for (p, row) in phases.iter().enumerate() {
        let target = 1.0 - (1.0 - q).powi(p as i32 + 1);
        let s = row["reprune_sparsity"].as_f64().unwrap();
        assert!(
            (s - target).abs() < 0.01,
            "reprune phase {}: {s} vs {target}",
            p + 1
        );
    }
    // IMP with M-times longer retraining ran M times the iterations.
    let long = json(&run.join("baselines/imp-long/phase-2/candidate-0.json"));
    let short = json(&run.join("baselines/imp-0/phase-2/candidate-0.json"));
    assert_eq!(
        long["iterations"].as_u64().unwrap(),
        3 * short["iterations"].as_u64().unwrap()
    );
    let csv = std::fs::read_to_string(run.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let svg = std::fs::read_to_string(run.join("accuracy_vs_sparsity.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[test]
fn greedy_soup_keeps_only_candidates_that_do_not_lower_validation_accuracy() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(&data, &run, &["--soup", "greedy", "--phases", "1"]);
    let phase = json(&run.join("phase-1/phase.json"));
    let candidates = phase["candidates"].as_array().unwrap();
    let val = |i: u64| {
        candidates[i as usize]["eval"]["val"]["top1"]
            .as_f64()
            .unwrap()
    };
    let chosen: Vec<u64> = phase["chosen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The soup starts from the candidate with the best validation accuracy.
    let best = (0..3)
        .max_by(|&a, &b| val(a).total_cmp(&val(b)).then(b.cmp(&a)))
        .unwrap();
    assert_eq!(chosen[0], best);
    // Each trial (after the best candidate alone) is kept exactly when it
    // does not lower the running score, which starts at the best
    // candidate's validation accuracy.
    let mut current = val(best);
    let mut kept = vec![best];
    for t in phase["trials"].as_array().unwrap() {
        let score = t["score"].as_f64().unwrap();
        let keep = score >= current;
        assert_eq!(t["kept"].as_bool().unwrap(), keep, "{t}");
        if keep {
            current = score;
            kept.push(t["candidate"].as_u64().unwrap());
        }
    }
    kept.sort();
    let mut chosen_sorted = chosen.clone();
    chosen_sorted.sort();
    assert_eq!(kept, chosen_sorted);
}

#[test]
fn killed_run_resumes_to_the_same_report() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    run_sms(&data, &whole, &[]);

    let killed = dir.path().join("killed");
    // Kill it during dense pretraining, once its first epoch is saved, then
    // again in the middle of the first phase, right after a candidate.
    kill_when(&data, &killed, &killed.join("dense/resume.safetensors"));
    assert!(!killed.join("dense/final.safetensors").exists());
    let marker = killed.join("phase-1/candidate-1.safetensors");
    kill_when(&data, &killed, &marker);
    assert!(!killed.join("report.json").exists());
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();

    run_sms(&data, &killed, &[]);
    // Finished work was not redone, and the report is the same.
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        before
    );
    assert_same_report(&whole, &killed);
    // Every checkpoint under its final name is complete (temporary files of
    // the killed process may remain under their hidden names).
    for p in walk(&killed) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !name.starts_with('.') {
            Checkpoint::open(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Starts the test's `trainer sms` run in `run` and kills it with SIGKILL as
/// soon as `marker` exists.
fn kill_when(data: &Path, run: &Path, marker: &Path) {
    support::kill_when(trainer().args(sms_args(data, run, &[])), marker);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn plan_commands_and_parallel_jobs_reproduce_the_run() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    run_sms(&data, &whole, &[]);

    // Candidates side by side in child processes.
    let jobs = dir.path().join("jobs");
    run_sms(&data, &jobs, &["--jobs", "3"]);
    assert_same_report(&whole, &jobs);

    // The per-step commands a cluster scheduler would run, one by one.
    let planned = dir.path().join("planned");
    let plan = run_sms(&data, &planned, &["--plan"]);
    let lines: Vec<&str> = plan.lines().collect();
    assert!(lines[0].contains(" prepare ") && lines.last().unwrap().contains(" report "));
    assert_eq!(
        lines.iter().filter(|l| l.contains(" candidate ")).count(),
        6
    );
    assert!(
        !planned.join("report.json").exists(),
        "--plan must not run anything"
    );
    for line in &lines {
        let o = Command::new("sh").arg("-c").arg(line).output().unwrap();
        assert!(
            o.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_same_report(&whole, &planned);
}

#[test]
fn config_file_and_per_candidate_settings_are_applied() {
    let (dir, data) = scratch_with_data();
    let config = dir.path().join("sms.toml");
    std::fs::write(
        &config,
        "candidates = 2\nvary = \"lr\"\nvary_values = [0.02, 0.08]\nsoup = \"uniform\"\nphases = 3\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    // Flags override the file: one phase, not three (the helper's default
    // flags would override `candidates` too, so it is given again).
    run_sms(
        &data,
        &run,
        &[
            "--config",
            config.to_str().unwrap(),
            "--phases",
            "1",
            "--candidates",
            "2",
        ],
    );
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("phases = 1") && saved.contains("candidates = 2"),
        "{saved}"
    );
    for (i, lr) in [0.02, 0.08].into_iter().enumerate() {
        let c = json(&run.join(format!("phase-1/candidate-{i}.json")));
        assert_eq!(c["eta_max"].as_f64().unwrap(), lr);
        // Same seed for both: only the learning rate differs.
        assert_eq!(c["seed"].as_u64().unwrap(), 0);
        // --vary lr retrains with LLR peaking at the candidate's value,
        // not with the run's ALLR (whose peak would be clipped below it).
        assert_eq!(c["lr_peak"].as_f64().unwrap(), lr);
    }
    let report = json(&run.join("report.json"));
    assert_eq!(report["phases"].as_array().unwrap().len(), 1);
    assert!(!run.join("phase-2").exists());
}

#[test]
fn weight_decay_and_retrain_length_vary_per_candidate() {
    let (dir, data) = scratch_with_data();
    let one_phase = ["--phases", "1", "--candidates", "2"];

    // Weight decay: 0 against a strong 0.05, same seed and length.
    let wd = dir.path().join("wd");
    let mut args = one_phase.to_vec();
    args.extend(["--vary", "weight-decay", "--vary-values", "0,0.05"]);
    run_sms(&data, &wd, &args);
    let norm = |i: u32| -> f64 {
        let ck = Checkpoint::open(wd.join(format!("phase-1/candidate-{i}.safetensors"))).unwrap();
        prunable(&ck)
            .iter()
            .flat_map(|n| f32s(&ck, n))
            .map(|x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    };
    let (c0, c1) = (
        json(&wd.join("phase-1/candidate-0.json")),
        json(&wd.join("phase-1/candidate-1.json")),
    );
    assert_eq!(c0["weight_decay"].as_f64().unwrap(), 0.0);
    assert_eq!(c1["weight_decay"].as_f64().unwrap(), 0.05);
    assert_eq!(c0["seed"], c1["seed"]);
    assert_eq!(c0["iterations"], c1["iterations"]);
    // The decay was applied: it shrank the weights.
    assert!(norm(1) < norm(0) * 0.99, "{} vs {}", norm(1), norm(0));

    // Retraining length: one epoch against two, from the same dense
    // parent (--from skips pretraining). The candidates' batch-norm step
    // counters differ; a greedy soup still merges them.
    let len = dir.path().join("len");
    let dense = wd.join("dense/final.safetensors");
    let mut args = one_phase.to_vec();
    args.extend(["--vary", "retrain-length", "--vary-values", "1,2"]);
    args.extend(["--soup", "greedy"]);
    args.extend(["--from", dense.to_str().unwrap()]);
    run_sms(&data, &len, &args);
    let (c0, c1) = (
        json(&len.join("phase-1/candidate-0.json")),
        json(&len.join("phase-1/candidate-1.json")),
    );
    assert_eq!(c0["epochs"].as_f64().unwrap(), 1.0);
    assert_eq!(c1["epochs"].as_f64().unwrap(), 2.0);
    let (i0, i1) = (
        c0["iterations"].as_u64().unwrap(),
        c1["iterations"].as_u64().unwrap(),
    );
    assert!(i0 > 0 && i1 == 2 * i0, "{i0} and {i1} iterations");
    assert_eq!(c0["weight_decay"], c1["weight_decay"]);
    // The soup of the two still has the parent's sparsity.
    let row = &json(&len.join("report.json"))["phases"][0];
    assert_eq!(row["sparsity"], row["parent_sparsity"]);
}

/// Opens a finished run through the library, as the run itself did.
fn session(run: &Path) -> trainer::sms::Session {
    trainer::sms::Session::open(run).unwrap()
}

/// Every stored number of `e` equals `reported` (accuracies exactly, the
/// rest to 1e-12 relative).
fn assert_same_eval(e: &trainer::EvalReport, reported: &serde_json::Value, what: &str) {
    let got = serde_json::to_value(e).unwrap();
    for (k, v) in reported.as_object().unwrap() {
        let (a, b) = (v.as_f64().unwrap(), got[k].as_f64().unwrap());
        if k == "top1" || k.ends_with("accuracy") || k == "samples" {
            assert_eq!(a, b, "{what}: {k}");
        } else {
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                "{what}: {k} {a} vs {b}"
            );
        }
    }
}

#[test]
fn every_reported_model_is_recalibrated_saved_and_reevaluates_to_its_numbers() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(
        &data,
        &run,
        &[
            "--phases",
            "1",
            "--candidates",
            "2",
            "--baselines",
            "imp,imp-long,reprune",
        ],
    );
    let report = json(&run.join("report.json"));
    let row = &report["phases"][0];
    let mut models: Vec<serde_json::Value> = row["models"].as_array().unwrap().clone();
    models.push(report["dense"].clone());
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "soup",
            "candidate-0",
            "candidate-1",
            "ensemble",
            "imp",
            "imp-long",
            "reprune",
            "dense"
        ]
    );
    let s = session(&run);
    for m in &models {
        let name = m["name"].as_str().unwrap();
        for key in [
            "test_acc",
            "val_acc",
            "balanced_acc",
            "worst_class_acc",
            "ece",
            "mce",
        ] {
            assert!(m[key].is_number(), "{name} lacks {key}");
        }
        // Robustness is evaluated by default (every corruption, severity 3).
        assert!(m["ood_acc"].is_number(), "{name} lacks ood_acc");
        let Some(ck) = m["checkpoint"].as_str() else {
            assert_eq!(name, "ensemble");
            continue;
        };
        let path = run.join(ck);
        // The saved checkpoint is the recalibrated model: recalibrating it
        // again (same procedure, same batches) changes no statistic.
        let model = s.load(&path).unwrap();
        let before = model.state_dict();
        let before: Vec<(String, Vec<f32>)> = before
            .iter()
            .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
            .map(|(n, t)| (n.clone(), Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()))
            .collect();
        assert!(!before.is_empty());
        let e = s.evaluate(&model).unwrap();
        s.recalibrate(&model);
        let sd = model.state_dict();
        for (n, v) in &before {
            let after = Vec::<f32>::try_from(&sd[n].flatten(0, -1)).unwrap();
            assert_eq!(&after, v, "{name}: {n} was not the recalibrated statistic");
        }
        // Evaluating the file reproduces the report's numbers exactly.
        assert_eq!(e.test.top1, m["test_acc"].as_f64().unwrap(), "{name}");
        assert_eq!(e.val.top1, m["val_acc"].as_f64().unwrap(), "{name}");
        assert_eq!(
            e.test.worst_class_accuracy,
            m["worst_class_acc"].as_f64().unwrap()
        );
        assert!(
            (e.test.mce - m["mce"].as_f64().unwrap()).abs() < 1e-12,
            "{name}"
        );
        assert_eq!(e.sparsity, m["sparsity"].as_f64().unwrap(), "{name}");
        // And so does `trainer eval` on it.
        let o = trainer()
            .args([
                "eval",
                "--model",
                "cnn",
                "--device",
                "cpu",
                "--json",
                "--batch-size",
                "500",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line = String::from_utf8_lossy(&o.stdout);
        let ev: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(
            ev["top1"].as_f64().unwrap(),
            m["test_acc"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(ev["ood_acc"], m["ood_acc"], "{name}");
    }
    // Per-layer sparsity of the soup: every prunable tensor, the parent's
    // zeros.
    let soup = Checkpoint::open(run.join(models[0]["checkpoint"].as_str().unwrap())).unwrap();
    let layers = models[0]["layer_sparsity"].as_object().unwrap();
    assert_eq!(layers.len(), prunable(&soup).len());
    for name in prunable(&soup) {
        let (z, n) = zeros_over(&soup, std::slice::from_ref(&name));
        assert_eq!(
            layers[&name].as_f64().unwrap(),
            z as f64 / n as f64,
            "{name}"
        );
    }
    let flops = row["flops_ratio"].as_f64().unwrap();
    assert!(flops > 0.0 && flops < 1.0, "{flops}");
    // The candidates' geometry: their paths, and the L2 distance between
    // them computed directly over every float tensor in f64.
    let geometry = &row["geometry"];
    assert_eq!(
        geometry["inputs"],
        serde_json::json!([
            "phase-1/candidate-0.safetensors",
            "phase-1/candidate-1.safetensors"
        ])
    );
    let (a, b) = (
        Checkpoint::open(run.join("phase-1/candidate-0.safetensors")).unwrap(),
        Checkpoint::open(run.join("phase-1/candidate-1.safetensors")).unwrap(),
    );
    let mut sq = 0.0f64;
    for t in a
        .tensors()
        .iter()
        .filter(|t| t.dtype == soup_core::Dtype::F32)
    {
        for (x, y) in f32s(&a, &t.name).iter().zip(f32s(&b, &t.name)) {
            sq += (f64::from(*x) - f64::from(y)).powi(2);
        }
    }
    let l2 = geometry["l2"][0][1].as_f64().unwrap();
    assert!(
        sq > 0.0 && (l2 - sq.sqrt()).abs() <= 1e-9 * sq.sqrt(),
        "{l2} vs {}",
        sq.sqrt()
    );
    assert_eq!(geometry["l2"][1][0], geometry["l2"][0][1]);
    assert_eq!(geometry["l2"][0][0].as_f64(), Some(0.0));

    // The ensemble's accuracy, computed directly: mean of the candidates'
    // softmax outputs over the test split.
    let cands: Vec<trainer::Model> = (0..2)
        .map(|i| {
            s.load(&run.join(format!("phase-1/candidate-{i}.safetensors")))
                .unwrap()
        })
        .collect();
    let (mut correct, mut total) = (0usize, 0usize);
    for b in s
        .data
        .eval_batches(trainer::Split::Test, 37, tch::Device::Cpu)
    {
        let probs = tch::no_grad(|| {
            cands
                .iter()
                .map(|m| {
                    m.forward(&b.images, trainer::Mode::Eval)
                        .softmax(-1, tch::Kind::Float)
                })
                .reduce(|a, c| a + c)
                .unwrap()
        });
        let pred = Vec::<i64>::try_from(&probs.argmax(-1, false)).unwrap();
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
        total += labels.len();
    }
    let ensemble = models.iter().find(|m| m["name"] == "ensemble").unwrap();
    assert_eq!(
        ensemble["test_acc"].as_f64().unwrap(),
        correct as f64 / total as f64
    );
    assert_eq!(row["ensemble_test_acc"], ensemble["test_acc"]);
}

#[test]
fn greedy_soup_ranks_candidates_by_recalibrated_validation_scores() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(
        &data,
        &run,
        &["--soup", "greedy", "--phases", "1", "--bn-recal", "ema"],
    );
    let phase = json(&run.join("phase-1/phase.json"));
    let s = session(&run);
    let mut scores = Vec::new();
    for (i, c) in phase["candidates"].as_array().unwrap().iter().enumerate() {
        // What the greedy soup ranked by is the candidate's validation
        // evaluation after recalibration (here the reference code's EMA).
        let model = s
            .load(&run.join(format!("phase-1/candidate-{i}.safetensors")))
            .unwrap();
        s.recalibrate(&model);
        let val = trainer::evaluate(
            &model,
            s.data
                .eval_batches(trainer::Split::Val, 500, tch::Device::Cpu),
        )
        .unwrap();
        assert_same_eval(&val, &c["eval"]["val"], &format!("candidate {i}"));
        scores.push(val.top1);
    }
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .unwrap();
    assert_eq!(phase["chosen"][0].as_u64().unwrap(), best as u64);
}

#[test]
fn repeats_reproduce_single_runs_and_report_their_spread() {
    let (dir, data) = scratch_with_data();
    let flags = ["--phases", "1", "--candidates", "2", "--baselines", "imp"];
    let rep = dir.path().join("rep");
    let mut args = flags.to_vec();
    args.extend(["--repeats", "2", "--repeat-jobs", "2"]);
    let table = run_sms(&data, &rep, &args);
    assert!(table.contains('±'), "{table}");
    // Repeat 1 is the run with base seed 1000, whether it ran as a repeat
    // side by side with another or alone.
    let single = dir.path().join("single");
    let mut args = flags.to_vec();
    args.extend(["--seed", "1000"]);
    run_sms(&data, &single, &args);
    assert_same_report(&rep.join("repeat-1"), &single);

    // The summary's spread is that of the per-repeat reports.
    let summary = json(&rep.join("summary.json"));
    assert_eq!(summary["seeds"], serde_json::json!([0, 1000]));
    let rows: Vec<serde_json::Value> = (0..2)
        .map(|r| json(&rep.join(format!("repeat-{r}/report.json")))["phases"][0].clone())
        .collect();
    let p = &summary["phases"][0];
    let stat = |v: &[f64]| {
        let mean = (v[0] + v[1]) / 2.0;
        let std = (((v[0] - mean).powi(2) + (v[1] - mean).powi(2)) / 1.0).sqrt();
        (mean, std)
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    for (name, key) in [
        ("soup", "soup_test_acc"),
        ("imp", "imp_test_acc"),
        ("best_candidate", "best_candidate_test_acc"),
        ("ensemble", "ensemble_test_acc"),
    ] {
        let v: Vec<f64> = rows.iter().map(|r| r[key].as_f64().unwrap()).collect();
        let (mean, std) = stat(&v);
        let got = &p["models"][name]["test_acc"];
        assert!(close(got["mean"].as_f64().unwrap(), mean), "{name}");
        assert!(close(got["std"].as_f64().unwrap(), std), "{name}");
    }
    let d: Vec<f64> = rows
        .iter()
        .map(|r| r["soup_test_acc"].as_f64().unwrap() - r["imp_test_acc"].as_f64().unwrap())
        .collect();
    let (mean, std) = stat(&d);
    assert!(close(
        p["soup_minus"]["imp"]["mean"].as_f64().unwrap(),
        mean
    ));
    assert!(close(p["soup_minus"]["imp"]["std"].as_f64().unwrap(), std));
}

#[test]
fn reported_sparsity_counts_exactly_the_tensors_pruned_when_some_are_excluded() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    run_sms(
        &data,
        &run,
        &[
            "--phases",
            "1",
            "--candidates",
            "2",
            "--epochs-per-phase",
            "0.2",
            "--exclude",
            "^conv1\\.",
            "--corruptions",
            "none",
        ],
    );
    let report = json(&run.join("report.json"));
    let soup = Checkpoint::open(run.join("phase-1/soup.safetensors")).unwrap();
    let all = prunable(&soup);
    assert!(all.contains(&"conv1.weight".to_string()));
    // The excluded tensor stays dense; the others carry all the zeros.
    assert_eq!(zeros_over(&soup, &["conv1.weight".to_string()]).0, 0);
    let pruned: Vec<String> = all.into_iter().filter(|n| n != "conv1.weight").collect();
    let (z, n) = zeros_over(&soup, &pruned);
    let row = &report["phases"][0];
    assert_eq!(row["sparsity"].as_f64().unwrap(), z as f64 / n as f64);
    let layers: Vec<&String> = row["models"][0]["layer_sparsity"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(layers, pruned.iter().collect::<Vec<_>>());
}
