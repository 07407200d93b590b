//! Repeats: the whole pipeline (dense parent included) run with R base
//! seeds, and a summary of how much of each difference is noise.
//!
//! ```text
//! RUN/config.toml           the configuration, with `repeats = R`
//! RUN/repeat-R/             a complete run with base seed `seed + 1000 R`
//! RUN/summary.json, summary.csv, summary.svg
//! ```
//!
//! One run cannot tell a real gain from the luck of a batch order, so the
//! summary gives, per phase and model, the mean and sample standard
//! deviation over repeats, and the paired differences soup minus each
//! other model (per repeat, then mean and standard deviation): pairing
//! removes what the models of one repeat share (dense parent, data order).
//! `summary.svg` is the plot of a single run with each point the mean over
//! repeats and an error bar of ± one standard deviation.
//! Each repeat folder is an ordinary run, resumable on its own; repeats run
//! in sequence or side by side in child processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::plot::{Figure, Point, Series};
use crate::sms::config::SmsConfig;
use crate::sms::report::{plot_panels, plot_title, PhaseRow, Report, PLOTTED};
use crate::sms::session::{write_config, Session};

/// Base seeds of repeats are this far apart, so that candidate seeds
/// (base + i) of different repeats never coincide.
pub const SEED_STRIDE: u64 = 1000;

/// The configuration of repeat `r`: the run's, with base seed
/// `seed + SEED_STRIDE * r` and one repeat.
pub fn repeat_config(cfg: &SmsConfig, r: u32) -> SmsConfig {
    let mut c = SmsConfig {
        repeats: 1,
        ..cfg.clone()
    };
    c.train.seed = cfg.train.seed + SEED_STRIDE * r as u64;
    c
}

/// The folder of repeat `r`.
pub fn repeat_dir(root: &Path, r: u32) -> PathBuf {
    root.join(format!("repeat-{r}"))
}

/// Mean and sample standard deviation of one number over repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    /// Mean over repeats.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator; 0 for one
    /// repeat).
    pub std: f64,
    /// The value of each repeat, in order.
    pub values: Vec<f64>,
}

impl Stat {
    /// The statistics of `values` (at least one).
    pub fn of(values: Vec<f64>) -> Stat {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Stat { mean, std, values }
    }

    /// `mean ± std` in percent.
    fn pct(&self) -> String {
        format!("{:.2}±{:.2}", 100.0 * self.mean, 100.0 * self.std)
    }
}

/// One model of one phase over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStats {
    /// Test top-1 accuracy.
    pub test_acc: Stat,
    /// Mean test accuracy under corruptions, when every repeat measured it.
    pub ood_acc: Option<Stat>,
}

/// One phase over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSummary {
    /// 1-based phase.
    pub phase: u32,
    /// The soup's sparsity over prunable weights.
    pub sparsity: Stat,
    /// By model: `soup`, `best_candidate` (by validation accuracy),
    /// `mean_candidate`, `ensemble`, and the baselines that ran.
    pub models: BTreeMap<String, ModelStats>,
    /// Test accuracy of the soup minus that of each other model, paired
    /// within each repeat.
    pub soup_minus: BTreeMap<String, Stat>,
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

/// The per-repeat test accuracies a summary compares, by model name.
fn accuracies(row: &PhaseRow) -> Vec<(&'static str, f64, Option<f64>)> {
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
    let mut out = vec![
        ("soup", row.soup_test_acc, row.soup_ood_acc),
        ("best_candidate", row.best_candidate_test_acc, best),
        ("mean_candidate", row.mean_candidate_test_acc, mean_ood),
        ("ensemble", row.ensemble_test_acc, ood("ensemble")),
    ];
    for (name, acc) in [
        ("imp", row.imp_test_acc),
        ("imp-long", row.imp_long_test_acc),
        ("reprune", row.reprune_test_acc),
    ] {
        if let Some(acc) = acc {
            out.push((name, acc, ood(name)));
        }
    }
    out
}

