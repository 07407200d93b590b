//! Data sets: loading IDX (MNIST-style) and CIFAR binary folders, the fixed
//! validation split, normalisation, augmentation and batching.
//!
//! Images are kept as bytes (`N x C x H x W`, u8) and turned into normalised
//! float tensors one batch at a time, so a whole data set costs one byte per
//! pixel and augmentation is plain index arithmetic.
//!
//! Each on-disk format has its own file (`idx.rs`, `cifar.rs`); training
//! augmentation is in `augment.rs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::rng::Rng;

mod augment;
mod cifar;
mod idx;

use augment::crop_flip;
pub use augment::rotate;
use cifar::read_cifar_folder;
use idx::{find_idx, read_idx_folder, IDX_FILES};

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The share of the training set held out for validation.
pub const VAL_FRACTION: f64 = 0.1;

/// Zero padding, in pixels, of the random-crop augmentation.
pub const CROP_PADDING: usize = 4;

/// The largest angle, in degrees, of CIFAR-100's random rotation
/// (torchvision's `RandomRotation(15)` in the reference code).
pub const CIFAR100_ROTATION: f64 = 15.0;

/// A set of images with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, image after image, each `channels x height x width`.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<i64>,
    /// `[channels, height, width]` of every image.
    pub shape: [usize; 3],
}

impl ImageSet {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        ImageSet {
            images,
            labels,
            shape: self.shape,
        }
    }
}

/// The on-disk format of a data folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// MNIST-style IDX files, gzipped or raw.
    Idx,
    /// CIFAR-10 binary version (`data_batch_1.bin` .. `test_batch.bin`).
    Cifar10,
    /// CIFAR-100 binary version (`train.bin`, `test.bin`; fine labels).
    Cifar100,
}

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
    /// Whether training batches get random crops and flips (CIFAR).
    pub augment: bool,
    /// The largest angle in degrees of a random rotation after crop and
    /// flip (0: none): 15 for CIFAR-100, as in the reference code.
    pub rotation: f64,
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
        let (name, dir) = resolve(spec)?;
        let (format, dir) = detect(&dir)?;
        let (train, test) = match format {
            Format::Idx => read_idx_folder(&dir)?,
            Format::Cifar10 => read_cifar_folder(&dir, false)?,
            Format::Cifar100 => read_cifar_folder(&dir, true)?,
        };
        Dataset::from_parts(name, format, train, test, split_seed)
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
        let n_val = ((n as f64) * VAL_FRACTION).round() as usize;
        if n < 2 || n_val == 0 || n_val == n {
            return Err(Error::data(
                &name,
                format!("{n} training images are too few to split"),
            ));
        }
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(split_seed, 0x0076_616c).shuffle(&mut order);
        let (val_idx, train_idx) = order.split_at_mut(n_val);
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let train = full_train.select(train_idx);
        let val = full_train.select(val_idx);
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
            Format::Idx => 1 + largest.unwrap_or(0) as usize,
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
            rotation,
        })
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
        Batches {
            data: self,
            set: self.split(split),
            order,
            pos: 0,
            batch_size,
            augment,
            device,
        }
    }
}

/// An iterator over batches of one split; see [`Dataset::train_batches`] and
/// [`Dataset::eval_batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a Dataset,
    set: &'a ImageSet,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
    augment: Option<Rng>,
    device: Device,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
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
        for &i in idx {
            match self.augment.as_mut() {
                Some(rng) if self.data.rotation > 0.0 => {
                    crop_flip(self.set.image(i), &mut cropped, self.set.shape, rng);
                    let max = self.data.rotation;
                    let angle =
                        -max + 2.0 * max * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    rotate(&cropped, &mut rotated, self.set.shape, angle);
                    pixels.extend_from_slice(&rotated);
                }
                Some(rng) => {
                    crop_flip(self.set.image(i), &mut cropped, self.set.shape, rng);
                    pixels.extend_from_slice(&cropped);
                }
                None => pixels.extend_from_slice(self.set.image(i)),
            }
        }
        let labels: Vec<i64> = idx.iter().map(|&i| self.set.labels[i]).collect();
        Some(self.data.batch_from_bytes(&pixels, &labels, self.device))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

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

// --- finding and reading folders --------------------------------------------

