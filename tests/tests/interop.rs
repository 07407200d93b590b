//! Interoperability: Python's `safetensors` package (the environment that
//! `scripts/setup.sh` installs) reads every kind of file `soup merge`
//! writes (one file; shards plus index; F32, F16, BF16 and F64; integer
//! tensors carried through) and finds numpy's (weighted) mean of the
//! inputs, the inputs' mask, and soup's provenance metadata. numpy has no
//! bfloat16, so BF16 data comes from `safetensors.deserialize` and is
//! widened bit for bit.

use std::path::{Path, PathBuf};

use fixtures::{perturb, prune, small_model, write_checkpoint, Rng};
use soup_core::Dtype;
use soup_tests::{python, run_python, soup};

/// Reads each case's output (a file, or a folder of shards whose index it
/// checks) and its inputs with safetensors, and compares. Prints one line
/// per case.
const CHECK: &str = r#"
import json, math, os, sys
import numpy as np
from safetensors import deserialize, safe_open

def load(path):
    """name -> (dtype name, array), metadata"""
    tensors = {}
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
        for name, info in deserialize(open(path, "rb").read()):
            dtype = info["dtype"]
            if dtype == "BF16":
                # numpy has no bfloat16: widen the raw bits to float32.
                bits = np.frombuffer(info["data"], dtype="<u2").astype(np.uint32) << 16
                values = bits.view(np.float32).reshape(info["shape"])
            else:
                values = f.get_tensor(name)
            tensors[name] = (dtype, values)
    return tensors, meta

def read_output(path):
    if not os.path.isdir(path):
        return load(path)
    index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
    tensors, meta, total = {}, None, 0
    for shard in sorted(set(index["weight_map"].values())):
        part, meta = load(os.path.join(path, shard))
        for name in part:
            assert index["weight_map"][name] == shard, (name, shard)
            total += part[name][1].size * (2 if part[name][0] == "BF16" else part[name][1].itemsize)
        tensors.update(part)
    assert sorted(tensors) == sorted(index["weight_map"]), "index lists every tensor"
    assert index["metadata"]["total_size"] == total, (index["metadata"], total)
    return tensors, meta

TOL = {"F64": 1e-12, "F32": 1e-6, "F16": 1e-3, "BF16": 8e-3}

for case in json.loads(sys.argv[1]):
    out, meta = read_output(case["output"])
    inputs = [load(p)[0] for p in case["inputs"]]
    weights = np.array(case["weights"], dtype=np.float64)
    weights /= weights.sum()
    assert sorted(out) == sorted(inputs[0]), (sorted(out), sorted(inputs[0]))
    for name, (dtype, got) in out.items():
        in_dtype, first = inputs[0][name]
        assert got.shape == first.shape, (name, got.shape, first.shape)
        if in_dtype not in TOL:
            assert dtype == in_dtype and np.array_equal(got, first), name
            continue
        assert dtype == case["dtype"], (name, dtype, case["dtype"])
        stack = np.stack([i[name][1].astype(np.float64) for i in inputs])
        want = np.tensordot(weights, stack, axes=1)
        scale = max(np.abs(want).max(initial=0.0), 1e-30)
        tol = TOL[dtype] * scale + (TOL[in_dtype] * scale if in_dtype != dtype else 0)
        err = np.abs(got.astype(np.float64) - want).max(initial=0.0)
        assert err <= tol, (case["output"], name, dtype, err, tol)
        # Zero exactly where every input is zero.
        assert np.array_equal(got == 0, np.all(stack == 0, axis=0)), (name, "mask")
    assert meta["format"] == "pt", meta
    assert meta["soup.operation"] == "merge", meta
    assert meta["soup.version"].startswith("soup "), meta
    recipe = json.loads(meta["soup.recipe"])
    assert np.allclose(recipe["weights"], weights), recipe
    recorded = json.loads(meta["soup.inputs"])
    assert [r["path"] for r in recorded] == case["inputs"], recorded
    assert all(r["digest"].startswith("blake3:") and len(r["digest"]) == 71 for r in recorded), recorded
    print("ok", case["output"], len(out))
"#;

/// Three candidates of a small pruned model in `dtype`.
fn candidates(dir: &Path, dtype: Dtype) -> Vec<PathBuf> {
    let mut rng = Rng::new(42);
    let mut parent = small_model(&mut rng, dtype);
    prune(&mut parent, 0.5);
    (0..3)
        .map(|k| {
            let path = dir.join(format!("{dtype:?}-{k}.safetensors"));
            let tensors = perturb(&parent, &mut rng, 0.05);
            write_checkpoint(&path, &tensors, &[("format", "pt")], None).unwrap();
            path
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn python_safetensors_reads_every_file_soup_writes() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let mut add =
        |inputs: &[PathBuf], out: PathBuf, dtype: &str, weights: &[f64], extra: &[&str]| {
            let mut args = vec!["merge".to_string()];
            args.extend(inputs.iter().map(|p| s(p).to_string()));
            args.extend(["-o".into(), s(&out).into()]);
            args.extend(extra.iter().map(|a| a.to_string()));
            let run = soup(&args);
            assert_eq!(run.code, 0, "{}", run.stderr);
            cases.push(serde_json::json!({
                "output": s(&out),
                "inputs": inputs.iter().map(|p| s(p)).collect::<Vec<_>>(),
                "dtype": dtype,
                "weights": weights,
            }));
        };
    let f32s = candidates(dir.path(), Dtype::F32);
    let d = dir.path();
    add(&f32s, d.join("uniform.safetensors"), "F32", &[1.0; 3], &[]);
    add(
        &f32s,
        d.join("weighted.safetensors"),
        "F32",
        &[0.5, 0.3, 0.2],
        &["--weights", "0.5,0.3,0.2"],
    );
    add(
        &f32s,
        d.join("sharded"),
        "F32",
        &[1.0; 3],
        &["--shard-size", "1KB"],
    );
    add(
        &f32s,
        d.join("as-f16.safetensors"),
        "F16",
        &[1.0; 3],
        &["--dtype", "F16"],
    );
    add(
        &f32s,
        d.join("as-bf16.safetensors"),
        "BF16",
        &[1.0; 3],
        &["--dtype", "BF16"],
    );
    add(
        &f32s,
        d.join("as-f64.safetensors"),
        "F64",
        &[1.0; 3],
        &["--dtype", "F64"],
    );
    for (dtype, name) in [
        (Dtype::F16, "F16"),
        (Dtype::BF16, "BF16"),
        (Dtype::F64, "F64"),
    ] {
        let inputs = candidates(d, dtype);
        add(
            &inputs,
            d.join(format!("{name}-soup.safetensors")),
            name,
            &[1.0; 3],
            &[],
        );
    }
    add(
        &candidates(d, Dtype::BF16),
        d.join("bf16-sharded"),
        "BF16",
        &[2.0, 1.0, 1.0],
        &["--shard-size", "500", "--weights", "2,1,1"],
    );
    let spec = serde_json::Value::Array(cases).to_string();
    let out = run_python(&python, CHECK, &[Path::new(&spec)]);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert!(
        lines.iter().all(|l| l.ends_with(" 10")),
        "every file has 10 tensors: {out}"
    );
}
