//! Repeats of a whole run, whatever the method: the run made R times with
//! base seeds `seed + 1000 r`, each in `RUN/repeat-r/` (an ordinary run,
//! resumable on its own), and the summary of how much of each difference
//! is noise.
//!
//! ```text
//! RUN/config.toml           the configuration, with `repeats = R`
//! RUN/repeat-R/             a complete run with base seed `seed + 1000 R`
//! RUN/summary.json, summary.csv, summary.svg
//! ```
//!
//! A method maps each repeat's report to [`Row`]s (a group of models at one
//! sparsity: a phase of IMP, the end of a pruning-during-training run) and
//! [`summarise`] gives, per row and model, the mean and sample standard
//! deviation over repeats, and the paired differences between the soup and
//! each other model (per repeat, then mean and standard deviation): pairing
//! removes what the models of one repeat share (dense parent, data order).
//! [`table`] and [`csv`] give the printed table and `summary.csv`, and
//! [`write()`] writes the summary files with the method's figure (each point
//! the mean, with an error bar of ± one standard deviation).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::plot::Figure;

/// Base seeds of repeats are this far apart, so that candidate seeds
/// (base + i) of different repeats never coincide.
pub const SEED_STRIDE: u64 = 1000;

/// The base seed of repeat `r` of a run with base seed `seed`.
pub fn repeat_seed(seed: u64, r: u32) -> u64 {
    seed + SEED_STRIDE * r as u64
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
    pub fn pct(&self) -> String {
        format!("{:.2}±{:.2}", 100.0 * self.mean, 100.0 * self.std)
    }
}

/// One model of one report row, as repeats compare it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The model's name in the summary (`soup`, `imp`, `gmp+sms`, ...).
    pub name: String,
    /// Test top-1 accuracy.
    pub test_acc: f64,
    /// Mean test accuracy under corruptions, when measured.
    pub ood_acc: Option<f64>,
}

/// One row of one repeat's report: models compared at one sparsity.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based phase (1 where a method has a single row).
    pub phase: u32,
    /// The soup's sparsity over the pruned weights.
    pub sparsity: f64,
    /// The models, the soup among them.
    pub models: Vec<Measured>,
    /// The mean rate at which two of the soup's candidates' test
    /// predictions differ, when measured.
    pub disagreement: Option<f64>,
}

/// One model of one row over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStats {
    /// Test top-1 accuracy.
    pub test_acc: Stat,
    /// Mean test accuracy under corruptions, when every repeat measured it.
    pub ood_acc: Option<Stat>,
}

/// One row over the repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSummary {
    /// 1-based phase (1 where a method has a single row).
    pub phase: u32,
    /// The soup's sparsity over the pruned weights.
    pub sparsity: Stat,
    /// By model: the soup and every model compared with it that all
    /// repeats have.
    pub models: BTreeMap<String, ModelStats>,
    /// Test accuracy of the soup minus that of each other model, paired
    /// within each repeat.
    pub soup_minus: BTreeMap<String, Stat>,
    /// The candidates' mean pairwise disagreement on test predictions,
    /// when every repeat measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<Stat>,
}

