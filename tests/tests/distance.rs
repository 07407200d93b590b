//! End-to-end tests of `soup distance`: its JSON against a direct f64
//! computation, and its peak memory on inputs larger than the budget.

use std::path::{Path, PathBuf};
use std::process::Command;

use fixtures::{small_model, write_checkpoint, Rng, Tensor};
use soup_core::{DistanceReport, Dtype};
use soup_tests::{soup, soup_bin};

/// `m` models with the small model's layout and independent values.
fn models(dir: &Path, m: usize) -> (Vec<PathBuf>, Vec<Vec<Tensor>>) {
    let mut rng = Rng::new(11);
    (0..m)
        .map(|k| {
            let tensors = small_model(&mut rng, Dtype::F32);
            let path = dir.join(format!("m{k}.safetensors"));
            write_checkpoint(&path, &tensors, &[], None).unwrap();
            (path, tensors)
        })
        .unzip()
}

/// The float values of the tensors whose names pass `keep`, flattened, as
/// stored (F32).
fn flat(tensors: &[Tensor], keep: impl Fn(&str) -> bool) -> Vec<f64> {
    tensors
        .iter()
        .filter(|t| t.dtype != Dtype::I64 && keep(&t.name))
        .flat_map(|t| t.values.iter().map(|v| *v as f32 as f64))
        .collect()
}

#[test]
fn json_matches_a_direct_f64_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, tensors) = models(dir.path(), 3);
    let mut args: Vec<String> = vec!["distance".into(), "--json".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    args.extend(["--exclude".into(), "^bn1\\.".into()]);
    let run = soup(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let raw: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for key in ["inputs", "l2", "cosine", "to_barycentre"] {
        assert!(raw.get(key).is_some(), "JSON lacks `{key}`: {raw}");
    }
    let report: DistanceReport = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report.inputs, paths);
    let x: Vec<Vec<f64>> = tensors
        .iter()
        .map(|t| flat(t, |n| !n.starts_with("bn1.")))
        .collect();
    let len = x[0].len();
    let mean: Vec<f64> = (0..len)
        .map(|e| x.iter().map(|v| v[e]).sum::<f64>() / 3.0)
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    for i in 0..3 {
        let b = (0..len)
            .map(|e| (x[i][e] - mean[e]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            close(report.to_barycentre[i], b),
            "{} vs {b}",
            report.to_barycentre[i]
        );
        for j in 0..3 {
            let d = (0..len)
                .map(|e| (x[i][e] - x[j][e]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(close(report.l2[i][j], d), "{} vs {d}", report.l2[i][j]);
            let dot: f64 = (0..len).map(|e| x[i][e] * x[j][e]).sum();
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let c = dot / (norm(&x[i]) * norm(&x[j]));
            assert!(close(report.cosine[i][j].unwrap(), c));
        }
        assert_eq!(report.l2[i][i], 0.0);
    }
    // The table names every input and pair.
    let run = soup(
        ["distance".to_string()]
            .into_iter()
            .chain(paths.iter().map(|p| p.display().to_string())),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("to barycentre"), "{}", run.stdout);
    // One input is a usage error.
    let run = soup(["distance", paths[0].to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// Runs `soup` under GNU time and returns its exit code and peak resident
/// memory in bytes. (The kernel's own accounting of a child spawned from
/// this test process would include the test's memory, which the child
/// shares until it executes soup; GNU time's child starts from its small
/// image.)
fn peak_rss(args: &[String]) -> (i32, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test needs GNU time: apt-get install time"
    );
    let out = Command::new(time)
        .args(["-f", "peak-kib %M"])
        .arg(soup_bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-kib "))
        .unwrap_or_else(|| panic!("no peak in {stderr}"))
        .trim()
        .parse()
        .unwrap();
    (out.status.code().unwrap_or(-1), kib * 1024)
}

/// Three inputs of 32 MiB each, streamed with a 4 MiB budget: peak memory
/// stays far below the 96 MiB of input (the pages read are released).
#[test]
fn memory_stays_bounded_on_inputs_larger_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let n = 8 << 20;
    let paths: Vec<String> = (0..3)
        .map(|k| {
            let values: Vec<f64> = (0..n)
                .map(|i| ((i * (k + 3)) % 1000) as f64 * 1e-3)
                .collect();
            let t = vec![Tensor::new("w.weight", Dtype::F32, &[n], values)];
            let path = dir.path().join(format!("big{k}.safetensors"));
            write_checkpoint(&path, &t, &[], None).unwrap();
            path.display().to_string()
        })
        .collect();
    let mut args: Vec<String> = [
        "--budget",
        "4MiB",
        "--threads",
        "2",
        "-q",
        "distance",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    args.extend(paths);
    let (code, peak) = peak_rss(&args);
    assert_eq!(code, 0);
    // Without releasing the pages read, the peak would exceed the input.
    assert!(
        peak < 48 << 20,
        "peak RSS {} MiB for 96 MiB of input",
        peak >> 20
    );
}
