//! Reading the official CIFAR-10-C and CIFAR-100-C folders: one
//! `<corruption>.npy` per corruption (uint8, `N x H x W x C`, the five
//! severities one after another) and one `labels.npy`.
//!
//! Only the rows of the requested severity are read, one batch at a time, so
//! memory stays at one batch whatever the file's size (a CIFAR-10-C file is
//! 150 MB).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The number of severities stacked in every file.
pub const SEVERITIES: usize = 5;

/// The header of a `.npy` file: element type, shape and where data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy's type string, such as `|u1` or `<i8`.
    pub descr: String,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

/// Reads and checks the header of the `.npy` file `path` (format versions
/// 1 to 3, C order only), and that the file holds all of the data.
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let bad = |msg: String| Error::data(path, msg);
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre)
        .map_err(|_| bad("too short for a .npy header".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (len, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10u64),
        2 | 3 => {
            let mut more = [0u8; 2];
            f.read_exact(&mut more)
                .map_err(|_| bad("truncated .npy header".into()))?;
            (
                u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize,
                12u64,
            )
        }
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    if len > 1 << 20 {
        return Err(bad(format!(
            ".npy header of {len} bytes is implausibly long"
        )));
    }
    let mut text = vec![0u8; len];
    f.read_exact(&mut text)
        .map_err(|_| bad("truncated .npy header".into()))?;
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| -> Result<&str> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!(".npy header has no '{key}'")))?;
        let rest = text[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad("unreadable 'descr' in .npy header".into()))?
        .to_string();
    if field("fortran_order")?.starts_with("True") {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("unreadable 'shape' in .npy header".into()))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("unreadable shape ({inner}) in .npy header")))?;
    let header = NpyHeader {
        descr,
        shape,
        data_offset: start + len as u64,
    };
    let need = header
        .shape
        .iter()
        .try_fold(element_size(&header.descr, path)?, |a, &d| a.checked_mul(d))
        .and_then(|n| (n as u64).checked_add(header.data_offset))
        .ok_or_else(|| bad("shape overflows".into()))?;
    if file_len < need {
        return Err(bad(format!(
            "holds {file_len} bytes but shape {:?} of {} needs {need}",
            header.shape, header.descr
        )));
    }
    Ok(header)
}

fn element_size(descr: &str, path: &Path) -> Result<usize> {
    match descr {
        "|u1" | "<u1" | "u1" | "|i1" | "<i1" | "|b1" => Ok(1),
        "<i2" | "<u2" => Ok(2),
        "<i4" | "<u4" => Ok(4),
        "<i8" | "<u8" => Ok(8),
        d => Err(Error::data(
            path,
            format!("element type {d} is not supported (expected uint8 images and integer labels)"),
        )),
    }
}

/// Reads a one-dimensional `.npy` file of little-endian integers as labels.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let h = read_header(path)?;
    if h.shape.len() != 1 {
        return Err(Error::data(
            path,
            format!("labels must be one-dimensional, shape is {:?}", h.shape),
        ));
    }
    let size = element_size(&h.descr, path)?;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(h.data_offset))
        .map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; h.shape[0] * size];
    f.read_exact(&mut bytes).map_err(|e| Error::io(path, e))?;
    let signed = h.descr.contains('i');
    Ok(bytes
        .chunks_exact(size)
        .map(|b| {
            let mut buf = [0u8; 8];
            buf[..size].copy_from_slice(b);
            let negative = signed && b[size - 1] & 0x80 != 0;
            if negative {
                buf[size..].fill(0xff);
            }
            i64::from_le_bytes(buf)
        })
        .collect())
}

/// One corruption file, opened for reading the images of one severity.
#[derive(Debug)]
pub struct CorruptionFile {
    path: PathBuf,
    file: File,
    header: NpyHeader,
    /// `[channels, height, width]` of the images.
    shape: [usize; 3],
}

