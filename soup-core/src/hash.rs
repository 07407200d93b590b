//! Content digests of tensors, checkpoints and files.
//!
//! A tensor's digest covers its name, dtype, shape and data; a checkpoint's
//! digest covers its tensors' digests in name order. Both ignore metadata
//! and storage order, so `soup edit --set-meta` or resharding leaves them
//! unchanged, while any change to a value, name, dtype or shape changes
//! them. These are the digests `soup` records as provenance.
//!
//! Digests are self-describing strings, `<algorithm>:<hex>`: `blake3:...` by
//! default (several times faster than sha256 and spread over all cores for
//! large tensors), `sha256:...` on request ([`DigestKind`]). [`file_sha256`]
//! is the plain sha256 of a whole file, which is what the Hugging Face Hub
//! lists for a stored file.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;
use safetensors::Dtype;
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::safety::FileStamp;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Units};

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

vocabulary! {
    /// The algorithm of a content digest.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    pub enum DigestKind ("digest", default Blake3) {
        /// BLAKE3 (the default): fast, multi-threaded for large tensors.
        Blake3 = "blake3",
        /// SHA-256, for tools that only know it.
        Sha256 = "sha256",
    }
}

impl DigestKind {
    /// The name used as the digest's prefix (`blake3`, `sha256`).
    pub fn name(self) -> &'static str {
        crate::vocab::Vocabulary::name(self)
    }

    /// A string as long as a digest of this kind, for headers whose size is
    /// fixed before the digests are known.
    pub fn placeholder(self) -> String {
        format!("{}:{}", self.name(), "0".repeat(64))
    }
}

/// Tensors at least this large are hashed with BLAKE3 on several threads;
/// below it, splitting costs more than it gains.
const PARALLEL_BLAKE3: usize = 128 << 10;

#[derive(Debug, Clone)]
enum Engine {
    Blake3(Box<blake3::Hasher>),
    Sha256(Sha256),
}

impl Engine {
    fn new(kind: DigestKind) -> Engine {
        match kind {
            DigestKind::Blake3 => Engine::Blake3(Box::new(blake3::Hasher::new())),
            DigestKind::Sha256 => Engine::Sha256(Sha256::new()),
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Engine::Blake3(h) if data.len() >= PARALLEL_BLAKE3 => {
                h.update_rayon(data);
            }
            Engine::Blake3(h) => {
                h.update(data);
            }
            Engine::Sha256(h) => h.update(data),
        }
    }
    fn finish(self) -> String {
        match self {
            Engine::Blake3(h) => format!("blake3:{}", h.finalize().to_hex()),
            Engine::Sha256(h) => format!("sha256:{}", hex(&h.finalize())),
        }
    }
    fn finish_raw(self) -> [u8; 32] {
        match self {
            Engine::Blake3(h) => *h.finalize().as_bytes(),
            Engine::Sha256(h) => h.finalize().into(),
        }
    }
}

/// The bytes a tensor's digest covers before its data: a version tag, the
/// name, the dtype and the shape.
pub(crate) fn tensor_prefix(name: &str, dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(32 + name.len() + 8 * shape.len());
    prefix.extend_from_slice(b"soup-tensor-v1\0");
    prefix.extend_from_slice(name.as_bytes());
    prefix.push(0);
    prefix.extend_from_slice(crate::dtype::name(dtype).as_bytes());
    prefix.push(0);
    prefix.extend_from_slice(&(shape.len() as u64).to_le_bytes());
    for &d in shape {
        prefix.extend_from_slice(&(d as u64).to_le_bytes());
    }
    prefix
}

/// Streaming digest of one tensor.
#[derive(Debug, Clone)]
pub struct TensorHasher(Engine);

impl TensorHasher {
    /// Starts the `kind` digest of tensor `name`.
    pub fn with_kind(kind: DigestKind, name: &str, dtype: Dtype, shape: &[usize]) -> Self {
        let mut h = Engine::new(kind);
        h.update(&tensor_prefix(name, dtype, shape));
        TensorHasher(h)
    }
    /// Adds the next bytes of data.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest, `<algorithm>:<hex>`.
    pub fn finish(self) -> String {
        self.0.finish()
    }
    /// The digest's 32 bytes (what [`TensorHasher::finish`] writes in hex).
    pub(crate) fn finish_raw(self) -> [u8; 32] {
        self.0.finish_raw()
    }
}

/// Combines per-tensor digests (name, digest) into the checkpoint digest
/// with algorithm `kind`, independent of tensor order.
pub fn combine_with<'a>(
    kind: DigestKind,
    tensors: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort();
    let mut h = Engine::new(kind);
    h.update(b"soup-checkpoint-v1\0");
    for (_, digest) in sorted {
        h.update(digest.as_bytes());
    }
    h.finish()
}

