//! The fuzz harness of soup-core: one function per fuzz target, each taking
//! the raw bytes a fuzzer produced, driving soup-core the way the `soup`
//! tool does, and panicking only when soup-core breaks one of its promises.
//!
//! Errors are the expected outcome for almost every input: a hostile file
//! must be refused with an error, never crash the process. What counts as a
//! finding here is a panic (an out-of-bounds slice, an overflow, an
//! `unwrap`), or an accepted input that violates an invariant checked below
//! (a header that does not round-trip, a merge that creates non-zeros).
//!
//! This file is compiled into two places: the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (nightly Rust, libFuzzer) and the corpus replay test
//! `tests/tests/fuzz_corpus.rs` (stable Rust, every committed corpus file),
//! so the normal test suite checks exactly what the fuzzer checks.
//!
//! Inputs that consist of several files (a sharded checkpoint, the two
//! inputs of a merge) are split at [`PART_SEPARATOR`], a marker that cannot
//! occur by accident in the seeds; the fuzzer mutates the parts and
//! occasionally the marker itself, which merely changes the split.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use soup_core::{
    check_masks, hash_checkpoint, inspect, merge, Checkpoint, Control, IntPolicy, MaskPolicy,
    MergeOptions, Selection, StreamOptions,
};

/// What became of one input: most are refused, as hostile files should be;
/// the checks of a target run on the accepted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// soup-core returned an error (the expected answer to a broken file).
    Refused,
    /// soup-core accepted the input, and every check on the result held.
    Accepted,
}

/// Separates the files of a multi-file input.
pub const PART_SEPARATOR: &[u8] = b"\n<<soup-fuzz-part>>\n";

/// Splits `data` at every [`PART_SEPARATOR`].
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = find(rest, PART_SEPARATOR) {
        parts.push(&rest[..at]);
        rest = &rest[at + PART_SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

/// Joins files into one multi-file input (the inverse of [`split_parts`]).
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(PART_SEPARATOR);
        }
        out.extend_from_slice(part);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Tiny windows and pieces, so that a few-kilobyte input already crosses
/// window and piece boundaries the way a multi-gigabyte checkpoint does.
fn control() -> Control<'static> {
    Control {
        options: StreamOptions {
            budget_bytes: 256,
            piece_elems: 16,
        },
        ..Control::default()
    }
}

thread_local! {
    // One scratch folder per thread for the whole run: creating a folder
    // per input would cost more than most inputs take to check.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Runs `f` in an empty scratch folder and empties it afterwards.
fn in_scratch<T>(f: impl FnOnce(&Path) -> T) -> T {
    let dir: PathBuf = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let tmp = s.get_or_insert_with(|| {
            tempfile::Builder::new()
                .prefix("soup-fuzz-")
                .tempdir()
                .expect("scratch folder")
        });
        tmp.path().join("case")
    });
    std::fs::create_dir(&dir).expect("scratch case folder");
    let result = f(&dir);
    std::fs::remove_dir_all(&dir).expect("empty the scratch folder");
    result
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write a scratch file");
}

// ----- target 1: the header parser -----

/// Parses `data` as a whole safetensors file. An accepted header must
/// describe a data section tiled exactly by its tensors, and must come back
/// unchanged after [`soup_core::serialize_header`] and a second parse.
pub fn header_parser(data: &[u8]) -> Outcome {
    let path = Path::new("fuzz.safetensors");
    let Ok(parsed) = soup_core::parse_header(path, data) else {
        return Outcome::Refused;
    };
    let data_len = data.len() - parsed.data_start;
    let mut next = 0usize;
    let mut names = std::collections::HashSet::new();
    for t in &parsed.tensors {
        assert!(names.insert(t.name.as_str()), "tensor `{}` twice", t.name);
        assert_eq!(
            t.start, next,
            "tensor `{}` does not follow its predecessor",
            t.name
        );
        let count = soup_core::element_count(&t.shape).expect("accepted shape overflows");
        let len = soup_core::byte_len(t.dtype, count).expect("accepted shape has no byte size");
        assert_eq!(
            t.end - t.start,
            len,
            "tensor `{}` has the wrong size",
            t.name
        );
        next = t.end;
    }
    assert_eq!(next, data_len, "tensors do not tile the data section");

    let mut again = soup_core::serialize_header(&parsed.tensors, &parsed.metadata);
    again.extend_from_slice(&data[parsed.data_start..]);
    let reparsed = soup_core::parse_header(path, &again)
        .unwrap_or_else(|e| panic!("serialized header of an accepted file is refused: {e}"));
    assert_eq!(
        reparsed.tensors, parsed.tensors,
        "tensors changed on a round trip"
    );
    assert_eq!(
        reparsed.metadata, parsed.metadata,
        "metadata changed on a round trip"
    );
    Outcome::Accepted
}

// ----- target 2: opening a checkpoint -----

/// Name of the `k`-th shard file (from 1) of a multi-part input to
/// [`open_checkpoint`]; the seeds' indexes name their shards this way.
pub fn shard_name(k: usize) -> String {
    format!("shard-{k}.safetensors")
}

/// Opens `data` as a checkpoint: one safetensors file, or, when it holds
/// several parts, a sharded folder whose index is the first part and whose
/// shards are the others (named by [`shard_name`]). An accepted checkpoint
/// must be readable through every tensor, inspectable and hashable.
pub fn open_checkpoint(data: &[u8]) -> Outcome {
    in_scratch(|dir| {
        let parts = split_parts(data);
        let path = if parts.len() == 1 {
            let file = dir.join("model.safetensors");
            write(&file, data);
            file
        } else {
            write(&dir.join("model.safetensors.index.json"), parts[0]);
            for (k, part) in parts.iter().enumerate().skip(1) {
                write(&dir.join(shard_name(k)), part);
            }
            dir.to_path_buf()
        };
        let Ok(checkpoint) = Checkpoint::open(&path) else {
            return Outcome::Refused;
        };
        exercise(&checkpoint);
        Outcome::Accepted
    })
}

