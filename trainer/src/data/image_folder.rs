//! An image folder as a data set: the listed files of the three splits, the
//! normalisation statistics, and the record of what went wrong while
//! loading (the first unreadable file, or the files skipped).
//!
//! The files stay on disk. Batches are made on demand by the pipeline
//! (`pipeline.rs`); evaluation of corrupted copies loads the test split's
//! evaluation transform as bytes ([`FolderData::eval_bytes`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::folder::{index_folder, FolderOptions, Item, Normalize, IMAGENET_MEAN, IMAGENET_STD};
use super::pipeline::{load_eval_bytes, SkipLog};
use super::{split_indices, Split};
use crate::error::{Error, Result};

/// An image folder's splits and settings, shared by every batch iterator.
#[derive(Debug)]
pub struct FolderData {
    /// The folder.
    pub root: PathBuf,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Training files (without the validation share).
    pub train: Arc<Vec<Item>>,
    /// Validation files, a fixed share of `train/` chosen by the split seed.
    pub val: Arc<Vec<Item>>,
    /// Test files (`val/`).
    pub test: Arc<Vec<Item>>,
    /// The settings it was loaded with.
    pub options: FolderOptions,
    /// Per-channel mean used for normalisation.
    pub mean: [f32; 3],
    /// Per-channel standard deviation used for normalisation.
    pub std: [f32; 3],
    pub(crate) skip_log: SkipLog,
    pub(crate) error: Mutex<Option<Error>>,
}

/// What a run records about an image folder (`data.json` in a run folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSummary {
    /// The folder.
    pub root: PathBuf,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Images per split: train, val, test.
    pub images: [usize; 3],
    /// Side of the square images.
    pub image_size: usize,
    /// Which statistics normalise the pixels.
    pub normalize: Normalize,
    /// Per-channel mean used.
    pub mean: [f32; 3],
    /// Per-channel standard deviation used.
    pub std: [f32; 3],
    /// Files skipped so far as unreadable, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl FolderData {
    /// Lists `root` and holds out the validation share chosen by
    /// `split_seed`; with [`Normalize::Data`] also computes the statistics
    /// (which decodes the whole training split once).
    pub fn load(root: &Path, split_seed: u64, options: &FolderOptions) -> Result<FolderData> {
        options.validate()?;
        let index = index_folder(root, options.skip_bad_images)?;
        let n = index.train.len();
        let (train_idx, val_idx) = split_indices(n, split_seed).ok_or_else(|| {
            Error::data(root, format!("{n} training images are too few to split"))
        })?;
        let pick = |idx: &[usize]| Arc::new(idx.iter().map(|&i| index.train[i].clone()).collect());
        let skip_log: SkipLog = Arc::new(Mutex::new(index.skipped.iter().cloned().collect()));
        let mut data = FolderData {
            root: root.to_path_buf(),
            classes: index.classes.clone(),
            train: pick(&train_idx),
            val: pick(&val_idx),
            test: Arc::new(index.test),
            options: options.clone(),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            skip_log,
            error: Mutex::new(None),
        };
        if options.normalize == Normalize::Data {
            (data.mean, data.std) = data.train_statistics()?;
        }
        Ok(data)
    }

    /// The files of a split.
    pub fn items(&self, split: Split) -> &Arc<Vec<Item>> {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// Per-channel mean and deviation of the training split's evaluation
    /// transform, in [0, 1] units. The sums are integers, so the result does
    /// not depend on the number of threads or the order they finish in.
    fn train_statistics(&self) -> Result<([f32; 3], [f32; 3])> {
        let size = self.options.image_size;
        let plane = size * size;
        let (mut sum, mut sq, mut count) = ([0u64; 3], [0u64; 3], 0u64);
        // Chunks bound the memory to a few hundred images.
        for chunk in self.train.chunks(256) {
            for img in self.load_bytes(chunk)?.into_iter().flatten() {
                for (c, p) in img.chunks_exact(plane).enumerate() {
                    sum[c] += p.iter().map(|&v| v as u64).sum::<u64>();
                    sq[c] += p.iter().map(|&v| (v as u64) * (v as u64)).sum::<u64>();
                }
                count += plane as u64;
            }
        }
        if count == 0 {
            return Err(Error::data(&self.root, "no readable training image"));
        }
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let m = sum[c] as f64 / count as f64 / 255.0;
            let v = sq[c] as f64 / count as f64 / (255.0 * 255.0) - m * m;
            mean[c] = m as f32;
            std[c] = v.max(0.0).sqrt().max(1e-3) as f32;
        }
        Ok((mean, std))
    }

    fn load_bytes(&self, items: &[Item]) -> Result<Vec<Option<Vec<u8>>>> {
        let skip = self.options.skip_bad_images.then_some(&self.skip_log);
        load_eval_bytes(items, self.options.image_size, self.options.threads(), skip)
    }

    /// The evaluation transform of images `start..stop` of a split as planar
    /// bytes, with their labels; skipped files are left out.
    pub fn eval_bytes(
        &self,
        split: Split,
        start: usize,
        stop: usize,
    ) -> Result<(Vec<u8>, Vec<i64>)> {
        let items = &self.items(split)[start..stop];
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (img, item) in self.load_bytes(items)?.into_iter().zip(items) {
            if let Some(img) = img {
                pixels.extend_from_slice(&img);
                labels.push(item.label);
            }
        }
        Ok((pixels, labels))
    }

    /// Files skipped so far, with the reason, sorted by path.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        let log = self.skip_log.lock().expect("skip log lock");
        log.iter().map(|(p, m)| (p.clone(), m.clone())).collect()
    }

    /// The first loading error since the last call, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().expect("error lock").take()
    }

    /// True while an error is recorded and not yet taken.
    pub fn has_error(&self) -> bool {
        self.error.lock().expect("error lock").is_some()
    }

    pub(crate) fn record_error(&self, e: Error) {
        self.error.lock().expect("error lock").get_or_insert(e);
    }

    /// What a run records about the folder.
    pub fn summary(&self) -> FolderSummary {
        FolderSummary {
            root: self.root.clone(),
            classes: self.classes.clone(),
            images: [self.train.len(), self.val.len(), self.test.len()],
            image_size: self.options.image_size,
            normalize: self.options.normalize,
            mean: self.mean,
            std: self.std,
            skipped: self.skipped(),
        }
    }
}
