//! Streaming over tensors in bounded windows.
//!
//! Every out-of-core operation walks its tensors the same way: each tensor is
//! cut into pieces of at most [`StreamOptions::piece_elems`] elements, and
//! consecutive pieces are grouped into windows whose bytes, summed over all
//! inputs, stay under [`StreamOptions::budget_bytes`]. A window's pieces are
//! processed in parallel; then its mapped pages are released. Peak memory is
//! therefore the budget plus one piece of scratch per thread, whatever the
//! checkpoint size or number of inputs.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// How work is cut up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Upper bound for the input bytes of one window, all inputs together.
    pub budget_bytes: usize,
    /// Elements per piece (rounded down to a multiple of 8 so packed masks
    /// fall on byte boundaries).
    pub piece_elems: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            budget_bytes: 64 << 20,
            piece_elems: 1 << 18,
        }
    }
}

/// Progress reporting, implemented by the command-line tool (a progress
/// bar) or not at all ([`NoProgress`]).
pub trait Progress: Sync {
    /// A phase of work of `total` bytes begins.
    fn start(&self, what: &str, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Progress that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a long operation needs from its caller besides its inputs: where to
/// report progress, and a flag that asks it to stop.
#[derive(Clone, Copy)]
pub struct Control<'a> {
    /// Progress sink.
    pub progress: &'a dyn Progress,
    /// Set (by a Ctrl-C handler) to stop at the next window.
    pub interrupt: Option<&'a AtomicBool>,
    /// Work partitioning.
    pub options: StreamOptions,
    /// The algorithm of the content digests computed along the way
    /// (provenance of written files, `hash`).
    pub digest: crate::hash::DigestKind,
}

impl std::fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Default for Control<'_> {
    fn default() -> Self {
        Control {
            progress: &NoProgress,
            interrupt: None,
            options: StreamOptions::default(),
            digest: Default::default(),
        }
    }
}

impl Control<'_> {
    /// Returns [`Error::Interrupted`] once the interrupt flag is set.
    pub fn check(&self) -> Result<()> {
        match self.interrupt {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }
}

/// Runs `task(0..count)` on every thread of the rayon pool, handing out
/// the tasks in order: callers list their longest tasks first, so that the
/// threads finish together (a window waits for its slowest thread).
pub fn run_tasks(count: usize, task: impl Fn(usize) + Sync) {
    if rayon::current_thread_index().is_some() {
        // Already on a pool thread (a caller's parallel loop): a broadcast
        // would wait for threads busy with the caller's other items.
        use rayon::prelude::*;
        (0..count).into_par_iter().with_max_len(1).for_each(&task);
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    rayon::broadcast(|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            break;
        }
        task(i);
    });
}

/// A run of elements of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Index of the tensor in the caller's list.
    pub tensor: usize,
    /// Element range.
    pub elems: Range<usize>,
    /// Whether this is the tensor's first piece.
    pub first: bool,
    /// Whether this is the tensor's last piece.
    pub last: bool,
}

/// Groups the pieces of tensors into windows. `tensors` gives, per tensor,
/// its element count and the bytes one element costs summed over all inputs
/// (0-element tensors still get one empty piece, so they are visited).
///
/// A piece never costs more than the budget (down to 8 elements), so the
/// budget bounds memory even when it is smaller than one default piece.
pub fn windows(tensors: &[(usize, usize)], options: StreamOptions) -> Vec<Vec<Piece>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut used = 0usize;
    for (tensor, &(numel, elem_bytes)) in tensors.iter().enumerate() {
        let affordable = options.budget_bytes / elem_bytes.max(1);
        let piece_elems = (options.piece_elems.min(affordable) / 8).max(1) * 8;
        let mut start = 0;
        loop {
            let end = (start + piece_elems).min(numel);
            let cost = (end - start) * elem_bytes;
            if !current.is_empty() && used + cost > options.budget_bytes {
                out.push(std::mem::take(&mut current));
                used = 0;
            }
            current.push(Piece {
                tensor,
                elems: start..end,
                first: start == 0,
                last: end == numel,
            });
            used += cost;
            start = end;
            if start >= numel {
                break;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_element_once_within_budget() {
        let tensors = [(100usize, 8usize), (0, 8), (17, 8), (1000, 8)];
        let opts = StreamOptions {
            budget_bytes: 400,
            piece_elems: 20,
        };
        let ws = windows(&tensors, opts);
        let mut seen = vec![0usize; tensors.len()];
        for w in &ws {
            let cost: usize = w.iter().map(|p| p.elems.len() * 8).sum();
            assert!(cost <= 400);
            for p in w {
                assert_eq!(p.elems.start, seen[p.tensor]);
                assert!(p.elems.len() <= 16);
                seen[p.tensor] = p.elems.end;
            }
        }
        assert_eq!(seen, vec![100, 0, 17, 1000]);
        // A budget below one piece shrinks the pieces instead.
        let small = StreamOptions {
            budget_bytes: 100,
            piece_elems: 1 << 20,
        };
        for w in windows(&tensors, small) {
            assert!(w.iter().map(|p| p.elems.len() * 8).sum::<usize>() <= 100);
        }
        let empties: Vec<_> = ws.iter().flatten().filter(|p| p.tensor == 1).collect();
        assert_eq!(empties.len(), 1);
        assert!(empties[0].first && empties[0].last);
    }
}
