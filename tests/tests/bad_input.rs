//! Bad input, end to end: every case must end with exit status 2, one line
//! on standard error that names the file and the problem, and nothing left
//! in the output folder (neither the output nor a temporary file).
//!
//! Broken files are built from byte literals, one per known problem, in the
//! manner of the safetensors crate's own attack tests.

use std::path::{Path, PathBuf};

use fixtures::{write_checkpoint, Tensor};
use soup_core::Dtype;
use soup_tests::{soup, Run};

/// A scratch folder with an `out/` subfolder for outputs.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn out_dir(&self) -> PathBuf {
        self.path("out")
    }
    fn output(&self) -> PathBuf {
        self.out_dir().join("merged.safetensors")
    }
    /// Writes a small valid checkpoint named `name`.
    fn good(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        write_checkpoint(&path, &model(Dtype::F32, 0.0), &[("format", "pt")], None).unwrap();
        path
    }
    /// Writes raw bytes to `name`.
    fn raw(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn model(dtype: Dtype, shift: f64) -> Vec<Tensor> {
    vec![
        Tensor::new(
            "a.weight",
            dtype,
            &[2, 4],
            vec![1.0 + shift, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 5.0],
        ),
        Tensor::new("a.bias", dtype, &[2], vec![0.5, -0.5]),
        Tensor::new("steps", Dtype::I64, &[], vec![7.0]),
    ]
}

/// A safetensors file with header `json` and `data` zero bytes after it.
fn file(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// Asserts the rejection contract: exit 2, one stderr line naming `names`
/// (file paths, tensor names) and the `problem`, an empty output folder.
#[track_caller]
fn assert_rejected(run: &Run, names: &[&str], problem: &str, out_dir: &Path) {
    assert_eq!(run.code, 2, "exit status\nstderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", run.stderr);
    let line = lines[0];
    assert!(line.starts_with("soup: error: "), "{line}");
    for name in names {
        assert!(line.contains(name), "stderr should name `{name}`: {line}");
    }
    assert!(
        line.contains(problem),
        "stderr should say `{problem}`: {line}"
    );
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "output folder should be empty: {left:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `merge good bad`, `check-mask good bad` and `inspect bad` and checks
/// that each rejects `bad` with `problem`.
#[track_caller]
fn rejected_everywhere(scratch: &Scratch, bad: &Path, problem: &str) {
    let good = scratch.good("good.safetensors");
    let out = scratch.output();
    let merge = soup(["merge", s(&good), s(bad), "-o", s(&out)]);
    assert_rejected(&merge, &[s(bad)], problem, &scratch.out_dir());
    let check = soup(["check-mask", s(&good), s(bad)]);
    assert_rejected(&check, &[s(bad)], problem, &scratch.out_dir());
    let inspect = soup(["inspect", s(bad)]);
    assert_rejected(&inspect, &[s(bad)], problem, &scratch.out_dir());
}

// ----- one file -----

#[test]
fn truncated_file_is_rejected() {
    let scratch = Scratch::new();
    let good = std::fs::read(scratch.good("whole.safetensors")).unwrap();
    let bad = scratch.raw("cut.safetensors", &good[..good.len() - 3]);
    rejected_everywhere(&scratch, &bad, "truncated?");
}

#[test]
fn file_shorter_than_the_length_prefix_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("tiny.safetensors", b"\x10\x00\x00");
    rejected_everywhere(&scratch, &bad, "too short to be a safetensors file");
}

#[test]
fn empty_file_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("empty.safetensors", b"");
    rejected_everywhere(&scratch, &bad, "0 bytes, too short");
}

#[test]
fn header_length_past_the_end_is_rejected() {
    let scratch = Scratch::new();
    let mut bytes = 4096u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let bad = scratch.raw("long-header.safetensors", &bytes);
    rejected_everywhere(
        &scratch,
        &bad,
        "header length 4096 runs past the end of the file",
    );
}

#[test]
fn header_over_100_mb_is_rejected_without_reading_it() {
    let scratch = Scratch::new();
    let mut bytes = 100_000_001u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let bad = scratch.raw("huge-header.safetensors", &bytes);
    rejected_everywhere(&scratch, &bad, "exceeds the 100000000-byte limit");
}

#[test]
fn invalid_json_header_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw(
        "json.safetensors",
        &file(r#"{"a.weight": {"dtype": "F32",,}}"#, 0),
    );
    rejected_everywhere(&scratch, &bad, "header is not a valid JSON object");
}

#[test]
fn header_that_is_not_utf8_is_rejected() {
    let scratch = Scratch::new();
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\xff}\n");
    let bad = scratch.raw("latin.safetensors", &bytes);
    rejected_everywhere(&scratch, &bad, "not valid UTF-8");
}

