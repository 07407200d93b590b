//! The batch iterator of every split: in-memory sets are cut, augmented
//! and normalised one batch at a time; image folders hand over the
//! batches of their worker pool.

use tch::Tensor;

use super::pipeline::Pipeline;
use super::{rotate, Batch, Dataset, ImageSet};
use crate::rng::Rng;
use tch::Device;

/// An iterator over batches of one split; see [`Dataset::train_batches`] and
/// [`Dataset::eval_batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    pub(super) data: &'a Dataset,
    pub(super) set: &'a ImageSet,
    pub(super) order: Vec<usize>,
    pub(super) pos: usize,
    pub(super) batch_size: usize,
    pub(super) augment: Option<Rng>,
    pub(super) device: Device,
    /// The worker pool of an image folder.
    pub(super) stream: Option<Pipeline>,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if let Some(stream) = self.stream.as_mut() {
            // After a failed image every iterator of the data set stops, so
            // that a loop over epochs does not run on without it.
            if self.data.folder.as_ref().is_some_and(|f| f.has_error()) {
                return None;
            }
            return match stream.next()? {
                Ok(b) => {
                    let [c, h, w] = self.set.shape.map(|d| d as i64);
                    let n = b.labels.len() as i64;
                    let images = Tensor::from_slice(&b.pixels).view([n, c, h, w]);
                    stream.recycle(b.pixels);
                    Some(Batch {
                        images: images.to_device(self.device),
                        labels: Tensor::from_slice(&b.labels).to_device(self.device),
                    })
                }
                Err(e) => {
                    if let Some(f) = &self.data.folder {
                        f.record_error(e);
                    }
                    None
                }
            };
        }
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let idx = &self.order[self.pos..end];
        self.pos = end;
        let image_len = self.set.image_len();
        let mut pixels = Vec::with_capacity(idx.len() * image_len);
        let mut cropped = vec![0u8; image_len];
        let mut rotated = vec![0u8; image_len];
        let crop = self.data.crop;
        for &i in idx {
            match self.augment.as_mut() {
                Some(rng) if self.data.rotation > 0.0 => {
                    crop.apply(self.set.image(i), &mut cropped, self.set.shape, rng);
                    let max = self.data.rotation;
                    let angle =
                        -max + 2.0 * max * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    rotate(&cropped, &mut rotated, self.set.shape, angle);
                    pixels.extend_from_slice(&rotated);
                }
                Some(rng) => {
                    crop.apply(self.set.image(i), &mut cropped, self.set.shape, rng);
                    pixels.extend_from_slice(&cropped);
                }
                None => pixels.extend_from_slice(self.set.image(i)),
            }
        }
        let labels: Vec<i64> = idx.iter().map(|&i| self.set.labels[i]).collect();
        Some(self.data.batch_from_bytes(&pixels, &labels, self.device))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if let Some(stream) = &self.stream {
            // Exact unless every image of a batch is skipped as unreadable.
            let n = stream.remaining();
            return (n, Some(n));
        }
        let n = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}
