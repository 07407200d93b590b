//! The run machinery of `trainer pdt`: chains of segments in a run folder,
//! each step a file, resumable and parallel like `trainer sms`.
//!
//! ```text
//! RUN/config.toml                          the resolved configuration
//! RUN/<chain>/seg-K/parent.safetensors     segment K's start, after its pruning step
//! RUN/<chain>/seg-K/prune.json             what that step did
//! RUN/<chain>/seg-K/candidate-I.safetensors  candidate I trained to the segment's end
//! RUN/<chain>/seg-K/candidate-I.json       its training record (written last)
//! RUN/<chain>/seg-K/soup-avg.safetensors   the candidates' average (m > 1)
//! RUN/<chain>/seg-K/soup.safetensors       that average, batch norm recalibrated
//! RUN/<chain>/seg-K/segment.json           the segment's record (written last)
//! RUN/<chain>/final.safetensors            the delivered model, recalibrated
//! RUN/<chain>/final.json                   its evaluation
//! RUN/report.json, report.csv, pdt.svg
//! ```
//!
//! Chains: `sms` (the method with soups), `plain` (the method alone) and
//! `long` (the method alone with `m` times the epochs). A step is done when
//! its record exists; every file appears atomically, so a killed run
//! resumes where it stopped and gives the same report. Each segment trains
//! with a fresh optimizer (momentum restarts at every pruning step), so a
//! segment's result is a function of its parent file alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::methods::Method;
use crate::model::Model;
use crate::optim::{Sgd, SgdConfig};
use crate::pdt::records::{mkdir, read_json, write_json};
pub use crate::pdt::records::{CandidateRecord, Chain, PruneRecord, SegmentRecord};
use crate::pdt::{Context, PdtBaseline, PdtConfig, PruningMethod, Segment, Timeline};
use crate::pipeline::mask::{prune_impact, Footprint};
use crate::pipeline::Vary;
use crate::pipeline::{Evaluation, Workspace};
use crate::train::train_loop;
use indicatif::ProgressBar;

/// One open pruning-during-training run.
pub struct PdtRun {
    /// The configuration.
    pub cfg: PdtConfig,
    /// The run folder.
    pub root: PathBuf,
    /// The method (from the registry, with its settings).
    pub method: Box<dyn PruningMethod>,
    /// Its registration, which names it and its runs.
    pub id: Method,
    /// Data, device, model description, the pruned tensors, and the one
    /// evaluation path every method shares.
    pub ws: Workspace,
    /// Draw progress bars.
    pub bars: bool,
}

impl std::fmt::Debug for PdtRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdtRun")
            .field("root", &self.root)
            .field("method", &self.id.name())
            .finish_non_exhaustive()
    }
}

impl PdtRun {
    /// Starts or resumes the run in `root` with `cfg`.
    pub fn create(cfg: PdtConfig, root: &Path) -> Result<PdtRun> {
        cfg.validate()?;
        cfg.claim(root)?;
        Self::with_config(cfg, root, false)
    }

    /// Opens the run in `root` (for a child process that trains one
    /// candidate).
    pub fn open(root: &Path) -> Result<PdtRun> {
        let cfg = Self::read_config(root)?;
        Self::with_config(cfg, root, false)
    }

    /// Opens the run in `root` to list its steps (`trainer status`): the
    /// data are read for their size, which sets the segments, on the CPU
    /// whatever device the run trains on, so that a machine without the
    /// run's GPU (a cluster's login node) can do it.
    pub fn open_to_list_steps(root: &Path) -> Result<PdtRun> {
        let cfg = Self::read_config(root)?;
        Self::with_config(cfg, root, true)
    }

    /// Starts or resumes the run in `root` with `cfg` to submit its steps
    /// elsewhere: as [`PdtRun::create`], on the CPU whatever the run's
    /// device (see [`PdtRun::open_to_list_steps`]).
    pub fn create_to_list_steps(cfg: PdtConfig, root: &Path) -> Result<PdtRun> {
        cfg.validate()?;
        cfg.claim(root)?;
        Self::with_config(cfg, root, true)
    }

