//! What an [`Output`](super::Output) keeps per tensor and per shard while
//! it is written: the layout packed into a few flat arrays, and the shard
//! files, of which only a few are open at a time.
//!
//! A header of a million tensors is written by a few hundred bytes of
//! bookkeeping per tensor in all (see the README); the headers and the
//! index are serialised straight into their files, entry by entry, with
//! no JSON tree built in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use safetensors::Dtype;

use super::{OutputTensor, ShardOut};
use crate::header::{self, EntryRef};

/// The output's tensors, in the caller's order: names in one string,
/// shapes in one array, and the offset of each tensor in its shard's data
/// section (about 40 bytes per tensor plus its name, where a `RawTensor`
/// with its own name and shape costs well over 100).
#[derive(Debug)]
pub(super) struct Layout {
    names: String,
    name_ends: Vec<usize>,
    dims: Vec<usize>,
    shape_ends: Vec<usize>,
    dtypes: Vec<Dtype>,
    /// Byte offset of each tensor in its shard's data section.
    pub(super) starts: Vec<u64>,
}

impl Layout {
    /// The layout of `tensors`, each shard (`groups`, consecutive tensors)
    /// packed from offset 0 in order.
    pub(super) fn new(tensors: &[OutputTensor], groups: &[Range<usize>]) -> Layout {
        let n = tensors.len();
        let mut layout = Layout {
            names: String::with_capacity(tensors.iter().map(|t| t.name.len()).sum()),
            name_ends: Vec::with_capacity(n),
            dims: Vec::with_capacity(tensors.iter().map(|t| t.shape.len()).sum()),
            shape_ends: Vec::with_capacity(n),
            dtypes: Vec::with_capacity(n),
            starts: Vec::with_capacity(n),
        };
        for group in groups {
            let mut offset = 0u64;
            for t in &tensors[group.clone()] {
                layout.names.push_str(&t.name);
                layout.name_ends.push(layout.names.len());
                layout.dims.extend_from_slice(&t.shape);
                layout.shape_ends.push(layout.dims.len());
                layout.dtypes.push(t.dtype);
                layout.starts.push(offset);
                offset += t.nbytes() as u64;
            }
        }
        layout
    }

    /// The header entry of tensor `i`.
    fn entry(&self, i: usize) -> EntryRef<'_> {
        let name_start = if i == 0 { 0 } else { self.name_ends[i - 1] };
        let shape_start = if i == 0 { 0 } else { self.shape_ends[i - 1] };
        let shape = &self.dims[shape_start..self.shape_ends[i]];
        let start = self.starts[i] as usize;
        let len = header::element_count(shape)
            .and_then(|n| header::byte_len(self.dtypes[i], n))
            .expect("validated shape");
        EntryRef {
            name: &self.names[name_start..self.name_ends[i]],
            dtype: self.dtypes[i],
            shape,
            start,
            end: start + len,
        }
    }

    /// Bytes of tensor data of the shard holding `tensors`.
    pub(super) fn data_len(&self, tensors: &Range<usize>) -> u64 {
        match tensors.clone().last() {
            Some(i) => {
                let e = self.entry(i);
                e.end as u64
            }
            None => 0,
        }
    }

    /// Length of the header (length prefix, JSON and the padding that
    /// aligns the data) of the shard holding `tensors`, with `metadata`.
    pub(super) fn header_len(
        &self,
        tensors: &Range<usize>,
        metadata: &BTreeMap<String, String>,
    ) -> usize {
        let mut counter = Counter(0);
        // The length does not depend on the entries' order.
        header::write_json(&mut counter, metadata, tensors.len(), |k| {
            self.entry(tensors.start + k)
        })
        .expect("counting cannot fail");
        8 + counter.0.next_multiple_of(8)
    }

    /// Writes the header of the shard holding `tensors` at the start of
    /// `file`, padded with spaces to `reserved` bytes (the length prefix
    /// counts the padding).
    pub(super) fn write_header(
        &self,
        file: &File,
        tensors: &Range<usize>,
        metadata: &BTreeMap<String, String>,
        reserved: usize,
    ) -> std::io::Result<()> {
        let order = self.name_order(tensors.clone());
        let mut out = At::new(file, 0);
        out.write_all(&((reserved - 8) as u64).to_le_bytes())?;
        header::write_json(&mut out, metadata, order.len(), |k| {
            self.entry(order[k] as usize)
        })?;
        let written = out.position() as usize;
        debug_assert!(written <= reserved, "checked by the caller");
        out.write_all(&vec![b' '; reserved - written])?;
        out.flush()
    }

    /// The tensors of `range`, sorted by name (4 bytes each).
    fn name_order(&self, range: Range<usize>) -> Vec<u32> {
        let mut order: Vec<u32> = range
            .map(|i| u32::try_from(i).expect("fewer than 2^32 tensors"))
            .collect();
        order.sort_unstable_by(|&a, &b| {
            self.entry(a as usize).name.cmp(self.entry(b as usize).name)
        });
        order
    }
}

