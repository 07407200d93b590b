//! `trainer pdt --executor slurm`: the job graph `--plan` writes (without
//! Slurm), and a run through Slurm that writes the local run's report and
//! whose steps `trainer status` lists as done.

use std::path::Path;

use super::support::assert_same_report;
use super::{json, ok, run_cmd, scratch, status, Cluster};

/// GMP with soups and its plain baseline on the tiny data set: the soup
/// chain forks three candidates at each of its few segments. One thread, so
/// that runs in different processes give the same accuracies.
fn pdt_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "pdt",
        "--quiet",
        "--method",
        "gmp",
        "--baselines",
        "plain",
        "--model",
        "cnn",
        "--sparsity",
        "0.75",
        "--epochs",
        "2",
        "--prune-every",
        "1",
        "--candidates",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--corruptions",
        "none",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn trainer() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
}

#[test]
fn pdt_plan_on_slurm_writes_the_job_graph_without_submitting() {
    let (dir, data) = scratch();
    let run = dir.path().join("run");
    let o = run_cmd(trainer().args(pdt_args(
        &data,
        &run,
        &["--executor", "slurm", "--plan", "--slurm-mem", "300M"],
    )));
    let plan = ok(&o, "plan");
    // One line per job: NAME=$(sbatch --parsable [--dependency=afterok:$A:$B
    // --kill-on-invalid-dep=yes] SCRIPT).
    let jobs: Vec<(String, Vec<String>, String)> = plan
        .lines()
        .map(|l| {
            let (var, rest) = l.split_once("=$(sbatch --parsable ").expect(l);
            let after = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("--dependency=afterok:"))
                .map(|d| d.split(':').map(|v| v.trim_start_matches('$').to_string()))
                .into_iter()
                .flatten()
                .collect();
            let script = rest.rsplit(' ').next().unwrap().trim_end_matches(')');
            (var.to_string(), after, script.to_string())
        })
        .collect();
    let names: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
    let after = |name: &str| -> Vec<String> {
        jobs.iter()
            .find(|j| j.0 == name)
            .unwrap_or_else(|| panic!("no job {name} in\n{plan}"))
            .1
            .clone()
    };
    // The soup chain: prepare, the candidates as an array, the soup that
    // waits on it and prepares the next segment, ...; the plain baseline
    // is one job; the report waits on both chains.
    assert_eq!(names[0], "prepare_sms_0", "{plan}");
    assert_eq!(after("candidates_sms_0"), ["prepare_sms_0"]);
    let soups: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("close_sms_"))
        .collect();
    assert!(soups.len() >= 2, "{plan}");
    assert!(soups.last().unwrap().ends_with("__finish_sms"), "{plan}");
    for soup in &soups {
        let k = soup.split('_').nth(2).unwrap();
        assert_eq!(after(soup), [format!("candidates_sms_{k}")], "{plan}");
    }
    assert!(after("prepare_plain_0__finish_plain").is_empty(), "{plan}");
    assert_eq!(
        after("report"),
        [
            soups.last().unwrap().to_string(),
            "prepare_plain_0__finish_plain".into()
        ]
    );
    // Each array runs one task per candidate; the scripts carry the
    // resources; nothing was submitted.
    let slurm = run.canonicalize().unwrap().join("slurm");
    let array = std::fs::read_to_string(slurm.join("candidates-sms-0.sbatch")).unwrap();
    assert!(
        array.lines().any(|l| l == "#SBATCH --array=0,1,2"),
        "{array}"
    );
    assert!(array.lines().any(|l| l == "#SBATCH --mem=300M"), "{array}");
    assert!(
        array.contains("pdt --out")
            && array.contains("--step \"candidate:sms:0:$SLURM_ARRAY_TASK_ID\""),
        "{array}"
    );
    let plain =
        std::fs::read_to_string(slurm.join("prepare-plain-0..finish-plain.sbatch")).unwrap();
    assert!(plain.contains("\nset -e\n"), "{plain}");
    assert!(plain.contains("--step finish:plain\n"), "{plain}");
    for (_, _, script) in &jobs {
        assert!(Path::new(script).exists(), "{script}");
    }
    assert!(!slurm.join("jobs.json").exists());
    assert!(!run.join("report.json").exists());
    // `trainer status` knows the pdt run from its configuration: every
    // step, none submitted.
    let o = run_cmd(trainer().args(["status", "--json", "--out"]).arg(&run));
    let st: serde_json::Value = serde_json::from_str(&ok(&o, "status")).unwrap();
    let st = st["steps"].as_array().unwrap();
    let plan_steps = ok(
        &run_cmd(trainer().args(pdt_args(&data, &run, &["--plan"]))),
        "local plan",
    );
    assert_eq!(st.len(), plan_steps.lines().count(), "{st:?}");
    for (s, line) in st.iter().zip(plan_steps.lines()) {
        let step = line.rsplit_once(" --step ").unwrap().1.replace(':', "-");
        assert_eq!(s["step"], step.as_str());
        assert_eq!(s["state"], "not-submitted");
    }
    // --wait follows Slurm jobs only.
    let o = run_cmd(trainer().args(pdt_args(&data, &run, &["--wait"])));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--wait follows Slurm jobs"), "{err}");
    // ... that were submitted: --plan submits none.
    let both = ["--executor", "slurm", "--plan", "--wait"];
    let o = run_cmd(trainer().args(pdt_args(&data, &run, &both)));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--plan submits none"), "{err}");
    // A folder of repeats is no run of its own.
    let repeats = dir.path().join("repeats");
    let o = run_cmd(trainer().args(pdt_args(&data, &repeats, &["--repeats", "2", "--plan"])));
    ok(&o, "plan of repeats");
    let o = run_cmd(trainer().args(["status", "--run"]).arg(&repeats));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("holds 2 repeats") && err.contains("repeat-0"),
        "{err}"
    );

    // Repeats and side-by-side jobs are local matters.
    for extra in [&["--repeats", "2"][..], &["--jobs", "2"]] {
        let mut args = pdt_args(&data, &dir.path().join("other"), extra);
        args.extend(["--executor".into(), "slurm".into()]);
        let o = run_cmd(trainer().args(&args));
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--executor local"), "{err}");
    }
}

