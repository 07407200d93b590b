//! SWA candidates and augmented IDX data through `trainer sms`: a soup
//! candidate delivered as the average of its iterates keeps the parent's
//! mask, differs from the last iterate, and `trainer eval` reproduces its
//! reported accuracy.

use super::*;

fn masks(ck: &Checkpoint) -> Vec<Vec<bool>> {
    prunable(ck)
        .iter()
        .map(|n| f32s(ck, n).iter().map(|w| *w == 0.0).collect())
        .collect()
}

#[test]
fn swa_candidates_keep_the_mask_and_reevaluate_to_their_numbers() {
    let (dir, data) = scratch_with_data();
    let (plain, swa) = (dir.path().join("plain"), dir.path().join("swa"));
    let base = [
        "--phases",
        "1",
        "--candidates",
        "2",
        "--corruptions",
        "none",
        "--augment",
        "crop-flip",
    ];
    run_sms(&data, &plain, &base);
    let mut with = base.to_vec();
    with.extend(["--swa-from", "0.5", "--swa-every", "2"]);
    run_sms(&data, &swa, &with);
    let config = std::fs::read_to_string(swa.join("config.toml")).unwrap();
    for key in ["augment = \"crop-flip\"", "swa_from = 0.5", "swa_every = 2"] {
        assert!(config.contains(key), "{key} not in\n{config}");
    }
    let report = json(&swa.join("report.json"));
    let parent = Checkpoint::open(swa.join("phase-1/parent.safetensors")).unwrap();
    for m in report["phases"][0]["models"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        if !name.starts_with("candidate-") {
            continue;
        }
        let ck = m["checkpoint"].as_str().unwrap();
        let averaged = Checkpoint::open(swa.join(ck)).unwrap();
        let last = Checkpoint::open(plain.join(ck)).unwrap();
        // The same pruned weights are exactly zero, and no others.
        assert_eq!(masks(&averaged), masks(&parent), "{name}");
        // Same seed and batches: the average is not the last iterate.
        let names = prunable(&averaged);
        assert!(
            names.iter().any(|n| f32s(&averaged, n) != f32s(&last, n)),
            "{name}"
        );
        let o = trainer()
            .args(["eval", "--model", "cnn", "--device", "cpu", "--json"])
            .arg("--data")
            .arg(&data)
            .arg("--checkpoint")
            .arg(swa.join(ck))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ev["top1"], m["test_acc"], "{name}");
    }
}

/// How many iterates an SWA average over `total` iterations from the
/// share `from`, spaced `every`, holds: the iterates after iteration `k`
/// for `k > round(from * total)` counted back from the last, written out
/// rather than taken from the library.
fn swa_count(total: u64, from: f64, every: u64) -> u64 {
    let start = ((from * total as f64).round() as u64).min(total - 1);
    ((start + 1)..=total)
        .filter(|k| (total - k) % every == 0)
        .count() as u64
}

#[test]
fn imp_swa_phases_deliver_their_average_keep_the_mask_and_reevaluate() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    // The soup's candidates stay plain: --imp-swa-from is the baseline's own.
    let table = run_sms(
        &data,
        &run,
        &[
            "--phases",
            "2",
            "--candidates",
            "2",
            "--corruptions",
            "none",
            "--baselines",
            "imp,imp-swa",
            "--imp-swa-from",
            "0.5",
            "--swa-every",
            "2",
        ],
    );
    assert!(table.contains("imp_swa"), "{table}");
    let plot = std::fs::read_to_string(run.join("accuracy_vs_sparsity.svg")).unwrap();
    assert!(plot.contains("IMP-SWA"), "imp-swa is not in the plot");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("imp_swa_from = 0.5"), "{config}");
    assert!(json(&run.join("phase-1/candidate-1.json"))
        .get("swa_iterates")
        .is_none());
    let report = json(&run.join("report.json"));
    let csv = std::fs::read_to_string(run.join("report.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("imp_swa_test_acc"));
    for (p, phase) in report["phases"].as_array().unwrap().iter().enumerate() {
        let p = p + 1;
        let models = phase["models"].as_array().unwrap();
        let row = |name: &str| {
            models
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("phase {p}: no {name} row"))
        };
        let swa_row = row("imp-swa");
        assert_eq!(phase["imp_swa_test_acc"], swa_row["test_acc"]);
        let ck = swa_row["checkpoint"].as_str().unwrap();
        assert_eq!(
            ck,
            format!("baselines/imp-swa/phase-{p}/candidate-0.safetensors")
        );
        let averaged = Checkpoint::open(run.join(ck)).unwrap();
        let imp = Checkpoint::open(run.join(row("imp")["checkpoint"].as_str().unwrap())).unwrap();
        // Phase 1 starts from the same parent with the same seed as IMP:
        // only the averaging tells them apart.
        let names = prunable(&averaged);
        assert!(
            names.iter().any(|n| f32s(&averaged, n) != f32s(&imp, n)),
            "phase {p}: imp-swa is imp"
        );
        let parent = if p == 1 {
            run.join("phase-1/parent.safetensors")
        } else {
            run.join(format!("baselines/imp-swa/phase-{p}/parent.safetensors"))
        };
        let parent = Checkpoint::open(parent).unwrap();
        assert_eq!(masks(&averaged), masks(&parent), "phase {p}");
        // The schedule: iterations of the phase, averaged from half way
        // every 2 iterations; IMP and the soup's candidates average nothing.
        let info = json(&run.join(format!("baselines/imp-swa/phase-{p}/candidate-0.json")));
        let total = info["iterations"].as_u64().unwrap();
        assert!(total >= 4, "{total}");
        assert_eq!(
            info["swa_iterates"].as_u64(),
            Some(swa_count(total, 0.5, 2))
        );
        // IMP's first phase is the soup's candidate 0 (same seed and parent).
        let imp_info = json(&run.join(match p {
            1 => "phase-1/candidate-0.json".to_string(),
            _ => format!("baselines/imp-0/phase-{p}/candidate-0.json"),
        }));
        assert!(imp_info.get("swa_iterates").is_none());
        assert_eq!(imp_info["iterations"], info["iterations"]);
        let o = trainer()
            .args(["eval", "--model", "cnn", "--device", "cpu", "--json"])
            .arg("--data")
            .arg(&data)
            .arg("--checkpoint")
            .arg(run.join(ck))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ev["top1"], swa_row["test_acc"], "phase {p}");
    }
    // A repeats summary gives imp-swa a column of its own.
    let report: trainer::sms::Report = serde_json::from_value(report).unwrap();
    let summary = trainer::sms::repeats::summarise(&[report.clone(), report], &[0, 1000]).unwrap();
    assert!(summary.phases[0].models.contains_key("imp-swa"));
    let header = summary.table().lines().nth(1).unwrap().to_string();
    assert!(header.contains("imp-swa"), "{header}");
    // Phase 2 prunes imp-swa's own phase-1 average.
    let prune = json(&run.join("baselines/imp-swa/phase-2/prune.json"));
    assert!(prune["source"]
        .as_str()
        .unwrap()
        .ends_with("baselines/imp-swa/phase-1/candidate-0.safetensors"));
}
