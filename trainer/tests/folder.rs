//! Image folders (torchvision's `ImageFolder` layout) on folders the tests
//! write: the listing and the evaluation transform against torchvision,
//! determinism of the training pipeline, unreadable files, learning with
//! `trainer train`, `trainer sms` end to end, and corruptions at the
//! folder's image size.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{ImageFormat, Rgb, RgbImage};
use tch::{Device, Tensor};
use trainer::data::folder::index_folder;
use trainer::data::{FolderOptions, Normalize};
use trainer::{Dataset, Error, Split};

/// The project's Python (torch, torchvision, PIL), or `None` (the test is
/// skipped) unless `SOUP_REQUIRE_PYTHON=1`.
fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SOUP_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("SOUP_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "{test}: SOUP_PYTHON is unset but SOUP_REQUIRE_PYTHON=1"
            );
            eprintln!("skipping {test}: SOUP_PYTHON is unset");
            None
        }
    }
}

fn run_python(py: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/folder_reference.py");
    let out = Command::new(py)
        .arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "folder_reference.py {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("trainer runs")
}

fn ok(args: &[&str]) -> String {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "trainer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An image of class `k` of `classes`: its own colour and stripe
/// direction, with pixel noise from `seed`, so that classes are learnable
/// and no two images are alike.
fn picture(k: usize, classes: usize, w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let angle = std::f64::consts::PI * k as f64 / classes as f64;
    let colour = [
        (60 + 150 * (k % 2)) as f64,
        (60 + 150 * ((k / 2) % 2)) as f64,
        (200 - 40 * k % 160) as f64,
    ];
    RgbImage::from_fn(w, h, |x, y| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let t = (x as f64 * angle.cos() + y as f64 * angle.sin()) * 0.4;
        let stripe = 40.0 * t.sin();
        Rgb(std::array::from_fn(|c| {
            let noise = ((s >> (8 * c)) & 31) as f64 - 16.0;
            (colour[c] + stripe + noise).clamp(0.0, 255.0) as u8
        }))
    })
}

/// Writes `ROOT/{train,val}/classK/NNN.{jpg,png}`: `per_class` training and
/// `per_class / 4` (at least 2) validation images per class, sizes varying
/// around `w x h`; every other file is a PNG when `mixed`.
fn write_folder(root: &Path, classes: usize, per_class: usize, w: u32, h: u32, mixed: bool) {
    for (split, n) in [("train", per_class), ("val", (per_class / 4).max(2))] {
        for k in 0..classes {
            let dir = root.join(split).join(format!("class{k}"));
            fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let seed = (k * 1000 + i) as u64 + if split == "val" { 1 << 20 } else { 0 };
                let (iw, ih) = (w + (i as u32 * 7) % 13, h + (i as u32 * 5) % 11);
                let img = picture(k, classes, iw, ih, seed);
                if mixed && i % 2 == 1 {
                    img.save_with_format(dir.join(format!("{i:03}.png")), ImageFormat::Png)
                        .unwrap();
                } else {
                    img.save_with_format(dir.join(format!("{i:03}.jpg")), ImageFormat::Jpeg)
                        .unwrap();
                }
            }
        }
    }
}

fn options(size: usize) -> FolderOptions {
    FolderOptions {
        image_size: size,
        ..FolderOptions::default()
    }
}

fn tensor_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn class_order_and_files_match_torchvision() {
    let Some(py) = python("class_order_and_files_match_torchvision") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Code-point order puts "B" and "Z" before "a" and "b", "_x" between
    // them and "ä" last; a case-insensitive or locale sort would not.
    let classes = ["b", "B", "a", "Z", "_x", "ä"];
    for split in ["train", "val"] {
        for (k, c) in classes.iter().enumerate() {
            let dir = root.join(split).join(c);
            fs::create_dir_all(dir.join("sub")).unwrap();
            fs::create_dir_all(dir.join("Sub2")).unwrap();
            let img = picture(k, classes.len(), 9, 7, k as u64);
            // Upper-case extensions count; other files are ignored; nested
            // folders are walked in sorted order.
            img.save_with_format(dir.join("x.JPG"), ImageFormat::Jpeg)
                .unwrap();
            img.save_with_format(dir.join("W.Png"), ImageFormat::Png)
                .unwrap();
            img.save_with_format(dir.join("sub/a.jpeg"), ImageFormat::Jpeg)
                .unwrap();
            img.save_with_format(dir.join("Sub2/b.png"), ImageFormat::Png)
                .unwrap();
            fs::write(dir.join("notes.txt"), "not an image").unwrap();
        }
    }
    let ours = index_folder(root, false).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&run_python(&py, &["list", root.to_str().unwrap()])).unwrap();
    let want_classes: Vec<String> =
        serde_json::from_value(theirs["train"]["classes"].clone()).unwrap();
    assert_eq!(ours.classes, want_classes);
    assert_eq!(ours.classes, ["B", "Z", "_x", "a", "b", "ä"]);
    for (split, items) in [("train", &ours.train), ("val", &ours.test)] {
        let samples: Vec<(String, i64)> =
            serde_json::from_value(theirs[split]["samples"].clone()).unwrap();
        let mine: Vec<(String, i64)> = items
            .iter()
            .map(|i| (i.path.to_str().unwrap().to_string(), i.label))
            .collect();
        assert_eq!(mine, samples, "{split}");
    }
    assert_eq!(ours.train.len(), 4 * classes.len());
}

