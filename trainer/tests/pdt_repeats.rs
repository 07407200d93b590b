//! `trainer pdt --repeats R` on a tiny generated data set: each repeat is
//! the run with its own base seed, and the summary (`summary.json`,
//! `summary.csv`, `summary.svg`) gives the spread of the per-repeat
//! reports, with error bars in the plot.

use std::path::Path;
use std::process::Command;

mod support;
#[path = "support/svg.rs"]
mod svg;
use support::{assert_same_report, tiny_dataset};

fn run_pdt(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<String> = [
        "pdt",
        "--quiet",
        "--method",
        "gmp",
        "--model",
        "cnn",
        "--sparsity",
        "0.8",
        "--epochs",
        "2",
        "--candidates",
        "2",
        "--prune-every",
        "6it",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--corruptions",
        "none",
        "--baselines",
        "plain",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .unwrap();
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

/// Mean and sample standard deviation of two values.
fn stat(v: &[f64]) -> (f64, f64) {
    let mean = (v[0] + v[1]) / 2.0;
    let std = ((v[0] - mean).powi(2) + (v[1] - mean).powi(2)).sqrt();
    (mean, std)
}

fn assert_stat(got: &serde_json::Value, values: &[f64], what: &str) {
    let (mean, std) = stat(values);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(got["mean"].as_f64().unwrap(), mean), "{what}: {got}");
    assert!(close(got["std"].as_f64().unwrap(), std), "{what}: {got}");
}

#[test]
fn pdt_repeats_reproduce_single_runs_and_report_their_spread() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_dataset(&data);
    let rep = dir.path().join("rep");
    let table = run_pdt(&data, &rep, &["--repeats", "2"]);
    assert!(table.contains('±') && table.contains("soup-gmp"), "{table}");
    // Repeat 1 is the run with base seed 1000.
    let single = dir.path().join("single");
    run_pdt(&data, &single, &["--seed", "1000"]);
    assert_same_report(&rep.join("repeat-1"), &single);
    // The root folder's configuration records the repeats; a repeat's is
    // an ordinary run's (no `repeats` key).
    let config = std::fs::read_to_string(rep.join("config.toml")).unwrap();
    assert!(config.contains("repeats = 2"), "{config}");
    let config = std::fs::read_to_string(rep.join("repeat-0/config.toml")).unwrap();
    assert!(!config.contains("repeats"), "{config}");

    // The summary's spread is that of the per-repeat reports.
    let summary = json(&rep.join("summary.json"));
    assert_eq!(summary["seeds"], serde_json::json!([0, 1000]));
    assert_eq!(summary["method"], "gmp");
    let reports: Vec<serde_json::Value> = (0..2)
        .map(|r| json(&rep.join(format!("repeat-{r}/report.json"))))
        .collect();
    let acc = |name: &str| -> Vec<f64> {
        reports
            .iter()
            .map(|r| {
                let runs = r["runs"].as_array().unwrap();
                let run = runs.iter().find(|x| x["name"] == name).unwrap();
                run["test_acc"].as_f64().unwrap()
            })
            .collect()
    };
    let p = &summary["phases"][0];
    for name in ["gmp+sms", "gmp"] {
        assert_stat(&p["models"][name]["test_acc"], &acc(name), name);
    }
    let lead: Vec<f64> = acc("gmp+sms")
        .iter()
        .zip(acc("gmp"))
        .map(|(s, g)| s - g)
        .collect();
    assert_stat(&p["soup_minus"]["gmp"], &lead, "soup minus gmp");
    assert!(p["soup_minus"].get("gmp+sms").is_none());
    let curves = summary["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 2);
    for (c, curve) in curves.iter().enumerate() {
        for (k, point) in curve["points"].as_array().unwrap().iter().enumerate() {
            let v: Vec<f64> = reports
                .iter()
                .map(|r| r["curves"][c]["points"][k]["test_acc"].as_f64().unwrap())
                .collect();
            assert_stat(&point["test_acc"], &v, "curve point");
        }
    }
    let csv = std::fs::read_to_string(rep.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // The plot: the single run's markers at the means, and an error bar
    // (three segments) wherever the standard deviation is not zero (on
    // this easy data set the repeats may agree everywhere; the plot's unit
    // tests draw spread).
    let drawn = svg::read(&std::fs::read_to_string(rep.join("summary.svg")).unwrap());
    assert_eq!(drawn.legend, ["gmp", "gmp+sms"]);
    let (mut markers, mut bars) = (0, 0);
    for curve in curves {
        let points = curve["points"].as_array().unwrap();
        markers += 2 * points.len() + 2;
        for point in points {
            for key in ["sparsity", "test_acc"] {
                bars += usize::from(point[key]["std"].as_f64().unwrap() > 0.0);
            }
        }
    }
    assert_eq!(drawn.markers.values().sum::<usize>(), markers);
    assert_eq!(drawn.lines.values().sum::<usize>(), 3 * bars);
    svg::assert_round_ticks(&drawn, 3);
}
