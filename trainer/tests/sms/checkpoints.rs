//! The checkpoints the trainer writes and reads go through soup-core: the
//! files have the layout the trainer's own writer gave them before, a run
//! writes the same bytes twice, a load and save gives the same bytes, and a
//! bad file is refused with soup-core's error naming the file.

use super::*;

/// The header of `trainer init --model M --num-classes 10 --input I --seed
/// 0` as the trainer's own safetensors writer wrote it before checkpoints
/// went through soup-core (commit da5f42c): its sha256 (length prefix and
/// JSON) and the bytes of data after it. The header holds names, dtypes,
/// shapes and offsets, which are the same on every machine; the weights
/// are not pinned, because libtorch's initialisers draw different bits on
/// different CPUs (its normal sampler has an AVX2 kernel and a scalar one:
/// `ATEN_CPU_CAPABILITY=default` gives other weights than AVX2 and AVX-512).
const BEFORE: [(&str, &str, &str, usize); 2] = [
    (
        "cnn",
        "1x28x28",
        "d23eae0a1eb97eacbfbfdd24f1eb5f89e9326d93d2c43c260f80e419833ebe49",
        378_560,
    ),
    (
        "resnet20",
        "3x32x32",
        "e8d9c5365ce6c38e548babdc1b1296d61e1b9dd1028795ee581171afec7549c6",
        1_096_336,
    ),
];

/// sha256 of the header (length prefix and JSON) of the file `bytes`, and
/// the number of bytes after it.
fn header_digest(bytes: &[u8]) -> (String, usize) {
    use sha2::Digest;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let digest = sha2::Sha256::digest(&bytes[..8 + n]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (hex, bytes.len() - 8 - n)
}

/// Runs `trainer init` for `model` into `path`, with `cpu` as libtorch's
/// kernel level when given.
fn init(model: &str, input: &str, path: &Path, cpu: Option<&str>) {
    let mut command = trainer();
    command
        .args(["init", "--model", model, "--num-classes", "10"])
        .args(["--input", input, "--seed", "0", "--output"])
        .arg(path);
    if let Some(level) = cpu {
        command.env("ATEN_CPU_CAPABILITY", level);
    }
    let o = command.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn checkpoints_have_the_layout_of_the_former_writer_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (model, input, header, data) in BEFORE {
        let path = dir.path().join(format!("{model}.safetensors"));
        init(model, input, &path, None);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(header_digest(&bytes), (header.to_string(), data), "{model}");

        // The same command writes the same bytes on the same machine, and
        // libtorch's scalar kernels (other weights) the same layout.
        let again = dir.path().join(format!("{model}-again.safetensors"));
        init(model, input, &again, None);
        assert_eq!(std::fs::read(&again).unwrap(), bytes, "{model}");
        let scalar = dir.path().join(format!("{model}-scalar.safetensors"));
        init(model, input, &scalar, Some("default"));
        let scalar = std::fs::read(&scalar).unwrap();
        assert_eq!(
            header_digest(&scalar),
            (header.to_string(), data),
            "{model}"
        );

        // Loading and saving again through the library gives the same bytes.
        let dims: Vec<i64> = input.split('x').map(|d| d.parse().unwrap()).collect();
        let spec = trainer::ModelSpec {
            num_classes: 10,
            input: [dims[0], dims[1], dims[2]],
        };
        let m = trainer::Model::new(model.parse().unwrap(), spec, tch::Device::Cpu);
        m.load(&path).unwrap();
        let saved = dir.path().join(format!("{model}-saved.safetensors"));
        m.save(&saved).unwrap();
        assert_eq!(std::fs::read(&saved).unwrap(), bytes, "{model}");
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
