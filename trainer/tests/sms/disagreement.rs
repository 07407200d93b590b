//! The candidates' disagreement: the rate at which two candidates' top-1
//! test predictions differ, recorded per phase and reported, equals a
//! direct count over the saved candidates, and is 0 for candidates that
//! are the same model.

use super::*;

/// One phase to 95% sparsity with a quarter epoch of retraining: on the
/// tiny data set, where trained models are all right on every image,
/// this leaves candidates that are wrong in different places.
const HARSH: &[&str] = &[
    "--phases",
    "1",
    "--sparsity",
    "0.95",
    "--epochs-per-phase",
    "0.25",
    "--pretrain-epochs",
    "1",
    "--corruptions",
    "none",
];

/// Checks the phase's recorded disagreement against a direct count over
/// its candidates, pair by pair; returns the mean.
fn check_against_candidates(run: &Path, phase: usize, m: u32) -> f64 {
    let ws = session(run);
    let preds: Vec<Vec<i64>> = (0..m)
        .map(|i| {
            support::predictions(
                &ws,
                &run.join(format!("phase-{phase}/candidate-{i}.safetensors")),
            )
        })
        .collect();
    let n = preds[0].len();
    let info = json(&run.join(format!("phase-{phase}/phase.json")));
    let d = &info["disagreement"];
    assert_eq!(d["images"].as_u64().unwrap() as usize, n);
    let pairs = d["pairs"].as_array().unwrap();
    assert_eq!(pairs.len() as u32, m * (m - 1) / 2);
    let mut rates = Vec::new();
    for pair in pairs {
        let (a, b) = (pair["a"].as_u64().unwrap(), pair["b"].as_u64().unwrap());
        let differ = (0..n)
            .filter(|&k| preds[a as usize][k] != preds[b as usize][k])
            .count();
        let want = differ as f64 / n as f64;
        assert_eq!(pair["rate"].as_f64().unwrap(), want, "pair {a}-{b}");
        rates.push(want);
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    assert!((d["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert_eq!(
        (d["min"].as_f64(), d["max"].as_f64()),
        (Some(min), Some(max))
    );
    // The report carries the phase's record, and its table and CSV the mean.
    let report = json(&run.join("report.json"));
    assert_eq!(&report["phases"][phase - 1]["disagreement"], d);
    let csv = std::fs::read_to_string(run.join("report.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(phase).unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "disagreement").unwrap();
    assert_eq!(
        row[col].parse::<f64>().unwrap(),
        d["mean"].as_f64().unwrap()
    );
    mean
}

#[test]
fn disagreement_is_the_share_of_test_images_two_candidates_predict_differently() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let table = run_sms(&data, &run, &[HARSH, &["--candidates", "3"]].concat());
    let mean = check_against_candidates(&run, 1, 3);
    // Candidates with their own seeds predict some images differently.
    assert!(mean > 0.0, "seeded candidates agree everywhere");
    let header = table.lines().nth(1).unwrap();
    let col = header
        .split_whitespace()
        .position(|h| h == "disagree%")
        .unwrap();
    let value = table
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .nth(col)
        .unwrap();
    assert_eq!(value, format!("{:.2}", 100.0 * mean), "{table}");
}

#[test]
fn candidates_that_are_one_model_never_disagree() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    // Same seed, same weight decay: the candidates train to the same model
    // (where seeds differ, they disagree: the test above).
    run_sms(
        &data,
        &run,
        &[
            HARSH,
            &[
                "--candidates",
                "2",
                "--vary",
                "weight-decay",
                "--vary-values",
                "1e-4,1e-4",
            ],
        ]
        .concat(),
    );
    let c =
        |i: u32| Checkpoint::open(run.join(format!("phase-1/candidate-{i}.safetensors"))).unwrap();
    let (a, b) = (c(0), c(1));
    for n in prunable(&a) {
        assert_eq!(f32s(&a, &n), f32s(&b, &n), "{n}");
    }
    assert_eq!(check_against_candidates(&run, 1, 2), 0.0);
}
