//! Content hashes of tensors and checkpoints.
//!
//! A tensor's hash is the sha256 of its name, dtype, shape and data; a
//! checkpoint's hash is the sha256 of its tensors' hashes in name order. Both
//! ignore metadata and storage order, so `soup edit --set-meta` or resharding
//! leaves them unchanged, while any change to a value, name, dtype or shape
//! changes them. These are the hashes `soup` records as provenance.

use std::sync::Mutex;

use rayon::prelude::*;
use safetensors::Dtype;
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::stream::{windows, Control, Piece};

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streaming hash of one tensor.
#[derive(Debug, Clone)]
pub struct TensorHasher(Sha256);

impl TensorHasher {
    /// Starts the hash of tensor `name`.
    pub fn new(name: &str, dtype: Dtype, shape: &[usize]) -> Self {
        let mut h = Sha256::new();
        h.update(b"soup-tensor-v1\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(crate::dtype::name(dtype).as_bytes());
        h.update(b"\0");
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        TensorHasher(h)
    }
    /// Adds the next bytes of data.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The hex digest.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Combines per-tensor hashes (name, hex digest) into the checkpoint hash.
pub fn combine<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(b"soup-checkpoint-v1\0");
    for (_, digest) in sorted {
        h.update(digest.as_bytes());
    }
    hex(&h.finalize())
}

/// Hashes of a whole checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointHash {
    /// The checkpoint hash.
    pub sha256: String,
    /// `(name, hash)` of every tensor, in name order.
    pub tensors: Vec<(String, String)>,
}

/// Streams through `checkpoint` once and hashes every tensor. The tensors
/// of a window are hashed in parallel (a tensor's own bytes are sequential).
pub fn hash_checkpoint(checkpoint: &Checkpoint, control: &Control) -> Result<CheckpointHash> {
    let tensors = checkpoint.tensors();
    let sizes: Vec<(usize, usize)> = tensors.iter().map(|t| (t.nbytes(), 1)).collect();
    control.progress.start("hashing", checkpoint.data_bytes());
    let hashers: Vec<Mutex<Option<TensorHasher>>> =
        tensors.iter().map(|_| Mutex::new(None)).collect();
    let digests: Mutex<Vec<(String, String)>> = Mutex::new(Vec::with_capacity(tensors.len()));
    for window in windows(&sizes, control.options) {
        control.check()?;
        // Consecutive pieces of one tensor form one task; longest first.
        let mut groups: Vec<&[Piece]> = window.chunk_by(|a, b| a.tensor == b.tensor).collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|p| p.elems.len()).sum::<usize>()));
        crate::stream::run_tasks(groups.len(), |g| {
            for piece in groups[g] {
                let t = &tensors[piece.tensor];
                let mut slot = hashers[piece.tensor].lock().expect("not poisoned");
                let h = slot.get_or_insert_with(|| TensorHasher::new(&t.name, t.dtype, &t.shape));
                h.update(checkpoint.bytes(t, piece.elems.clone()));
                checkpoint.release(t, piece.elems.clone());
                if piece.last {
                    let digest = slot.take().expect("started").finish();
                    digests
                        .lock()
                        .expect("not poisoned")
                        .push((t.name.clone(), digest));
                }
            }
        });
        let bytes: usize = window.iter().map(|p| p.elems.len()).sum();
        control.progress.advance(bytes as u64);
    }
    control.progress.finish();
    let mut digests = digests.into_inner().expect("not poisoned");
    digests.sort();
    let sha256 = combine(digests.iter().map(|(n, d)| (n.as_str(), d.as_str())));
    Ok(CheckpointHash {
        sha256,
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
