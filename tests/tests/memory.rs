//! Peak memory of `soup` on headers with a million tensors. Each run's
//! peak resident size is read from the kernel's accounting of that one
//! child (`wait4`). That figure also covers what this process holds when
//! it starts the child, so the tests run one at a time and this process
//! stays small (see [`run_measured`]).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use soup_tests::soup_bin;

/// Writes a safetensors file of `n` one-element F32 tensors. The header is
/// written entry by entry, never held whole, so that this process stays
/// small (see [`run_measured`]).
fn million_tensors(path: &Path, n: usize) {
    let entry = |i: usize| {
        let comma = if i > 0 { "," } else { "" };
        format!(
            r#"{comma}"t{i:07}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
            4 * i,
            4 * i + 4
        )
    };
    let mut len = 2 + (0..n).map(|i| entry(i).len()).sum::<usize>();
    let padding = (8 - (8 + len) % 8) % 8;
    len += padding;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(len as u64).to_le_bytes()).unwrap();
    f.write_all(b"{").unwrap();
    for i in 0..n {
        f.write_all(entry(i).as_bytes()).unwrap();
    }
    f.write_all(b"}").unwrap();
    f.write_all(&b"       "[..padding]).unwrap();
    for _ in 0..n {
        f.write_all(&1.0f32.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
}

/// Makes the tests of this file run one at a time, so that none holds a
/// large buffer (a report being parsed) while another starts its child
/// (see [`run_measured`]).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    // The child starts as a copy of this process, and the kernel counts
    // this process's peak so far as the child's: reset it to what this
    // process holds now (`clear_refs`), which [`one_at_a_time`] keeps
    // small. Without it, a test that parsed a large report would raise
    // the figures of the tests after it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
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
    let _serial = one_at_a_time();
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
    let _serial = one_at_a_time();
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

/// Writing used about 1.8 KB per tensor: the output kept a copy of every
/// name and shape (and another per shard and per header probe), built
/// each header as a JSON tree, and every input digest was held as two
/// strings per tensor; merge of two such headers peaked at 1.87 GB.
#[test]
fn merge_of_two_million_tensor_headers_stays_under_800_mb() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    million_tensors(&a, 1_000_000);
    let b = dir.path().join("b.safetensors");
    std::fs::copy(&a, &b).unwrap();
    let out = dir.path().join("merged.safetensors");
    let run = run_measured(
        dir.path(),
        &[
            "-q".as_ref(),
            "--json".as_ref(),
            "merge".as_ref(),
            a.as_ref(),
            b.as_ref(),
            "-o".as_ref(),
            out.as_ref(),
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["tensors"], 1_000_000);
    // The mean of two equal checkpoints has their content (the digest
    // leaves metadata out).
    assert_eq!(digest(dir.path(), &out), report["input_digest"][0]);
    assert!(run.peak < 800 << 20, "peak RSS {} MB", run.peak >> 20);
}

/// `soup shard` of one such header peaked at 950 MB (the same copies, and
/// the index's weight map built as a tree of strings).
#[test]
fn shard_of_a_million_tensor_header_stays_under_600_mb() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    million_tensors(&a, 1_000_000);
    let out = dir.path().join("sharded");
    let run = run_measured(
        dir.path(),
        &[
            "-q".as_ref(),
            "--json".as_ref(),
            "shard".as_ref(),
            a.as_ref(),
            "-o".as_ref(),
            out.as_ref(),
            "--shard-size".as_ref(),
            "1MB".as_ref(),
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["tensors"], 1_000_000);
    assert_eq!(report["outputs"].as_array().unwrap().len(), 5);
    assert_eq!(digest(dir.path(), &out), report["input_digest"]);
    assert!(run.peak < 600 << 20, "peak RSS {} MB", run.peak >> 20);
}

/// The content digest of `checkpoint`: the last line of `soup hash`, run
/// in a child process and read line by line, so that this process stays
/// small.
fn digest(dir: &Path, checkpoint: &Path) -> serde_json::Value {
    use std::io::BufRead;
    let out_path = dir.join("hash");
    let status = Command::new(soup_bin())
        .args(["-q".as_ref(), "hash".as_ref(), checkpoint.as_os_str()])
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    let reader = std::io::BufReader::new(std::fs::File::open(&out_path).unwrap());
    let last = reader.lines().map(Result::unwrap).last().unwrap();
    let digest = last.split_whitespace().next().unwrap();
    serde_json::Value::String(digest.to_string())
}
