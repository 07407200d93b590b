//! Unit tests of the Slurm layer on a made-up run: scripts of jobs of one
//! step, several steps and arrays, the state of steps never submitted, and
//! Slurm's states.

use std::path::{Path, PathBuf};

use super::*;

/// A run of three steps: `a`, the tasks `b:0` and `b:1`, then `c` and
/// `report` in one job.
struct Toy {
    root: PathBuf,
    done: Vec<&'static str>,
}

impl JobGraph for Toy {
    fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> &'static str {
        "toy"
    }

    fn steps(&self) -> Vec<RunStep> {
        ["a", "b:0", "b:1", "c", "report"]
            .iter()
            .map(|s| RunStep {
                arg: s.to_string(),
                done: self.done.contains(s),
            })
            .collect()
    }

    fn jobs(&self) -> Vec<Job> {
        vec![
            Job::new("a", vec!["a".into()], &[]),
            Job::array("bs", format!("b:{TASK}"), vec![0, 1], &[Some(0)]),
            Job::new("c", vec!["c".into(), "report".into()], &[None, Some(1)]),
        ]
    }
}

#[test]
fn a_job_of_several_steps_runs_them_in_order_and_stops_at_a_failure() {
    let toy = Toy {
        root: PathBuf::from("/runs/r 1"),
        done: vec![],
    };
    let jobs = toy.jobs();
    assert_eq!(jobs[2].after, [1]);
    let s = script(
        &toy,
        &jobs[2],
        Path::new("/opt/trainer"),
        &Resources::default(),
    );
    let body: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "set -e",
            "/opt/trainer toy --out '/runs/r 1' --step c",
            "exec /opt/trainer toy --out '/runs/r 1' --step report",
        ],
        "{s}"
    );
    assert!(s.contains("#SBATCH --job-name=toy-c\n"), "{s}");
    assert!(
        s.contains("#SBATCH --output=/runs/r 1/slurm/logs/c.%j.log\n"),
        "{s}"
    );
    // An array's tasks log one file each, named like their steps.
    let s = script(
        &toy,
        &jobs[1],
        Path::new("/opt/trainer"),
        &Resources::default(),
    );
    assert!(s.contains("#SBATCH --array=0,1\n"), "{s}");
    assert!(s.contains("/slurm/logs/b-%a.%A.log\n"), "{s}");
    assert!(
        s.ends_with("exec /opt/trainer toy --out '/runs/r 1' --step \"b:$SLURM_ARRAY_TASK_ID\"\n"),
        "{s}"
    );
    assert_eq!(
        jobs[1].expanded(),
        [("b:0".to_string(), Some(0)), ("b:1".to_string(), Some(1))]
    );
    assert_eq!(
        script::log_path(&toy.root, &jobs[1], "b:1", "12"),
        Path::new("/runs/r 1/slurm/logs/b-1.12.log")
    );
    assert_eq!(
        script::log_path(&toy.root, &jobs[2], "report", "13"),
        Path::new("/runs/r 1/slurm/logs/c.13.log")
    );
}

#[test]
fn steps_never_submitted_show_as_done_or_not_submitted_without_asking_slurm() {
    let dir = tempfile::tempdir().unwrap();
    let toy = Toy {
        root: dir.path().to_path_buf(),
        done: vec!["a", "b:1"],
    };
    let st = status(&toy).unwrap();
    let got: Vec<(&str, State)> = st.iter().map(|s| (s.step.as_str(), s.state)).collect();
    assert_eq!(
        got,
        [
            ("a", State::Done),
            ("b-0", State::NotSubmitted),
            ("b-1", State::Done),
            ("c", State::NotSubmitted),
            ("report", State::NotSubmitted),
        ]
    );
    let table = status_table(&st);
    assert!(table.starts_with("step    state"), "{table}");
    assert!(table.contains("\nb-0     not-submitted\n"), "{table}");
}

#[test]
fn slurm_states_map_to_step_states() {
    assert_eq!(state_of("PENDING", "Dependency"), State::Pending);
    assert_eq!(
        state_of("PENDING", "DependencyNeverSatisfied"),
        State::Cancelled
    );
    assert_eq!(state_of("RUNNING", "None"), State::Running);
    assert_eq!(state_of("CANCELLED", "None"), State::Cancelled);
    assert_eq!(state_of("TIMEOUT", "None"), State::Failed);
    assert_eq!(state_of("COMPLETED", "None"), State::Failed);
}

#[test]
fn a_run_folder_with_white_space_is_not_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let toy = Toy {
        root: dir.path().join("r 1"),
        done: vec![],
    };
    let err = submit(&toy, Path::new("/opt/trainer"), &Resources::default(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("r 1: sbatch splits"), "{err}");
    assert!(!toy.root.exists());
}
