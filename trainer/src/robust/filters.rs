//! The image operations behind the corruptions ([`super::corrupt`]):
//! the defocus kernel, zoom and box resampling, the plasma fractal of fog,
//! and RGB/HSV conversion, each following the published CIFAR-10-C code
//! (OpenCV, scikit-image and PIL semantics where it calls them).

use crate::rng::Rng;
use crate::robust::noise::uniform_in;

/// A square kernel of side `2 * radius + 1`, row after row.
pub(super) struct Kernel {
    pub(super) radius: usize,
    pub(super) weights: Vec<f64>,
}

/// The published defocus kernel: a disk of `radius` on a 17x17 grid,
/// normalised, smoothed by a 3x3 Gaussian of sigma `alias` (OpenCV's
/// `GaussianBlur`; sigma 0 means no smoothing here), cut to its support.
pub(super) fn defocus_kernel(radius: f64, alias: f64) -> Kernel {
    const R: isize = 8;
    let side = (2 * R + 1) as usize;
    let mut disk: Vec<f64> = (-R..=R)
        .flat_map(|y| {
            (-R..=R).map(move |x| ((x * x + y * y) as f64 <= radius * radius) as u8 as f64)
        })
        .collect();
    let sum: f64 = disk.iter().sum();
    disk.iter_mut().for_each(|x| *x /= sum);
    if alias > 0.0 {
        let g: Vec<f64> = [-1.0f64, 0.0, 1.0]
            .iter()
            .map(|i| (-(i * i) / (2.0 * alias * alias)).exp())
            .collect();
        let gs: f64 = g.iter().sum();
        let g: Vec<f64> = g.iter().map(|x| x / gs).collect();
        let mut out = vec![0.0; side * side];
        // The disk sits far from the grid's edge, so no border rule is needed.
        for y in 1..side - 1 {
            for x in 1..side - 1 {
                let mut acc = 0.0;
                for (dy, gy) in g.iter().enumerate() {
                    for (dx, gx) in g.iter().enumerate() {
                        acc += gy * gx * disk[(y + dy - 1) * side + (x + dx - 1)];
                    }
                }
                out[y * side + x] = acc;
            }
        }
        disk = out;
    }
    let centre = R as usize;
    let radius = (0..side * side)
        .filter(|&i| disk[i] != 0.0)
        .map(|i| (i / side).abs_diff(centre).max((i % side).abs_diff(centre)))
        .max()
        .unwrap_or(0);
    let weights = (centre - radius..=centre + radius)
        .flat_map(|y| (centre - radius..=centre + radius).map(move |x| (y, x)))
        .map(|(y, x)| disk[y * side + x])
        .collect();
    Kernel { radius, weights }
}

/// scipy's `zoom(crop, factor, order=1)` of the centre crop of a plane,
/// trimmed to `h x w`.
pub(super) fn clipped_zoom(plane: &[f64], h: usize, w: usize, z: f64) -> Vec<f64> {
    let axis = |n: usize| {
        let crop = ((n as f64 / z).ceil() as usize).clamp(1, n);
        let top = (n - crop) / 2;
        let out = ((crop as f64 * z).round() as usize).max(n);
        let trim = (out - n) / 2;
        // Output pixel i of the zoom samples input coordinate
        // i * (crop - 1) / (out - 1) (scipy's corner-aligned grid).
        (0..n)
            .map(|i| {
                let o = (i + trim) as f64;
                let c = if out > 1 {
                    o * (crop - 1) as f64 / (out - 1) as f64
                } else {
                    0.0
                };
                let lo = (c.floor() as usize).min(crop - 1);
                let hi = (lo + 1).min(crop - 1);
                (top + lo, top + hi, c - lo as f64)
            })
            .collect::<Vec<_>>()
    };
    let (ys, xs) = (axis(h), axis(w));
    let mut out = vec![0.0; h * w];
    for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
            let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
            out[y * w + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// The weights of PIL's box resampling from `n_in` to `n_out` samples: for
/// each output sample, its first input index and the weights that follow.
pub(super) fn box_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filter_scale = scale.max(1.0);
    let support = 0.5 * filter_scale;
    (0..n_out)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(n_in);
            let mut ws: Vec<f64> = (lo..hi)
                .map(|x| {
                    let t = (x as f64 - centre + 0.5) / filter_scale;
                    if t > -0.5 && t <= 0.5 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter_mut().for_each(|x| *x /= sum);
            }
            (lo, ws)
        })
        .collect()
}

