//! The `trainer` command line: init, train, eval, errors.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use trainer::robust::EvalSummary;
use trainer::run::EpochMetrics;
use trainer::EvalReport;

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
        "trainer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Arguments of a `cnn` run of `epochs` epochs on `data` into `out`, on the
/// CPU with `threads` threads.
fn run_args(data: &Path, out: &Path, epochs: u32, threads: u32) -> Vec<String> {
    let (epochs, threads) = (epochs.to_string(), threads.to_string());
    [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "cnn",
        "--epochs",
        &epochs,
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--threads",
        &threads,
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Two epochs of `cnn` on `data` with `threads` threads and `extra` flags.
fn tiny_train(data: &Path, out: &Path, threads: u32, extra: &[&str]) {
    let mut args = run_args(data, out, 2, threads);
    args.extend(extra.iter().map(|a| a.to_string()));
    ok(&strs(&args));
}

#[test]
fn train_writes_a_run_folder_and_is_deterministic_on_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    crate::write_idx_folder(&data, 120, 40, 12);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    tiny_train(&data, &a, 1, &[]);
    tiny_train(&data, &b, 1, &[]);
    let (ca, cb) = (
        fs::read(a.join("final.safetensors")).unwrap(),
        fs::read(b.join("final.safetensors")).unwrap(),
    );
    assert_eq!(ca, cb, "two runs with one seed differ");
    // The same holds with two threads: libtorch splits work by thread count,
    // not by timing.
    let (d, e) = (tmp.path().join("d"), tmp.path().join("e"));
    tiny_train(&data, &d, 2, &[]);
    tiny_train(&data, &e, 2, &[]);
    assert_eq!(
        fs::read(d.join("final.safetensors")).unwrap(),
        fs::read(e.join("final.safetensors")).unwrap(),
        "two 2-thread runs with one seed differ"
    );

    let metrics: Vec<EpochMetrics> = fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[1].epoch, 2);
    assert!(metrics[1].train_loss.is_finite() && metrics[1].lr < 0.05);
    let config = fs::read_to_string(a.join("config.toml")).unwrap();
    assert!(
        config.contains("epochs = 2") && config.contains("model = \"cnn\""),
        "{config}"
    );

    // A different seed gives different weights.
    let c = tmp.path().join("c");
    tiny_train(&data, &c, 1, &["--seed", "1"]);
    assert_ne!(ca, fs::read(c.join("final.safetensors")).unwrap());

    // The checkpoint evaluates; the JSON has exactly the documented fields.
    let ck = a.join("final.safetensors");
    let eval = |extra: &[&str]| ok(&crate::eval_cnn_args(&ck, &data, extra));
    let json = eval(&["--json", "--corruptions", "none"]);
    let r: EvalReport = serde_json::from_str::<EvalSummary>(&json).unwrap().test;
    assert_eq!(r.samples, 40);
    assert!((r.top1 - metrics[1].test_acc).abs() < 1e-9);
    let table = eval(&[]);
    assert!(
        table.contains("balanced_accuracy")
            && table.contains("ece_15")
            && table.contains("ood_acc")
            && table.contains("gaussian_noise"),
        "{table}"
    );

    // An existing run is not overwritten.
    let out = trainer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
}

#[test]
fn a_killed_run_resumes_to_the_same_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    crate::write_idx_folder(&data, 120, 40, 12);
    let whole = tmp.path().join("whole");
    ok(&strs(&run_args(&data, &whole, 6, 1)));

    // Kill a second run with SIGKILL once its first epoch is saved.
    let killed = tmp.path().join("killed");
    let args = run_args(&data, &killed, 6, 1);
    let state = killed.join("resume.safetensors");
    crate::support::kill_when(
        Command::new(env!("CARGO_BIN_EXE_trainer")).args(&args),
        &state,
    );
    assert!(!killed.join("final.safetensors").exists());

    // The folder is not reused by accident, nor resumed with other settings.
    let out = trainer(&strs(&args));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume continues it"));
    let mut other = run_args(&data, &killed, 7, 1);
    other.push("--resume".into());
    let out = trainer(&strs(&other));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("epochs = 7 (run: epochs = 6)"), "{err}");
    assert!(
        state.exists(),
        "a refused resume must leave the state alone"
    );

    let mut resume = args.clone();
    resume.push("--resume".into());
    ok(&strs(&resume));
    assert_eq!(
        fs::read(killed.join("final.safetensors")).unwrap(),
        fs::read(whole.join("final.safetensors")).unwrap(),
        "the resumed run trained differently"
    );
    assert!(
        !state.exists(),
        "the state is removed once the run finishes"
    );
    let metrics = |dir: &Path| -> Vec<EpochMetrics> {
        fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| EpochMetrics {
                time_s: 0.0,
                ..serde_json::from_str(l).unwrap()
            })
            .collect()
    };
    assert_eq!(metrics(&killed), metrics(&whole));
    assert_eq!(metrics(&whole).len(), 6);

    // Resuming a finished run reports its last epoch and trains nothing.
    let fin = killed.join("final.safetensors");
    let before = fs::metadata(&fin).unwrap().modified().unwrap();
    let last: EpochMetrics = serde_json::from_str(&ok(&strs(&resume))).unwrap();
    assert_eq!(last.epoch, 6);
    assert_eq!(fs::metadata(&fin).unwrap().modified().unwrap(), before);
}

