//! Outputs that cannot be written or would replace an input: refused,
//! with nothing replaced or left behind.

use super::*;

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
