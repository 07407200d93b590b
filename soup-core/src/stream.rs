//! Streaming over tensors in bounded windows: the one driver of every
//! out-of-core operation (hash, inspect, diff, mask, merge, distance,
//! prune, and the rewrites of surgery).
//!
//! The operation's tensors form rows (one tensor of each input, matched by
//! name). Each row is cut into pieces of at most
//! [`StreamOptions::piece_elems`] elements, and consecutive pieces are
//! grouped into windows whose bytes, summed over all inputs, stay under
//! [`StreamOptions::budget_bytes`]. For each window, the driver runs, on all
//! threads at once: the side tasks of the inputs (each input's content
//! hash, which reads its bytes in order), the operation's lagged tasks for
//! the previous window (check-mask's fingerprints), and the operation's
//! work on each piece. Then it hands the results to the operation in order,
//! and releases the window's mapped pages. Peak memory is therefore the
//! budget plus one piece of scratch per thread, whatever the checkpoint
//! size or number of inputs.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::checkpoint::{Checkpoint, TensorEntry};
use crate::error::{Error, Result};
use crate::hash::{DigestKind, TensorHasher};

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

/// Most pieces in one window: with many small tensors, a window's
/// bookkeeping (pieces, results, task list) is then bounded too, not only
/// its bytes.
const WINDOW_PIECES: usize = 1 << 14;

/// Groups the pieces of tensors into windows. `tensors` gives, per tensor,
/// its element count and the bytes one element costs summed over all inputs
/// (0-element tensors still get one empty piece, so they are visited).
///
/// A piece never costs more than the budget (down to 8 elements), so the
/// budget bounds memory even when it is smaller than one default piece; a
/// window holds at most [`WINDOW_PIECES`] pieces.
/// Windows are made as they are asked for, so only one is held at a time,
/// however many tensors there are.
pub fn windows(
    tensors: &[(usize, usize)],
    options: StreamOptions,
) -> impl Iterator<Item = Vec<Piece>> + '_ {
    let mut tensor = 0;
    let mut start = 0;
    std::iter::from_fn(move || {
        let mut current = Vec::new();
        let mut used = 0usize;
        while let Some(&(numel, elem_bytes)) = tensors.get(tensor) {
            let affordable = options.budget_bytes / elem_bytes.max(1);
            let piece_elems = (options.piece_elems.min(affordable) / 8).max(1) * 8;
            let end = (start + piece_elems).min(numel);
            let cost = (end - start) * elem_bytes;
            if !current.is_empty()
                && (used + cost > options.budget_bytes || current.len() == WINDOW_PIECES)
            {
                break;
            }
            current.push(Piece {
                tensor,
                elems: start..end,
                first: start == 0,
                last: end == numel,
            });
            used += cost;
            if end >= numel {
                tensor += 1;
                start = 0;
            } else {
                start = end;
            }
        }
        (!current.is_empty()).then_some(current)
    })
}

/// Where the rows of a stream live: the driver asks it for sizes, and
/// tells it when a piece will be read soon and when it was read.
pub(crate) trait Rows: Sync {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Elements of row `row`.
    fn numel(&self, row: usize) -> usize;
    /// Bytes one element of row `row` costs, summed over the inputs.
    fn elem_bytes(&self, row: usize) -> usize;
    /// The piece will be read soon.
    fn prefetch(&self, _piece: &Piece) {}
    /// The piece was read and is not needed again soon.
    fn release(&self, _piece: &Piece) {}
    /// Number of side tasks per window (tasks that must see every window
    /// in order, such as an input's content hash).
    fn side_tasks(&self) -> usize {
        0
    }
    /// Runs side task `task` on `window`.
    fn side_task(&self, _task: usize, _window: &[Piece]) {}
}

/// How the work of a window is handed to threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Units {
    /// Every piece is a task of its own.
    Pieces,
    /// The consecutive pieces of one row form one task, run in order on
    /// one thread (for work that is sequential within a tensor, such as a
    /// tensor's hash); the longest tasks go first.
    Tensors,
}

/// Tasks that run on the previous window's results while the current
/// window is processed (and once more after the last window).
pub(crate) struct Lagged<F> {
    /// How many tasks.
    pub(crate) tasks: usize,
    /// `run(task, window, results)`.
    pub(crate) run: F,
}

/// No lagged tasks.
pub(crate) fn no_lag<R>() -> Lagged<impl Fn(usize, &[Piece], &[R]) + Sync> {
    Lagged {
        tasks: 0,
        run: |_: usize, _: &[Piece], _: &[R]| {},
    }
}