fn resolve(spec: &str) -> Result<(String, PathBuf)> {
    match spec {
        "fashion-mnist" => {
            let dir = PathBuf::from(FASHION_MNIST_DIR);
            if !dir.is_dir() {
                return Err(Error::data(
                    dir,
                    "no such folder: install Debian's dataset-fashion-mnist (scripts/setup.sh does) or pass a folder",
                ));
            }
            Ok((spec.to_string(), dir))
        }
        _ => {
            let dir = PathBuf::from(spec);
            if dir.is_dir() {
                Ok((spec.to_string(), dir))
            } else if dir.exists() {
                Err(Error::data(dir, "is not a folder"))
            } else if spec.contains(std::path::MAIN_SEPARATOR) || spec.starts_with('.') {
                Err(Error::data(dir, "no such folder"))
            } else {
                Err(Error::UnknownData(spec.to_string()))
            }
        }
    }
}

/// Finds out which format a folder holds, looking also into the subfolder
/// names the official archives unpack to.
fn detect(dir: &Path) -> Result<(Format, PathBuf)> {
    let candidates = [
        dir.to_path_buf(),
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ];
    for d in candidates.iter().filter(|d| d.is_dir()) {
        if d.join("data_batch_1.bin").is_file() || d.join("test_batch.bin").is_file() {
            return Ok((Format::Cifar10, d.clone()));
        }
        if d.join("train.bin").is_file() || d.join("test.bin").is_file() {
            return Ok((Format::Cifar100, d.clone()));
        }
        if IDX_FILES
            .iter()
            .flatten()
            .any(|stem| find_idx(d, &[stem]).is_some())
        {
            return Ok((Format::Idx, d.clone()));
        }
    }
    Err(Error::data(
        dir,
        "holds no data set: expected IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
         t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), CIFAR-10 binary files \
         (data_batch_1.bin .. data_batch_5.bin, test_batch.bin) or CIFAR-100 binary files (train.bin, test.bin)",
    ))
}

#[cfg(test)]
mod tests {
    use super::cifar::CIFAR10_FILES;
    use super::*;
    use std::fs;
    use std::io::Write;

    fn idx_images(n: usize, h: usize, w: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for d in [n, h, w] {
            v.extend_from_slice(&(d as u32).to_be_bytes());
        }
        v.extend((0..n * h * w).map(|i| (i as u8).wrapping_mul(seed)));
        v
    }

    fn idx_labels(n: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v.extend((0..n).map(|i| (i % 10) as u8));
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_idx(dir: &Path, gzip: bool) {
        let files = [
            ("train-images-idx3-ubyte", idx_images(50, 28, 28, 3)),
            ("train-labels-idx1-ubyte", idx_labels(50)),
            ("t10k-images-idx3-ubyte", idx_images(20, 28, 28, 5)),
            ("t10k-labels-idx1-ubyte", idx_labels(20)),
        ];
        for (name, bytes) in files {
            if gzip {
                fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
            } else {
                fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn idx_folder_gz_and_raw_load_alike() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_idx(a.path(), true);
        write_idx(b.path(), false);
        let da = Dataset::load(a.path().to_str().unwrap(), 0).unwrap();
        let db = Dataset::load(b.path().to_str().unwrap(), 0).unwrap();
        assert_eq!(da.format, Format::Idx);
        assert_eq!((da.train.len(), da.val.len(), da.test.len()), (45, 5, 20));
        assert_eq!(da.num_classes, 10);
        assert_eq!(da.input_shape(), [1, 28, 28]);
        assert_eq!(da.train, db.train);
        assert!(!da.augment);
    }

    #[test]
    fn validation_split_depends_on_split_seed_only() {
        let d = tempfile::tempdir().unwrap();
        write_idx(d.path(), false);
        let p = d.path().to_str().unwrap();
        let (a, b, c) = (
            Dataset::load(p, 1).unwrap(),
            Dataset::load(p, 1).unwrap(),
            Dataset::load(p, 2).unwrap(),
        );
        assert_eq!(a.val, b.val);
        assert_ne!(a.val, c.val);
    }

    #[test]
    fn truncated_idx_file_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        write_idx(d.path(), false);
        let f = d.path().join("t10k-images-idx3-ubyte");
        let bytes = fs::read(&f).unwrap();
        fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
        let err = Dataset::load(d.path().to_str().unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("do not match"),
            "{err}"
        );
    }

    #[test]
    fn missing_folder_and_empty_folder_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let err = Dataset::load(d.path().to_str().unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no data set"), "{err}");
        let gone = d.path().join("nope");
        let err = Dataset::load(gone.to_str().unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such folder"), "{err}");
        let err = Dataset::load("imagenet", 0).unwrap_err().to_string();
        assert!(err.contains("unknown data set"), "{err}");
    }

    /// Writes CIFAR records in the official binary layout.
    fn cifar_file(n: usize, hundred: bool, salt: u8) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            if hundred {
                v.push((i % 20) as u8);
                v.push((i % 100) as u8);
            } else {
                v.push((i % 10) as u8);
            }
            v.extend((0..3072).map(|j| (j as u8).wrapping_add(i as u8).wrapping_mul(salt)));
        }
        v
    }

    #[test]
    fn cifar10_folder_in_official_layout() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar-10-batches-bin");
        fs::create_dir(&dir).unwrap();
        for (k, name) in CIFAR10_FILES.iter().enumerate() {
            fs::write(dir.join(name), cifar_file(8, false, k as u8 + 1)).unwrap();
        }
        let d = Dataset::load(root.path().to_str().unwrap(), 0).unwrap();
        assert_eq!(d.format, Format::Cifar10);
        assert_eq!((d.train.len() + d.val.len(), d.test.len()), (40, 8));
        assert_eq!(d.num_classes, 10);
        assert_eq!(d.input_shape(), [3, 32, 32]);
        // The first test record is kept byte for byte, label first.
        assert_eq!(d.test.labels[0], 0);
        assert_eq!(&d.test.images[..3072], &cifar_file(1, false, 6)[1..]);
        assert!(d.augment);
    }

