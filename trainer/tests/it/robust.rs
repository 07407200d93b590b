//! Robustness evaluation: corruptions on a trained model, the CIFAR-10-C
//! folder reader through `trainer eval --ood`, and the eval command's flags.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use indicatif::ProgressBar;
use tch::Device;
use trainer::data::{Format, FASHION_MNIST_DIR};
use trainer::robust::EvalSummary;
use trainer::{
    evaluate_ood, train_steps, Arch, Dataset, Model, ModelSpec, OodSpec, Sgd, SgdConfig,
};

fn trainer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("trainer runs")
}

/// Fashion-MNIST, or `None` (with a notice) where it is not installed; a
/// failure instead in the full environment (`SOUP_REQUIRE_PYTHON=1`).
fn fashion(test: &str) -> Option<Dataset> {
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        assert!(
            std::env::var("SOUP_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "{test}: {FASHION_MNIST_DIR} is missing; scripts/setup.sh installs it"
        );
        eprintln!("skipping {test}: {FASHION_MNIST_DIR} is missing");
        return None;
    }
    Some(Dataset::load("fashion-mnist", 0).unwrap())
}

#[test]
fn accuracy_falls_with_severity_on_a_trained_model() {
    let Some(full) = fashion("accuracy_falls_with_severity_on_a_trained_model") else {
        return;
    };
    // 3,000 training and 500 test images keep this to seconds.
    let train: Vec<usize> = (0..3000).collect();
    let test: Vec<usize> = (0..500).collect();
    let data = Dataset::from_parts(
        "fashion-mnist subset".into(),
        Format::Idx,
        full.train.select(&train),
        full.test.select(&test),
        0,
    )
    .unwrap();
    tch::manual_seed(0);
    let spec = ModelSpec {
        num_classes: 10,
        input: [1, 28, 28],
    };
    let model = Model::new(Arch::Cnn, spec, Device::Cpu);
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    let batches = (0..2).flat_map(|e| data.train_batches(64, 0, e, Device::Cpu));
    train_steps(
        &model,
        &mut opt,
        batches,
        0,
        |_| 0.1,
        |_| Ok(()),
        &ProgressBar::hidden(),
    )
    .unwrap();

    let spec = OodSpec {
        severities: vec![1, 3, 5],
        ..OodSpec::default()
    };
    let r = evaluate_ood(&model, &data, &spec, Device::Cpu, 250).unwrap();
    assert!(r.test_acc > 0.6, "the model did not learn: {}", r.test_acc);
    // Every grey corruption, not saturate.
    assert_eq!(r.corruptions.len(), 12, "{:?}", r.corruptions.keys());
    let mean_at = |s: u8| -> f64 {
        r.corruptions.values().map(|per| per[&s]).sum::<f64>() / r.corruptions.len() as f64
    };
    eprintln!(
        "clean {:.4}; mean at severity 1 {:.4}, 3 {:.4}, 5 {:.4}",
        r.test_acc,
        mean_at(1),
        mean_at(3),
        mean_at(5)
    );
    for (name, per) in &r.corruptions {
        eprintln!("{name:<16} {:.3} {:.3} {:.3}", per[&1], per[&3], per[&5]);
    }
    assert!(mean_at(1) > mean_at(3) && mean_at(3) > mean_at(5));
    assert!(mean_at(1) <= r.test_acc + 0.01);
    assert!(mean_at(5) < r.test_acc - 0.1);
    for name in [
        "gaussian_noise",
        "impulse_noise",
        "contrast",
        "fog",
        "zoom_blur",
    ] {
        let per = &r.corruptions[name];
        assert!(per[&5] < per[&1], "{name}: {per:?}");
    }
    let all: Vec<f64> = r
        .corruptions
        .values()
        .flat_map(|p| p.values().copied())
        .collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((r.ood_acc.unwrap() - mean).abs() < 1e-12);
    // The same evaluation again, in other batches, gives the same numbers.
    let some = OodSpec {
        corruptions: trainer::robust::CorruptionChoice::Named(vec![
            "shot_noise".into(),
            "fog".into(),
        ]),
        severities: vec![5],
        ..OodSpec::default()
    };
    let again = evaluate_ood(&model, &data, &some, Device::Cpu, 100).unwrap();
    assert_eq!(again.test_acc, r.test_acc);
    for name in ["shot_noise", "fog"] {
        assert_eq!(again.corruptions[name][&5], r.corruptions[name][&5]);
    }
}

/// Writes a version-1 `.npy` file.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

