//! End-to-end tests of `trainer sms --executor slurm` (and of `trainer pdt
//! --executor slurm`, in `slurm/pdt.rs`) against a real
//! single-node Slurm cluster that `scripts/slurm-local.sh` starts for each
//! test (and stops at its end, also when it fails): the run through Slurm
//! writes the local run's report, the jobs carry the requested resources,
//! and a failed candidate cancels what depends on it, shows in `trainer
//! status` with its log, and is finished by submitting again.
//!
//! Starting Slurm needs root. Where it cannot start, the tests say why and
//! pass, unless `SOUP_REQUIRE_SLURM=1` (set by CI), which makes that a
//! failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "slurm/pdt.rs"]
mod pdt;
mod support;
use support::{assert_same_report, tiny_dataset};

/// One cluster at a time: the tests share the ports.
static CLUSTER: Mutex<()> = Mutex::new(());

/// A running local cluster; dropping it stops it.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    port: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh")
}

impl Cluster {
    /// Starts a cluster, or returns `None` (after saying why) where Slurm
    /// cannot start and `SOUP_REQUIRE_SLURM` is not `1`.
    fn start() -> Option<Cluster> {
        let lock = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let required = std::env::var("SOUP_REQUIRE_SLURM").is_ok_and(|v| v == "1");
        let dir = tempfile::tempdir().unwrap();
        // A port of its own, so that another checkout's tests running at
        // the same time do not collide with this one.
        let port = (7000 + (std::process::id() % 2000) * 2).to_string();
        let started = Instant::now();
        let o = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .env("SLURM_LOCAL_PORT", &port)
            .output()
            .unwrap();
        if !o.status.success() {
            let why = String::from_utf8_lossy(&o.stderr);
            if required {
                panic!("SOUP_REQUIRE_SLURM=1 but Slurm did not start:\n{why}");
            }
            eprintln!(
                "skipped: Slurm did not start (set SOUP_REQUIRE_SLURM=1 to fail instead):\n{why}"
            );
            return None;
        }
        eprintln!("slurm started in {:.1} s", started.elapsed().as_secs_f64());
        let conf = dir.path().join("slurm.conf");
        assert!(String::from_utf8_lossy(&o.stdout).contains(&conf.display().to_string()));
        Some(Cluster {
            dir,
            conf,
            port,
            _lock: lock,
        })
    }

    /// `trainer` with this cluster's configuration.
    fn trainer(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// What Slurm says about job `id` (`scontrol show job -o`).
    fn job(&self, id: &str) -> String {
        let o = Command::new("scontrol")
            .args(["show", "job", "-o", id])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let o = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .env("SLURM_LOCAL_PORT", &self.port)
            .output();
        if let Ok(o) = o {
            if !o.status.success() {
                eprintln!("stopping Slurm: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

/// Runs `cmd` to its end, failing the test if it takes over `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The settings of both runs of a test: tiny, and one thread, so that runs
/// in different processes give the same accuracies.
fn sms_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "sms",
        "--quiet",
        "--model",
        "cnn",
        "--sparsity",
        "0.75",
        "--phases",
        "2",
        "--candidates",
        "3",
        "--epochs-per-phase",
        "1",
        "--pretrain-epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
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

const LIMIT: Duration = Duration::from_secs(600);

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_dataset(&data);
    (dir, data)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `trainer status --json`: step name to (state, log).
fn status(cluster: &Cluster, run: &Path) -> Vec<(String, String, Option<String>)> {
    let out = ok(
        &run_cmd(
            cluster
                .trainer()
                .args(["status", "--json", "--out"])
                .arg(run),
        ),
        "trainer status",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
                s["log"].as_str().map(String::from),
            )
        })
        .collect()
}

fn run_cmd(cmd: &mut Command) -> Output {
    run(cmd, LIMIT)
}

fn state<'a>(st: &'a [(String, String, Option<String>)], step: &str) -> &'a str {
    &st.iter()
        .find(|s| s.0 == step)
        .unwrap_or_else(|| panic!("no step {step} in {st:?}"))
        .1
}

#[test]
fn slurm_run_writes_the_local_report_and_its_jobs_carry_the_resources() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (dir, data) = scratch();
    let local = dir.path().join("local");
    let baselines = ["--baselines", "imp"];
    ok(
        &run_cmd(cluster.trainer().args(sms_args(&data, &local, &baselines))),
        "local run",
    );

    let slurm = dir.path().join("slurm");
    let mut extra = baselines.to_vec();
    extra.extend([
        "--executor",
        "slurm",
        "--wait",
        "--slurm-cpus-per-task",
        "1",
        "--slurm-mem",
        "300M",
        "--slurm-time",
        "20",
        "--sbatch-arg=--comment=sms-test",
    ]);
    let started = Instant::now();
    let table = ok(
        &run_cmd(cluster.trainer().args(sms_args(&data, &slurm, &extra))),
        "slurm run",
    );
    eprintln!("slurm run took {:.1} s", started.elapsed().as_secs_f64());
    assert!(table.contains("soup"), "{table}");
    assert_same_report(&local, &slurm);

    // The scripts ask for the resources, and Slurm granted them.
    for name in [
        "dense",
        "prepare-1",
        "candidates-1",
        "soup-2",
        "baseline-imp",
        "report",
    ] {
        let s = std::fs::read_to_string(slurm.join(format!("slurm/{name}.sbatch"))).unwrap();
        for line in [
            "#SBATCH --cpus-per-task=1",
            "#SBATCH --mem=300M",
            "#SBATCH --time=20",
            "#SBATCH --comment=sms-test",
        ] {
            assert!(s.lines().any(|l| l == line), "{name}: no {line:?} in\n{s}");
        }
    }
    let jobs = json(&slurm.join("slurm/jobs.json"));
    let jobs = jobs.as_array().unwrap();
    // dense, 2 x (prepare, 3 candidates, soup), imp, report.
    assert_eq!(jobs.len(), 13, "{jobs:?}");
    for j in jobs {
        let info = cluster.job(j["job"].as_str().unwrap());
        for field in [
            "JobState=COMPLETED",
            "TimeLimit=00:20:00",
            "MinMemoryNode=300M",
            "Comment=sms-test",
        ] {
            assert!(info.contains(field), "{j}: no {field} in {info}");
        }
        assert!(
            Path::new(j["log"].as_str().unwrap()).exists(),
            "{j}: no log"
        );
    }
    // Candidates ran as one array per phase.
    let arrays: Vec<&str> = jobs
        .iter()
        .filter(|j| j["step"].as_str().unwrap().starts_with("candidate-1-"))
        .map(|j| j["job"].as_str().unwrap().split('_').next().unwrap())
        .collect();
    assert_eq!(arrays.len(), 3);
    assert!(arrays.iter().all(|a| *a == arrays[0]), "{arrays:?}");

    let st = status(&cluster, &slurm);
    assert!(st.iter().all(|s| s.1 == "done"), "{st:?}");
    // A finished run submits nothing.
    let mut again = sms_args(&data, &slurm, &baselines);
    again.extend(["--executor".into(), "slurm".into()]);
    let o = run_cmd(cluster.trainer().args(again));
    assert_eq!(ok(&o, "resubmission"), "");
    assert_eq!(
        json(&slurm.join("slurm/jobs.json"))
            .as_array()
            .unwrap()
            .len(),
        13
    );
}

#[test]
fn failed_candidate_cancels_its_dependents_and_resubmission_finishes_the_run() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (dir, data) = scratch();
    let local = dir.path().join("local");
    ok(
        &run_cmd(cluster.trainer().args(sms_args(&data, &local, &[]))),
        "local run",
    );