/// Summarises the reports of the repeats (same configuration but seed).
pub fn summarise(reports: &[Report], seeds: &[u64]) -> Result<Summary> {
    let first = reports
        .first()
        .ok_or_else(|| Error::Run("no repeats to summarise".into()))?;
    let mut phases = Vec::new();
    for (p, row0) in first.phases.iter().enumerate() {
        let rows: Vec<&PhaseRow> = reports
            .iter()
            .map(|r| {
                r.phases
                    .get(p)
                    .ok_or_else(|| Error::Run(format!("a repeat lacks phase {}", p + 1)))
            })
            .collect::<Result<_>>()?;
        let per_repeat: Vec<BTreeMap<&str, (f64, Option<f64>)>> = rows
            .iter()
            .map(|r| {
                accuracies(r)
                    .into_iter()
                    .map(|(n, a, o)| (n, (a, o)))
                    .collect()
            })
            .collect();
        let mut models = BTreeMap::new();
        let mut soup_minus = BTreeMap::new();
        for (name, _, _) in accuracies(row0) {
            let Some(values) = per_repeat
                .iter()
                .map(|m| m.get(name).copied())
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let ood: Option<Vec<f64>> = values.iter().map(|v| v.1).collect();
            models.insert(
                name.to_string(),
                ModelStats {
                    test_acc: Stat::of(values.iter().map(|v| v.0).collect()),
                    ood_acc: ood.map(Stat::of),
                },
            );
            if name != "soup" {
                let diffs = per_repeat
                    .iter()
                    .zip(&values)
                    .map(|(m, v)| m["soup"].0 - v.0)
                    .collect();
                soup_minus.insert(name.to_string(), Stat::of(diffs));
            }
        }
        phases.push(PhaseSummary {
            phase: row0.phase,
            sparsity: Stat::of(rows.iter().map(|r| r.sparsity).collect()),
            models,
            soup_minus,
        });
    }
    Ok(Summary {
        data: first.data.clone(),
        model: first.model.clone(),
        candidates: first.candidates,
        soup: first.soup.clone(),
        seeds: seeds.to_vec(),
        dense_test_acc: Stat::of(reports.iter().map(|r| r.dense_test_acc).collect()),
        phases,
    })
}

/// The column order of the table and CSV.
const MODELS: [&str; 7] = [
    "soup",
    "best_candidate",
    "mean_candidate",
    "ensemble",
    "imp",
    "imp-long",
    "reprune",
];

impl Summary {
    /// The table printed at the end: per phase, test accuracy of each model
    /// as mean ± standard deviation over repeats (in %), then the soup's
    /// paired lead over each baseline.
    pub fn table(&self) -> String {
        let names: Vec<&str> = MODELS
            .iter()
            .copied()
            .filter(|n| self.phases.iter().all(|p| p.models.contains_key(*n)))
            .collect();
        let mut header = vec!["phase".to_string(), "sparsity%".to_string()];
        header.extend(names.iter().map(|n| n.to_string()));
        header.extend(names.iter().skip(1).map(|n| format!("soup-{}", short(n))));
        if self
            .phases
            .iter()
            .all(|p| p.models["soup"].ood_acc.is_some())
        {
            header.push("soup_ood".into());
        }
        let mut rows = vec![header];
        for p in &self.phases {
            let mut row = vec![
                p.phase.to_string(),
                format!("{:.2}", 100.0 * p.sparsity.mean),
            ];
            row.extend(names.iter().map(|n| p.models[*n].test_acc.pct()));
            row.extend(names.iter().skip(1).map(|n| p.soup_minus[*n].pct()));
            if let Some(o) = &p.models["soup"].ood_acc {
                row.push(o.pct());
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
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
        for r in rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  "));
        }
        out
    }

    /// One line per phase and model: mean and std of test accuracy and of
    /// the soup's paired lead over it.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "phase,model,test_acc_mean,test_acc_std,ood_acc_mean,ood_acc_std,\
             soup_minus_mean,soup_minus_std,repeats\n",
        );
        for p in &self.phases {
            for (name, m) in &p.models {
                let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
                let d = p.soup_minus.get(name);
                let _ = writeln!(
                    out,
                    "{},{name},{},{},{},{},{},{},{}",
                    p.phase,
                    m.test_acc.mean,
                    m.test_acc.std,
                    o(m.ood_acc.as_ref().map(|s| s.mean)),
                    o(m.ood_acc.as_ref().map(|s| s.std)),
                    o(d.map(|s| s.mean)),
                    o(d.map(|s| s.std)),
                    m.test_acc.values.len()
                );
            }
        }
        out
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
        let mut json = serde_json::to_string_pretty(self).expect("serialisable");
        json.push('\n');
        let svg = self.figure().svg().map_err(|e| Error::Run(e.to_string()))?;
        write_atomic(&root.join("summary.json"), json.as_bytes())?;
        write_atomic(&root.join("summary.csv"), self.csv().as_bytes())?;
        write_atomic(&root.join("summary.svg"), svg.as_bytes())
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
    fn stat_is_mean_and_sample_std() {
        let s = Stat::of(vec![1.0, 2.0, 4.0]);
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-12);
        let var = ((1.0f64 - 7.0 / 3.0).powi(2)
            + (2.0f64 - 7.0 / 3.0).powi(2)
            + (4.0f64 - 7.0 / 3.0).powi(2))
            / 2.0;
        assert!((s.std - var.sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(vec![0.5]).std, 0.0);
    }

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
