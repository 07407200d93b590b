//! End-to-end tests of `trainer sms` on a tiny generated data set, one file
//! per theme: the pipeline itself (phase sparsity schedule, masks kept
//! through retraining, soups that are averages of their candidates), greedy
//! soups, resuming and splitting a run into jobs, per-candidate settings,
//! the one evaluation path of reported models, the candidates'
//! disagreement, and repeats.

use std::path::{Path, PathBuf};
use std::process::Command;

use soup_core::Checkpoint;

#[path = "../support/mod.rs"]
mod support;
#[path = "../support/svg.rs"]
mod svg;
use support::{assert_same_report, tiny_dataset};

mod checkpoints;
mod disagreement;
mod evaluation;
mod fixtures;
mod greedy;
mod nm;
mod pipeline;
mod repeats;
mod resume;
mod settings;
mod swa;

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

/// Opens a finished run through the library, as the run itself did.
fn session(run: &Path) -> trainer::pipeline::Workspace {
    trainer::sms::Session::open(run).unwrap().ws
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
