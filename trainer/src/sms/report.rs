//! The run's report: `report.json`, `report.csv`, a table for the terminal
//! and a plot of test accuracy against sparsity (`accuracy_vs_sparsity.svg`).
//!
//! The report holds only results, no timings, so a run that was killed and
//! resumed reports exactly what an uninterrupted run reports.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::sms::config::Baseline;
use crate::sms::layout::Chain;
use crate::sms::steps::{CandidateInfo, Evaluation, PhaseInfo, Session};

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
    /// Soup test top-1 accuracy.
    pub soup_test_acc: f64,
    /// Soup validation top-1 accuracy.
    pub soup_val_acc: f64,
    /// Soup class-balanced test accuracy (extra column).
    pub soup_test_balanced_acc: f64,
    /// Soup test expected calibration error, 15 bins (extra column).
    pub soup_test_ece: f64,
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
    /// IMP-RePrune, if run.
    pub reprune_test_acc: Option<f64>,
    /// Sparsity of the IMP-RePrune model over prunable weights, if run.
    pub reprune_sparsity: Option<f64>,
    /// The soup checkpoint, relative to the run folder.
    pub soup_checkpoint: PathBuf,
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
    /// One entry per phase.
    pub phases: Vec<PhaseRow>,
}

fn candidate_acc(session: &Session, chain: Chain, phase: u32) -> Result<Option<CandidateInfo>> {
    let (_, info) = session.candidate_path(chain, phase, 0);
    if !info.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&info).map_err(|e| Error::io(&info, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Run(format!("{}: {e}", info.display())))
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
        let baseline = |b: Baseline, chain: Chain| -> Result<Option<CandidateInfo>> {
            if baselines.contains(&b) {
                candidate_acc(session, chain, p)
            } else {
                Ok(None)
            }
        };
        let reprune = baseline(Baseline::Reprune, Chain::Reprune)?;
        rows.push(PhaseRow {
            phase: p,
            sparsity: info.soup.sparsity,
            sparsity_all_params: info.soup.sparsity_all,
            parent_sparsity: info.prune.sparsity,
            soup_test_acc: info.soup.test.top1,
            soup_val_acc: info.soup.val.top1,
            soup_test_balanced_acc: info.soup.test.balanced_accuracy,
            soup_test_ece: info.soup.test.ece,
            best_candidate: best.index,
            best_candidate_test_acc: best.eval.test.top1,
            mean_candidate_test_acc: mean,
            soup_candidates: info.chosen.clone(),
            imp_test_acc: baseline(Baseline::Imp, Chain::Imp(0))?.map(|c| c.eval.test.top1),
            imp_long_test_acc: baseline(Baseline::ImpLong, Chain::ImpLong)?
                .map(|c| c.eval.test.top1),
            reprune_test_acc: reprune.as_ref().map(|c| c.eval.test.top1),
            reprune_sparsity: reprune.as_ref().map(|c| c.eval.sparsity),
            soup_checkpoint: info.soup_path.clone(),
        });
    }
    Ok(Report {
        data: session.cfg.data.clone(),
        model: session.cfg.model.clone(),
        candidates: session.cfg.candidates,
        soup: format!("{:?}", session.cfg.soup).to_lowercase(),
        dense_test_acc: dense.test.top1,
        phases: rows,
    })
}

