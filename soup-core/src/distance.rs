//! Soup geometry (`soup distance`): how far apart checkpoints are, which
//! explains when their average works. Over the float tensors that the
//! selection picks, seen as one long vector per input: the pairwise L2
//! distances, the pairwise cosine similarities, and each input's L2
//! distance to the barycentre (the uniform mean of all inputs).
//!
//! One streaming pass through the driver of [`crate::stream`] with every
//! sum accumulated in f64: differences are summed directly (not derived
//! from dot products), so close inputs lose no precision to cancellation.
//! Memory is the stream's budget plus, per thread, one piece of every
//! input decoded to f64.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{align, Checkpoint, TensorEntry};
use crate::dtype::Accumulator;
use crate::error::{Error, Result};
use crate::select::Selection;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Units};

/// The geometry of a set of checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistanceReport {
    /// The inputs, in the order given.
    pub inputs: Vec<PathBuf>,
    /// `l2[i][j]`: the L2 norm of input i minus input j (symmetric, zero
    /// diagonal).
    pub l2: Vec<Vec<f64>>,
    /// `cosine[i][j]`: `<x_i, x_j> / (|x_i| |x_j|)`; `None` where either is
    /// all zeros.
    pub cosine: Vec<Vec<Option<f64>>>,
    /// L2 distance of each input to the barycentre (the mean of all
    /// inputs).
    pub to_barycentre: Vec<f64>,
    /// Float tensors compared.
    pub tensors: usize,
    /// Elements per input compared.
    pub elements: u64,
}

/// Sums of one piece (or of everything), in f64.
#[derive(Debug, Clone, Default)]
struct Sums {
    /// Per pair (i < j, row-major upper triangle): sum of (x_i - x_j)^2.
    diff2: Vec<f64>,
    /// Per pair (i <= j, at `i * n + j`): sum of x_i x_j.
    dot: Vec<f64>,
    /// Per input: sum of (x_i - mean)^2.
    bary2: Vec<f64>,
}

impl Sums {
    fn new(n: usize) -> Sums {
        Sums {
            diff2: vec![0.0; n * (n - 1) / 2],
            dot: vec![0.0; n * n],
            bary2: vec![0.0; n],
        }
    }
    fn add(&mut self, o: &Sums) {
        for (a, b) in self
            .diff2
            .iter_mut()
            .chain(&mut self.dot)
            .chain(&mut self.bary2)
            .zip(o.diff2.iter().chain(&o.dot).chain(&o.bary2))
        {
            *a += b;
        }
    }
}