#[test]
fn overlapping_offsets_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let bad = scratch.raw("overlap.safetensors", &file(json, 12));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `b`: data [4, 12) overlaps tensor `a`",
    );
}

#[test]
fn offsets_leaving_a_hole_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let bad = scratch.raw("hole.safetensors", &file(json, 12));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `b`: data starts at 8 but the previous tensor ends at 4",
    );
}

#[test]
fn offsets_running_past_the_end_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let bad = scratch.raw("past-end.safetensors", &file(json, 8));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `a`: data [0, 16) runs past the end of the data section",
    );
}

#[test]
fn offsets_that_overflow_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}}"#;
    let bad = scratch.raw("overflow.safetensors", &file(json, 16));
    rejected_everywhere(&scratch, &bad, "tensor `a`");
}

#[test]
fn trailing_bytes_after_the_last_tensor_are_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("trailing.safetensors", &file(json, 12));
    rejected_everywhere(&scratch, &bad, "8 bytes after the last tensor's data");
}

#[test]
fn unknown_dtype_is_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("dtype.safetensors", &file(json, 4));
    rejected_everywhere(&scratch, &bad, "tensor `a`: unknown dtype `F12`");
}

#[test]
fn shape_disagreeing_with_byte_length_is_rejected() {
    let scratch = Scratch::new();
    let json = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let bad = scratch.raw("shape.safetensors", &file(json, 20));
    rejected_everywhere(
        &scratch,
        &bad,
        "tensor `a`: shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20",
    );
}

#[test]
fn metadata_that_is_not_a_string_map_is_rejected() {
    let scratch = Scratch::new();
    let json =
        r#"{"__metadata__":{"epochs":3},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let bad = scratch.raw("meta.safetensors", &file(json, 4));
    rejected_everywhere(&scratch, &bad, "__metadata__ must map strings to strings");
}

#[test]
fn missing_input_file_is_rejected() {
    let scratch = Scratch::new();
    let missing = scratch.path("nowhere.safetensors");
    rejected_everywhere(&scratch, &missing, "cannot open");
}

// ----- several candidates -----

fn write(scratch: &Scratch, name: &str, tensors: &[Tensor]) -> PathBuf {
    let path = scratch.path(name);
    write_checkpoint(&path, tensors, &[("format", "pt")], None).unwrap();
    path
}

/// Runs merge and check-mask over `a` and `b` and expects `problem`,
/// naming both files.
#[track_caller]
fn candidates_rejected(scratch: &Scratch, a: &Path, b: &Path, problem: &str) {
    let out = scratch.output();
    let merge = soup(["merge", s(a), s(b), "-o", s(&out)]);
    assert_rejected(&merge, &[s(a), s(b)], problem, &scratch.out_dir());
    let check = soup(["check-mask", s(a), s(b)]);
    assert_rejected(&check, &[s(a), s(b)], problem, &scratch.out_dir());
}

