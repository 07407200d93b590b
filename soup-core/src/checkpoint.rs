//! A checkpoint opened for reading: one safetensors file, or a Hugging Face
//! sharded set (a folder with `model.safetensors.index.json`), seen as one
//! logical list of tensors backed by memory maps.
//!
//! Opening validates every header completely; no tensor data is read until a
//! caller asks for bytes. Callers that stream through a checkpoint release the
//! pages they are done with ([`Checkpoint::release`]) so that resident memory
//! stays bounded however large the files are.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use memmap2::{Advice, Mmap, UncheckedAdvice};
use safetensors::Dtype;

use crate::dtype::FloatType;
use crate::error::{Error, Result};
use crate::header;

mod files;
mod memory;

use files::{map_file, open_regular};

/// Name of the index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name (PyTorch `state_dict` naming).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Which shard holds it (0 for single-file checkpoints).
    pub shard: usize,
    /// Byte range in the shard file (absolute offsets).
    pub range: Range<usize>,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Size of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.range.len()
    }
    /// Bytes holding the elements `elems` (relative to the tensor's start).
    /// Sub-byte types (F4, F6) are exact for ranges on 8-element boundaries.
    pub fn byte_range(&self, elems: &Range<usize>) -> Range<usize> {
        let bits = self.dtype.bitsize();
        elems.start * bits / 8..(elems.end * bits).div_ceil(8)
    }
    /// The float type, if the tensor takes part in arithmetic.
    pub fn float_type(&self) -> Option<FloatType> {
        FloatType::of(self.dtype)
    }
}

/// One file of a checkpoint, mapped; or the tensors of an in-memory
/// checkpoint ([`Checkpoint::from_tensors`]).
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    backing: Backing,
}

/// Where a shard's bytes live.
#[derive(Debug)]
enum Backing {
    Mapped {
        /// The file as it was opened, for [`Checkpoint::check_unchanged`].
        stamp: crate::safety::FileStamp,
        /// Declared before `map` so that the SIGBUS handler forgets the
        /// range before it is unmapped.
        _guard: crate::safety::MappedGuard,
        map: Mmap,
    },
    /// Owned bytes in 8-byte words (so that every tensor placed at a
    /// multiple of 8 is aligned for any element type), and the length.
    Memory(Vec<u64>, usize),
}

impl Shard {
    /// The shard's bytes.
    fn map(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped { map, .. } => map,
            Backing::Memory(words, len) => &bytemuck::cast_slice(words)[..*len],
        }
    }

    /// The memory map, for advice (none for memory).
    fn mmap(&self) -> Option<&Mmap> {
        match &self.backing {
            Backing::Mapped { map, .. } => Some(map),
            Backing::Memory(..) => None,
        }
    }

    /// Drops the header's mapped pages (`len` bytes) from the resident set
    /// once it is parsed: a header with a million tensors is tens of MB of
    /// JSON that is not read again.
    fn release_header(&self, len: usize) {
        let Some(map) = self.mmap() else { return };
        // SAFETY: as in `Checkpoint::release`: a read-only shared file
        // mapping, where MADV_DONTNEED only drops page-table entries; a
        // later read refaults the same file contents.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, 0, len.min(map.len())) };
    }
}

