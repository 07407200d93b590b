//! The report of a pruning-during-training run: `report.json`, a printed
//! table, `report.csv` and `pdt.svg` (sparsity and test accuracy over
//! training, one line per run). The run with soups also reports how often
//! its candidates' test predictions disagree (per soup segment, and their
//! mean). A report is built from the run's records only: a segment record
//! without the measurement reports it as missing (`-`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::pdt::run::{Chain, PdtRun};
use crate::plot::{self, Axis, Figure, Panel, Point, Series};

/// One delivered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRow {
    /// `gmp`, `gmp+sms`, `gmp-long`, likewise for the other methods.
    pub name: String,
    /// The checkpoint, relative to the run folder.
    pub checkpoint: PathBuf,
    /// Zeros / elements over the pruned weights, counted in the checkpoint.
    pub sparsity: f64,
    /// Test top-1 accuracy (after batch-norm recalibration).
    pub test_acc: f64,
    /// Mean test accuracy under corruptions, when measured.
    pub ood_acc: Option<f64>,
    /// Validation top-1 accuracy.
    pub val_acc: f64,
    /// Training epochs.
    pub epochs: u64,
    /// The run's soups only: the mean over its soup segments of how often
    /// two candidates' test predictions differ (each segment's own rates
    /// are in its curve point and `segment.json`). Missing for runs
    /// without soups and for segments recorded before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<f64>,
}

/// One point of a run's curve: the end of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Epochs trained.
    pub epoch: f64,
    /// Sparsity over the pruned weights.
    pub sparsity: f64,
    /// Test accuracy as training left the model (no recalibration).
    pub test_acc: f64,
    /// Candidates averaged at this point (1: none).
    pub candidates: u32,
    /// With a soup here: the mean over pairs of candidates of the share of
    /// test images they predict differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<f64>,
}

/// A run's course over training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// The run's name.
    pub name: String,
    /// One point per segment.
    pub points: Vec<CurvePoint>,
}

/// What a panel of the plot shows of a curve point.
type Metric = fn(&CurvePoint) -> f64;

/// The report of `trainer pdt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdtReport {
    /// The method's name.
    pub method: String,
    /// Architecture.
    pub model: String,
    /// Data set.
    pub data: String,
    /// The sparsity every run reaches.
    pub target_sparsity: f64,
    /// The N:M pattern every run reaches, if the method prunes to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<soup_core::NmPattern>,
    /// Candidates per soup (`m`).
    pub candidates: u32,
    /// Every delivered model.
    pub runs: Vec<RunRow>,
    /// Sparsity and accuracy over training.
    pub curves: Vec<Curve>,
}