    fn read_config(root: &Path) -> Result<PdtConfig> {
        let path = root.join("config.toml");
        if !path.exists() {
            return Err(Error::Config(format!(
                "{} holds no run (no config.toml): start one with `trainer pdt --out {}`",
                root.display(),
                root.display()
            )));
        }
        let cfg = PdtConfig::from_file(&path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn with_config(cfg: PdtConfig, root: &Path, on_cpu: bool) -> Result<PdtRun> {
        let mut train = cfg.train.clone();
        if on_cpu {
            train.device = "cpu".into();
        }
        let mut ws = Workspace::open(&train, &cfg.soups)?;
        let method = cfg.method.build(&cfg.methods).expect("validated");
        let pattern: Vec<_> = method.pattern().into_iter().collect();
        ws.keep_nm_groupable(&pattern);
        Ok(PdtRun {
            id: cfg.method,
            cfg,
            root: root.to_path_buf(),
            method,
            ws,
            bars: false,
        })
    }

    /// Print a line per step on standard error.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.ws.verbose = verbose;
    }

    pub(super) fn say(&self, msg: impl AsRef<str>) {
        if self.ws.verbose {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// The chains this run trains: the soups, then the baselines.
    pub fn chains(&self) -> Vec<Chain> {
        let mut chains = vec![Chain::Sms];
        for b in &self.cfg.baselines {
            chains.push(match b {
                PdtBaseline::Plain => Chain::Plain,
                PdtBaseline::Long => Chain::Long,
            });
        }
        let mut seen = Vec::new();
        chains.retain(|c| {
            let new = !seen.contains(c);
            seen.push(*c);
            new
        });
        chains
    }

    /// Training epochs of a chain.
    pub fn epochs(&self, chain: Chain) -> u64 {
        match chain {
            Chain::Long => self.cfg.epochs * u64::from(self.cfg.soups.candidates),
            _ => self.cfg.epochs,
        }
    }

    /// Iterations per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.ws.per_epoch()
    }

    /// The time line of a chain.
    pub fn timeline(&self, chain: Chain) -> Timeline {
        Timeline::new(
            self.epochs(chain) as f64,
            self.per_epoch(),
            self.cfg.soups.sparsity,
            self.cfg.prune_start,
            self.cfg.prune_end,
            self.cfg.prune_every,
        )
    }

    /// The segments of a chain.
    pub fn segments(&self, chain: Chain) -> Vec<Segment> {
        self.method.segments(&self.timeline(chain))
    }

    /// Candidates trained in `seg` of `chain`: `m` in the soup chain where
    /// the segment is at least `--sms-min-segment` epochs long, else 1.
    pub fn forks(&self, chain: Chain, seg: &Segment) -> u32 {
        let min = (self.cfg.sms_min_segment * self.per_epoch() as f64).round() as u64;
        if chain == Chain::Sms
            && self.cfg.soups.candidates > 1
            && !seg.is_empty()
            && seg.len() >= min
        {
            self.cfg.soups.candidates
        } else {
            1
        }
    }

    /// A segment's folder.
    pub fn seg_dir(&self, chain: Chain, k: usize) -> PathBuf {
        self.root.join(chain.dir()).join(format!("seg-{k:03}"))
    }

    /// Candidate `i`'s checkpoint and record.
    pub fn candidate_paths(&self, chain: Chain, k: usize, i: u32) -> (PathBuf, PathBuf) {
        let dir = self.seg_dir(chain, k);
        (
            dir.join(format!("candidate-{i}.safetensors")),
            dir.join(format!("candidate-{i}.json")),
        )
    }

    /// The checkpoint a segment delivers: the recalibrated soup, or its
    /// only candidate.
    pub fn result(&self, chain: Chain, seg: &Segment) -> PathBuf {
        if self.forks(chain, seg) > 1 {
            self.seg_dir(chain, seg.index).join("soup.safetensors")
        } else {
            self.candidate_paths(chain, seg.index, 0).0
        }
    }

    pub(super) fn context<'a>(
        &'a self,
        chain: Chain,
        segments: &'a [Segment],
        k: usize,
    ) -> Context<'a> {
        let impact = read_json::<PruneRecord>(&self.seg_dir(chain, k).join("prune.json"))
            .ok()
            .and_then(|p| p.impact);
        Context {
            train: &self.cfg.train,
            soups: &self.cfg.soups,
            schedule: self.cfg.schedule,
            timeline: self.timeline(chain),
            segments,
            segment: segments[k],
            impact,
            pruned: &self.ws.pruned,
            eta_max: self.cfg.train.lr,
        }
    }

