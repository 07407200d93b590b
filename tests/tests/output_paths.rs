//! Where soup writes and how it names what it wrote, end to end: outputs
//! that are symbolic links (a redirected `/dev/stdout`, a link to
//! `/dev/null`), outputs that would replace the index of a sharded input,
//! the reserved tensor name `__metadata__`, file names with control
//! characters in result lines, and NaN in `soup diff`.

use std::path::Path;

use fixtures::{write_checkpoint, Tensor};
use soup_core::{Checkpoint, DiffReport, Dtype};
use soup_tests::{files_in, soup};

mod common;
use common::{assert_one_error_line, model, s, Scratch};

/// [`Scratch::new`] with a sharded input `ck` as well.
fn scratch() -> Scratch {
    let scratch = Scratch::new();
    write_checkpoint(&scratch.path("ck"), &model(2.0), &[], Some(16)).unwrap();
    scratch
}

/// Every writer of soup, writing to `target`: single-file outputs, then
/// sharded ones.
fn writers<'a>(scratch: &'a Scratch, target: &'a str) -> Vec<Vec<String>> {
    let a = s(&scratch.path("a.safetensors")).to_string();
    let b = s(&scratch.path("b.safetensors")).to_string();
    let ck = s(&scratch.path("ck")).to_string();
    let t = target.to_string();
    let v = |args: &[&str]| args.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        v(&["merge", &a, &b, "-o", &t]),
        v(&["prune", &a, "-o", &t, "--sparsity", "0.5"]),
        v(&["apply-mask", &b, "--mask", &a, "-o", &t]),
        v(&["edit", &a, "-o", &t, "--set-meta", "k=v"]),
        v(&["unshard", &ck, "-o", &t]),
        v(&[
            "merge",
            "--greedy",
            "--eval-cmd",
            "echo 0.5 # {}",
            &a,
            &b,
            "-o",
            &t,
        ]),
        v(&["shard", &a, "-o", &t, "--shard-size", "16"]),
        v(&["merge", &a, &b, "-o", &t, "--shard-size", "16"]),
    ]
}

fn with_force(mut args: Vec<String>, force: bool) -> Vec<String> {
    if force {
        args.push("--force".into());
    }
    args
}

// ----- outputs that are symbolic links -----

/// `soup merge a b -o /dev/stdout --force > file` run as root replaced the
/// `/dev/stdout` link with a regular file: the check looked at the link's
/// target (the redirected file), the rename replaced the link. Simulated
/// with a link `stdout` to a regular file, so it fails without root too.
#[test]
fn output_link_to_a_regular_file_is_refused_by_every_writer() {
    let scratch = scratch();
    let redirected = scratch.out().join("redirected.log");
    std::fs::write(&redirected, b"earlier output").unwrap();
    let link = scratch.out().join("stdout");
    std::os::unix::fs::symlink(&redirected, &link).unwrap();
    for args in writers(&scratch, s(&link)) {
        for force in [false, true] {
            let args = with_force(args.clone(), force);
            let run = soup(&args);
            assert_one_error_line(&run, &[s(&link), "symbolic link", s(&redirected)]);
            assert!(
                run.stderr.contains("not even with --force"),
                "{args:?}: {}",
                run.stderr
            );
            assert!(
                std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "{args:?} replaced the link"
            );
            assert_eq!(std::fs::read_link(&link).unwrap(), redirected);
            assert_eq!(std::fs::read(&redirected).unwrap(), b"earlier output");
            assert_eq!(files_in(&scratch.out()), ["redirected.log", "stdout"]);
        }
    }
}

