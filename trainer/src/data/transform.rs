//! The standard ImageNet transforms on decoded RGB images, as torchvision
//! applies them to PIL images.
//!
//! - Training: `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`
//!   with torchvision's ten tries and its centre-crop fallback, then
//!   `RandomHorizontalFlip()`.
//! - Evaluation: `Resize(int(size / 0.875))` (the short side; the long side
//!   `int(short * long / short_in)`), then `CenterCrop(size)`.
//!
//! Resizing is Pillow's bilinear convolution with antialiasing (the filter
//! widens by the reduction factor), implemented by fast_image_resize, which
//! reproduces Pillow's fixed-point arithmetic. Both transforms are a crop
//! box on the source followed by one resize: evaluation's resize-then-crop
//! becomes a fractional box on the source whose filter taps are those of
//! resizing the whole image, so only the `size x size` output pixels are
//! computed. Random numbers come from the trainer's own generator, so the
//! crops are torchvision's distribution, not its exact draws.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::decode::Rgb;
use crate::rng::Rng;

/// The share of the resized evaluation image kept by the centre crop
/// (224 of 256 in the ImageNet recipe).
pub const EVAL_CROP_FRACTION: f64 = 0.875;

/// A crop box in source pixels (torchvision's `i, j, h, w`), possibly
/// fractional for evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    /// Top edge.
    pub top: f64,
    /// Left edge.
    pub left: f64,
    /// Height.
    pub height: f64,
    /// Width.
    pub width: f64,
}

/// A uniform float in `[lo, hi)`.
fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// torchvision's `RandomResizedCrop.get_params` for a `width x height`
/// image: ten tries at a random area share in `[0.08, 1]` and a
/// log-uniform aspect ratio in `[3/4, 4/3]`, else the largest centred box
/// whose aspect ratio is within the range.
pub fn random_resized_crop(width: usize, height: usize, rng: &mut Rng) -> CropBox {
    let (scale, ratio) = ((0.08, 1.0), (3.0f64 / 4.0, 4.0f64 / 3.0));
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        // Python's round() rounds half to even.
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.below(height - h + 1);
            let left = rng.below(width - w + 1);
            return CropBox {
                top: top as f64,
                left: left as f64,
                height: h as f64,
                width: w as f64,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, (width as f64 / ratio.0).round_ties_even() as usize)
    } else if in_ratio > ratio.1 {
        ((height as f64 * ratio.1).round_ties_even() as usize, height)
    } else {
        (width, height)
    };
    CropBox {
        top: ((height - h) / 2) as f64,
        left: ((width - w) / 2) as f64,
        height: h as f64,
        width: w as f64,
    }
}

/// The evaluation transform of a `width x height` image as a box on the
/// source: torchvision's `Resize(int(size / 0.875))` followed by
/// `CenterCrop(size)`, with the resized size and crop offsets computed as
/// torchvision does (truncation for the long side, round-half-even for the
/// offsets).
pub fn eval_crop(width: usize, height: usize, size: usize) -> CropBox {
    let short_out = (size as f64 / EVAL_CROP_FRACTION) as usize;
    let (short, long) = (width.min(height), width.max(height));
    let long_out = (short_out as f64 * long as f64 / short as f64) as usize;
    let (out_w, out_h) = if width <= height {
        (short_out, long_out)
    } else {
        (long_out, short_out)
    };
    let top = ((out_h as f64 - size as f64) / 2.0).round_ties_even();
    let left = ((out_w as f64 - size as f64) / 2.0).round_ties_even();
    let (sy, sx) = (height as f64 / out_h as f64, width as f64 / out_w as f64);
    CropBox {
        top: top * sy,
        left: left * sx,
        height: size as f64 * sy,
        width: size as f64 * sx,
    }
}

/// Resizes boxes of decoded images to `size x size`; one per thread (it
/// keeps its scratch buffers between images).
pub struct Resampler {
    resizer: Resizer,
    size: usize,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("size", &self.size)
            .finish()
    }
}

impl Resampler {
    /// A resampler to `size x size` outputs.
    pub fn new(size: usize) -> Resampler {
        Resampler {
            resizer: Resizer::new(),
            size,
        }
    }

