//! Repeats of a whole run with other base seeds, and their summary.

use super::*;

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

    // The summary's plot: a marker per phase and model (and one in the
    // legend) at the mean, and an error bar (three segments) wherever the
    // standard deviation is not zero.
    let drawn = svg::read(&std::fs::read_to_string(rep.join("summary.svg")).unwrap());
    let (mut points, mut bars) = (0, 0);
    for phase in summary["phases"].as_array().unwrap() {
        for m in phase["models"].as_object().unwrap().values() {
            for stat in [&m["test_acc"], &m["ood_acc"]] {
                if !stat.is_null() {
                    points += 1;
                    bars += usize::from(stat["std"].as_f64().unwrap() > 0.0);
                }
            }
        }
    }
    let models = summary["phases"][0]["models"].as_object().unwrap().len();
    assert_eq!(drawn.legend.len(), models);
    assert_eq!(drawn.markers.values().sum::<usize>(), points + models);
    assert_eq!(drawn.lines.values().sum::<usize>(), 3 * bars);
    svg::assert_round_ticks(&drawn, 3);
}