#[test]
fn candidates_with_different_names_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut renamed = model(Dtype::F32, 0.0);
    renamed[1].name = "a.beta".into();
    let b = write(&scratch, "b.safetensors", &renamed);
    candidates_rejected(&scratch, &a, &b, "tensor `a.beta` is in");
    // A tensor missing from the second input is named too.
    let mut fewer = model(Dtype::F32, 0.0);
    fewer.remove(1);
    let c = write(&scratch, "c.safetensors", &fewer);
    candidates_rejected(&scratch, &a, &c, "tensor `a.bias` is in");
}

#[test]
fn candidates_with_different_shapes_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut reshaped = model(Dtype::F32, 0.0);
    reshaped[0].shape = vec![4, 2];
    let b = write(&scratch, "b.safetensors", &reshaped);
    candidates_rejected(&scratch, &a, &b, "tensor `a.weight` has shape [2, 4]");
}

#[test]
fn candidates_with_different_dtypes_are_rejected() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let b = write(&scratch, "b.safetensors", &model(Dtype::BF16, 0.0));
    candidates_rejected(&scratch, &a, &b, "tensor `a.weight` has dtype F32");
}

#[test]
fn differing_int_tensors_are_rejected_by_default() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut other = model(Dtype::F32, 0.0);
    other[2].values = vec![8.0];
    let b = write(&scratch, "b.safetensors", &other);
    let run = soup(["merge", s(&a), s(&b), "-o", s(&scratch.output())]);
    assert_rejected(
        &run,
        &[s(&a), s(&b), "`steps`"],
        "never averaged",
        &scratch.out_dir(),
    );
}

#[test]
fn differing_masks_are_refused_by_default_and_leave_no_output() {
    let scratch = Scratch::new();
    let a = write(&scratch, "a.safetensors", &model(Dtype::F32, 0.0));
    let mut other = model(Dtype::F32, 0.0);
    other[0].values[1] = 9.0;
    let b = write(&scratch, "b.safetensors", &other);
    let run = soup(["merge", s(&a), s(&b), "-o", s(&scratch.output())]);
    assert_rejected(
        &run,
        &[s(&a), s(&b), "`a.weight`"],
        "masks differ",
        &scratch.out_dir(),
    );
    // Also when the output is a sharded folder.
    let run = soup([
        "merge",
        s(&a),
        s(&b),
        "-o",
        s(&scratch.out_dir().join("sharded")),
        "--shard-size",
        "16",
    ]);
    assert_rejected(&run, &[s(&a), s(&b)], "masks differ", &scratch.out_dir());
}

// ----- sharded checkpoints -----

/// Writes a two-shard checkpoint folder `name` and returns it.
fn sharded(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path(name);
    write_checkpoint(&dir, &model(Dtype::F32, 0.0), &[("format", "pt")], Some(16)).unwrap();
    dir
}

fn rewrite_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let index = dir.join("model.safetensors.index.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&index, serde_json::to_string(&value).unwrap()).unwrap();
    index
}

#[test]
fn shard_path_escaping_the_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    // The escaping target exists and is a valid checkpoint: only its place
    // is wrong.
    let outside = scratch.good("outside.safetensors");
    assert!(outside.exists());
    let index = rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = "../outside.safetensors".into();
    });
    rejected_everywhere(
        &scratch,
        &dir,
        "shard path `../outside.safetensors` escapes the checkpoint folder",
    );
    // The message names the index file.
    let run = soup(["inspect", s(&dir)]);
    assert!(run.stderr.contains(s(&index)), "{}", run.stderr);
}

#[test]
fn absolute_shard_path_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let outside = scratch.good("outside.safetensors");
    rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = s(&outside).into();
    });
    rejected_everywhere(&scratch, &dir, "escapes the checkpoint folder");
}

#[test]
fn shard_symlink_pointing_outside_the_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let outside = scratch.good("outside.safetensors");
    std::os::unix::fs::symlink(&outside, dir.join("link.safetensors")).unwrap();
    rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = "link.safetensors".into();
    });
    rejected_everywhere(
        &scratch,
        &dir,
        "shard path `link.safetensors` escapes the checkpoint folder",
    );
}

