//! End-to-end tests of `soup inspect` on the committed fixtures.

mod common;

use common::*;
use soup_core::Inspection;
use soup_tests::{fixture, soup};

#[test]
fn inspect_reports_tensors_totals_and_metadata() {
    let c1 = fixture("candidate-1-sharded");
    let run = soup(["inspect", "--json", s(&c1)]);
    ok(&run);
    let report: Inspection = serde_json::from_str(&run.stdout).expect("inspect --json");
    assert_eq!(report.tensors.len(), 10);
    assert_eq!(report.files.len(), 3);
    assert_eq!(report.metadata["format"], "pt");
    let conv = &report.tensors[0];
    assert_eq!(conv.name, "conv1.weight");
    assert_eq!(
        (conv.dtype.as_str(), conv.numel, conv.bytes),
        ("F32", 72, 288)
    );
    assert_eq!(conv.zeros, Some(36));
    let steps = report
        .tensors
        .iter()
        .find(|t| t.name == "bn1.num_batches_tracked")
        .unwrap();
    assert_eq!((steps.zeros, steps.sparsity), (None, None));
    assert_eq!(
        report.bytes,
        report.tensors.iter().map(|t| t.bytes).sum::<u64>()
    );
    assert_eq!(report.float_numel, report.numel - 1);

    let run = soup(["inspect", "--json", "--headers-only", s(&c1)]);
    let headers: Inspection = serde_json::from_str(&ok(&run).stdout).unwrap();
    assert!(headers.tensors.iter().all(|t| t.zeros.is_none()));
    assert_eq!(headers.bytes, report.bytes);

    let run = soup(["inspect", s(&fixture("candidate-0-f16.safetensors"))]);
    ok(&run);
    assert!(
        run.stdout.lines().next().unwrap().starts_with("tensor"),
        "{}",
        run.stdout
    );
    let row = ["conv1.weight", "F16", "8x1x3x3", "72", "144", "B", "50.00%"];
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(row.iter().copied())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("metadata format = pt"),
        "{}",
        run.stdout
    );
}
