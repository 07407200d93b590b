//! The run's report: `report.json`, `report.csv`, a table for the terminal
//! and a plot of test accuracy (and accuracy under corruptions, where
//! measured) against sparsity (`accuracy_vs_sparsity.svg`).
//!
//! Each phase lists every model it evaluated (`models`: soup, candidates,
//! ensemble, baselines) with the same metrics, all from the one evaluation
//! path of [`crate::pipeline::workspace::Workspace::finish`], so rows can be
//! compared with each other.
//!
//! The report holds only results, no timings, so a run that was killed and
//! resumed reports exactly what an uninterrupted run reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use soup_core::NmPattern;

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::pipeline::Disagreement;
use crate::plot::{self, Axis, Figure, Panel, Point};
use crate::sms::config::Baseline;
use crate::sms::layout::Chain;
use crate::sms::records::{CandidateInfo, Evaluation, PhaseInfo};
use crate::sms::session::Session;

/// One evaluated model of a phase (or the dense parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRow {
    /// `soup`, `candidate-I`, `ensemble`, a baseline's name (`imp`,
    /// `imp-long`, `imp-swa`, `reprune`) or `dense`.
    pub name: String,
    /// Its checkpoint relative to the run folder (none for the ensemble).
    pub checkpoint: Option<PathBuf>,
    /// Test top-1 accuracy.
    pub test_acc: f64,
    /// Validation top-1 accuracy.
    pub val_acc: f64,
    /// Class-balanced test accuracy.
    pub balanced_acc: f64,
    /// Lowest per-class test accuracy.
    pub worst_class_acc: f64,
    /// Test expected calibration error (15 bins).
    pub ece: f64,
    /// Test maximum calibration error (15 bins).
    pub mce: f64,
    /// Mean test accuracy under corruptions, when measured.
    pub ood_acc: Option<f64>,
    /// Sparsity over the prunable weights.
    pub sparsity: f64,
    /// Sparsity of each prunable tensor.
    pub layer_sparsity: BTreeMap<String, f64>,
}

impl ModelRow {
    /// The row of model `name` evaluated as `e`, saved at `checkpoint`.
    pub fn new(name: impl Into<String>, checkpoint: Option<PathBuf>, e: &Evaluation) -> ModelRow {
        ModelRow {
            name: name.into(),
            checkpoint,
            test_acc: e.test.top1,
            val_acc: e.val.top1,
            balanced_acc: e.test.balanced_accuracy,
            worst_class_acc: e.test.worst_class_accuracy,
            ece: e.test.ece,
            mce: e.test.mce,
            ood_acc: e.ood_acc,
            sparsity: e.sparsity,
            layer_sparsity: e.layer_sparsity.clone(),
        }
    }
}

