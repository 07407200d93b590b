//! Writing more shards than a process may have files open: the writer
//! used to keep every shard file open until the end, so `ulimit -n 1024`
//! (a common default) failed at about 1,020 shards.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use soup_tests::soup_bin;

/// Shards written, each holding one tensor.
const SHARDS: usize = 1_100;

/// Writes a safetensors file of `n` one-element F32 tensors, tensor `i`
/// holding `i`.
fn numbered_tensors(path: &Path, n: usize) {
    let entries: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#""w{i:05}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
                4 * i,
                4 * i + 4
            )
        })
        .collect();
    let mut json = format!("{{{}}}", entries.join(","));
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    f.write_all(json.as_bytes()).unwrap();
    for i in 0..n {
        f.write_all(&(i as f32).to_le_bytes()).unwrap();
    }
}

/// Runs soup with `args` under a limit of 256 open files; returns its
/// standard output, after checking that it succeeded.
fn soup_with_256_files(args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" "$@""#)
        .arg(soup_bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soup {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every tensor of the sharded checkpoint at `path` holds its number.
fn assert_numbered(path: &Path) {
    let ck = soup_core::Checkpoint::open(path).unwrap();
    assert_eq!(ck.tensors().len(), SHARDS);
    assert_eq!(ck.files().count(), SHARDS);
    for i in 0..SHARDS {
        let t = ck.get(&format!("w{i:05}")).unwrap();
        assert_eq!(ck.data(t), (i as f32).to_le_bytes(), "tensor {i}");
    }
}

#[test]
fn more_shards_than_open_files_allowed_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    numbered_tensors(&input, SHARDS);
    let input = input.to_str().unwrap();

    let sharded = dir.path().join("sharded");
    let s = sharded.to_str().unwrap();
    let report =
        soup_with_256_files(&["-q", "--json", "shard", input, "-o", s, "--shard-size", "4"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["outputs"].as_array().unwrap().len(), SHARDS + 1);
    assert_numbered(&sharded);

    // Reading them back under the same limit, and merging into as many.
    let digest = |p: &str| {
        let out = soup_with_256_files(&["-q", "--json", "hash", p]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(digest(s), digest(input));
    let merged = dir.path().join("merged");
    let m = merged.to_str().unwrap();
    soup_with_256_files(&["-q", "merge", s, input, "-o", m, "--shard-size", "4"]);
    assert_numbered(&merged);
}
