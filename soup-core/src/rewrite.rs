//! The streaming skeleton shared by every operation that rewrites one
//! checkpoint (prune, edit, apply-mask, shard, unshard): walk all tensors of
//! the input in bounded windows, prepare each window sequentially, process
//! its pieces in parallel while the input's content hash is computed on the
//! side, then release the window's pages.

use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::hash::TensorHasher;
use crate::stream::{windows, Control, Piece};

/// Running content hash of one checkpoint, fed in storage order.
#[derive(Default)]
struct HashState {
    kind: crate::hash::DigestKind,
    current: Option<TensorHasher>,
    done: Vec<(String, String)>,
}

impl HashState {
    fn feed(&mut self, input: &Checkpoint, window: &[Piece]) {
        for piece in window {
            let t = &input.tensors()[piece.tensor];
            if piece.first {
                self.current = Some(TensorHasher::with_kind(
                    self.kind, &t.name, t.dtype, &t.shape,
                ));
            }
            let bytes = input.bytes(t, t.byte_range(&piece.elems));
            self.current.as_mut().expect("started").update(bytes);
            if piece.last {
                let digest = self.current.take().expect("started").finish();
                self.done.push((t.name.clone(), digest));
            }
        }
    }

    fn finish(self) -> String {
        crate::hash::combine_with(
            self.kind,
            self.done.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        )
    }
}

/// Streams every tensor of `input` (pieces index `input.tensors()`).
///
/// For each window, `prepare` runs first (it may itself use the thread
/// pool); then `work(piece, prepared, index in window)` runs on every piece in
/// parallel, and `collect` receives the results in order. With `hash`, the
/// input's content hash (as [`crate::hash::hash_checkpoint`] computes it) is
/// returned. `extra_elem_bytes` adds, per tensor, the bytes other inputs read
/// for one element (so windows stay within the budget).
#[allow(clippy::too_many_arguments)]
pub(crate) fn stream<P, R>(
    input: &Checkpoint,
    extra_elem_bytes: &dyn Fn(usize) -> usize,
    control: &Control,
    what: &str,
    hash: bool,
    mut prepare: impl FnMut(&[Piece]) -> Result<P>,
    work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
    mut collect: impl FnMut(&Piece, R),
) -> Result<Option<String>>
where
    P: Sync,
    R: Send,
{
    let tensors = input.tensors();
    let sizes: Vec<(usize, usize)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.numel(),
                t.dtype.bitsize().div_ceil(8) + extra_elem_bytes(i),
            )
        })
        .collect();
    let all = windows(&sizes, control.options);
    let mut state = HashState {
        kind: control.digest,
        ..HashState::default()
    };
    control.progress.start(what, input.data_bytes());
    for (w, window) in all.iter().enumerate() {
        control.check()?;
        if let Some(next) = all.get(w + 1) {
            for p in next {
                let t = &tensors[p.tensor];
                input.prefetch(t, t.byte_range(&p.elems));
            }
        }
        let prepared = prepare(window)?;
        let (results, ()) = rayon::join(
            || {
                window
                    .par_iter()
                    .enumerate()
                    .map(|(i, p)| work(p, &prepared, i))
                    .collect::<Result<Vec<R>>>()
            },
            || {
                if hash {
                    state.feed(input, window);
                }
            },
        );
        for (p, r) in window.iter().zip(results?) {
            collect(p, r);
        }
        let mut bytes = 0u64;
        for p in window {
            let t = &tensors[p.tensor];
            let range = t.byte_range(&p.elems);
            bytes += range.len() as u64;
            input.release(t, range);
        }
        control.progress.advance(bytes);
    }
    control.progress.finish();
    Ok(hash.then(|| state.finish()))
}
