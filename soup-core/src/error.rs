//! The one error type of soup-core. Every variant names the file it is about
//! (and the tensor, where there is one), so a caller can print it on one line.

use std::path::{Path, PathBuf};

/// Result alias used throughout soup-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in soup-core.
///
/// Findings (masks that differ, checkpoints that differ) are not errors: they
/// are reported in the result values. These are the cases where an operation
/// cannot produce a trustworthy result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- files -----
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done, in a few words ("cannot open", "cannot write").
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file or sharded checkpoint.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The header of a safetensors file is invalid: found before any tensor
    /// data is read.
    #[error(
        "{}: {}{problem}",
        path.display(),
        tensor.as_ref().map(|t| format!("tensor `{t}`: ")).unwrap_or_default()
    )]
    Header {
        /// The file.
        path: PathBuf,
        /// The tensor entry at fault, where there is one.
        tensor: Option<String>,
        /// What is wrong.
        problem: HeaderProblem,
    },
    /// A tensor of the file is invalid or unusable for the operation.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The output path exists and replacing it was not asked for.
    #[error("{}: output exists", path.display())]
    OutputExists {
        /// The existing output.
        path: PathBuf,
    },
    /// The output path holds something soup never replaces, even when asked
    /// to: a device, FIFO or socket, a symbolic link (the rename would
    /// replace the link, not what it points to), or a folder that is not
    /// exactly a sharded checkpoint.
    #[error("{}: refusing to replace {what}", path.display())]
    NotReplaceable {
        /// The existing path.
        path: PathBuf,
        /// What is there, in a few words.
        what: String,
    },
    /// An input file was truncated, overwritten or replaced while it was
    /// being read (found before anything was written).
    #[error(
        "{}: the file changed while being read (truncated or overwritten in place?); \
         nothing was written",
        path.display()
    )]
    InputChanged {
        /// The file.
        path: PathBuf,
    },

    // ----- several inputs -----
    /// Inputs that cannot be combined (different names, shapes, dtypes,
    /// integer tensors that differ, masks that differ under the refuse policy).
    #[error("{0}")]
    Mismatch(String),
    /// A merge under the refuse policy met inputs whose masks differ.
    #[error(
        "masks differ: tensor `{tensor}` has {positions} positions where {} differs from {}",
        input.display(),
        reference.display()
    )]
    MasksDiffer {
        /// The first tensor found to differ.
        tensor: String,
        /// Positions where `input`'s mask differs from `reference`'s.
        positions: u64,
        /// The input that differs.
        input: PathBuf,
        /// The first input, whose mask the others are held to.
        reference: PathBuf,
    },
    /// An integer or bool tensor differs between inputs of a merge under
    /// the equal policy (such tensors are never averaged).
    #[error(
        "tensor `{tensor}` ({dtype}) differs between {} and {}: integer and bool tensors \
         are never averaged",
        first.display(),
        other.display()
    )]
    IntegersDiffer {
        /// The tensor.
        tensor: String,
        /// Its dtype name.
        dtype: String,
        /// The first input.
        first: PathBuf,
        /// The input whose tensor differs from the first's.
        other: PathBuf,
    },

    /// A merge result breaks the N:M pattern it was asked to keep (found
    /// before the output is moved into place, so nothing is written).
    #[error(
        "{}: tensor `{tensor}` of the result breaks the {pattern} pattern: {violating} of \
         {groups} groups have more non-zeros than allowed (the first at {first:?}); \
         nothing was written",
        path.display()
    )]
    PatternBroken {
        /// The output that was not written.
        path: PathBuf,
        /// The first tensor found to break the pattern.
        tensor: String,
        /// The pattern (`2:4`).
        pattern: String,
        /// Groups of the tensor that break it.
        violating: u64,
        /// Groups of the tensor.
        groups: u64,
        /// The index, per dimension, of the first element of the first
        /// violating group.
        first: Vec<usize>,
    },

    // ----- the caller's request -----
    /// No tensor of the checkpoint (or of the tensors given, when `path` is
    /// empty) is prunable under the rule and patterns asked for.
    #[error(
        "{}: no tensors selected for pruning (by default: float tensors of rank >= 2 \
         whose names end in `weight`; change with include/exclude patterns)",
        path.display()
    )]
    NothingToPrune {
        /// The checkpoint.
        path: PathBuf,
    },
    /// No float tensor of the checkpoint is selected for the operation.
    #[error(
        "{}: no float tensors selected {purpose} (check the include/exclude patterns)",
        path.display()
    )]
    NothingSelected {
        /// The checkpoint (the first one, for operations on several).
        path: PathBuf,
        /// What they were selected for (`for comparison`).
        purpose: &'static str,
    },
    /// No tensor of the checkpoint is checked against an N:M pattern.
    #[error(
        "{}: no tensors selected for the {pattern} check (by default: float tensors of \
         rank >= 2 whose names end in `weight`; change with include/exclude patterns)",
        path.display()
    )]
    NothingToCheck {
        /// The checkpoint.
        path: PathBuf,
        /// The pattern (`2:4`).
        pattern: String,
    },
    /// A mask policy that does not fit the merge: `base` without a base
    /// model, `union` or `intersect` with one.
    #[error(
        "the mask policy `{policy}` {}: use {valid}",
        if *base { "does not apply with a base model" } else { "needs a base model" }
    )]
    MaskPolicyMismatch {
        /// The policy given.
        policy: crate::MaskPolicy,
        /// Whether the merge has a base model.
        base: bool,
        /// The policies that apply, listed from the enum.
        valid: String,
    },
    /// A pruning fraction outside [0, 1).
    #[error("sparsity must be at least 0 and below 1, got {value}")]
    Sparsity {
        /// The fraction given.
        value: f64,
    },
    /// A rename or metadata entry that is not of the form `A=B`.
    #[error("{kind} `{value}` is not of the form {}", kind.form())]
    NotAPair {
        /// What the text was meant to be.
        kind: PairKind,
        /// The text given.
        value: String,
    },
    /// A cast limited to some tensors, with no type to cast them to.
    #[error("a cast is limited to some tensors, but no type to cast to is given")]
    CastTypeMissing,
    /// A cast to a type that is not a float type.
    #[error("cannot cast to {dtype}: only to a float type (F64, F32, F16, BF16)")]
    CastNotFloat {
        /// The type asked for.
        dtype: String,
    },
    /// A single-file output whose path is a folder.
    #[error("{}: is a folder, and a single-file output cannot replace it", path.display())]
    OutputIsFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A shard size of zero bytes.
    #[error("the shard size must be positive")]
    ShardSizeZero,
    /// A tensor selected for masking that the mask checkpoint lacks.
    #[error(
        "tensor `{tensor}` is in {} but not in the mask {}",
        input.display(),
        mask.display()
    )]
    NotInMask {
        /// The tensor.
        tensor: String,
        /// The checkpoint being masked.
        input: PathBuf,
        /// The mask checkpoint.
        mask: PathBuf,
    },
    /// A name that is not one of a choice's names (a mask policy, a
    /// digest, a scope, ...).
    #[error("`{given}` is not a {what} ({valid})")]
    UnknownName {
        /// What the name was meant to be (`mask policy`).
        what: &'static str,
        /// The name given.
        given: String,
        /// The valid names, listed from the enum (`a, b or c`).
        valid: String,
    },
    /// Arguments that make no sense (weights, sparsity, regexes, paths).
    #[error("{0}")]
    Invalid(String),
    /// An external evaluator (greedy soups) failed or printed no score.
    #[error("evaluator: {0}")]
    Evaluator(String),
    /// The operation was interrupted (Ctrl-C); nothing was written.
    #[error("interrupted")]
    Interrupted,
}

