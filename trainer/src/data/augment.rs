//! Training augmentation on images kept as bytes: torchvision's random
//! crop with zero padding, horizontal flip and rotation, as plain index
//! arithmetic.
//!
//! A crop is drawn as a placement (offsets into the zero-padded image and
//! a flip decision) and then applied; the draws come from the caller's
//! generator in a fixed order (top, left, then the flip coin where flips
//! are on), so a batch depends only on the seed and epoch it was made for.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// The training augmentation of IDX (MNIST-style) data sets. CIFAR and
/// image folders always use their own standard recipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IdxAugment {
    /// Training images as they are in the files.
    #[default]
    None,
    /// torchvision's `RandomCrop(size, padding=pad)`.
    Crop,
    /// `RandomCrop(size, padding=pad)` then `RandomHorizontalFlip()`.
    CropFlip,
}

impl IdxAugment {
    /// True for [`IdxAugment::None`].
    pub fn is_none(&self) -> bool {
        *self == IdxAugment::None
    }

    /// The name in configs and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            IdxAugment::None => "none",
            IdxAugment::Crop => "crop",
            IdxAugment::CropFlip => "crop-flip",
        }
    }
}

/// A random crop of the same size as the image from its zero-padded copy,
/// optionally mirrored left to right with probability 1/2: torchvision's
/// `RandomCrop(size, padding=pad)`, followed by `RandomHorizontalFlip()`
/// when `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    /// Zero padding on every side, in pixels.
    pub pad: usize,
    /// Mirror half of the crops.
    pub flip: bool,
}

/// Where one crop lies: offsets of its top-left corner in the padded image
/// (`0..=2 * pad` each; `pad` is the unshifted image) and whether it is
/// mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Row offset in the padded image.
    pub top: usize,
    /// Column offset in the padded image.
    pub left: usize,
    /// Mirrored left to right after cropping.
    pub flip: bool,
}

impl CropFlip {
    /// Draws a placement: top, then left, uniform in `0..=2 * pad`, then a
    /// fair coin for the flip when flips are on.
    pub fn draw(&self, rng: &mut Rng) -> Placement {
        let top = rng.below(2 * self.pad + 1);
        let left = rng.below(2 * self.pad + 1);
        let flip = self.flip && rng.coin();
        Placement { top, left, flip }
    }

    /// Draws a placement and writes the crop of `src` to `dst` (one image
    /// of `[c, h, w]` bytes each).
    pub fn apply(&self, src: &[u8], dst: &mut [u8], shape: [usize; 3], rng: &mut Rng) {
        let at = self.draw(rng);
        crop_at(src, dst, shape, self.pad, at);
    }
}

/// Writes to `dst` the window of `src`, zero-padded by `pad` pixels on
/// every side, at `at`, mirrored when `at.flip` (`src` and `dst` are one
/// image of `[c, h, w]` bytes).
pub fn crop_at(src: &[u8], dst: &mut [u8], [c, h, w]: [usize; 3], pad: usize, at: Placement) {
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let xc = if at.flip { w - 1 - x } else { x };
                let sy = (y + at.top).wrapping_sub(pad);
                let sx = (xc + at.left).wrapping_sub(pad);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The crop as its definition says: copy the image into a zeroed
    /// canvas `pad` pixels larger on every side, cut the window at
    /// (top, left), then mirror the window's columns.
    fn reference(src: &[u8], [c, h, w]: [usize; 3], pad: usize, at: Placement) -> Vec<u8> {
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut canvas = vec![0u8; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    canvas[(ch * ph + y + pad) * pw + x + pad] = src[(ch * h + y) * w + x];
                }
            }
        }
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for y in 0..h {
                let row: Vec<u8> = (0..w)
                    .map(|x| canvas[(ch * ph + y + at.top) * pw + x + at.left])
                    .collect();
                if at.flip {
                    out.extend(row.iter().rev());
                } else {
                    out.extend(row);
                }
            }
        }
        out
    }

    #[test]
    fn crop_at_matches_a_padded_copy() {
        let shape = [2, 5, 7];
        let src: Vec<u8> = (0..70).map(|i| 1 + (i * 37 % 251) as u8).collect();
        let mut dst = vec![0u8; 70];
        for pad in [0, 1, 3, 5] {
            for top in 0..=2 * pad {
                for left in 0..=2 * pad {
                    for flip in [false, true] {
                        let at = Placement { top, left, flip };
                        crop_at(&src, &mut dst, shape, pad, at);
                        assert_eq!(dst, reference(&src, shape, pad, at), "pad {pad} {at:?}");
                    }
                }
            }
        }
        // The centred placement without a flip is the image itself.
        let at = Placement {
            top: 3,
            left: 3,
            flip: false,
        };
        crop_at(&src, &mut dst, shape, 3, at);
        assert_eq!(dst, src);
    }

    #[test]
    fn placements_are_uniform_and_flip_only_when_asked() {
        let n = 50_000;
        for flip in [false, true] {
            let crop = CropFlip { pad: 2, flip };
            let mut rng = Rng::new(11, 0);
            let mut counts = [[[0usize; 2]; 5]; 5];
            for _ in 0..n {
                let at = crop.draw(&mut rng);
                counts[at.top][at.left][at.flip as usize] += 1;
            }
            let cells = if flip { 50 } else { 25 };
            let expect = n / cells;
            for row in &counts {
                for cell in row {
                    assert!(cell[0].abs_diff(expect) < expect / 5, "{counts:?}");
                    if flip {
                        assert!(cell[1].abs_diff(expect) < expect / 5, "{counts:?}");
                    } else {
                        assert_eq!(cell[1], 0);
                    }
                }
            }
        }
    }
}
