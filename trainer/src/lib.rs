//! The trainer library: data sets, models with PyTorch `state_dict` names,
//! SGD training, evaluation and batch-norm recalibration on libtorch (tch).
//!
//! The `trainer` binary is a thin layer over this crate; the sparse-model-soup
//! loop builds on the same pieces: build a [`Model`], load or save a
//! checkpoint, [`train_steps`] with a per-iteration learning rate and a hook
//! after each optimizer step (to re-apply masks), [`recalibrate_bn`] and
//! [`evaluate`].
//!
//! ```no_run
//! use trainer::{evaluate, train_steps, Arch, Dataset, Model, ModelSpec, Sgd, SgdConfig, Split};
//! # fn main() -> trainer::Result<()> {
//! let device = tch::Device::Cpu;
//! let data = Dataset::load("fashion-mnist", 0)?;
//! let spec = ModelSpec { num_classes: data.num_classes as i64, input: [1, 28, 28] };
//! tch::manual_seed(0);
//! let model = Model::new("cnn".parse::<Arch>()?, spec, device);
//! let mut opt = Sgd::new(&model.vs, SgdConfig::new(0.9, 5e-4));
//! let batches = data.train_batches(128, 0, 0, device);
//! let no_hook = |_: &mut Sgd| Ok(());
//! train_steps(&model, &mut opt, batches, 0, |_| 0.05, no_hook, &indicatif::ProgressBar::hidden())?;
//! let report = evaluate(&model, data.eval_batches(Split::Test, 500, device))?;
//! println!("test accuracy {:.4}", report.top1);
//! model.save(std::path::Path::new("cnn.safetensors"))?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod arch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod layers;
pub mod methods;
pub mod model;
pub mod optim;
pub mod pdt;
pub mod pipeline;
pub mod plot;
pub mod rng;
pub mod robust;
pub mod run;
pub mod runtime;
pub mod schedule;
pub mod sms;
pub mod status;
pub mod swa;
pub mod train;

pub use arch::{Arch, ModelSpec};
pub use config::{parse_device, TrainArgs, TrainConfig, TrainSettings};
pub use data::{Batch, Dataset, Split};
pub use error::{Error, Result};
pub use eval::{evaluate, recalibrate_bn, EvalReport};
pub use layers::Mode;
pub use methods::{Method, Variant};
pub use model::Model;
pub use optim::{Sgd, SgdConfig};
pub use robust::{evaluate_ood, OodArgs, OodReport, OodSpec};
pub use schedule::{Schedule, ScheduleKind};
pub use train::{train_loop, train_steps, AfterUpdate, Hooks, NoHooks, StepStats};
