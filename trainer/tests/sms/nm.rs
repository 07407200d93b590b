//! N:M patterns: `--nm` prunes the dense parent once and keeps that mask
//! through every phase; `--nm-ladder` prunes each phase to its own pattern
//! inside the previous mask. Every model a run writes passes soup-core's
//! N:M check over the tensors the run prunes.

use super::*;

/// Every checkpoint the run wrote after pruning (parents, candidates,
/// soups, baselines), found by walking the folder.
fn pruned_models(run: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![run.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "dense" {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that every model in `paths` has the pattern over `names`.
fn assert_pattern(paths: &[PathBuf], pattern: &str, names: &[String]) {
    for p in paths {
        assert!(
            support::has_nm_pattern(p, pattern, names),
            "{} breaks {pattern}",
            p.display()
        );
    }
}

fn zero_positions(ck: &Checkpoint, names: &[String]) -> Vec<Vec<bool>> {
    names
        .iter()
        .map(|n| f32s(ck, n).iter().map(|x| *x == 0.0).collect())
        .collect()
}

#[test]
fn nm_run_keeps_one_two_four_mask_through_every_phase() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let table = run_sms(
        &data,
        &run,
        &["--nm", "2:4", "--baselines", "imp,imp-long,reprune"],
    );
    assert!(table.contains("pattern"), "{table}");

    let ws = session(&run);
    // The first convolution sees one input channel: it cannot hold groups
    // of 4 and stays dense; every other prunable tensor is pruned.
    let parent1 = Checkpoint::open(run.join("phase-1/parent.safetensors")).unwrap();
    let all = prunable(&parent1);
    let dense: Vec<&String> = all.iter().filter(|n| !ws.pruned.contains(n)).collect();
    assert_eq!(dense.len(), 1, "{dense:?}");
    let info = json(&run.join("phase-1/prune.json"));
    assert_eq!(info["pattern"], "2:4");
    assert_eq!(info["dense"][0].as_str().unwrap(), dense[0].as_str());
    let (z, n) = zeros_over(&parent1, &ws.pruned);
    assert_eq!(z * 2, n, "a 2:4 parent has exactly half its weights zero");

    let models = pruned_models(&run);
    assert!(models.len() >= 12, "{models:?}");
    assert_pattern(&models, "2:4", &ws.pruned);

    // One mask for the whole run: phase 2's parent has phase 1's zeros.
    let parent2 = Checkpoint::open(run.join("phase-2/parent.safetensors")).unwrap();
    assert_eq!(
        zero_positions(&parent1, &ws.pruned),
        zero_positions(&parent2, &ws.pruned)
    );
    let report = json(&run.join("report.json"));
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["pattern"], "2:4");
    }
}

#[test]
fn nm_ladder_prunes_each_phase_inside_the_previous_mask() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let mut args = sms_args(
        &data,
        &run,
        &["--nm-ladder", "2:4,1:4", "--baselines", "imp"],
    );
    // The ladder sets the number of phases.
    let at = args.iter().position(|a| a == "--phases").unwrap();
    args.drain(at..at + 2);
    let o = trainer().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let ws = session(&run);
    let p1 = run.join("phase-1/parent.safetensors");
    let p2 = run.join("phase-2/parent.safetensors");
    assert_pattern(std::slice::from_ref(&p1), "2:4", &ws.pruned);
    let phase2: Vec<PathBuf> = pruned_models(&run)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("phase-2"))
        .collect();
    assert!(phase2.len() >= 5, "{phase2:?}");
    assert_pattern(&phase2, "1:4", &ws.pruned);
    // No weight pruned in phase 1 comes back in phase 2.
    let (z1, z2) = (
        zero_positions(&Checkpoint::open(&p1).unwrap(), &ws.pruned),
        zero_positions(&Checkpoint::open(&p2).unwrap(), &ws.pruned),
    );
    for (a, b) in z1.iter().flatten().zip(z2.iter().flatten()) {
        assert!(
            !a || *b,
            "a weight pruned in phase 1 is non-zero in phase 2"
        );
    }
    let report = json(&run.join("report.json"));
    let patterns: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(patterns, ["2:4", "1:4"]);
}

#[test]
fn bad_nm_settings_are_refused_before_any_work() {
    let (dir, data) = scratch_with_data();
    for (extra, says) in [
        (&["--nm-ladder", "1:4,2:4"][..], "must not get denser"),
        (
            &["--nm-ladder", "2:4,1:4", "--phases", "3"][..],
            "one pattern per",
        ),
        (&["--nm", "4:4"][..], "N:M"),
    ] {
        let run = dir.path().join("run");
        let o = trainer()
            .args(sms_args(&data, &run, extra))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(!run.exists(), "{extra:?} left a run folder");
    }
}
