//! The corruption families of CIFAR-10-C (Hendrycks and Dietterich, ICLR
//! 2019), generated in Rust for any image size, grey or colour.
//!
//! Each corruption maps one image of bytes to another, with the published
//! CIFAR-10-C parameters for severities 1 to 5 and a severity 0 whose
//! parameters do nothing (noise of scale 0, a blur of radius 0, contrast
//! factor 1, ...), so that the identity is a point of the same formula rather
//! than a special case. Pixels are worked on as floats in [0, 1], clipped and
//! rounded back to bytes at the end; the published sets truncate instead,
//! which darkens every image by half a grey level on average and would make
//! severity 0 differ from the clean image.
//!
//! Where the published code is written for 32x32 images, the same rule is
//! applied to the image's own size: the fog's fractal is made on the next
//! power of two and cropped, pixelation scales each side by the published
//! factor, glass blur shuffles pixels over the whole interior. Randomness
//! comes from a generator seeded by (corruption, severity, image index), so a
//! corrupted test set is the same whatever the batch size, thread count or
//! order in which images are made.

use crate::rng::Rng;
use crate::robust::filters::{
    box_resize, clipped_zoom, defocus_kernel, hsv_to_rgb, plasma_fractal, rgb_to_hsv, Kernel,
};
use crate::robust::noise::{int_in, normal, poisson, uniform};

/// The highest severity; 0 is the identity.
pub const MAX_SEVERITY: u8 = 5;

/// One corruption family. Names are those of the CIFAR-10-C files
/// (`gaussian_noise.npy`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Corruption {
    /// Additive normal noise.
    GaussianNoise,
    /// Poisson (photon) noise.
    ShotNoise,
    /// Salt-and-pepper noise on single pixel values.
    ImpulseNoise,
    /// Multiplicative normal noise.
    SpeckleNoise,
    /// Gaussian blur.
    GaussianBlur,
    /// Convolution with an anti-aliased disk (an out-of-focus lens).
    DefocusBlur,
    /// Blur, local pixel shuffling, blur (frosted glass).
    GlassBlur,
    /// The mean of the image zoomed about its centre by growing factors.
    ZoomBlur,
    /// Pulls every channel towards its mean.
    Contrast,
    /// Raises the value channel in HSV space.
    Brightness,
    /// Scales the saturation channel in HSV space (colour images only).
    Saturate,
    /// Box down-sampling then box up-sampling.
    Pixelate,
    /// A plasma-fractal haze added, with the contrast reduced.
    Fog,
}

