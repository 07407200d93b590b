"""The file API: soup-core's operations on safetensors files and sharded
folders, with the arguments and results of the ``soup`` command line.

Each function returns the typed dictionary that ``soup <command> --json``
prints for the same inputs. The work runs in Rust with the GIL released,
streamed in windows of ``budget`` bytes (default 64 MiB) over all cores,
and stops at the next window on Ctrl-C (``KeyboardInterrupt``) leaving no
output behind. Outputs appear atomically and record their provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, cast

from . import _core
from ._types import (
    DiffReport,
    DistanceReport,
    GreedyReport,
    HashReport,
    Inspection,
    MaskReport,
    MergeReport,
    PruneReport,
)

__all__ = ["merge", "greedy_merge", "check_mask", "prune", "inspect", "diff", "hash", "distance"]

PathLike = str | os.PathLike[str]
Digest = Literal["blake3", "sha256"]


def _paths(paths: Iterable[PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("expected a sequence of paths, got a single path")
    return [os.fspath(p) for p in paths]


def merge(
    paths: Sequence[PathLike],
    out: PathLike,
    weights: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    dtype: str | None = None,
    *,
    int_policy: Literal["equal", "first"] = "equal",
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> MergeReport:
    """Average checkpoints into ``out`` (``soup merge``).

    Floating-point tensors are averaged (uniformly, or with ``weights``,
    normalised to sum 1) in f32 (f64 for F64) and written in their own
    dtype or ``dtype`` ("F32", "F16", "BF16", "F64"). Masks are checked on
    the way: under ``mask_policy="refuse"`` differing masks raise
    :class:`~sparse_soups.errors.MaskMismatch`; ``"union"`` takes the plain
    mean, ``"intersect"`` keeps a zero wherever any input has one. Integer
    and bool tensors must be equal unless ``int_policy="first"``.
    ``shard_size`` (bytes) writes a sharded folder; an existing ``out`` is
    replaced only with ``force=True``. ``digest`` is the algorithm of the
    input digests recorded as provenance.
    """
    report = _core.merge(
        _paths(paths),
        os.fspath(out),
        None if weights is None else [float(w) for w in weights],
        mask_policy,
        int_policy,
        dtype,
        shard_size,
        force,
        digest,
        budget,
    )
    return cast(MergeReport, json.loads(report))


def greedy_merge(
    paths: Sequence[PathLike],
    out: PathLike,
    evaluate: Callable[[str], float],
    *,
    strict: bool = False,
    scores: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    int_policy: Literal["equal", "first"] = "equal",
    dtype: str | None = None,
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> GreedyReport:
    """Build a greedy soup into ``out`` (``soup merge --greedy``), scoring
    checkpoints with ``evaluate(path) -> float`` (higher is better) instead
    of an evaluation command.

    Candidates are ranked by their own score (or ``scores``); starting from
    the best, each next one is kept if the uniform soup of the chosen ones
    plus it scores at least as well (strictly better with ``strict=True``).
    Trial soups are written to a temporary folder beside ``out`` and
    removed. An exception raised by ``evaluate`` stops the soup and
    propagates unchanged; nothing is written.
    """
    report = _core.greedy_merge(
        _paths(paths),
        os.fspath(out),
        evaluate,
        strict,
        None if scores is None else [float(s) for s in scores],
        mask_policy,
        int_policy,
        dtype,
        shard_size,
        force,
        digest,
        budget,
    )
    return cast(GreedyReport, json.loads(report))


def check_mask(
    paths: Sequence[PathLike],
    reference: PathLike | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    budget: int | None = None,
) -> MaskReport:
    """Compare the sparsity masks (``w != 0``) of checkpoints with those of
    ``reference``, or of the first path (``soup check-mask``).

    ``include``/``exclude`` are regular expressions on tensor names. A
    difference is a finding, not an error: look at ``report["identical"]``.
    """
    report = _core.check_mask(
        _paths(paths),
        None if reference is None else os.fspath(reference),
        list(include or []),
        list(exclude or []),
        budget,
    )
    return cast(MaskReport, json.loads(report))


def prune(
    path: PathLike,
    out: PathLike | None,
    sparsity: float,
    scope: Literal["global", "layer"] = "global",
    of_remaining: bool = False,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> PruneReport:
    """Prune by magnitude into ``out`` (``soup prune``); with ``out=None``
    only report what would be removed (``--dry-run``).

    By default the weights of convolution and linear layers (float tensors
    of rank >= 2 whose names end in ``weight``) compete in one global
    group; ``scope="layer"`` removes the same fraction from each.
    ``sparsity`` is the fraction of the selected weights that is zero
    afterwards, or with ``of_remaining=True`` the fraction of the non-zero
    ones removed (one phase of iterative magnitude pruning). Ties are
    broken by position, so the result depends on the input alone.
    """
    report = _core.prune(
        os.fspath(path),
        None if out is None else os.fspath(out),
        float(sparsity),
        scope,
        of_remaining,
        list(include or []),
        list(exclude or []),
        shard_size,
        force,
        digest,
        budget,
    )
    return cast(PruneReport, json.loads(report))


def inspect(path: PathLike, *, headers_only: bool = False, budget: int | None = None) -> Inspection:
    """Tensors, dtypes, shapes, sparsity and metadata of a checkpoint
    (``soup inspect``); ``headers_only=True`` skips counting zeros."""
    return cast(Inspection, json.loads(_core.inspect(os.fspath(path), not headers_only, budget)))


def diff(
    a: PathLike,
    b: PathLike,
    atol: float = 0.0,
    rtol: float = 0.0,
    *,
    budget: int | None = None,
) -> DiffReport:
    """Compare two checkpoints tensor by tensor (``soup diff``). Values
    count as equal when ``|a - b| <= atol + rtol * |b|``; a difference is a
    finding (``report["equal"]``), not an error."""
    report = _core.diff(os.fspath(a), os.fspath(b), float(atol), float(rtol), budget)
    return cast(DiffReport, json.loads(report))


def hash(  # noqa: A001 (mirrors `soup hash`)
    path: PathLike, *, digest: Digest = "blake3", budget: int | None = None
) -> HashReport:
    """The content digest of a checkpoint and of each tensor (``soup
    hash``), ``blake3:<hex>`` or ``sha256:<hex>``: a digest of names,
    dtypes, shapes and data, unchanged by metadata, tensor order or
    sharding. It is what outputs record as provenance (``digest`` there is
    the algorithm of the recorded input digests)."""
    return cast(HashReport, json.loads(_core.hash(os.fspath(path), digest, budget)))


def distance(
    paths: Sequence[PathLike],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    budget: int | None = None,
) -> DistanceReport:
    """Soup geometry (``soup distance``): pairwise L2 distances and cosines
    of the checkpoints' float tensors (selected by the ``include`` /
    ``exclude`` regular expressions), and each one's distance to their
    mean. At least two checkpoints."""
    report = _core.distance(_paths(paths), list(include or []), list(exclude or []), budget)
    return cast(DistanceReport, json.loads(report))