    pub(super) fn optimizer(&self, model: &Model) -> Sgd {
        let t = &self.cfg.train;
        Sgd::new(&model.vs, SgdConfig::new(t.momentum, t.weight_decay))
    }

    /// Seed, weight decay and peak learning rate of candidate `i` of a
    /// segment that trains `m` candidates. A single model (a baseline, or
    /// a segment too short to fork) has the run's own settings.
    pub fn candidate_settings(&self, m: u32, i: u32) -> (u64, f64, f64) {
        let t = &self.cfg.train;
        let v = self.cfg.soups.vary_values.get(i as usize).copied();
        match (m > 1, self.cfg.soups.vary, v) {
            (true, Vary::Seed, _) => (t.seed + u64::from(i), t.weight_decay, t.lr),
            (true, Vary::WeightDecay, Some(v)) => (t.seed, v, t.lr),
            (true, Vary::Lr, Some(v)) => (t.seed, t.weight_decay, v),
            _ => (t.seed, t.weight_decay, t.lr),
        }
    }

    fn bar(&self, len: u64, msg: String) -> ProgressBar {
        crate::pipeline::executor::progress_bar(self.bars, len, msg)
    }

    /// Segment `k`'s parent: the initialisation for the first segment,
    /// else the previous segment's result after the method's pruning step
    /// (by global magnitude through soup-core, for fixed-mask methods).
    pub fn prepare(&self, chain: Chain, k: usize) -> Result<PruneRecord> {
        let dir = self.seg_dir(chain, k);
        let record = dir.join("prune.json");
        if record.exists() {
            return read_json(&record);
        }
        mkdir(&dir)?;
        let segments = self.segments(chain);
        let seg = segments[k];
        let model = if k == 0 {
            // Every chain starts from the same initialisation.
            tch::manual_seed(self.cfg.train.seed as i64);
            Model::new(self.ws.arch, self.ws.spec, self.ws.device)
        } else {
            let source = self.result(chain, &segments[k - 1]);
            if !self.seg_dir(chain, k - 1).join("segment.json").exists() {
                return Err(Error::Run(format!(
                    "{} is missing: finish segment {} first",
                    source.display(),
                    k - 1
                )));
            }
            self.ws.load(&source)?
        };
        let mut impact = None;
        if k > 0 {
            let before = Footprint::of(&model, &self.ws.pruned);
            if seg.sparsity > 0.0 {
                let mut opt = self.optimizer(&model);
                let exclude = &self.cfg.soups.exclude;
                self.method
                    .prune(&mut opt, &self.ws.pruned, exclude, seg.sparsity)?;
            }
            let after = Footprint::of(&model, &self.ws.pruned);
            impact = Some(prune_impact(before, after, None));
        }
        model.save(&dir.join("parent.safetensors"))?;
        let (zeros, weights) = mask_counts(&model, &self.ws.pruned);
        let info = PruneRecord {
            target: seg.sparsity,
            zeros,
            weights,
            impact,
        };
        self.say(format!(
            "{} segment {k}: iterations {}..{}, sparsity {:.2}% at the start",
            chain.run_name(self.id),
            seg.start,
            seg.end,
            100.0 * zeros as f64 / weights.max(1) as f64
        ));
        write_json(&record, &info)?;
        Ok(info)
    }