/// The evaluation transform against torchvision's `Resize` +
/// `CenterCrop` on PIL. On PNG files both sides decode the same pixels, so
/// only the resampling is compared: it must agree to within one level
/// (Pillow's and fast_image_resize's fixed-point rounding), on average by
/// less than 0.3. On JPEG files the decoders differ as well (zune-jpeg
/// against libjpeg-turbo: IDCT and chroma upsampling rounding): within 4
/// levels, on average less than 0.5.
#[test]
fn eval_transform_matches_torchvision() {
    let Some(py) = python("eval_transform_matches_torchvision") else {
        return;
    };
    for (size, mixed) in [(64usize, true), (224, true), (32, false)] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Landscape and portrait sources, up- and downscaled.
        write_folder(root, 2, 8, 150, 97, mixed);
        let dir = root.join("val/class1");
        picture(1, 2, 61, 230, 9)
            .save_with_format(dir.join("portrait.png"), ImageFormat::Png)
            .unwrap();
        picture(1, 2, 301, 41, 9)
            .save_with_format(dir.join("wide.jpg"), ImageFormat::Jpeg)
            .unwrap();
        let data = Dataset::load_with(root.to_str().unwrap(), 0, &options(size)).unwrap();
        let folder = data.folder.as_ref().unwrap();
        let n = folder.test.len();
        let (ours, labels) = data.split_bytes(Split::Test, 0, n).unwrap();
        assert_eq!(labels, data.test.labels);
        let out = root.join("ref.bin");
        run_python(
            &py,
            &[
                "eval",
                root.to_str().unwrap(),
                &size.to_string(),
                out.to_str().unwrap(),
            ],
        );
        let theirs = fs::read(&out).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let len = 3 * size * size;
        for (i, item) in folder.test.iter().enumerate() {
            let (a, b) = (&ours[i * len..][..len], &theirs[i * len..][..len]);
            let diffs: Vec<i32> = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| (x as i32 - y as i32).abs())
                .collect();
            let max = *diffs.iter().max().unwrap();
            let mean = diffs.iter().sum::<i32>() as f64 / len as f64;
            let png = item.path.extension().unwrap() == "png";
            // Measured: PNG max 1, mean up to 0.23 (the two resamplers
            // round their intermediate rows differently); JPEG max 2, mean
            // up to 0.2.
            let (max_ok, mean_ok) = if png { (1, 0.3) } else { (4, 0.5) };
            assert!(
                max <= max_ok && mean < mean_ok,
                "{}: max {max}, mean {mean}",
                item.path.display()
            );
        }
    }
}

#[test]
fn training_batches_are_deterministic_per_seed_and_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), 3, 8, 40, 30, true);
    let load = |workers: usize| {
        let opts = FolderOptions {
            workers,
            prefetch: 1,
            ..options(24)
        };
        Dataset::load_with(tmp.path().to_str().unwrap(), 7, &opts).unwrap()
    };
    let (one, three) = (load(1), load(3));
    let epoch = |d: &Dataset, seed: u64, e: u64| -> (Vec<f32>, Vec<i64>) {
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        for b in d.train_batches(5, seed, e, Device::Cpu) {
            assert_eq!(b.images.size()[1..], [3, 24, 24]);
            px.extend(tensor_vec(&b.images));
            lb.extend(Vec::<i64>::try_from(&b.labels).unwrap());
        }
        d.check().unwrap();
        (px, lb)
    };
    let a = epoch(&one, 1, 0);
    assert_eq!(a.1.len(), one.train.len());
    assert_eq!(a, epoch(&three, 1, 0), "thread count changed the batches");
    assert_eq!(a, epoch(&one, 1, 0));
    assert_ne!(a.0, epoch(&one, 1, 1).0, "epochs must differ");
    assert_ne!(a.0, epoch(&one, 2, 0).0, "seeds must differ");
    // Evaluation is the deterministic transform in file order.
    let ev = |d: &Dataset| -> Vec<f32> {
        d.eval_batches(Split::Val, 4, Device::Cpu)
            .flat_map(|b| tensor_vec(&b.images))
            .collect()
    };
    assert_eq!(ev(&one), ev(&three));
    // The validation split is the same for every training seed and is
    // disjoint from training: 10% of 24 files.
    assert_eq!((one.train.len(), one.val.len(), one.test.len()), (22, 2, 6));
    let f = one.folder.as_ref().unwrap();
    assert!(f.val.iter().all(|v| !f.train.contains(v)));
}