/// Measures the geometry of `inputs` (at least two) over the float tensors
/// that `selection` picks. All inputs must hold the same tensor names,
/// shapes and dtypes; a selection of no float tensor is
/// [`Error::NothingSelected`].
pub fn distance(
    inputs: &[Checkpoint],
    selection: &Selection,
    control: &Control,
) -> Result<DistanceReport> {
    let n = inputs.len();
    if n < 2 {
        return Err(Error::invalid(format!(
            "distances need at least two checkpoints, got {n}"
        )));
    }
    let refs: Vec<&Checkpoint> = inputs.iter().collect();
    let entries: Vec<Vec<&TensorEntry>> = align(&refs)?
        .into_iter()
        .filter(|row| row[0].float_type().is_some() && selection.matches(&row[0].name))
        .collect();
    if entries.is_empty() {
        return Err(Error::NothingSelected {
            path: inputs[0].path().to_path_buf(),
            purpose: "to measure",
        });
    }
    let tensors = entries.len();
    let elements: u64 = entries.iter().map(|r| r[0].numel() as u64).sum();
    let rows = CheckpointRows::new(refs, entries, None);
    let mut total = Sums::new(n);
    drive(
        &rows,
        control,
        "measuring distances",
        Units::Pieces,
        |_| Ok(()),
        |piece, _, _| {
            let ty = rows
                .entry(piece.tensor, 0)
                .float_type()
                .expect("float rows");
            let values: Vec<Vec<f64>> = (0..n)
                .map(|k| {
                    let mut v = Vec::new();
                    f64::decode(rows.bytes(k, piece), ty, &mut v);
                    v
                })
                .collect();
            Ok(piece_sums(&values))
        },
        no_lag(),
        |_, results| {
            for r in results {
                total.add(r);
            }
            Ok(())
        },
    )?;
    let mut l2 = vec![vec![0.0; n]; n];
    let mut cosine = vec![vec![None; n]; n];
    let dot = |i: usize, j: usize| total.dot[i.min(j) * n + i.max(j)];
    // The pairs come in the order piece_sums adds them: (0, 1), (0, 2)...
    let pairs = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
    for ((i, j), d2) in pairs.zip(&total.diff2) {
        l2[i][j] = d2.sqrt();
        l2[j][i] = d2.sqrt();
    }
    for (i, row) in cosine.iter_mut().enumerate() {
        for (j, c) in row.iter_mut().enumerate() {
            let (ii, jj) = (dot(i, i), dot(j, j));
            *c = (ii > 0.0 && jj > 0.0).then(|| dot(i, j) / (ii.sqrt() * jj.sqrt()));
        }
    }
    Ok(DistanceReport {
        inputs: inputs.iter().map(|c| c.path().to_path_buf()).collect(),
        l2,
        cosine,
        to_barycentre: total.bary2.iter().map(|v| v.sqrt()).collect(),
        tensors,
        elements,
    })
}

