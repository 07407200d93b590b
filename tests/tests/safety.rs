//! soup under hostile files, careless use and signals, end to end: one
//! regression test per defect found by trying to break it (outputs that are
//! devices or FIFOs, folders replaced with everything in them, inputs
//! truncated under the memory map, FIFOs as inputs, temporary files left by
//! killed runs, overflowing weights, terminal escapes in names, absurd
//! thread counts, and lesser header and index problems).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fixtures::{write_checkpoint, Tensor};
use soup_core::Dtype;
use soup_tests::{files_in, soup, Run};

mod common;
use common::{assert_one_error_line, model, s, spawn, wait_for, Scratch};

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

fn soup_within(args: &[&str], secs: u64) -> Run {
    wait_for(spawn(args, &[]), secs)
        .unwrap_or_else(|| panic!("soup {args:?} still running after {secs} s"))
}

/// Polls until `dir` holds a hidden temporary file.
fn wait_for_temp(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if files_in(dir).iter().any(|n| n.starts_with(".soup-tmp-")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no temporary output appeared in {}", dir.display());
}

// ----- defect 1: --force never replaces a device, FIFO or socket -----

#[test]
fn force_does_not_replace_a_fifo_with_the_output() {
    use std::os::unix::fs::FileTypeExt;
    let scratch = Scratch::new();
    let fifo = scratch.out().join("pipe");
    mkfifo(&fifo);
    let run = soup_within(
        &[
            "merge",
            s(&scratch.path("a.safetensors")),
            s(&scratch.path("b.safetensors")),
            "-o",
            s(&fifo),
            "--force",
        ],
        30,
    );
    assert_one_error_line(&run, &[s(&fifo), "a FIFO"]);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(files_in(&scratch.out()), ["pipe"]);
}

#[test]
fn force_does_not_replace_a_device_behind_a_link() {
    let scratch = Scratch::new();
    let link = scratch.out().join("null");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let run = soup([
        "edit",
        s(&scratch.path("a.safetensors")),
        "-o",
        s(&link),
        "--force",
    ]);
    assert_one_error_line(&run, &[s(&link), "a symbolic link to /dev/null"]);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/null"));
}

// ----- defect 2: sharded --force replaces only a sharded checkpoint -----

#[test]
fn sharded_force_keeps_a_folder_that_is_not_a_checkpoint() {
    let scratch = Scratch::new();
    let victim = scratch.out().join("victim");
    std::fs::create_dir_all(victim.join("deep")).unwrap();
    std::fs::write(victim.join("deep/thesis.txt"), b"four years").unwrap();
    let a = scratch.path("a.safetensors");
    let run = soup([
        "shard",
        s(&a),
        "-o",
        s(&victim),
        "--shard-size",
        "16",
        "--force",
    ]);
    assert_one_error_line(&run, &[s(&victim), "not exactly a sharded checkpoint"]);
    assert_eq!(
        std::fs::read(victim.join("deep/thesis.txt")).unwrap(),
        b"four years"
    );
    assert_eq!(files_in(&scratch.out()), ["victim"]);

    // A sharded checkpoint plus one stray file is not exactly a checkpoint.
    let sharded = scratch.out().join("sharded");
    assert_eq!(
        soup(["shard", s(&a), "-o", s(&sharded), "--shard-size", "16"]).code,
        0
    );
    std::fs::write(sharded.join("notes.txt"), b"mine").unwrap();
    let run = soup([
        "shard",
        s(&a),
        "-o",
        s(&sharded),
        "--shard-size",
        "32",
        "--force",
    ]);
    assert_one_error_line(&run, &[s(&sharded)]);
    assert_eq!(std::fs::read(sharded.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn sharded_force_replaces_a_sharded_checkpoint_whole() {
    let scratch = Scratch::new();
    let a = scratch.path("a.safetensors");
    let b = scratch.path("b.safetensors");
    let target = scratch.out().join("model");
    assert_eq!(
        soup(["shard", s(&a), "-o", s(&target), "--shard-size", "16"]).code,
        0
    );
    assert_eq!(files_in(&target).len(), 3, "{:?}", files_in(&target));
    let run = soup([
        "shard",
        s(&b),
        "-o",
        s(&target),
        "--shard-size",
        "64",
        "--force",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        files_in(&target),
        [
            "model-00001-of-00001.safetensors",
            "model.safetensors.index.json"
        ]
    );
    assert_eq!(files_in(&scratch.out()), ["model"]);
    assert_eq!(soup(["diff", s(&b), s(&target)]).code, 0);
}

// ----- defect 3: an input truncated under the memory map -----

#[test]
fn input_truncated_during_merge_is_a_clean_error_naming_it() {
    let scratch = Scratch::new();
    // 1 MiB per input: the data lies on pages past the truncation point.
    let big = |shift: f64| {
        vec![Tensor::new(
            "w",
            Dtype::F32,
            &[512, 512],
            (0..512 * 512).map(|i| (i % 7) as f64 + shift).collect(),
        )]
    };
    let a = scratch.write("big-a.safetensors", &big(0.0));
    let b = scratch.write("big-b.safetensors", &big(1.0));
    let out = scratch.out().join("merged.safetensors");
    let child = spawn(
        &["merge", s(&a), s(&b), "-o", s(&out)],
        &[("SOUP_TEST_PAUSE_AFTER_CREATE_MS", "3000")],
    );
    wait_for_temp(&scratch.out());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let run = wait_for(child, 60).expect("merge ended");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("soup-test:"))
        .collect();
    assert_eq!(run.code, 2, "exit status; stderr: {}", run.stderr);
    assert_eq!(errors.len(), 1, "{:?}", run.stderr);
    assert!(errors[0].starts_with("soup: error: "), "{}", errors[0]);
    assert!(errors[0].contains(s(&b)), "{}", errors[0]);
    assert!(
        errors[0].contains("changed while being read"),
        "{}",
        errors[0]
    );
    assert!(
        files_in(&scratch.out()).is_empty(),
        "{:?}",
        files_in(&scratch.out())
    );
}

// ----- defect 4: a FIFO as input -----

#[test]
fn fifo_input_is_refused_without_blocking() {
    let scratch = Scratch::new();
    let fifo = scratch.path("pipe.safetensors");
    mkfifo(&fifo);
    let run = soup_within(&["inspect", s(&fifo)], 30);
    assert_one_error_line(&run, &[s(&fifo), "a FIFO"]);
    let run = soup_within(
        &[
            "merge",
            s(&scratch.path("a.safetensors")),
            s(&fifo),
            "-o",
            s(&scratch.out().join("m.safetensors")),
        ],
        30,
    );
    assert_one_error_line(&run, &[s(&fifo), "a FIFO"]);
    assert!(files_in(&scratch.out()).is_empty());
}

#[test]
fn fifo_shard_or_index_is_refused_without_blocking() {
    let scratch = Scratch::new();
    let dir = scratch.path("sharded");
    write_checkpoint(&dir, &model(0.0), &[], Some(16)).unwrap();
    let shard = dir.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    let run = soup_within(&["inspect", s(&dir)], 30);
    assert_one_error_line(&run, &[s(&shard), "a FIFO"]);

    let index = dir.join("model.safetensors.index.json");
    std::fs::remove_file(&index).unwrap();
    mkfifo(&index);
    let run = soup_within(&["inspect", s(&dir)], 30);
    assert_one_error_line(&run, &[s(&index), "a FIFO"]);
}

// ----- defect 5: SIGTERM, SIGHUP and temporary files of killed runs -----

fn signal_during_merge(signal: &str) {
    let scratch = Scratch::new();
    let out = scratch.out().join("merged.safetensors");
    let child = spawn(
        &[
            "merge",
            s(&scratch.path("a.safetensors")),
            s(&scratch.path("b.safetensors")),
            "-o",
            s(&out),
        ],
        &[("SOUP_TEST_PAUSE_AFTER_CREATE_MS", "3000")],
    );
    wait_for_temp(&scratch.out());
    let temp = files_in(&scratch.out()).remove(0);
    assert!(
        temp.starts_with(".soup-tmp-v2_") && temp.contains(&format!("_{}_", child.id())),
        "temporary names carry the PID: {temp}"
    );
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let run = wait_for(child, 60).expect("merge ended");
    assert_eq!(run.code, 130, "{signal}: {}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(
        files_in(&scratch.out()).is_empty(),
        "{:?}",
        files_in(&scratch.out())
    );
}

#[test]
fn sigterm_ends_a_merge_cleanly() {
    signal_during_merge("-TERM");
}

#[test]
fn sighup_ends_a_merge_cleanly() {
    signal_during_merge("-HUP");
}

#[test]
fn writes_sweep_temporary_files_of_dead_processes_only() {
    let scratch = Scratch::new();
    // This test's own names, `<kind>v2_<host>_<boot>_<ns>_<pid>_<start>_`,
    // with a PID no process has (pid_max is at most 2^22).
    let dead_prefix = |kind: &str| {
        let own = soup_core::own_temp_prefix(kind);
        let mut fields: Vec<&str> = own.split('_').collect();
        let n = fields.len();
        fields[n - 3] = "2147483632";
        fields.join("_")
    };
    let dead = [
        format!("{}abc.safetensors", dead_prefix(soup_core::TEMP_PREFIX)),
        format!("{}xyz", dead_prefix(soup_core::GREEDY_PREFIX)),
        format!("{}0x", dead_prefix(soup_core::TEMP_PREFIX)),
    ];
    // This process is alive; a name of the older format says nothing of
    // its host, so it may be a live writer's elsewhere.
    let live = format!(
        "{}def.safetensors",
        soup_core::own_temp_prefix(soup_core::TEMP_PREFIX)
    );
    let old_format = ".soup-tmp-2147483632-0-x.safetensors".to_string();
    for name in &dead[..2] {
        std::fs::write(scratch.out().join(name), vec![0u8; 4096]).unwrap();
    }
    std::fs::create_dir(scratch.out().join(&dead[2])).unwrap();
    std::fs::write(scratch.out().join(&dead[2]).join("f"), b"x").unwrap();
    for name in [&live, &old_format] {
        std::fs::write(scratch.out().join(name), b"in progress").unwrap();
    }
    std::fs::write(scratch.out().join("notes.txt"), b"mine").unwrap();
    let out = scratch.out().join("merged.safetensors");
    let run = soup([
        "merge",
        s(&scratch.path("a.safetensors")),
        s(&scratch.path("b.safetensors")),
        "-o",
        s(&out),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut expected = vec![
        live,
        old_format,
        "merged.safetensors".to_string(),
        "notes.txt".to_string(),
    ];
    expected.sort();
    assert_eq!(files_in(&scratch.out()), expected);
}

// ----- defect 6: weights whose sum overflows -----

#[test]
fn huge_weights_are_normalised_without_overflow() {
    let scratch = Scratch::new();
    let out = scratch.out().join("merged.safetensors");
    let run = soup([
        "merge",
        s(&scratch.path("a.safetensors")),
        s(&scratch.path("b.safetensors")),
        "-o",
        s(&out),
        "--weights",
        "1e308,1e308",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["weights"], serde_json::json!([0.5, 0.5]));
}

// ----- defect 7: control characters in names and metadata -----

#[test]
fn tables_escape_control_characters_from_the_file() {
    let scratch = Scratch::new();
    let evil = "x\n\u{1b}[2Jverdict: masks identical";
    let hostile = |shift: f64| {
        vec![Tensor::new(
            evil,
            Dtype::F32,
            &[4],
            vec![1.0, 0.0, 2.0 + shift, shift],
        )]
    };
    let a = scratch.path("ea.safetensors");
    write_checkpoint(&a, &hostile(0.0), &[("note", "\u{1b}]0;pwned\u{7}")], None).unwrap();
    let b = scratch.path("eb.safetensors");
    write_checkpoint(&b, &hostile(1.0), &[("note", "\u{9b}31m")], None).unwrap();
    for args in [
        vec!["inspect", s(&a)],
        vec!["check-mask", s(&a), s(&b)],
        vec!["diff", s(&a), s(&b)],
        vec!["hash", s(&a)],
    ] {
        let run = soup(&args);
        assert!(run.code == 0 || run.code == 1, "{args:?}: {}", run.stderr);
        assert!(
            !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {:?}",
            run.stdout
        );
        assert!(
            !run.stdout
                .lines()
                .any(|l| l.starts_with("verdict: masks identical")),
            "{args:?} let a name forge a line: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("\\u{1b}[2J"),
            "{args:?}: {}",
            run.stdout
        );
    }
    // JSON stays exact: the name round-trips.
    let run = soup(["inspect", s(&a), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["tensors"][0]["name"], evil);
}

// ----- defect 9: absurd thread counts -----

#[test]
fn absurd_thread_count_is_refused_at_once() {
    let scratch = Scratch::new();
    let started = Instant::now();
    let run = soup_within(
        &[
            "--threads",
            "100000",
            "inspect",
            s(&scratch.path("a.safetensors")),
        ],
        30,
    );
    assert_one_error_line(&run, &["--threads 100000", "use at most"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let ok = soup([
        "--threads",
        "2",
        "inspect",
        s(&scratch.path("a.safetensors")),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}

// ----- defect 10: lesser problems -----

/// A safetensors file with header `json` and `data` zero bytes after it.
fn raw_file(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

#[test]
fn unwritable_output_folder_error_names_no_temporary_file() {
    // Nobody, not even root, creates files at the top of /sys.
    let scratch = Scratch::new();
    let (a, b) = (scratch.path("a.safetensors"), scratch.path("b.safetensors"));
    for shard in [false, true] {
        let mut args = vec!["merge", s(&a), s(&b), "-o", "/sys/merged.safetensors"];
        if shard {
            args.extend(["--shard-size", "16"]);
        }
        let run = soup(&args);
        assert_one_error_line(&run, &["/sys", "cannot create output in folder"]);
        assert!(!run.stderr.contains(".soup-tmp"), "{}", run.stderr);
    }
}

#[test]
fn index_with_an_empty_weight_map_is_refused() {
    let scratch = Scratch::new();
    let dir = scratch.path("sharded");
    write_checkpoint(&dir, &model(0.0), &[], Some(16)).unwrap();
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"metadata":{},"weight_map":{}}"#).unwrap();
    let run = soup(["inspect", s(&dir)]);
    assert_one_error_line(&run, &[s(&index), "weight_map lists no tensors"]);
}

#[test]
fn duplicate_header_keys_and_unknown_tensor_fields_are_refused() {
    let scratch = Scratch::new();
    let cases = [
        (
            "dup.safetensors",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            "duplicate key `a`",
        ),
        (
            "dupmeta.safetensors",
            r#"{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            "duplicate key `k`",
        ),
        (
            "extra.safetensors",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"scale":2}}"#,
            "unknown field `scale`",
        ),
    ];
    for (name, json, problem) in cases {
        let path = scratch.path(name);
        std::fs::write(&path, raw_file(json, 4)).unwrap();
        let run = soup(["inspect", s(&path)]);
        assert_one_error_line(&run, &[s(&path), problem]);
    }
}

#[test]
fn edit_of_a_tensor_named_empty_is_no_rename() {
    let scratch = Scratch::new();
    let input = scratch.path("empty-name.safetensors");
    write_checkpoint(
        &input,
        &[
            Tensor::new("", Dtype::F32, &[1], vec![1.0]),
            Tensor::new("b", Dtype::F32, &[1], vec![2.0]),
        ],
        &[],
        None,
    )
    .unwrap();
    let out = scratch.out().join("edited.safetensors");
    let run = soup(["edit", s(&input), "-o", s(&out), "--set-meta", "k=v"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("renamed  "), "{}", run.stdout);
    assert!(run.stdout.contains("0 renamed"), "{}", run.stdout);
}

#[test]
fn diff_of_nan_against_a_number_is_not_a_zero_difference() {
    let scratch = Scratch::new();
    let a = scratch.write(
        "nan.safetensors",
        &[Tensor::new("w", Dtype::F32, &[2], vec![f64::NAN, 1.0])],
    );
    let b = scratch.write(
        "one.safetensors",
        &[Tensor::new("w", Dtype::F32, &[2], vec![1.0, 1.0])],
    );
    let run = soup(["diff", s(&a), s(&b)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let row = run.stdout.lines().find(|l| l.starts_with("w ")).unwrap();
    assert!(row.contains("nan"), "max |a-b| of NaN vs 1.0: {row}");
}