/// Streams every row of `rows` in windows (see the module documentation).
///
/// For each window: `prepare` runs first, on this thread; then, on all
/// threads, the rows' side tasks, the lagged tasks on the previous window
/// and `work(piece, prepared, index in window)` for every piece; then
/// `collect(window, results)` on this thread, in order. The interrupt flag
/// is checked between windows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive<Q: Rows, P: Sync, R: Send + Sync>(
    rows: &Q,
    control: &Control,
    what: &str,
    units: Units,
    mut prepare: impl FnMut(&[Piece]) -> Result<P>,
    work: impl Fn(&Piece, &P, usize) -> Result<R> + Sync,
    lagged: Lagged<impl Fn(usize, &[Piece], &[R]) + Sync>,
    mut collect: impl FnMut(&[Piece], &[R]) -> Result<()>,
) -> Result<()> {
    let sizes: Vec<(usize, usize)> = (0..rows.rows())
        .map(|r| (rows.numel(r), rows.elem_bytes(r)))
        .collect();
    let total: u64 = sizes.iter().map(|&(n, b)| (n * b) as u64).sum();
    let mut all = windows(&sizes, control.options).peekable();
    let side = rows.side_tasks();
    control.progress.start(what, total);
    let mut previous: Option<(Vec<Piece>, Vec<R>)> = None;
    let mut finished = false;
    while !finished {
        control.check()?;
        let window = all.next();
        finished = window.is_none();
        let pieces: &[Piece] = window.as_deref().unwrap_or(&[]);
        if let Some(next) = all.peek() {
            next.iter().for_each(|p| rows.prefetch(p));
        }
        let prepared = match finished {
            false => Some(prepare(pieces)?),
            true => None,
        };
        // Task units: single pieces, or the runs of one row's pieces.
        let mut task_units: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        while start < pieces.len() {
            let end = match units {
                Units::Pieces => start + 1,
                Units::Tensors => {
                    let row = pieces[start].tensor;
                    start
                        + pieces[start..]
                            .iter()
                            .take_while(|p| p.tensor == row)
                            .count()
                }
            };
            task_units.push(start..end);
            start = end;
        }
        if units == Units::Tensors {
            task_units.sort_by_key(|u| {
                std::cmp::Reverse(
                    pieces[u.clone()]
                        .iter()
                        .map(|p| p.elems.len())
                        .sum::<usize>(),
                )
            });
        }
        let sides = if finished { 0 } else { side };
        let lags = if previous.is_some() { lagged.tasks } else { 0 };
        let slots: Vec<Mutex<Option<Result<R>>>> =
            pieces.iter().map(|_| Mutex::new(None)).collect();
        run_tasks(sides + lags + task_units.len(), |task| {
            if task < sides {
                rows.side_task(task, pieces);
            } else if task < sides + lags {
                let (w, r) = previous.as_ref().expect("a previous window");
                (lagged.run)(task - sides, w, r);
            } else {
                let prepared = prepared.as_ref().expect("prepared");
                for i in task_units[task - sides - lags].clone() {
                    let result = work(&pieces[i], prepared, i);
                    *slots[i].lock().expect("not poisoned") = Some(result);
                }
            }
        });
        let Some(window) = window else { break };
        let results: Vec<R> = slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .expect("not poisoned")
                    .expect("every piece ran")
            })
            .collect::<Result<_>>()?;
        collect(&window, &results)?;
        let mut bytes = 0u64;
        // Released only now, not piece by piece as each is done: the
        // kernel maps pages around each fault (fault-around), so a thread
        // starting a piece would map again the end of a neighbour released
        // just before, and those pages would stay resident to the end.
        for p in &window {
            rows.release(p);
            bytes += (p.elems.len() * sizes[p.tensor].1) as u64;
        }
        control.progress.advance(bytes);
        previous = (lagged.tasks > 0).then_some((window, results));
    }
    control.progress.finish();
    Ok(())
}

/// The running content digest of one input, fed its tensors' bytes in
/// storage order (the digest [`crate::hash::hash_checkpoint`] computes).
struct InputHasher {
    kind: DigestKind,
    current: Option<TensorHasher>,
    /// The digest of each finished row, in row order.
    done: Vec<[u8; 32]>,
}

/// Rows of checkpoints: row `r` is `entries[r * n + k]` of input `k` (one
/// flat array, where a vector per row would cost 32 more bytes a row).
pub(crate) struct CheckpointRows<'a> {
    inputs: Vec<&'a Checkpoint>,
    entries: Vec<&'a TensorEntry>,
    count: usize,
    extra: Vec<usize>,
    hashers: Option<Vec<Mutex<InputHasher>>>,
}

