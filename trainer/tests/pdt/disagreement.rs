//! The candidates' disagreement in `trainer pdt`: each soup segment
//! records the rate at which two of its candidates' top-1 test predictions
//! differ, equal to a direct count over the saved candidates; the report
//! carries it per segment and as the soup run's mean.

use super::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn each_soup_segment_records_how_often_its_candidates_disagree() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let table = run_pdt(
        &data,
        &run,
        &[
            "--epochs",
            "2",
            "--candidates",
            "2",
            "--prune-every",
            "0.5",
            "--baselines",
            "plain",
        ],
    );
    let ws = trainer::pdt::run::PdtRun::open(&run).unwrap().ws;
    let mut means = Vec::new();
    for k in 0.. {
        let seg = run.join(format!("sms/seg-{k:03}"));
        if !seg.exists() {
            break;
        }
        let record = json(&seg.join("segment.json"));
        if record["candidates"] != 2 {
            assert!(record.get("disagreement").is_none(), "segment {k}");
            continue;
        }
        let a = support::predictions(&ws, &seg.join("candidate-0.safetensors"));
        let b = support::predictions(&ws, &seg.join("candidate-1.safetensors"));
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        let want = differ as f64 / a.len() as f64;
        let d = &record["disagreement"];
        assert_eq!(d["pairs"][0]["rate"].as_f64(), Some(want), "segment {k}");
        assert_eq!(d["mean"].as_f64(), Some(want), "segment {k}");
        means.push(want);
    }
    assert!(!means.is_empty(), "no soup segment");
    assert!(means.iter().any(|m| *m > 0.0), "{means:?}");
    let report = json(&run.join("report.json"));
    let soup = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "gmp+sms")
        .unwrap();
    let mean = means.iter().sum::<f64>() / means.len() as f64;
    assert!((soup["disagreement"].as_f64().unwrap() - mean).abs() < 1e-12);
    let plain = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "gmp")
        .unwrap();
    assert!(plain.get("disagreement").is_none());
    let line = table.lines().find(|l| l.starts_with("gmp+sms")).unwrap();
    assert!(line.ends_with(&format!("{:.2}", 100.0 * mean)), "{table}");
    let csv = std::fs::read_to_string(run.join("report.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(",disagreement"),
        "{csv}"
    );
}
