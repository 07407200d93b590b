//! Tests of writing: atomic outputs, replacing targets, sharded folders and
//! the in-memory writer.

use super::*;
use crate::checkpoint::Checkpoint;

fn tensor(name: &str, n: usize) -> OutputTensor {
    OutputTensor {
        name: name.into(),
        dtype: Dtype::F32,
        shape: vec![n],
    }
}

#[test]
fn uncommitted_output_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.safetensors");
    let out = Output::create(
        &target,
        &[tensor("a", 4)],
        BTreeMap::new(),
        &[],
        &Default::default(),
    )
    .unwrap();
    out.write(0, 0, &[0; 16]).unwrap();
    drop(out);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sharded_output_reads_back_as_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("sharded");
    let tensors = [tensor("a", 4), tensor("b", 4), tensor("c", 2)];
    let opts = OutputOptions {
        shard_size: Some(20),
        force: false,
    };
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let mut out = Output::create(&target, &tensors, meta, &[], &opts).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = (0..t.shape[0])
            .flat_map(|k| (k as f32 + i as f32).to_le_bytes())
            .collect();
        out.write(i, 0, &bytes).unwrap();
    }
    out.metadata_mut().insert("late".into(), "x".repeat(100));
    let files = out.commit().unwrap();
    assert_eq!(files.len(), 4);
    let ck = Checkpoint::open(&target).unwrap();
    assert_eq!(ck.tensors().len(), 3);
    assert_eq!(ck.metadata()["late"], "x".repeat(100));
    let c = ck.get("c").unwrap();
    assert_eq!(
        ck.data(c),
        [2f32.to_le_bytes(), 3f32.to_le_bytes()].concat()
    );
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.safetensors");
    std::fs::write(&target, b"keep").unwrap();
    let err = Output::create(
        &target,
        &[tensor("a", 1)],
        BTreeMap::new(),
        &[],
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}
#[test]
fn in_memory_tensors_are_written_in_name_order_with_a_packed_header() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.safetensors");
    let b: Vec<u8> = [1.5f32, -0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let a = 7i64.to_le_bytes();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let tensors = [
        TensorBytes {
            name: "b.weight",
            dtype: Dtype::F32,
            shape: &[2],
            data: &b,
        },
        TensorBytes {
            name: "a.count",
            dtype: Dtype::I64,
            shape: &[],
            data: &a,
        },
    ];
    write_tensors(&target, &tensors, &meta).unwrap();
    // The layout, spelled out: sorted keys, data in name order without
    // gaps, the JSON padded with spaces to a multiple of 8 bytes.
    let json = r#"{"__metadata__":{"format":"pt"},"a.count":{"data_offsets":[0,8],"dtype":"I64","shape":[]},"b.weight":{"data_offsets":[8,16],"dtype":"F32","shape":[2]}}"#;
    let padded = json.len().next_multiple_of(8);
    let mut want = (padded as u64).to_le_bytes().to_vec();
    want.extend_from_slice(json.as_bytes());
    want.resize(8 + padded, b' ');
    want.extend_from_slice(&a);
    want.extend_from_slice(&b);
    assert_eq!(std::fs::read(&target).unwrap(), want);
    // The order given does not matter, and an existing file is replaced.
    let reversed = [tensors[1], tensors[0]];
    write_tensors(&target, &reversed, &meta).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), want);
    let ck = Checkpoint::open(&target).unwrap();
    assert_eq!(ck.data(ck.get("b.weight").unwrap()), &b[..]);
    assert_eq!(ck.metadata(), &meta);
    // Nothing but the output is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn in_memory_tensors_with_wrong_lengths_or_twice_the_same_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.safetensors");
    let data = [0u8; 8];
    let t = |name, shape: &'static [usize]| TensorBytes {
        name,
        dtype: Dtype::F32,
        shape,
        data: &data,
    };
    let err = write_tensors(&target, &[t("x", &[3])], &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Tensor { tensor, .. } if tensor == "x"),
        "{err}"
    );
    let err = write_tensors(&target, &[t("x", &[2]), t("x", &[2])], &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Tensor { tensor, .. } if tensor == "x"),
        "{err}"
    );
    assert!(!target.exists());
    // A folder is never replaced.
    std::fs::create_dir(&target).unwrap();
    let err = write_tensors(&target, &[t("x", &[2])], &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, Error::OutputIsFolder { .. }), "{err}");
}