/// Builds the report of a finished run from its records.
pub fn build(run: &PdtRun) -> Result<PdtReport> {
    let id = run.id;
    let name = id.name();
    let mut runs = Vec::new();
    let mut curves = Vec::new();
    // Baselines first, so the table reads plain, soup, long.
    let mut chains = run.chains();
    chains.sort_by_key(|c| match c {
        Chain::Plain => 0,
        Chain::Sms => 1,
        Chain::Long => 2,
    });
    for chain in chains {
        let eval = run.final_eval(chain)?;
        let points: Vec<CurvePoint> = run
            .segment_records(chain)?
            .into_iter()
            .filter(|r| !r.segment.is_empty())
            .map(|r| CurvePoint {
                epoch: r.epochs,
                sparsity: r.sparsity,
                test_acc: r.test_acc,
                candidates: r.candidates,
                disagreement: r.disagreement.map(|d| d.mean),
            })
            .collect();
        // Over the soups only; missing where any soup lacks its record.
        let soups: Vec<&CurvePoint> = points.iter().filter(|p| p.candidates > 1).collect();
        let rates: Option<Vec<f64>> = soups.iter().map(|p| p.disagreement).collect();
        let disagreement = rates
            .filter(|r| !r.is_empty())
            .map(|r| r.iter().sum::<f64>() / r.len() as f64);
        runs.push(RunRow {
            name: chain.run_name(id),
            checkpoint: Path::new(chain.dir()).join("final.safetensors"),
            sparsity: eval.sparsity,
            test_acc: eval.test.top1,
            ood_acc: eval.ood_acc,
            val_acc: eval.val.top1,
            epochs: run.epochs(chain),
            disagreement,
        });
        curves.push(Curve {
            name: chain.run_name(id),
            points,
        });
    }
    Ok(PdtReport {
        method: name.to_string(),
        model: run.cfg.train.model.clone(),
        data: run.cfg.train.data.clone(),
        target_sparsity: run.cfg.soups.sparsity,
        pattern: run.method.pattern(),
        candidates: run.cfg.soups.candidates,
        runs,
        curves,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

impl PdtReport {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let pattern = self
            .pattern
            .map_or_else(String::new, |p| format!(" (N:M pattern {p})"));
        let mut s = format!(
            "{} on {} with {}, target sparsity {:.2}%{pattern}, {} candidates per soup; \
             accuracies in %\n",
            self.model,
            self.data,
            self.method,
            100.0 * self.target_sparsity,
            self.candidates
        );
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>10} {:>8} {:>8} {:>8} {:>9}",
            "run", "epochs", "sparsity%", "test", "val", "ood", "disagree%"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>10.2} {:>8} {:>8} {:>8} {:>9}",
                r.name,
                r.epochs,
                100.0 * r.sparsity,
                pct(Some(r.test_acc)),
                pct(Some(r.val_acc)),
                pct(r.ood_acc),
                pct(r.disagreement)
            );
        }
        s
    }

    /// `report.csv`: one row per run.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "method,run,epochs,sparsity,test_acc,val_acc,ood_acc,checkpoint,disagreement\n",
        );
        let o = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{}",
                self.method,
                r.name,
                r.epochs,
                r.sparsity,
                r.test_acc,
                r.val_acc,
                o(r.ood_acc),
                r.checkpoint.display(),
                o(r.disagreement)
            );
        }
        s
    }

    /// The plot (see [`crate::plot`]): two panels against epochs,
    /// sparsity (from 0 at the start) and test accuracy, one line per run.
    pub fn figure(&self) -> Figure {
        let panel = |title: &str, y: &str, start: Option<Point>, get: Metric| Panel {
            title: title.into(),
            x: Axis::new("epoch"),
            y: Axis::percent(y),
            series: self
                .curves
                .iter()
                .map(|c| {
                    let points = start
                        .into_iter()
                        .chain(c.points.iter().map(|p| Point::new(p.epoch, 100.0 * get(p))));
                    Series::new(c.name.clone(), points.collect())
                })
                .collect(),
        };
        Figure {
            title: format!(
                "{} on {} with {}, target sparsity {}%, {} candidates per soup",
                self.model,
                plot::last_component(&self.data),
                self.method,
                plot::tick_label(100.0 * self.target_sparsity),
                self.candidates
            ),
            panels: vec![
                panel(
                    "sparsity",
                    "sparsity over pruned weights (%)",
                    Some(Point::new(0.0, 0.0)),
                    |p| p.sparsity,
                ),
                panel("test accuracy", "test top-1 accuracy (%)", None, |p| {
                    p.test_acc
                }),
            ],
        }
    }

    /// The plot as SVG.
    pub fn svg(&self) -> Result<String> {
        self.figure().svg().map_err(|e| Error::Run(e.to_string()))
    }

    /// Writes `report.json`, `report.csv` and `pdt.svg` into `root`.
    pub fn write(&self, root: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).expect("serialisable");
        json.push('\n');
        write_atomic(&root.join("report.json"), json.as_bytes())?;
        write_atomic(&root.join("report.csv"), self.csv().as_bytes())?;
        write_atomic(&root.join("pdt.svg"), self.svg()?.as_bytes())
    }
}
