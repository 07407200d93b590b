//! Writing models held in memory: named tensors packed into one
//! safetensors file, and any file written whole, both atomically with
//! soup's temporary naming.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use safetensors::Dtype;

use super::{check_replaceable, parent_of};
use crate::error::{Error, Result};
use crate::header::{self, RawTensor};

/// One tensor held in memory, for [`write_tensors`].
#[derive(Debug, Clone, Copy)]
pub struct TensorBytes<'a> {
    /// Name (PyTorch `state_dict` naming).
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// The elements, row-major, little-endian.
    pub data: &'a [u8],
}

/// Writes in-memory tensors as one safetensors file at `target`, atomically
/// (see [`write_file_atomic`]), with `metadata` in the header.
///
/// The layout depends only on the names, dtypes, shapes, bytes and metadata,
/// never on the order given: tensors are packed in name order without gaps,
/// the header's keys are sorted and the header is padded with spaces to a
/// multiple of 8 bytes (no reserved room, unlike [`Output`](super::Output)). Equal models
/// give byte-identical files, and so equal hashes. This is how a training
/// loop saves a model it holds in memory; an existing regular file at
/// `target` is replaced (a training state rewritten every epoch), a folder,
/// symbolic link, device or FIFO never.
pub fn write_tensors(
    target: &Path,
    tensors: &[TensorBytes<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut order: Vec<&TensorBytes<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| a.name.cmp(b.name));
    let mut raw = Vec::with_capacity(order.len());
    let mut offset = 0usize;
    for (i, t) in order.iter().enumerate() {
        header::check_output_name(target, t.name)?;
        if i > 0 && order[i - 1].name == t.name {
            return Err(Error::tensor(target, t.name, "given twice"));
        }
        let n = header::element_count(t.shape)
            .and_then(|n| header::byte_len(t.dtype, n))
            .ok_or_else(|| {
                Error::tensor(target, t.name, format!("shape {:?} overflows", t.shape))
            })?;
        if t.data.len() != n {
            return Err(Error::tensor(
                target,
                t.name,
                format!(
                    "{} bytes of data for shape {:?} of {}, which needs {n}",
                    t.data.len(),
                    t.shape,
                    crate::dtype::name(t.dtype)
                ),
            ));
        }
        raw.push(RawTensor {
            name: t.name.to_string(),
            dtype: t.dtype,
            shape: t.shape.to_vec(),
            start: offset,
            end: offset + n,
        });
        offset += n;
    }
    let head = header::serialize(&raw, metadata);
    write_atomic_with(target, |f| {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&head)?;
        for t in &order {
            w.write_all(t.data)?;
        }
        w.flush()
    })
}

/// Writes `bytes` to `target` atomically: a temporary file beside it under
/// soup's temporary naming (so that a writer killed meanwhile leaves a file
/// the next write into the folder sweeps), fsync, rename over `target`,
/// fsync of the folder. A reader sees the old file or the new one, never a
/// part. An existing regular file is replaced; a folder, symbolic link,
/// device, FIFO or socket is refused ([`Error::OutputIsFolder`],
/// [`Error::NotReplaceable`]).
pub fn write_file_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(target, |f| {
        use std::io::Write;
        f.write_all(bytes)
    })
}

/// [`write_file_atomic`] with the content written by `fill`.
fn write_atomic_with(
    target: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    if target.file_name().is_none() {
        return Err(Error::format(target, "not a file name"));
    }
    check_replaceable(target, false)?;
    if target.is_dir() {
        return Err(Error::OutputIsFolder {
            path: target.to_path_buf(),
        });
    }
    let parent = parent_of(target);
    crate::safety::sweep_stale_temps(parent);
    let tmp = crate::safety::temp_path_for(target);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(target, "cannot write", e));
    }
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}
