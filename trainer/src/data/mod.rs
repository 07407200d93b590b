//! Data sets: loading IDX (MNIST-style) and CIFAR binary folders and image
//! folders (torchvision's `ImageFolder` layout), the fixed validation split,
//! normalisation, augmentation and batching.
//!
//! IDX and CIFAR images are kept in memory as bytes (`N x C x H x W`, u8) and
//! turned into normalised float tensors one batch at a time, so a whole data
//! set costs one byte per pixel and augmentation is plain index arithmetic.
//! Image folders stay on disk: their batches are decoded and transformed by
//! a pool of worker threads a few batches ahead of training.
//!
//! Each on-disk format has its own file (`idx.rs`, `cifar.rs`, `folder.rs`
//! with `image_folder.rs`) and `locate.rs` tells them apart; decoding is in
//! `decode.rs`, the image-folder transforms in `transform.rs`, the worker
//! pool in `pipeline.rs`, and the in-memory training augmentation (crops
//! and flips of CIFAR, and of IDX data when asked) in `augment.rs`.

use std::sync::Arc;

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::rng::Rng;

mod augment;
mod batches;
mod cifar;
pub mod decode;
pub mod folder;
mod idx;
pub mod image_folder;
mod image_set;
mod locate;
pub mod pipeline;
pub mod transform;

pub use augment::{crop_at, rotate, CropFlip, IdxAugment, Placement};
pub use batches::Batches;
use cifar::read_cifar_folder;
use idx::read_idx_folder;
pub use image_set::ImageSet;
use locate::{detect, resolve};
pub use locate::{Format, FASHION_MNIST_DIR};

pub use folder::{FolderArgs, FolderOptions, Normalize};
pub use image_folder::{FolderData, FolderSummary};
use pipeline::{Augment, Pipeline, Plan};

/// The share of the training set held out for validation.
pub const VAL_FRACTION: f64 = 0.1;

/// Zero padding, in pixels, of CIFAR's random-crop augmentation.
pub const CROP_PADDING: usize = 4;

/// The default zero padding, in pixels, of the random crop of IDX data
/// (`--augment-pad`; 2 suits 28x28 images).
pub const IDX_CROP_PADDING: usize = 2;

/// The largest angle, in degrees, of CIFAR-100's random rotation
/// (torchvision's `RandomRotation(15)` in the reference code).
pub const CIFAR100_ROTATION: f64 = 15.0;

/// CIFAR's crop: `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`.
const CIFAR_CROP: CropFlip = CropFlip {
    pad: CROP_PADDING,
    flip: true,
};

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training set minus the validation share.
    Train,
    /// The fixed validation share of the training set.
    Val,
    /// The data set's own test split.
    Test,
}

/// A loaded data set: the three splits and how to turn them into tensors.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The name it was loaded by (`fashion-mnist` or the folder).
    pub name: String,
    /// The format of its files.
    pub format: Format,
    /// Training images (without the validation share).
    pub train: ImageSet,
    /// Validation images, a fixed share of the training file chosen by seed.
    pub val: ImageSet,
    /// Test images.
    pub test: ImageSet,
    /// The number of classes: 10 or 100 for CIFAR, else the largest label + 1.
    pub num_classes: usize,
    /// Per-channel mean of the training pixels, in [0, 1] units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the training pixels.
    pub std: Vec<f32>,
    /// Whether training batches are augmented: always for CIFAR and image
    /// folders, for IDX data when [`Dataset::set_idx_augment`] asks.
    pub augment: bool,
    /// The random crop (and flip) of augmented in-memory training batches:
    /// 4 pixels of padding and flips for CIFAR, as chosen for IDX data.
    pub crop: CropFlip,
    /// The largest angle in degrees of a random rotation after crop and
    /// flip (0: none): 15 for CIFAR-100, as in the reference code.
    pub rotation: f64,
    /// For image folders, the files (which stay on disk) and their
    /// settings. The [`ImageSet`]s of such a data set then hold only the
    /// labels (`images` is empty) and the shape of the transformed images.
    pub folder: Option<Arc<FolderData>>,
}

/// A batch ready for a model: normalised images and their labels.
#[derive(Debug)]
pub struct Batch {
    /// `B x C x H x W` float images.
    pub images: Tensor,
    /// `B` class indices (int64).
    pub labels: Tensor,
}

impl Dataset {
    /// Loads `spec`, a known name (`fashion-mnist`) or a folder, and holds
    /// out a validation split chosen by `split_seed`.
    ///
    /// The split seed is separate from the training seed on purpose: the
    /// candidates of a sparse-model-soup phase differ in their training seed
    /// but must all be judged on the same validation images.
    pub fn load(spec: &str, split_seed: u64) -> Result<Dataset> {
        Dataset::load_with(spec, split_seed, &FolderOptions::default())
    }