/// One phase of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseRow {
    /// 1-based phase.
    pub phase: u32,
    /// Soup sparsity over the prunable weights.
    pub sparsity: f64,
    /// Soup sparsity over all parameters.
    pub sparsity_all_params: f64,
    /// Sparsity of the pruned parent over the prunable weights.
    pub parent_sparsity: f64,
    /// The N:M pattern of the phase, if the run prunes to N:M patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<NmPattern>,
    /// Soup test top-1 accuracy.
    pub soup_test_acc: f64,
    /// Soup validation top-1 accuracy.
    pub soup_val_acc: f64,
    /// Soup class-balanced test accuracy (extra column).
    pub soup_test_balanced_acc: f64,
    /// Soup test expected calibration error, 15 bins (extra column).
    pub soup_test_ece: f64,
    /// Soup test maximum calibration error, 15 bins (extra column).
    pub soup_test_mce: f64,
    /// Soup lowest per-class test accuracy (extra column).
    pub soup_test_worst_class_acc: f64,
    /// Soup mean test accuracy under corruptions, when measured.
    pub soup_ood_acc: Option<f64>,
    /// Test accuracy of the candidates' prediction ensemble.
    pub ensemble_test_acc: f64,
    /// Index of the candidate with the best validation accuracy.
    pub best_candidate: u32,
    /// Its test accuracy.
    pub best_candidate_test_acc: f64,
    /// Mean test accuracy of the candidates.
    pub mean_candidate_test_acc: f64,
    /// Candidates averaged into the soup.
    pub soup_candidates: Vec<u32>,
    /// IMP (one candidate per phase) test accuracy, if run.
    pub imp_test_acc: Option<f64>,
    /// IMP with M-times longer retraining, if run.
    pub imp_long_test_acc: Option<f64>,
    /// IMP delivering each phase's SWA average, if run (left out of the
    /// file otherwise, like in reports written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imp_swa_test_acc: Option<f64>,
    /// IMP-RePrune, if run.
    pub reprune_test_acc: Option<f64>,
    /// Sparsity of the IMP-RePrune model over prunable weights, if run.
    pub reprune_sparsity: Option<f64>,
    /// The soup checkpoint, relative to the run folder.
    pub soup_checkpoint: PathBuf,
    /// Theoretical FLOPs of the soup against the dense model (conv and
    /// linear multiply-adds that touch a non-zero weight).
    pub flops_ratio: f64,
    /// The candidates' geometry (pairwise distances), when measured.
    pub geometry: Option<serde_json::Value>,
    /// How often two candidates' top-1 test predictions differ (mean over
    /// pairs, min, max, every pair). Missing (left out of the file, `-` in
    /// the table) with one candidate and for phases recorded before it was
    /// measured: the report is built from records only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<Disagreement>,
    /// Every model of the phase: soup, candidates, ensemble, baselines.
    pub models: Vec<ModelRow>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Data set.
    pub data: String,
    /// Architecture.
    pub model: String,
    /// Candidates per phase.
    pub candidates: u32,
    /// Soup kind (`uniform` or `greedy`).
    pub soup: String,
    /// The dense parent's test accuracy.
    pub dense_test_acc: f64,
    /// The dense parent, evaluated like every other model.
    pub dense: ModelRow,
    /// One entry per phase.
    pub phases: Vec<PhaseRow>,
}

/// A chain's phase-`phase` model: its checkpoint (relative to the run) and
/// results, if it was run.
fn chain_model(
    session: &Session,
    chain: Chain,
    phase: u32,
) -> Result<Option<(PathBuf, CandidateInfo)>> {
    let (path, info) = session.candidate_path(chain, phase, 0);
    if !info.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&info).map_err(|e| Error::io(&info, e))?;
    let c =
        serde_json::from_str(&text).map_err(|e| Error::Run(format!("{}: {e}", info.display())))?;
    Ok(Some((relative(session, &path), c)))
}