/// A validated, memory-mapped checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    shards: Vec<Shard>,
    /// The index of a sharded set as it was read.
    index: Option<(PathBuf, crate::safety::FileStamp)>,
    tensors: Vec<TensorEntry>,
    /// Tensor numbers sorted by name (4 bytes per tensor, where a map from
    /// names would copy every name).
    by_name: Vec<u32>,
    metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, or a folder holding
    /// `model.safetensors.index.json` (or a single `model.safetensors`).
    ///
    /// This is the safe front of [`Checkpoint::open_mmap`]: it holds the
    /// same contract, as a contract with the user rather than the compiler.
    /// soup never writes to a file it has open for reading (outputs are new
    /// temporary files renamed into place), and what happens when another
    /// program changes an input meanwhile is documented on
    /// [`crate::install_sigbus_handler`]: a process that installs it
    /// turns a truncation into
    /// one line naming the file and a clean exit. Only regular files are
    /// read: a FIFO, device or socket is refused without blocking.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        // SAFETY: see above: soup does not modify its inputs, and changes
        // by other programs are the documented limit of the tool.
        unsafe { Self::open_mmap(path) }
    }

    /// Opens `path` (see [`Checkpoint::open`]) by memory-mapping its files
    /// after validating every header.
    ///
    /// # Safety
    ///
    /// The files must not be modified or truncated while the checkpoint
    /// (or any slice borrowed from it) is alive: the tensor bytes it hands
    /// out are the mapped file itself, so a change by another process
    /// changes memory that Rust treats as immutable, and a truncation makes
    /// reads fault (SIGBUS).
    pub unsafe fn open_mmap(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "cannot open", e))?;
        if meta.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.exists() {
                // SAFETY: this function's own contract.
                return unsafe { Self::open_sharded(path, &index) };
            }
            let single = path.join("model.safetensors");
            if single.exists() {
                // SAFETY: this function's own contract.
                let mut ck = unsafe { Self::open_file(&single)? };
                ck.path = path.to_path_buf();
                return Ok(ck);
            }
            return Err(Error::format(
                path,
                format!("folder holds neither {INDEX_FILE} nor model.safetensors"),
            ));
        }
        if path.file_name().is_some_and(|n| n == INDEX_FILE) {
            let folder = path.parent().unwrap_or(Path::new("."));
            // SAFETY: this function's own contract.
            return unsafe { Self::open_sharded(folder, path) };
        }
        // SAFETY: this function's own contract.
        unsafe { Self::open_file(path) }
    }

    /// # Safety
    /// The contract of [`Checkpoint::open_mmap`].
    unsafe fn open_file(path: &Path) -> Result<Checkpoint> {
        // SAFETY: the caller's contract.
        let shard = unsafe { map_file(path)? };
        let mut header = header::parse(path, shard.map())?;
        shard.release_header(header.data_start);
        let mut ck = Checkpoint {
            path: path.to_path_buf(),
            shards: vec![shard],
            index: None,
            tensors: Vec::new(),
            by_name: Vec::new(),
            metadata: std::mem::take(&mut header.metadata),
        };
        ck.add_shard_tensors(0, header)?;
        ck.index_names()?;
        Ok(ck)
    }

    /// # Safety
    /// The contract of [`Checkpoint::open_mmap`].
    unsafe fn open_sharded(folder: &Path, index: &Path) -> Result<Checkpoint> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            metadata: BTreeMap<String, serde_json::Value>,
            weight_map: BTreeMap<String, String>,
        }
        let file = open_regular(index)?;
        let index_stamp = file
            .metadata()
            .map(|m| crate::safety::FileStamp::of(&m))
            .map_err(|e| Error::io(index, "cannot stat", e))?;
        let text = std::io::read_to_string(file).map_err(|e| Error::io(index, "cannot read", e))?;
        let parsed: Index = serde_json::from_str(&text)
            .map_err(|e| Error::format(index, format!("invalid index JSON: {e}")))?;
        if parsed.weight_map.is_empty() {
            // Otherwise shards beside it would be silently ignored and the
            // checkpoint read as empty.
            return Err(Error::format(index, "weight_map lists no tensors"));
        }
        let root = folder
            .canonicalize()
            .map_err(|e| Error::io(folder, "cannot resolve", e))?;

        // Shard files in order of first appearance in sorted file names, so
        // the logical order is stable.
        let mut files: Vec<&String> = parsed.weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut metadata: BTreeMap<String, String> = parsed
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), String::from),
                )
            })
            .collect();
        let mut ck = Checkpoint {
            path: folder.to_path_buf(),
            shards: Vec::new(),
            index: Some((index.to_path_buf(), index_stamp)),
            tensors: Vec::new(),
            by_name: Vec::new(),
            metadata: BTreeMap::new(),
        };
        let mut shard_of: HashMap<&str, usize> = HashMap::new();
        for file in files {
            let rel = Path::new(file.as_str());
            let escapes = rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
            let shard_path = folder.join(rel);
            let inside = !escapes
                && match shard_path.canonicalize() {
                    Ok(real) => real.starts_with(&root),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::format(
                            index,
                            format!("shard `{file}` named in the index does not exist"),
                        ))
                    }
                    Err(e) => return Err(Error::io(&shard_path, "cannot open", e)),
                };
            if !inside {
                return Err(Error::format(
                    index,
                    format!("shard path `{file}` escapes the checkpoint folder"),
                ));
            }
            // SAFETY: the caller's contract.
            let shard = unsafe { map_file(&shard_path)? };
            let mut header = header::parse(&shard_path, shard.map())?;
            shard.release_header(header.data_start);
            let id = ck.shards.len();
            ck.shards.push(shard);
            for (k, v) in std::mem::take(&mut header.metadata) {
                metadata.entry(k).or_insert(v);
            }
            ck.add_shard_tensors(id, header)?;
            shard_of.insert(file.as_str(), id);
        }
        ck.index_names()?;
        for (name, file) in &parsed.weight_map {
            let listed = shard_of[file.as_str()];
            match ck.position(name) {
                Some(i) if ck.tensors[i].shard == listed => {}
                Some(i) => {
                    return Err(Error::format(
                        index,
                        format!(
                            "tensor `{name}` is mapped to `{file}` but stored in `{}`",
                            ck.shards[ck.tensors[i].shard].path.display()
                        ),
                    ))
                }
                None => {
                    return Err(Error::format(
                        index,
                        format!("tensor `{name}` is mapped to `{file}`, which does not hold it"),
                    ))
                }
            }
        }
        if let Some(extra) = ck
            .tensors
            .iter()
            .find(|t| !parsed.weight_map.contains_key(&t.name))
        {
            return Err(Error::format(
                index,
                format!(
                    "tensor `{}` in `{}` is not listed in the index",
                    extra.name,
                    ck.shards[extra.shard].path.display()
                ),
            ));
        }
        ck.metadata = metadata;
        Ok(ck)
    }

    /// Sorts the name index; a name held twice (by two shards) is an error.
    fn index_names(&mut self) -> Result<()> {
        let count = u32::try_from(self.tensors.len())
            .map_err(|_| Error::format(&self.path, "more than 2^32 tensors"))?;
        let tensors = &self.tensors;
        let mut order: Vec<u32> = (0..count).collect();
        // Stable: of two equal names, the earlier shard comes first.
        order.sort_by(|&a, &b| tensors[a as usize].name.cmp(&tensors[b as usize].name));
        if let Some(w) = order
            .windows(2)
            .find(|w| tensors[w[0] as usize].name == tensors[w[1] as usize].name)
        {
            let (first, second) = (&tensors[w[0] as usize], &tensors[w[1] as usize]);
            return Err(Error::format(
                &self.path,
                format!(
                    "tensor `{}` appears in two shards: `{}` and `{}`",
                    first.name,
                    self.shards[first.shard].path.display(),
                    self.shards[second.shard].path.display()
                ),
            ));
        }
        self.by_name = order;
        Ok(())
    }

    /// The number of the tensor called `name`.
    fn position(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.tensors[i as usize].name.as_str().cmp(name))
            .ok()
            .map(|k| self.by_name[k] as usize)
    }

    /// Takes the tensors of a shard's header (moving their names and
    /// shapes, so that they exist once).
    fn add_shard_tensors(&mut self, shard: usize, header: header::Header) -> Result<()> {
        let base = header.data_start;
        self.tensors.reserve_exact(header.tensors.len());
        self.tensors
            .extend(header.tensors.into_iter().map(|t| TensorEntry {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                shard,
                range: base + t.start..base + t.end,
            }));
        Ok(())
    }

    /// The path the checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files behind the checkpoint, in shard order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Every file the checkpoint was read from: the shards, then the index
    /// of a sharded set. These are what an output must never replace.
    pub fn files_with_index(&self) -> impl Iterator<Item = &Path> {
        self.files()
            .chain(self.index.as_ref().map(|(path, _)| path.as_path()))
    }

    /// Checks that every file of the checkpoint (each shard, and the index
    /// of a sharded set) is still the file that was opened, unchanged: the
    /// path names the same device and inode, with the same size,
    /// modification and status-change times. Writers call it before moving
    /// an output into place, so that a file rewritten in place (even with
    /// the same size) or replaced meanwhile fails the run
    /// ([`Error::InputChanged`]) instead of giving an output that mixes the
    /// old content with the new one.
    pub fn check_unchanged(&self) -> Result<()> {
        for shard in &self.shards {
            if let Backing::Mapped { stamp, .. } = &shard.backing {
                stamp.check(&shard.path)?;
            }
        }
        match &self.index {
            Some((path, stamp)) => stamp.check(path),
            None => Ok(()),
        }
    }

    /// The file holding `tensor`.
    pub fn file_of(&self, tensor: &TensorEntry) -> &Path {
        &self.shards[tensor.shard].path
    }

    /// Whether this checkpoint is a sharded set.
    pub fn is_sharded(&self) -> bool {
        self.shards.first().is_some_and(|s| s.mmap().is_some()) && self.path.is_dir()
    }

    /// Tensors in storage order (shard, then offset).
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.position(name).map(|i| &self.tensors[i])
    }

    /// The header metadata (`__metadata__`; for sharded sets, the index's
    /// `metadata` merged with the shards').
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes() as u64).sum()
    }

    /// The bytes of `tensor` between byte offsets `bytes` (relative to the
    /// tensor's start).
    pub fn bytes(&self, tensor: &TensorEntry, bytes: Range<usize>) -> &[u8] {
        let start = tensor.range.start + bytes.start;
        let end = tensor.range.start + bytes.end;
        assert!(end <= tensor.range.end, "range past the tensor");
        &self.shards[tensor.shard].map()[start..end]
    }

    /// All bytes of `tensor`.
    pub fn data(&self, tensor: &TensorEntry) -> &[u8] {
        &self.shards[tensor.shard].map()[tensor.range.clone()]
    }

    /// Tells the kernel that `bytes` of `tensor` will be read soon.
    pub fn prefetch(&self, tensor: &TensorEntry, bytes: Range<usize>) {
        let Some(map) = self.shards[tensor.shard].mmap() else {
            return;
        };
        // Advice is a hint: failure changes nothing but speed.
        let _ = map.advise_range(
            Advice::WillNeed,
            tensor.range.start + bytes.start,
            bytes.len(),
        );
    }

    /// Drops the mapped pages of `bytes` of `tensor` from this process's
    /// resident set. The data stays in the page cache and is read back on a
    /// later access, so this only bounds memory; it never changes what reads
    /// return.
    pub fn release(&self, tensor: &TensorEntry, bytes: Range<usize>) {
        let Some(map) = self.shards[tensor.shard].mmap() else {
            return;
        };
        // SAFETY: the map is a read-only shared file mapping. MADV_DONTNEED on
        // it discards page-table entries only; a later access refaults the
        // same file contents, so any slice still borrowed sees identical bytes.
        let _ = unsafe {
            map.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                tensor.range.start + bytes.start,
                bytes.len(),
            )
        };
    }
}

