//! Settings from a config file, and candidates that differ by more than
//! their seed.

use super::*;

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