fn relative(session: &Session, path: &Path) -> PathBuf {
    path.strip_prefix(&session.layout.root)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

/// Builds the report from the run folder's results.
pub fn build(session: &Session, dense: &Evaluation, phases: &[PhaseInfo]) -> Result<Report> {
    let baselines = &session.cfg.baselines;
    let mut rows = Vec::with_capacity(phases.len());
    for info in phases {
        let p = info.phase;
        let best = info
            .candidates
            .iter()
            .max_by(|a, b| {
                a.eval
                    .val
                    .top1
                    .total_cmp(&b.eval.val.top1)
                    .then(b.index.cmp(&a.index))
            })
            .expect("at least one candidate");
        let mean = info
            .candidates
            .iter()
            .map(|c| c.eval.test.top1)
            .sum::<f64>()
            / info.candidates.len() as f64;
        let baseline = |b: Baseline, chain: Chain| -> Result<Option<(PathBuf, CandidateInfo)>> {
            if baselines.contains(&b) {
                chain_model(session, chain, p)
            } else {
                Ok(None)
            }
        };
        let imp = baseline(Baseline::Imp, Chain::Imp(0))?.map(|(_, c)| c);
        let imp_long = baseline(Baseline::ImpLong, Chain::ImpLong)?.map(|(_, c)| c);
        let imp_swa = baseline(Baseline::ImpSwa, Chain::ImpSwa)?.map(|(_, c)| c);
        let reprune = baseline(Baseline::Reprune, Chain::Reprune)?.map(|(_, c)| c);
        let mut models = vec![ModelRow::new(
            "soup",
            Some(info.soup_path.clone()),
            &info.soup,
        )];
        for c in &info.candidates {
            let (path, _) = session.candidate_path(Chain::Soup, p, c.index);
            models.push(ModelRow::new(
                format!("candidate-{}", c.index),
                Some(relative(session, &path)),
                &c.eval,
            ));
        }
        models.push(ModelRow::new("ensemble", None, &info.ensemble));
        for &b in <Baseline as clap::ValueEnum>::value_variants() {
            if let Some((path, c)) = baseline(b, b.chain())? {
                models.push(ModelRow::new(b.name(), Some(path), &c.eval));
            }
        }
        rows.push(PhaseRow {
            phase: p,
            sparsity: info.soup.sparsity,
            sparsity_all_params: info.soup.sparsity_all,
            parent_sparsity: info.prune.sparsity,
            pattern: info.prune.pattern,
            soup_test_acc: info.soup.test.top1,
            soup_val_acc: info.soup.val.top1,
            soup_test_balanced_acc: info.soup.test.balanced_accuracy,
            soup_test_ece: info.soup.test.ece,
            soup_test_mce: info.soup.test.mce,
            soup_test_worst_class_acc: info.soup.test.worst_class_accuracy,
            soup_ood_acc: info.soup.ood_acc,
            ensemble_test_acc: info.ensemble.test.top1,
            best_candidate: best.index,
            best_candidate_test_acc: best.eval.test.top1,
            mean_candidate_test_acc: mean,
            soup_candidates: info.chosen.clone(),
            imp_test_acc: imp.map(|c| c.eval.test.top1),
            imp_long_test_acc: imp_long.map(|c| c.eval.test.top1),
            imp_swa_test_acc: imp_swa.map(|c| c.eval.test.top1),
            reprune_test_acc: reprune.as_ref().map(|c| c.eval.test.top1),
            reprune_sparsity: reprune.as_ref().map(|c| c.eval.sparsity),
            soup_checkpoint: info.soup_path.clone(),
            flops_ratio: info.soup.macs.ratio(),
            geometry: info
                .geometry
                .as_ref()
                .map(|g| serde_json::to_value(g).expect("serialisable")),
            disagreement: info.disagreement.clone(),
            models,
        });
    }
    Ok(Report {
        data: session.cfg.train.data.clone(),
        model: session.cfg.train.model.clone(),
        candidates: session.cfg.soups.candidates,
        soup: format!("{:?}", session.cfg.soups.soup).to_lowercase(),
        dense_test_acc: dense.test.top1,
        dense: ModelRow::new(
            "dense",
            Some(relative(session, &session.layout.dense_finished())),
            dense,
        ),
        phases: rows,
    })
}

/// The plotted models in legend order: the name a repeats summary gives
/// each (see [`crate::sms::repeats`]) and its label in the plot.
pub const PLOTTED: [(&str, &str); 8] = [
    ("soup", "SMS soup"),
    ("best_candidate", "best candidate"),
    ("mean_candidate", "mean candidate"),
    ("ensemble", "ensemble"),
    ("imp", "IMP"),
    ("imp-long", "IMP long"),
    ("imp-swa", "IMP-SWA"),
    ("reprune", "IMP-RePrune"),
];

/// The plot's title over its panels.
pub fn plot_title(model: &str, data: &str, candidates: u32, soup: &str) -> String {
    format!(
        "{model} on {}, {candidates} candidates per phase, {soup} soup",
        plot::last_component(data)
    )
}

/// The plot's panels for the `test` and (when measured) `ood` series:
/// test accuracy against sparsity, and accuracy under corruptions.
pub fn plot_panels(test: Vec<plot::Series>, ood: Vec<plot::Series>) -> Vec<Panel> {
    let sparsity = || Axis::percent("sparsity over prunable weights (%)");
    let mut panels = vec![Panel {
        title: "test accuracy".into(),
        x: sparsity(),
        y: Axis::percent("test top-1 accuracy (%)"),
        series: test,
    }];
    if !ood.is_empty() {
        panels.push(Panel {
            title: "under corruptions (OOD)".into(),
            x: sparsity(),
            y: Axis::percent("mean corrupted top-1 accuracy (%)"),
            series: ood,
        });
    }
    panels
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), pct)
}