impl<'a> CheckpointRows<'a> {
    /// Rows `entries` of `inputs`; with a `digest` kind, each input's
    /// content digest is computed on the side (the rows must then hold all
    /// its tensors).
    pub(crate) fn new(
        inputs: Vec<&'a Checkpoint>,
        entries: Vec<Vec<&'a TensorEntry>>,
        digest: Option<DigestKind>,
    ) -> CheckpointRows<'a> {
        let n = inputs.len();
        let mut flat = Vec::with_capacity(entries.len() * n);
        for row in entries {
            assert_eq!(row.len(), n, "one entry per input");
            flat.extend(row);
        }
        CheckpointRows::flat(inputs, flat, digest)
    }

    /// Rows given as one flat array (see the type's documentation).
    fn flat(
        inputs: Vec<&'a Checkpoint>,
        entries: Vec<&'a TensorEntry>,
        digest: Option<DigestKind>,
    ) -> CheckpointRows<'a> {
        let n = inputs.len();
        let hasher = |kind| InputHasher {
            kind,
            current: None,
            done: Vec::new(),
        };
        let count = entries.len() / n.max(1);
        CheckpointRows {
            count,
            extra: vec![0; count],
            hashers: digest.map(|kind| (0..n).map(|_| Mutex::new(hasher(kind))).collect()),
            inputs,
            entries,
        }
    }

    /// Every tensor of one checkpoint, one row each.
    pub(crate) fn all(input: &'a Checkpoint, digest: Option<DigestKind>) -> CheckpointRows<'a> {
        CheckpointRows::flat(vec![input], input.tensors().iter().collect(), digest)
    }

    /// Row `row`: its entry in every input.
    pub(crate) fn row(&self, row: usize) -> &[&'a TensorEntry] {
        let n = self.inputs.len();
        &self.entries[row * n..(row + 1) * n]
    }

    /// Adds, per row, bytes per element that the operation reads elsewhere
    /// (so that windows stay within the budget).
    pub(crate) fn with_extra(mut self, extra: Vec<usize>) -> Self {
        self.extra = extra;
        self
    }

    /// The entry of row `row` in input `k`.
    pub(crate) fn entry(&self, row: usize, k: usize) -> &'a TensorEntry {
        self.row(row)[k]
    }

    /// The bytes of `piece` in input `k`.
    pub(crate) fn bytes(&self, k: usize, piece: &Piece) -> &'a [u8] {
        let t = self.entry(piece.tensor, k);
        self.inputs[k].bytes(t, t.byte_range(&piece.elems))
    }

    /// The inputs' content hashes (when asked for), in input order.
    pub(crate) fn digests(&self) -> Option<Vec<String>> {
        let hashers = self.hashers.as_ref()?;
        let digests = hashers
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let h = h.lock().expect("not poisoned");
                let order = self.name_order(k);
                crate::hash::combine_raw(h.kind, order.iter().map(|&r| &h.done[r as usize]))
            })
            .collect();
        Some(digests)
    }

    /// The rows sorted by the names of their tensors in input `k`.
    pub(crate) fn name_order(&self, k: usize) -> Vec<u32> {
        let count = u32::try_from(self.rows()).expect("fewer than 2^32 tensors");
        let mut order: Vec<u32> = (0..count).collect();
        order.sort_unstable_by(|&a, &b| {
            let a = &self.entry(a as usize, k).name;
            a.cmp(&self.entry(b as usize, k).name)
        });
        order
    }
}

impl Rows for CheckpointRows<'_> {
    fn rows(&self) -> usize {
        self.count
    }
    fn numel(&self, row: usize) -> usize {
        self.entry(row, 0).numel()
    }
    fn elem_bytes(&self, row: usize) -> usize {
        self.row(row)
            .iter()
            .map(|t| t.dtype.bitsize().div_ceil(8))
            .sum::<usize>()
            + self.extra[row]
    }
    fn prefetch(&self, piece: &Piece) {
        for (k, t) in self.row(piece.tensor).iter().enumerate() {
            self.inputs[k].prefetch(t, t.byte_range(&piece.elems));
        }
    }
    fn release(&self, piece: &Piece) {
        for (k, t) in self.row(piece.tensor).iter().enumerate() {
            self.inputs[k].release(t, t.byte_range(&piece.elems));
        }
    }
    fn side_tasks(&self) -> usize {
        self.hashers.as_ref().map_or(0, Vec::len)
    }
    fn side_task(&self, k: usize, window: &[Piece]) {
        let hashers = self.hashers.as_ref().expect("hashing");
        let mut state = hashers[k].lock().expect("not poisoned");
        for piece in window {
            let t = self.entry(piece.tensor, k);
            if piece.first {
                state.current = Some(TensorHasher::with_kind(
                    state.kind, &t.name, t.dtype, &t.shape,
                ));
            }
            state
                .current
                .as_mut()
                .expect("started")
                .update(self.bytes(k, piece));
            if piece.last {
                let digest = state.current.take().expect("started").finish_raw();
                state.done.push(digest);
            }
        }
    }
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
        let ws: Vec<Vec<Piece>> = windows(&tensors, opts).collect();
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

    /// A header of many tiny tensors fits one window by bytes; the count
    /// of pieces still cuts it, so that per-piece bookkeeping stays bounded.
    #[test]
    fn windows_of_many_small_tensors_hold_a_bounded_number_of_pieces() {
        let tensors = vec![(1usize, 8usize); 3 * WINDOW_PIECES + 5];
        let ws: Vec<Vec<Piece>> = windows(&tensors, StreamOptions::default()).collect();
        assert_eq!(ws.len(), 4);
        assert!(ws.iter().all(|w| w.len() <= WINDOW_PIECES));
        let covered: Vec<usize> = ws.iter().flatten().map(|p| p.tensor).collect();
        assert_eq!(covered, (0..tensors.len()).collect::<Vec<_>>());
    }
}