impl CorruptionFile {
    /// Opens `path` and checks that it holds uint8 images of `shape`
    /// (`N x H x W x C`, or `N x H x W` for grey) with `N` = `labels`.
    pub fn open(path: &Path, shape: [usize; 3], labels: usize) -> Result<CorruptionFile> {
        let header = read_header(path)?;
        let bad = |msg: String| Error::data(path, msg);
        if !matches!(header.descr.as_str(), "|u1" | "<u1" | "u1") {
            return Err(bad(format!("images must be uint8, not {}", header.descr)));
        }
        let [c, h, w] = shape;
        let fits = match header.shape[..] {
            [_, fh, fw, fc] => [fh, fw, fc] == [h, w, c],
            [_, fh, fw] => [fh, fw] == [h, w] && c == 1,
            _ => false,
        };
        if !fits {
            return Err(bad(format!(
                "holds images of shape {:?}, expected N x {h} x {w} x {c} to match the data set",
                header.shape
            )));
        }
        if header.shape[0] != labels {
            return Err(bad(format!(
                "holds {} images but labels.npy has {labels} labels",
                header.shape[0]
            )));
        }
        if labels % SEVERITIES != 0 || labels == 0 {
            return Err(bad(format!(
                "{labels} images do not split into {SEVERITIES} equal severities"
            )));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(CorruptionFile {
            path: path.to_path_buf(),
            file,
            header,
            shape,
        })
    }

    /// Images per severity.
    pub fn per_severity(&self) -> usize {
        self.header.shape[0] / SEVERITIES
    }

    /// Reads images `first..first + count` into `out` as `N x C x H x W`
    /// bytes (the layout of the data sets), converting from the file's
    /// `N x H x W x C`.
    pub fn read_images(&mut self, first: usize, count: usize, out: &mut Vec<u8>) -> Result<()> {
        let [c, h, w] = self.shape;
        let len = c * h * w;
        let offset = self.header.data_offset + (first * len) as u64;
        let mut raw = vec![0u8; count * len];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut raw))
            .map_err(|e| Error::io(&self.path, e))?;
        out.clear();
        out.reserve(raw.len());
        for image in raw.chunks_exact(len) {
            for ch in 0..c {
                out.extend((0..h * w).map(|p| image[p * c + ch]));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a version-1 `.npy` file of `descr` with `shape` and `data`.
    pub(crate) fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut text =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_rows_of_one_severity_channel_first() {
        let dir = tempfile::tempdir().unwrap();
        // 10 images of 2x2x3 (HWC), value = 100 * image + 10 * channel + pixel.
        let mut data = Vec::new();
        for n in 0..10u8 {
            for p in 0..4u8 {
                for ch in 0..3u8 {
                    data.push(n * 20 + ch * 5 + p);
                }
            }
        }
        let f = dir.path().join("fog.npy");
        write_npy(&f, "|u1", &[10, 2, 2, 3], &data);
        let mut file = CorruptionFile::open(&f, [3, 2, 2], 10).unwrap();
        assert_eq!(file.per_severity(), 2);
        let mut out = Vec::new();
        file.read_images(4, 2, &mut out).unwrap();
        let want: Vec<u8> = (4..6u8)
            .flat_map(|n| (0..3u8).flat_map(move |ch| (0..4u8).map(move |p| n * 20 + ch * 5 + p)))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn labels_of_any_integer_width() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("labels.npy");
        write_npy(&f, "|u1", &[3], &[0, 9, 255]);
        assert_eq!(read_labels(&f).unwrap(), vec![0, 9, 255]);
        let wide: Vec<u8> = [7i64, -1, 99]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write_npy(&f, "<i8", &[3], &wide);
        assert_eq!(read_labels(&f).unwrap(), vec![7, -1, 99]);
        let mid: Vec<u8> = [5i32, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&f, "<i4", &[2], &mid);
        assert_eq!(read_labels(&f).unwrap(), vec![5, -2]);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("snow.npy");
        std::fs::write(&f, b"not numpy at all").unwrap();
        let err = read_header(&f).unwrap_err().to_string();
        assert!(err.contains("snow.npy") && err.contains("magic"), "{err}");
        // Truncated data.
        write_npy(&f, "|u1", &[5, 2, 2, 3], &[0; 59]);
        let err = read_header(&f).unwrap_err().to_string();
        assert!(err.contains("snow.npy") && err.contains("needs"), "{err}");
        // Wrong image size, wrong count, float images.
        write_npy(&f, "|u1", &[5, 2, 2, 3], &[0; 60]);
        let err = CorruptionFile::open(&f, [3, 4, 4], 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected N x 4 x 4 x 3"), "{err}");
        let err = CorruptionFile::open(&f, [3, 2, 2], 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels.npy has 10"), "{err}");
        write_npy(&f, "<f4", &[5], &[0; 20]);
        let err = read_header(&f).unwrap_err().to_string();
        assert!(err.contains("<f4"), "{err}");
    }
}
