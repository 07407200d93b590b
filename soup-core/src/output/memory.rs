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
///
/// The temporary name ends in random characters and the file is created
/// only if nothing has that name (`O_CREAT | O_EXCL`), so a link planted
/// in a shared output folder can neither guess the name nor be followed.
pub fn write_file_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(target, |f| {
        use std::io::Write;
        f.write_all(bytes)
    })
}

/// Creates the file `path` for writing only if nothing exists there (not
/// even a dangling link: `O_CREAT | O_EXCL` never follows one), with the
/// permissions of an ordinary new file (0666 less the umask).
fn create_exclusive(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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
    let mut tmp = tempfile::Builder::new()
        .prefix(&crate::safety::own_prefix(crate::safety::TEMP_PREFIX))
        .make_in(parent, create_exclusive)
        .map_err(|e| Error::io(parent, "cannot create output in folder", super::plain(e)))?;
    let written = (|| {
        fill(tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        tmp.persist(target).map_err(|e| e.error)
    })();
    // On failure the temporary file is removed as `tmp` is dropped.
    written.map_err(|e| Error::io(target, "cannot write", e))?;
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_creation_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = create_exclusive(&link).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("new"), &dangling).unwrap();
        assert!(create_exclusive(&dangling).is_err());
        assert!(!dir.path().join("new").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn links_planted_at_predictable_temp_names_are_not_followed() {
        // The names an earlier version used: `.soup-tmp-<pid>-<n>-<name>`
        // with a per-process counter.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let target = out.join("state.bin");
        for n in 0..2000 {
            let name = format!(".soup-tmp-{}-{n}-state.bin", std::process::id());
            std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
        }
        write_file_atomic(&target, b"overwritten").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file(), "the output is a file of its own");
        assert_eq!(std::fs::read(&target).unwrap(), b"overwritten");
    }
}
