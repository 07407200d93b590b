//! Finding a data set: known names, folders, and which format a folder
//! holds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::folder;
use super::idx::{find_idx, IDX_FILES};
use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

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
    /// JPEG and PNG files in torchvision's `ImageFolder` layout
    /// (`train/<class>/...`, `val/<class>/...`).
    ImageFolder,
}

/// The display name and folder of `spec`, a known name (`fashion-mnist`)
/// or a folder.
pub(super) fn resolve(spec: &str) -> Result<(String, PathBuf)> {
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
pub(super) fn detect(dir: &Path) -> Result<(Format, PathBuf)> {
    let candidates = [
        dir.to_path_buf(),
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ];
    if folder::is_image_folder(dir) {
        return Ok((Format::ImageFolder, dir.to_path_buf()));
    }
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
         (data_batch_1.bin .. data_batch_5.bin, test_batch.bin), CIFAR-100 binary files (train.bin, test.bin) \
         or an image folder (train/<class>/*.jpg|png and val/<class>/...)",
    ))
}