#[test]
fn eval_reads_a_cifar_c_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    fs::create_dir(&data).unwrap();
    crate::write_cifar10_folder(&data, 20);
    let ck = tmp.path().join("cnn.safetensors");
    let out = trainer(&[
        "init",
        "--model",
        "cnn",
        "--num-classes",
        "10",
        "--input",
        "3x32x32",
        "--seed",
        "3",
        "-o",
        ck.to_str().unwrap(),
    ]);
    assert!(out.status.success());

    // A CIFAR-10-C folder in the official layout: severity 1 is the test
    // split itself (HWC), severity 2 its negative, 3 to 5 black images.
    let loaded = Dataset::load(data.to_str().unwrap(), 0).unwrap();
    let n = loaded.test.len();
    let mut hwc = Vec::new();
    for i in 0..n {
        let img = loaded.test.image(i);
        for p in 0..1024 {
            hwc.extend((0..3).map(|c| img[c * 1024 + p]));
        }
    }
    let mut rows = hwc.clone();
    rows.extend(hwc.iter().map(|v| 255 - v));
    rows.resize(5 * n * 3072, 0);
    let ood = tmp.path().join("CIFAR-10-C");
    fs::create_dir(&ood).unwrap();
    write_npy(&ood.join("fog.npy"), "|u1", &[5 * n, 32, 32, 3], &rows);
    write_npy(&ood.join("contrast.npy"), "|u1", &[5 * n, 32, 32, 3], &rows);
    let labels: Vec<u8> = (0..5)
        .flat_map(|_| loaded.test.labels.iter().map(|&l| l as u8))
        .collect();
    write_npy(&ood.join("labels.npy"), "|u1", &[5 * n], &labels);

    let eval = |extra: &[&str]| {
        let mut args = crate::eval_cnn_args(&ck, &data, &["--json", "--batch-size", "7"]);
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let out = eval(&["--ood", ood.to_str().unwrap(), "--severity", "all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "balanced_accuracy",
            "corruptions",
            "ece",
            "loss",
            "mce",
            "ood_acc",
            "samples",
            "test_acc",
            "top1",
            "worst_class_accuracy"
        ]
    );
    let r: EvalSummary = serde_json::from_value(json).unwrap();
    assert_eq!(r.ood.corruptions.len(), 2);
    let fog = &r.ood.corruptions["fog"];
    assert_eq!(fog.keys().copied().collect::<Vec<u8>>(), [1, 2, 3, 4, 5]);
    // Severity 1 holds the clean test images: the same accuracy exactly.
    assert_eq!(fog[&1], r.test.top1);
    assert_eq!(r.ood.test_acc, r.test.top1);
    let mean: f64 = r
        .ood
        .corruptions
        .values()
        .flat_map(|p| p.values())
        .sum::<f64>()
        / 10.0;
    assert!((r.ood.ood_acc.unwrap() - mean).abs() < 1e-12);

    // Named files, one severity.
    let out = eval(&[
        "--ood",
        ood.to_str().unwrap(),
        "--corruptions",
        "contrast",
        "--severity",
        "2",
    ]);
    let r: EvalSummary = serde_json::from_slice(&out.stdout).unwrap();
    let want = BTreeMap::from([("contrast".to_string(), BTreeMap::from([(2u8, fog[&2])]))]);
    assert_eq!(r.ood.corruptions, want);

    // Bad folders: a missing file, labels that do not match, a bad severity.
    let out = eval(&["--ood", ood.to_str().unwrap(), "--corruptions", "snow"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("snow.npy") && err.contains("no such corruption file"),
        "{err}"
    );
    write_npy(&ood.join("labels.npy"), "|u1", &[5 * n - 5], &labels[5..]);
    let out = eval(&["--ood", ood.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("contrast.npy") && err.contains("labels.npy has"),
        "{err}"
    );
    let out = eval(&["--severity", "6"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad corruption severity"));
    let out = eval(&["--corruptions", "gaussian_noise,frost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown corruption \"frost\""));
}

#[test]
fn eval_generates_corruptions_by_default_and_none_turns_them_off() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    fs::create_dir(&data).unwrap();
    crate::write_cifar10_folder(&data, 10);
    let ck = tmp.path().join("cnn.safetensors");
    assert!(trainer(&[
        "init",
        "--model",
        "cnn",
        "--num-classes",
        "10",
        "--input",
        "3x32x32",
        "-o",
        ck.to_str().unwrap(),
    ])
    .status
    .success());
    let eval = |extra: &[&str]| -> EvalSummary {
        let mut args = crate::eval_cnn_args(&ck, &data, &["--json"]);
        args.extend_from_slice(extra);
        let out = trainer(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Colour data: all 13 corruptions, severity 3.
    let r = eval(&[]);
    assert_eq!(r.ood.corruptions.len(), 13);
    assert!(r
        .ood
        .corruptions
        .values()
        .all(|p| p.keys().eq([3u8].iter())));
    assert!(r.ood.corruptions.contains_key("saturate"));
    // The same command gives the same numbers.
    assert_eq!(eval(&[]), r);
    let none = eval(&["--corruptions", "none"]);
    assert!(none.ood.corruptions.is_empty() && none.ood.ood_acc.is_none());
    assert_eq!(none.test, r.test);
}
