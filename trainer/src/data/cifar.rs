//! CIFAR-10 and CIFAR-100 folders in the official binary layout.

use std::fs;
use std::path::Path;

use super::image_set::ImageSet;
use crate::error::{Error, Result};

pub(crate) const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// CIFAR images are 3 x 32 x 32 bytes after a 1-byte (CIFAR-10) or 2-byte
/// (CIFAR-100: coarse then fine) label.
fn read_cifar_file(path: &Path, fine: bool, num_classes: i64, into: &mut ImageSet) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let label_len = if fine { 2 } else { 1 };
    let record = label_len + 3 * 32 * 32;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte CIFAR records",
                bytes.len()
            ),
        ));
    }
    for (k, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_len - 1] as i64;
        if label >= num_classes {
            return Err(Error::data(
                path,
                format!("record {k} has label {label}, expected < {num_classes}"),
            ));
        }
        into.labels.push(label);
        into.images.extend_from_slice(&rec[label_len..]);
    }
    Ok(())
}

pub(crate) fn read_cifar_folder(dir: &Path, hundred: bool) -> Result<(ImageSet, ImageSet)> {
    let empty = || ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        shape: [3, 32, 32],
    };
    let (mut train, mut test) = (empty(), empty());
    let (train_files, test_file, classes): (&[&str], &str, i64) = if hundred {
        (&["train.bin"], "test.bin", 100)
    } else {
        (&CIFAR10_FILES[..5], CIFAR10_FILES[5], 10)
    };
    for name in train_files.iter().chain([&test_file]) {
        if !dir.join(name).is_file() {
            return Err(Error::data(dir, format!("missing {name}")));
        }
    }
    for name in train_files {
        read_cifar_file(&dir.join(name), hundred, classes, &mut train)?;
    }
    read_cifar_file(&dir.join(test_file), hundred, classes, &mut test)?;
    Ok((train, test))
}