/// Summarises the rows of the repeats (`reports[r]`: repeat `r`'s rows,
/// same configuration but seed); `soup` names the model the others are
/// compared with.
pub fn summarise(reports: &[Vec<Row>], soup: &str) -> Result<Vec<PhaseSummary>> {
    let first = reports
        .first()
        .ok_or_else(|| Error::Run("no repeats to summarise".into()))?;
    let mut phases = Vec::new();
    for (p, row0) in first.iter().enumerate() {
        let rows: Vec<&Row> = reports
            .iter()
            .map(|r| {
                r.get(p)
                    .ok_or_else(|| Error::Run(format!("a repeat lacks phase {}", p + 1)))
            })
            .collect::<Result<_>>()?;
        let per_repeat: Vec<BTreeMap<&str, &Measured>> = rows
            .iter()
            .map(|r| r.models.iter().map(|m| (m.name.as_str(), m)).collect())
            .collect();
        let soup_acc = |m: &BTreeMap<&str, &Measured>| {
            m.get(soup)
                .map(|s| s.test_acc)
                .ok_or_else(|| Error::Run(format!("phase {}: a repeat has no {soup} model", p + 1)))
        };
        let soups: Vec<f64> = per_repeat.iter().map(soup_acc).collect::<Result<_>>()?;
        let mut models = BTreeMap::new();
        let mut soup_minus = BTreeMap::new();
        for m0 in &row0.models {
            let name = m0.name.as_str();
            let Some(values) = per_repeat
                .iter()
                .map(|m| m.get(name).copied())
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let ood: Option<Vec<f64>> = values.iter().map(|v| v.ood_acc).collect();
            models.insert(
                name.to_string(),
                ModelStats {
                    test_acc: Stat::of(values.iter().map(|v| v.test_acc).collect()),
                    ood_acc: ood.map(Stat::of),
                },
            );
            if name != soup {
                let diffs = soups.iter().zip(&values).map(|(s, v)| s - v.test_acc);
                soup_minus.insert(name.to_string(), Stat::of(diffs.collect()));
            }
        }
        let disagreement: Option<Vec<f64>> = rows.iter().map(|r| r.disagreement).collect();
        phases.push(PhaseSummary {
            phase: row0.phase,
            sparsity: Stat::of(rows.iter().map(|r| r.sparsity).collect()),
            models,
            soup_minus,
            disagreement: disagreement.map(Stat::of),
        });
    }
    Ok(phases)
}

