//! Run folders written by an earlier binary still resume. Each fixture in
//! `tests/data/runs/` is a finished run of `trainer sms` or `trainer pdt`
//! on the tiny data set (in `data/` beside it), with its checkpoints
//! emptied to keep it small: rerunning its command must find every step
//! done, write no checkpoint, and rebuild the report recorded with it.
//! Only recorded numbers go into that report, so it is the same on every
//! CPU.

use super::*;
use support::assert_same_json;

const SMS: &[&str] = &[
    "sms",
    "--quiet",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--corruptions",
    "none",
    "--model",
    "cnn",
    "--data",
    "data",
    "--out",
    "sms-run",
    "--sparsity",
    "0.5",
    "--phases",
    "2",
    "--candidates",
    "2",
    "--epochs-per-phase",
    "0.25",
    "--pretrain-epochs",
    "1",
    "--baselines",
    "imp",
    "--exclude",
    "^conv1\\.",
];

const PDT: &[&str] = &[
    "pdt",
    "--quiet",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--corruptions",
    "none",
    "--model",
    "cnn",
    "--data",
    "data",
    "--out",
    "pdt-run",
    "--method",
    "gmp",
    "--sparsity",
    "0.8",
    "--epochs",
    "2",
    "--candidates",
    "2",
    "--prune-every",
    "0.5",
    "--baselines",
    "plain",
    "--exclude",
    "^conv1\\.",
];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn resumes_to_its_recorded_report(name: &str, args: &[&str]) {
    let (dir, _data) = scratch_with_data();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs");
    let run = dir.path().join(name);
    copy_tree(&fixtures.join(name), &run);
    let o = trainer()
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name} did not resume:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_same_json(
        &json(&run.join("report.json")),
        &json(&fixtures.join(format!("{name}.expected-report.json"))),
    );
    // Nothing was trained again: every checkpoint is still the empty
    // stand-in of the fixture.
    for p in walk(&run) {
        if p.extension().is_some_and(|e| e == "safetensors") {
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "{}", p.display());
        }
    }
}

#[test]
fn an_sms_run_folder_of_an_earlier_binary_resumes() {
    resumes_to_its_recorded_report("sms-run", SMS);
}

#[test]
fn a_pdt_run_folder_of_an_earlier_binary_resumes() {
    resumes_to_its_recorded_report("pdt-run", PDT);
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
