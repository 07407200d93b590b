//! `trainer pdt --method gmp --nm N:M`: the per-group budget tightens from
//! M to N on the cubic schedule, inside the mask the model has, and every
//! delivered model has the pattern.

use super::support::has_nm_pattern as has_pattern;
use super::*;

fn zero_set(path: &Path, names: &[String]) -> Vec<bool> {
    let ck = Checkpoint::open(path).unwrap();
    names
        .iter()
        .flat_map(|n| f32s(&ck, n).into_iter().map(|x| x == 0.0))
        .collect()
}

#[test]
fn gmp_nm_tightens_the_group_budget_to_the_pattern() {
    let (dir, data) = scratch_with_data();
    let run = dir.path().join("run");
    let mut args = pdt_args(&data, &run, &["--nm", "2:4", "--baselines", "plain"]);
    // The pattern sets the final sparsity.
    let at = args.iter().position(|a| a == "--sparsity").unwrap();
    args.drain(at..at + 2);
    let o = trainer().args(&args).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(table.contains("N:M pattern 2:4"), "{table}");

    let names = trainer::pdt::run::PdtRun::open(&run).unwrap().ws.pruned;
    let all = prunable(&Checkpoint::open(run.join("sms/final.safetensors")).unwrap());
    // The one-channel first convolution cannot hold groups of 4.
    assert_eq!(names.len() + 1, all.len());

    let mut parents: Vec<PathBuf> = segment_dirs(&run.join("sms"))
        .into_iter()
        .map(|d| d.join("parent.safetensors"))
        .filter(|p| p.exists())
        .collect();
    parents.sort_by_key(|p| {
        let seg = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        seg.trim_start_matches("seg-").parse::<u32>().unwrap()
    });
    assert!(parents.len() >= 4, "{parents:?}");
    // The budget tightens step by step: some step reaches 3:4 before 2:4,
    // and no step revives a pruned weight.
    assert!(
        parents
            .iter()
            .any(|p| has_pattern(p, "3:4", &names) && !has_pattern(p, "2:4", &names)),
        "no intermediate 3:4 step"
    );
    for pair in parents.windows(2) {
        let (a, b) = (zero_set(&pair[0], &names), zero_set(&pair[1], &names));
        assert!(a.iter().zip(&b).all(|(x, y)| !x || *y), "{pair:?}");
    }
    for chain in ["sms", "plain"] {
        let path = run.join(chain).join("final.safetensors");
        assert!(has_pattern(&path, "2:4", &names), "{chain}");
        let (z, n) = (
            zero_set(&path, &names).iter().filter(|z| **z).count(),
            zero_set(&path, &names).len(),
        );
        assert_eq!(
            2 * z,
            n,
            "{chain}: exactly half the grouped weights are zero"
        );
    }
    let report = json(&run.join("report.json"));
    assert_eq!(report["pattern"], "2:4");
    assert_eq!(report["target_sparsity"].as_f64().unwrap(), 0.5);
}

#[test]
fn nm_is_refused_where_it_does_not_apply() {
    let (dir, data) = scratch_with_data();
    for (extra, says) in [
        (
            &["--nm", "2:4", "--method", "dpf"][..],
            "applies to --method gmp",
        ),
        (
            &["--nm", "2:4", "--sparsity", "0.8"][..],
            "leave --sparsity out",
        ),
    ] {
        let run = dir.path().join("run");
        let o = trainer()
            .args(pdt_args(&data, &run, extra))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(!run.exists(), "{extra:?} left a run folder");
    }
}