/// Separable box resampling of one plane, rows then columns.
pub(super) fn box_resize(plane: &[f64], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f64> {
    let (wx, wy) = (box_weights(w, ow), box_weights(h, oh));
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for (x, (lo, ws)) in wx.iter().enumerate() {
            rows[y * ow + x] = ws
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * plane[y * w + lo + k])
                .sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for (y, (lo, ws)) in wy.iter().enumerate() {
        for x in 0..ow {
            out[y * ow + x] = ws
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * rows[(lo + k) * ow + x])
                .sum();
        }
    }
    out
}

/// A `size x size` height map in [0, 1] by the diamond-square algorithm on
/// a torus, as the published fog uses it: each new point is the mean of its
/// four neighbours plus `wibble * U(-wibble, wibble)` (the published code
/// scales by the wibble twice, and so do we: it is part of the parameters),
/// with `wibble` starting at 100 and divided by `decay` after each level.
pub(super) fn plasma_fractal(size: usize, decay: f64, rng: &mut Rng) -> Vec<f64> {
    let mut m = vec![0.0; size * size];
    let mut wibble = 100.0;
    let mut step = size;
    while step >= 2 {
        let half = step / 2;
        let n = size / step;
        let mut noisy =
            |sum: f64, wibble: f64| sum / 4.0 + wibble * uniform_in(rng, -wibble, wibble);
        let at = |i: usize, j: usize| (i % n) * step * size + (j % n) * step;
        // Squares: centre = mean of the four corners.
        for i in 0..n {
            for j in 0..n {
                let sum = m[at(i, j)] + m[at(i + 1, j)] + m[at(i, j + 1)] + m[at(i + 1, j + 1)];
                m[(i * step + half) * size + j * step + half] = noisy(sum, wibble);
            }
        }
        // Diamonds: the points between two corners, from the two corners and
        // the two square centres beside them.
        let centre = |i: usize, j: usize| ((i % n) * step + half) * size + (j % n) * step + half;
        for i in 0..n {
            for j in 0..n {
                let sum = m[centre(i, j)] + m[centre(i + n - 1, j)] + m[at(i, j)] + m[at(i, j + 1)];
                m[i * step * size + j * step + half] = noisy(sum, wibble);
            }
        }
        for i in 0..n {
            for j in 0..n {
                let sum = m[centre(i, j)] + m[centre(i, j + n - 1)] + m[at(i, j)] + m[at(i + 1, j)];
                m[(i * step + half) * size + j * step] = noisy(sum, wibble);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = m.iter().copied().fold(f64::INFINITY, f64::min);
    m.iter_mut().for_each(|x| *x -= min);
    let max = m.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        m.iter_mut().for_each(|x| *x /= max);
    }
    m
}

/// skimage's `rgb2hsv` for one pixel; hue in [0, 1).
pub(super) fn rgb_to_hsv(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    let s = if v > 0.0 { delta / v } else { 0.0 };
    if delta == 0.0 {
        return (0.0, s, v);
    }
    let h = if r == v {
        (g - b) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        4.0 + (r - g) / delta
    };
    ((h / 6.0).rem_euclid(1.0), s, v)
}

/// skimage's `hsv2rgb` for one pixel.
pub(super) fn hsv_to_rgb(h: f64, s: f64, v: f64) -> (f64, f64, f64) {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match (hi as i64).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}
