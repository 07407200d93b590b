"""The exceptions of sparse_soups.

Every error of the compiled core is an instance of :class:`SoupError` (or
one of its subclasses) whose message is the one line the ``soup`` binary
prints after ``soup: error:``. A Ctrl-C during a long operation raises
Python's own :class:`KeyboardInterrupt`, and nothing is written.
"""

from __future__ import annotations

__all__ = [
    "SoupError",
    "BadCheckpoint",
    "IncompatibleCheckpoints",
    "MaskMismatch",
    "OutputExists",
    "InvalidArgument",
    "SoupIOError",
    "EvaluatorError",
]


class SoupError(Exception):
    """Base class of every error raised by sparse_soups."""


class BadCheckpoint(SoupError):
    """A file is not a valid safetensors checkpoint, or one of its tensors
    is unusable for the operation (the message names the file and tensor)."""


class IncompatibleCheckpoints(SoupError):
    """Inputs that cannot be combined: different tensor names, shapes or
    dtypes, or integer tensors that differ."""


class MaskMismatch(IncompatibleCheckpoints):
    """A merge under ``mask_policy="refuse"`` found inputs whose sparsity
    masks differ. Use :func:`sparse_soups.check_mask` to see where, or merge
    with ``mask_policy="union"`` or ``"intersect"``."""


class OutputExists(SoupError, FileExistsError):
    """The output path exists and ``force`` was not set."""


class InvalidArgument(SoupError, ValueError):
    """An argument that makes no sense (weights, sparsity, patterns,
    policies, an output that would overwrite an input)."""


class SoupIOError(SoupError, OSError):
    """An operating-system error while reading or writing a file."""


class EvaluatorError(SoupError):
    """A greedy soup's evaluator failed or returned no usable score."""