#[test]
fn pdt_on_slurm_writes_the_local_report_and_status_lists_every_step_done() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (dir, data) = scratch();
    let local = dir.path().join("local");
    ok(
        &run_cmd(cluster.trainer().args(pdt_args(&data, &local, &[]))),
        "local run",
    );

    let slurm = dir.path().join("slurm");
    let extra = [
        "--executor",
        "slurm",
        "--wait",
        "--slurm-cpus-per-task",
        "1",
        "--slurm-mem",
        "300M",
    ];
    let table = ok(
        &run_cmd(cluster.trainer().args(pdt_args(&data, &slurm, &extra))),
        "slurm run",
    );
    assert!(table.contains("gmp+sms"), "{table}");
    assert_same_report(&local, &slurm);

    // Candidates ran as one array per segment, every job completed.
    let jobs = json(&slurm.join("slurm/jobs.json"));
    let jobs = jobs.as_array().unwrap();
    let arrays: Vec<&str> = jobs
        .iter()
        .filter(|j| j["step"].as_str().unwrap().starts_with("candidate-sms-0-"))
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(arrays.len(), 3, "{jobs:?}");
    let id = arrays[0].split('_').next().unwrap();
    assert_eq!(arrays, [0, 1, 2].map(|t| format!("{id}_{t}")));
    for j in jobs {
        let info = cluster.job(j["job"].as_str().unwrap());
        for field in ["JobState=COMPLETED", "MinMemoryNode=300M"] {
            assert!(info.contains(field), "{j}: no {field} in {info}");
        }
        assert!(
            Path::new(j["log"].as_str().unwrap()).exists(),
            "{j}: no log"
        );
    }

    // `trainer status` reads the pdt run (here spelt with --out).
    let st = status(&cluster, &slurm);
    assert!(st.iter().all(|s| s.1 == "done"), "{st:?}");
    let steps: Vec<&str> = st.iter().map(|s| s.0.as_str()).collect();
    let want = [
        "prepare-sms-0",
        "candidate-sms-0-2",
        "close-sms-0",
        "finish-plain",
        "report",
    ];
    for step in want {
        assert!(steps.contains(&step), "{step}: {steps:?}");
    }
    assert_eq!(st.len(), jobs.len(), "every step was submitted once");
    // A finished run submits nothing.
    let mut again = pdt_args(&data, &slurm, &[]);
    again.extend(["--executor".into(), "slurm".into()]);
    let o = run_cmd(cluster.trainer().args(again));
    assert_eq!(ok(&o, "resubmission"), "");
    assert_eq!(
        json(&slurm.join("slurm/jobs.json"))
            .as_array()
            .unwrap()
            .len(),
        jobs.len()
    );
}
