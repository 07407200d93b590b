//! The steps of a sparse-model-soup run: dense parent, pruning, candidates,
//! soup, baselines. Each step reads its inputs from the run folder and
//! writes its outputs there atomically, and is skipped when its outputs
//! exist, so steps can run in one process, in several (`--jobs`), or as
//! separate cluster jobs, and a killed run resumes where it stopped.
//!
//! Every model the run reports (dense parent, candidates, soups and greedy
//! trials, baselines) goes through one evaluation path,
//! [`Session::finish`]: batch-norm statistics recalibrated on the same
//! training batches, the recalibrated model saved, then evaluated. So any
//! reported number is reproduced by evaluating the saved checkpoint, and no
//! model is compared with stale statistics against a recalibrated one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::arch::{Arch, ModelSpec};
use crate::checkpoint::write_atomic;
use crate::config::{parse_device, TrainConfig};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate, evaluate_ensemble, macs, recalibrate_bn_with, EvalReport, Macs};
use crate::model::Model;
use crate::optim::{Sgd, SgdConfig};
use crate::robust::{corrupted_batches, corruption_accuracies, mean_accuracy, Corruption};
use crate::run::{run_training, Progress};
use crate::schedule::Schedule;
use crate::sms::config::{Baseline, SmsConfig, SoupKind, Vary};
use crate::sms::layout::{Chain, Layout};
use crate::sms::lr::{allr_peak, candidate_schedule, PruneImpact};
use crate::sms::soupcalls;
use crate::train::train_steps;

/// Validation and test evaluation of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// On the validation split (used for every choice).
    pub val: EvalReport,
    /// On the test split (reported only).
    pub test: EvalReport,
    /// Zeros / elements over the prunable tensors.
    pub sparsity: f64,
    /// Zeros / elements over all parameters (weights, biases, norm scales).
    pub sparsity_all: f64,
    /// Zeros / elements of each prunable tensor, by name.
    pub layer_sparsity: BTreeMap<String, f64>,
    /// Theoretical multiply-adds per image (for an ensemble, of all its
    /// members together).
    pub macs: Macs,
    /// Mean test accuracy under corruptions, when measured.
    pub ood_acc: Option<f64>,
    /// Test accuracy per corruption and severity (empty when not measured).
    pub corruptions: BTreeMap<String, BTreeMap<u8, f64>>,
}

/// What pruning a phase's parent did (`prune.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneInfo {
    /// The checkpoint that was pruned.
    pub source: PathBuf,
    /// Fraction of the remaining prunable weights removed (`q`), or for
    /// absolute pruning the total sparsity asked for.
    pub fraction: f64,
    /// Whether `fraction` was of the remaining weights.
    pub of_remaining: bool,
    /// Sparsity over prunable weights after pruning.
    pub sparsity: f64,
    /// ALLR's measurements.
    pub impact: PruneImpact,
}

/// A trained candidate (`candidate-I.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateInfo {
    /// Index within the phase.
    pub index: u32,
    /// Seed of batch order and augmentation.
    pub seed: u64,
    /// Weight decay used.
    pub weight_decay: f64,
    /// Retraining epochs.
    pub epochs: f64,
    /// `eta_max` used.
    pub eta_max: f64,
    /// The schedule's peak (ALLR's `eta0`).
    pub lr_peak: f64,
    /// Optimizer steps.
    pub iterations: u64,
    /// Mean training loss (`None` when the process that trained it was
    /// killed before recording it).
    pub train_loss: Option<f64>,
    /// Evaluation after retraining.
    pub eval: Evaluation,
    /// Wall time of training and evaluation, seconds.
    pub time_s: f64,
}

/// One trial of a greedy soup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// Candidate tried.
    pub candidate: u32,
    /// Validation accuracy of the soup with it (after BN recalibration).
    pub score: f64,
    /// Whether it was kept.
    pub kept: bool,
}

