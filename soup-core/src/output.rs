//! Writing checkpoints atomically: one file, or Hugging Face shards plus an
//! index.
//!
//! The layout (names, dtypes, shapes, offsets) is fixed when the output is
//! created, so pieces can be written in any order and from any thread
//! (`pwrite`). Data goes to a temporary file (or folder) beside the target;
//! [`Output::commit`] rewrites the header with the final metadata, fsyncs and
//! renames. Dropping an uncommitted output deletes the temporary files, so a
//! failed or interrupted run leaves nothing behind. Shard files are opened
//! when written to and only a few stay open (see `layout`), so that an
//! output of thousands of shards fits the limit of open files.
//!
//! Temporary names carry the writer's host, PID namespace and PID, and
//! creating an output first sweeps the folder of temporaries left by killed
//! writers (see [`crate::safety`]). An existing output is replaced only when asked
//! (`force`), and only if it is a regular file (single-file output) or a
//! folder holding exactly a sharded checkpoint, its index and the shards the
//! index names (sharded output); a folder is swapped for the new one in one
//! atomic rename where the kernel supports it.
//!
//! An output path that is a symbolic link is refused, with or without
//! `force`, naming where the link leads: the rename would replace the link
//! itself, not what it points to, so `-o /dev/stdout` (a link to
//! `/proc/self/fd/1`) with standard output redirected to a file would turn
//! `/dev/stdout` into a regular file for everyone, and a link to a file
//! elsewhere would silently stop pointing there. Links in the folders above
//! the output are followed as usual.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::checkpoint::INDEX_FILE;

mod layout;
mod memory;
mod target;
use crate::error::{Error, Result};
use crate::header;
use layout::{Layout, ShardFiles};
pub use memory::{write_file_atomic, write_tensors, TensorBytes};
use target::sharded_files;
pub use target::{check_replaceable, check_target};

/// Header bytes kept free for metadata that is known only at the end
/// (input hashes, results).
const HEADER_SLACK: usize = 1 << 10;

/// Where and how to write.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// Split into shards of at most this many bytes of tensor data (a tensor
    /// larger than that gets a shard of its own).
    pub shard_size: Option<u64>,
    /// Replace an existing output.
    pub force: bool,
}

/// One tensor of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
}

impl From<&crate::checkpoint::TensorEntry> for OutputTensor {
    /// The same name, dtype and shape as an input tensor.
    fn from(t: &crate::checkpoint::TensorEntry) -> Self {
        OutputTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        }
    }
}

impl OutputTensor {
    /// Bytes of data.
    pub fn nbytes(&self) -> usize {
        header::element_count(&self.shape)
            .and_then(|n| header::byte_len(self.dtype, n))
            .expect("validated shape")
    }
}

#[derive(Debug)]
struct ShardOut {
    file_name: String,
    path: PathBuf,
    /// The tensors it holds: consecutive ones in the caller's order.
    tensors: std::ops::Range<usize>,
    reserved: usize,
}

enum Staging {
    File(tempfile::NamedTempFile),
    Folder(tempfile::TempDir),
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staging::File(t) => write!(f, "File({})", t.path().display()),
            Staging::Folder(t) => write!(f, "Folder({})", t.path().display()),
        }
    }
}

/// An output being written. See the module documentation.
#[derive(Debug)]
pub struct Output {
    target: PathBuf,
    force: bool,
    /// The temporary paths, known to the SIGBUS handler while they exist.
    _guards: Vec<crate::safety::TempGuard>,
    staging: Staging,
    shards: Vec<ShardOut>,
    layout: Layout,
    files: ShardFiles,
    metadata: BTreeMap<String, String>,
}

/// The operating-system error without tempfile's "at path" suffix, which
/// would name a random temporary file that no longer exists.
fn plain(e: std::io::Error) -> std::io::Error {
    if let Some(code) = e.raw_os_error() {
        return std::io::Error::from_raw_os_error(code);
    }
    // tempfile wraps the OS error in a private type whose message ends in
    // ` at path "..."`; its source is not the OS error, so cut the text.
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((message, _)) => std::io::Error::new(e.kind(), message.to_string()),
        None => e,
    }
}