impl Corruption {
    /// Every corruption, in the order of the reports.
    pub const ALL: [Corruption; 13] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::SpeckleNoise,
        Corruption::GaussianBlur,
        Corruption::DefocusBlur,
        Corruption::GlassBlur,
        Corruption::ZoomBlur,
        Corruption::Contrast,
        Corruption::Brightness,
        Corruption::Saturate,
        Corruption::Pixelate,
        Corruption::Fog,
    ];

    /// The name used on the command line, in reports and by CIFAR-10-C.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::ImpulseNoise => "impulse_noise",
            Corruption::SpeckleNoise => "speckle_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::DefocusBlur => "defocus_blur",
            Corruption::GlassBlur => "glass_blur",
            Corruption::ZoomBlur => "zoom_blur",
            Corruption::Contrast => "contrast",
            Corruption::Brightness => "brightness",
            Corruption::Saturate => "saturate",
            Corruption::Pixelate => "pixelate",
            Corruption::Fog => "fog",
        }
    }

    /// The corruption called `name`, if any.
    pub fn from_name(name: &str) -> Option<Corruption> {
        Corruption::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the corruption means anything on a grey image (saturation
    /// does not: a grey pixel has none).
    pub fn applies_to_grey(self) -> bool {
        self != Corruption::Saturate
    }

    /// The seed of this corruption at `severity`: fixed, and different for
    /// every pair, so that two corruptions never share their noise.
    fn seed(self, severity: u8) -> u64 {
        0x00c1_fa2c ^ ((self as u64) << 8 | severity as u64)
    }

    /// Corrupts `image` (bytes, `shape` = `[channels, height, width]`, the
    /// test split's `index`-th image) at `severity` (0 to 5) into `out`.
    ///
    /// Panics when `severity` > 5 or the buffers do not match `shape`.
    pub fn apply(self, severity: u8, image: &[u8], shape: [usize; 3], index: u64, out: &mut [u8]) {
        assert!(severity <= MAX_SEVERITY, "severity {severity} > 5");
        let len = shape.iter().product::<usize>();
        assert!(
            image.len() == len && out.len() == len,
            "image is not {shape:?}"
        );
        let s = severity as usize;
        let mut rng = Rng::new(self.seed(severity), index);
        let mut img = Img::from_bytes(image, shape);
        match self {
            Corruption::GaussianNoise => {
                let sd = [0.0, 0.04, 0.06, 0.08, 0.09, 0.10][s];
                img.map(|x| x + sd * normal(&mut rng));
            }
            Corruption::ShotNoise => {
                // Photons per unit intensity; infinitely many is noiseless.
                let c = [f64::INFINITY, 500.0, 250.0, 100.0, 75.0, 50.0][s];
                if c.is_finite() {
                    img.map(|x| poisson(&mut rng, x * c) / c);
                }
            }
            Corruption::ImpulseNoise => {
                let amount = [0.0, 0.01, 0.02, 0.03, 0.05, 0.07][s];
                img.map(|x| {
                    let hit = uniform(&mut rng) < amount;
                    let salt = uniform(&mut rng) < 0.5;
                    match (hit, salt) {
                        (false, _) => x,
                        (true, true) => 1.0,
                        (true, false) => 0.0,
                    }
                });
            }
            Corruption::SpeckleNoise => {
                let sd = [0.0, 0.06, 0.1, 0.12, 0.16, 0.2][s];
                img.map(|x| x + x * sd * normal(&mut rng));
            }
            Corruption::GaussianBlur => {
                let sigma = [0.0, 0.4, 0.6, 0.7, 0.8, 1.0][s];
                img.gaussian_blur(sigma);
            }
            Corruption::DefocusBlur => {
                let (radius, alias) = [
                    (0.0, 0.0),
                    (0.3, 0.4),
                    (0.4, 0.5),
                    (0.5, 0.6),
                    (1.0, 0.2),
                    (1.5, 0.1),
                ][s];
                img.convolve_reflect(&defocus_kernel(radius, alias));
            }
            Corruption::GlassBlur => {
                let (sigma, delta, iterations) = [
                    (0.0, 1, 0),
                    (0.05, 1, 1),
                    (0.25, 1, 1),
                    (0.4, 1, 1),
                    (0.25, 1, 2),
                    (0.4, 1, 2),
                ][s];
                img.glass_blur(sigma, delta, iterations, &mut rng);
            }
            Corruption::ZoomBlur => {
                // numpy's arange(1, stop, 0.01): its length is
                // ceil((stop - 1) / 0.01) in floating point, which gives
                // severity 1 seven factors (up to 1.06), not six.
                let stop = [1.0, 1.06, 1.11, 1.16, 1.21, 1.26][s];
                let n = ((stop - 1.0) / 0.01_f64).ceil() as usize;
                let factors: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 0.01).collect();
                img.zoom_blur(&factors);
            }
            Corruption::Contrast => {
                let c = [1.0, 0.75, 0.5, 0.4, 0.3, 0.15][s];
                img.contrast(c);
            }
            Corruption::Brightness => {
                let c = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3][s];
                img.hsv(|_, sat, v| (sat, (v + c).clamp(0.0, 1.0)));
            }
            Corruption::Saturate => {
                let (scale, shift) = [
                    (1.0, 0.0),
                    (0.3, 0.0),
                    (0.1, 0.0),
                    (1.5, 0.0),
                    (2.0, 0.1),
                    (2.5, 0.2),
                ][s];
                if img.c == 3 {
                    img.hsv(|_, sat, v| ((sat * scale + shift).clamp(0.0, 1.0), v));
                }
            }
            Corruption::Pixelate => {
                let c = [1.0, 0.95, 0.9, 0.85, 0.75, 0.65][s];
                img.pixelate(c);
            }
            Corruption::Fog => {
                let (amount, decay) = [
                    (0.0, 3.0),
                    (0.2, 3.0),
                    (0.5, 3.0),
                    (0.75, 2.5),
                    (1.0, 2.0),
                    (1.5, 1.75),
                ][s];
                img.fog(amount, decay, &mut rng);
            }
        }
        img.to_bytes(out);
    }
}