/// Matches the tensors of several checkpoints by name. All must hold the same
/// names with the same shapes and dtypes; the first difference is an error
/// naming the tensor and both checkpoints. Returns, for each tensor in the
/// first checkpoint's order, its entry in every checkpoint.
pub fn align<'a>(checkpoints: &[&'a Checkpoint]) -> Result<Vec<Vec<&'a TensorEntry>>> {
    let Some(first) = checkpoints.first() else {
        return Ok(Vec::new());
    };
    for other in &checkpoints[1..] {
        if let Some(t) = other
            .tensors()
            .iter()
            .find(|t| first.get(&t.name).is_none())
        {
            return Err(Error::Mismatch(format!(
                "tensor `{}` is in {} but not in {}",
                t.name,
                other.path().display(),
                first.path().display()
            )));
        }
    }
    first
        .tensors()
        .iter()
        .map(|t| {
            let mut row = Vec::with_capacity(checkpoints.len());
            row.push(t);
            for other in &checkpoints[1..] {
                let o = other.get(&t.name).ok_or_else(|| {
                    Error::Mismatch(format!(
                        "tensor `{}` is in {} but not in {}",
                        t.name,
                        first.path().display(),
                        other.path().display()
                    ))
                })?;
                if o.shape != t.shape {
                    return Err(Error::Mismatch(format!(
                        "tensor `{}` has shape {:?} in {} but {:?} in {}",
                        t.name,
                        t.shape,
                        first.path().display(),
                        o.shape,
                        other.path().display()
                    )));
                }
                if o.dtype != t.dtype {
                    return Err(Error::Mismatch(format!(
                        "tensor `{}` has dtype {:?} in {} but {:?} in {}",
                        t.name,
                        t.dtype,
                        first.path().display(),
                        o.dtype,
                        other.path().display()
                    )));
                }
                row.push(o);
            }
            Ok(row)
        })
        .collect()
}
