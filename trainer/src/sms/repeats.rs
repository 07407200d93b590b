//! Repeats of `trainer sms`: the whole pipeline (dense parent included)
//! run with R base seeds, and its summary (the layout, statistics, table
//! and CSV are the pipeline's, see [`crate::pipeline::repeats`]): per phase,
//! the soup, the best and mean candidate, the ensemble and the baselines,
//! the candidates' disagreement, and the dense parent. `summary.svg` is
//! the plot of a single run with each point the mean over repeats and an
//! error bar of ± one standard deviation. Repeats run in sequence or side
//! by side in child processes.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::repeats::{self as shared, Measured, Row};
pub use crate::pipeline::repeats::{repeat_dir, ModelStats, PhaseSummary, Stat, SEED_STRIDE};
use crate::plot::{Figure, Point, Series};
use crate::sms::config::{Baseline, SmsConfig};
use crate::sms::report::{plot_panels, plot_title, PhaseRow, Report, PLOTTED};
use crate::sms::session::{write_config, Session};

/// The configuration of repeat `r`: the run's, with base seed
/// `seed + SEED_STRIDE * r` and one repeat.
pub fn repeat_config(cfg: &SmsConfig, r: u32) -> SmsConfig {
    let mut c = SmsConfig {
        repeats: 1,
        ..cfg.clone()
    };
    c.train.seed = shared::repeat_seed(cfg.train.seed, r);
    c
}

/// The summary of a repeated run (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Data set.
    pub data: String,
    /// Architecture.
    pub model: String,
    /// Candidates per phase.
    pub candidates: u32,
    /// Soup kind.
    pub soup: String,
    /// Base seed of each repeat.
    pub seeds: Vec<u64>,
    /// The dense parent's test accuracy.
    pub dense_test_acc: Stat,
    /// One entry per phase.
    pub phases: Vec<PhaseSummary>,
}

/// The row a summary compares: the phase's models by summary name.
fn row(row: &PhaseRow) -> Row {
    let find = |name: String| row.models.iter().find(|m| m.name == name);
    let ood = |name: &str| find(name.to_string()).and_then(|m| m.ood_acc);
    let best = find(format!("candidate-{}", row.best_candidate)).and_then(|m| m.ood_acc);
    let cand_ood: Option<Vec<f64>> = row
        .models
        .iter()
        .filter(|m| m.name.starts_with("candidate-"))
        .map(|m| m.ood_acc)
        .collect();
    let mean_ood = cand_ood
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64);
    let measured = |name: &str, test_acc: f64, ood_acc: Option<f64>| Measured {
        name: name.into(),
        test_acc,
        ood_acc,
    };
    let mut models = vec![
        measured("soup", row.soup_test_acc, row.soup_ood_acc),
        measured("best_candidate", row.best_candidate_test_acc, best),
        measured("mean_candidate", row.mean_candidate_test_acc, mean_ood),
        measured("ensemble", row.ensemble_test_acc, ood("ensemble")),
    ];
    // Every baseline the run has, under its own name.
    for &b in <Baseline as clap::ValueEnum>::value_variants() {
        if let Some(m) = find(b.name()) {
            models.push(measured(&b.name(), m.test_acc, m.ood_acc));
        }
    }
    Row {
        phase: row.phase,
        sparsity: row.sparsity,
        models,
        disagreement: row.disagreement.as_ref().map(|d| d.mean),
    }
}

/// Summarises the reports of the repeats (same configuration but seed).
pub fn summarise(reports: &[Report], seeds: &[u64]) -> Result<Summary> {
    let first = reports
        .first()
        .ok_or_else(|| Error::Run("no repeats to summarise".into()))?;
    let rows: Vec<Vec<Row>> = reports
        .iter()
        .map(|r| r.phases.iter().map(row).collect())
        .collect();
    Ok(Summary {
        data: first.data.clone(),
        model: first.model.clone(),
        candidates: first.candidates,
        soup: first.soup.clone(),
        seeds: seeds.to_vec(),
        dense_test_acc: Stat::of(reports.iter().map(|r| r.dense_test_acc).collect()),
        phases: shared::summarise(&rows, "soup")?,
    })
}

/// The column order of the table and CSV: the models of the plot.
fn models() -> Vec<&'static str> {
    PLOTTED.iter().map(|(name, _)| *name).collect()
}

impl Summary {
    /// The table printed at the end: per phase, test accuracy of each model
    /// as mean ± standard deviation over repeats (in %), then the soup's
    /// paired lead over each baseline.
    pub fn table(&self) -> String {
        let title = format!(
            "{} on {}, {} candidates per phase, {} soup, {} repeats (seeds {:?}); test top-1 \
             accuracy in %, mean±std over repeats; dense parent {}",
            self.model,
            self.data,
            self.candidates,
            self.soup,
            self.seeds.len(),
            self.seeds,
            self.dense_test_acc.pct()
        );
        shared::table(&title, &self.phases, &models(), |n| short(n).to_string())
    }

