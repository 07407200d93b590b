//! Image folders in torchvision's `ImageFolder` layout:
//! `ROOT/train/<class>/**/*.{jpg,jpeg,png}` and `ROOT/val/<class>/...`.
//!
//! Classes and files are listed exactly as torchvision lists them, so that
//! label `k` here is label `k` there: the classes are the sorted names of
//! the sub-folders of `train` (Python sorts strings by code point, which is
//! the byte order of UTF-8 that Rust's `str` ordering uses), and inside a
//! class the folders of `os.walk` sorted by path, then the files of each
//! folder sorted by name, filtered by a case-insensitive extension.
//!
//! Nothing is decoded here: a data set of a million files is a list of
//! paths and labels, and images are read on demand by the pipeline
//! (`pipeline.rs`). Listing does check the first bytes of every file (a
//! JPEG or PNG signature), so that a file that is not an image at all is
//! reported before training starts.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The image file extensions torchvision's `ImageFolder` accepts
/// (`IMG_EXTENSIONS`), compared case-insensitively.
pub const TORCHVISION_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// The subset of [`TORCHVISION_EXTENSIONS`] this trainer decodes.
pub const SUPPORTED_EXTENSIONS: [&str; 3] = [".jpg", ".jpeg", ".png"];

/// The per-channel mean of ImageNet's training images (torchvision's
/// reference recipes), in [0, 1] units, RGB.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// The per-channel standard deviation of ImageNet's training images.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Which statistics normalise an image folder's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// ImageNet's mean and standard deviation ([`IMAGENET_MEAN`], [`IMAGENET_STD`]).
    #[default]
    Imagenet,
    /// The folder's own per-channel statistics, computed over the
    /// evaluation transform of the training split.
    Data,
}

/// Settings of image-folder data sets (ignored by the other formats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderOptions {
    /// Side of the square images the model sees.
    pub image_size: usize,
    /// Normalisation statistics.
    pub normalize: Normalize,
    /// Skip (and count) unreadable images instead of stopping.
    pub skip_bad_images: bool,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Batches decoded ahead of the one in use.
    pub prefetch: usize,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            image_size: 224,
            normalize: Normalize::Imagenet,
            skip_bad_images: false,
            workers: 0,
            prefetch: 2,
        }
    }
}

impl FolderOptions {
    /// The number of decoding threads: `workers`, or one per core.
    pub fn threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// True for the defaults: configuration files leave the `[folder]`
    /// table out then, so files of runs on other data sets do not change.
    pub fn is_default(&self) -> bool {
        *self == FolderOptions::default()
    }

    /// Rejects sizes no model can use.
    pub fn validate(&self) -> Result<()> {
        if !(8..=4096).contains(&self.image_size) {
            return Err(Error::Config(format!(
                "image size {} is out of range (8 to 4096)",
                self.image_size
            )));
        }
        if self.prefetch == 0 {
            return Err(Error::Config("prefetch must be at least 1 batch".into()));
        }
        Ok(())
    }
}

/// The image-folder flags of the commands that load data; each is optional
/// so that it can be laid over a saved configuration ([`FolderArgs::apply`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct FolderArgs {
    /// Image folders: side of the square training and evaluation images
    /// [default: 224].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Image folders: normalise with ImageNet's statistics (imagenet) or
    /// the folder's own, computed over the training split (data)
    /// [default: imagenet].
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
    /// Image folders: skip unreadable or corrupt images (counted in the
    /// run's metrics) instead of stopping with an error.
    #[arg(long)]
    pub skip_bad_images: bool,
    /// Image folders: decoding threads (0: one per core) [default: 0].
    #[arg(long)]
    pub data_workers: Option<usize>,
    /// Image folders: batches decoded ahead of training [default: 2].
    #[arg(long)]
    pub prefetch: Option<usize>,
}

impl FolderArgs {
    /// `base` with the given flags laid over it.
    pub fn apply(&self, mut base: FolderOptions) -> FolderOptions {
        if let Some(v) = self.image_size {
            base.image_size = v;
        }
        if let Some(v) = self.normalize {
            base.normalize = v;
        }
        if self.skip_bad_images {
            base.skip_bad_images = true;
        }
        if let Some(v) = self.data_workers {
            base.workers = v;
        }
        if let Some(v) = self.prefetch {
            base.prefetch = v;
        }
        base
    }
}

/// One image file and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The file.
    pub path: PathBuf,
    /// Its class index (the position of its folder among the classes).
    pub label: i64,
}

/// A listed image folder: class names and the files of both splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderIndex {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Files of `ROOT/train`, class after class.
    pub train: Vec<Item>,
    /// Files of `ROOT/val` (the test split).
    pub test: Vec<Item>,
    /// Files left out because they are not images (with
    /// `skip_bad_images`), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// True when `dir` looks like an image folder: it has `train/` and `val/`
