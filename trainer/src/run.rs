//! A dense training run in a run folder: the resolved config, one metrics
//! line per epoch and the final checkpoint. Until the run finishes, the
//! folder also holds the model and optimizer state after the last finished
//! epoch, so a killed run can be resumed from there.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::arch::{Arch, ModelSpec};
use crate::checkpoint;
use crate::config::{parse_device, TrainConfig};
use crate::data::Split;
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
    /// Image folders with skipping on: unreadable images skipped so far
    /// (left out when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_images: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The file names inside a run folder.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// One JSON object per epoch.
    pub const METRICS: &str = "metrics.jsonl";
    /// Weights and buffers at the end of training.
    pub const FINAL: &str = "final.safetensors";
    /// Image folders: classes, split sizes, normalisation statistics and
    /// skipped files (rewritten after every epoch).
    pub const DATA: &str = "data.json";
    /// Weights, buffers and momentum after the last finished epoch (metadata
    /// `epoch`), while the run is unfinished.
    pub const RESUME: &str = "resume.safetensors";
}

/// Name prefix of the momentum buffers in [`files::RESUME`].
const MOMENTUM_PREFIX: &str = "momentum/";

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressOutput {
    /// A bar per epoch on standard error.
    Bar,
    /// One line per epoch on standard error.
    Lines,
    /// Nothing.
    Quiet,
}

/// Trains `cfg.train.model` densely on `cfg.train.data` into the run folder `out` and
/// returns the last epoch's metrics.
///
/// A folder that holds a run already is an error, unless `resume` is set:
/// then the run continues after its last finished epoch (or returns at once
/// if it has finished), provided `cfg` matches the folder's `config.toml` in
/// everything but `device` and `threads`. Epoch `e` always sees the same
/// batches and learning rates, so a resumed run trains as an uninterrupted
/// one does.
pub fn run_training(
    cfg: &TrainConfig,
    out: &Path,
    progress: ProgressOutput,
    resume: bool,
) -> Result<EpochMetrics> {
    cfg.validate()?;
    let arch: Arch = cfg.train.model.parse()?;
    let device = parse_device(&cfg.train.device)?;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    let config_path = out.join(files::CONFIG);
    let metrics_path = out.join(files::METRICS);
    let existing = config_path.exists();
    if existing {
        if !resume {
            return Err(Error::Config(format!(
                "{} already holds a run (--resume continues it)",
                out.display()
            )));
        }
        check_same_run(cfg, &TrainConfig::from_file(&config_path)?, &config_path)?;
    }
    let mut history = if existing {
        read_metrics(&metrics_path)?
    } else {
        Vec::new()
    };
    if existing && out.join(files::FINAL).exists() {
        return history
            .pop()
            .ok_or_else(|| Error::Config(format!("{} has no epochs", metrics_path.display())));
    }
    let data = cfg.train.load_data()?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if !existing {
        fs::write(&config_path, cfg.to_toml()).map_err(|e| Error::io(&config_path, e))?;
    }

    tch::manual_seed(cfg.train.seed as i64);
    let [c, h, w] = data.input_shape().map(|d| d as i64);
    let model = Model::new(
        arch,
        ModelSpec {
            num_classes: data.num_classes as i64,
            input: [c, h, w],
        },
        device,
    );
    let mut opt = Sgd::new(
        &model.vs,
        SgdConfig::new(cfg.train.momentum, cfg.train.weight_decay),
    );
    let resume_path = out.join(files::RESUME);
    let done = if existing && resume_path.exists() {
        load_state(&resume_path, &model, &mut opt)?
    } else {
        0
    };
    // Epochs after the saved state are trained again: a kill between writing
    // an epoch's metrics and its state leaves one line too many.
    if (history.len() as u64) < done {
        return Err(Error::Config(format!(
            "{} has {} epochs but {} says {done} finished",
            metrics_path.display(),
            history.len(),
            resume_path.display()
        )));
    }
    history.truncate(done as usize);
    // Replaced atomically, so a kill now cannot lose the finished epochs.
    let kept: String = history
        .iter()
        .map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n")
        .collect();
    checkpoint::write_atomic(&metrics_path, kept.as_bytes())?;
    let mut metrics = fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    if done > 0 && progress != ProgressOutput::Quiet {
        eprintln!(
            "resuming {} after epoch {done}/{}",
            out.display(),
            cfg.epochs
        );
    }
    let per_epoch = data.train_batches_per_epoch(cfg.train.batch_size) as u64;
    let schedule = Schedule {
        kind: cfg.schedule,
        peak: cfg.train.lr,
        total: per_epoch * cfg.epochs,
        warmup: (cfg.train.warmup_epochs * per_epoch as f64).round() as u64,
    };

    let mut last = history.pop();
    for epoch in done..cfg.epochs {
        let start = Instant::now();
        let bar = match progress {
            ProgressOutput::Bar => ProgressBar::new(per_epoch).with_style(
                ProgressStyle::with_template(
                    "epoch {prefix} {wide_bar} {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .expect("a valid template"),
            ),
            _ => ProgressBar::hidden(),
        };
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let batches = data.train_batches(cfg.train.batch_size, cfg.train.seed, epoch, device);
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
        // An image that failed to load ends its batches early; stop before
        // anything trained or measured on the remainder is recorded.
        data.check()?;
        let val: EvalReport = evaluate(
            &model,
            data.eval_batches(Split::Val, cfg.train.eval_batch_size, device),
        )?;
        data.check()?;
        let test = evaluate(
            &model,
            data.eval_batches(Split::Test, cfg.train.eval_batch_size, device),
        )?;
        data.check()?;
        if let Some(folder) = &data.folder {
            let summary =
                serde_json::to_string_pretty(&folder.summary()).expect("summary serialises");
            checkpoint::write_atomic(&out.join(files::DATA), summary.as_bytes())?;
        }
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
            skipped_images: data.skipped_images() as u64,
        };
        let line = serde_json::to_string(&m).expect("metrics serialise");
        writeln!(metrics, "{line}").map_err(|e| Error::io(&metrics_path, e))?;
        metrics
            .sync_data()
            .map_err(|e| Error::io(&metrics_path, e))?;
        if epoch + 1 < cfg.epochs {
            save_state(&resume_path, &model, &opt, epoch + 1)?;
        }
        if progress != ProgressOutput::Quiet {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, val acc {:.4}, test acc {:.4}, lr {:.4}, {:.1}s",
                m.epoch, cfg.epochs, m.train_loss, m.val_acc, m.test_acc, m.lr, m.time_s
            );
        }
        last = Some(m);
    }
    // Every epoch's line is already synced.
    model.save(&out.join(files::FINAL))?;
    if resume_path.exists() {
        fs::remove_file(&resume_path).map_err(|e| Error::io(&resume_path, e))?;
    }
    Ok(last.expect("at least one epoch"))
}

