//! How differently a soup's candidates predict: for every pair of
//! candidates, the share of clean test images on which their top-1
//! predictions differ, and the mean, lowest and highest of those rates.
//! A soup can gain over its candidates only where they differ in what they
//! predict (their prediction ensemble beats a single one); identical
//! candidates disagree nowhere. The predictions come from the one
//! evaluation path: `trainer sms` reads them off the ensemble pass over its
//! recalibrated candidates ([`crate::pipeline::Workspace::evaluate_ensemble`]);
//! `trainer pdt` predicts with each soup segment's candidates as the method
//! delivers them, batch-norm statistics as training left them
//! ([`crate::pipeline::Workspace::disagreement`]).

use serde::{Deserialize, Serialize};

/// The disagreement of one pair of candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairDisagreement {
    /// The first candidate's index.
    pub a: u32,
    /// The second candidate's index (greater than `a`).
    pub b: u32,
    /// Share of test images whose top-1 predictions differ, in [0, 1].
    pub rate: f64,
}

/// The disagreement of a group of candidates (at least two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disagreement {
    /// Mean over all pairs of candidates.
    pub mean: f64,
    /// The lowest pair's rate.
    pub min: f64,
    /// The highest pair's rate.
    pub max: f64,
    /// Test images compared.
    pub images: usize,
    /// Every pair, in order (0-1, 0-2, ..., 1-2, ...).
    pub pairs: Vec<PairDisagreement>,
}

impl Disagreement {
    /// The disagreement of the candidates whose test predictions are
    /// `predictions[i]` (candidate `i`, one class index per image, the
    /// same images in the same order); `None` for fewer than two
    /// candidates or no images.
    pub fn of(predictions: &[Vec<i64>]) -> Option<Disagreement> {
        let images = predictions.first()?.len();
        if predictions.len() < 2 || images == 0 {
            return None;
        }
        assert!(
            predictions.iter().all(|p| p.len() == images),
            "every candidate predicts the same images"
        );
        let mut pairs = Vec::new();
        for (a, pa) in predictions.iter().enumerate() {
            for (b, pb) in predictions.iter().enumerate().skip(a + 1) {
                let differ = pa.iter().zip(pb).filter(|(x, y)| x != y).count();
                pairs.push(PairDisagreement {
                    a: a as u32,
                    b: b as u32,
                    rate: differ as f64 / images as f64,
                });
            }
        }
        let rates = pairs.iter().map(|p| p.rate);
        Some(Disagreement {
            mean: rates.clone().sum::<f64>() / pairs.len() as f64,
            min: rates.clone().fold(f64::INFINITY, f64::min),
            max: rates.fold(0.0, f64::max),
            images,
            pairs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_is_counted_once_and_summarised() {
        let p = vec![vec![0, 1, 2, 3], vec![0, 1, 2, 0], vec![1, 0, 2, 0]];
        let d = Disagreement::of(&p).unwrap();
        let rates: Vec<(u32, u32, f64)> = d.pairs.iter().map(|p| (p.a, p.b, p.rate)).collect();
        assert_eq!(rates, [(0, 1, 0.25), (0, 2, 0.75), (1, 2, 0.5)]);
        assert_eq!((d.min, d.max, d.images), (0.25, 0.75, 4));
        assert!((d.mean - 0.5).abs() < 1e-12);
        let same = Disagreement::of(&[vec![3, 1], vec![3, 1]]).unwrap();
        assert_eq!((same.mean, same.max), (0.0, 0.0));
        assert!(Disagreement::of(&[vec![1, 2]]).is_none());
        assert!(Disagreement::of(&[]).is_none());
    }
}
