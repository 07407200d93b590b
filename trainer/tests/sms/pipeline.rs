//! The pipeline end to end: phase sparsity schedule, masks kept through
//! retraining, soups that are averages of their candidates, and sparsity
//! counted over exactly the pruned tensors.

use soup_core::{check_masks, Control, Selection};

use super::*;

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
    // The plot: every model in the legend, a marker per phase, model and
    // panel (and one in the legend), round ticks.
    let plot = std::fs::read_to_string(run.join("accuracy_vs_sparsity.svg")).unwrap();
    let drawn = svg::read(&plot);
    let labels = [
        "SMS soup",
        "best candidate",
        "mean candidate",
        "ensemble",
        "IMP",
        "IMP long",
        "IMP-RePrune",
    ];
    assert_eq!(drawn.legend, labels);
    let markers: usize = drawn.markers.values().sum();
    let panels = if phases[0]["soup_ood_acc"].is_null() {
        1
    } else {
        2
    };
    assert_eq!(markers, labels.len() * (panels * phases.len() + 1));
    assert!(drawn.lines.is_empty(), "error bars without repeats");
    svg::assert_round_ticks(&drawn, 3);
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

    // What pruning the parent did (prune.json, from soup-core's report of
    // the pruning) equals a recomputation from the files: sparsity over the
    // pruned tensors, norms over the trainable ones.
    let info = json(&run.join("phase-1/prune.json"));
    let source = Checkpoint::open(info["source"].as_str().unwrap()).unwrap();
    let parent = Checkpoint::open(run.join("phase-1/parent.safetensors")).unwrap();
    let (z, n) = zeros_over(&parent, &pruned);
    assert_eq!(info["sparsity"].as_f64().unwrap(), z as f64 / n as f64);
    for (ck, key) in [(&source, "norm_before"), (&parent, "norm_after")] {
        let norm = trainable_norm(ck);
        let reported = info["impact"][key].as_f64().unwrap();
        assert!(
            (reported - norm).abs() <= 1e-12 * norm,
            "{key}: reported {reported}, recomputed {norm}"
        );
    }
    assert_eq!(info["impact"]["fraction"], info["fraction"]);
}

/// L2 norm of the trainable tensors of `ck` (every F32 tensor but the
/// batch-norm statistics), summed in f64.
fn trainable_norm(ck: &Checkpoint) -> f64 {
    ck.tensors()
        .iter()
        .filter(|t| t.dtype == soup_core::Dtype::F32)
        .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
        .flat_map(|t| f32s(ck, &t.name))
        .map(|v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}