/// sub-folders.
pub fn is_image_folder(dir: &Path) -> bool {
    dir.join("train").is_dir() && dir.join("val").is_dir()
}

/// Lists `root/train` and `root/val`. The classes are those of `train`;
/// `val` must have no class that `train` lacks (a class with no validation
/// images is allowed).
pub fn index_folder(root: &Path, skip_bad: bool) -> Result<FolderIndex> {
    let train_dir = root.join("train");
    let classes = find_classes(&train_dir)?;
    let val_dir = root.join("val");
    let val_classes = find_classes(&val_dir)?;
    if let Some(extra) = val_classes.iter().find(|c| !classes.contains(c)) {
        return Err(Error::data(
            val_dir.join(extra),
            "is a class that train/ does not have",
        ));
    }
    let mut skipped = Vec::new();
    let train = list_split(&train_dir, &classes, skip_bad, &mut skipped, true)?;
    let test = list_split(&val_dir, &classes, skip_bad, &mut skipped, false)?;
    Ok(FolderIndex {
        classes,
        train,
        test,
        skipped,
    })
}

/// torchvision's `find_classes`: the sorted names of the sub-folders
/// (following symbolic links, as `os.scandir`'s `is_dir()` does).
pub fn find_classes(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_dir() {
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| Error::data(dir.join(n), "class folder name is not valid UTF-8"))?;
            classes.push(name);
        }
    }
    if classes.is_empty() {
        return Err(Error::data(dir, "has no class sub-folders"));
    }
    classes.sort_unstable();
    Ok(classes)
}

/// The image files of every class under `dir`, with labels from `classes`.
fn list_split(
    dir: &Path,
    classes: &[String],
    skip_bad: bool,
    skipped: &mut Vec<(PathBuf, String)>,
    need_every_class: bool,
) -> Result<Vec<Item>> {
    let mut candidates = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            if need_every_class {
                return Err(Error::data(class_dir, "no such class folder"));
            }
            continue;
        }
        let before = candidates.len();
        for path in walk_sorted(&class_dir)? {
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
            let name = name.unwrap_or_default();
            let is_image = |exts: &[&str]| exts.iter().any(|e| name.ends_with(e));
            if is_image(&SUPPORTED_EXTENSIONS) {
                candidates.push(Item {
                    path,
                    label: label as i64,
                });
            } else if is_image(&TORCHVISION_EXTENSIONS) {
                // torchvision would load it, so ignoring it would shift
                // the sample count against a torchvision run.
                let msg =
                    "is an image format the trainer does not decode (convert it to JPEG or PNG)";
                if skip_bad {
                    skipped.push((path, msg.into()));
                } else {
                    return Err(Error::BadImage {
                        path,
                        msg: msg.into(),
                    });
                }
            }
        }
        if need_every_class && candidates.len() == before {
            return Err(Error::data(
                class_dir,
                "holds no .jpg, .jpeg or .png file (torchvision refuses an empty class too)",
            ));
        }
    }
    // Opening a million files one after another takes minutes on a network
    // file system; the checks run on every core, and the first bad file in
    // listing order is the one reported.
    let checks = check_all(&candidates);
    let mut items = Vec::with_capacity(candidates.len());
    for (item, check) in candidates.into_iter().zip(checks) {
        match check {
            Ok(()) => items.push(item),
            Err(msg) if skip_bad => skipped.push((item.path, msg)),
            Err(msg) => {
                return Err(Error::BadImage {
                    path: item.path,
                    msg,
                })
            }
        }
    }
    Ok(items)
}

/// [`check_signature`] of every item, in order, on all cores.
fn check_all(items: &[Item]) -> Vec<std::result::Result<(), String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|i| check_signature(&i.path))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a checking thread panicked"))
            .collect()
    })
}

/// The files under `dir` in the order of torchvision's `make_dataset`:
/// `sorted(os.walk(dir, followlinks=True))`, then each folder's files
/// sorted by name.
fn walk_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders: Vec<(String, Vec<String>)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut files = Vec::new();
        for entry in fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|_| Error::data(&path, "file name is not valid UTF-8"))?;
                files.push(name);
            }
        }
        files.sort_unstable();
        let root = d
            .to_str()
            .ok_or_else(|| Error::data(&d, "folder name is not valid UTF-8"))?
            .to_string();
        folders.push((root, files));
    }
    folders.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(folders
        .into_iter()
        .flat_map(|(root, files)| {
            let root = PathBuf::from(root);
            files.into_iter().map(move |f| root.join(f))
        })
        .collect())
}

/// Checks that `path` starts like a JPEG or PNG file; the message says
/// what is wrong otherwise.
fn check_signature(path: &Path) -> std::result::Result<(), String> {
    let mut head = [0u8; 8];
    let mut file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    if super::decode::sniff(&head[..n]).is_some() {
        Ok(())
    } else if n == 0 {
        Err("is empty".into())
    } else {
        Err("is neither a JPEG nor a PNG file".into())
    }
}
