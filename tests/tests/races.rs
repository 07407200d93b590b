//! soup against things that happen beside it while it runs, end to end:
//! inputs rewritten in place with the same size, signals and bus errors in
//! the middle of a greedy soup's evaluation. One regression test per defect.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fixtures::Tensor;
use soup_core::Dtype;
use soup_tests::{files_in, Run};

mod common;
use common::{s, spawn, wait_for, Scratch};

/// A 1 MiB checkpoint (one tensor), so that its data lies on pages far
/// past its header. Every shift has the same mask.
fn big(shift: f64) -> Vec<Tensor> {
    let value = |i: usize| match i % 7 {
        0 => 0.0,
        k => k as f64 + shift,
    };
    vec![Tensor::new(
        "layer.weight",
        Dtype::F32,
        &[512, 512],
        (0..512 * 512).map(value).collect(),
    )]
}

/// A scratch folder with the 1 MiB inputs `a`, `b`, `c` and a mask `m`,
/// and an empty `out/`.
fn scratch() -> Scratch {
    let scratch = Scratch::empty();
    for (name, shift) in [("a", 0.0), ("b", 1.0), ("m", 2.0), ("c", 5.0)] {
        scratch.write(&format!("{name}.safetensors"), &big(shift));
    }
    scratch
}

/// Polls until `dir` holds an entry whose name starts with `prefix`.
fn wait_for_entry(dir: &Path, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if files_in(dir).iter().any(|n| n.starts_with(prefix)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no {prefix}* appeared in {}", dir.display());
}

/// The lines of standard error that are not the test hook's.
fn errors(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| !l.starts_with("soup-test:"))
        .collect()
}

#[track_caller]
fn assert_changed_error(run: &Run, file: &Path) {
    let errors = errors(run);
    assert_eq!(run.code, 2, "exit status; stderr: {}", run.stderr);
    assert_eq!(errors.len(), 1, "{:?}", run.stderr);
    assert!(errors[0].starts_with("soup: error: "), "{}", errors[0]);
    assert!(errors[0].contains(s(file)), "{}", errors[0]);
    assert!(
        errors[0].contains("the file changed while being read"),
        "{}",
        errors[0]
    );
}

// ----- an input rewritten in place with the same size -----

/// Overwrites `victim` in place with the bytes of `source` (same size):
/// what `cp source victim` does, minus the truncation.
fn rewrite_in_place(victim: &Path, source: &Path) {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(source).unwrap();
    assert_eq!(bytes.len() as u64, std::fs::metadata(victim).unwrap().len());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    file.write_all_at(&bytes, 0).unwrap();
}

#[test]
fn same_size_rewrite_of_an_input_during_any_write_is_refused() {
    let scratch = scratch();
    let (a, b, m) = (
        scratch.path("a.safetensors"),
        scratch.path("b.safetensors"),
        scratch.path("m.safetensors"),
    );
    let out = scratch.out().join("x.safetensors");
    let folder = scratch.out().join("sharded");
    // (arguments, the input rewritten while the output is being written)
    let writers: Vec<(Vec<&str>, &Path)> = vec![
        (vec!["merge", s(&a), s(&b), "-o", s(&out)], &b),
        (vec!["prune", s(&a), "--sparsity", "0.5", "-o", s(&out)], &a),
        (vec!["edit", s(&a), "--set-meta", "k=v", "-o", s(&out)], &a),
        (
            vec!["shard", s(&a), "--shard-size", "300KB", "-o", s(&folder)],
            &a,
        ),
        (
            vec!["apply-mask", s(&a), "--mask", s(&m), "-o", s(&out)],
            &m,
        ),
    ];
    for (args, victim) in writers {
        let original = std::fs::read(victim).unwrap();
        let child = spawn(&args, &[("SOUP_TEST_PAUSE_AFTER_CREATE_MS", "1500")]);
        wait_for_entry(&scratch.out(), ".soup-tmp-");
        rewrite_in_place(victim, &scratch.path("c.safetensors"));
        let run = wait_for(child, 60).expect("soup ended");
        assert_changed_error(&run, victim);
        assert!(
            files_in(&scratch.out()).is_empty(),
            "{args:?}: {:?}",
            files_in(&scratch.out())
        );
        std::fs::write(victim, original).unwrap();
    }
}