/// An image as floats in [0, 1] (before clipping), channel after channel.
struct Img {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f64>,
}

impl Img {
    fn from_bytes(bytes: &[u8], [c, h, w]: [usize; 3]) -> Img {
        let v = bytes.iter().map(|&b| b as f64 / 255.0).collect();
        Img { c, h, w, v }
    }

    fn to_bytes(&self, out: &mut [u8]) {
        for (o, &x) in out.iter_mut().zip(&self.v) {
            *o = (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }

    fn map(&mut self, mut f: impl FnMut(f64) -> f64) {
        for x in &mut self.v {
            *x = f(*x);
        }
    }

    fn planes_mut(&mut self) -> std::slice::ChunksExactMut<'_, f64> {
        self.v.chunks_exact_mut(self.h * self.w)
    }

    /// scipy's `gaussian_filter` as skimage calls it: per channel, edges
    /// repeated (`mode='nearest'`), the kernel cut at 4 sigma.
    fn gaussian_blur(&mut self, sigma: f64) {
        if sigma <= 0.0 {
            return;
        }
        let radius = (4.0 * sigma + 0.5) as isize;
        let mut k: Vec<f64> = (-radius..=radius)
            .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
            .collect();
        let sum: f64 = k.iter().sum();
        k.iter_mut().for_each(|x| *x /= sum);
        let (h, w) = (self.h, self.w);
        let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
        let mut tmp = vec![0.0; h * w];
        for plane in self.planes_mut() {
            for y in 0..h {
                for x in 0..w {
                    tmp[y * w + x] = k
                        .iter()
                        .enumerate()
                        .map(|(j, kj)| {
                            kj * plane[y * w + clamp(x as isize + j as isize - radius, w)]
                        })
                        .sum();
                }
            }
            for y in 0..h {
                for x in 0..w {
                    plane[y * w + x] = k
                        .iter()
                        .enumerate()
                        .map(|(j, kj)| kj * tmp[clamp(y as isize + j as isize - radius, h) * w + x])
                        .sum();
                }
            }
        }
    }

    /// OpenCV's `filter2D` with its default border (reflect-101) and a
    /// square kernel of odd side, per channel.
    fn convolve_reflect(&mut self, kernel: &Kernel) {
        let (h, w, r) = (self.h, self.w, kernel.radius as isize);
        let side = 2 * kernel.radius + 1;
        let reflect = |i: isize, n: usize| -> usize {
            let n = n as isize;
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - m }) as usize
        };
        let mut out = vec![0.0; h * w];
        for plane in self.planes_mut() {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0;
                    for ky in 0..side {
                        let sy = reflect(y as isize + ky as isize - r, h);
                        for kx in 0..side {
                            let sx = reflect(x as isize + kx as isize - r, w);
                            acc += kernel.weights[ky * side + kx] * plane[sy * w + sx];
                        }
                    }
                    out[y * w + x] = acc;
                }
            }
            plane.copy_from_slice(&out);
        }
    }

    /// Blur, then swap each interior pixel with a random neighbour up to
    /// `delta` away (from the bottom right corner upwards, so a pixel can
    /// travel), `iterations` times, then blur again. The intermediate image
    /// is rounded to bytes, as in the published code.
    fn glass_blur(&mut self, sigma: f64, delta: usize, iterations: usize, rng: &mut Rng) {
        self.gaussian_blur(sigma);
        self.map(|x| (x.clamp(0.0, 1.0) * 255.0).round() / 255.0);
        let (h, w, d) = (self.h, self.w, delta as i64);
        for _ in 0..iterations {
            for y in (delta + 1..h.saturating_sub(delta) + 1).rev() {
                for x in (delta + 1..w.saturating_sub(delta) + 1).rev() {
                    let dx = int_in(rng, -d, d);
                    let dy = int_in(rng, -d, d);
                    let (y2, x2) = ((y as i64 + dy) as usize, (x as i64 + dx) as usize);
                    if y >= h || x >= w || y2 >= h || x2 >= w {
                        continue;
                    }
                    for plane in self.planes_mut() {
                        plane.swap(y * w + x, y2 * w + x2);
                    }
                }
            }
        }
        self.gaussian_blur(sigma);
    }

    /// `(x + sum of zooms) / (zooms + 1)`, each zoom a centre crop of side
    /// `ceil(side / factor)` scaled back up bilinearly (scipy's `zoom`,
    /// order 1) and trimmed to the image's size.
    fn zoom_blur(&mut self, factors: &[f64]) {
        if factors.is_empty() {
            return;
        }
        let (h, w) = (self.h, self.w);
        let mut acc = self.v.clone();
        for &z in factors {
            for (plane, dst) in self.v.chunks_exact(h * w).zip(acc.chunks_exact_mut(h * w)) {
                let zoomed = clipped_zoom(plane, h, w, z);
                dst.iter_mut().zip(&zoomed).for_each(|(d, z)| *d += z);
            }
        }
        let n = (factors.len() + 1) as f64;
        self.v = acc.into_iter().map(|x| x / n).collect();
    }

    fn contrast(&mut self, c: f64) {
        for plane in self.planes_mut() {
            let mean = plane.iter().sum::<f64>() / plane.len() as f64;
            plane.iter_mut().for_each(|x| *x = (*x - mean) * c + mean);
        }
    }

    /// Applies `f(hue, saturation, value) -> (saturation, value)` to every
    /// pixel in HSV space (skimage's `rgb2hsv` and `hsv2rgb`). A grey image
    /// is treated as one with equal red, green and blue, whose saturation is
    /// 0, so only the value matters.
    fn hsv(&mut self, f: impl Fn(f64, f64, f64) -> (f64, f64)) {
        let n = self.h * self.w;
        if self.c != 3 {
            for x in &mut self.v {
                *x = f(0.0, 0.0, *x).1;
            }
            return;
        }
        for i in 0..n {
            let (r, g, b) = (self.v[i], self.v[n + i], self.v[2 * n + i]);
            let (hue, s, v) = rgb_to_hsv(r, g, b);
            let (s, v) = f(hue, s, v);
            let (r, g, b) = hsv_to_rgb(hue, s, v);
            self.v[i] = r;
            self.v[n + i] = g;
            self.v[2 * n + i] = b;
        }
    }

    /// PIL's `resize(..., BOX)` to `int(side * c)` and back.
    fn pixelate(&mut self, c: f64) {
        let (h, w) = (self.h, self.w);
        let (sh, sw) = (
            ((h as f64 * c) as usize).max(1),
            ((w as f64 * c) as usize).max(1),
        );
        for plane in self.planes_mut() {
            let small = box_resize(plane, [h, w], [sh, sw]);
            plane.copy_from_slice(&box_resize(&small, [sh, sw], [h, w]));
        }
    }

    /// Adds `amount` times a plasma fractal to every channel and rescales so
    /// that the brightest pixel keeps its value.
    fn fog(&mut self, amount: f64, decay: f64, rng: &mut Rng) {
        let (h, w) = (self.h, self.w);
        let size = h.max(w).next_power_of_two().max(2);
        let map = plasma_fractal(size, decay, rng);
        let max = self.v.iter().copied().fold(0.0, f64::max);
        let scale = if max + amount > 0.0 {
            max / (max + amount)
        } else {
            1.0
        };
        for plane in self.planes_mut() {
            for y in 0..h {
                for x in 0..w {
                    let p = &mut plane[y * w + x];
                    *p = (*p + amount * map[y * size + x]) * scale;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth image with texture and an edge, in every shape of interest.
    fn sample(shape: [usize; 3], salt: u64) -> Vec<u8> {
        let [c, h, w] = shape;
        let mut rng = Rng::new(salt, 0);
        (0..c * h * w)
            .map(|i| {
                let (y, x) = ((i / w) % h, i % w);
                let base = (40 + 5 * x + 3 * y + 30 * (i / (h * w))) as u64 % 256;
                (base + rng.below(20) as u64).min(255) as u8
            })
            .collect()
    }

    const SHAPES: [[usize; 3]; 3] = [[1, 28, 28], [3, 32, 32], [3, 7, 5]];

    #[test]
    fn severity_zero_is_the_identity() {
        for shape in SHAPES {
            let img = sample(shape, 1);
            let mut out = vec![0u8; img.len()];
            for c in Corruption::ALL {
                c.apply(0, &img, shape, 3, &mut out);
                assert_eq!(out, img, "{} at severity 0 on {shape:?}", c.name());
            }
        }
    }

    #[test]
    fn every_severity_changes_the_image_and_more_at_higher_severity() {
        for shape in SHAPES {
            let img = sample(shape, 2);
            let mut out = vec![0u8; img.len()];
            for c in Corruption::ALL {
                if shape[0] == 1 && !c.applies_to_grey() {
                    c.apply(5, &img, shape, 0, &mut out);
                    assert_eq!(out, img, "{} on grey", c.name());
                    continue;
                }
                // Mean absolute change over a few images, per severity.
                let mut change = |s: u8| -> f64 {
                    let mut total = 0.0;
                    for index in 0..8 {
                        c.apply(s, &img, shape, index, &mut out);
                        total += img
                            .iter()
                            .zip(&out)
                            .map(|(a, b)| (*a as f64 - *b as f64).abs())
                            .sum::<f64>();
                    }
                    total / (8 * img.len()) as f64
                };
                let (one, five) = (change(1), change(5));
                assert!(
                    one > 0.0 || shape == [3, 7, 5],
                    "{} at severity 1 on {shape:?} changes nothing",
                    c.name()
                );
                assert!(
                    five > one,
                    "{} on {shape:?}: severity 5 changes {five}, severity 1 {one}",
                    c.name()
                );
            }
        }
    }

    #[test]
    fn corruption_depends_on_index_severity_and_corruption_only() {
        let shape = [3, 32, 32];
        let img = sample(shape, 3);
        let run = |c: Corruption, s: u8, i: u64| {
            let mut out = vec![0u8; img.len()];
            c.apply(s, &img, shape, i, &mut out);
            out
        };
        assert_eq!(run(Corruption::Fog, 3, 7), run(Corruption::Fog, 3, 7));
        assert_ne!(run(Corruption::Fog, 3, 7), run(Corruption::Fog, 3, 8));
        assert_eq!(
            run(Corruption::ShotNoise, 2, 1),
            run(Corruption::ShotNoise, 2, 1)
        );
        assert_ne!(
            run(Corruption::GaussianNoise, 2, 1),
            run(Corruption::SpeckleNoise, 2, 1)
        );
    }

    #[test]
    fn names_round_trip() {
        for c in Corruption::ALL {
            assert_eq!(Corruption::from_name(c.name()), Some(c));
        }
        assert_eq!(Corruption::from_name("frost"), None);
    }

    #[test]
    fn hsv_round_trip() {
        let mut rng = Rng::new(9, 0);
        for _ in 0..1000 {
            let (r, g, b) = (uniform(&mut rng), uniform(&mut rng), uniform(&mut rng));
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() + (g - g2).abs() + (b - b2).abs() < 1e-12);
        }
        // Pure red, green, blue.
        assert_eq!(rgb_to_hsv(1.0, 0.0, 0.0), (0.0, 1.0, 1.0));
        assert!((rgb_to_hsv(0.0, 1.0, 0.0).0 - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn defocus_kernel_is_normalised_and_published_size() {
        // Radius 0.3 covers one pixel; its 3x3 smoothing gives a 3x3 kernel.
        let k = defocus_kernel(0.3, 0.4);
        assert_eq!(k.radius, 1);
        assert!((k.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Radius 1.5 covers the 3x3 block; smoothing widens it to 5x5.
        let k = defocus_kernel(1.5, 0.1);
        assert_eq!(k.radius, 2);
        assert!((k.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn box_resize_averages_blocks() {
        // 4 -> 2 averages pairs; 2 -> 4 repeats each sample.
        let down = box_resize(&[0.0, 1.0, 2.0, 3.0], [1, 4], [1, 2]);
        assert_eq!(down, vec![0.5, 2.5]);
        let up = box_resize(&[1.0, 2.0], [1, 2], [1, 4]);
        assert_eq!(up, vec![1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn plasma_fractal_spans_zero_to_one() {
        let m = plasma_fractal(32, 3.0, &mut Rng::new(1, 1));
        let min = m.iter().copied().fold(f64::INFINITY, f64::min);
        let max = m.iter().copied().fold(0.0, f64::max);
        assert_eq!((min, max), (0.0, 1.0));
        // Smooth: neighbours are closer than random pairs on average.
        let near: f64 = (0..31 * 32).map(|i| (m[i] - m[i + 32]).abs()).sum::<f64>() / 992.0;
        let far: f64 = (0..512).map(|i| (m[i] - m[1023 - i]).abs()).sum::<f64>() / 512.0;
        assert!(near < far, "{near} {far}");
    }
}