use crate::safety::parent_of;

/// Test hook for the end-to-end tests of inputs changing mid-run: with
/// `SOUP_TEST_PAUSE_AFTER_CREATE_MS` set, a new output announces itself on
/// standard error and waits that long before any data is written, so that
/// a test can truncate an input at a known moment.
fn test_pause() {
    if let Some(ms) = std::env::var("SOUP_TEST_PAUSE_AFTER_CREATE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("soup-test: output created, pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

impl Output {
    /// Creates the temporary output for `tensors` (written in this order)
    /// with provisional `metadata`. `inputs` are the files read, which the
    /// output must never replace.
    pub fn create(
        target: &Path,
        tensors: &[OutputTensor],
        metadata: BTreeMap<String, String>,
        inputs: &[&Path],
        options: &OutputOptions,
    ) -> Result<Output> {
        for t in tensors {
            header::check_output_name(target, &t.name)?;
        }
        check_target(target, inputs, options.force)?;
        check_replaceable(target, options.shard_size.is_some())?;
        if options.shard_size.is_none() && target.is_dir() {
            // Found now, not after all the work, when the rename would fail.
            return Err(Error::OutputIsFolder {
                path: target.to_path_buf(),
            });
        }
        let parent = parent_of(target);
        crate::safety::sweep_stale_temps(parent);
        // Shards hold consecutive tensors of the caller's order.
        let all = 0..tensors.len();
        let first = 0..0;
        let groups = match options.shard_size {
            None => vec![all],
            Some(size) => {
                if size == 0 {
                    return Err(Error::ShardSizeZero);
                }
                let mut groups = vec![first];
                let mut used = 0u64;
                for (i, t) in tensors.iter().enumerate() {
                    let n = t.nbytes() as u64;
                    let last = groups.last_mut().unwrap();
                    if last.end > last.start && used + n > size {
                        groups.push(i..i);
                        used = 0;
                    }
                    groups.last_mut().unwrap().end = i + 1;
                    used += n;
                }
                groups
            }
        };
        let prefix = crate::safety::own_prefix(crate::safety::TEMP_PREFIX);
        let staging = if options.shard_size.is_some() {
            Staging::Folder(
                tempfile::Builder::new()
                    .prefix(&prefix)
                    .tempdir_in(parent)
                    .map_err(|e| Error::io(parent, "cannot create output in folder", plain(e)))?,
            )
        } else {
            Staging::File(
                tempfile::Builder::new()
                    .prefix(&prefix)
                    .suffix(".safetensors")
                    .tempfile_in(parent)
                    .map_err(|e| Error::io(parent, "cannot create output in folder", plain(e)))?,
            )
        };
        let mut guards = vec![match &staging {
            Staging::File(t) => crate::safety::TempGuard::file(t.path()),
            Staging::Folder(d) => crate::safety::TempGuard::folder(d.path()),
        }];
        let count = groups.len();
        let layout = Layout::new(tensors, &groups);
        let mut shards = Vec::with_capacity(count);
        for (s, group) in groups.into_iter().enumerate() {
            let mut probe = metadata.clone();
            probe.insert("soup.shard".into(), format!("{}/{}", s + 1, count));
            let reserved = layout.header_len(&group, &probe) + HEADER_SLACK;
            let (file_name, path) = match &staging {
                Staging::File(tmp) => (String::new(), tmp.path().to_path_buf()),
                Staging::Folder(dir) => {
                    let name = format!("model-{:05}-of-{:05}.safetensors", s + 1, count);
                    let path = dir.path().join(&name);
                    guards.push(crate::safety::TempGuard::file(&path));
                    (name, path)
                }
            };
            let size = (reserved as u64) + layout.data_len(&group);
            match &staging {
                Staging::File(tmp) => tmp.as_file().set_len(size),
                // Closed again at once: shards are opened when written to,
                // a few at a time (see `ShardFiles`).
                Staging::Folder(_) => File::create(&path)
                    .map_err(|e| Error::io(&path, "cannot create", e))?
                    .set_len(size),
            }
            .map_err(|e| Error::io(target, "cannot size output", e))?;
            shards.push(ShardOut {
                file_name,
                path,
                tensors: group,
                reserved,
            });
        }
        let files = match &staging {
            Staging::File(tmp) => ShardFiles::One(
                tmp.reopen()
                    .map_err(|e| Error::io(tmp.path(), "cannot reopen", e))?,
            ),
            Staging::Folder(_) => ShardFiles::many(count),
        };
        test_pause();
        Ok(Output {
            target: target.to_path_buf(),
            force: options.force,
            _guards: guards,
            staging,
            shards,
            layout,
            files,
            metadata,
        })
    }

    /// Writes `bytes` at byte `offset` of tensor `index` (in the order given
    /// to [`Output::create`]). Safe to call from several threads at once.
    pub fn write(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        let shard = self.shards.partition_point(|s| s.tensors.end <= index);
        let base = (self.shards[shard].reserved as u64) + self.layout.starts[index];
        self.files
            .with(shard, &self.shards[shard].path, |file| {
                file.write_all_at(bytes, base + offset as u64)
            })
            .map_err(|e| Error::io(&self.target, "cannot write", e))?;
        self.files.written(shard);
        Ok(())
    }

    /// Reads back `buf.len()` bytes written at byte `offset` of tensor
    /// `index`, so that a result can be checked before it is committed.
    pub(crate) fn read(&self, index: usize, offset: usize, buf: &mut [u8]) -> Result<()> {
        let shard = self.shards.partition_point(|s| s.tensors.end <= index);
        let base = (self.shards[shard].reserved as u64) + self.layout.starts[index];
        File::open(&self.shards[shard].path)
            .and_then(|f| f.read_exact_at(buf, base + offset as u64))
            .map_err(|e| Error::io(&self.target, "cannot read back", e))
    }

    /// Writes the data written so far to the disk (fdatasync of every
    /// file written to since the last call). Long writers call it from a
    /// helper thread now and then, so that the disk works while they
    /// compute and [`Output::commit`] finds little left to flush.
    pub fn sync_data(&self) -> Result<()> {
        for (s, shard) in self.shards.iter().enumerate() {
            if self.files.take_dirty(s) {
                self.files
                    .with(s, &shard.path, File::sync_data)
                    .map_err(|e| Error::io(&self.target, "cannot sync", e))?;
            }
        }
        Ok(())
    }

    /// Replaces the metadata written at commit.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    /// The path the output will have.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes the headers (and index), fsyncs and moves the output into
    /// place. Returns the files written.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let count = self.shards.len();
        let sharded = matches!(self.staging, Staging::Folder(_));
        for (s, shard) in self.shards.iter().enumerate() {
            let mut meta = self.metadata.clone();
            if sharded {
                meta.insert("soup.shard".into(), format!("{}/{}", s + 1, count));
            }
            let len = self.layout.header_len(&shard.tensors, &meta);
            if len > shard.reserved {
                return Err(Error::invalid(format!(
                    "{}: metadata too large for the reserved header ({} > {} bytes)",
                    self.target.display(),
                    len,
                    shard.reserved
                )));
            }
            self.files
                .with(s, &shard.path, |file| {
                    self.layout
                        .write_header(file, &shard.tensors, &meta, shard.reserved)
                })
                .map_err(|e| Error::io(&self.target, "cannot write", e))?;
            self.files
                .with(s, &shard.path, File::sync_all)
                .map_err(|e| Error::io(&self.target, "cannot sync", e))?;
            self.files.close(s);
        }
        if self.files.close_failed() {
            return Err(Error::io(
                &self.target,
                "cannot write",
                std::io::Error::other("closing a shard file failed, so its data may be incomplete"),
            ));
        }
        let parent = parent_of(&self.target).to_path_buf();
        let files = match self.staging {
            Staging::File(tmp) => {
                // Temporary files are created private (0600); the output is
                // an ordinary file.
                use std::os::unix::fs::PermissionsExt;
                let _ = tmp
                    .as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644));
                let result = if self.force {
                    tmp.persist(&self.target).map_err(|e| e.error)
                } else {
                    tmp.persist_noclobber(&self.target).map_err(|e| e.error)
                };
                result.map_err(|e| Error::io(&self.target, "cannot move output into place", e))?;
                vec![self.target.clone()]
            }
            Staging::Folder(dir) => {
                let index_path = dir.path().join(INDEX_FILE);
                File::create(&index_path)
                    .and_then(|f| layout::write_index(f, &self.layout, &self.shards))
                    .map_err(|e| Error::io(&index_path, "cannot write", e))?;
                File::open(&index_path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&index_path, "cannot sync", e))?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        dir.path(),
                        std::fs::Permissions::from_mode(0o755),
                    );
                }
                let staged = dir.keep();
                let moved = replace_folder(&staged, &self.target, self.force);
                if let Err(e) = moved {
                    let _ = std::fs::remove_dir_all(&staged);
                    return Err(e);
                }
                let mut files: Vec<PathBuf> = self
                    .shards
                    .iter()
                    .map(|s| self.target.join(&s.file_name))
                    .collect();
                files.push(self.target.join(INDEX_FILE));
                files
            }
        };
        if let Ok(dir) = File::open(&parent) {
            let _ = dir.sync_all();
        }
        Ok(files)
    }
}