    /// `img`'s `crop` resized to `size x size` with Pillow's bilinear
    /// filter, as interleaved RGB bytes in `out`.
    pub fn resize(&mut self, img: &Rgb, crop: CropBox, out: &mut Vec<u8>) {
        let src = ImageRef::new(
            img.width as u32,
            img.height as u32,
            &img.pixels,
            PixelType::U8x3,
        )
        .expect("decoded pixels match their dimensions");
        let s = self.size as u32;
        out.clear();
        out.resize(self.size * self.size * 3, 0);
        let mut dst = Image::from_slice_u8(s, s, out.as_mut_slice(), PixelType::U8x3)
            .expect("the output buffer has size x size pixels");
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(crop.left, crop.top, crop.width, crop.height);
        self.resizer
            .resize(&src, &mut dst, &options)
            .expect("same pixel types and a crop box inside the image");
    }
}

/// Interleaved `size x size` RGB bytes to planar `3 x size x size`, mirrored
/// left to right when `flip`.
pub fn to_planar(hwc: &[u8], size: usize, flip: bool, out: &mut [u8]) {
    let plane = size * size;
    for y in 0..size {
        for x in 0..size {
            let sx = if flip { size - 1 - x } else { x };
            let p = &hwc[(y * size + sx) * 3..][..3];
            for (c, &v) in p.iter().enumerate() {
                out[c * plane + y * size + x] = v;
            }
        }
    }
}

/// Interleaved `size x size` RGB bytes straight to planar normalised floats
/// (`(byte / 255 - mean) / std` per channel), mirrored when `flip`: one
/// pass, no intermediate buffer.
pub fn to_planar_normalised(
    hwc: &[u8],
    size: usize,
    flip: bool,
    mean: &[f32; 3],
    std: &[f32; 3],
    out: &mut [f32],
) {
    let plane = size * size;
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| -mean[c] / std[c]);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for y in 0..size {
        let row = &hwc[y * size * 3..(y + 1) * size * 3];
        let (r, g, b) = (
            &mut r[y * size..(y + 1) * size],
            &mut g[y * size..(y + 1) * size],
            &mut b[y * size..(y + 1) * size],
        );
        for (x, p) in row.chunks_exact(3).enumerate() {
            let d = if flip { size - 1 - x } else { x };
            r[d] = p[0] as f32 * scale[0] + shift[0];
            g[d] = p[1] as f32 * scale[1] + shift[1];
            b[d] = p[2] as f32 * scale[2] + shift[2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_crop_is_resize_256_then_centre_224() {
        // A 500x375 landscape image: short side 375 -> 256, long side
        // int(256 * 500 / 375) = 341; the crop starts at round(58.5) = 58
        // (half to even) on x and 16 on y.
        let b = eval_crop(500, 375, 224);
        let s = 375.0 / 256.0;
        assert!((b.top - 16.0 * s).abs() < 1e-9);
        assert!((b.left - 58.0 * 500.0 / 341.0).abs() < 1e-9);
        assert!((b.height - 224.0 * s).abs() < 1e-9);
    }

    #[test]
    fn random_resized_crop_stays_inside_and_falls_back() {
        let mut rng = Rng::new(3, 0);
        for _ in 0..1000 {
            let b = random_resized_crop(500, 375, &mut rng);
            assert!(b.top + b.height <= 375.0 && b.left + b.width <= 500.0);
            let share = b.width * b.height / (500.0 * 375.0);
            assert!((0.07..=1.0).contains(&share), "{b:?}");
        }
        // A 1000x10 strip cannot hold any try: the fallback is the
        // centred 13x10 box (ratio 4/3 at full height).
        let b = random_resized_crop(1000, 10, &mut rng);
        assert_eq!((b.left, b.top, b.width, b.height), (493.0, 0.0, 13.0, 10.0));
    }

    #[test]
    fn planar_flip_and_normalise() {
        // 2x2 RGB: pixel k has channels (k, 10 + k, 20 + k).
        let hwc: Vec<u8> = (0..4).flat_map(|k| [k, 10 + k, 20 + k]).collect();
        let mut chw = [0u8; 12];
        to_planar(&hwc, 2, false, &mut chw);
        assert_eq!(chw, [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
        to_planar(&hwc, 2, true, &mut chw);
        assert_eq!(chw[..4], [1, 0, 3, 2]);
        let mut f = [0f32; 12];
        to_planar_normalised(&hwc, 2, true, &[0.5; 3], &[0.25; 3], &mut f);
        let want: Vec<f32> = chw
            .iter()
            .map(|&v| (v as f32 / 255.0 - 0.5) / 0.25)
            .collect();
        for (a, b) in f.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{f:?} vs {want:?}");
        }
    }
}
