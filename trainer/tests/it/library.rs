//! The library API the sparse-model-soup loop uses: masks held by the
//! after-step hook, batch-norm recalibration, checkpoints, prunable names.

use std::collections::HashMap;

use indicatif::ProgressBar;
use tch::{Device, Kind, Tensor};
use trainer::{
    recalibrate_bn, train_steps, Arch, Batch, Dataset, Mode, Model, ModelSpec, Sgd, SgdConfig,
    Split,
};

fn tiny_data() -> (tempfile::TempDir, Dataset) {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_idx_folder(tmp.path(), 80, 20, 8);
    let data = Dataset::load(tmp.path().to_str().unwrap(), 0).unwrap();
    (tmp, data)
}

fn cnn(data: &Dataset) -> Model {
    tch::manual_seed(3);
    Model::new(
        Arch::Cnn,
        ModelSpec {
            num_classes: 4,
            input: [1, 8, 8],
        },
        Device::Cpu,
    )
    .tap(|m| assert_eq!(m.spec.num_classes as usize, data.num_classes))
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl Tap for Model {}

#[test]
fn hook_after_every_step_keeps_pruned_weights_at_zero() {
    let (_tmp, data) = tiny_data();
    let model = cnn(&data);
    // Prune half of conv2 by hand; the hook re-applies the mask.
    let w = model.state_dict()["conv2.weight"].shallow_clone();
    let mask = Tensor::rand_like(&w).gt(0.5).to_kind(Kind::Float);
    tch::no_grad(|| {
        let _ = w.shallow_clone().g_mul_(&mask);
    });
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    let mut calls = 0;
    let hook = |opt: &mut Sgd| {
        calls += 1;
        let p = opt
            .params
            .iter_mut()
            .find(|p| p.name == "conv2.weight")
            .unwrap();
        tch::no_grad(|| {
            let _ = p.tensor.g_mul_(&mask);
        });
        Ok(())
    };
    let stream = data.train_stream(16, 7, Device::Cpu).take(9);
    let stats = train_steps(
        &model,
        &mut opt,
        stream,
        100,
        |it| 0.01 * (it - 99) as f64,
        hook,
        &ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!((stats.iterations, calls), (9, 9));
    assert!((stats.last_lr - 0.09).abs() < 1e-12);
    let zeros_now = w.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    let pruned = mask.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(zeros_now, pruned);
    assert!(
        !model.state_dict()["conv1.weight"]
            .eq(0.0)
            .any()
            .int64_value(&[])
            != 0
    );
}

#[test]
fn recalibration_is_a_cumulative_average_of_batch_statistics() {
    let (_tmp, data) = tiny_data();
    let model = cnn(&data);
    let batches: Vec<Batch> = data.train_batches(20, 0, 0, Device::Cpu).take(3).collect();
    let used = recalibrate_bn(
        &model,
        batches.iter().map(|b| Batch {
            images: b.images.copy(),
            labels: b.labels.copy(),
        }),
    );
    assert_eq!(used, 3);
    let sd = model.state_dict();
    let w = &sd["conv1.weight"];
    let per_batch: Vec<(Tensor, Tensor)> = batches
        .iter()
        .map(|b| {
            let y = b.images.conv2d::<Tensor>(w, None, [1], [1], [1], 1);
            (
                y.mean_dim([0, 2, 3].as_slice(), false, Kind::Float),
                y.var_dim([0, 2, 3].as_slice(), true, false),
            )
        })
        .collect();
    let mean = per_batch
        .iter()
        .map(|(m, _)| m.shallow_clone())
        .reduce(|a, b| a + b)
        .unwrap()
        / 3.0;
    let var = per_batch
        .iter()
        .map(|(_, v)| v.shallow_clone())
        .reduce(|a, b| a + b)
        .unwrap()
        / 3.0;
    assert!(sd["bn1.running_mean"].allclose(&mean, 1e-4, 1e-5, false));
    assert!(sd["bn1.running_var"].allclose(&var, 1e-4, 1e-5, false));
    assert_eq!(sd["bn1.num_batches_tracked"].int64_value(&[]), 3);
}

#[test]
fn save_and_load_round_trip_strictly() {
    let (tmp, data) = tiny_data();
    let model = cnn(&data);
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 0.0));
    let no_hook = |_: &mut Sgd| Ok(());
    train_steps(
        &model,
        &mut opt,
        data.train_batches(16, 0, 0, Device::Cpu),
        0,
        |_| 0.1,
        no_hook,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let path = tmp.path().join("m.safetensors");
    model.save(&path).unwrap();
    tch::manual_seed(99);
    let other = Model::new(Arch::Cnn, model.spec, Device::Cpu);
    other.load(&path).unwrap();
    let (a, b): (HashMap<_, _>, HashMap<_, _>) = (
        model.state_dict().into_iter().collect(),
        other.state_dict().into_iter().collect(),
    );
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after a round trip");
    }
    let batch = data
        .eval_batches(Split::Test, 20, Device::Cpu)
        .next()
        .unwrap();
    let (la, lb) = tch::no_grad(|| {
        (
            model.forward(&batch.images, Mode::Eval),
            other.forward(&batch.images, Mode::Eval),
        )
    });
    assert!(
        la.equal(&lb),
        "logits differ by {}",
        f64::try_from((&la - &lb).abs().max()).unwrap()
    );
    // A model of another class count does not accept the file.
    let wrong = Model::new(
        Arch::Cnn,
        ModelSpec {
            num_classes: 5,
            input: [1, 8, 8],
        },
        Device::Cpu,
    );
    let err = wrong.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("fc.bias") && err.contains("shape [4]"),
        "{err}"
    );
}

#[test]
fn prunable_names_are_conv_and_linear_weights() {
    let model = Model::new(
        Arch::ResNet20,
        ModelSpec {
            num_classes: 10,
            input: [3, 32, 32],
        },
        Device::Cpu,
    );
    let names = model.prunable_names();
    // 19 convolutions, 2 projection shortcuts and the classifier.
    assert_eq!(names.len(), 22, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".weight")
        && !n.contains("bn")
        && !n.ends_with("downsample.1.weight")));
    assert!(
        names.contains(&"fc.weight".to_string())
            && names.contains(&"layer3.0.downsample.0.weight".to_string())
    );
}
