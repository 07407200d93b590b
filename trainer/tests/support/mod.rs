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
    walk_json(a, b, "report", &|path, p, q| {
        if path.ends_with("acc") || p.is_u64() {
            assert_eq!(p, q, "{path}");
        } else {
            let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
            assert!(
                (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
                "{path}: {p} vs {q}"
            );
        }
    })
}

/// Walks two JSON trees side by side: the same keys in the same order, the
/// same array lengths, equal strings, booleans and nulls; each pair of
/// numbers, with its path (`report.phases[0].ece`), goes to `numbers`.
fn walk_json(
    x: &serde_json::Value,
    y: &serde_json::Value,
    path: &str,
    numbers: &dyn Fn(&str, &serde_json::Number, &serde_json::Number),
) {
    use serde_json::Value::*;
    match (x, y) {
        (Object(p), Object(q)) => {
            assert_eq!(
                p.keys().collect::<Vec<_>>(),
                q.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in p {
                walk_json(v, &q[k], &format!("{path}.{k}"), numbers);
            }
        }
        (Array(p), Array(q)) => {
            assert_eq!(p.len(), q.len(), "{path}");
            for (i, (v, w)) in p.iter().zip(q).enumerate() {
                walk_json(v, w, &format!("{path}[{i}]"), numbers);
            }
        }
        (Number(p), Number(q)) => numbers(path, p, q),
        _ => assert_eq!(x, y, "{path}"),
    }
}

/// How far a report made on another CPU model may stray from a recorded one
/// ([`assert_like_json`]). libtorch's kernels round differently on
/// different CPUs (vector widths, fused multiply-adds), and training
/// carries those last-digit differences forward. Measured between an AMD
/// EPYC (where the report was recorded) and an Intel Xeon with AVX-512 on
/// the tiny data set of these tests (two phases, half an epoch each): no
/// accuracy, count or overall sparsity differed; per-layer sparsities moved
/// by at most 5.4e-5 (a few weights changing layer at the global
/// threshold); calibration errors by at most 1.5e-3 relative; distances
/// between candidates by at most 1.5 % relative. The bounds leave a margin
/// of six times or more over those figures while still catching a changed
/// computation: a model left un-recalibrated, or retrained on another
/// schedule, moves these numbers by tens of percent.
#[allow(dead_code)] // used by the sms target
pub struct Portable {
    /// Accuracies (`*acc`), absolute: one image of the 40-image
    /// validation split (three of the 120 test images).
    pub accuracy: f64,
    /// Per-layer sparsity, absolute.
    pub layer_sparsity: f64,
    /// Distances in `geometry` (`l2`, `to_barycentre`), relative. Two
    /// candidates of one parent differ by a small vector (cosine 0.99999),
    /// so the same absolute rounding is a thousand times larger relative to
    /// their distance than to their weights.
    pub distance: f64,
    /// Every other non-integer number (calibration errors, cosines, FLOPs
    /// ratios), relative.
    pub relative: f64,
}

#[allow(dead_code)] // used by the sms target
impl Portable {
    /// The bounds documented on [`Portable`].
    pub const DEFAULT: Portable = Portable {
        accuracy: 0.025 + 1e-9,
        layer_sparsity: 0.01,
        distance: 0.1,
        relative: 1e-2,
    };
}
/// `got` is the report `expected` describes, up to the rounding of another
/// CPU model: the same keys, names, checkpoint paths, integers and overall
/// sparsities (counts of zeros, exact on every CPU), and every other number
/// within the bounds of `tol`.
#[allow(dead_code)] // used by the sms target
pub fn assert_like_json(expected: &serde_json::Value, got: &serde_json::Value, tol: &Portable) {
    walk_json(expected, got, "report", &|path, p, q| {
        if p.is_u64() || p.is_i64() {
            assert_eq!(p, q, "{path}");
            return;
        }
        let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
        let field = path.rsplit('.').next().unwrap_or(path);
        let bound = if path.contains(".layer_sparsity.") {
            tol.layer_sparsity
        } else if field.ends_with("sparsity") || field.ends_with("sparsity_all_params") {
            0.0
        } else if field.ends_with("acc") {
            tol.accuracy
        } else if path.contains(".geometry.l2") || path.contains(".geometry.to_barycentre") {
            tol.distance * p.abs().max(q.abs())
        } else {
            tol.relative * p.abs().max(q.abs())
        };
        assert!((p - q).abs() <= bound, "{path}: {p} vs {q} (bound {bound})");
    })
}

/// Whether every tensor of `names` in the checkpoint at `path` has the N:M
/// `pattern` by soup-core's check (the one `soup check-mask --nm` runs);
/// each of them must be checked.
#[allow(dead_code)] // used by the sms and pdt targets
pub fn has_nm_pattern(path: &Path, pattern: &str, names: &[String]) -> bool {
    let include: Vec<String> = names
        .iter()
        .map(|n| format!("^{}$", regex::escape(n)))
        .collect();
    let pattern: soup_core::NmPattern = pattern.parse().unwrap();
    let rule = soup_core::NmRule::new(pattern, &include, &[], &[]).unwrap();
    let checkpoint = soup_core::Checkpoint::open(path).unwrap();
    let report =
        soup_core::check_nm(&checkpoint, &rule, None, &soup_core::Control::default()).unwrap();
    assert_eq!(report.checked, names.len(), "{}", path.display());
    report.passed
}

#[allow(dead_code)] // used by the sms and pdt targets
/// The top-1 class of every test image under the checkpoint `path`,
/// computed here from the model's outputs.
pub fn predictions(ws: &trainer::pipeline::Workspace, path: &Path) -> Vec<i64> {
    let model = ws.load(path).unwrap();
    let mut out = Vec::new();
    for b in ws
        .data
        .eval_batches(trainer::Split::Test, ws.train.eval_batch_size, ws.device)
    {
        let probs = tch::no_grad(|| {
            model
                .forward(&b.images, trainer::Mode::Eval)
                .softmax(-1, tch::Kind::Float)
        });
        out.extend(Vec::<i64>::try_from(&probs.argmax(-1, false)).unwrap());
    }
    out
}