/// The f64 sums of one piece; `values[k]` is input k's values.
fn piece_sums(values: &[Vec<f64>]) -> Sums {
    let n = values.len();
    let mut s = Sums::new(n);
    let len = values[0].len();
    let scale = 1.0 / n as f64;
    for e in 0..len {
        let mut mean = 0.0;
        for v in values {
            mean += v[e];
        }
        mean *= scale;
        let mut p = 0;
        for i in 0..n {
            let x = values[i][e];
            let b = x - mean;
            s.bary2[i] += b * b;
            for (j, v) in values.iter().enumerate().skip(i) {
                let y = v[e];
                s.dot[i * n + j] += x * y;
                if j > i {
                    let d = x - y;
                    s.diff2[p] += d * d;
                    p += 1;
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::write_test_checkpoint;
    use crate::stream::StreamOptions;
    use proptest::prelude::*;
    use safetensors::Dtype;
    use std::path::Path;

    /// Writes tensors `t{i}.weight` (F32, or F64 for the first) plus an
    /// I64 step counter, which distances skip.
    fn write(path: &Path, tensors: &[Vec<f64>]) {
        let mut all: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (dtype, bytes) = if i == 0 {
                    (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                } else {
                    let b = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                    (Dtype::F32, b)
                };
                (format!("t{i}.weight"), dtype, vec![v.len()], bytes)
            })
            .collect();
        all.push((
            "steps".into(),
            Dtype::I64,
            vec![1],
            7i64.to_le_bytes().to_vec(),
        ));
        write_test_checkpoint(path, &all);
    }

    /// The stored values of every float tensor, flattened (F32 rounded).
    fn flat(tensors: &[Vec<f64>]) -> Vec<f64> {
        tensors
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                v.iter()
                    .map(move |x| if i == 0 { *x } else { *x as f32 as f64 })
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Every figure equals a direct f64 computation on the flattened
        /// vectors; the matrices are symmetric with a zero diagonal (cosine
        /// one); tiny windows change nothing.
        #[test]
        fn matches_a_direct_f64_reference(
            models in (1usize..4, 2usize..5).prop_flat_map(|(t, m)| {
                prop::collection::vec(
                    prop::collection::vec(prop::collection::vec(-3.0f64..3.0, 1..40), t..=t),
                    m..=m,
                )
            }),
            budget in 16usize..400,
        ) {
            // All models share the first model's tensor sizes.
            let sizes: Vec<usize> = models[0].iter().map(Vec::len).collect();
            let models: Vec<Vec<Vec<f64>>> = models
                .into_iter()
                .map(|m| m.into_iter().zip(&sizes).map(|(mut v, &n)| { v.resize(n, 0.5); v }).collect())
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let inputs: Vec<Checkpoint> = models
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    let p = dir.path().join(format!("m{k}.safetensors"));
                    write(&p, m);
                    Checkpoint::open(&p).unwrap()
                })
                .collect();
            let control = Control {
                options: StreamOptions { budget_bytes: budget, piece_elems: 8 },
                ..Control::default()
            };
            let r = distance(&inputs, &Selection::default(), &control).unwrap();
            let x: Vec<Vec<f64>> = models.iter().map(|m| flat(m)).collect();
            let n = x.len();
            let len = x[0].len();
            prop_assert_eq!(r.elements, len as u64);
            prop_assert_eq!(r.tensors, sizes.len());
            let bary: Vec<f64> = (0..len).map(|e| x.iter().map(|v| v[e]).sum::<f64>() / n as f64).collect();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
            for i in 0..n {
                prop_assert_eq!(r.l2[i][i], 0.0);
                let b: f64 = (0..len).map(|e| (x[i][e] - bary[e]).powi(2)).sum::<f64>().sqrt();
                prop_assert!(close(r.to_barycentre[i], b), "{} vs {}", r.to_barycentre[i], b);
                for j in 0..n {
                    let d: f64 = (0..len).map(|e| (x[i][e] - x[j][e]).powi(2)).sum::<f64>().sqrt();
                    prop_assert!(close(r.l2[i][j], d), "l2 {} {}: {} vs {}", i, j, r.l2[i][j], d);
                    prop_assert_eq!(r.l2[i][j], r.l2[j][i]);
                    prop_assert_eq!(r.cosine[i][j], r.cosine[j][i]);
                    let dot: f64 = (0..len).map(|e| x[i][e] * x[j][e]).sum();
                    let ni: f64 = x[i].iter().map(|v| v * v).sum::<f64>().sqrt();
                    let nj: f64 = x[j].iter().map(|v| v * v).sum::<f64>().sqrt();
                    match r.cosine[i][j] {
                        Some(c) => prop_assert!(close(c, dot / (ni * nj)), "cos {} vs {}", c, dot / (ni * nj)),
                        None => prop_assert!(ni == 0.0 || nj == 0.0),
                    }
                }
            }
        }
    }

    #[test]
    fn selection_and_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        write(&a, &[vec![1.0, 0.0], vec![3.0]]);
        write(&b, &[vec![1.0, 0.0], vec![-1.0]]);
        let inputs = vec![Checkpoint::open(&a).unwrap(), Checkpoint::open(&b).unwrap()];
        let control = Control::default();
        let only_t0 = Selection::new(&["^t0".into()], &[]).unwrap();
        let r = distance(&inputs, &only_t0, &control).unwrap();
        assert_eq!((r.tensors, r.l2[0][1], r.cosine[0][1]), (1, 0.0, Some(1.0)));
        let r = distance(&inputs, &Selection::default(), &control).unwrap();
        assert_eq!(r.l2[0][1], 4.0);
        assert_eq!(r.to_barycentre, vec![2.0, 2.0]);
        let e = distance(&inputs[..1], &Selection::default(), &control).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let c = dir.path().join("c.safetensors");
        write(&c, &[vec![1.0, 0.0, 2.0], vec![3.0]]);
        let mismatched = vec![Checkpoint::open(&a).unwrap(), Checkpoint::open(&c).unwrap()];
        let e = distance(&mismatched, &Selection::default(), &control).unwrap_err();
        assert!(matches!(e, Error::Mismatch(_)), "{e}");
    }
}
