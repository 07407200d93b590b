//! Repeats of `trainer pdt`: the whole run (every chain) made R times with
//! base seeds `seed + 1000 r` in `RUN/repeat-r/`, and its summary
//! (`summary.json`, `summary.csv`, `summary.svg`; the layout, statistics,
//! table and CSV are the pipeline's, see [`crate::pipeline::repeats`]):
//! the delivered models (`gmp+sms`, `gmp`, `gmp-long`, ...) as mean ± std
//! over repeats with the soup's paired lead over each, and the plot of a
//! single run with each point of a curve the mean over repeats and an
//! error bar of ± one standard deviation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pdt::report::{CurvePoint, PdtReport};
use crate::pdt::run::{Chain, PdtRun};
use crate::pdt::PdtConfig;
use crate::pipeline::repeats::{self as shared, Measured, PhaseSummary, Row, Stat};
use crate::plot::{Figure, Point, Series};

/// The configuration of repeat `r`: the run's, with base seed
/// `seed + 1000 r` and one repeat.
pub fn repeat_config(cfg: &PdtConfig, r: u32) -> PdtConfig {
    let mut c = PdtConfig {
        repeats: 1,
        ..cfg.clone()
    };
    c.train.seed = shared::repeat_seed(cfg.train.seed, r);
    c
}

/// One point of a run's curve over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveStats {
    /// Epochs trained (the same in every repeat).
    pub epoch: f64,
    /// Sparsity over the pruned weights.
    pub sparsity: Stat,
    /// Test accuracy as training left the model.
    pub test_acc: Stat,
}

/// A run's course over training, over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveSummary {
    /// The run's name.
    pub name: String,
    /// One point per segment.
    pub points: Vec<CurveStats>,
}

/// The summary of a repeated `trainer pdt` run (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The method's name.
    pub method: String,
    /// Data set.
    pub data: String,
    /// Architecture.
    pub model: String,
    /// The sparsity every run reaches.
    pub target_sparsity: f64,
    /// Candidates per soup.
    pub candidates: u32,
    /// Base seed of each repeat.
    pub seeds: Vec<u64>,
    /// The delivered models (one row: the end of training), the soup's run
    /// compared with each other run.
    pub phases: Vec<PhaseSummary>,
    /// Sparsity and accuracy over training.
    pub curves: Vec<CurveSummary>,
}

/// The name of the run with soups in `report`.
fn soup_name(report: &PdtReport) -> Result<&str> {
    report
        .runs
        .iter()
        .find(|r| r.checkpoint.starts_with(Chain::Sms.dir()))
        .map(|r| r.name.as_str())
        .ok_or_else(|| Error::Run("a repeat's report has no run with soups".into()))
}

/// Summarises the reports of the repeats (same configuration but seed).
pub fn summarise(reports: &[PdtReport], seeds: &[u64]) -> Result<Summary> {
    let first = reports
        .first()
        .ok_or_else(|| Error::Run("no repeats to summarise".into()))?;
    let soup = soup_name(first)?;
    let rows = reports
        .iter()
        .map(|r| {
            let sparsity = r.runs.iter().find(|m| m.name == soup).map(|m| m.sparsity);
            let models = r.runs.iter().map(|m| Measured {
                name: m.name.clone(),
                test_acc: m.test_acc,
                ood_acc: m.ood_acc,
            });
            let disagreement = r
                .runs
                .iter()
                .find(|m| m.name == soup)
                .and_then(|m| m.disagreement);
            Ok(vec![Row {
                phase: 1,
                sparsity: sparsity.ok_or_else(|| Error::Run(format!("a repeat lacks {soup}")))?,
                models: models.collect(),
                disagreement,
            }])
        })
        .collect::<Result<Vec<_>>>()?;
    let mut curves = Vec::new();
    for (c, curve) in first.curves.iter().enumerate() {
        let per_repeat: Vec<&[CurvePoint]> = reports
            .iter()
            .map(|r| {
                r.curves
                    .get(c)
                    .filter(|other| {
                        other.name == curve.name && other.points.len() == curve.points.len()
                    })
                    .map(|other| other.points.as_slice())
                    .ok_or_else(|| {
                        Error::Run(format!("the repeats' curves of {} differ", curve.name))
                    })
            })
            .collect::<Result<_>>()?;
        let points = (0..curve.points.len())
            .map(|k| {
                let stat = |get: fn(&CurvePoint) -> f64| {
                    Stat::of(per_repeat.iter().map(|p| get(&p[k])).collect())
                };
                CurveStats {
                    epoch: curve.points[k].epoch,
                    sparsity: stat(|p| p.sparsity),
                    test_acc: stat(|p| p.test_acc),
                }
            })
            .collect();
        curves.push(CurveSummary {
            name: curve.name.clone(),
            points,
        });
    }
    Ok(Summary {
        method: first.method.clone(),
        data: first.data.clone(),
        model: first.model.clone(),
        target_sparsity: first.target_sparsity,
        candidates: first.candidates,
        seeds: seeds.to_vec(),
        phases: shared::summarise(&rows, soup)?,
        curves,
    })
}

impl Summary {
    /// The models' names, the soup's run first, then the others in the
    /// order of the first repeat's report.
    fn columns(&self) -> Vec<&str> {
        let Some(p) = self.phases.first() else {
            return Vec::new();
        };
        let soup = p.models.keys().find(|n| !p.soup_minus.contains_key(*n));
        let soup = soup.map(String::as_str);
        let others = self.curves.iter().map(|c| c.name.as_str());
        soup.into_iter()
            .chain(others.filter(|n| Some(*n) != soup))
            .collect()
    }