    /// [`Dataset::load`] with the settings of image folders (the other
    /// formats ignore them).
    pub fn load_with(spec: &str, split_seed: u64, options: &FolderOptions) -> Result<Dataset> {
        let (name, dir) = resolve(spec)?;
        let (format, dir) = detect(&dir)?;
        let (train, test) = match format {
            Format::Idx => read_idx_folder(&dir)?,
            Format::Cifar10 => read_cifar_folder(&dir, false)?,
            Format::Cifar100 => read_cifar_folder(&dir, true)?,
            Format::ImageFolder => {
                let folder = FolderData::load(&dir, split_seed, options)?;
                return Ok(Dataset::from_folder(name, folder));
            }
        };
        Dataset::from_parts(name, format, train, test, split_seed)
    }

    /// A data set over a loaded image folder.
    pub fn from_folder(name: String, folder: FolderData) -> Dataset {
        let size = folder.options.image_size;
        let labels = |items: &[folder::Item]| ImageSet {
            images: Vec::new(),
            labels: items.iter().map(|i| i.label).collect(),
            shape: [3, size, size],
        };
        Dataset {
            name,
            format: Format::ImageFolder,
            train: labels(&folder.train),
            val: labels(&folder.val),
            test: labels(&folder.test),
            num_classes: folder.classes.len(),
            mean: folder.mean.to_vec(),
            std: folder.std.to_vec(),
            augment: true,
            crop: CIFAR_CROP,
            rotation: 0.0,
            folder: Some(Arc::new(folder)),
        }
    }