/// [`combine_with`] for tensor digests of algorithm `kind` held as their
/// 32 bytes (32 bytes per tensor, where a `(name, digest)` pair of strings
/// costs about 160), given already in name order.
pub(crate) fn combine_raw<'a>(
    kind: DigestKind,
    in_name_order: impl IntoIterator<Item = &'a [u8; 32]>,
) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Engine::new(kind);
    h.update(b"soup-checkpoint-v1\0");
    let mut text = format!("{}:", kind.name()).into_bytes();
    let prefix = text.len();
    for digest in in_name_order {
        text.truncate(prefix);
        for b in digest {
            text.push(HEX[usize::from(b >> 4)]);
            text.push(HEX[usize::from(b & 15)]);
        }
        h.update(&text);
    }
    h.finish()
}

/// The sha256 of the whole file at `path`, as bare lower-case hex: what the
/// Hugging Face Hub (and `sha256sum`) show for a stored file.
///
/// The file is read, not mapped, so a change while it is read would go
/// into the digest unseen: the file must read to exactly its size, and
/// afterwards the open file and the path must still show the size,
/// inode and times it had when opened; otherwise the result is
/// [`Error::InputChanged`], never a digest of a mix.
pub fn file_sha256(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let before = file
        .metadata()
        .map(|m| FileStamp::of(&m))
        .map_err(|e| Error::io(path, "cannot stat", e))?;
    sha256_of_open(path, file, before)
}

/// [`file_sha256`] of the open `file` of `path`, stamped `before` when it
/// was opened.
fn sha256_of_open(path: &Path, mut file: std::fs::File, before: FileStamp) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        h.update(&buf[..n]);
    }
    let open_now = file.metadata().map(|m| FileStamp::of(&m));
    if read != before.size() || open_now.ok() != Some(before) {
        return Err(Error::InputChanged {
            path: path.to_path_buf(),
        });
    }
    before.check(path)?;
    Ok(hex(&h.finalize()))
}

/// The sha256 of every file of `checkpoint` (one per shard), side by side.
pub fn file_sha256s(checkpoint: &Checkpoint) -> Result<Vec<(std::path::PathBuf, String)>> {
    let files: Vec<&Path> = checkpoint.files().collect();
    files
        .par_iter()
        .map(|p| Ok((p.to_path_buf(), file_sha256(p)?)))
        .collect()
}

/// Hashes of a whole checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointHash {
    /// The checkpoint digest, `<algorithm>:<hex>`.
    pub digest: String,
    /// `(name, digest)` of every tensor, in name order.
    pub tensors: Vec<(String, String)>,
}

impl CheckpointHash {
    /// The report of these hashes for the checkpoint at `path`.
    pub fn report(self, path: &Path) -> HashReport {
        HashReport {
            path: path.to_path_buf(),
            digest: self.digest,
            tensors: self
                .tensors
                .into_iter()
                .map(|(name, digest)| TensorDigest { name, digest })
                .collect(),
        }
    }
}

/// The content digests of a checkpoint, as `soup hash --json` prints them
/// and the Python package returns them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashReport {
    /// The checkpoint, as given.
    pub path: std::path::PathBuf,
    /// The checkpoint digest, `<algorithm>:<hex>`.
    pub digest: String,
    /// Every tensor's digest, in name order.
    pub tensors: Vec<TensorDigest>,
}

/// The content digest of one tensor ([`HashReport`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDigest {
    /// The tensor's name.
    pub name: String,
    /// Its digest, `<algorithm>:<hex>`.
    pub digest: String,
}

/// The sha256 of each file of a checkpoint, as `soup hash --file --json`
/// prints them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHashReport {
    /// One entry per file (one per shard), in the checkpoint's order.
    pub files: Vec<FileDigest>,
}

/// The sha256 of one whole file ([`FileHashReport`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its sha256, in lower-case hex (as sha256sum prints it).
    pub sha256: String,
}

impl FileHashReport {
    /// [`file_sha256s`] as a report.
    pub fn of(checkpoint: &Checkpoint) -> Result<FileHashReport> {
        Ok(FileHashReport {
            files: file_sha256s(checkpoint)?
                .into_iter()
                .map(|(path, sha256)| FileDigest { path, sha256 })
                .collect(),
        })
    }
}

/// Streams through `checkpoint` once and hashes every tensor with the
/// algorithm of `control.digest`. The tensors of a window are hashed in
/// parallel (a tensor's own pieces in order, and a large piece's bytes in
/// parallel too, with BLAKE3). A file of the checkpoint that changed
/// meanwhile is an error ([`Checkpoint::check_unchanged`]), not a digest
/// of a mix.
pub fn hash_checkpoint(checkpoint: &Checkpoint, control: &Control) -> Result<CheckpointHash> {
    let rows = CheckpointRows::all(checkpoint, None);
    // The hashers of tensors cut by a window boundary (a tensor's pieces
    // within a window run in order on one thread), so that bookkeeping
    // does not grow with the number of tensors.
    let open: Mutex<HashMap<usize, TensorHasher>> = Mutex::default();
    let mut digests: Vec<(String, String)> = Vec::with_capacity(checkpoint.tensors().len());
    drive(
        &rows,
        control,
        "hashing",
        Units::Tensors,
        |_| Ok(()),
        |piece, _, _| {
            let t = rows.entry(piece.tensor, 0);
            let mut h = match piece.first {
                true => TensorHasher::with_kind(control.digest, &t.name, t.dtype, &t.shape),
                false => {
                    let mut open = open.lock().expect("not poisoned");
                    open.remove(&piece.tensor).expect("started")
                }
            };
            h.update(rows.bytes(0, piece));
            if piece.last {
                return Ok(Some(h.finish()));
            }
            open.lock().expect("not poisoned").insert(piece.tensor, h);
            Ok(None)
        },
        no_lag(),
        |window, done| {
            for (piece, digest) in window.iter().zip(done) {
                if let Some(d) = digest {
                    digests.push((rows.entry(piece.tensor, 0).name.clone(), d.clone()));
                }
            }
            Ok(())
        },
    )?;
    checkpoint.check_unchanged()?;
    digests.sort();
    let digest = combine_with(
        control.digest,
        digests.iter().map(|(n, d)| (n.as_str(), d.as_str())),
    );
    Ok(CheckpointHash {
        digest,
        tensors: digests,
    })
}