    // Phase 1's parent and first candidate are made here; then the data
    // folder vanishes, so the remaining candidate tasks fail.
    let run = dir.path().join("run");
    ok(
        &run_cmd(cluster.trainer().args(sms_args(&data, &run, &["--plan"]))),
        "plan",
    );
    for step in [
        vec!["prepare", "--phase", "1"],
        vec!["candidate", "--phase", "1", "--index", "0"],
    ] {
        let o = run_cmd(cluster.trainer().args(&step).arg("--run").arg(&run));
        ok(&o, &step.join(" "));
    }
    let first = run.join("phase-1/candidate-0.safetensors");
    let made = std::fs::metadata(&first).unwrap().modified().unwrap();
    let gone = dir.path().join("gone");
    std::fs::rename(&data, &gone).unwrap();

    let submit = sms_args(&data, &run, &["--executor", "slurm", "--wait"]);
    let o = run_cmd(cluster.trainer().args(&submit));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("candidate-1-1 failed"), "{err}");

    let st = status(&cluster, &run);
    for (step, want) in [
        ("dense", "done"),
        ("prepare-1", "done"),
        ("candidate-1-0", "done"),
        ("candidate-1-1", "failed"),
        ("candidate-1-2", "failed"),
        ("soup-1", "cancelled"),
        ("prepare-2", "cancelled"),
        ("candidate-2-0", "cancelled"),
        ("soup-2", "cancelled"),
        ("report", "cancelled"),
    ] {
        assert_eq!(state(&st, step), want, "{step}: {st:?}");
    }
    // The failed task's log says what went wrong.
    let log = st
        .iter()
        .find(|s| s.0 == "candidate-1-1")
        .unwrap()
        .2
        .clone()
        .unwrap();
    assert!(err.contains(&log), "{err} does not name {log}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&data.display().to_string()), "{log}:\n{text}");
    // The human table names the failed step with its log too.
    let table = ok(
        &run_cmd(cluster.trainer().arg("status").arg("--run").arg(&run)),
        "status",
    );
    let line = table
        .lines()
        .find(|l| l.starts_with("candidate-1-1 "))
        .unwrap();
    assert!(line.contains("failed") && line.contains(&log), "{table}");

    // The data is back: submitting the same command again finishes the run
    // without redoing what was done.
    std::fs::rename(&gone, &data).unwrap();
    let o = run_cmd(cluster.trainer().args(&submit));
    let out = ok(&o, "resubmission");
    assert!(out.contains("candidates-1 (tasks 1,2)"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.ends_with(" dense") || l.contains(" prepare-1")),
        "{out}"
    );
    assert_eq!(std::fs::metadata(&first).unwrap().modified().unwrap(), made);
    assert_same_report(&local, &run);
    let st = status(&cluster, &run);
    assert!(st.iter().all(|s| s.1 == "done"), "{st:?}");
}