#[test]
fn missing_shard_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    std::fs::remove_file(dir.join("model-00001-of-00002.safetensors")).unwrap();
    rejected_everywhere(
        &scratch,
        &dir,
        "shard `model-00001-of-00002.safetensors` named in the index does not exist",
    );
}

#[test]
fn shard_that_is_a_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let shard = dir.join("model-00001-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    rejected_everywhere(&scratch, &dir, "is a folder, not a regular file");
}

#[test]
fn device_as_input_is_rejected_without_reading_it() {
    // /dev/zero would never end if it were read.
    let scratch = Scratch::new();
    let run = soup(["inspect", "/dev/zero"]);
    assert_rejected(&run, &["/dev/zero"], "is a device", &scratch.out_dir());
}

#[test]
fn tensor_entry_that_is_not_an_object_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("bad.safetensors", &file(r#"{"a":[0,4]}"#, 0));
    rejected_everywhere(&scratch, &bad, "tensor `a`: invalid tensor entry");
}

#[test]
fn tensor_in_two_shards_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let first = dir.join("model-00001-of-00002.safetensors");
    let second = dir.join("model-00002-of-00002.safetensors");
    std::fs::copy(&first, &second).unwrap();
    rejected_everywhere(&scratch, &dir, "appears in two shards");
}

#[test]
fn index_that_is_not_json_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    std::fs::write(dir.join("model.safetensors.index.json"), b"{weight_map").unwrap();
    rejected_everywhere(&scratch, &dir, "invalid index JSON");
}

#[test]
fn index_mapping_a_tensor_to_the_wrong_shard_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    rewrite_index(&dir, |v| {
        let map = v["weight_map"].as_object_mut().unwrap();
        let (a, b) = (map["a.weight"].clone(), map["steps"].clone());
        assert_ne!(a, b, "the tensors live in different shards");
        map.insert("a.weight".into(), b);
    });
    rejected_everywhere(&scratch, &dir, "tensor `a.weight` is mapped to");
}

#[test]
fn broken_shard_is_named_by_its_own_path() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let shard = dir.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 1]).unwrap();
    rejected_everywhere(&scratch, &shard, "truncated?");
}

// ----- the output -----

