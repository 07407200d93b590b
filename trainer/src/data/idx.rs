//! MNIST-style IDX folders: `train-images-idx3-ubyte[.gz]`,
//! `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]` and
//! `t10k-labels-idx1-ubyte[.gz]` (also spelled `*.idx3-ubyte`), gzipped or raw.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::image_set::ImageSet;
use crate::error::{Error, Result};

pub(crate) const IDX_FILES: [[&str; 2]; 4] = [
    ["train-images-idx3-ubyte", "train-images.idx3-ubyte"],
    ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"],
    ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"],
    ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"],
];

pub(crate) fn find_idx(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    stems
        .iter()
        .flat_map(|s| [dir.join(s), dir.join(format!("{s}.gz"))])
        .find(|p| p.is_file())
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Parses an IDX file of unsigned bytes with `ndims` dimensions; returns the
/// dimensions and the data.
fn parse_idx(bytes: &[u8], ndims: usize, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::data(
            path,
            format!("{} bytes is too short for an IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != ndims {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file of unsigned bytes with {ndims} dimension(s) (magic {:02x}{:02x}{:02x}{:02x})",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims).map(|i| be_u32(bytes, 4 + 4 * i)).collect();
    let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match len {
        Some(len) if header.checked_add(len) == Some(bytes.len()) => {
            Ok((dims, bytes[header..].to_vec()))
        }
        _ => Err(Error::data(
            path,
            format!(
                "dimensions {dims:?} do not match the file size of {} bytes",
                bytes.len()
            ),
        )),
    }
}

fn read_idx_pair(dir: &Path, images: &[&str], labels: &[&str]) -> Result<ImageSet> {
    let missing = |stems: &[&str]| Error::data(dir, format!("missing {}[.gz]", stems[0]));
    let ipath = find_idx(dir, images).ok_or_else(|| missing(images))?;
    let lpath = find_idx(dir, labels).ok_or_else(|| missing(labels))?;
    let (idims, pixels) = parse_idx(&read_maybe_gz(&ipath)?, 3, &ipath)?;
    let (ldims, label_bytes) = parse_idx(&read_maybe_gz(&lpath)?, 1, &lpath)?;
    if idims[0] != ldims[0] {
        return Err(Error::data(
            &lpath,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                ipath.display()
            ),
        ));
    }
    if idims[0] == 0 {
        return Err(Error::data(&ipath, "holds no images"));
    }
    let labels = label_bytes.iter().map(|&b| b as i64).collect();
    Ok(ImageSet {
        images: pixels,
        labels,
        shape: [1, idims[1], idims[2]],
    })
}

pub(crate) fn read_idx_folder(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let train = read_idx_pair(dir, &IDX_FILES[0], &IDX_FILES[1])?;
    let test = read_idx_pair(dir, &IDX_FILES[2], &IDX_FILES[3])?;
    Ok((train, test))
}