/// Writes the index of a sharded output to `file`: the total size and the
/// weight map, the JSON that `serde_json::to_writer_pretty` makes of a map
/// of maps, written entry by entry in name order.
pub(super) fn write_index(file: File, layout: &Layout, shards: &[ShardOut]) -> std::io::Result<()> {
    use serde::ser::{SerializeMap, Serializer};

    struct TotalSize(u64);
    impl serde::Serialize for TotalSize {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("total_size", &self.0)?;
            map.end()
        }
    }
    struct WeightMap<'a> {
        layout: &'a Layout,
        shards: &'a [ShardOut],
        order: Vec<u32>,
    }
    impl serde::Serialize for WeightMap<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.order.len()))?;
            for &i in &self.order {
                let i = i as usize;
                let shard = self.shards.partition_point(|s| s.tensors.end <= i);
                map.serialize_entry(self.layout.entry(i).name, &self.shards[shard].file_name)?;
            }
            map.end()
        }
    }
    struct Index<'a>(TotalSize, WeightMap<'a>);
    impl serde::Serialize for Index<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(2))?;
            map.serialize_entry("metadata", &self.0)?;
            map.serialize_entry("weight_map", &self.1)?;
            map.end()
        }
    }

    let total = shards.iter().map(|s| layout.data_len(&s.tensors)).sum();
    let index = Index(
        TotalSize(total),
        WeightMap {
            layout,
            shards,
            order: layout.name_order(0..layout.dtypes.len()),
        },
    );
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, &index)?;
    out.flush()
}

/// Counts the bytes written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A buffered writer into `file` from a given offset on (`pwrite`, so
/// other threads' writes elsewhere in the file are not disturbed).
struct At<'f> {
    file: &'f File,
    at: u64,
    buf: Vec<u8>,
}

