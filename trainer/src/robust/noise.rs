//! Random draws for the corruptions: uniform, normal and Poisson variates on
//! top of the trainer's seeded [`Rng`], so that a corrupted image depends
//! only on its seed and is the same on every platform and thread count.

use crate::rng::Rng;

/// A uniform draw from [0, 1) with 53 random bits.
pub(crate) fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw from [lo, hi).
pub(crate) fn uniform_in(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * uniform(rng)
}

/// A standard normal draw (Box-Muller; the second value is dropped so that
/// every draw consumes the same number of random bits).
pub(crate) fn normal(rng: &mut Rng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u = 1.0 - uniform(rng);
    let v = uniform(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// An integer drawn uniformly from `lo..hi` (hi > lo), like numpy's
/// `randint(lo, hi)`.
pub(crate) fn int_in(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    lo + rng.below((hi - lo) as usize) as i64
}

/// A Poisson draw with mean `lambda` >= 0.
///
/// Small means multiply uniforms (Knuth); from 10 on it is Hörmann's
/// transformed rejection with squeeze (PTRS, 1993), whose cost does not grow
/// with the mean: shot noise draws means up to 500 per pixel.
pub(crate) fn poisson(rng: &mut Rng, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 10.0 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, uniform(rng));
        while p > limit {
            k += 1.0;
            p *= uniform(rng);
        }
        return k;
    }
    let slam = lambda.sqrt();
    let loglam = lambda.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = uniform(rng) - 0.5;
        let v = uniform(rng);
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
        if lhs <= -lambda + k * loglam - ln_gamma(k + 1.0) {
            return k;
        }
    }
}

/// ln Γ(x) for x > 0 by the Lanczos approximation (g = 7, 9 terms), good
/// to about 1e-15 relative: all PTRS needs.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for k in 1..30 {
            fact *= k as f64;
            let want = fact.ln();
            assert!((ln_gamma(k as f64 + 1.0) - want).abs() < 1e-10 * want.max(1.0));
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn normal_has_mean_zero_and_unit_variance() {
        let mut rng = Rng::new(1, 2);
        let xs: Vec<f64> = (0..40_000).map(|_| normal(&mut rng)).collect();
        let (m, v) = moments(&xs);
        assert!(m.abs() < 0.02, "mean {m}");
        assert!((v - 1.0).abs() < 0.03, "variance {v}");
    }

    #[test]
    fn poisson_mean_equals_variance_equals_lambda() {
        // Both branches: multiplication below 10, rejection above.
        for lambda in [0.7, 4.0, 12.0, 60.0, 500.0] {
            let mut rng = Rng::new(3, lambda as u64);
            let xs: Vec<f64> = (0..40_000).map(|_| poisson(&mut rng, lambda)).collect();
            assert!(xs.iter().all(|x| *x >= 0.0 && x.fract() == 0.0));
            let (m, v) = moments(&xs);
            let se = (lambda / 40_000.0).sqrt();
            assert!((m - lambda).abs() < 5.0 * se, "lambda {lambda}: mean {m}");
            assert!(
                (v / lambda - 1.0).abs() < 0.05,
                "lambda {lambda}: variance {v}"
            );
        }
        // P(X = 0) for lambda = 12 is e^-12; P(X = 12) is about 0.114.
        let mut rng = Rng::new(4, 0);
        let hits = (0..40_000)
            .filter(|_| poisson(&mut rng, 12.0) == 12.0)
            .count() as f64;
        assert!((hits / 40_000.0 - 0.11437).abs() < 0.01, "{hits}");
    }
}
