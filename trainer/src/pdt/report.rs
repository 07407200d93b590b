//! The report of a pruning-during-training run: `report.json`, a printed
//! table, `report.csv` and `pdt.svg` (sparsity and test accuracy over
//! training, one line per run).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::Result;
use crate::pdt::run::{Chain, PdtRun};

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
    /// Candidates per soup (`m`).
    pub candidates: u32,
    /// Every delivered model.
    pub runs: Vec<RunRow>,
    /// Sparsity and accuracy over training.
    pub curves: Vec<Curve>,
}

/// Builds the report of a finished run from its records.
pub fn build(run: &PdtRun) -> Result<PdtReport> {
    let id = run.method.id();
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
        runs.push(RunRow {
            name: chain.run_name(id),
            checkpoint: Path::new(chain.dir()).join("final.safetensors"),
            sparsity: eval.sparsity,
            test_acc: eval.test.top1,
            ood_acc: eval.ood_acc,
            val_acc: eval.val.top1,
            epochs: run.epochs(chain),
        });
        let points = run
            .segment_records(chain)?
            .into_iter()
            .filter(|r| !r.segment.is_empty())
            .map(|r| CurvePoint {
                epoch: r.epochs,
                sparsity: r.sparsity,
                test_acc: r.test_acc,
                candidates: r.candidates,
            })
            .collect();
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
        candidates: run.cfg.soups.candidates,
        runs,
        curves,
    })
}

/// `s` safe inside SVG text (a data set may be any folder name).
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

impl PdtReport {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} on {} with {}, target sparsity {:.2}%, {} candidates per soup; accuracies in %\n",
            self.model,
            self.data,
            self.method,
            100.0 * self.target_sparsity,
            self.candidates
        );
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>10} {:>8} {:>8} {:>8}",
            "run", "epochs", "sparsity%", "test", "val", "ood"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>10.2} {:>8} {:>8} {:>8}",
                r.name,
                r.epochs,
                100.0 * r.sparsity,
                pct(Some(r.test_acc)),
                pct(Some(r.val_acc)),
                pct(r.ood_acc)
            );
        }
        s
    }

    /// `report.csv`: one row per run.
    pub fn csv(&self) -> String {
        let mut s =
            String::from("method,run,epochs,sparsity,test_acc,val_acc,ood_acc,checkpoint\n");
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{}",
                self.method,
                r.name,
                r.epochs,
                r.sparsity,
                r.test_acc,
                r.val_acc,
                r.ood_acc.map_or(String::new(), |v| v.to_string()),
                r.checkpoint.display()
            );
        }
        s
    }

    /// Two panels against epochs: sparsity, and test accuracy.
    pub fn svg(&self) -> String {
        const COLORS: [&str; 6] = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f",
        ];
        let (panel_w, legend_w, h) = (440.0, 140.0, 380.0);
        let w = 2.0 * panel_w + legend_w;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
        );
        let x1 = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.epoch))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let panels: [(&str, Metric); 2] = [
            ("sparsity (%)", |p| p.sparsity),
            ("test accuracy (%)", |p| p.test_acc),
        ];
        for (n, (label, get)) in panels.iter().enumerate() {
            let ox = n as f64 * panel_w;
            let (left, right, top, bottom) = (ox + 60.0, ox + panel_w - 10.0, 40.0, h - 50.0);
            let ys: Vec<f64> = self
                .curves
                .iter()
                .flat_map(|c| c.points.iter().map(get))
                .collect();
            let y0 = ys.iter().copied().fold(f64::MAX, f64::min).min(1.0);
            let y1 = ys.iter().copied().fold(f64::MIN, f64::max).max(0.0);
            let (y0, y1) = if y1 - y0 < 1e-9 {
                (y0 - 0.01, y1 + 0.01)
            } else {
                (y0, y1)
            };
            let px = |x: f64| left + x / x1 * (right - left);
            let py = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{} on {}: {label}</text>"#,
                (left + right) / 2.0,
                self.method,
                xml(&self.data)
            );
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
                right - left,
                bottom - top
            );
            for i in 0..=4 {
                let fx = x1 * i as f64 / 4.0;
                let fy = y0 + (y1 - y0) * i as f64 / 4.0;
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}" text-anchor="middle">{fx:.2}</text><text x="{}" y="{:.1}" text-anchor="end">{:.1}</text>"#,
                    px(fx),
                    bottom + 18.0,
                    left - 6.0,
                    py(fy) + 4.0,
                    100.0 * fy
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#,
                (left + right) / 2.0,
                h - 12.0
            );
            for (c, curve) in self.curves.iter().enumerate() {
                let color = COLORS[c % COLORS.len()];
                let pts: Vec<String> = std::iter::once((0.0, if n == 0 { 0.0 } else { f64::NAN }))
                    .filter(|p| !p.1.is_nan())
                    .chain(curve.points.iter().map(|p| (p.epoch, get(p))))
                    .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                    pts.join(" ")
                );
            }
        }
        for (c, curve) in self.curves.iter().enumerate() {
            let color = COLORS[c % COLORS.len()];
            let (x, y) = (2.0 * panel_w + 4.0, 54.0 + 20.0 * c as f64);
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                x + 24.0,
                x + 30.0,
                y + 4.0,
                curve.name
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `report.json`, `report.csv` and `pdt.svg` into `root`.
    pub fn write(&self, root: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).expect("serialisable");
        json.push('\n');
        write_atomic(&root.join("report.json"), json.as_bytes())?;
        write_atomic(&root.join("report.csv"), self.csv().as_bytes())?;
        write_atomic(&root.join("pdt.svg"), self.svg().as_bytes())
    }
}
