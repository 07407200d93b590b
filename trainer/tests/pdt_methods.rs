//! The pruning-during-training methods on live models: DPF's mask
//! recomputations follow the cubic schedule to within one weight, its
//! dense weights keep values under the mask while training and the
//! delivered model has exact zeros there; a fixed mask survives training.

use indicatif::ProgressBar;
use tch::{Device, Kind, Tensor};
use trainer::data::Batch;
use trainer::methods::dpf::DpfHooks;
use trainer::pdt::{cubic, FixedMask, PruneEvery, Timeline};
use trainer::pipeline::PruneMask;
use trainer::{train_loop, Arch, Model, ModelSpec, Sgd, SgdConfig};

fn model() -> Model {
    tch::manual_seed(7);
    let spec = ModelSpec {
        num_classes: 4,
        input: [1, 28, 28],
    };
    Model::new(Arch::Cnn, spec, Device::Cpu)
}

/// `n` batches of 8 random images with random labels.
fn batches(n: usize) -> impl Iterator<Item = Batch> {
    tch::manual_seed(11);
    (0..n)
        .map(|_| Batch {
            images: Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::randint(4, [8], (Kind::Int64, Device::Cpu)),
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn zeros(t: &Tensor) -> i64 {
    t.eq(0.0).sum(Kind::Int64).int64_value(&[])
}

#[test]
fn dpf_recomputes_on_the_cubic_schedule_and_keeps_dense_weights() {
    let model = model();
    let names = model.prunable_names();
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    // 4 epochs of 16 iterations; pruning from round(6.4) = 6 to 48.
    let t = Timeline::new(4.0, 16, 0.8, 0.1, 0.75, PruneEvery::default());
    assert_eq!((t.t0, t.t1, t.total), (6, 48, 64));
    let mut hooks = DpfHooks::new(t, 16, names.clone(), Vec::new());
    train_loop(
        &model,
        &mut opt,
        batches(64),
        0,
        |_| 0.05,
        &mut hooks,
        Some(16),
        &ProgressBar::hidden(),
    )
    .unwrap();
    // Iteration 0 is before t0 (no mask); then every 16 iterations.
    let its: Vec<u64> = hooks.log.iter().map(|r| r.it).collect();
    assert_eq!(its, vec![16, 32, 48]);
    for r in &hooks.log {
        let want = cubic(0.8, 6, 48, r.it) * r.n as f64;
        assert!(
            (r.zeros as f64 - want).abs() <= 1.0,
            "iteration {}: {} zeros, schedule {want}",
            r.it,
            r.zeros
        );
    }
    assert_eq!(hooks.log[2].target, 0.8);
    // The dense weights kept training: few of them are zero, far fewer
    // than the mask drops.
    let sd = model.state_dict();
    let (z, n) = names.iter().fold((0, 0), |(z, n), name| {
        (z + zeros(&sd[name]), n + sd[name].numel() as i64)
    });
    assert!(z * 100 < n, "{z} of {n} dense weights are zero");
    // Masking them (what the delivered model is) gives exact zeros, the
    // schedule's count of them.
    let mask = PruneMask::select(&opt, &names, &[], 0.8).unwrap();
    mask.apply(&mut opt, false);
    let sd = model.state_dict();
    let z: i64 = names.iter().map(|name| zeros(&sd[name])).sum();
    assert!((z as f64 - 0.8 * n as f64).abs() <= 1.0, "{z} of {n}");
    for (i, drop) in &mask.drop {
        let w = &opt.params[*i].tensor;
        let under = w.masked_select(drop);
        // +0.0 exactly, not -0.0 or a tiny value.
        let bits = Vec::<f32>::try_from(&under).unwrap();
        assert!(bits.iter().all(|v| v.to_bits() == 0));
    }
}

#[test]
fn dpf_forward_sees_masked_weights_and_the_update_reaches_pruned_ones() {
    let model = model();
    let names = model.prunable_names();
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.0, 0.0));
    // Prune from the start to 50% at once (t0 = t1 = 0).
    let t = Timeline::new(1.0, 4, 0.5, 0.0, 0.0, PruneEvery::default());
    let mut hooks = DpfHooks::new(t, 16, names.clone(), Vec::new());
    use trainer::Hooks;
    let before: Vec<Tensor> = opt.params.iter().map(|p| p.tensor.copy()).collect();
    // The mask DPF must use: the dense weights' own, at 50%.
    let mask = PruneMask::select(&opt, &names, &[], 0.5).unwrap();
    hooks.before_forward(0, &mut opt).unwrap();
    for (i, drop) in &mask.drop {
        let w = &opt.params[*i].tensor;
        assert_eq!(
            zeros(&w.masked_select(drop)),
            drop.sum(Kind::Int64).int64_value(&[])
        );
    }
    // Backward at the masked point, then the hook restores the dense
    // weights before the update: the step moves pruned weights too.
    let b = batches(1).next().unwrap();
    let loss = model
        .forward(&b.images, trainer::Mode::Train)
        .cross_entropy_for_logits(&b.labels);
    opt.zero_grad();
    loss.backward();
    hooks.before_update(0, &mut opt).unwrap();
    for (i, drop) in &mask.drop {
        let w = &opt.params[*i].tensor;
        let restored = w.masked_select(drop);
        let original = before[*i].masked_select(drop);
        assert!(
            restored.equal(&original),
            "dense values under the mask were lost"
        );
    }
    opt.set_lr(0.1);
    opt.step();
    let (i, drop) = &mask.drop[0];
    let moved = opt.params[*i]
        .tensor
        .masked_select(drop)
        .ne_tensor(&before[*i].masked_select(drop))
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(moved > 0, "no pruned weight received its gradient");
}

#[test]
fn a_fixed_mask_survives_training_with_momentum() {
    let model = model();
    let names = model.prunable_names();
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    let mask = PruneMask::select(&opt, &names, &[], 0.6).unwrap();
    mask.apply(&mut opt, true);
    let (z0, n) = mask.counts();
    assert!((z0 as f64 - 0.6 * n as f64).abs() <= 1.0);
    let mut hooks = FixedMask {
        mask: PruneMask::of_zeros(&opt, &names),
        momentum: true,
    };
    train_loop(
        &model,
        &mut opt,
        batches(10),
        0,
        |_| 0.1,
        &mut hooks,
        None,
        &ProgressBar::hidden(),
    )
    .unwrap();
    for (i, drop) in &mask.drop {
        let p = &opt.params[*i];
        assert_eq!(
            zeros(&p.tensor.masked_select(drop)),
            drop.sum(Kind::Int64).int64_value(&[])
        );
        let buf = p.momentum_buffer.as_ref().unwrap();
        assert_eq!(
            zeros(&buf.masked_select(drop)),
            drop.sum(Kind::Int64).int64_value(&[])
        );
    }
}
