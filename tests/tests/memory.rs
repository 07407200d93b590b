//! Peak memory of `soup` on headers with a million tensors (issue 11,
//! defect 8). Each run's peak resident size is read from the kernel's
//! accounting of that one child (`wait4`), so the tests can run side by
//! side.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use soup_tests::soup_bin;

/// Writes a safetensors file of `n` one-element F32 tensors.
fn million_tensors(path: &Path, n: usize) {
    let mut json = String::with_capacity(n * 64);
    json.push('{');
    for i in 0..n {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#""t{i:07}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
            4 * i,
            4 * i + 4
        ));
    }
    json.push('}');
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    f.write_all(json.as_bytes()).unwrap();
    for _ in 0..n {
        f.write_all(&1.0f32.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
}

/// A finished run of soup: exit status, standard output and error, and
/// the peak resident size of that process in bytes.
struct Measured {
    success: bool,
    stdout: String,
    stderr: String,
    peak: u64,
}

/// Runs soup with `args`, its output going to files in `dir` (so that a
/// large output cannot block it), and waits for it with `wait4`, which
/// returns that child's own resource usage.
// The child is reaped by `wait4` below, which clippy does not see.
#[allow(clippy::zombie_processes)]
fn run_measured(dir: &Path, args: &[&std::ffi::OsStr]) -> Measured {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let child = Command::new(soup_bin())
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: getrusage-style out-parameter, zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (std's `Child` only
    // waits when asked); the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    Measured {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        peak: usage.ru_maxrss as u64 * 1024,
    }
}

/// Opening the header used to cost 1.1 GB, over half of it in a second
/// validation pass by the safetensors crate, and 850 MB with the header's
/// pages kept mapped and a `String` per table cell; the README states the
/// bound per tensor.
#[test]
fn inspect_of_a_million_tensor_header_stays_under_600_mb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.safetensors");
    million_tensors(&path, 1_000_000);
    let run = run_measured(
        dir.path(),
        &[
            "-q".as_ref(),
            "--json".as_ref(),
            "inspect".as_ref(),
            path.as_ref(),
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["tensors"].as_array().unwrap().len(), 1_000_000);
    assert!(run.peak < 600 << 20, "peak RSS {} MB", run.peak >> 20);
}

/// check-mask of two such headers used 1.47 GB: a `String` per fingerprint
/// and per table cell, a vector per tensor for the per-input counts, the
/// headers' pages kept mapped, and one window of a million pieces.
#[test]
fn check_mask_of_two_million_tensor_headers_stays_under_900_mb() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    million_tensors(&a, 1_000_000);
    let b = dir.path().join("b.safetensors");
    std::fs::copy(&a, &b).unwrap();
    let run = run_measured(
        dir.path(),
        &["-q".as_ref(), "check-mask".as_ref(), a.as_ref(), b.as_ref()],
    );
    assert!(run.success, "{}", run.stderr);
    let rows = run.stdout.lines().filter(|l| l.starts_with("t0")).count();
    assert_eq!(rows, 1_000_000);
    assert!(
        run.stdout.contains("verdict: masks identical"),
        "{}",
        &run.stdout[run.stdout.len().saturating_sub(300)..]
    );
    assert!(run.peak < 900 << 20, "peak RSS {} MB", run.peak >> 20);
}
