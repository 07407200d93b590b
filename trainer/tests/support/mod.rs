//! Helpers shared by the trainer's test targets (`it` and `sms`).

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
