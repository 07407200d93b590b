//! A dense training run in a run folder: the resolved config, one metrics
//! line per epoch and the final checkpoint.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::arch::{Arch, ModelSpec};
use crate::config::{parse_device, TrainConfig};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::model::Model;
use crate::optim::{Sgd, SgdConfig};
use crate::schedule::Schedule;
use crate::train::train_steps;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Training accuracy (augmented images, training mode).
    pub train_acc: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation top-1 accuracy.
    pub val_acc: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test top-1 accuracy.
    pub test_acc: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch, evaluation included, in seconds.
    pub time_s: f64,
}

/// The file names inside a run folder.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// One JSON object per epoch.
    pub const METRICS: &str = "metrics.jsonl";
    /// Weights and buffers at the end of training.
    pub const FINAL: &str = "final.safetensors";
}

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar per epoch on standard error.
    Bar,
    /// One line per epoch on standard error.
    Lines,
    /// Nothing.
    Quiet,
}

/// Trains `cfg.model` densely on `cfg.data` into the run folder `out`, which
/// must not hold a run already. Returns the last epoch's metrics.
pub fn run_training(cfg: &TrainConfig, out: &Path, progress: Progress) -> Result<EpochMetrics> {
    cfg.validate()?;
    let arch: Arch = cfg.model.parse()?;
    let device = parse_device(&cfg.device)?;
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    if out.join(files::CONFIG).exists() {
        return Err(Error::Config(format!(
            "{} already holds a run",
            out.display()
        )));
    }
    let data = Dataset::load(&cfg.data, cfg.split_seed)?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let config_path = out.join(files::CONFIG);
    fs::write(&config_path, cfg.to_toml()).map_err(|e| Error::io(&config_path, e))?;
    let metrics_path = out.join(files::METRICS);
    let mut metrics = fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;

    tch::manual_seed(cfg.seed as i64);
    let [c, h, w] = data.input_shape().map(|d| d as i64);
    let model = Model::new(
        arch,
        ModelSpec {
            num_classes: data.num_classes as i64,
            input: [c, h, w],
        },
        device,
    );
    let mut opt = Sgd::new(&model.vs, SgdConfig::new(cfg.momentum, cfg.weight_decay));
    let per_epoch = data.train_batches_per_epoch(cfg.batch_size) as u64;
    let schedule = Schedule {
        kind: cfg.schedule,
        peak: cfg.lr,
        total: per_epoch * cfg.epochs,
        warmup: (cfg.warmup_epochs * per_epoch as f64).round() as u64,
    };

    let mut last = None;
    for epoch in 0..cfg.epochs {
        let start = Instant::now();
        let bar = match progress {
            Progress::Bar => ProgressBar::new(per_epoch).with_style(
                ProgressStyle::with_template(
                    "epoch {prefix} {wide_bar} {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .expect("a valid template"),
            ),
            _ => ProgressBar::hidden(),
        };
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let batches = data.train_batches(cfg.batch_size, cfg.seed, epoch, device);
        let stats = train_steps(
            &model,
            &mut opt,
            batches,
            epoch * per_epoch,
            |it| schedule.lr(it),
            |_| Ok(()),
            &bar,
        )?;
        bar.finish_and_clear();
        let val: EvalReport = evaluate(
            &model,
            data.eval_batches(Split::Val, cfg.eval_batch_size, device),
        )?;
        let test = evaluate(
            &model,
            data.eval_batches(Split::Test, cfg.eval_batch_size, device),
        )?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: stats.loss,
            train_acc: stats.accuracy,
            val_loss: val.loss,
            val_acc: val.top1,
            test_loss: test.loss,
            test_acc: test.top1,
            lr: stats.last_lr,
            time_s: start.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&m).expect("metrics serialise");
        writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        if progress != Progress::Quiet {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, val acc {:.4}, test acc {:.4}, lr {:.4}, {:.1}s",
                m.epoch, cfg.epochs, m.train_loss, m.val_acc, m.test_acc, m.lr, m.time_s
            );
        }
        last = Some(m);
    }
    metrics
        .sync_all()
        .map_err(|e| Error::io(&metrics_path, e))?;
    model.save(&out.join(files::FINAL))?;
    Ok(last.expect("at least one epoch"))
}