/// The table printed at the end of repeats: per row, test accuracy of each
/// model named in `columns` that every row has (in that order, the soup
/// first) as mean ± standard deviation over repeats (in %), then the
/// soup's paired lead over each other model (headed `soup-SHORT`, `short`
/// giving the short names), then the soup's accuracy under corruptions
/// and the candidates' disagreement (`disagree%`) where every row has
/// them. `title` is the first line.
pub fn table(
    title: &str,
    phases: &[PhaseSummary],
    columns: &[&str],
    short: impl Fn(&str) -> String,
) -> String {
    let names: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|n| phases.iter().all(|p| p.models.contains_key(*n)))
        .collect();
    let mut header = vec!["phase".to_string(), "sparsity%".to_string()];
    header.extend(names.iter().map(|n| n.to_string()));
    header.extend(names.iter().skip(1).map(|n| format!("soup-{}", short(n))));
    let soup = names.first().copied();
    let ood = |p: &PhaseSummary| soup.and_then(|s| p.models[s].ood_acc.clone());
    let with_ood = soup.is_some() && phases.iter().all(|p| ood(p).is_some());
    if with_ood {
        header.push("soup_ood".into());
    }
    let with_disagreement = phases.iter().all(|p| p.disagreement.is_some());
    if with_disagreement {
        header.push("disagree%".into());
    }
    let mut rows = vec![header];
    for p in phases {
        let mut row = vec![
            p.phase.to_string(),
            format!("{:.2}", 100.0 * p.sparsity.mean),
        ];
        row.extend(names.iter().map(|n| p.models[*n].test_acc.pct()));
        row.extend(names.iter().skip(1).map(|n| p.soup_minus[*n].pct()));
        if let Some(o) = ood(p).filter(|_| with_ood) {
            row.push(o.pct());
        }
        if let Some(d) = p.disagreement.as_ref().filter(|_| with_disagreement) {
            row.push(d.pct());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
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

/// `summary.csv`: one line per row and model, mean and std of test
/// accuracy, of accuracy under corruptions and of the soup's paired lead
/// over it, and the row's disagreement of the candidates (the same on
/// every line of the row; empty where not measured).
pub fn csv(phases: &[PhaseSummary]) -> String {
    let mut out = String::from(
        "phase,model,test_acc_mean,test_acc_std,ood_acc_mean,ood_acc_std,\
         soup_minus_mean,soup_minus_std,repeats,disagreement_mean,disagreement_std\n",
    );
    for p in phases {
        for (name, m) in &p.models {
            let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
            let d = p.soup_minus.get(name);
            let agree = p.disagreement.as_ref();
            let _ = writeln!(
                out,
                "{},{name},{},{},{},{},{},{},{},{},{}",
                p.phase,
                m.test_acc.mean,
                m.test_acc.std,
                o(m.ood_acc.as_ref().map(|s| s.mean)),
                o(m.ood_acc.as_ref().map(|s| s.std)),
                o(d.map(|s| s.mean)),
                o(d.map(|s| s.std)),
                m.test_acc.values.len(),
                o(agree.map(|s| s.mean)),
                o(agree.map(|s| s.std))
            );
        }
    }
    out
}

/// Writes `summary.json` (`summary`), `summary.csv` (`csv`) and
/// `summary.svg` (`figure`) into `root`; the plot is drawn before anything
/// is written.
pub fn write(root: &Path, summary: &impl Serialize, csv: &str, figure: &Figure) -> Result<()> {
    let mut json = serde_json::to_string_pretty(summary).expect("serialisable");
    json.push('\n');
    let svg = figure.svg().map_err(|e| Error::Run(e.to_string()))?;
    write_atomic(&root.join("summary.json"), json.as_bytes())?;
    write_atomic(&root.join("summary.csv"), csv.as_bytes())?;
    write_atomic(&root.join("summary.svg"), svg.as_bytes())
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

    fn row(soup: f64, other: f64) -> Vec<Row> {
        let m = |name: &str, test_acc| Measured {
            name: name.into(),
            test_acc,
            ood_acc: None,
        };
        vec![Row {
            phase: 1,
            sparsity: 0.5,
            models: vec![m("gmp+sms", soup), m("gmp", other)],
            disagreement: None,
        }]
    }

    #[test]
    fn disagreement_is_summarised_when_every_repeat_measured_it() {
        let with = |d: Option<f64>| {
            let mut r = row(0.9, 0.8);
            r[0].disagreement = d;
            r
        };
        let phases = summarise(&[with(Some(0.1)), with(Some(0.3))], "gmp+sms").unwrap();
        let d = phases[0].disagreement.as_ref().unwrap();
        assert!((d.mean - 0.2).abs() < 1e-12 && (d.std - 0.02f64.sqrt()).abs() < 1e-12);
        let t = table("t", &phases, &["gmp+sms", "gmp"], |n| n.to_string());
        let (header, values) = (t.lines().nth(1).unwrap(), t.lines().nth(2).unwrap());
        assert!(header.ends_with("disagree%"), "{t}");
        assert!(values.ends_with(&d.pct()), "{t}");
        let c = csv(&phases);
        assert!(
            c.lines()
                .nth(1)
                .unwrap()
                .ends_with(&format!(",{},{}", d.mean, d.std)),
            "{c}"
        );
        // One repeat without it (a run folder from before): no column.
        let phases = summarise(&[with(Some(0.1)), with(None)], "gmp+sms").unwrap();
        assert!(phases[0].disagreement.is_none());
        let t = table("t", &phases, &["gmp+sms", "gmp"], |n| n.to_string());
        assert!(!t.contains("disagree"), "{t}");
    }

    #[test]
    fn the_soup_is_compared_with_every_other_model_within_each_repeat() {
        let phases = summarise(&[row(0.9, 0.8), row(0.7, 0.4)], "gmp+sms").unwrap();
        let d = &phases[0].soup_minus["gmp"];
        assert!((d.mean - 0.2).abs() < 1e-12, "{d:?}");
        assert!(!phases[0].soup_minus.contains_key("gmp+sms"));
        let t = table("t", &phases, &["gmp+sms", "gmp"], |n| n.to_string());
        assert!(t.contains("soup-gmp"), "{t}");
        assert_eq!(csv(&phases).lines().count(), 3);
        let err = summarise(&[row(0.9, 0.8)], "soup").unwrap_err();
        assert!(err.to_string().contains("no soup model"), "{err}");
    }
}