#[test]
fn normalize_data_uses_the_training_split_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), 2, 6, 30, 20, true);
    let p = tmp.path().to_str().unwrap();
    let opts = |workers| FolderOptions {
        normalize: Normalize::Data,
        workers,
        ..options(16)
    };
    let d = Dataset::load_with(p, 0, &opts(1)).unwrap();
    assert_eq!(d.mean, Dataset::load_with(p, 0, &opts(2)).unwrap().mean);
    let n = d.train.len();
    let (bytes, _) = d.split_bytes(Split::Train, 0, n).unwrap();
    let plane = 16 * 16;
    for c in 0..3 {
        let vals: Vec<f64> = bytes
            .chunks_exact(3 * plane)
            .flat_map(|img| {
                img[c * plane..(c + 1) * plane]
                    .iter()
                    .map(|&v| v as f64 / 255.0)
            })
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let s = (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64).sqrt();
        assert!(
            (d.mean[c] as f64 - m).abs() < 1e-5,
            "{c}: {} vs {m}",
            d.mean[c]
        );
        assert!(
            (d.std[c] as f64 - s).abs() < 1e-5,
            "{c}: {} vs {s}",
            d.std[c]
        );
    }
    // ImageNet's statistics otherwise.
    let d = Dataset::load_with(p, 0, &options(16)).unwrap();
    assert_eq!(d.mean, [0.485, 0.456, 0.406]);
}

/// A JPEG whose entropy-coded data stops halfway: the header is intact, so
/// only decoding finds the damage.
fn truncate(path: &Path) {
    let bytes = fs::read(path).unwrap();
    fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn unreadable_images_are_named_or_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_folder(root, 2, 8, 40, 30, false);
    let p = root.to_str().unwrap();
    // Not an image at all: found when the folder is listed.
    let garbage = root.join("train/class0/garbage.jpg");
    fs::write(&garbage, "<html>not found</html>").unwrap();
    match Dataset::load_with(p, 0, &options(16)) {
        Err(Error::BadImage { path, msg }) => {
            assert_eq!(path, garbage);
            assert!(msg.contains("neither a JPEG nor a PNG"), "{msg}");
        }
        other => panic!("expected a bad image, got {other:?}"),
    }
    fs::remove_file(&garbage).unwrap();
    // A format torchvision loads but the trainer does not decode: an error
    // rather than a silent difference in the sample list.
    let webp = root.join("train/class1/photo.WebP");
    fs::write(&webp, "RIFF....WEBP").unwrap();
    match Dataset::load_with(p, 0, &options(16)) {
        Err(Error::BadImage { path, msg }) => {
            assert_eq!(path, webp);
            assert!(msg.contains("convert it to JPEG or PNG"), "{msg}");
        }
        other => panic!("expected a bad image, got {other:?}"),
    }
    fs::remove_file(&webp).unwrap();
    // A damaged JPEG in the test split: found when its batch is decoded;
    // the batches end and `check` names the file.
    let damaged = root.join("val/class1/001.jpg");
    truncate(&damaged);
    let d = Dataset::load_with(p, 0, &options(16)).unwrap();
    let got: usize = d
        .eval_batches(Split::Test, 2, Device::Cpu)
        .map(|b| b.labels.size()[0] as usize)
        .sum();
    assert!(got < d.test.len());
    match d.check() {
        Err(Error::BadImage { path, .. }) => assert_eq!(path, damaged),
        other => panic!("expected a bad image, got {other:?}"),
    }
    // With skipping, both are left out and counted once each.
    fs::write(&garbage, "<html>not found</html>").unwrap();
    let opts = FolderOptions {
        skip_bad_images: true,
        ..options(16)
    };
    let d = Dataset::load_with(p, 0, &opts).unwrap();
    for _ in 0..2 {
        let got: usize = d
            .eval_batches(Split::Test, 2, Device::Cpu)
            .map(|b| b.labels.size()[0] as usize)
            .sum();
        assert_eq!(got, d.test.len() - 1);
        d.check().unwrap();
    }
    assert_eq!(d.skipped_images(), 2);

    // The command line: one line naming the file, exit status 2.
    fs::remove_file(&garbage).unwrap();
    let out = root.join("run");
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--data",
            p,
            "--model",
            "cnn",
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(out.to_str().unwrap().to_string());
        a
    };
    let a = args(&out);
    let res = trainer(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains(damaged.to_str().unwrap()), "{err}");
    assert!(!out.join("final.safetensors").exists());
    let out2 = root.join("run2");
    let mut a = args(&out2);
    a.push("--skip-bad-images".into());
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let metrics = fs::read_to_string(out2.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"skipped_images\":1"), "{metrics}");
    let summary = fs::read_to_string(out2.join("data.json")).unwrap();
    assert!(summary.contains("001.jpg"), "{summary}");
}