impl Report {
    /// The columns of the table and CSV, with their values per phase.
    fn columns(&self) -> Vec<(&'static str, Vec<String>)> {
        let col = |f: &dyn Fn(&PhaseRow) -> String| self.phases.iter().map(f).collect();
        let mut cols = vec![
            ("phase", col(&|r| r.phase.to_string())),
            ("sparsity%", col(&|r| pct(r.sparsity))),
        ];
        if self.phases.iter().any(|r| r.pattern.is_some()) {
            let name = |r: &PhaseRow| r.pattern.map_or_else(|| "-".into(), |p| p.to_string());
            cols.push(("pattern", col(&name)));
        }
        cols.extend([
            ("soup", col(&|r| pct(r.soup_test_acc))),
            ("best_cand", col(&|r| pct(r.best_candidate_test_acc))),
            ("mean_cand", col(&|r| pct(r.mean_candidate_test_acc))),
            ("ensemble", col(&|r| pct(r.ensemble_test_acc))),
        ]);
        let disagree = |r: &PhaseRow| opt_pct(r.disagreement.as_ref().map(|d| d.mean));
        cols.push(("disagree%", col(&disagree)));
        let any = |f: &dyn Fn(&PhaseRow) -> bool| self.phases.iter().any(f);
        if any(&|r| r.imp_test_acc.is_some()) {
            cols.push(("imp", col(&|r| opt_pct(r.imp_test_acc))));
        }
        if any(&|r| r.imp_long_test_acc.is_some()) {
            cols.push(("imp_long", col(&|r| opt_pct(r.imp_long_test_acc))));
        }
        if any(&|r| r.imp_swa_test_acc.is_some()) {
            cols.push(("imp_swa", col(&|r| opt_pct(r.imp_swa_test_acc))));
        }
        if any(&|r| r.reprune_test_acc.is_some()) {
            cols.push(("reprune", col(&|r| opt_pct(r.reprune_test_acc))));
        }
        cols.push(("soup_bal_acc", col(&|r| pct(r.soup_test_balanced_acc))));
        cols.push(("soup_ece", col(&|r| format!("{:.4}", r.soup_test_ece))));
        cols.push(("soup_ood", col(&|r| opt_pct(r.soup_ood_acc))));
        cols.push(("flops%", col(&|r| pct(r.flops_ratio))));
        cols
    }

    /// The table printed at the end of a run (test top-1 accuracy in %).
    pub fn table(&self) -> String {
        let cols = self.columns();
        let widths: Vec<usize> = cols
            .iter()
            .map(|(h, v)| {
                v.iter()
                    .map(|s| s.len())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} on {}, {} candidates per phase, {} soup; test top-1 accuracy in %, dense parent {}",
            self.model,
            self.data,
            self.candidates,
            self.soup,
            pct(self.dense_test_acc)
        );
        let line = |cells: Vec<&str>| -> String {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "{}", line(cols.iter().map(|c| c.0).collect()));
        for i in 0..self.phases.len() {
            let _ = writeln!(
                out,
                "{}",
                line(cols.iter().map(|c| c.1[i].as_str()).collect())
            );
        }
        out
    }