/// A plotted line: label, colour, (sparsity, accuracy) points.
type Series = (&'static str, &'static str, Vec<(f64, f64)>);

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
            ("soup", col(&|r| pct(r.soup_test_acc))),
            ("best_cand", col(&|r| pct(r.best_candidate_test_acc))),
            ("mean_cand", col(&|r| pct(r.mean_candidate_test_acc))),
        ];
        let any = |f: &dyn Fn(&PhaseRow) -> bool| self.phases.iter().any(f);
        if any(&|r| r.imp_test_acc.is_some()) {
            cols.push(("imp", col(&|r| opt_pct(r.imp_test_acc))));
        }
        if any(&|r| r.imp_long_test_acc.is_some()) {
            cols.push(("imp_long", col(&|r| opt_pct(r.imp_long_test_acc))));
        }
        if any(&|r| r.reprune_test_acc.is_some()) {
            cols.push(("reprune", col(&|r| opt_pct(r.reprune_test_acc))));
        }
        cols.push(("soup_bal_acc", col(&|r| pct(r.soup_test_balanced_acc))));
        cols.push(("soup_ece", col(&|r| format!("{:.4}", r.soup_test_ece))));
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
             imp_long_test_acc,reprune_test_acc,soup_test_balanced_acc,soup_test_ece,soup_checkpoint\n",
        );
        let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
        for r in &self.phases {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
                r.soup_checkpoint.display()
            );
        }
        out
    }

    /// A line plot of test accuracy against sparsity, one line per method.
    pub fn svg(&self) -> String {
        let mut series: Vec<Series> = vec![
            (
                "SMS soup",
                "#d62728",
                self.phases
                    .iter()
                    .map(|r| (r.sparsity, r.soup_test_acc))
                    .collect(),
            ),
            (
                "best candidate",
                "#1f77b4",
                self.phases
                    .iter()
                    .map(|r| (r.sparsity, r.best_candidate_test_acc))
                    .collect(),
            ),
            (
                "mean candidate",
                "#7f7f7f",
                self.phases
                    .iter()
                    .map(|r| (r.sparsity, r.mean_candidate_test_acc))
                    .collect(),
            ),
        ];
        let opt = |f: &dyn Fn(&PhaseRow) -> Option<f64>, sp: &dyn Fn(&PhaseRow) -> f64| {
            self.phases
                .iter()
                .filter_map(|r| f(r).map(|a| (sp(r), a)))
                .collect::<Vec<_>>()
        };
        series.push((
            "IMP",
            "#2ca02c",
            opt(&|r| r.imp_test_acc, &|r| r.parent_sparsity),
        ));
        series.push((
            "IMP long",
            "#9467bd",
            opt(&|r| r.imp_long_test_acc, &|r| r.parent_sparsity),
        ));
        series.push((
            "IMP-RePrune",
            "#ff7f0e",
            opt(&|r| r.reprune_test_acc, &|r| {
                r.reprune_sparsity.unwrap_or(r.parent_sparsity)
            }),
        ));
        series.retain(|s| !s.2.is_empty());

        let (w, h, left, right, top, bottom) = (640.0, 420.0, 70.0, 170.0, 40.0, 55.0);
        let pts = series.iter().flat_map(|s| s.2.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x1 - x0 < 1e-9 {
            x0 -= 0.05;
            x1 += 0.05;
        }
        let pad = ((y1 - y0) * 0.1).max(0.002);
        y0 -= pad;
        y1 += pad;
        let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
        let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{} on {}: test accuracy against sparsity</text>"#,
            (w - right + left) / 2.0,
            self.model,
            self.data
        );
        let (bx0, bx1, by0, by1) = (left, w - right, top, h - bottom);
        let _ = writeln!(
            s,
            r#"<rect x="{bx0}" y="{by0}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            bx1 - bx0,
            by1 - by0
        );
        for i in 0..=4 {
            let fx = x0 + (x1 - x0) * i as f64 / 4.0;
            let fy = y0 + (y1 - y0) * i as f64 / 4.0;
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" y1="{by1}" x2="{0:.1}" y2="{1}" stroke="black"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3:.1}</text>"#,
                px(fx),
                by1 + 5.0,
                by1 + 20.0,
                100.0 * fx
            );
            let _ = writeln!(
                s,
                r##"<line x1="{bx0}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.2}</text>"##,
                py(fy),
                bx1,
                bx0 - 6.0,
                py(fy) + 4.0,
                100.0 * fy
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">sparsity over prunable weights (%)</text>"#,
            (bx0 + bx1) / 2.0,
            h - 12.0
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">test top-1 accuracy (%)</text>"#,
            (by0 + by1) / 2.0
        );
        for (k, (name, color, points)) in series.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
            let ly = top + 14.0 + 20.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{2}" y="{3}">{name}</text>"#,
                w - right + 12.0,
                w - right + 36.0,
                w - right + 42.0,
                ly + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `report.json`, `report.csv` and the plot into the run folder.
    pub fn write(&self, session: &Session) -> Result<()> {
        let layout = &session.layout;
        let mut json = serde_json::to_string_pretty(self).expect("serialisable");
        json.push('\n');
        write_atomic(&layout.report_json(), json.as_bytes())?;
        write_atomic(&layout.report_csv(), self.csv().as_bytes())?;
        write_atomic(&layout.plot(), self.svg().as_bytes())
    }
}
