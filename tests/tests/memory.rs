//! Peak memory of `soup` on a header with a million tensors (issue 11,
//! defect 8). Its own test binary, so that the peak resident size of the
//! children of this process is the peak of the one run measured here.

use std::io::Write;
use std::process::Command;

use soup_tests::soup_bin;

/// Writes a safetensors file of `n` one-element F32 tensors.
fn million_tensors(path: &std::path::Path, n: usize) {
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

/// Peak resident size, in bytes, of the largest child waited for so far.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.ru_maxrss as u64 * 1024
}

/// Opening the header used to cost 1.1 GB, over half of it in a second
/// validation pass by the safetensors crate; the README states about
/// 500 bytes per tensor.
#[test]
fn inspect_of_a_million_tensor_header_stays_under_800_mb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.safetensors");
    million_tensors(&path, 1_000_000);
    let out = Command::new(soup_bin())
        .args(["-q", "--json", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tensors"].as_array().unwrap().len(), 1_000_000);
    let peak = children_peak_rss();
    assert!(peak < 800 << 20, "peak RSS {} MB", peak >> 20);
}
