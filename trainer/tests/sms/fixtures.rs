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

/// Copies the fixture `name` into a scratch folder, runs each of
/// `commands` there in turn, and checks that the report is the one
/// recorded with the fixture and that nothing was trained again.
fn resumes_to_its_recorded_report(name: &str, commands: &[&[&str]]) {
    let (dir, _data) = scratch_with_data();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs");
    let run = dir.path().join(name);
    copy_tree(&fixtures.join(name), &run);
    for args in commands {
        let o = trainer()
            .args(*args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: `{}` failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
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
    resumes_to_its_recorded_report("sms-run", &[SMS]);
}

#[test]
fn a_pdt_run_folder_of_an_earlier_binary_resumes() {
    resumes_to_its_recorded_report("pdt-run", &[PDT]);
}

/// Steps are reached one way for both commands (`trainer sms|pdt --out RUN
/// --step STEP`); the per-step commands of earlier versions still work on
/// folders they wrote, but `trainer --help` no longer lists them.
#[test]
fn steps_of_earlier_run_folders_run_through_step_and_the_old_spellings() {
    let sms = |step: &'static str| -> Vec<&'static str> {
        vec!["sms", "--quiet", "--out", "sms-run", "--step", step]
    };
    let (c1, c2, c3, c4) = (
        sms("prepare:2"),
        sms("candidate:2:1"),
        sms("soup:2"),
        sms("baseline:imp"),
    );
    let old_candidate = [
        "candidate",
        "--run",
        "sms-run",
        "--phase",
        "1",
        "--index",
        "0",
    ];
    let report = sms("report");
    let old_report = ["report", "--run", "sms-run"];
    resumes_to_its_recorded_report(
        "sms-run",
        &[&c1, &c2, &c3, &c4, &old_candidate, &report, &old_report],
    );
    let pdt_report = ["pdt", "--quiet", "--out", "pdt-run", "--step", "report"];
    resumes_to_its_recorded_report("pdt-run", &[&pdt_report]);

    let o = trainer().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for visible in ["train", "eval", "pdt", "sms", "status"] {
        assert!(commands.contains(&visible), "{visible} missing:\n{help}");
    }
    for hidden in [
        "dense",
        "prepare",
        "candidate",
        "soup",
        "baseline",
        "plan",
        "report",
    ] {
        assert!(!commands.contains(&hidden), "{hidden} listed:\n{help}");
    }
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

/// Run folders recorded before the candidates' disagreement was measured
/// report it as missing: the report is built from records alone (the
/// fixtures' checkpoints are empty), so nothing is recomputed.
#[test]
fn run_folders_of_an_earlier_binary_report_disagreement_as_missing() {
    let (dir, _data) = scratch_with_data();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs");
    // The commands that made them, which resume them and print the table.
    for (name, args) in [("sms-run", SMS), ("pdt-run", PDT)] {
        copy_tree(&fixtures.join(name), &dir.path().join(name));
        let o = trainer()
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<&str> = table.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.contains("disagree%"))
            .unwrap_or_else(|| panic!("{name}: no disagree% column\n{table}"));
        let col = lines[header]
            .split_whitespace()
            .position(|h| h == "disagree%")
            .unwrap();
        let rows: Vec<&str> = lines[header + 1..]
            .iter()
            .copied()
            .take_while(|l| !l.starts_with("report:"))
            .collect();
        assert!(!rows.is_empty(), "{table}");
        for row in rows {
            assert_eq!(
                row.split_whitespace().nth(col),
                Some("-"),
                "{name}:\n{table}"
            );
        }
        let report = std::fs::read_to_string(dir.path().join(name).join("report.json")).unwrap();
        assert!(!report.contains("disagreement"), "{name}");
    }
}