    /// The same columns as CSV, accuracies as fractions.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "phase,sparsity,sparsity_all_params,parent_sparsity,soup_test_acc,soup_val_acc,\
             best_candidate,best_candidate_test_acc,mean_candidate_test_acc,imp_test_acc,\
             imp_long_test_acc,reprune_test_acc,soup_test_balanced_acc,soup_test_ece,\
             soup_test_mce,soup_test_worst_class_acc,ensemble_test_acc,soup_ood_acc,flops_ratio,\
             soup_checkpoint,imp_swa_test_acc,disagreement,disagreement_min,disagreement_max",
        );
        // Runs that prune to N:M patterns name each phase's pattern.
        let patterns = self.phases.iter().any(|r| r.pattern.is_some());
        out.push_str(if patterns { ",pattern\n" } else { "\n" });
        let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
        for r in &self.phases {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.phase,
                r.sparsity,
                r.sparsity_all_params,
                r.parent_sparsity,
                r.soup_test_acc,
                r.soup_val_acc,
                r.best_candidate,
                r.best_candidate_test_acc,
                r.mean_candidate_test_acc,
                o(r.imp_test_acc),
                o(r.imp_long_test_acc),
                o(r.reprune_test_acc),
                r.soup_test_balanced_acc,
                r.soup_test_ece,
                r.soup_test_mce,
                r.soup_test_worst_class_acc,
                r.ensemble_test_acc,
                o(r.soup_ood_acc),
                r.flops_ratio,
                r.soup_checkpoint.display(),
                o(r.imp_swa_test_acc),
                o(r.disagreement.as_ref().map(|d| d.mean)),
                o(r.disagreement.as_ref().map(|d| d.min)),
                o(r.disagreement.as_ref().map(|d| d.max)),
            );
            if patterns {
                let _ = write!(
                    out,
                    ",{}",
                    r.pattern.map(|p| p.to_string()).unwrap_or_default()
                );
            }
            out.push('\n');
        }
        out
    }

    /// The plotted lines of one metric, in percent: (sparsity, value) per
    /// phase for the soup, the best and mean candidate, the ensemble and
    /// each baseline (at the model's own sparsity), leaving out models
    /// without the metric.
    fn series(&self, metric: &dyn Fn(&ModelRow) -> Option<f64>) -> Vec<plot::Series> {
        let point = |r: &PhaseRow, key: &str| -> Option<Point> {
            let find = |name: &str| r.models.iter().find(|m| m.name == name);
            let (sparsity, value) = match key {
                "best_candidate" => {
                    let m = find(&format!("candidate-{}", r.best_candidate))?;
                    (m.sparsity, metric(m)?)
                }
                "mean_candidate" => {
                    let cands: Vec<&ModelRow> = r
                        .models
                        .iter()
                        .filter(|m| m.name.starts_with("candidate-"))
                        .collect();
                    let values: Vec<f64> =
                        cands.iter().map(|m| metric(m)).collect::<Option<_>>()?;
                    let first = cands.first()?;
                    (
                        first.sparsity,
                        values.iter().sum::<f64>() / values.len() as f64,
                    )
                }
                name => {
                    let m = find(name)?;
                    (m.sparsity, metric(m)?)
                }
            };
            Some(Point::new(100.0 * sparsity, 100.0 * value))
        };
        PLOTTED
            .iter()
            .map(|(key, label)| {
                plot::Series::new(
                    *label,
                    self.phases.iter().filter_map(|r| point(r, key)).collect(),
                )
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    }

    /// The plot (see [`crate::plot`]): test accuracy against sparsity, and
    /// beside it accuracy under corruptions when the run measured it.
    pub fn figure(&self) -> Figure {
        Figure {
            title: plot_title(&self.model, &self.data, self.candidates, &self.soup),
            panels: plot_panels(
                self.series(&|m| Some(m.test_acc)),
                self.series(&|m| m.ood_acc),
            ),
        }
    }

    /// The plot as SVG.
    pub fn svg(&self) -> Result<String> {
        self.figure().svg().map_err(|e| Error::Run(e.to_string()))
    }

    /// Writes `report.json`, `report.csv` and the plot into the run folder.
    pub fn write(&self, session: &Session) -> Result<()> {
        let layout = &session.layout;
        let mut json = serde_json::to_string_pretty(self).expect("serialisable");
        json.push('\n');
        write_atomic(&layout.report_json(), json.as_bytes())?;
        write_atomic(&layout.report_csv(), self.csv().as_bytes())?;
        write_atomic(&layout.plot(), self.svg()?.as_bytes())
    }
}