#[test]
fn resnet18_learns_a_four_class_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    write_folder(&root, 4, 32, 72, 56, true);
    let out = tmp.path().join("run");
    let line = ok(&[
        "train",
        "--data",
        root.to_str().unwrap(),
        "--model",
        "resnet18",
        "--image-size",
        "64",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let acc = m["test_acc"].as_f64().unwrap();
    // Chance is 0.25.
    let metrics = fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(acc >= 0.7, "test accuracy {acc}; epochs:\n{metrics}");
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("data.json")).unwrap()).unwrap();
    assert_eq!(summary["classes"][3], "class3");
    assert_eq!(summary["image_size"], 64);
    // `trainer eval` of the checkpoint on the folder, clean and under a
    // corruption at the folder's image size, gives the run's accuracy.
    let ck = out.join("final.safetensors");
    let eval = ok(&[
        "eval",
        "--model",
        "resnet18",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--image-size",
        "64",
        "--device",
        "cpu",
        "--corruptions",
        "contrast",
        "--severity",
        "1",
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    assert!((e["top1"].as_f64().unwrap() - acc).abs() < 1e-9, "{eval}");
    assert!(
        e["corruptions"]["contrast"]["1"].as_f64().is_some(),
        "{eval}"
    );
}

#[test]
fn sms_runs_end_to_end_on_a_folder_with_corruptions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    write_folder(&root, 3, 12, 40, 30, true);
    let out = tmp.path().join("sms");
    ok(&[
        "sms",
        "--data",
        root.to_str().unwrap(),
        "--model",
        "cnn",
        "--image-size",
        "24",
        "--normalize",
        "data",
        "--sparsity",
        "0.5",
        "--phases",
        "1",
        "--candidates",
        "2",
        "--pretrain-epochs",
        "1",
        "--epochs-per-phase",
        "0.5",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--corruptions",
        "gaussian_noise,contrast",
        "--severity",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let phase = &report["phases"][0];
    assert!(phase["soup_ood_acc"].as_f64().is_some(), "{report}");
    assert!(phase["soup_test_acc"].as_f64().unwrap() > 0.5, "{report}");
    assert!(out.join("phase-1/soup.safetensors").exists());
    // The folder's own statistics are recorded with the dense run.
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("dense/data.json")).unwrap()).unwrap();
    assert_eq!(summary["normalize"], "data");
    assert_ne!(summary["mean"][0].as_f64().unwrap(), 0.485f32 as f64);
}

/// Corruptions of an image folder's test split apply to the evaluation
/// transform at the folder's image size, in colour.
#[test]
fn corruptions_apply_at_the_folder_image_size() {
    use trainer::robust::{corrupted_batches, Corruption};
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), 2, 8, 50, 40, true);
    let d = Dataset::load_with(tmp.path().to_str().unwrap(), 0, &options(20)).unwrap();
    let clean: Vec<Tensor> = d
        .eval_batches(Split::Test, 3, Device::Cpu)
        .map(|b| b.images)
        .collect();
    let clean = Tensor::cat(&clean, 0);
    let c = Corruption::from_name("contrast").unwrap();
    let sev0: Vec<Tensor> = corrupted_batches(&d, c, 0, 3, None, Device::Cpu)
        .map(|b| b.images)
        .collect();
    let sev0 = Tensor::cat(&sev0, 0);
    assert_eq!(sev0.size(), [4, 3, 20, 20]);
    // Severity 0 is the clean split; a real corruption changes it.
    assert_eq!(tensor_vec(&sev0), tensor_vec(&clean));
    let sev3: Vec<Tensor> = corrupted_batches(&d, c, 3, 3, None, Device::Cpu)
        .map(|b| b.images)
        .collect();
    let sev3 = Tensor::cat(&sev3, 0);
    assert_ne!(tensor_vec(&sev3), tensor_vec(&clean));
    d.check().unwrap();
}