/// Reads every byte of an accepted checkpoint through the public API.
fn exercise(checkpoint: &Checkpoint) {
    let mut total = 0u64;
    for t in checkpoint.tensors() {
        let count = soup_core::element_count(&t.shape).expect("accepted shape overflows");
        let len = soup_core::byte_len(t.dtype, count).expect("accepted shape has no byte size");
        assert_eq!(
            checkpoint.data(t).len(),
            len,
            "tensor `{}` has the wrong size",
            t.name
        );
        assert_eq!(
            checkpoint.get(&t.name),
            Some(t),
            "lookup of `{}` fails",
            t.name
        );
        total += len as u64;
    }
    assert_eq!(total, checkpoint.data_bytes());
    let control = control();
    let report = inspect(checkpoint, true, &control)
        .unwrap_or_else(|e| panic!("inspect fails on an accepted checkpoint: {e}"));
    assert_eq!(report.tensors.len(), checkpoint.tensors().len());
    hash_checkpoint(checkpoint, &control)
        .unwrap_or_else(|e| panic!("hash fails on an accepted checkpoint: {e}"));
}

// ----- target 3: check-mask and merge of two files -----

/// Treats `data` as two safetensors files (one, merged with itself, when
/// there is no separator), compares their masks and merges them the way
/// `soup merge` does: refusing different masks, or under the union policy
/// when check-mask found them different. An accepted merge must write a
/// checkpoint with the first input's tensors, zero wherever every input is
/// zero, and equal to the input wherever the inputs are equal and finite.
pub fn mask_and_merge(data: &[u8]) -> Outcome {
    in_scratch(|dir| {
        let parts = split_parts(data);
        let a_bytes = parts[0];
        let b_bytes = parts.get(1).copied().unwrap_or(a_bytes);
        let (a_path, b_path) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
        write(&a_path, a_bytes);
        write(&b_path, b_bytes);
        let (Ok(a), Ok(b)) = (Checkpoint::open(&a_path), Checkpoint::open(&b_path)) else {
            return Outcome::Refused;
        };
        let control = control();
        let inputs = [a, b];
        let Ok(masks) = check_masks(&inputs, None, &Selection::default(), &control) else {
            return Outcome::Refused;
        };
        let options = MergeOptions {
            mask_policy: if masks.identical {
                MaskPolicy::Refuse
            } else {
                MaskPolicy::Union
            },
            int_policy: IntPolicy::First,
            ..MergeOptions::default()
        };
        let out = dir.join("out.safetensors");
        if let Err(e) = merge(&inputs, &out, &options, &control) {
            // check-mask accepted the pair, so only a float tensor that
            // check-mask skipped could stop the merge: none exists.
            panic!("merge refuses inputs that check-mask accepted: {e}");
        }
        let merged = Checkpoint::open(&out)
            .unwrap_or_else(|e| panic!("merge wrote a file it cannot open: {e}"));
        check_merged(&inputs, &merged);
        Outcome::Accepted
    })
}

fn check_merged(inputs: &[Checkpoint; 2], merged: &Checkpoint) {
    let [a, b] = inputs;
    let names = |c: &Checkpoint| -> BTreeMap<String, (String, Vec<usize>)> {
        c.tensors()
            .iter()
            .map(|t| (t.name.clone(), (format!("{:?}", t.dtype), t.shape.clone())))
            .collect()
    };
    assert_eq!(names(merged), names(a), "merge changed the tensor list");
    for t in a.tensors() {
        let Some(kind) = Float::of(&format!("{:?}", t.dtype)) else {
            continue;
        };
        let u = b.get(&t.name).expect("aligned");
        let m = merged.get(&t.name).expect("listed");
        let (xs, ys, ms) = (
            kind.decode(a.data(t)),
            kind.decode(b.data(u)),
            kind.decode(merged.data(m)),
        );
        for (i, ((x, y), z)) in xs.iter().zip(&ys).zip(&ms).enumerate() {
            if *x == 0.0 && *y == 0.0 {
                assert_eq!(
                    *z, 0.0,
                    "tensor `{}` element {i}: zero in both inputs but {z} in the soup",
                    t.name
                );
            }
            if x == y && x.is_finite() {
                assert_eq!(
                    z, x,
                    "tensor `{}` element {i}: {x} in both inputs but {z} in the soup",
                    t.name
                );
            }
        }
    }
}

/// The float types, decoded independently of soup-core's own kernels.
#[derive(Clone, Copy)]
enum Float {
    F64,
    F32,
    F16,
    Bf16,
}

impl Float {
    fn of(dtype: &str) -> Option<Float> {
        Some(match dtype {
            "F64" => Float::F64,
            "F32" => Float::F32,
            "F16" => Float::F16,
            "BF16" => Float::Bf16,
            _ => return None,
        })
    }

    fn decode(self, bytes: &[u8]) -> Vec<f64> {
        match self {
            Float::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Float::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Float::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            Float::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
        }
    }
}

/// A fuzz target: one input in, what became of it out.
pub type Target = fn(&[u8]) -> Outcome;

/// The fuzz targets by name, as `scripts/fuzz.sh` and the corpus replay
/// test know them (the corpus of target `name` is `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("header", header_parser),
    ("open", open_checkpoint),
    ("merge", mask_and_merge),
];