#[test]
fn output_link_to_dev_null_or_a_folder_is_refused() {
    let scratch = scratch();
    let null = scratch.out().join("null");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let run = soup([
        "merge",
        s(&scratch.path("a.safetensors")),
        s(&scratch.path("b.safetensors")),
        "-o",
        s(&null),
        "--force",
    ]);
    assert_one_error_line(&run, &[s(&null), "symbolic link", "/dev/null"]);
    assert_eq!(std::fs::read_link(&null).unwrap(), Path::new("/dev/null"));

    // A link to a sharded checkpoint: the writer would replace the link,
    // or, through it, a folder elsewhere.
    let other = scratch.path("elsewhere");
    assert_eq!(
        soup([
            "shard",
            s(&scratch.path("a.safetensors")),
            "-o",
            s(&other),
            "--shard-size",
            "16"
        ])
        .code,
        0
    );
    let before = files_in(&other);
    let link = scratch.out().join("sharded");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let run = soup([
        "shard",
        s(&scratch.path("b.safetensors")),
        "-o",
        s(&link),
        "--shard-size",
        "16",
        "--force",
    ]);
    assert_one_error_line(&run, &[s(&link), "symbolic link", s(&other)]);
    assert_eq!(std::fs::read_link(&link).unwrap(), other);
    assert_eq!(files_in(&other), before);
    assert_eq!(files_in(&scratch.out()), ["null", "sharded"]);
}

#[test]
fn dangling_output_link_is_refused() {
    let scratch = scratch();
    let link = scratch.out().join("dangling.safetensors");
    let nowhere = scratch.path("nowhere.safetensors");
    std::os::unix::fs::symlink(&nowhere, &link).unwrap();
    let run = soup(["edit", s(&scratch.path("a.safetensors")), "-o", s(&link)]);
    assert_one_error_line(&run, &[s(&link), "symbolic link", s(&nowhere)]);
    assert!(!nowhere.exists());
    assert_eq!(std::fs::read_link(&link).unwrap(), nowhere);
}

// ----- the index of a sharded input -----

#[test]
fn force_never_replaces_the_index_of_a_sharded_input() {
    let scratch = scratch();
    let ck = scratch.path("ck");
    let index = ck.join("model.safetensors.index.json");
    let before = std::fs::read(&index).unwrap();
    let (a, b) = (scratch.path("a.safetensors"), scratch.path("b.safetensors"));
    let ck2 = scratch.path("ck2");
    write_checkpoint(&ck2, &model(3.0), &[], Some(16)).unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["unshard", s(&ck), "-o", s(&index)],
        vec!["merge", s(&ck), s(&ck2), "-o", s(&index)],
        vec!["merge", s(&ck), s(&a), "-o", s(&index)],
        vec!["prune", s(&ck), "-o", s(&index), "--sparsity", "0.5"],
        vec!["edit", s(&ck), "-o", s(&index)],
        vec!["apply-mask", s(&a), "--mask", s(&ck), "-o", s(&index)],
        vec![
            "merge",
            "--greedy",
            "--eval-cmd",
            "echo 0.5 # {}",
            s(&ck),
            s(&b),
            "-o",
            s(&index),
        ],
    ];
    for mut args in runs {
        args.push("--force");
        let run = soup(&args);
        assert_one_error_line(&run, &["output would overwrite input", s(&index)]);
        assert_eq!(std::fs::read(&index).unwrap(), before, "{args:?}");
        Checkpoint::open(&ck).unwrap_or_else(|e| panic!("{args:?} broke the input: {e}"));
        assert!(
            !files_in(&ck).iter().any(|n| n.starts_with(".soup")),
            "{:?}",
            files_in(&ck)
        );
    }
}

// ----- the reserved tensor name -----

#[test]
fn renaming_a_tensor_to_metadata_is_refused() {
    let scratch = scratch();
    let out = scratch.out().join("out.safetensors");
    let run = soup([
        "edit",
        s(&scratch.path("a.safetensors")),
        "-o",
        s(&out),
        "--rename",
        r"^a\.bias$=__metadata__",
    ]);
    assert_one_error_line(&run, &["a.bias", "`__metadata__`", "reserved"]);
    assert!(files_in(&scratch.out()).is_empty());
}

// ----- file names in result lines -----