    /// Trains candidate `i` of segment `k` from its parent to the
    /// segment's end, with the method's hooks and the candidate's settings
    /// ([`PdtRun::candidate_settings`]).
    pub fn candidate(&self, chain: Chain, k: usize, i: u32) -> Result<CandidateRecord> {
        let (path, record) = self.candidate_paths(chain, k, i);
        if record.exists() {
            return read_json(&record);
        }
        let dir = self.seg_dir(chain, k);
        let parent = dir.join("parent.safetensors");
        if !dir.join("prune.json").exists() {
            return Err(Error::Run(format!(
                "{} is missing: prepare segment {k} first",
                parent.display()
            )));
        }
        let segments = self.segments(chain);
        let m = self.forks(chain, &segments[k]);
        let (seed, weight_decay, eta_max) = self.candidate_settings(m, i);
        let ctx = Context {
            eta_max,
            ..self.context(chain, &segments, k)
        };
        let seg = ctx.segment;
        let start = Instant::now();
        let model = self.ws.load(&parent)?;
        let t = &self.cfg.train;
        let mut opt = Sgd::new(&model.vs, SgdConfig::new(t.momentum, weight_decay));
        let mut hooks = self.method.hooks(&ctx, &opt)?;
        let per_epoch = self.per_epoch();
        let (bs, device) = (self.cfg.train.batch_size, self.ws.device);
        let data = &self.ws.data;
        let batches = (seg.start / per_epoch..)
            .flat_map(|e| data.train_batches(bs, seed, e, device))
            .skip((seg.start % per_epoch) as usize)
            .take(seg.len() as usize);
        let bar = self.bar(
            seg.len(),
            format!("{} segment {k} candidate {i}", chain.run_name(self.id)),
        );
        let stats = train_loop(
            &model,
            &mut opt,
            batches,
            seg.start,
            |it| self.method.lr(&ctx, it),
            hooks.as_mut(),
            Some(per_epoch),
            &bar,
        )?;
        bar.finish_and_clear();
        model.save(&path)?;
        let info = CandidateRecord {
            index: i,
            seed,
            weight_decay,
            eta_max,
            iterations: stats.iterations,
            train_loss: stats.loss,
            time_s: start.elapsed().as_secs_f64(),
        };
        write_json(&record, &info)?;
        Ok(info)
    }

    /// Runs (or resumes) one chain to its delivered model; with `jobs > 1`
    /// the candidates of a segment train side by side in child processes.
    pub fn run_chain(&self, chain: Chain, jobs: usize) -> Result<Evaluation> {
        let segments = self.segments(chain);
        for seg in &segments {
            let k = seg.index;
            self.prepare(chain, k)?;
            let m = self.forks(chain, seg);
            if jobs > 1 && m > 1 {
                self.candidates_in_parallel(chain, k, m, jobs)?;
            }
            for i in 0..m {
                self.candidate(chain, k, i)?;
            }
            self.close(chain, k)?;
        }
        self.finish(chain)
    }

    /// The records of a finished chain's segments.
    pub fn segment_records(&self, chain: Chain) -> Result<Vec<SegmentRecord>> {
        (0..self.segments(chain).len())
            .map(|k| read_json(&self.seg_dir(chain, k).join("segment.json")))
            .collect()
    }

    /// The evaluation of a finished chain.
    pub fn final_eval(&self, chain: Chain) -> Result<Evaluation> {
        read_json(&self.root.join(chain.dir()).join("final.json"))
    }
}

/// Zeros and elements over the tensors `names` of `model`.
pub fn mask_counts(model: &Model, names: &[String]) -> (i64, i64) {
    let sd = model.state_dict();
    names.iter().fold((0, 0), |(z, n), name| {
        let t = &sd[name];
        let zeros = tch::no_grad(|| t.eq(0.0).sum(tch::Kind::Int64).int64_value(&[]));
        (z + zeros, n + t.numel() as i64)
    })
}
