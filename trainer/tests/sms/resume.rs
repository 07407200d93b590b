//! A run split or interrupted gives the run straight through: resuming
//! after a kill, the printed plan of jobs, and candidates trained side by side.

use super::*;

#[test]
fn killed_run_resumes_to_the_same_report() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    run_sms(&data, &whole, &[]);

    let killed = dir.path().join("killed");
    // Kill it during dense pretraining, once its first epoch is saved, then
    // again in the middle of the first phase, right after a candidate.
    kill_when(&data, &killed, &killed.join("dense/resume.safetensors"));
    assert!(!killed.join("dense/final.safetensors").exists());
    let marker = killed.join("phase-1/candidate-1.safetensors");
    kill_when(&data, &killed, &marker);
    assert!(!killed.join("report.json").exists());
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();

    run_sms(&data, &killed, &[]);
    // Finished work was not redone, and the report is the same.
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        before
    );
    assert_same_report(&whole, &killed);
    // Every checkpoint under its final name is complete (temporary files of
    // the killed process may remain under their hidden names).
    for p in walk(&killed) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !name.starts_with('.') {
            Checkpoint::open(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Starts the test's `trainer sms` run in `run` and kills it with SIGKILL as
/// soon as `marker` exists.
fn kill_when(data: &Path, run: &Path, marker: &Path) {
    support::kill_when(trainer().args(sms_args(data, run, &[])), marker);
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

#[test]
fn plan_commands_and_parallel_jobs_reproduce_the_run() {
    let (dir, data) = scratch_with_data();
    let whole = dir.path().join("whole");
    run_sms(&data, &whole, &[]);

    // Candidates side by side in child processes.
    let jobs = dir.path().join("jobs");
    run_sms(&data, &jobs, &["--jobs", "3"]);
    assert_same_report(&whole, &jobs);

    // The per-step commands a cluster scheduler would run, one by one.
    let planned = dir.path().join("planned");
    let plan = run_sms(&data, &planned, &["--plan"]);
    let lines: Vec<&str> = plan.lines().collect();
    assert!(lines[0].ends_with(" --step prepare:1"), "{plan}");
    assert!(lines.last().unwrap().ends_with(" --step report"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" --step candidate:"))
            .count(),
        6
    );
    assert!(
        !planned.join("report.json").exists(),
        "--plan must not run anything"
    );
    for line in &lines {
        let o = Command::new("sh").arg("-c").arg(line).output().unwrap();
        assert!(
            o.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_same_report(&whole, &planned);
}

/// The report of `UNCHANGED_FLAGS` on the tiny data set as the trainer wrote
/// it before it was reshaped around methods (commit da5f42c, on an AMD EPYC
/// CPU), with `data` (a temporary folder) blanked. It was recorded on one
/// CPU model, so runs on others are compared with it up to
/// [`support::Portable`]'s bounds, never digit for digit; runs made inside
/// the test are compared with each other exactly.
const UNCHANGED_REPORT: &str = "tests/data/sms-report-before-reshape.json";

/// Two phases, two candidates, the IMP and IMP-RePrune baselines.
const UNCHANGED_FLAGS: [&str; 8] = [
    "--candidates",
    "2",
    "--epochs-per-phase",
    "0.5",
    "--baselines",
    "imp,reprune",
    "--corruptions",
    "none",
];

/// A run's report.json without its data folder (a temporary path) and
/// without the candidates' disagreement, which the recorded report
/// predates (every phase must have it).
fn report_without_data(run: &Path) -> serde_json::Value {
    let mut report = json(&run.join("report.json"));
    report["data"] = serde_json::Value::Null;
    for phase in report["phases"].as_array_mut().unwrap() {
        let d = phase.as_object_mut().unwrap().remove("disagreement");
        assert!(d.is_some_and(|d| d["mean"].is_number()));
    }
    report
}

/// The reshaped pipeline computes what the one before it did: the same
/// models, names, checkpoints and sparsities as the recorded report, and
/// accuracies, calibration errors and distances within the rounding of
/// another CPU model. Killed during a candidate and resumed, it gives the
/// report of the straight run on this machine exactly.
#[test]
fn reshaped_trainer_gives_the_report_of_before_straight_and_killed_during_a_candidate() {
    let (dir, data) = scratch_with_data();
    let straight = dir.path().join("straight");
    run_sms(&data, &straight, &UNCHANGED_FLAGS);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(UNCHANGED_REPORT);
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    support::assert_like_json(
        &before,
        &report_without_data(&straight),
        &support::Portable::DEFAULT,
    );

    // Killed while candidate 1 of phase 2 trains (candidate 0 is finished),
    // then resumed by the same command.
    let killed = dir.path().join("killed");
    let marker = killed.join("phase-2/candidate-0.json");
    support::kill_when(
        trainer().args(sms_args(&data, &killed, &UNCHANGED_FLAGS)),
        &marker,
    );
    assert!(!killed.join("phase-2/candidate-1.json").exists());
    run_sms(&data, &killed, &UNCHANGED_FLAGS);
    assert_same_report(&straight, &killed);
}

/// The study's shape: augmented data, repeats sharing one trained dense
/// parent (`--from`), the `imp-swa` baseline and repeats side by side; a run
/// killed in the middle of the second repeat resumes to the same summary
/// and reports.
#[test]
fn killed_study_run_resumes_to_the_same_summary() {
    let (dir, data) = scratch_with_data();
    let dense = dir.path().join("dense");
    let o = trainer()
        .args(["train", "--model", "cnn", "--epochs", "1"])
        .args(["--batch-size", "32", "--lr", "0.05", "--threads", "1"])
        .args(["--device", "cpu", "--augment", "crop-flip"])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&dense)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from = dense.join("final.safetensors");
    let from = from.to_str().unwrap();
    let flags = [
        "--from",
        from,
        "--phases",
        "1",
        "--candidates",
        "2",
        "--augment",
        "crop-flip",
        "--baselines",
        "imp,imp-swa",
        "--imp-swa-from",
        "0.5",
        "--swa-every",
        "3",
        "--corruptions",
        "none",
        "--repeats",
        "2",
    ];
    let whole = dir.path().join("whole");
    run_sms(&data, &whole, &flags);

    let killed = dir.path().join("killed");
    let marker = killed.join("repeat-1/phase-1/candidate-0.safetensors");
    support::kill_when(trainer().args(sms_args(&data, &killed, &flags)), &marker);
    assert!(!killed.join("summary.json").exists());
    assert!(!killed.join("repeat-1/report.json").exists());
    let mut resumed = flags.to_vec();
    resumed.extend(["--repeat-jobs", "2"]);
    run_sms(&data, &killed, &resumed);
    for r in 0..2 {
        let repeat = format!("repeat-{r}");
        assert_same_report(&whole.join(&repeat), &killed.join(&repeat));
    }
    let (a, b) = (
        json(&whole.join("summary.json")),
        json(&killed.join("summary.json")),
    );
    support::assert_same_json(&a, &b);
    // Both repeats started from the one dense parent they were given: its
    // tensors, byte for byte (each repeat recalibrates batch norm on its
    // own batches afterwards, into the parent it prunes).
    let given = Checkpoint::open(dense.join("final.safetensors")).unwrap();
    for r in 0..2 {
        let copy =
            Checkpoint::open(killed.join(format!("repeat-{r}/dense/final.safetensors"))).unwrap();
        assert_eq!(given.tensors().len(), copy.tensors().len());
        for t in given.tensors() {
            let c = copy.get(&t.name).unwrap();
            assert_eq!(given.data(t), copy.data(c), "repeat {r}: {}", t.name);
        }
    }
}