#[test]
fn atomic_file_write_sweeps_temps_of_dead_writers_and_leaves_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let kind = crate::safety::TEMP_PREFIX;
    let dead = dir
        .path()
        .join(format!("{}x.json", crate::safety::dead_prefix(kind)));
    let live = dir
        .path()
        .join(format!("{}y.json", crate::safety::own_prefix(kind)));
    std::fs::write(&dead, b"left by a killed run").unwrap();
    std::fs::write(&live, b"being written").unwrap();
    let target = dir.path().join("x.json");
    write_file_atomic(&target, b"old").unwrap();
    write_file_atomic(&target, b"new").unwrap();
    assert!(!dead.exists(), "a dead writer's temporary file survived");
    assert!(live.exists(), "a live writer's temporary file was removed");
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn symbolic_links_are_never_replaced_by_either_writer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redirected.log");
    std::fs::write(&file, b"earlier").unwrap();
    let to_file = dir.path().join("stdout");
    std::os::unix::fs::symlink(&file, &to_file).unwrap();
    let to_null = dir.path().join("null");
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let refused = |err: Error, link: &Path| {
        assert!(
            matches!(&err, Error::NotReplaceable { path, what }
                if path == link && what.starts_with("a symbolic link to ")),
            "{err}"
        );
    };
    for link in [&to_file, &to_null, &dangling] {
        for force in [false, true] {
            let options = OutputOptions {
                shard_size: None,
                force,
            };
            let err = Output::create(link, &[tensor("a", 1)], BTreeMap::new(), &[], &options)
                .unwrap_err();
            refused(err, link);
        }
        refused(write_file_atomic(link, b"new").unwrap_err(), link);
        let t = TensorBytes {
            name: "a",
            dtype: Dtype::F32,
            shape: &[1],
            data: &[0; 4],
        };
        refused(
            write_tensors(link, &[t], &BTreeMap::new()).unwrap_err(),
            link,
        );
        assert!(std::fs::symlink_metadata(link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    let err = write_file_atomic(&to_file, b"new").unwrap_err();
    assert!(err.to_string().contains("redirected.log"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"earlier");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[test]
fn the_metadata_key_is_no_tensor_name() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.safetensors");
    let is_reserved = |err: &Error| {
        matches!(err, Error::Tensor { tensor, reason, .. }
            if tensor == "__metadata__" && reason.contains("reserved"))
    };
    let err = Output::create(
        &target,
        &[tensor("a", 1), tensor("__metadata__", 1)],
        BTreeMap::new(),
        &[],
        &Default::default(),
    )
    .unwrap_err();
    assert!(is_reserved(&err), "{err}");
    let t = TensorBytes {
        name: "__metadata__",
        dtype: Dtype::F32,
        shape: &[1],
        data: &[0; 4],
    };
    let err = write_tensors(&target, &[t], &BTreeMap::new()).unwrap_err();
    assert!(is_reserved(&err), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The index is written entry by entry; its bytes must stay those of
/// `serde_json::to_string_pretty` of the whole index. More shards than are
/// kept open at once, written out of order, read back.
#[test]
fn many_shards_written_out_of_order_read_back_with_a_pretty_index() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("sharded");
    let tensors: Vec<OutputTensor> = (0..100).map(|i| tensor(&format!("t{i:03}"), 1)).collect();
    let opts = OutputOptions {
        shard_size: Some(4),
        force: false,
    };
    let out = Output::create(&target, &tensors, BTreeMap::new(), &[], &opts).unwrap();
    for i in (0..100).rev().step_by(2).chain((0..100).step_by(2)) {
        out.write(i, 0, &(i as f32).to_le_bytes()).unwrap();
    }
    out.sync_data().unwrap();
    let files = out.commit().unwrap();
    assert_eq!(files.len(), 101);
    let weight_map: BTreeMap<String, String> = (0..100)
        .map(|i| {
            let file = format!("model-{:05}-of-00100.safetensors", i + 1);
            (format!("t{i:03}"), file)
        })
        .collect();
    let expected = serde_json::to_string_pretty(&serde_json::json!({
        "metadata": { "total_size": 400 },
        "weight_map": weight_map,
    }))
    .unwrap();
    let index = std::fs::read_to_string(target.join(INDEX_FILE)).unwrap();
    assert_eq!(index, expected);
    let ck = Checkpoint::open(&target).unwrap();
    for i in 0..100 {
        let t = ck.get(&format!("t{i:03}")).unwrap();
        assert_eq!(ck.data(t), (i as f32).to_le_bytes());
    }
}