    #[test]
    fn cifar100_uses_fine_labels_and_rejects_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("train.bin"), cifar_file(30, true, 1)).unwrap();
        fs::write(dir.path().join("test.bin"), cifar_file(10, true, 2)).unwrap();
        let d = Dataset::load(dir.path().to_str().unwrap(), 0).unwrap();
        assert_eq!(d.format, Format::Cifar100);
        assert_eq!(d.test.labels, (0..10).collect::<Vec<i64>>());
        let mut bad = cifar_file(2, true, 1);
        bad.pop();
        fs::write(dir.path().join("test.bin"), bad).unwrap();
        let err = Dataset::load(dir.path().to_str().unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.bin") && err.contains("3074-byte"),
            "{err}"
        );
    }

    #[test]
    fn missing_cifar_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data_batch_1.bin"), cifar_file(2, false, 1)).unwrap();
        let err = Dataset::load(dir.path().to_str().unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing data_batch_2.bin"), "{err}");
    }

    #[test]
    fn crop_flip_matches_padding_semantics() {
        // A 1x2x2 image; with top = left = 4 (no shift) and a flip, columns swap.
        let src = [1u8, 2, 3, 4];
        let mut dst = [0u8; 4];
        let mut found = [false; 2];
        for s in 0..500 {
            let mut rng = Rng::new(s, 0);
            let mut probe = rng.clone();
            let (top, left, flip) = (probe.below(9), probe.below(9), probe.coin());
            crop_flip(&src, &mut dst, [1, 2, 2], &mut rng);
            if top == 4 && left == 4 {
                let want = if flip { [2, 1, 4, 3] } else { [1, 2, 3, 4] };
                assert_eq!(dst, want);
                found[flip as usize] = true;
            }
            if top == 0 && left == 0 && !flip {
                // Shifted by the full padding: all of the window is padding.
                assert_eq!(dst, [0, 0, 0, 0]);
            }
        }
        assert!(found[0] || found[1]);
    }

    #[test]
    fn rotate_turns_about_the_centre() {
        // 1x3x3 with distinct pixels: 0 degrees is the identity, 90 turns
        // counter-clockwise (the top row becomes the left column, reversed).
        let src = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut dst = [0u8; 9];
        rotate(&src, &mut dst, [1, 3, 3], 0.0);
        assert_eq!(dst, src);
        rotate(&src, &mut dst, [1, 3, 3], 90.0);
        assert_eq!(dst, [3, 6, 9, 2, 5, 8, 1, 4, 7]);
        // A small turn of a 1x9x9 image loses its corners to the fill.
        let big: Vec<u8> = (1..=81).collect();
        let mut out = vec![0u8; 81];
        rotate(&big, &mut out, [1, 9, 9], 15.0);
        assert_eq!(out[40], 41, "the centre stays");
        assert_ne!(out, big);
        rotate(&big, &mut out, [1, 9, 9], 45.0);
        assert_eq!(out[0], 0, "a corner is filled with zeros");
    }

    #[test]
    fn only_cifar100_training_batches_are_rotated() {
        let (d10, d100) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d10 = d10.path().join("cifar-10-batches-bin");
        fs::create_dir(&d10).unwrap();
        for (k, name) in CIFAR10_FILES.iter().enumerate() {
            fs::write(d10.join(name), cifar_file(10, false, k as u8 + 1)).unwrap();
        }
        fs::write(d100.path().join("train.bin"), cifar_file(50, true, 1)).unwrap();
        fs::write(d100.path().join("test.bin"), cifar_file(10, true, 2)).unwrap();
        let c10 = Dataset::load(d10.parent().unwrap().to_str().unwrap(), 0).unwrap();
        let c100 = Dataset::load(d100.path().to_str().unwrap(), 0).unwrap();
        assert_eq!((c10.rotation, c100.rotation), (0.0, 15.0));
        // A CIFAR-100 training batch is crop, flip, then a rotation drawn
        // from the same generator; replaying the draws by hand reproduces it.
        let mut rng = Rng::new(5, 0);
        let mut order: Vec<usize> = (0..c100.train.len()).collect();
        rng.shuffle(&mut order);
        let (mut crop, mut turned) = (vec![0u8; 3072], vec![0u8; 3072]);
        let mut want = Vec::new();
        for &i in &order[..4] {
            crop_flip(c100.train.image(i), &mut crop, [3, 32, 32], &mut rng);
            let angle = -15.0 + 30.0 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            assert!(angle.abs() <= 15.0);
            rotate(&crop, &mut turned, [3, 32, 32], angle);
            want.extend_from_slice(&turned);
        }
        let labels: Vec<i64> = order[..4].iter().map(|&i| c100.train.labels[i]).collect();
        let want = c100.batch_from_bytes(&want, &labels, Device::Cpu).images;
        let got = c100
            .train_batches(4, 5, 0, Device::Cpu)
            .next()
            .unwrap()
            .images;
        assert_eq!(f64::try_from((got - want).abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn batches_are_normalised_and_cover_the_split() {
        let d = tempfile::tempdir().unwrap();
        write_idx(d.path(), false);
        let data = Dataset::load(d.path().to_str().unwrap(), 0).unwrap();
        let batches: Vec<Batch> = data.eval_batches(Split::Test, 8, Device::Cpu).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].images.size(), [4, 1, 28, 28]);
        let all = Tensor::cat(
            &batches
                .iter()
                .map(|b| b.images.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let first = f64::try_from(all.get(0).get(0).get(0).get(1)).unwrap();
        let want = (data.test.images[1] as f64 / 255.0 - data.mean[0] as f64) / data.std[0] as f64;
        assert!((first - want).abs() < 1e-5);
        // The training pixels are normalised to mean 0 and deviation 1.
        let train: Vec<Tensor> = data
            .train_batches(16, 0, 0, Device::Cpu)
            .map(|b| b.images)
            .collect();
        let train = Tensor::cat(&train, 0);
        assert!(f64::try_from(train.mean(None)).unwrap().abs() < 1e-4);
        assert_eq!(data.train_batches_per_epoch(16), 3);
        assert_eq!(data.train_batches(16, 0, 0, Device::Cpu).count(), 3);
    }

    #[test]
    fn train_order_depends_on_seed_and_epoch() {
        let d = tempfile::tempdir().unwrap();
        write_idx(d.path(), false);
        let data = Dataset::load(d.path().to_str().unwrap(), 0).unwrap();
        let labels = |seed, epoch| -> Vec<i64> {
            let b: Vec<Tensor> = data
                .train_batches(45, seed, epoch, Device::Cpu)
                .map(|b| b.labels)
                .collect();
            Vec::<i64>::try_from(&b[0]).unwrap()
        };
        assert_eq!(labels(1, 0), labels(1, 0));
        assert_ne!(labels(1, 0), labels(1, 1));
        assert_ne!(labels(1, 0), labels(2, 0));
    }
}
