//! Opening the files of a checkpoint: regular files only, memory-mapped.

use std::fs::File;
use std::path::Path;

use memmap2::{Advice, Mmap};

use super::{Backing, Shard};
use crate::error::{Error, Result};

/// Opens `path` for reading if it is a regular file. The open does not
/// block on a FIFO or device (O_NONBLOCK, which changes nothing for regular
/// files), and the type is checked on the opened file, so a swap between a
/// check and the open cannot slip a FIFO through.
pub(super) fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, "cannot open", e))?;
    let kind = file
        .metadata()
        .map_err(|e| Error::io(path, "cannot stat", e))?
        .file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(Error::format(
        path,
        format!("is {what}, not a regular file: refusing to read it"),
    ))
}

/// # Safety
/// The contract of [`Checkpoint::open_mmap`].
pub(super) unsafe fn map_file(path: &Path) -> Result<Shard> {
    let file = open_regular(path)?;
    let stamp = file
        .metadata()
        .map(|m| crate::safety::FileStamp::of(&m))
        .map_err(|e| Error::io(path, "cannot stat", e))?;
    // SAFETY: the map is read-only and the caller guarantees that the file
    // is not modified while mapped (`Checkpoint::open_mmap`); should another
    // process truncate it anyway, the handler of `crate::safety` turns the
    // fault into a clean exit naming this file.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot map", e))?;
    let _ = map.advise(Advice::Sequential);
    Ok(Shard {
        path: path.to_path_buf(),
        backing: Backing::Mapped {
            stamp,
            _guard: crate::safety::MappedGuard::new(&map, path),
            map,
        },
    })
}