/// The results of one soup phase (`phase.json`, written last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseInfo {
    /// 1-based phase.
    pub phase: u32,
    /// The sparsity the schedule asks for after this phase.
    pub target_sparsity: f64,
    /// Pruning of the parent.
    pub prune: PruneInfo,
    /// Every candidate.
    pub candidates: Vec<CandidateInfo>,
    /// Whether every candidate's mask equals the pruned parent's.
    pub masks_identical: bool,
    /// Candidates averaged into the soup.
    pub chosen: Vec<u32>,
    /// Greedy trials, in order (empty for uniform soups).
    pub trials: Vec<Trial>,
    /// The soup, after batch-norm recalibration.
    pub soup: Evaluation,
    /// The prediction ensemble of all candidates (mean softmax), a
    /// reference for what averaging outputs instead of weights gives.
    pub ensemble: Evaluation,
    /// Path of the soup checkpoint, relative to the run folder.
    pub soup_path: PathBuf,
    /// The candidates' geometry (`soup distance` over their float tensors,
    /// paths relative to the run folder); `None` with a single candidate.
    #[serde(default)]
    pub geometry: Option<soup_core::DistanceReport>,
}

/// One open run: its configuration, data and model description.
#[derive(Debug)]
pub struct Session {
    /// The configuration.
    pub cfg: SmsConfig,
    /// Paths.
    pub layout: Layout,
    /// The data set.
    pub data: Dataset,
    /// Where to compute.
    pub device: Device,
    /// Architecture.
    pub arch: Arch,
    /// Input shape and classes.
    pub spec: ModelSpec,
    /// Draw progress bars (standard error is a terminal).
    pub bars: bool,
    /// Print a line per step on standard error.
    pub verbose: bool,
}

/// Checks `cfg` and writes it to `run/config.toml`, or checks that the
/// folder's existing configuration is the same one.
pub fn write_config(cfg: &SmsConfig, run: &Path) -> Result<()> {
    cfg.validate()?;
    cfg.claim(run)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Run(format!("{}: unreadable results: {e}", path.display())))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

impl Session {
    /// Starts or resumes the run in `run` with `cfg`. A folder that already
    /// holds a run must hold the same configuration.
    pub fn create(cfg: SmsConfig, run: &Path) -> Result<Session> {
        write_config(&cfg, run)?;
        Self::with_config(cfg, Layout::new(run))
    }

    /// Opens the existing run in `run` (for the per-step commands).
    pub fn open(run: &Path) -> Result<Session> {
        let layout = Layout::new(run);
        if !layout.config().exists() {
            return Err(Error::Config(format!(
                "{} holds no run (no config.toml): start one with `trainer sms --out {}`",
                run.display(),
                run.display()
            )));
        }
        let cfg = SmsConfig::from_file(&layout.config())?;
        cfg.validate()?;
        Self::with_config(cfg, layout)
    }

    fn with_config(cfg: SmsConfig, layout: Layout) -> Result<Session> {
        let arch: Arch = cfg.model.parse()?;
        let device = parse_device(&cfg.device)?;
        if cfg.threads > 0 {
            tch::set_num_threads(cfg.threads as i32);
        }
        let data = Dataset::load_with(&cfg.data, cfg.split_seed, &cfg.folder)?;
        let [c, h, w] = data.input_shape().map(|d| d as i64);
        let spec = ModelSpec {
            num_classes: data.num_classes as i64,
            input: [c, h, w],
        };
        Ok(Session {
            cfg,
            layout,
            data,
            device,
            arch,
            spec,
            bars: false,
            verbose: false,
        })
    }

    fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Training batches per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.data.train_batches_per_epoch(self.cfg.batch_size) as u64
    }

    /// A model loaded from `path`.
    pub fn load(&self, path: &Path) -> Result<Model> {
        let model = Model::new(self.arch, self.spec, self.device);
        model.load(path)?;
        Ok(model)
    }

    fn pretrain_schedule(&self, eta_max: f64) -> Schedule {
        let per_epoch = self.per_epoch();
        Schedule {
            kind: self.cfg.pretrain_schedule,
            peak: eta_max,
            total: per_epoch * self.cfg.pretrain_epochs.max(1),
            warmup: (self.cfg.warmup_epochs * per_epoch as f64).round() as u64,
        }
    }

    /// The tensors soup-core prunes in this run: the prunable ones by
    /// soup-core's rule, less those the configuration excludes. Sparsity is
    /// reported over exactly these.
    pub fn pruned_names(&self, model: &Model) -> Vec<String> {
        let keep = soup_core::Selection::new(&[], &self.cfg.exclude)
            .expect("exclusions are checked when the configuration is read");
        model
            .prunable_names()
            .into_iter()
            .filter(|n| keep.matches(n))
            .collect()
    }

    /// Evaluates `model` as it is on validation and test, with its
    /// sparsity and cost. Reported models go through [`Session::finish`].
    pub fn evaluate(&self, model: &Model) -> Result<Evaluation> {
        let ebs = self.cfg.eval_batch_size;
        let val = evaluate(model, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let test = evaluate(model, self.data.eval_batches(Split::Test, ebs, self.device))?;
        self.data.check()?;
        let (sparsity, sparsity_all) = sparsity(model, &self.pruned_names(model));
        let corruptions =
            corruption_accuracies(model, &self.data, &self.cfg.ood, self.device, ebs as i64)?;
        Ok(Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(model, &self.pruned_names(model)),
            macs: macs(model),
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        })
    }

    /// The one evaluation path of every reported model: recalibrates its
    /// batch-norm statistics ([`Session::recalibrate`]), saves it to `out`
    /// (so the file is exactly the model evaluated) and evaluates it.
    pub fn finish(&self, model: &Model, out: &Path) -> Result<Evaluation> {
        self.recalibrate(model);
        model.save(out)?;
        self.evaluate(model)
    }

    /// The prediction ensemble of the (finished) checkpoints `paths`.
    /// Under corruptions it is scored on the generated ones the run
    /// evaluates (`like` lists them: a member's evaluation); with a
    /// CIFAR-C folder it has no robustness numbers.
    pub fn evaluate_ensemble(&self, paths: &[PathBuf], like: &Evaluation) -> Result<Evaluation> {
        let models = paths
            .iter()
            .map(|p| self.load(p))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Model> = models.iter().collect();
        let ebs = self.cfg.eval_batch_size;
        let val = evaluate_ensemble(&refs, self.data.eval_batches(Split::Val, ebs, self.device))?;
        let test = evaluate_ensemble(&refs, self.data.eval_batches(Split::Test, ebs, self.device))?;
        self.data.check()?;
        // Members share one mask (checked before), so their sparsity is
        // the ensemble's; its cost is all of theirs.
        let pruned = self.pruned_names(&models[0]);
        let (sparsity, sparsity_all) = sparsity(&models[0], &pruned);
        let one = macs(&models[0]);
        let k = models.len() as u64;
        let mut corruptions = BTreeMap::new();
        if self.cfg.ood.dir.is_none() {
            for (name, severities) in &like.corruptions {
                let Some(c) = Corruption::from_name(name) else {
                    continue;
                };
                let mut per = BTreeMap::new();
                for &s in severities.keys() {
                    let batches =
                        corrupted_batches(&self.data, c, s, ebs, self.cfg.ood.limit, self.device);
                    per.insert(s, evaluate_ensemble(&refs, batches)?.top1);
                }
                corruptions.insert(name.clone(), per);
            }
        }
        Ok(Evaluation {
            val,
            test,
            sparsity,
            sparsity_all,
            layer_sparsity: layer_sparsity(&models[0], &pruned),
            macs: Macs {
                dense: one.dense * k,
                sparse: models.iter().map(|m| macs(m).sparse).sum(),
            },
            ood_acc: mean_accuracy(&corruptions),
            corruptions,
        })
    }

    /// Recomputes the batch-norm statistics of `model` from the first
    /// `bn_recal_fraction` of an epoch of training batches: the same batches
    /// in the same order for every model of the run (they depend only on the
    /// run's seed), averaged as `bn_recal` says.
    pub fn recalibrate(&self, model: &Model) -> usize {
        let n = ((self.cfg.bn_recal_fraction * self.per_epoch() as f64).ceil() as usize).max(1);
        let batches = self
            .data
            .train_batches(self.cfg.batch_size, self.cfg.seed, u64::MAX, self.device)
            .take(n);
        recalibrate_bn_with(model, batches, self.cfg.bn_recal)
    }

    /// The dense parent: trained (`pretrain_epochs`) or copied (`from`).
    pub fn ensure_dense(&self) -> Result<Evaluation> {
        let path = self.layout.dense();
        if !path.exists() {
            if let Some(from) = &self.cfg.from {
                self.say(format!("dense: copying {from}"));
                let model = self.load(Path::new(from))?;
                mkdir(&self.layout.dense_dir())?;
                model.save(&path)?;
            } else {
                self.say(format!(
                    "dense: pretraining {} for {} epochs",
                    self.cfg.model, self.cfg.pretrain_epochs
                ));
                // A dense run that did not finish continues after its last
                // finished epoch.
                let dir = self.layout.dense_dir();
                let tc = TrainConfig {
                    data: self.cfg.data.clone(),
                    model: self.cfg.model.clone(),
                    epochs: self.cfg.pretrain_epochs,
                    batch_size: self.cfg.batch_size,
                    lr: self.cfg.lr,
                    momentum: self.cfg.momentum,
                    weight_decay: self.cfg.weight_decay,
                    schedule: self.cfg.pretrain_schedule,
                    warmup_epochs: self.cfg.warmup_epochs,
                    seed: self.cfg.seed,
                    split_seed: self.cfg.split_seed,
                    device: self.cfg.device.clone(),
                    threads: self.cfg.threads,
                    eval_batch_size: self.cfg.eval_batch_size,
                    folder: self.cfg.folder.clone(),
                };
                let progress = match (self.bars, self.verbose) {
                    (true, _) => Progress::Bar,
                    (false, true) => Progress::Lines,
                    _ => Progress::Quiet,
                };
                run_training(&tc, &dir, progress, true)?;
            }
        }
        let info_path = self.layout.dense_eval();
        let finished = self.layout.dense_finished();
        if info_path.exists() && finished.exists() {
            return read_json(&info_path);
        }
        let eval = self.finish(&self.load(&path)?, &finished)?;
        write_json(&info_path, &eval)?;
        Ok(eval)
    }

    /// Where a chain's phase-`phase` parent is. Every IMP-style chain starts
    /// from the same pruned dense model as the soup chain, so phase 1 shares
    /// its file.
    pub fn parent_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong if phase == 1 => self.layout.parent(Chain::Soup, 1),
            _ => self.layout.parent(chain, phase),
        }
    }

    fn prune_info_path(&self, chain: Chain, phase: u32) -> PathBuf {
        match chain {
            Chain::Imp(_) | Chain::ImpLong if phase == 1 => self.layout.prune_info(Chain::Soup, 1),
            _ => self.layout.prune_info(chain, phase),
        }
    }

    /// Where candidate `index` of a chain's phase is. IMP chain `j`'s first
    /// phase trains exactly what soup candidate `j` trains (same parent,
    /// seed and settings) when candidates vary by seed, so it is shared.
    pub fn candidate_path(&self, chain: Chain, phase: u32, index: u32) -> (PathBuf, PathBuf) {
        match chain {
            Chain::Imp(j)
                if phase == 1 && self.cfg.vary == Vary::Seed && j < self.cfg.candidates =>
            {
                (
                    self.layout.candidate(Chain::Soup, 1, j),
                    self.layout.candidate_info(Chain::Soup, 1, j),
                )
            }
            _ => (
                self.layout.candidate(chain, phase, index),
                self.layout.candidate_info(chain, phase, index),
            ),
        }
    }

    /// The checkpoint a chain's phase starts from before pruning.
    fn phase_source(&self, chain: Chain, phase: u32) -> PathBuf {
        if phase == 1 {
            return self.layout.dense_finished();
        }
        match chain {
            Chain::Soup => self.layout.soup(Chain::Soup, phase - 1),
            Chain::Imp(_) | Chain::ImpLong => self.candidate_path(chain, phase - 1, 0).0,
            Chain::Reprune => self.layout.soup_avg(Chain::Reprune, phase),
        }
    }

    /// Prunes the parent of a chain's phase: a fraction `q` of the
    /// remaining prunable weights by global magnitude (soup-core), or for
    /// IMP-RePrune the average of the chains down to the phase's target.
    pub fn prepare(&self, chain: Chain, phase: u32) -> Result<PruneInfo> {
        let parent = self.parent_path(chain, phase);
        let info_path = self.prune_info_path(chain, phase);
        if info_path.exists() && parent.exists() {
            return read_json(&info_path);
        }
        if phase == 1 {
            self.ensure_dense()?;
        }
        let source = self.phase_source(chain, phase);
        if !source.exists() {
            return Err(Error::Run(format!(
                "{} is missing: finish phase {} of {} first",
                source.display(),
                phase - 1,
                chain.name()
            )));
        }
        mkdir(parent.parent().expect("phase folder"))?;
        let (fraction, of_remaining) = match chain {
            Chain::Reprune => (self.cfg.target_sparsity(phase), false),
            _ => (self.cfg.prune_fraction(), true),
        };
        if !parent.exists() {
            soupcalls::prune(&source, &parent, fraction, of_remaining, &self.cfg.exclude)?;
        }
        let before = self.load(&source)?;
        let after = self.load(&parent)?;
        let impact = PruneImpact {
            norm_before: param_norm(&before),
            norm_after: param_norm(&after),
            fraction: if of_remaining {
                fraction
            } else {
                // The share of the remaining weights that went.
                let (s_before, _) = sparsity(&before, &self.pruned_names(&before));
                let (s_after, _) = sparsity(&after, &self.pruned_names(&after));
                if s_before < 1.0 {
                    (s_after - s_before) / (1.0 - s_before)
                } else {
                    0.0
                }
            },
        };
        let info = PruneInfo {
            source,
            fraction,
            of_remaining,
            sparsity: sparsity(&after, &self.pruned_names(&after)).0,
            impact,
        };
        self.say(format!(
            "{} phase {phase}: pruned to {:.2}% sparsity (removed {:.2}% of the remaining weights)",
            chain.name(),
            100.0 * info.sparsity,
            100.0 * info.impact.fraction
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }

    /// The settings of candidate `index` of a chain.
    fn candidate_settings(&self, chain: Chain, index: u32) -> (u64, f64, f64, f64) {
        let c = &self.cfg;
        let base = (c.seed, c.weight_decay, c.epochs_per_phase, c.lr);
        match chain {
            Chain::Soup => {
                let v = c.vary_values.get(index as usize).copied();
                match (c.vary, v) {
                    (Vary::Seed, _) => (c.seed + index as u64, base.1, base.2, base.3),
                    (Vary::WeightDecay, Some(v)) => (c.seed, v, base.2, base.3),
                    (Vary::RetrainLength, Some(v)) => (c.seed, base.1, v, base.3),
                    (Vary::Lr, Some(v)) => (c.seed, base.1, base.2, v),
                    _ => base,
                }
            }
            Chain::Imp(j) => (c.seed + j as u64, base.1, base.2, base.3),
            Chain::ImpLong => (c.seed, base.1, base.2 * c.candidates as f64, base.3),
            Chain::Reprune => base,
        }
    }

    /// Retrains candidate `index` of a chain's phase from its pruned parent,
    /// keeping pruned weights at exactly 0.0 after every optimizer step.
    pub fn candidate(&self, chain: Chain, phase: u32, index: u32) -> Result<CandidateInfo> {
        let (path, info_path) = self.candidate_path(chain, phase, index);
        if path.exists() && info_path.exists() {
            return read_json(&info_path);
        }
        let parent = self.parent_path(chain, phase);
        let prune_info_path = self.prune_info_path(chain, phase);
        if !parent.exists() || !prune_info_path.exists() {
            return Err(Error::Run(format!(
                "{} is missing: run `trainer prepare --run {} --phase {phase}` first",
                parent.display(),
                self.layout.root.display()
            )));
        }
        let prune: PruneInfo = read_json(&prune_info_path)?;
        let (seed, weight_decay, epochs, eta_max) = self.candidate_settings(chain, index);
        let start = Instant::now();
        let per_epoch = self.per_epoch();
        let total = ((epochs * per_epoch as f64).round() as u64).max(1);
        let varied_peak =
            (matches!(chain, Chain::Soup) && self.cfg.vary == Vary::Lr).then_some(eta_max);
        let schedule = candidate_schedule(
            self.cfg.schedule,
            total,
            self.pretrain_schedule(eta_max),
            allr_peak(
                &prune.impact,
                eta_max,
                epochs,
                self.cfg.pretrain_epochs.max(1) as f64,
            ),
            varied_peak,
        );
        let (model, train_loss) = if path.exists() {
            // Trained (and recalibrated) before a kill that came ahead of
            // its evaluation; recalibrating again gives the same model.
            (self.load(&path)?, None)
        } else {
            let model = self.load(&parent)?;
            let mut opt = Sgd::new(&model.vs, SgdConfig::new(self.cfg.momentum, weight_decay));
            let masks = Masks::of(&model, &opt);
            let bar = self.bar(
                total,
                format!("{} phase {phase} candidate {index}", chain.name()),
            );
            let tag = (phase as u64) << 32;
            let batches = (0u64..)
                .flat_map(|e| {
                    self.data
                        .train_batches(self.cfg.batch_size, seed, tag + e, self.device)
                })
                .take(total as usize);
            let stats = train_steps(
                &model,
                &mut opt,
                batches,
                0,
                |it| schedule.lr(it),
                |opt| {
                    masks.enforce(opt, self.cfg.mask_momentum);
                    Ok(())
                },
                &bar,
            )?;
            self.data.check()?;
            bar.finish_and_clear();
            mkdir(path.parent().expect("phase folder"))?;
            (model, Some(stats.loss))
        };
        let eval = if train_loss.is_some() {
            self.finish(&model, &path)?
        } else {
            // The file is the finished model already: leave it untouched.
            self.evaluate(&model)?
        };
        let info = CandidateInfo {
            index,
            seed,
            weight_decay,
            epochs,
            eta_max,
            lr_peak: schedule.peak(),
            iterations: total,
            train_loss,
            eval,
            time_s: start.elapsed().as_secs_f64(),
        };
        self.say(format!(
            "{} phase {phase} candidate {index}: val {:.4}, test {:.4}, sparsity {:.2}% ({:.0}s)",
            chain.name(),
            info.eval.val.top1,
            info.eval.test.top1,
            100.0 * info.eval.sparsity,
            info.time_s
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }

    fn bar(&self, len: u64, msg: String) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {elapsed}<{eta}")
                .expect("a valid template"),
        );
        bar.set_message(msg);
        bar
    }

    /// Validation accuracy of a checkpoint after batch-norm recalibration
    /// (the procedure of [`Session::finish`]): the greedy soup's score.
    pub fn score(&self, path: &Path) -> Result<f64> {
        let model = self.load(path)?;
        self.recalibrate(&model);
        let val = evaluate(
            &model,
            self.data
                .eval_batches(Split::Val, self.cfg.eval_batch_size, self.device),
        )?;
        self.data.check()?;
        Ok(val.top1)
    }

    /// Checks the candidates' masks against the parent, merges them
    /// (uniformly or greedily) through soup-core, recalibrates batch norm and
    /// evaluates the soup.
    pub fn soup(&self, phase: u32) -> Result<PhaseInfo> {
        let info_path = self.layout.phase_info(Chain::Soup, phase);
        if info_path.exists() {
            return read_json(&info_path);
        }
        let prune: PruneInfo = read_json(&self.layout.prune_info(Chain::Soup, phase))?;
        let m = self.cfg.candidates;
        let mut candidates = Vec::with_capacity(m as usize);
        let mut paths = Vec::with_capacity(m as usize);
        for i in 0..m {
            let (path, info) = self.candidate_path(Chain::Soup, phase, i);
            if !path.exists() || !info.exists() {
                return Err(Error::Run(format!(
                    "{} is missing: run `trainer candidate --run {} --phase {phase} --index {i}` first",
                    path.display(),
                    self.layout.root.display()
                )));
            }
            candidates.push(read_json::<CandidateInfo>(&info)?);
            paths.push(path);
        }
        let parent = self.layout.parent(Chain::Soup, phase);
        let prunable = Model::new(self.arch, self.spec, Device::Cpu).prunable_names();
        soupcalls::check_masks(&paths, &parent, &prunable)?;
        let avg = self.layout.soup_avg(Chain::Soup, phase);
        let (chosen, trials) = match self.cfg.soup {
            SoupKind::Uniform => {
                soupcalls::merge(&paths, &avg, None)?;
                ((0..m).collect(), Vec::new())
            }
            SoupKind::Greedy => {
                let first: Vec<f64> = candidates.iter().map(|c| c.eval.val.top1).collect();
                soupcalls::greedy(&paths, &first, &avg, self.cfg.strict, |p| self.score(p))?
            }
        };
        let soup_path = self.layout.soup(Chain::Soup, phase);
        let soup = self.finish(&self.load(&avg)?, &soup_path)?;
        let ensemble = self.evaluate_ensemble(&paths, &candidates[0].eval)?;
        let geometry = soupcalls::geometry(&paths)?.map(|mut g| {
            for p in &mut g.inputs {
                if let Ok(rel) = p.strip_prefix(&self.layout.root) {
                    *p = rel.to_path_buf();
                }
            }
            g
        });
        let soup_path = soup_path
            .strip_prefix(&self.layout.root)
            .map_or(soup_path.clone(), Path::to_path_buf);
        let info = PhaseInfo {
            phase,
            target_sparsity: self.cfg.target_sparsity(phase),
            prune,
            candidates,
            masks_identical: true,
            chosen,
            trials,
            soup,
            ensemble,
            soup_path,
            geometry,
        };
        self.say(format!(
            "sms phase {phase} soup of {:?}: val {:.4}, test {:.4}, sparsity {:.2}%",
            info.chosen,
            info.soup.val.top1,
            info.soup.test.top1,
            100.0 * info.soup.sparsity
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }

    /// IMP-RePrune at `phase`: the average of the M IMP chains (their masks
    /// differ, so the union), re-pruned to the phase's target and retrained.
    pub fn reprune(&self, phase: u32) -> Result<CandidateInfo> {
        let chains: Vec<PathBuf> = (0..self.cfg.candidates)
            .map(|j| self.candidate_path(Chain::Imp(j), phase, 0).0)
            .collect();
        let avg = self.layout.soup_avg(Chain::Reprune, phase);
        if !avg.exists() {
            mkdir(avg.parent().expect("phase folder"))?;
            soupcalls::merge(&chains, &avg, Some(soup_core::MaskPolicy::Union))?;
        }
        self.prepare(Chain::Reprune, phase)?;
        self.candidate(Chain::Reprune, phase, 0)
    }

    /// Runs one baseline chain through every phase.
    pub fn baseline(&self, baseline: Baseline) -> Result<()> {
        for phase in 1..=self.cfg.phases {
            match baseline {
                Baseline::Imp => {
                    self.prepare(Chain::Imp(0), phase)?;
                    self.candidate(Chain::Imp(0), phase, 0)?;
                }
                Baseline::ImpLong => {
                    self.prepare(Chain::ImpLong, phase)?;
                    self.candidate(Chain::ImpLong, phase, 0)?;
                }
                Baseline::Reprune => {
                    for j in 0..self.cfg.candidates {
                        self.prepare(Chain::Imp(j), phase)?;
                        self.candidate(Chain::Imp(j), phase, 0)?;
                    }
                    self.reprune(phase)?;
                }
            }
        }
        Ok(())
    }
}

/// The masks of the prunable weights, taken from the pruned parent, with
/// the optimizer slots they apply to.
struct Masks {
    /// (index into `Sgd::params`, positions to keep at zero)
    zeros: Vec<(usize, Tensor)>,
}

impl Masks {
    fn of(model: &Model, opt: &Sgd) -> Masks {
        let prunable = model.prunable_names();
        let zeros = opt
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| prunable.contains(&p.name))
            .map(|(i, p)| (i, tch::no_grad(|| p.tensor.eq(0.0))))
            .filter(|(_, z)| z.any().int64_value(&[]) != 0)
            .collect();
        Masks { zeros }
    }

    /// `w[mask == 0] = +0.0` (and the same for the momentum buffer).
    fn enforce(&self, opt: &mut Sgd, momentum_too: bool) {
        tch::no_grad(|| {
            for (i, zeros) in &self.zeros {
                let p = &mut opt.params[*i];
                let _ = p.tensor.masked_fill_(zeros, 0.0);
                if momentum_too {
                    if let Some(buf) = p.momentum_buffer.as_mut() {
                        let _ = buf.masked_fill_(zeros, 0.0);
                    }
                }
            }
        });
    }
}

/// L2 norm of all trainable parameters (weights and biases).
pub fn param_norm(model: &Model) -> f64 {
    tch::no_grad(|| {
        model
            .vs
            .trainable_variables()
            .iter()
            .map(|t| {
                t.to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// Zeros / elements of each pruned tensor (`pruned`: their names).
pub fn layer_sparsity(model: &Model, pruned: &[String]) -> BTreeMap<String, f64> {
    let sd = model.state_dict();
    pruned
        .iter()
        .cloned()
        .map(|name| {
            let t = &sd[&name];
            let zeros = tch::no_grad(|| t.eq(0.0).sum(Kind::Int64).int64_value(&[]));
            let share = zeros as f64 / (t.numel() as f64).max(1.0);
            (name, share)
        })
        .collect()
}

/// (zeros / elements over the pruned tensors, named in `pruned`, zeros /
/// elements over all trainable parameters).
pub fn sparsity(model: &Model, pruned: &[String]) -> (f64, f64) {
    let (mut pz, mut pn, mut az, mut an) = (0i64, 0i64, 0i64, 0i64);
    tch::no_grad(|| {
        for (name, t) in model.vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            let zeros = t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            let n = t.numel() as i64;
            az += zeros;
            an += n;
            if pruned.contains(&name) {
                pz += zeros;
                pn += n;
            }
        }
    });
    let ratio = |a: i64, b: i64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (ratio(pz, pn), ratio(az, an))
}
