//! Helpers for the end-to-end tests in `tests/tests/`: locating the built
//! binaries, running them, and reaching the Python environment that
//! `scripts/setup.sh --full` installs.
//!
//! The binaries belong to other packages, so Cargo does not hand their paths
//! to these tests. They are looked up next to the test executable
//! (`target/<profile>/`), and a binary older than its sources is refused, so
//! a test never passes against stale code. `scripts/test.sh` builds them
//! before testing; by hand, run `cargo build --bins` (with the same profile)
//! first.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The committed fixtures folder.
pub fn fixtures() -> PathBuf {
    workspace().join("fixtures").join("data")
}

/// A committed fixture by file name.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    newest
}

/// Path of the built binary `name` (`soup`, `trainer`), whose sources live
/// in the workspace folders `sources`. Panics with instructions when it is
/// missing or older than its sources.
pub fn binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(name);
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is not built: run `cargo build --bins` with the same profile (scripts/test.sh does)",
                bin.display()
            )
        });
    for s in sources {
        let newest = newest_source(&workspace().join(s));
        assert!(
            built >= newest,
            "{} is older than the sources in {s}/: rebuild with `cargo build --bins` \
             (same profile) before testing",
            bin.display()
        );
    }
    bin
}

/// The `soup` binary.
pub fn soup_bin() -> PathBuf {
    binary("soup", &["soup-core/src", "soup-cli/src"])
}

/// The names of the entries of `dir`, sorted (to check that a command left
/// nothing behind, or exactly what it should).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A finished command: exit code and both streams as text.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `soup` with `args` and returns its result.
pub fn soup<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(soup_bin())
        .args(args)
        .output()
        .expect("soup runs")
        .into()
}

/// The Python interpreter of the project's environment (`SOUP_PYTHON`, set
/// by `scripts/setup.sh --full`). `None` means: skip this test. When
/// `SOUP_REQUIRE_PYTHON=1` (as in `scripts/test.sh` and CI) a missing
/// interpreter fails the test instead.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("SOUP_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("SOUP_REQUIRE_PYTHON").as_deref() == Ok("1") => {
            panic!("SOUP_PYTHON is not set: run the tests through scripts/test.sh")
        }
        None => {
            eprintln!(
                "skipped: SOUP_PYTHON not set (run scripts/test.sh to include Python checks)"
            );
            None
        }
    }
}

/// Runs a Python script (text) with arguments; panics with its output when
/// it fails.
pub fn run_python(python: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    let run: Run = out.into();
    assert_eq!(
        run.code, 0,
        "python failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}