#[test]
fn output_equal_to_an_input_is_refused_even_with_force() {
    let scratch = Scratch::new();
    let a = scratch.good("a.safetensors");
    let b = write(&scratch, "b.safetensors", &model(Dtype::F32, 1.0));
    let before = std::fs::read(&a).unwrap();
    for force in [false, true] {
        let mut args = vec!["merge", s(&a), s(&b), "-o", s(&a)];
        if force {
            args.push("--force");
        }
        let run = soup(&args);
        assert_rejected(
            &run,
            &[s(&a)],
            "output would overwrite input",
            &scratch.out_dir(),
        );
        // Spelled differently (through `..`) it is still the same file.
        let indirect = scratch.out_dir().join("..").join("a.safetensors");
        let mut args = vec!["merge", s(&a), s(&b), "-o", s(&indirect)];
        if force {
            args.push("--force");
        }
        let run = soup(&args);
        assert_rejected(
            &run,
            &["a.safetensors"],
            "output would overwrite input",
            &scratch.out_dir(),
        );
    }
    assert_eq!(std::fs::read(&a).unwrap(), before, "input untouched");
    // No temporary file beside the input either.
    let names: Vec<_> = std::fs::read_dir(scratch.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".soup-tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn output_through_a_symlink_to_an_input_is_refused() {
    let scratch = Scratch::new();
    let a = scratch.good("a.safetensors");
    let b = write(&scratch, "b.safetensors", &model(Dtype::F32, 1.0));
    let link = scratch.out_dir().join("link.safetensors");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let run = soup(["merge", s(&a), s(&b), "-o", s(&link), "--force"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("output would overwrite input"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_dir(scratch.out_dir()).unwrap().count(),
        1,
        "only the link"
    );
}

#[test]
fn output_folder_holding_a_sharded_input_is_refused() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let b = sharded(&scratch, "ck2");
    let run = soup([
        "merge",
        s(&dir),
        s(&b),
        "-o",
        s(&dir),
        "--shard-size",
        "16",
        "--force",
    ]);
    assert_rejected(
        &run,
        &[s(&dir)],
        "output would overwrite input",
        &scratch.out_dir(),
    );
}

/// Runs a merge of two good inputs into `output` and expects a rejection
/// naming `names`.
#[track_caller]
fn unwritable(scratch: &Scratch, output: &Path, names: &[&str], problem: &str) {
    let a = scratch.good("a.safetensors");
    let b = write(scratch, "b.safetensors", &model(Dtype::F32, 1.0));
    for shard in [false, true] {
        let mut args = vec!["merge", s(&a), s(&b), "-o", s(output)];
        if shard {
            args.extend(["--shard-size", "16"]);
        }
        let run = soup(&args);
        assert_rejected(&run, names, problem, &scratch.out_dir());
    }
}

#[test]
fn output_folder_that_does_not_exist_is_rejected() {
    let scratch = Scratch::new();
    let missing = scratch.out_dir().join("missing");
    unwritable(
        &scratch,
        &missing.join("merged.safetensors"),
        &[s(&missing)],
        "output folder is not usable",
    );
}

#[test]
fn output_folder_that_is_a_file_is_rejected() {
    let scratch = Scratch::new();
    let file = scratch.good("plain.safetensors");
    unwritable(
        &scratch,
        &file.join("merged.safetensors"),
        &[s(&file)],
        "Not a directory",
    );
}

#[test]
fn output_folder_the_kernel_refuses_is_rejected() {
    // /proc refuses new files even to root, unlike a chmod'ed folder.
    let scratch = Scratch::new();
    unwritable(
        &scratch,
        Path::new("/proc/merged.safetensors"),
        &["/proc"],
        "cannot create output in folder",
    );
}

#[test]
fn output_folder_without_write_permission_is_rejected() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let locked = scratch.out_dir().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes through permission bits: this case only means something
    // for other users.
    let probe = locked.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        eprintln!("skipped: running as root, chmod 555 does not stop writes");
    } else {
        let a = scratch.good("a.safetensors");
        let b = write(&scratch, "b.safetensors", &model(Dtype::F32, 1.0));
        let out = locked.join("merged.safetensors");
        let run = soup(["merge", s(&a), s(&b), "-o", s(&out)]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(s(&locked)), "{}", run.stderr);
        assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
        assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(&locked).unwrap();
}

#[test]
fn existing_output_is_refused_without_force() {
    let scratch = Scratch::new();
    let a = scratch.good("a.safetensors");
    let b = write(&scratch, "b.safetensors", &model(Dtype::F32, 1.0));
    let out = scratch.output();
    std::fs::write(&out, b"precious").unwrap();
    let run = soup(["merge", s(&a), s(&b), "-o", s(&out)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(s(&out)) && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(scratch.out_dir()).unwrap().count(), 1);
}

#[test]
fn single_file_output_onto_an_existing_folder_is_refused_before_any_work() {
    let scratch = Scratch::new();
    let a = scratch.good("a.safetensors");
    let b = write(&scratch, "b.safetensors", &model(Dtype::F32, 1.0));
    let folder = scratch.out_dir().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let run = soup(["merge", s(&a), s(&b), "-o", s(&folder), "--force"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("is a folder"), "{}", run.stderr);
    assert!(
        run.stderr.contains("shards into it with --shard-size"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(scratch.out_dir()).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
}
