//! A scratch folder with small inputs, and running soup as a child that a
//! test can signal or time out: shared by the tests of soup against hostile
//! paths, changing inputs and signals (safety, output_paths, races).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fixtures::{write_checkpoint, Tensor};
use soup_core::Dtype;
use soup_tests::{soup_bin, Run};

/// A two-tensor model whose weight has the same zeros for every `shift`.
pub fn model(shift: f64) -> Vec<Tensor> {
    vec![
        Tensor::new(
            "a.weight",
            Dtype::F32,
            &[2, 4],
            vec![1.0 + shift, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 5.0],
        ),
        Tensor::new("a.bias", Dtype::F32, &[2], vec![0.5, -0.5]),
    ]
}

/// A temporary folder with an empty `out/`.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Just the empty `out/`.
    pub fn empty() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Scratch { dir }
    }
    /// With the inputs `a` and `b` ([`model`] shifted by 0 and 1).
    pub fn new() -> Scratch {
        let scratch = Scratch::empty();
        scratch.write("a.safetensors", &model(0.0));
        scratch.write("b.safetensors", &model(1.0));
        scratch
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }
    /// Writes `tensors` as the single-file checkpoint `name`.
    pub fn write(&self, name: &str, tensors: &[Tensor]) -> PathBuf {
        let path = self.path(name);
        write_checkpoint(&path, tensors, &[("format", "pt")], None).unwrap();
        path
    }
}

/// soup failed with exit status 2 and one line on standard error that
/// names each of `names`.
#[track_caller]
pub fn assert_one_error_line(run: &Run, names: &[&str]) {
    assert_eq!(
        run.code, 2,
        "exit status; stdout: {}; stderr: {}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", run.stderr);
    assert!(lines[0].starts_with("soup: error: "), "{}", lines[0]);
    for name in names {
        assert!(
            lines[0].contains(name),
            "should name `{name}`: {}",
            lines[0]
        );
    }
}

/// Starts soup with `args` and the extra environment `env`, its output
/// captured.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(soup_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits up to `secs` for `child`; kills it and returns `None` if it is
/// still running then (a hang is a failure, not a stuck test run).
pub fn wait_for(mut child: Child, secs: u64) -> Option<Run> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap().into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
