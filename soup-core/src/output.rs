//! Writing checkpoints atomically: one file, or Hugging Face shards plus an
//! index.
//!
//! The layout (names, dtypes, shapes, offsets) is fixed when the output is
//! created, so pieces can be written in any order and from any thread
//! (`pwrite`). Data goes to a temporary file (or folder) beside the target;
//! [`Output::commit`] rewrites the header with the final metadata, fsyncs and
//! renames. Dropping an uncommitted output deletes the temporary files, so a
//! failed or interrupted run leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::checkpoint::INDEX_FILE;
use crate::error::{Error, Result};
use crate::header::{self, RawTensor};

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
    file: File,
    tensors: Vec<RawTensor>,
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
    staging: Staging,
    shards: Vec<ShardOut>,
    /// (shard, absolute offset) of each tensor, in the caller's order.
    placement: Vec<(usize, u64)>,
    metadata: BTreeMap<String, String>,
}

/// Checks that `target` can be written without harming `inputs`: it is not
/// one of them (nor a folder holding one), and it does not exist unless
/// `force` is set.
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
    if target.exists() && !force {
        return Err(Error::invalid(format!(
            "{}: output exists (use --force to replace it)",
            target.display()
        )));
    }
    Ok(())
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

/// The operating-system error without tempfile's "at path" suffix, which
/// would name a random temporary file that no longer exists.
fn plain(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => e,
    }
}

fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
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
        check_target(target, inputs, options.force)?;
        if options.shard_size.is_none() && target.is_dir() {
            // Found now, not after all the work, when the rename would fail.
            return Err(Error::invalid(format!(
                "{}: is a folder; write a single file elsewhere, or shards into it with --shard-size",
                target.display()
            )));
        }
        let parent = parent_of(target);
        let groups = match options.shard_size {
            None => vec![(0..tensors.len()).collect::<Vec<_>>()],
            Some(size) => {
                if size == 0 {
                    return Err(Error::invalid("--shard-size must be positive"));
                }
                let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
                let mut used = 0u64;
                for (i, t) in tensors.iter().enumerate() {
                    let n = t.nbytes() as u64;
                    if !groups.last().unwrap().is_empty() && used + n > size {
                        groups.push(Vec::new());
                        used = 0;
                    }
                    groups.last_mut().unwrap().push(i);
                    used += n;
                }
                groups
            }
        };
        let staging = if options.shard_size.is_some() {
            Staging::Folder(
                tempfile::Builder::new()
                    .prefix(".soup-tmp-")
                    .tempdir_in(parent)
                    .map_err(|e| Error::io(parent, "cannot create output in folder", plain(e)))?,
            )
        } else {
            Staging::File(
                tempfile::Builder::new()
                    .prefix(".soup-tmp-")
                    .suffix(".safetensors")
                    .tempfile_in(parent)
                    .map_err(|e| Error::io(parent, "cannot create output in folder", plain(e)))?,
            )
        };
        let count = groups.len();
        let mut placement = vec![(0usize, 0u64); tensors.len()];
        let mut shards = Vec::with_capacity(count);
        for (s, group) in groups.iter().enumerate() {
            let mut raw = Vec::with_capacity(group.len());
            let mut offset = 0usize;
            for &i in group {
                let t = &tensors[i];
                let n = t.nbytes();
                raw.push(RawTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    start: offset,
                    end: offset + n,
                });
                offset += n;
            }
            let mut probe = metadata.clone();
            probe.insert("soup.shard".into(), format!("{}/{}", s + 1, count));
            let reserved = header::serialize(&raw, &probe).len() + HEADER_SLACK;
            for (k, &i) in group.iter().enumerate() {
                placement[i] = (s, (reserved + raw[k].start) as u64);
            }
            let (file_name, file) = match &staging {
                Staging::File(tmp) => (
                    String::new(),
                    tmp.reopen()
                        .map_err(|e| Error::io(tmp.path(), "cannot reopen", e))?,
                ),
                Staging::Folder(dir) => {
                    let name = format!("model-{:05}-of-{:05}.safetensors", s + 1, count);
                    let path = dir.path().join(&name);
                    let file =
                        File::create(&path).map_err(|e| Error::io(&path, "cannot create", e))?;
                    (name, file)
                }
            };
            file.set_len((reserved + offset) as u64)
                .map_err(|e| Error::io(target, "cannot size output", e))?;
            shards.push(ShardOut {
                file_name,
                file,
                tensors: raw,
                reserved,
            });
        }
        Ok(Output {
            target: target.to_path_buf(),
            force: options.force,
            staging,
            shards,
            placement,
            metadata,
        })
    }

    /// Writes `bytes` at byte `offset` of tensor `index` (in the order given
    /// to [`Output::create`]). Safe to call from several threads at once.
    pub fn write(&self, index: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        let (shard, base) = self.placement[index];
        self.shards[shard]
            .file
            .write_all_at(bytes, base + offset as u64)
            .map_err(|e| Error::io(&self.target, "cannot write", e))
    }

    /// Writes the data written so far to the disk (fdatasync of every
    /// file). Long writers call it from a helper thread now and then, so
    /// that the disk works while they compute and [`Output::commit`] finds
    /// little left to flush.
    pub fn sync_data(&self) -> Result<()> {
        for shard in &self.shards {
            shard
                .file
                .sync_data()
                .map_err(|e| Error::io(&self.target, "cannot sync", e))?;
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
        let mut weight_map = BTreeMap::new();
        let mut total = 0u64;
        for (s, shard) in self.shards.iter().enumerate() {
            let mut meta = self.metadata.clone();
            if sharded {
                meta.insert("soup.shard".into(), format!("{}/{}", s + 1, count));
            }
            let mut head = header::serialize(&shard.tensors, &meta);
            if head.len() > shard.reserved {
                return Err(Error::invalid(format!(
                    "{}: metadata too large for the reserved header ({} > {} bytes)",
                    self.target.display(),
                    head.len(),
                    shard.reserved
                )));
            }
            // Pad the JSON with spaces up to the reserved length and fix the
            // length prefix accordingly.
            head.resize(shard.reserved, b' ');
            let json_len = (shard.reserved - 8) as u64;
            head[..8].copy_from_slice(&json_len.to_le_bytes());
            shard
                .file
                .write_all_at(&head, 0)
                .map_err(|e| Error::io(&self.target, "cannot write", e))?;
            shard
                .file
                .sync_all()
                .map_err(|e| Error::io(&self.target, "cannot sync", e))?;
            for t in &shard.tensors {
                weight_map.insert(t.name.clone(), shard.file_name.clone());
                total += (t.end - t.start) as u64;
            }
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
                let index = serde_json::json!({
                    "metadata": { "total_size": total },
                    "weight_map": weight_map,
                });
                let index_path = dir.path().join(INDEX_FILE);
                let text = serde_json::to_string_pretty(&index).expect("serialisable");
                std::fs::write(&index_path, text)
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
/// `force`) is moved aside first and removed after the new one is in place.
fn replace_folder(staged: &Path, target: &Path, force: bool) -> Result<()> {
    let mut aside = None;
    if target.exists() {
        if !force {
            return Err(Error::invalid(format!(
                "{}: output exists (use --force to replace it)",
                target.display()
            )));
        }
        let old = staged.with_extension("old");
        std::fs::rename(target, &old)
            .map_err(|e| Error::io(target, "cannot move old output aside", e))?;
        aside = Some(old);
    }
    std::fs::rename(staged, target)
        .map_err(|e| Error::io(target, "cannot move output into place", e))?;
    if let Some(old) = aside {
        let removed = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
        removed.map_err(|e| Error::io(&old, "cannot remove old output", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    fn tensor(name: &str, n: usize) -> OutputTensor {
        OutputTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![n],
        }
    }

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.safetensors");
        let out = Output::create(
            &target,
            &[tensor("a", 4)],
            BTreeMap::new(),
            &[],
            &Default::default(),
        )
        .unwrap();
        out.write(0, 0, &[0; 16]).unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn sharded_output_reads_back_as_one_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sharded");
        let tensors = [tensor("a", 4), tensor("b", 4), tensor("c", 2)];
        let opts = OutputOptions {
            shard_size: Some(20),
            force: false,
        };
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let mut out = Output::create(&target, &tensors, meta, &[], &opts).unwrap();
        for (i, t) in tensors.iter().enumerate() {
            let bytes: Vec<u8> = (0..t.shape[0])
                .flat_map(|k| (k as f32 + i as f32).to_le_bytes())
                .collect();
            out.write(i, 0, &bytes).unwrap();
        }
        out.metadata_mut().insert("late".into(), "x".repeat(100));
        let files = out.commit().unwrap();
        assert_eq!(files.len(), 4);
        let ck = Checkpoint::open(&target).unwrap();
        assert_eq!(ck.tensors().len(), 3);
        assert_eq!(ck.metadata()["late"], "x".repeat(100));
        let c = ck.get("c").unwrap();
        assert_eq!(
            ck.data(c),
            [2f32.to_le_bytes(), 3f32.to_le_bytes()].concat()
        );
    }

    #[test]
    fn existing_output_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.safetensors");
        std::fs::write(&target, b"keep").unwrap();
        let err = Output::create(
            &target,
            &[tensor("a", 1)],
            BTreeMap::new(),
            &[],
            &Default::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--force"));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}
