//! Sharded checkpoints with a broken index or shard, and inputs that are not regular files.

use super::*;

fn rewrite_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let index = dir.join("model.safetensors.index.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&index, serde_json::to_string(&value).unwrap()).unwrap();
    index
}

#[test]
fn shard_path_escaping_the_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    // The escaping target exists and is a valid checkpoint: only its place
    // is wrong.
    let outside = scratch.good("outside.safetensors");
    assert!(outside.exists());
    let index = rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = "../outside.safetensors".into();
    });
    rejected_everywhere(
        &scratch,
        &dir,
        "shard path `../outside.safetensors` escapes the checkpoint folder",
    );
    // The message names the index file.
    let run = soup(["inspect", s(&dir)]);
    assert!(run.stderr.contains(s(&index)), "{}", run.stderr);
}

#[test]
fn absolute_shard_path_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let outside = scratch.good("outside.safetensors");
    rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = s(&outside).into();
    });
    rejected_everywhere(&scratch, &dir, "escapes the checkpoint folder");
}

#[test]
fn shard_symlink_pointing_outside_the_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let outside = scratch.good("outside.safetensors");
    std::os::unix::fs::symlink(&outside, dir.join("link.safetensors")).unwrap();
    rewrite_index(&dir, |v| {
        v["weight_map"]["a.weight"] = "link.safetensors".into();
    });
    rejected_everywhere(
        &scratch,
        &dir,
        "shard path `link.safetensors` escapes the checkpoint folder",
    );
}

#[test]
fn missing_shard_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    std::fs::remove_file(dir.join("model-00001-of-00002.safetensors")).unwrap();
    rejected_everywhere(
        &scratch,
        &dir,
        "shard `model-00001-of-00002.safetensors` named in the index does not exist",
    );
}

#[test]
fn shard_that_is_a_folder_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let shard = dir.join("model-00001-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    rejected_everywhere(&scratch, &dir, "is a folder, not a regular file");
}

#[test]
fn device_as_input_is_rejected_without_reading_it() {
    // /dev/zero would never end if it were read.
    let scratch = Scratch::new();
    let run = soup(["inspect", "/dev/zero"]);
    assert_rejected(&run, &["/dev/zero"], "is a device", &scratch.out_dir());
}

#[test]
fn tensor_entry_that_is_not_an_object_is_rejected() {
    let scratch = Scratch::new();
    let bad = scratch.raw("bad.safetensors", &file(r#"{"a":[0,4]}"#, 0));
    rejected_everywhere(&scratch, &bad, "tensor `a`: invalid tensor entry");
}

#[test]
fn tensor_in_two_shards_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let first = dir.join("model-00001-of-00002.safetensors");
    let second = dir.join("model-00002-of-00002.safetensors");
    std::fs::copy(&first, &second).unwrap();
    rejected_everywhere(&scratch, &dir, "appears in two shards");
}

#[test]
fn index_that_is_not_json_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    std::fs::write(dir.join("model.safetensors.index.json"), b"{weight_map").unwrap();
    rejected_everywhere(&scratch, &dir, "invalid index JSON");
}

#[test]
fn index_mapping_a_tensor_to_the_wrong_shard_is_rejected() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    rewrite_index(&dir, |v| {
        let map = v["weight_map"].as_object_mut().unwrap();
        let (a, b) = (map["a.weight"].clone(), map["steps"].clone());
        assert_ne!(a, b, "the tensors live in different shards");
        map.insert("a.weight".into(), b);
    });
    rejected_everywhere(&scratch, &dir, "tensor `a.weight` is mapped to");
}

#[test]
fn broken_shard_is_named_by_its_own_path() {
    let scratch = Scratch::new();
    let dir = sharded(&scratch, "ck");
    let shard = dir.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 1]).unwrap();
    rejected_everywhere(&scratch, &shard, "truncated?");
}