#[test]
fn input_replaced_by_rename_during_a_merge_is_refused() {
    let scratch = scratch();
    let (a, b) = (scratch.path("a.safetensors"), scratch.path("b.safetensors"));
    let out = scratch.out().join("merged.safetensors");
    let child = spawn(
        &["merge", s(&a), s(&b), "-o", s(&out)],
        &[("SOUP_TEST_PAUSE_AFTER_CREATE_MS", "1500")],
    );
    wait_for_entry(&scratch.out(), ".soup-tmp-");
    std::fs::rename(scratch.path("c.safetensors"), &b).unwrap();
    let run = wait_for(child, 60).expect("merge ended");
    assert_changed_error(&run, &b);
    assert!(files_in(&scratch.out()).is_empty());
}

/// A greedy soup merges the files it scored: a candidate replaced by
/// rename while the evaluator runs (here, by the evaluator itself on its
/// first call) stops the run before any trial or soup is made from it.
#[test]
fn candidate_replaced_during_greedy_evaluation_is_refused() {
    let scratch = scratch();
    let (a, b, c) = (
        scratch.path("a.safetensors"),
        scratch.path("b.safetensors"),
        scratch.path("c.safetensors"),
    );
    let out = scratch.out().join("soup.safetensors");
    let eval = format!("mv -f '{}' '{}' 2>/dev/null; echo 1 #", s(&c), s(&a));
    let run = wait_for(
        spawn(
            &[
                "merge",
                "--greedy",
                "--eval-cmd",
                &eval,
                s(&a),
                s(&b),
                "-o",
                s(&out),
            ],
            &[],
        ),
        60,
    )
    .expect("greedy merge ended");
    assert!(!c.exists(), "the evaluator replaced a");
    assert_changed_error(&run, &a);
    assert!(files_in(&scratch.out()).is_empty());
}

// ----- a bus error in the middle of a greedy trial -----

#[test]
fn input_truncated_during_a_greedy_trial_leaves_no_trial_folder() {
    let scratch = scratch();
    let (a, b) = (scratch.path("a.safetensors"), scratch.path("b.safetensors"));
    let out = scratch.out().join("soup.safetensors");
    // Given scores: the first merge is the trial soup of b and a.
    let child = spawn(
        &[
            "merge",
            "--greedy",
            "--eval-cmd",
            "echo 1 #",
            "--scores",
            "1,2",
            s(&a),
            s(&b),
            "-o",
            s(&out),
        ],
        &[("SOUP_TEST_PAUSE_AFTER_CREATE_MS", "3000")],
    );
    wait_for_entry(&scratch.out(), ".soup-greedy-");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let run = wait_for(child, 60).expect("greedy merge ended");
    assert_changed_error(&run, &b);
    assert!(
        files_in(&scratch.out()).is_empty(),
        "{:?}",
        files_in(&scratch.out())
    );
}

// ----- SIGTERM to soup alone while the evaluator runs -----

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn sigterm_to_soup_alone_stops_a_running_evaluator() {
    let scratch = scratch();
    let (a, b) = (scratch.path("a.safetensors"), scratch.path("b.safetensors"));
    let out = scratch.out().join("soup.safetensors");
    let pid_file = scratch.path("evaluator.pid");
    let eval = format!("echo $$ > {}; exec sleep 60 #", s(&pid_file));
    let child = spawn(
        &[
            "merge",
            "--greedy",
            "--eval-cmd",
            &eval,
            "--scores",
            "1,2",
            s(&a),
            s(&b),
            "-o",
            s(&out),
        ],
        &[],
    );
    let soup_pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let evaluator: u32 = loop {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the evaluator never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    let sent = Command::new("kill")
        .args(["-TERM", &soup_pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let run = wait_for(child, 10);
    let still_running = alive(evaluator);
    if still_running {
        let _ = Command::new("kill")
            .args(["-KILL", &evaluator.to_string()])
            .status();
    }
    let run = run.expect("soup still waits for its evaluator 10 s after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(!still_running, "the evaluator {evaluator} outlived soup");
    assert!(
        files_in(&scratch.out()).is_empty(),
        "{:?}",
        files_in(&scratch.out())
    );
}
