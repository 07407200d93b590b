//! The streaming skeleton shared by every operation that rewrites one
//! checkpoint (prune, edit, apply-mask, shard, unshard): the driver of
//! [`crate::stream`] over all tensors of the input, with the input's content
//! hash computed on the side.

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::stream::{drive, no_lag, CheckpointRows, Control, Piece, Units};

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
    prepare: impl FnMut(&[Piece]) -> Result<P>,
    work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
    mut collect: impl FnMut(&Piece, R),
) -> Result<Option<String>>
where
    P: Sync,
    R: Send + Sync + Clone,
{
    let extra = (0..input.tensors().len()).map(extra_elem_bytes).collect();
    let rows = CheckpointRows::all(input, hash.then_some(control.digest)).with_extra(extra);
    drive(
        &rows,
        control,
        what,
        Units::Pieces,
        prepare,
        work,
        no_lag(),
        |window, results| {
            for (p, r) in window.iter().zip(results) {
                collect(p, r.clone());
            }
            Ok(())
        },
    )?;
    Ok(rows.digests().map(|mut d| d.remove(0)))
}
