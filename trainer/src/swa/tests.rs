//! SWA against direct computations: the schedule's iterates, the average
//! as the mean of saved iterates, and masked weights kept at zero.

use tch::{Device, Kind, Tensor};

use super::*;
use crate::arch::ModelSpec;
use crate::data::Batch;
use crate::model::Model;
use crate::optim::SgdConfig;
use crate::pipeline::PruneMask;
use crate::train::train_loop;

#[test]
fn schedule_takes_the_last_iterates_spaced_back_from_the_end() {
    let taken = |s: SwaSchedule| (1..=s.total).filter(|&k| s.takes(k)).collect::<Vec<_>>();
    let s = SwaSchedule::new(10, 0.5, 2).unwrap();
    assert_eq!(taken(s), [6, 8, 10]);
    assert_eq!(s.count(), 3);
    let s = SwaSchedule::new(10, 0.5, 1).unwrap();
    assert_eq!((taken(s), s.count()), (vec![6, 7, 8, 9, 10], 5));
    // A spacing longer than the stretch keeps the last iterate only.
    let s = SwaSchedule::new(10, 0.75, 100).unwrap();
    assert_eq!((taken(s), s.count()), (vec![10], 1));
    // From the start: every iterate.
    assert_eq!(SwaSchedule::new(4, 0.0, 1).unwrap().count(), 4);
    for (from, every) in [(1.0, 1), (-0.1, 1), (f64::NAN, 1), (0.5, 0)] {
        assert!(SwaSchedule::new(10, from, every).is_err(), "{from} {every}");
    }
}

/// Enforces a mask after each step, keeps a copy of every parameter after
/// each step, and feeds the SWA average: what the sparse retraining loop
/// with SWA does, with the iterates kept for checking.
struct Recorder {
    mask: PruneMask,
    swa: Swa,
    iterates: Vec<Vec<Tensor>>,
}

impl Hooks for Recorder {
    fn after_update(&mut self, it: u64, opt: &mut Sgd) -> Result<()> {
        self.mask.apply(opt, true);
        self.iterates.push(
            opt.params
                .iter()
                .map(|p| p.tensor.detach().copy())
                .collect(),
        );
        self.swa.after_update(it, opt)
    }
}

#[test]
fn average_is_the_mean_of_the_taken_iterates_and_keeps_the_mask() {
    tch::manual_seed(3);
    let spec = ModelSpec {
        num_classes: 4,
        input: [1, 8, 8],
    };
    let model = Model::new("mlp".parse().unwrap(), spec, Device::Cpu);
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
    // Prune every other weight of the prunable tensors.
    let pruned = model.prunable_names();
    tch::no_grad(|| {
        for p in opt.params.iter_mut().filter(|p| pruned.contains(&p.name)) {
            let n = p.tensor.numel() as i64;
            let drop = (Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(2))
                .eq(0)
                .view(p.tensor.size().as_slice());
            let _ = p.tensor.masked_fill_(&drop, 0.0);
        }
    });
    let mask = PruneMask::of_zeros(&opt, &pruned);
    let (total, first) = (12u64, 5u64);
    let schedule = SwaSchedule::new(total, 0.5, 2).unwrap();
    let batches: Vec<Batch> = (0..total)
        .map(|_| Batch {
            images: Tensor::randn([8, 1, 8, 8], (Kind::Float, Device::Cpu)),
            labels: Tensor::randint(4, [8], (Kind::Int64, Device::Cpu)),
        })
        .collect();
    // The loop numbers its iterations from `first`, as a loop inside a
    // longer schedule does.
    let mut hooks = Recorder {
        mask,
        swa: Swa::new(schedule, first),
        iterates: Vec::new(),
    };
    let bar = indicatif::ProgressBar::hidden();
    train_loop(
        &model,
        &mut opt,
        batches.into_iter(),
        first,
        |_| 0.05,
        &mut hooks,
        None,
        &bar,
    )
    .unwrap();
    assert_eq!(hooks.swa.count(), 3);
    let taken: Vec<&Vec<Tensor>> = (1..=total)
        .filter(|&k| schedule.takes(k))
        .map(|k| &hooks.iterates[k as usize - 1])
        .collect();
    assert_eq!(taken.len(), 3);
    hooks.swa.deliver(&mut opt).unwrap();
    for (i, p) in opt.params.iter().enumerate() {
        let mean = taken
            .iter()
            .map(|it| it[i].to_kind(Kind::Double))
            .reduce(|a, b| a + b)
            .unwrap()
            / taken.len() as f64;
        let diff = f64::try_from((p.tensor.to_kind(Kind::Double) - &mean).abs().max()).unwrap();
        assert!(diff < 1e-6, "{}: {diff}", p.name);
        // The average is not the last iterate.
        let last = &hooks.iterates[total as usize - 1][i];
        assert!(!p.tensor.equal(last), "{}", p.name);
    }
    for (i, drop) in &hooks.mask.drop {
        let w = &opt.params[*i].tensor;
        let kept = w.masked_select(drop);
        assert_eq!(kept.numel() * 2, w.numel());
        assert_eq!(
            f64::try_from(kept.abs().max()).unwrap(),
            0.0,
            "{}",
            opt.params[*i].name
        );
        // And nothing else is zero.
        assert_eq!(
            i64::try_from(w.eq(0.0).sum(Kind::Int64)).unwrap(),
            kept.numel() as i64
        );
    }
}

#[test]
fn an_empty_average_is_an_error() {
    let spec = ModelSpec {
        num_classes: 2,
        input: [1, 4, 4],
    };
    let model = Model::new("mlp".parse().unwrap(), spec, Device::Cpu);
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 0.0));
    let swa = Swa::new(SwaSchedule::new(4, 0.5, 1).unwrap(), 0);
    assert!(swa.deliver(&mut opt).is_err());
}