    /// One line per phase and model: mean and std of test accuracy and of
    /// the soup's paired lead over it.
    pub fn csv(&self) -> String {
        shared::csv(&self.phases)
    }

    /// The plot of a single run's report (see [`Report::figure`]) with each
    /// model's mean over repeats and an error bar of ± one standard
    /// deviation, at the soups' mean sparsity.
    pub fn figure(&self) -> Figure {
        let series = |metric: &dyn Fn(&ModelStats) -> Option<&Stat>| -> Vec<Series> {
            PLOTTED
                .iter()
                .map(|(key, label)| {
                    let points = self.phases.iter().filter_map(|p| {
                        let s = metric(p.models.get(*key)?)?;
                        let x = 100.0 * p.sparsity.mean;
                        Some(Point::with_std(x, 100.0 * s.mean, 100.0 * s.std))
                    });
                    Series::new(*label, points.collect())
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let title = plot_title(&self.model, &self.data, self.candidates, &self.soup);
        Figure {
            title: format!("{title}; mean ± std over {} repeats", self.seeds.len()),
            panels: plot_panels(
                series(&|m| Some(&m.test_acc)),
                series(&|m| m.ood_acc.as_ref()),
            ),
        }
    }

    /// Writes `summary.json`, `summary.csv` and `summary.svg` into `root`.
    pub fn write(&self, root: &Path) -> Result<()> {
        shared::write(root, self, &self.csv(), &self.figure())
    }
}

fn short(name: &str) -> &str {
    match name {
        "best_candidate" => "best",
        "mean_candidate" => "mean",
        "ensemble" => "ens",
        other => other,
    }
}

/// How to run the repeats.
#[derive(Debug, Clone, Copy)]
pub struct RepeatOptions {
    /// Candidates side by side within a repeat (`--jobs`).
    pub jobs: usize,
    /// Repeats side by side, each in its own process.
    pub side_by_side: usize,
    /// Print a line per step.
    pub verbose: bool,
    /// Draw progress bars.
    pub bars: bool,
}

/// Runs (or resumes) every repeat of `cfg` under `root` and writes the
/// summary. With `side_by_side > 1`, that many repeats run at once in child
/// processes (`trainer sms --out RUN/repeat-R`), the CPU cores shared
/// among them when the run leaves the thread count to libtorch.
pub fn run_repeats(cfg: &SmsConfig, root: &Path, opts: RepeatOptions) -> Result<Summary> {
    write_config(cfg, root)?;
    let repeats: Vec<u32> = (0..cfg.repeats).collect();
    for r in &repeats {
        write_config(&repeat_config(cfg, *r), &repeat_dir(root, *r))?;
    }
    if opts.side_by_side > 1 {
        let exe =
            std::env::current_exe().map_err(|e| Error::Run(format!("cannot find myself: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for batch in repeats.chunks(opts.side_by_side) {
            let mut children = Vec::new();
            for &r in batch {
                let dir = repeat_dir(root, r);
                let mut cmd = Command::new(&exe);
                cmd.arg("sms")
                    .arg("--out")
                    .arg(&dir)
                    .arg("--config")
                    .arg(dir.join("config.toml"))
                    .args(["--jobs", &opts.jobs.to_string(), "--quiet"])
                    .stdout(std::process::Stdio::null());
                if cfg.train.threads == 0 {
                    let t = (cores / batch.len()).max(1).to_string();
                    cmd.env("OMP_NUM_THREADS", &t).env("MKL_NUM_THREADS", &t);
                }
                let child = cmd
                    .spawn()
                    .map_err(|e| Error::Run(format!("cannot start {}: {e}", exe.display())))?;
                children.push((r, child));
            }
            for (r, mut child) in children {
                let status = child
                    .wait()
                    .map_err(|e| Error::Run(format!("repeat {r}: {e}")))?;
                if !status.success() {
                    return Err(Error::Run(format!("repeat {r} failed ({status})")));
                }
            }
        }
    }
    let mut reports = Vec::new();
    for &r in &repeats {
        let mut session = Session::create(repeat_config(cfg, r), &repeat_dir(root, r))?;
        session.ws.verbose = opts.verbose;
        session.ws.bars = opts.bars;
        if opts.verbose {
            eprintln!(
                "repeat {r} of {} (seed {})",
                cfg.repeats, session.cfg.train.seed
            );
        }
        reports.push(crate::sms::run(&session, opts.jobs)?);
    }
    let seeds: Vec<u64> = repeats
        .iter()
        .map(|&r| repeat_config(cfg, r).train.seed)
        .collect();
    let summary = summarise(&reports, &seeds)?;
    summary.write(root)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_seeds_do_not_overlap_candidate_seeds() {
        let mut cfg = SmsConfig {
            repeats: 3,
            ..SmsConfig::default()
        };
        cfg.train.seed = 7;
        let c = repeat_config(&cfg, 2);
        assert_eq!((c.train.seed, c.repeats), (2007, 1));
        let mut first = c.clone();
        first.train.seed = 7;
        assert_eq!(first, repeat_config(&cfg, 0));
    }
}
