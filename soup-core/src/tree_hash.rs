//! BLAKE3 tensor digests computed piece by piece, on any thread, in the
//! same pass that reads the bytes for other work.
//!
//! A tensor's digest (see [`crate::hash`]) is BLAKE3 over one stream: a
//! prefix naming the tensor, then its data. BLAKE3 is a tree hash over
//! 1 KiB chunks: a subtree of `2^k` chunks starting at a chunk index that
//! `2^k` divides has a chaining value that depends only on its own bytes
//! and position, and the root merges such values pairwise. So the stream
//! can be cut into whole subtrees, hashed in any order on any thread, and
//! merged at the end into exactly the digest that hashing the stream in
//! order gives. Merge uses this to hash each piece of every input while
//! the piece is in the CPU cache for the mean, instead of in a second pass
//! over memory that must run in order.
//!
//! Ownership: the piece holding data bytes `a..b` of a tensor owns the
//! chunks that start at stream offsets in `L + a .. L + b` (`L` the prefix
//! length; the first piece also owns chunk 0 and so the prefix). A chunk
//! that starts near the end of a piece runs into the next piece's bytes,
//! which the owner reads from the same memory map. Every chunk thus has
//! exactly one owner, and each owner cuts its chunks into aligned
//! power-of-two subtrees ([`PieceHasher`]); [`combine`] rebuilds the root.
//!
//! The `hazmat` functions of the blake3 crate do the per-subtree work; the
//! tests compare every combination against `blake3::hash` of the stream.

use std::ops::Range;

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

const CHUNK: u64 = blake3::CHUNK_LEN as u64;

/// Bytes fed to a subtree hasher at once: 16 chunks, the width of BLAKE3's
/// widest SIMD kernel, so feeds that start on such a boundary use it fully.
const FEED: u64 = 16 * CHUNK;

/// A whole subtree of a stream: `chunks` (a power of two) chunks from
/// chunk `chunk`. For a stream of one chunk, the single subtree holds the
/// root hash instead of a chaining value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subtree {
    chunk: u64,
    chunks: u64,
    cv: ChainingValue,
}

/// Hashes the chunks of one tensor's stream that one piece owns (see the
/// module documentation), fed in order.
#[derive(Debug)]
pub(crate) struct PieceHasher {
    /// Prefix length.
    prefix: u64,
    /// Stream length (prefix and data).
    total: u64,
    /// Next stream byte to feed.
    next: u64,
    /// End of the owned bytes (stream offset).
    end: u64,
    /// The subtree being fed: hasher, first chunk, chunks.
    current: Option<(blake3::Hasher, u64, u64)>,
    done: Vec<Subtree>,
}

/// The largest power of two at most `n` (`n > 0`).
fn floor_pow2(n: u64) -> u64 {
    1 << (63 - n.leading_zeros())
}

impl PieceHasher {
    /// The hasher of the piece holding `data` (a byte range of the
    /// tensor's `data_len` bytes of data) of the tensor whose stream starts
    /// with `prefix`. The first piece (`data.start == 0`) is fed the prefix
    /// here.
    pub(crate) fn new(prefix: &[u8], data_len: u64, data: Range<u64>) -> PieceHasher {
        let l = prefix.len() as u64;
        let total = l + data_len;
        let start = match data.start {
            0 => 0,
            a => (l + a).next_multiple_of(CHUNK).min(total),
        };
        let end = (l + data.end).next_multiple_of(CHUNK).min(total);
        let mut hasher = PieceHasher {
            prefix: l,
            total,
            next: start,
            end: end.max(start),
            current: None,
            done: Vec::new(),
        };
        if data.start == 0 {
            hasher.update(prefix);
        }
        hasher
    }

    /// The data bytes (relative to the tensor's data) this piece still has
    /// to feed.
    pub(crate) fn pending(&self) -> Range<u64> {
        self.next.saturating_sub(self.prefix)..self.end.saturating_sub(self.prefix)
    }

    /// Feeds, from `data` (all of the tensor's data), the owned bytes
    /// before data offset `until`; short of the owned end, the feed stops
    /// at a boundary of [`FEED`] bytes of the stream, so that every
    /// subtree hasher is fed whole SIMD batches.
    pub(crate) fn feed(&mut self, data: &[u8], until: u64) {
        let pending = self.pending();
        let mut stop = until.min(pending.end);
        if stop < pending.end {
            stop = ((self.prefix + stop) / FEED * FEED).saturating_sub(self.prefix);
        }
        if stop > pending.start {
            self.update(&data[pending.start as usize..stop as usize]);
        }
    }