/// Refuses to resume a run whose settings differ from `cfg` in anything that
/// changes what is trained (all but the device and the thread count).
fn check_same_run(cfg: &TrainConfig, saved: &TrainConfig, path: &Path) -> Result<()> {
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        c.train.device = String::new();
        c.train.threads = 0;
        // Decoding threads and prefetch depth change speed, not results.
        c.train.folder.workers = 0;
        c.train.folder.prefetch = 1;
        c
    };
    if comparable(cfg) == comparable(saved) {
        return Ok(());
    }
    let ours = cfg.to_toml();
    let theirs = saved.to_toml();
    let differing: Vec<String> = ours
        .lines()
        .zip(theirs.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("{a} (run: {b})"))
        .collect();
    Err(Error::Config(format!(
        "cannot resume: the settings differ from {}: {}",
        path.display(),
        differing.join(", ")
    )))
}

/// The epochs recorded in a metrics file, in order.
fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::Config(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Writes the model's variables and the optimizer's momentum buffers after
/// `epochs` finished epochs (atomically).
fn save_state(path: &Path, model: &Model, opt: &Sgd, epochs: u64) -> Result<()> {
    let mut tensors: Vec<(String, tch::Tensor)> = model.state_dict().into_iter().collect();
    for p in &opt.params {
        if let Some(buf) = &p.momentum_buffer {
            tensors.push((format!("{MOMENTUM_PREFIX}{}", p.name), buf.shallow_clone()));
        }
    }
    let meta = HashMap::from([
        ("epoch".to_string(), epochs.to_string()),
        ("arch".to_string(), model.arch.to_string()),
    ]);
    checkpoint::save(path, &tensors, meta)
}

/// Restores what [`save_state`] wrote; returns the number of finished epochs.
fn load_state(path: &Path, model: &Model, opt: &mut Sgd) -> Result<u64> {
    let ck = checkpoint::load(path)?;
    let epochs = ck
        .metadata
        .get("epoch")
        .and_then(|e| e.parse::<u64>().ok())
        .ok_or_else(|| Error::checkpoint(path, "no epoch count in the metadata"))?;
    let (momentum, weights): (Vec<_>, Vec<_>) = ck
        .tensors
        .into_iter()
        .partition(|(name, _)| name.starts_with(MOMENTUM_PREFIX));
    model.load_tensors(&weights, path)?;
    let mut momentum: HashMap<String, tch::Tensor> = momentum
        .into_iter()
        .map(|(name, t)| (name[MOMENTUM_PREFIX.len()..].to_string(), t))
        .collect();
    tch::no_grad(|| {
        for p in &mut opt.params {
            p.momentum_buffer = match momentum.remove(&p.name) {
                Some(t) if t.size() == p.tensor.size() => {
                    // Same device and memory layout as the parameter.
                    let mut buf = p.tensor.empty_like();
                    buf.f_copy_(&t.to_kind(buf.kind()))?;
                    Some(buf)
                }
                Some(_) => {
                    return Err(Error::checkpoint(
                        path,
                        format!("momentum of {} has the wrong shape", p.name),
                    ))
                }
                None => None,
            };
        }
        Ok(())
    })?;
    if let Some(name) = momentum.keys().next() {
        return Err(Error::checkpoint(
            path,
            format!("momentum of unknown parameter {name}"),
        ));
    }
    Ok(epochs)
}