impl<'f> At<'f> {
    fn new(file: &'f File, at: u64) -> At<'f> {
        At {
            file,
            at,
            buf: Vec::with_capacity(1 << 16),
        }
    }
    /// Offset reached, buffered bytes included.
    fn position(&self) -> u64 {
        self.at + self.buf.len() as u64
    }
}

impl Write for At<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.flush()?;
        }
        if bytes.len() >= self.buf.capacity() {
            self.file.write_all_at(bytes, self.at)?;
            self.at += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Most shard files kept open at once. Pieces are written a window at a
/// time, and a window touches few shards unless they are tiny, so a small
/// cache reopens rarely, while an output of thousands of shards stays far
/// below the usual limit of 1024 open files.
const OPEN_SHARDS: usize = 32;

/// The files written to: the one file of a single-file output, always
/// open, or the shards of a sharded output, opened when written to and
/// closed again when others have been used since (at most
/// [`OPEN_SHARDS`] open, plus any a thread is writing to at that moment).
#[derive(Debug)]
pub(super) enum ShardFiles {
    One(File),
    Many {
        /// Open shards, least recently used first.
        open: Mutex<Vec<(usize, Arc<ShardFile>)>>,
        /// Per shard: written to since the last [`ShardFiles::take_dirty`].
        dirty: Vec<AtomicBool>,
        /// Set when closing a shard file failed (see [`ShardFile`]).
        close_failed: Arc<AtomicBool>,
    },
}

/// A shard file that reports a failed `close`. Some file systems (NFS,
/// CIFS, quotas) report a failed write only when the file is closed; a
/// file closed by the cache while others are written would otherwise lose
/// that error, and a later fsync through a new descriptor can succeed.
#[derive(Debug)]
pub(super) struct ShardFile {
    file: std::mem::ManuallyDrop<File>,
    failed: Arc<AtomicBool>,
}

impl std::ops::Deref for ShardFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for ShardFile {
    fn drop(&mut self) {
        use std::os::fd::IntoRawFd;
        // SAFETY: the file is taken out exactly once, here, and not used
        // after.
        let file = unsafe { std::mem::ManuallyDrop::take(&mut self.file) };
        let fd = file.into_raw_fd();
        // SAFETY: `fd` is an open descriptor that this value owned and
        // nothing else refers to; it is closed exactly once.
        if unsafe { libc::close(fd) } != 0 {
            self.failed.store(true, Ordering::Release);
        }
    }
}

impl ShardFiles {
    /// Closed files for `count` shards.
    pub(super) fn many(count: usize) -> ShardFiles {
        ShardFiles::Many {
            open: Mutex::new(Vec::new()),
            dirty: (0..count).map(|_| AtomicBool::new(false)).collect(),
            close_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `f` on the file of shard `shard` (at `path`), opening it if
    /// needed.
    pub(super) fn with<T>(
        &self,
        shard: usize,
        path: &Path,
        f: impl FnOnce(&File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let (open, close_failed) = match self {
            ShardFiles::One(file) => return f(file),
            ShardFiles::Many {
                open, close_failed, ..
            } => (open, close_failed),
        };
        let file = {
            let mut open = open.lock().expect("not poisoned");
            match open.iter().position(|(s, _)| *s == shard) {
                Some(k) => {
                    let entry = open.remove(k);
                    let file = Arc::clone(&entry.1);
                    open.push(entry);
                    file
                }
                None => {
                    if open.len() >= OPEN_SHARDS {
                        // Closed once the threads writing to it are done.
                        open.remove(0);
                    }
                    let file = Arc::new(ShardFile {
                        file: std::mem::ManuallyDrop::new(
                            std::fs::OpenOptions::new().write(true).open(path)?,
                        ),
                        failed: Arc::clone(close_failed),
                    });
                    open.push((shard, Arc::clone(&file)));
                    file
                }
            }
        };
        f(&file)
    }

    /// Notes that shard `shard` was written to.
    pub(super) fn written(&self, shard: usize) {
        if let ShardFiles::Many { dirty, .. } = self {
            dirty[shard].store(true, Ordering::Release);
        }
    }

    /// Whether shard `shard` was written to since the last call (always
    /// for a single file).
    pub(super) fn take_dirty(&self, shard: usize) -> bool {
        match self {
            ShardFiles::One(_) => true,
            ShardFiles::Many { dirty, .. } => dirty[shard].swap(false, Ordering::Acquire),
        }
    }

    /// Whether closing a shard file has failed so far: the data written
    /// through it may not have reached the file.
    pub(super) fn close_failed(&self) -> bool {
        match self {
            ShardFiles::One(_) => false,
            ShardFiles::Many { close_failed, .. } => close_failed.load(Ordering::Acquire),
        }
    }

    /// Closes shard `shard` if it is open (a finished shard).
    pub(super) fn close(&self, shard: usize) {
        if let ShardFiles::Many { open, .. } = self {
            open.lock()
                .expect("not poisoned")
                .retain(|(s, _)| *s != shard);
        }
    }
}