    /// The first image that failed to load since the last call (for image
    /// folders; batch iterators end early at such an image). Every caller
    /// that runs batches checks this before trusting their results.
    pub fn check(&self) -> Result<()> {
        match self.folder.as_ref().and_then(|f| f.take_error()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The number of unreadable images skipped so far (image folders with
    /// skipping on).
    pub fn skipped_images(&self) -> usize {
        self.folder.as_ref().map_or(0, |f| f.skipped().len())
    }

    /// Images `start..stop` of a split as bytes (`N x C x H x W`) with their
    /// labels, as evaluation sees them before normalisation: for image
    /// folders the evaluation transform, with skipped files left out.
    pub fn split_bytes(
        &self,
        split: Split,
        start: usize,
        stop: usize,
    ) -> Result<(Vec<u8>, Vec<i64>)> {
        match &self.folder {
            Some(f) => f.eval_bytes(split, start, stop),
            None => {
                let set = self.split(split);
                let n = set.image_len();
                Ok((
                    set.images[start * n..stop * n].to_vec(),
                    set.labels[start..stop].to_vec(),
                ))
            }
        }
    }

    /// Builds a data set from a full training set and a test set: splits off
    /// validation, computes normalisation and counts classes.
    pub fn from_parts(
        name: String,
        format: Format,
        full_train: ImageSet,
        test: ImageSet,
        split_seed: u64,
    ) -> Result<Dataset> {
        if full_train.shape != test.shape {
            return Err(Error::data(
                &name,
                format!(
                    "train images are {:?} but test images are {:?}",
                    full_train.shape, test.shape
                ),
            ));
        }
        let n = full_train.len();
        let (train_idx, val_idx) = split_indices(n, split_seed).ok_or_else(|| {
            Error::data(&name, format!("{n} training images are too few to split"))
        })?;
        let train = full_train.select(&train_idx);
        let val = full_train.select(&val_idx);
        let largest = train
            .labels
            .iter()
            .chain(&val.labels)
            .chain(&test.labels)
            .copied()
            .max();
        let num_classes = match format {
            Format::Cifar10 => 10,
            Format::Cifar100 => 100,
            Format::Idx | Format::ImageFolder => 1 + largest.unwrap_or(0) as usize,
        };
        let (mean, std) = channel_stats(&train);
        let augment = format != Format::Idx;
        let rotation = if format == Format::Cifar100 {
            CIFAR100_ROTATION
        } else {
            0.0
        };
        Ok(Dataset {
            name,
            format,
            train,
            val,
            test,
            num_classes,
            mean,
            std,
            augment,
            crop: CIFAR_CROP,
            rotation,
            folder: None,
        })
    }

    /// Chooses the training augmentation of an IDX data set: none (the
    /// default), a random crop with `pad` pixels of zero padding, or that
    /// crop and a horizontal flip. Other formats keep their own
    /// augmentation and accept only [`IdxAugment::None`].
    pub fn set_idx_augment(&mut self, mode: IdxAugment, pad: usize) -> Result<()> {
        if self.format != Format::Idx {
            if mode.is_none() {
                return Ok(());
            }
            return Err(Error::data(
                &self.name,
                format!(
                    "augment = {} applies to IDX data only: {:?} data has its own fixed training augmentation",
                    mode.name(),
                    self.format
                ),
            ));
        }
        let [_, h, w] = self.input_shape();
        if !mode.is_none() && pad > h.min(w) {
            return Err(Error::data(
                &self.name,
                format!("crop padding of {pad} pixels is larger than the {h}x{w} images"),
            ));
        }
        self.augment = !mode.is_none();
        self.crop = CropFlip {
            pad,
            flip: mode == IdxAugment::CropFlip,
        };
        Ok(())
    }

    /// The images of one split.
    pub fn split(&self, split: Split) -> &ImageSet {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// `[channels, height, width]` of the images.
    pub fn input_shape(&self) -> [usize; 3] {
        self.train.shape
    }

    /// One epoch of training batches: shuffled by `(seed, epoch)` and
    /// augmented where the data set calls for it. A last batch of a single
    /// image is dropped (batch norm cannot train on one sample).
    pub fn train_batches(
        &self,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        device: Device,
    ) -> Batches<'_> {
        let mut rng = Rng::new(seed, epoch);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        rng.shuffle(&mut order);
        if order.len() % batch_size == 1 {
            order.pop();
        }
        let augment = if self.augment { Some(rng) } else { None };
        self.batches(Split::Train, order, batch_size, augment, device)
    }

    /// Training batches without end: epoch after epoch of
    /// [`Dataset::train_batches`], for training by iteration count.
    pub fn train_stream(
        &self,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> impl Iterator<Item = Batch> + '_ {
        (0u64..).flat_map(move |epoch| self.train_batches(batch_size, seed, epoch, device))
    }

    /// Batches of a split in file order, without augmentation (evaluation).
    pub fn eval_batches(&self, split: Split, batch_size: usize, device: Device) -> Batches<'_> {
        let order = (0..self.split(split).len()).collect();
        self.batches(split, order, batch_size, None, device)
    }

    /// The number of batches [`Dataset::train_batches`] yields per epoch.
    pub fn train_batches_per_epoch(&self, batch_size: usize) -> usize {
        let n = self.train.len() - usize::from(self.train.len() % batch_size == 1);
        n.div_ceil(batch_size)
    }

    /// Turns images given as bytes (`N x C x H x W`, the layout of
    /// [`ImageSet::images`]) into a normalised batch with this data set's
    /// training mean and deviation. Evaluation on images from elsewhere
    /// (corrupted copies of the test split, CIFAR-10-C files) goes through
    /// here so that it sees exactly the preprocessing of the test split.
    ///
    /// Panics when `images` is not `labels.len()` images of the data set's shape.
    pub fn batch_from_bytes(&self, images: &[u8], labels: &[i64], device: Device) -> Batch {
        let [c, h, w] = self.input_shape();
        assert_eq!(
            images.len(),
            labels.len() * c * h * w,
            "images do not match labels"
        );
        // Per channel: x_norm = (byte / 255 - mean) / std = byte * scale + shift.
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(m, s)| -m / s)
            .collect();
        let mut pixels = Vec::with_capacity(images.len());
        for image in images.chunks_exact(c * h * w) {
            for (ch, plane) in image.chunks_exact(h * w).enumerate() {
                pixels.extend(plane.iter().map(|&b| b as f32 * scale[ch] + shift[ch]));
            }
        }
        let n = labels.len() as i64;
        let images = Tensor::from_slice(&pixels).view([n, c as i64, h as i64, w as i64]);
        Batch {
            images: images.to_device(device),
            labels: Tensor::from_slice(labels).to_device(device),
        }
    }

    fn batches(
        &self,
        split: Split,
        order: Vec<usize>,
        batch_size: usize,
        augment: Option<Rng>,
        device: Device,
    ) -> Batches<'_> {
        assert!(batch_size > 0, "batch size must be positive");
        let stream = self.folder.as_ref().map(|f| {
            let augment = match augment.clone() {
                Some(mut rng) => Augment::Train(rng.next_u64()),
                None => Augment::Eval,
            };
            let mean = [self.mean[0], self.mean[1], self.mean[2]];
            let std = [self.std[0], self.std[1], self.std[2]];
            Pipeline::start(Plan {
                items: Arc::clone(f.items(split)),
                order: order.clone(),
                batch_size,
                augment,
                size: f.options.image_size,
                mean,
                std,
                skip_bad: f.options.skip_bad_images,
                skip_log: Arc::clone(&f.skip_log),
                workers: f.options.threads(),
                prefetch: f.options.prefetch,
            })
        });
        Batches {
            data: self,
            set: self.split(split),
            order,
            pos: 0,
            batch_size,
            augment,
            device,
            stream,
        }
    }
}

/// The fixed validation split of `n` training images: the sorted indices
/// kept for training and those held out, chosen by `split_seed` alone. `None`
/// when `n` is too small to leave both sides non-empty.
pub(crate) fn split_indices(n: usize, split_seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    let n_val = ((n as f64) * VAL_FRACTION).round() as usize;
    if n < 2 || n_val == 0 || n_val == n {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(split_seed, 0x0076_616c).shuffle(&mut order);
    let (val_idx, train_idx) = order.split_at_mut(n_val);
    val_idx.sort_unstable();
    train_idx.sort_unstable();
    Some((train_idx.to_vec(), val_idx.to_vec()))
}

fn channel_stats(set: &ImageSet) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = set.shape;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for img in set.images.chunks_exact(c * h * w) {
        for (ch, plane) in img.chunks_exact(h * w).enumerate() {
            for &b in plane {
                let v = b as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
    }
    let n = (set.len() * h * w) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt().max(1e-3)) as f32)
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

#[cfg(test)]
mod tests;
