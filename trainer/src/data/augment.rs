//! Training augmentation on images kept as bytes: torchvision's random
//! crop with zero padding, horizontal flip and rotation, as plain index
//! arithmetic.

use super::CROP_PADDING;
use crate::rng::Rng;

/// torchvision's `RandomCrop(size, padding=4)` then `RandomHorizontalFlip()`:
/// a window of the zero-padded image at a random offset, mirrored with
/// probability 1/2.
pub(crate) fn crop_flip(src: &[u8], dst: &mut [u8], [c, h, w]: [usize; 3], rng: &mut Rng) {
    let p = CROP_PADDING;
    let top = rng.below(2 * p + 1);
    let left = rng.below(2 * p + 1);
    let flip = rng.coin();
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let xc = if flip { w - 1 - x } else { x };
                let (sy, sx) = ((y + top).wrapping_sub(p), (xc + left).wrapping_sub(p));
                dst[(ch * h + y) * w + x] = if sy < h && sx < w {
                    src[(ch * h + sy) * w + sx]
                } else {
                    0
                };
            }
        }
    }
}

/// torchvision's `rotate` with nearest-neighbour sampling: `dst` is `src`
/// turned by `degrees` counter-clockwise about the image centre, with
/// zeros where the turned image does not reach (CIFAR-100's training
/// augmentation; `src` and `dst` are one image of `[c, h, w]` bytes).
pub fn rotate(src: &[u8], dst: &mut [u8], [c, h, w]: [usize; 3], degrees: f64) {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    for y in 0..h {
        for x in 0..w {
            // Inverse map: turn the output pixel back by the angle (image
            // rows grow downwards, hence the signs).
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = (cos * dx - sin * dy + cx).round();
            let sy = (sin * dx + cos * dy + cy).round();
            let inside = sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64;
            for ch in 0..c {
                dst[(ch * h + y) * w + x] = if inside {
                    src[(ch * h + sy as usize) * w + sx as usize]
                } else {
                    0
                };
            }
        }
    }
}
