//! Where an output may go: not onto an input, not onto a symbolic link,
//! and onto an existing path only when it is something soup may replace.
//! The rules are those of the output module's documentation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::INDEX_FILE;
use crate::error::{Error, Result};
use crate::safety::parent_of;

/// Checks that `target` can be written without harming `inputs` (every
/// file read, a sharded input's index included): it is not one of them
/// (nor a folder holding one), it is not a symbolic link
/// ([`refuse_link`]), and it does not exist unless `force` is set.
pub fn check_target(target: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let resolved = resolve(target)?;
    for input in inputs {
        let input_real = input
            .canonicalize()
            .map_err(|e| Error::io(input, "cannot resolve", e))?;
        if input_real == resolved || input_real.starts_with(&resolved) {
            return Err(Error::invalid(format!(
                "{}: output would overwrite input {}",
                target.display(),
                input.display()
            )));
        }
    }
    refuse_link(target)?;
    if std::fs::symlink_metadata(target).is_ok() && !force {
        return Err(Error::OutputExists {
            path: target.to_path_buf(),
        });
    }
    Ok(())
}

/// Checks that an existing `target` is something soup may replace: a
/// regular file for single-file output, or a folder holding exactly a
/// sharded checkpoint for sharded output; never a symbolic link
/// ([`refuse_link`]). A missing target passes.
pub fn check_replaceable(target: &Path, sharded: bool) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    refuse_link(target)?;
    let Ok(meta) = std::fs::metadata(target) else {
        return Ok(());
    };
    let kind = meta.file_type();
    let refuse = |what: &str| {
        Err(Error::NotReplaceable {
            path: target.to_path_buf(),
            what: what.to_string(),
        })
    };
    if kind.is_file() {
        return if sharded {
            refuse("a file (sharded output replaces only a folder)")
        } else {
            Ok(())
        };
    }
    if !kind.is_dir() {
        return refuse(if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something that is not a regular file"
        });
    }
    if !sharded {
        // `Output::create` reports this with its own message.
        return Ok(());
    }
    if sharded_files(target).is_none() {
        return refuse(&format!(
            "a folder that is not exactly a sharded checkpoint ({INDEX_FILE} and the shards it names)"
        ));
    }
    Ok(())
}

/// Refuses a `target` that is a symbolic link ([`Error::NotReplaceable`]),
/// with or without `force`, naming where it leads: the path it resolves
/// to, or what the link holds where that does not resolve (a dangling
/// link, a pipe behind `/dev/stdout`). The rename into place would replace
/// the link itself, not what it points to: `-o /dev/stdout` with standard
/// output redirected to a file would turn `/dev/stdout` into a regular
/// file.
fn refuse_link(target: &Path) -> Result<()> {
    if !std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    let to = target
        .canonicalize()
        .or_else(|_| std::fs::read_link(target))
        .map_or_else(
            |_| "somewhere unreadable".to_string(),
            |p| p.display().to_string(),
        );
    Err(Error::NotReplaceable {
        path: target.to_path_buf(),
        what: format!("a symbolic link to {to}"),
    })
}

/// The files of `folder` if it holds exactly a sharded checkpoint: the
/// index and the shards its weight map names, all regular files, nothing
/// else. `None` otherwise.
pub(super) fn sharded_files(folder: &Path) -> Option<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index = folder.join(INDEX_FILE);
    if !std::fs::symlink_metadata(&index).ok()?.is_file() {
        return None;
    }
    let parsed: Index = serde_json::from_slice(&std::fs::read(&index).ok()?).ok()?;
    let mut expected: std::collections::BTreeSet<std::ffi::OsString> = parsed
        .weight_map
        .values()
        .map(std::ffi::OsString::from)
        .collect();
    expected.insert(INDEX_FILE.into());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).ok()? {
        let entry = entry.ok()?;
        if !expected.remove(&entry.file_name()) || !entry.file_type().ok()?.is_file() {
            return None;
        }
        files.push(entry.path());
    }
    expected.is_empty().then_some(files)
}

/// The absolute path `target` names, following links of its folder and of
/// the file itself when it exists.
fn resolve(target: &Path) -> Result<PathBuf> {
    if let Ok(real) = target.canonicalize() {
        return Ok(real);
    }
    let parent = parent_of(target);
    let real_parent = parent
        .canonicalize()
        .map_err(|e| Error::io(parent, "output folder is not usable", e))?;
    Ok(real_parent.join(target.file_name().unwrap_or_default()))
}