/// Tensor names were escaped in result lines, file names printed raw: a
/// file name with a newline could forge a line of the report, one with an
/// escape sequence could drive the terminal.
#[test]
fn file_names_are_escaped_in_result_lines() {
    let scratch = scratch();
    let strange = scratch.path("x\u{1b}[2Jy\nverdict: equal");
    std::fs::create_dir(&strange).unwrap();
    let a = strange.join("a\n.safetensors");
    std::fs::copy(scratch.path("a.safetensors"), &a).unwrap();
    let b = strange.join("b.safetensors");
    write_checkpoint(
        &b,
        &[Tensor::new("a.weight", Dtype::F32, &[2, 4], vec![1.0; 8])],
        &[],
        None,
    )
    .unwrap();
    let o = |name: &str| strange.join(name);
    let runs: Vec<Vec<String>> = vec![
        vec![
            "merge".into(),
            s(&a).into(),
            s(&a).into(),
            "-o".into(),
            s(&o("m\n.safetensors")).into(),
        ],
        vec![
            "prune".into(),
            s(&a).into(),
            "-o".into(),
            s(&o("p.safetensors")).into(),
            "--sparsity".into(),
            "0.5".into(),
        ],
        vec![
            "apply-mask".into(),
            s(&a).into(),
            "--mask".into(),
            s(&a).into(),
            "-o".into(),
            s(&o("am.safetensors")).into(),
        ],
        vec![
            "edit".into(),
            s(&a).into(),
            "-o".into(),
            s(&o("e.safetensors")).into(),
        ],
        vec![
            "shard".into(),
            s(&a).into(),
            "-o".into(),
            s(&o("sh")).into(),
            "--shard-size".into(),
            "16".into(),
        ],
        vec!["diff".into(), s(&a).into(), s(&b).into()],
        vec!["distance".into(), s(&a).into(), s(&a).into()],
        vec!["hash".into(), s(&a).into()],
        vec![
            "merge".into(),
            "--greedy".into(),
            "--eval-cmd".into(),
            // Not `# {}`: a comment ends at the newline in the path.
            "echo 0.5; true {}".into(),
            s(&a).into(),
            s(&a).into(),
            "-o".into(),
            s(&o("g.safetensors")).into(),
        ],
    ];
    for args in runs {
        let run = soup(&args);
        assert!(run.code == 0 || run.code == 1, "{args:?}: {}", run.stderr);
        assert!(
            !run.stdout.contains('\u{1b}'),
            "{args:?} printed an escape sequence: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains(r"x\u{1b}[2Jy\u{a}verdict: equal"),
            "{args:?} should print the folder escaped: {}",
            run.stdout
        );
        assert!(
            !run.stdout.lines().any(|l| l.starts_with("verdict: equal")),
            "{args:?} let a file name forge a line: {}",
            run.stdout
        );
    }
}

// ----- NaN in soup diff -----

/// A NaN against 1.0 was `inf` in the table, `null` in JSON and a relative
/// L2 distance of 0 in both.
#[test]
fn diff_reports_nan_differences_as_nan_in_table_and_json() {
    let scratch = scratch();
    let x = scratch.write(
        "x.safetensors",
        &[Tensor::new("t", Dtype::F32, &[3], vec![f64::NAN, 2.0, 3.0])],
    );
    let y = scratch.write(
        "y.safetensors",
        &[Tensor::new("t", Dtype::F32, &[3], vec![1.0, 2.0, 3.0])],
    );
    let json = soup(["--json", "diff", s(&x), s(&y)]);
    assert_eq!(json.code, 1, "differing: {}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let t = &value["tensors"][0];
    assert_eq!(t["differing"], 1, "{t}");
    assert_eq!(t["equal"], false, "{t}");
    assert!(t["max_abs_diff"].is_null(), "{t}");
    assert!(t["rel_l2"].is_null(), "{t}");
    assert!(t["cosine"].is_null(), "{t}");
    let report: DiffReport = serde_json::from_str(&json.stdout).unwrap();
    assert!(!report.equal);

    let table = soup(["diff", s(&x), s(&y)]);
    assert_eq!(table.code, 1, "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("t "))
        .unwrap_or_else(|| panic!("a row for t: {}", table.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // tensor, shape, differ, max |a-b|, rel L2, cosine, mask diff
    assert_eq!(
        &cells[..7],
        ["t", "3", "1", "nan", "nan", "nan", "0"],
        "{row}"
    );
    assert!(
        table.stdout.contains("verdict: DIFFERENT"),
        "{}",
        table.stdout
    );
}
