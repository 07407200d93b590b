//! The checkpoints the trainer writes and reads go through soup-core: the
//! files are byte for byte those the trainer wrote with its own writer
//! before, a load and save gives the same bytes, and a bad file is refused
//! with soup-core's error naming the file.

use super::*;

/// sha256 of `trainer init --model M --num-classes 10 --input I --seed 0`
/// as written by the trainer's own safetensors writer before checkpoints
/// went through soup-core (commit da5f42c). Initialisation draws from
/// libtorch's CPU generator, so these pin the libtorch version too (2.13.0).
const BEFORE: [(&str, &str, &str); 2] = [
    (
        "cnn",
        "1x28x28",
        "781342b24cdfe34d553398eb8eef7eef40670e957260ed423aa97df74894d17c",
    ),
    (
        "resnet20",
        "3x32x32",
        "7fe3ea3542f5948f367a01b10f99575d0df900f6d90e62228721782e30806f12",
    ),
];

#[test]
fn checkpoints_are_byte_identical_to_those_of_the_former_writer_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (model, input, sha) in BEFORE {
        let path = dir.path().join(format!("{model}.safetensors"));
        let o = trainer()
            .args(["init", "--model", model, "--num-classes", "10"])
            .args(["--input", input, "--seed", "0", "--output"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(soup_core::file_sha256(&path).unwrap(), sha, "{model}");

        // Loading and saving again through the library gives the same bytes.
        let dims: Vec<i64> = input.split('x').map(|d| d.parse().unwrap()).collect();
        let spec = trainer::ModelSpec {
            num_classes: 10,
            input: [dims[0], dims[1], dims[2]],
        };
        let m = trainer::Model::new(model.parse().unwrap(), spec, tch::Device::Cpu);
        m.load(&path).unwrap();
        let again = dir.path().join(format!("{model}-again.safetensors"));
        m.save(&again).unwrap();
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&path).unwrap()
        );
    }
}

#[test]
fn bad_checkpoints_are_refused_with_soup_cores_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, b"nope").unwrap();
    let err = trainer::checkpoint::load(&short).unwrap_err();
    assert!(
        matches!(
            &err,
            trainer::Error::Soup(soup_core::Error::Header { path, .. }) if path == &short
        ),
        "{err}"
    );
    // A header that claims more data than the file holds.
    let lying = dir.path().join("lying.safetensors");
    let json = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json);
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&lying, bytes).unwrap();
    let o = trainer()
        .args(["eval", "--model", "cnn", "--device", "cpu", "--checkpoint"])
        .arg(&lying)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*lying.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("tensor `w`"), "{stderr}");
}
