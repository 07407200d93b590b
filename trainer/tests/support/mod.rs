//! Helpers shared by the trainer's test targets (`it`, `sms` and `slurm`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `{stem}-images-idx3-ubyte` and `{stem}-labels-idx1-ubyte` (raw
/// MNIST-style IDX): `n` images of `side` x `side`, image `i` of class
/// `i % 4`, pixel `(y, x)` given by `pixel(class, y, x)` in row-major order.
pub fn write_idx(
    dir: &Path,
    stem: &str,
    n: usize,
    side: usize,
    pixel: &mut impl FnMut(usize, usize, usize) -> u8,
) {
    let (mut images, mut labels) = (vec![0, 0, 8, 3], vec![0, 0, 8, 1]);
    for d in [n, side, side] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let class = i % 4;
        labels.push(class as u8);
        for y in 0..side {
            for x in 0..side {
                images.push(pixel(class, y, x));
            }
        }
    }
    std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
}

/// Starts `command` with its output discarded and kills it with SIGKILL as
/// soon as `marker` exists; fails if it finishes first.
#[allow(dead_code)] // used by the it and sms targets, not by `slurm`
pub fn kill_when(command: &mut Command, marker: &Path) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Writes a four-class 28x28 IDX data set: each class lights one quadrant,
/// with noise, so a small network learns it in an epoch.
#[allow(dead_code)] // used by the sms and slurm targets, not by `it`
pub fn tiny_dataset(dir: &Path) {
    let mut state = 12345u64;
    let mut pixel = move |class: usize, y: usize, x: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 60) as u8;
        let inside = y / 14 == class / 2 && x / 14 == class % 2;
        if inside {
            150 + noise
        } else {
            noise
        }
    };
    write_idx(dir, "train", 400, 28, &mut pixel);
    write_idx(dir, "t10k", 120, 28, &mut pixel);
}

/// The reports of two runs agree: every accuracy, count, name and path
/// exactly, and every other number (losses, calibration errors) to 1e-12
/// relative. libtorch's CPU kernels may round the last bit of a reduction
/// differently in a fresh process (vectorised loops depend on how buffers
/// happen to be aligned), which moves the 16th digit of a mean confidence.
#[allow(dead_code)] // used by the sms and slurm targets, not by `it`
pub fn assert_same_report(a: &Path, b: &Path) {
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_same_json(&json(&a.join("report.json")), &json(&b.join("report.json")))
}

/// Two reports agree as [`assert_same_report`] says.
#[allow(dead_code)] // used by the sms and slurm targets, not by `it`
pub fn assert_same_json(a: &serde_json::Value, b: &serde_json::Value) {
    fn same(x: &serde_json::Value, y: &serde_json::Value, path: &str) {
        use serde_json::Value::*;
        match (x, y) {
            (Object(p), Object(q)) => {
                assert_eq!(
                    p.keys().collect::<Vec<_>>(),
                    q.keys().collect::<Vec<_>>(),
                    "{path}"
                );
                for (k, v) in p {
                    same(v, &q[k], &format!("{path}.{k}"));
                }
            }
            (Array(p), Array(q)) => {
                assert_eq!(p.len(), q.len(), "{path}");
                for (i, (v, w)) in p.iter().zip(q).enumerate() {
                    same(v, w, &format!("{path}[{i}]"));
                }
            }
            (Number(p), Number(q)) if path.ends_with("acc") || p.is_u64() => {
                assert_eq!(p, q, "{path}")
            }
            (Number(p), Number(q)) => {
                let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
                assert!(
                    (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
                    "{path}: {p} vs {q}"
                );
            }
            _ => assert_eq!(x, y, "{path}"),
        }
    }
    same(a, b, "report")
}