/// What is wrong with a safetensors header ([`Error::Header`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The file ends before the 8-byte header length.
    #[error("file is {len} bytes, too short to be a safetensors file (truncated?)")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// The header length is over the cap.
    #[error(
        "header length {len} exceeds the {limit}-byte limit (not a safetensors file, or hostile)"
    )]
    TooLarge {
        /// The declared length.
        len: u64,
        /// The cap ([`crate::MAX_HEADER_LEN`]).
        limit: u64,
    },
    /// The header length runs past the end of the file.
    #[error("header length {len} runs past the end of the file ({file_len} bytes; truncated?)")]
    PastEnd {
        /// The declared length.
        len: usize,
        /// The file's length.
        file_len: usize,
    },
    /// The header is not UTF-8.
    #[error("header is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// The header is not one JSON object, or has a key twice.
    #[error("header is not a valid JSON object: {0}")]
    NotJson(String),
    /// `__metadata__` is not a map of strings to strings.
    #[error("__metadata__ must map strings to strings: {0}")]
    Metadata(String),
    /// A tensor entry names a dtype safetensors does not know.
    #[error("unknown dtype `{0}`")]
    UnknownDtype(String),
    /// A tensor entry has a field besides dtype, shape and data_offsets.
    #[error("unknown field `{0}` in the tensor entry")]
    UnknownField(String),
    /// A tensor entry that does not have the three fields of their types.
    #[error("invalid tensor entry: {0}")]
    Entry(String),
    /// The element count of the shape overflows.
    #[error("shape {shape:?} overflows")]
    ShapeOverflow {
        /// The shape.
        shape: Vec<usize>,
    },
    /// Sub-byte elements that do not fill whole bytes.
    #[error("shape {shape:?} of {dtype} does not fill whole bytes")]
    PartialBytes {
        /// The shape.
        shape: Vec<usize>,
        /// The dtype's name.
        dtype: String,
    },
    /// `data_offsets` whose end comes before their start.
    #[error("data_offsets [{start}, {end}] end before they start")]
    OffsetsReversed {
        /// Start offset.
        start: usize,
        /// End offset.
        end: usize,
    },
    /// `data_offsets` spanning another length than the shape needs.
    #[error(
        "shape {shape:?} of {dtype} needs {need} bytes but data_offsets [{start}, {end}] span {}",
        end - start
    )]
    WrongLength {
        /// The shape.
        shape: Vec<usize>,
        /// The dtype's name.
        dtype: String,
        /// Bytes the shape needs.
        need: usize,
        /// Start offset.
        start: usize,
        /// End offset.
        end: usize,
    },
    /// Tensor data past the end of the data section.
    #[error(
        "data [{start}, {end}) runs past the end of the data section ({data_len} bytes; truncated?)"
    )]
    DataPastEnd {
        /// Start offset.
        start: usize,
        /// End offset.
        end: usize,
        /// Length of the data section.
        data_len: usize,
    },
    /// Tensor data overlapping another tensor's.
    #[error("data [{start}, {end}) overlaps tensor `{other}`")]
    Overlap {
        /// Start offset.
        start: usize,
        /// End offset.
        end: usize,
        /// The tensor overlapped.
        other: String,
    },
    /// Bytes between two tensors' data that no tensor owns.
    #[error("data starts at {start} but the previous tensor ends at {previous_end}: a hole of {} bytes", start - previous_end)]
    Hole {
        /// Start offset.
        start: usize,
        /// Where the previous tensor ends.
        previous_end: usize,
    },
    /// Bytes after the last tensor's data.
    #[error("{0} bytes after the last tensor's data: trailing garbage or a broken header")]
    TrailingBytes(usize),
}

/// What a `A=B` text given to an edit was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// A rename, `REGEX=REPLACEMENT`.
    Rename,
    /// A metadata entry, `KEY=VALUE`.
    Metadata,
}

impl PairKind {
    /// The form expected, in words.
    pub fn form(self) -> &'static str {
        match self {
            PairKind::Rename => "REGEX=REPLACEMENT",
            PairKind::Metadata => "KEY=VALUE",
        }
    }
}

impl std::fmt::Display for PairKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            PairKind::Rename => "rename",
            PairKind::Metadata => "metadata entry",
        })
    }
}

impl Error {
    /// An I/O error on `path` while doing `action`.
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            action,
            source,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A problem with tensor `tensor` of `path`.
    pub fn tensor(path: impl AsRef<Path>, tensor: &str, reason: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.as_ref().to_path_buf(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    /// A request that cannot be carried out as stated.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid(reason.into())
    }
}
