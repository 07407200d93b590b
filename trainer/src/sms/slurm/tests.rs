//! Unit tests of the sparse-model-soup run's Slurm graph and scripts.

use std::path::{Path, PathBuf};

use super::graph::*;
use crate::error::Error;
use crate::pipeline::slurm::{script, shell_word, Resources};
use crate::sms::config::{Baseline, SmsConfig};
use crate::sms::layout::{Chain, Layout};

fn cfg(phases: u32, candidates: u32, baselines: Vec<Baseline>) -> SmsConfig {
    let mut cfg = SmsConfig {
        phases,
        baselines,
        ..SmsConfig::default()
    };
    cfg.soups.candidates = candidates;
    cfg
}

fn touch(path: PathBuf) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}

#[test]
fn a_fresh_run_is_a_chain_of_phases_with_candidate_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let jobs = jobs(&cfg(2, 3, vec![Baseline::Reprune, Baseline::Imp]), &layout);
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dense",
            "prepare-1",
            "candidates-1",
            "soup-1",
            "prepare-2",
            "candidates-2",
            "soup-2",
            "baseline-imp",
            "baseline-reprune",
            "report"
        ]
    );
    let after = |n: &str| -> Vec<&str> {
        let j = jobs.iter().find(|j| j.name == n).unwrap();
        j.after.iter().map(|&i| jobs[i].name.as_str()).collect()
    };
    assert_eq!(after("prepare-1"), ["dense"]);
    assert_eq!(after("candidates-1"), ["prepare-1"]);
    assert_eq!(after("soup-1"), ["candidates-1"]);
    assert_eq!(after("prepare-2"), ["soup-1"]);
    assert_eq!(after("baseline-imp"), ["prepare-1", "candidates-1"]);
    assert_eq!(
        after("baseline-reprune"),
        ["prepare-1", "candidates-1", "baseline-imp"]
    );
    assert_eq!(
        after("report"),
        [
            "dense",
            "soup-1",
            "soup-2",
            "baseline-imp",
            "baseline-reprune"
        ]
    );
    assert_eq!(jobs[2].array, [0, 1, 2]);
}

#[test]
fn resubmission_leaves_out_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let c = cfg(2, 3, vec![]);
    touch(layout.dense());
    touch(layout.dense_eval());
    touch(layout.parent(Chain::Soup, 1));
    touch(layout.prune_info(Chain::Soup, 1));
    touch(layout.candidate(Chain::Soup, 1, 0));
    touch(layout.candidate_info(Chain::Soup, 1, 0));
    // A candidate without its results is not done.
    touch(layout.candidate(Chain::Soup, 1, 2));
    let jobs = jobs(&c, &layout);
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "candidates-1",
            "soup-1",
            "prepare-2",
            "candidates-2",
            "soup-2",
            "report"
        ]
    );
    assert_eq!(jobs[0].array, [1, 2]);
    assert!(jobs[0].after.is_empty());
    // The report waits only on what is still to come.
    let report = jobs.last().unwrap();
    let after: Vec<&str> = report
        .after
        .iter()
        .map(|&i| jobs[i].name.as_str())
        .collect();
    assert_eq!(after, ["soup-1", "soup-2"]);
}

#[test]
fn scripts_carry_the_requested_resources() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(&dir.path().join("my run"));
    let c = cfg(1, 2, vec![]);
    let jobs = jobs(&c, &layout);
    let res = Resources {
        partition: Some("gpu".into()),
        time: Some("1:00:00".into()),
        cpus_per_task: Some(4),
        mem: Some("8G".into()),
        gpus_per_task: Some(1),
        account: Some("proj".into()),
        extra: vec!["--qos=high".into()],
    };
    let graph = SmsGraph {
        cfg: &c,
        layout: &layout,
    };
    let s = script(&graph, &jobs[2], Path::new("/opt/trainer"), &res);
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1:00:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --account=proj",
        "#SBATCH --qos=high",
        "#SBATCH --array=0,1",
    ] {
        assert!(s.lines().any(|l| l == line), "no {line:?} in\n{s}");
    }
    let run = shell_word(&layout.root.display().to_string());
    assert!(run.starts_with('\''), "{run}");
    assert!(
        s.contains(&format!(
            "exec /opt/trainer sms --out {run} --step \"candidate:1:$SLURM_ARRAY_TASK_ID\""
        )),
        "{s}"
    );
    let bad = Resources {
        extra: vec!["qos=high".into()],
        ..Resources::default()
    };
    assert!(matches!(bad.validate(), Err(Error::Config(_))));
}

#[test]
fn the_imp_swa_baseline_is_a_job_of_its_own_done_with_its_last_phase() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let c = cfg(2, 2, vec![Baseline::ImpSwa]);
    let all = jobs(&c, &layout);
    let job = all.iter().find(|j| j.name == "baseline-imp-swa").unwrap();
    assert_eq!(job.steps.last().unwrap(), "baseline:imp-swa");
    let step = Step::Baseline(Baseline::ImpSwa);
    assert!(!step.done(&c, &layout));
    touch(
        dir.path()
            .join("baselines/imp-swa/phase-2/candidate-0.safetensors"),
    );
    touch(
        dir.path()
            .join("baselines/imp-swa/phase-2/candidate-0.json"),
    );
    assert!(step.done(&c, &layout));
}
