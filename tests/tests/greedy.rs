//! End-to-end tests of greedy soups: `soup merge --greedy` with a scripted
//! evaluator (tests/python/score.py: minus the L2 distance to the parent,
//! standard library only), and the library's in-process `Scorer`.

use std::path::{Path, PathBuf};

use fixtures::{perturb, write_checkpoint, Rng};
use soup_core::Accumulator;
use soup_core::{greedy_soup, GreedyOptions, GreedyReport};
use soup_core::{Checkpoint, Control};
use soup_tests::{files_in, fixture, soup, workspace, Run};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The interpreter for the scripted evaluator: the project's, or any
/// python3 (the script needs only the standard library).
fn python() -> String {
    std::env::var("SOUP_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// `score.py PARENT {} LOG`.
fn eval_cmd(log: &Path) -> String {
    format!(
        "{} {} {} {{}} {}",
        quote(Path::new(&python())),
        quote(&workspace().join("tests/python/score.py")),
        quote(&fixture("parent.safetensors")),
        quote(log)
    )
}

fn greedy(run: &Run) -> GreedyReport {
    assert_eq!(run.code, 0, "soup failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("merge --greedy --json matches GreedyReport")
}

/// A candidate with the parent's mask that moved far from it (a bad
/// retraining run).
fn bad_candidate(dir: &Path) -> PathBuf {
    let parent = fixtures::all().remove(0).1;
    let bad = perturb(&parent, &mut Rng::new(99), 0.8);
    let p = dir.join("bad.safetensors");
    write_checkpoint(&p, &bad, &[("format", "pt")], None).unwrap();
    p
}

fn candidates() -> Vec<PathBuf> {
    (0..3)
        .map(|i| fixture(&format!("candidate-{i}.safetensors")))
        .collect()
}

#[test]
fn greedy_soup_rejects_a_bad_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_candidate(dir.path());
    let log = dir.path().join("evals.log");
    let out = dir.path().join("soup.safetensors");
    let [c0, c1, c2] = <[PathBuf; 3]>::try_from(candidates()).unwrap();
    let cmd = eval_cmd(&log);
    let args = [
        "merge",
        "--greedy",
        "--json",
        "--eval-cmd",
        &cmd,
        path(&c0),
        path(&bad),
        path(&c1),
        path(&c2),
        "-o",
        path(&out),
    ];
    let r = greedy(&soup(args));
    assert_eq!(r.trials.len(), 4);
    let last = r.trials.last().unwrap();
    assert_eq!(last.candidate, bad, "the worst candidate is tried last");
    assert!(
        !last.kept,
        "the bad candidate lowers the score: {:?}",
        r.trials
    );
    assert!(r.trials[..3].iter().all(|t| t.kept), "{:?}", r.trials);
    assert_eq!(r.chosen.len(), 3);
    assert!(!r.chosen.contains(&bad));
    // Scores rise as good candidates join; the soup's score is the last kept.
    assert!(r.trials[1].score >= r.trials[0].score);
    assert_eq!(r.score, r.trials[2].score);
    // Four first-round evaluations and three trials.
    let evals = std::fs::read_to_string(&log).unwrap();
    assert_eq!(evals.lines().count(), 7, "{evals}");
    // No trial soup is left behind.
    assert_eq!(
        files_in(dir.path()),
        ["bad.safetensors", "evals.log", "soup.safetensors"]
    );
    // The output is the uniform soup of the chosen candidates.
    let plain = dir.path().join("plain.safetensors");
    let mut merge_args = vec!["merge".to_string()];
    merge_args.extend(r.chosen.iter().map(|p| p.display().to_string()));
    merge_args.extend(["-o".into(), plain.display().to_string()]);
    assert_eq!(soup(&merge_args).code, 0);
    assert_eq!(soup(["diff", path(&plain), path(&out)]).code, 0);
    // Its recipe records every trial.
    let ck = Checkpoint::open(&out).unwrap();
    let recipe: serde_json::Value = serde_json::from_str(&ck.metadata()["soup.recipe"]).unwrap();
    assert_eq!(recipe["greedy"]["trials"].as_array().unwrap().len(), 4);
    assert_eq!(recipe["greedy"]["trials"][3]["kept"], false);

    // The table names every trial.
    let table = soup([
        "merge",
        "--greedy",
        "--eval-cmd",
        &cmd,
        path(&c0),
        path(&bad),
        "-o",
        path(&dir.path().join("two.safetensors")),
    ]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("bad.safetensors") && table.stdout.contains("no"));
    assert!(table.stdout.contains("greedy soup of 1 of 2 candidates"));

    // Given first-round scores skip those evaluations and give the same soup.
    // Scores in input order: c0, bad, c1, c2.
    let order = [&c0, &bad, &c1, &c2];
    let by_input: Vec<String> = order
        .iter()
        .map(|p| {
            let t = r.trials.iter().find(|t| &&t.candidate == p).unwrap();
            t.candidate_score.to_string()
        })
        .collect();
    std::fs::remove_file(&log).unwrap();
    let out2 = dir.path().join("given.safetensors");
    let given = by_input.join(",");
    let r2 = greedy(&soup([
        "merge",
        "--greedy",
        "--json",
        "--eval-cmd",
        &cmd,
        "--scores",
        &given,
        path(&c0),
        path(&bad),
        path(&c1),
        path(&c2),
        "-o",
        path(&out2),
    ]));
    assert!(r2.scores_given);
    assert_eq!(r2.chosen, r.chosen);
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
    assert_eq!(soup(["diff", path(&out), path(&out2)]).code, 0);
}

#[test]
fn strict_rejects_ties_and_default_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let cs = candidates();
    let run = |strict: bool, out: &Path| {
        let mut args = vec!["merge", "--greedy", "--json", "--eval-cmd", "echo 0.5 # {}"];
        if strict {
            args.push("--strict");
        }
        args.extend(cs.iter().map(|p| path(p)));
        args.extend(["-o", path(out)]);
        greedy(&soup(args))
    };
    let loose = run(false, &dir.path().join("loose.safetensors"));
    assert_eq!(loose.chosen, cs);
    let strict_out = dir.path().join("strict.safetensors");
    let strict = run(true, &strict_out);
    assert_eq!(strict.chosen, cs[..1]);
    assert!(strict.trials[1..].iter().all(|t| !t.kept));
    // A soup of one is that candidate.
    assert_eq!(soup(["diff", path(&cs[0]), path(&strict_out)]).code, 0);
}

/// Evaluator failures and bad greedy requests: a clear error, exit 2, and
/// no output or trial soup left behind.
#[test]
fn greedy_failures_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soup.safetensors");
    let cs = candidates();
    let cases: &[(&str, &str)] = &[
        ("exit 3", "failed (exit status: 3)"),
        ("echo accuracy: high #", "not a finite number"),
        ("true #", "printed nothing"),
        ("echo inf #", "not a finite number"),
        // Fails only on trial soups, after one was written.
        (
            "case {} in *trial*) echo boom >&2; exit 1;; *) echo 1;; esac",
            "failed",
        ),
    ];
    for (cmd, message) in cases {
        let mut args = vec!["merge", "--greedy", "--eval-cmd", cmd];
        args.extend(cs.iter().map(|p| path(p)));
        args.extend(["-o", path(&out)]);
        let run = soup(&args);
        assert_eq!(run.code, 2, "{cmd}: {}", run.stderr);
        assert!(run.stderr.contains("evaluator"), "{cmd}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{cmd}: {}", run.stderr);
        assert!(
            files_in(dir.path()).is_empty(),
            "{cmd}: {:?}",
            files_in(dir.path())
        );
    }
    let usage: &[(&[&str], &str)] = &[
        (&["--greedy"], "--eval-cmd"),
        (&["--eval-cmd", "echo 1 #"], "--greedy"),
        (
            &["--greedy", "--eval-cmd", "echo 1 #", "--scores", "1,2"],
            "2 scores given for 3 candidates",
        ),
        (
            &["--greedy", "--eval-cmd", "echo 1 #", "--weights", "1,1,1"],
            "--weights",
        ),
        (
            &["--greedy", "--eval-cmd", "echo 1 #", "--scores", "1,x,2"],
            "--scores",
        ),
    ];
    for (extra, message) in usage {
        let mut args = vec!["merge"];
        args.extend_from_slice(extra);
        args.extend(cs.iter().map(|p| path(p)));
        args.extend(["-o", path(&out)]);
        let run = soup(&args);
        assert_eq!(run.code, 2, "{extra:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{extra:?}: {}", run.stderr);
        assert!(files_in(dir.path()).is_empty());
    }
    // Candidates whose masks differ are refused before anything is kept.
    let run = soup([
        "merge",
        "--greedy",
        "--eval-cmd",
        "echo 1 #",
        path(&cs[0]),
        path(&fixture("other-mask.safetensors")),
        "-o",
        path(&out),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("masks differ"), "{}", run.stderr);
    assert!(files_in(dir.path()).is_empty());
}

/// The trainer's path: an in-process scorer sees every trial soup on disk.
#[test]
fn library_greedy_soup_takes_an_in_process_scorer() {
    let dir = tempfile::tempdir().unwrap();
    let parent = Checkpoint::open(fixture("parent.safetensors")).unwrap();
    let distance = |p: &Path| -> soup_core::Result<f64> {
        let ck = Checkpoint::open(p)?;
        let mut d = 0.0;
        for t in parent.tensors().iter().filter(|t| t.float_type().is_some()) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f64::decode(parent.data(t), t.float_type().unwrap(), &mut a);
            let u = ck.get(&t.name).unwrap();
            f64::decode(ck.data(u), u.float_type().unwrap(), &mut b);
            d += a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>();
        }
        Ok(-d.sqrt())
    };
    let mut seen = Vec::new();
    let mut scorer = |p: &Path| {
        assert!(p.exists());
        seen.push(p.to_path_buf());
        distance(p)
    };
    let mut inputs: Vec<Checkpoint> = candidates()
        .iter()
        .map(|p| Checkpoint::open(p).unwrap())
        .collect();
    inputs.push(Checkpoint::open(bad_candidate(dir.path())).unwrap());
    let out = dir.path().join("soup.safetensors");
    let report = greedy_soup(
        &inputs,
        &out,
        &mut scorer,
        &GreedyOptions::default(),
        &Control::default(),
    )
    .unwrap();
    assert_eq!(seen.len(), 4 + 3);
    assert!(
        seen[4..].iter().all(|p| p.starts_with(dir.path())),
        "trials beside the output"
    );
    assert_eq!(report.chosen.len(), 3);
    assert_eq!(
        files_in(dir.path()),
        ["bad.safetensors", "soup.safetensors"]
    );
    assert!((distance(&out).unwrap() - report.score).abs() < 1e-9);
}