    /// The table printed at the end: test accuracy of each run as mean ±
    /// standard deviation over repeats (in %), then the soup's paired lead
    /// over each other run.
    pub fn table(&self) -> String {
        let title = format!(
            "{} on {} with {}, target sparsity {:.2}%, {} candidates per soup, {} repeats (seeds \
             {:?}); test top-1 accuracy in %, mean±std over repeats",
            self.model,
            self.data,
            self.method,
            100.0 * self.target_sparsity,
            self.candidates,
            self.seeds.len(),
            self.seeds
        );
        shared::table(&title, &self.phases, &self.columns(), |n| n.to_string())
    }

    /// The plot of a single run's report (see [`PdtReport::figure`]) with
    /// each point the mean over repeats and an error bar of ± one standard
    /// deviation.
    pub fn figure(&self) -> Figure {
        // The single run's figure gives the panels' titles and axes.
        let single = PdtReport {
            method: self.method.clone(),
            model: self.model.clone(),
            data: self.data.clone(),
            target_sparsity: self.target_sparsity,
            pattern: None,
            candidates: self.candidates,
            runs: Vec::new(),
            curves: Vec::new(),
        };
        let mut figure = single.figure();
        figure.title = format!(
            "{}; mean ± std over {} repeats",
            figure.title,
            self.seeds.len()
        );
        type Get = fn(&CurveStats) -> &Stat;
        let getters: [(Get, Option<Point>); 2] = [
            (|p| &p.sparsity, Some(Point::new(0.0, 0.0))),
            (|p| &p.test_acc, None),
        ];
        for (panel, (get, start)) in figure.panels.iter_mut().zip(getters) {
            panel.series = self
                .curves
                .iter()
                .map(|c| {
                    let points = start.into_iter().chain(c.points.iter().map(|p| {
                        let s = get(p);
                        Point::with_std(p.epoch, 100.0 * s.mean, 100.0 * s.std)
                    }));
                    Series::new(c.name.clone(), points.collect())
                })
                .collect();
        }
        figure
    }

    /// Writes `summary.json`, `summary.csv` and `summary.svg` into `root`.
    pub fn write(&self, root: &Path) -> Result<()> {
        shared::write(root, self, &shared::csv(&self.phases), &self.figure())
    }
}

/// Runs (or resumes) every repeat of `cfg` under `root`, one after the
/// other, each with `jobs` candidates side by side, and writes the summary.
pub fn run_repeats(
    cfg: &PdtConfig,
    root: &Path,
    jobs: usize,
    verbose: bool,
    bars: bool,
) -> Result<Summary> {
    cfg.validate()?;
    cfg.claim(root)?;
    let mut reports = Vec::new();
    let mut seeds = Vec::new();
    for r in 0..cfg.repeats {
        let c = repeat_config(cfg, r);
        seeds.push(c.train.seed);
        if verbose {
            eprintln!("repeat {r} of {} (seed {})", cfg.repeats, c.train.seed);
        }
        let mut run = PdtRun::create(c, &shared::repeat_dir(root, r))?;
        run.set_verbose(verbose);
        run.bars = bars;
        reports.push(run.run(jobs)?);
    }
    let summary = summarise(&reports, &seeds)?;
    summary.write(root)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_plot_draws_the_mean_with_the_spread_of_each_point() {
        let point = |epoch: f64, s: [f64; 2], a: [f64; 2]| CurveStats {
            epoch,
            sparsity: Stat::of(s.to_vec()),
            test_acc: Stat::of(a.to_vec()),
        };
        let summary = Summary {
            method: "gmp".into(),
            data: "data".into(),
            model: "cnn".into(),
            target_sparsity: 0.8,
            candidates: 2,
            seeds: vec![0, 1000],
            phases: Vec::new(),
            curves: vec![CurveSummary {
                name: "gmp+sms".into(),
                points: vec![
                    point(1.0, [0.4, 0.4], [0.5, 0.7]),
                    point(2.0, [0.8, 0.8], [0.9, 0.9]),
                ],
            }],
        };
        let figure = summary.figure();
        assert!(figure.title.ends_with("mean ± std over 2 repeats"));
        let sparsity = &figure.panels[0].series[0].points;
        // From 0 at epoch 0, then the means (in %) without spread.
        assert_eq!((sparsity[0].x, sparsity[0].y), (0.0, 0.0));
        assert!((sparsity[2].y - 80.0).abs() < 1e-9);
        assert_eq!(sparsity[2].std, Some(0.0));
        let accuracy = &figure.panels[1].series[0].points;
        assert_eq!(accuracy.len(), 2);
        assert!((accuracy[0].y - 60.0).abs() < 1e-9);
        let std = accuracy[0].std.unwrap();
        assert!((std - 100.0 * 0.02f64.sqrt()).abs() < 1e-9, "{std}");
        assert!(figure.svg().is_ok());
    }

    #[test]
    fn repeat_configs_differ_in_the_seed_only() {
        let cfg = PdtConfig {
            repeats: 3,
            ..PdtConfig::default()
        };
        let c = repeat_config(&cfg, 2);
        assert_eq!((c.train.seed, c.repeats), (2000, 1));
        let mut back = c.clone();
        back.train.seed = cfg.train.seed;
        back.repeats = cfg.repeats;
        assert_eq!(back, cfg);
    }
}