#[test]
fn flags_override_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    crate::write_idx_folder(&data, 60, 20, 8);
    let cfg = tmp.path().join("c.toml");
    let text = format!(
        "data = {:?}\nmodel = \"mlp\"\nepochs = 3\nbatch_size = 8\nschedule = \"step\"\nwarmup_epochs = 0.5\ndevice = \"cpu\"\n",
        data.to_str().unwrap()
    );
    fs::write(&cfg, text).unwrap();
    let run = tmp.path().join("run");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    let resolved = fs::read_to_string(run.join("config.toml")).unwrap();
    for want in [
        "epochs = 1",
        "model = \"mlp\"",
        "schedule = \"step\"",
        "batch_size = 8",
        "warmup_epochs = 0.5",
    ] {
        assert!(resolved.contains(want), "{want} not in {resolved}");
    }
    assert_eq!(
        fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn init_writes_every_model_with_pytorch_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "resnet20",
            "3x32x32",
            &[
                "layer1.0.conv1.weight",
                "layer2.0.downsample.1.running_var",
                "fc.bias",
            ],
        ),
        ("resnet56", "3x32x32", &["layer3.8.bn2.num_batches_tracked"]),
        (
            "wrn-16-2",
            "3x32x32",
            &[
                "block1.layer.0.convShortcut.weight",
                "block3.layer.1.bn2.weight",
                "bn1.running_mean",
            ],
        ),
        (
            "cnn",
            "1x28x28",
            &["conv3.weight", "bn3.num_batches_tracked", "fc.weight"],
        ),
        ("mlp", "1x28x28", &["fc1.weight", "fc3.bias"]),
    ];
    for (arch, shape, names) in cases {
        let f = tmp.path().join(format!("{arch}.safetensors"));
        ok(&[
            "init",
            "--model",
            arch,
            "--num-classes",
            "10",
            "--input",
            shape,
            "-o",
            f.to_str().unwrap(),
        ]);
        let ck = trainer::checkpoint::load(&f).unwrap();
        let got: std::collections::HashMap<_, _> = ck.tensors.into_iter().collect();
        for n in names {
            assert!(got.contains_key(*n), "{arch}: no {n}");
        }
        for (n, t) in &got {
            if n.ends_with("num_batches_tracked") {
                assert_eq!((t.kind(), t.size()), (tch::Kind::Int64, vec![]), "{n}");
            }
        }
        assert_eq!(ck.metadata["arch"], arch);
    }
}

#[test]
fn bad_inputs_are_errors_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-data");
    let out = trainer(&[
        "train",
        "--data",
        missing.to_str().unwrap(),
        "--out",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-data") && err.contains("no such folder"),
        "{err}"
    );

    let out = trainer(&[
        "init",
        "--model",
        "vgg11",
        "--num-classes",
        "10",
        "-o",
        "x.safetensors",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model"));

    // A checkpoint of another architecture does not load.
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    crate::write_idx_folder(&data, 20, 10, 8);
    let f = tmp.path().join("mlp.safetensors");
    ok(&[
        "init",
        "--model",
        "mlp",
        "--num-classes",
        "4",
        "--input",
        "1x8x8",
        "-o",
        f.to_str().unwrap(),
    ]);
    let out = trainer(&[
        "eval",
        "--model",
        "cnn",
        "--checkpoint",
        f.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trains_resnet20_on_a_cifar10_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar-10-batches-bin");
    fs::create_dir(&data).unwrap();
    crate::write_cifar10_folder(&data, 12);
    let run = tmp.path().join("run");
    let args = [
        "train",
        "--data",
        tmp.path().to_str().unwrap(),
        "--model",
        "resnet20",
        "--epochs",
        "1",
        "--batch-size",
        "27",
        "--device",
        "cpu",
        "--out",
        run.to_str().unwrap(),
    ];
    ok(&args);
    let m: EpochMetrics = serde_json::from_str(
        fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert!(m.train_loss.is_finite());
}