    /// Feeds the next stream bytes.
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (hasher, chunk, chunks) = match &mut self.current {
                Some(c) => c,
                None => self.current.insert(self.start_subtree()),
            };
            let subtree_end = ((*chunk + *chunks) * CHUNK).min(self.total);
            let take = (subtree_end - self.next).min(bytes.len() as u64) as usize;
            hasher.update(&bytes[..take]);
            self.next += take as u64;
            bytes = &bytes[take..];
            if self.next == subtree_end {
                let (hasher, chunk, chunks) = self.current.take().expect("started");
                let cv = if self.total <= CHUNK {
                    *hasher.finalize().as_bytes()
                } else {
                    hasher.finalize_non_root()
                };
                self.done.push(Subtree { chunk, chunks, cv });
            }
        }
    }

    /// A new subtree at `self.next` (a chunk boundary): as large as its
    /// position allows, within the owned bytes, and never the whole
    /// stream (whose root is made by [`combine`]).
    fn start_subtree(&self) -> (blake3::Hasher, u64, u64) {
        let chunk = self.next / CHUNK;
        let left = (self.end - self.next).div_ceil(CHUNK);
        let all = self.total.div_ceil(CHUNK);
        let mut chunks = floor_pow2(left);
        if chunk > 0 {
            chunks = chunks.min(1 << chunk.trailing_zeros());
        } else if all > 1 {
            chunks = chunks.min(floor_pow2(all - 1));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(chunk * CHUNK);
        (hasher, chunk, chunks)
    }

    /// The subtrees of the owned bytes, which must all have been fed.
    pub(crate) fn finish(self) -> Vec<Subtree> {
        assert!(
            self.next == self.end && self.current.is_none(),
            "piece not fully hashed"
        );
        self.done
    }
}

/// The BLAKE3 hash of a stream of `total` bytes from all its subtrees, in
/// stream order (the concatenated [`PieceHasher::finish`] of its pieces).
pub(crate) fn combine(subtrees: &[Subtree], total: u64) -> blake3::Hash {
    let all = total.div_ceil(CHUNK).max(1);
    if all == 1 {
        assert_eq!(subtrees.len(), 1, "a one-chunk stream is one subtree");
        return blake3::Hash::from_bytes(subtrees[0].cv);
    }
    let left = floor_pow2(all - 1);
    let l = node(subtrees, 0, left);
    let r = node(subtrees, left, all);
    merge_subtrees_root(&l, &r, Mode::Hash)
}

/// The chaining value of the tree node over chunks `start..end`: a listed
/// subtree, or the merge of its two children.
fn node(subtrees: &[Subtree], start: u64, end: u64) -> ChainingValue {
    let at = subtrees.partition_point(|s| s.chunk < start);
    if let Some(s) = subtrees.get(at) {
        if s.chunk == start && s.chunk + s.chunks == end {
            return s.cv;
        }
    }
    assert!(end - start > 1, "subtree at chunk {start} missing");
    let left = floor_pow2(end - start - 1);
    let l = node(subtrees, start, start + left);
    let r = node(subtrees, start + left, end);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes `prefix ++ data` cut into pieces of `piece` data bytes, fed
    /// in steps of `step` bytes, and combines the pieces in order.
    fn by_pieces(prefix: &[u8], data: &[u8], piece: usize, step: u64) -> blake3::Hash {
        let n = data.len() as u64;
        let mut subtrees = Vec::new();
        let mut a = 0u64;
        loop {
            let b = (a + piece as u64).min(n);
            let mut h = PieceHasher::new(prefix, n, a..b);
            let mut until = a;
            while until < b {
                until = (until + step).min(b);
                h.feed(data, until);
            }
            // The owner reads past its piece to finish its last chunk.
            h.feed(data, n);
            subtrees.extend(h.finish());
            a = b;
            if a >= n {
                break;
            }
        }
        combine(&subtrees, prefix.len() as u64 + n)
    }

    fn stream(prefix: &[u8], data: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(prefix);
        h.update(data);
        h.finalize()
    }

    #[test]
    fn pieces_give_the_sequential_hash() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let mut cases = 0;
        for prefix_len in [1usize, 15, 57, 1023, 1024, 1025, 2500] {
            let prefix: Vec<u8> = (0..prefix_len).map(|i| (i % 7) as u8 + 1).collect();
            for len in [
                0usize, 1, 8, 1000, 1024, 4096, 17_000, 65_536, 100_003, 300_000,
            ] {
                for piece in [8usize, 1000, 1024, 4096, 16_384, 65_536, 1 << 20] {
                    if len / piece > 2000 {
                        continue;
                    }
                    for step in [64u64, 8192, u64::MAX] {
                        let want = stream(&prefix, &data[..len]);
                        let got = by_pieces(&prefix, &data[..len], piece, step);
                        assert_eq!(got, want, "prefix {prefix_len} len {len} piece {piece}");
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 1000);
    }

    #[test]
    fn a_piece_owns_no_chunk_when_none_starts_in_it() {
        let prefix = [1u8; 10];
        // Data bytes 100..108 lie inside chunk 0, which the first piece owns.
        let mut h = PieceHasher::new(&prefix, 5000, 100..108);
        assert!(h.pending().is_empty());
        h.feed(&[0; 5000], 5000);
        assert!(h.finish().is_empty());
    }
}