/// Moves the staged folder to `target`. An existing target (only with
/// `force`, and only a sharded checkpoint: see [`check_replaceable`]) is
/// swapped with the new folder in one atomic `renameat2(RENAME_EXCHANGE)`
/// (or, where the file system lacks it, moved aside first); then its files
/// are removed one by one, so that anything that appeared in it meanwhile
/// survives.
fn replace_folder(staged: &Path, target: &Path, force: bool) -> Result<()> {
    if std::fs::symlink_metadata(target).is_err() {
        return std::fs::rename(staged, target)
            .map_err(|e| Error::io(target, "cannot move output into place", e));
    }
    if !force {
        return Err(Error::OutputExists {
            path: target.to_path_buf(),
        });
    }
    check_replaceable(target, true)?;
    let old = if exchange(staged, target).is_ok() {
        staged.to_path_buf()
    } else {
        // The whole staged name plus `.old` (a host name's dots must not
        // cut it short): still a temporary name of this writer, so a
        // crash between the two renames leaves something the sweep removes.
        let mut aside = staged.as_os_str().to_owned();
        aside.push(".old");
        let old = PathBuf::from(aside);
        std::fs::rename(target, &old)
            .map_err(|e| Error::io(target, "cannot move old output aside", e))?;
        if let Err(e) = std::fs::rename(staged, target) {
            // Put the previous output back rather than leave it aside.
            let _ = std::fs::rename(&old, target);
            return Err(Error::io(target, "cannot move output into place", e));
        }
        old
    };
    for file in sharded_files(&old).unwrap_or_default() {
        let _ = std::fs::remove_file(file);
    }
    // Fails, leaving the folder, if something else was put into it.
    let _ = std::fs::remove_dir(&old);
    Ok(())
}

/// Atomically swaps the two paths (Linux `renameat2` with
/// `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the
    // call; the syscall reads nothing else.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes a checkpoint of `(name, dtype, shape, little-endian bytes)`
/// tensors to `path`: the unit tests' way to make inputs.
#[cfg(test)]
pub(crate) fn write_test_checkpoint(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let layout: Vec<OutputTensor> = tensors
        .iter()
        .map(|(name, dtype, shape, _)| OutputTensor {
            name: name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
        })
        .collect();
    let out = Output::create(
        path,
        &layout,
        BTreeMap::new(),
        &[],
        &OutputOptions::default(),
    )
    .expect("a test output");
    for (i, (.., bytes)) in tensors.iter().enumerate() {
        out.write(i, 0, bytes).expect("a test write");
    }
    out.commit().expect("a test commit");
}

#[cfg(test)]
mod tests;