/// Hashes several checkpoints side by side (one thread each).
pub fn hash_checkpoints(
    checkpoints: &[Checkpoint],
    control: &Control,
) -> Result<Vec<CheckpointHash>> {
    checkpoints
        .par_iter()
        .map(|c| hash_checkpoint(c, control))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_name_their_algorithm_and_differ_by_it() {
        let mut b = TensorHasher::with_kind(DigestKind::Blake3, "w", Dtype::F32, &[2]);
        let mut s = TensorHasher::with_kind(DigestKind::Sha256, "w", Dtype::F32, &[2]);
        b.update(&[0; 8]);
        s.update(&[0; 8]);
        let (b, s) = (b.finish(), s.finish());
        assert!(b.starts_with("blake3:") && b.len() == 71, "{b}");
        assert!(s.starts_with("sha256:") && s.len() == 71, "{s}");
        assert_eq!(DigestKind::Blake3.placeholder().len(), b.len());
        assert!(combine_with(DigestKind::Sha256, [("w", s.as_str())]).starts_with("sha256:"));
        assert!(combine_with(DigestKind::Blake3, [("w", b.as_str())]).starts_with("blake3:"));
    }

    #[test]
    fn digests_combine_alike_as_text_and_as_bytes() {
        for kind in [DigestKind::Blake3, DigestKind::Sha256] {
            let digests: Vec<(String, String, [u8; 32])> = ["b", "a", "c"]
                .iter()
                .map(|name| {
                    let h = TensorHasher::with_kind(kind, name, Dtype::F32, &[1]);
                    (name.to_string(), h.clone().finish(), h.finish_raw())
                })
                .collect();
            let text = combine_with(
                kind,
                digests.iter().map(|(n, d, _)| (n.as_str(), d.as_str())),
            );
            let mut sorted: Vec<_> = digests.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(combine_raw(kind, sorted.iter().map(|d| &d.2)), text);
        }
    }

    #[test]
    fn parallel_blake3_equals_sequential() {
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole =
            TensorHasher::with_kind(DigestKind::default(), "w", Dtype::U8, &[data.len()]);
        whole.update(&data);
        let mut pieces =
            TensorHasher::with_kind(DigestKind::default(), "w", Dtype::U8, &[data.len()]);
        for chunk in data.chunks(1000) {
            pieces.update(chunk);
        }
        assert_eq!(whole.finish(), pieces.finish());
    }

    #[test]
    fn file_sha256_is_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Opens `path` as [`file_sha256`] does, lets `change` act on the file,
    /// then hashes what the open file holds.
    fn hash_after(path: &Path, change: impl FnOnce()) -> Result<String> {
        let file = std::fs::File::open(path).unwrap();
        let before = FileStamp::of(&file.metadata().unwrap());
        change();
        sha256_of_open(path, file, before)
    }

    #[test]
    fn file_sha256_fails_when_the_file_changes_while_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let changed = |r: Result<String>| {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::InputChanged { .. }), "{e}");
            assert!(e.to_string().contains("changed while being read"), "{e}");
        };
        // Shrunk: fewer bytes than the size at open.
        changed(hash_after(&path, || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(1 << 20)
                .unwrap();
        }));
        // Rewritten in place with the same size, once the clock of the
        // file system has moved on.
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        changed(hash_after(&path, || {
            use std::os::unix::fs::FileExt;
            let old = std::fs::metadata(&path).unwrap().modified().unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for _ in 0..300 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                file.write_all_at(&[8u8; 64], 1 << 20).unwrap();
                if std::fs::metadata(&path).unwrap().modified().unwrap() != old {
                    return;
                }
            }
            panic!("the modification time never changed");
        }));
        // Replaced by rename: the path names another file.
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        changed(hash_after(&path, || {
            let other = dir.path().join("g");
            std::fs::write(&other, vec![7u8; 3 << 20]).unwrap();
            std::fs::rename(&other, &path).unwrap();
        }));
        // Unchanged: the digest.
        assert!(hash_after(&path, || {}).is_ok());
    }
}
