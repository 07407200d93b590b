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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast, overload

from . import _core
from ._scores import score_of
from ._types import (
    DiffReport,
    DistanceReport,
    GreedyReport,
    HashReport,
    Inspection,
    MaskReport,
    MergeReport,
    NmCheckReport,
    PruneReport,
)

__all__ = ["merge", "greedy_merge", "check_mask", "prune", "inspect", "diff", "hash", "distance"]

PathLike = str | os.PathLike[str]
Digest = Literal["blake3", "sha256"]


# What to call instead when a file function is given tensors in memory.
_IN_MEMORY = {
    "merge": "sparse_soups.merge_state_dicts()",
    "greedy_merge": "sparse_soups.torch.greedy_soup()",
    "check_mask": "sparse_soups.mask_fingerprints()",
    "prune": "sparse_soups.prune_state_dict() (or sparse_soups.torch.prune_model() for a model)",
}


def _in_memory(value: Any) -> str | None:
    """What ``value`` is if it is a state dict, a module or a tensor rather
    than a path."""
    if isinstance(value, Mapping):
        return "a state dict"
    if callable(getattr(value, "state_dict", None)):
        return "a module"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return "a tensor"
    return None


def _path(path: PathLike, function: str, what: str = "path") -> str:
    """``os.fspath(path)``, or a TypeError that points a state dict, a
    module or a tensor to the in-memory function."""
    kind = _in_memory(path)
    if kind is not None:
        instead = _IN_MEMORY.get(function)
        hint = (
            f"for state dicts in memory use {instead}"
            if instead
            else "save it with safetensors first"
        )
        raise TypeError(
            f"{function}() takes paths of safetensors files, but its {what} is {kind}; {hint}"
        )
    return os.fspath(path)


def _paths(paths: Iterable[PathLike], function: str) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("expected a sequence of paths, got a single path")
    if _in_memory(paths) is not None:
        _path(cast(PathLike, paths), function, "paths argument")
    return [_path(p, function, f"item {i}") for i, p in enumerate(paths)]


def merge(
    paths: Sequence[PathLike],
    out: PathLike,
    weights: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect", "base", "none"] | None = None,
    dtype: str | None = None,
    *,
    base: PathLike | None = None,
    method: str | None = None,
    scale: float | None = None,
    density: float | None = None,
    seed: int | None = None,
    int_policy: Literal["equal", "first"] = "equal",
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> MergeReport:
    """Merge checkpoints into ``out`` (``soup merge``).

    Without ``base``, floating-point tensors are averaged (uniformly, or
    with ``weights``, normalised to sum 1) in f32 (f64 for F64) and written
    in their own dtype or ``dtype`` ("F32", "F16", "BF16", "F64"). Masks
    are checked on the way: under ``mask_policy="refuse"`` (the default)
    differing masks raise :class:`~sparse_soups.errors.MaskMismatch`;
    ``"union"`` takes the plain mean, ``"intersect"`` keeps a zero wherever
    any input has one.

    With ``base``, ``paths`` are fine-tunes of it merged by ``method``:
    ``"task-arithmetic"``, ``"ties"``, ``"dare-linear"`` or
    ``"dare-ties"`` (``soup merge --base``), with ``weights`` per
    fine-tune (as given), ``scale`` (the factor of the combined task
    vector), ``density`` (TIES's trim, DARE's drop) and ``seed`` (DARE's
    random drop). The default ``mask_policy="base"`` keeps exactly the
    base's zeros; ``"refuse"`` refuses fine-tunes whose masks differ from
    the base's, ``"none"`` gives the dense result.

    Integer and bool tensors must be equal unless ``int_policy="first"``.
    ``shard_size`` (bytes) writes a sharded folder; an existing ``out`` is
    replaced only with ``force=True``. ``digest`` is the algorithm of the
    input digests recorded as provenance.
    """
    report = _core.merge_plan(
        _paths(paths, "merge"),
        os.fspath(out),
        None if base is None else _path(base, "merge", "base"),
        method,
        None if weights is None else [float(w) for w in weights],
        None if scale is None else float(scale),
        None if density is None else float(density),
        None if seed is None else int(seed),
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
    propagates unchanged; nothing is written. So does a score that is not
    a finite number (``None``, a string, NaN or an infinity, also among
    ``scores``): :class:`~sparse_soups.errors.EvaluatorError` names the
    file being scored (:class:`~sparse_soups.errors.InvalidArgument` for
    ``scores``).
    """

    def scored(path: str) -> float:
        return score_of(evaluate(path), os.fspath(path))

    report = _core.greedy_merge(
        _paths(paths, "greedy_merge"),
        os.fspath(out),
        scored,
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


@overload
def check_mask(
    paths: Sequence[PathLike],
    reference: PathLike | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    nm: None = None,
    kernel: None = None,
    nm_transposed: Sequence[str] | None = None,
    budget: int | None = None,
) -> MaskReport: ...


@overload
def check_mask(
    paths: Sequence[PathLike],
    reference: None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    nm: tuple[int, int],
    kernel: Literal["cutlass", "cusparselt"] | None = None,
    nm_transposed: Sequence[str] | None = None,
    budget: int | None = None,
) -> NmCheckReport: ...


def check_mask(
    paths: Sequence[PathLike],
    reference: PathLike | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    nm: tuple[int, int] | None = None,
    kernel: Literal["cutlass", "cusparselt"] | None = None,
    nm_transposed: Sequence[str] | None = None,
    budget: int | None = None,
) -> MaskReport | NmCheckReport:
    """Compare the sparsity masks (``w != 0``) of checkpoints with those of
    ``reference``, or of the first path (``soup check-mask``).

    ``include``/``exclude`` are regular expressions on tensor names. A
    difference is a finding, not an error: look at ``report["identical"]``.

    With ``nm=(n, m)`` (``soup check-mask --nm n:m``) each checkpoint is
    instead checked, one or more, for the N:M pattern: in every group of
    ``m`` consecutive weights along the input dimension at most ``n`` are
    non-zero. The checked tensors are the prunable ones (float tensors of
    rank >= 2 named ``*weight``; ``include`` replaces that rule, ``exclude``
    removes names); ``nm_transposed`` regexes name ``[in, out]`` tensors
    (GPT-2's ``Conv1D``), grouped along their first dimension. ``kernel``
    ("cutlass" or "cusparselt") also applies the shape and dtype rules of
    PyTorch's semi-structured kernel. Look at ``report["passed"]`` and, per
    tensor, ``"violating"``, ``"first_violation_at"``, ``"shape_problem"``
    and ``"kernel"``.
    """
    if nm is None:
        if kernel is not None or nm_transposed:
            raise ValueError("check_mask(): kernel and nm_transposed need nm=(n, m)")
        report = _core.check_mask(
            _paths(paths, "check_mask"),
            None if reference is None else _path(reference, "check_mask", "reference"),
            list(include or []),
            list(exclude or []),
            budget,
        )
        return cast(MaskReport, json.loads(report))
    if reference is not None:
        raise ValueError("check_mask(): nm=(n, m) checks each path; it takes no reference")
    if (
        not isinstance(nm, tuple)
        or len(nm) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in nm)
    ):
        raise TypeError(f"check_mask(): nm must be a pair of integers such as (2, 4), got {nm!r}")
    report = _core.check_nm(
        _paths(paths, "check_mask"),
        nm[0],
        nm[1],
        list(include or []),
        list(exclude or []),
        list(nm_transposed or []),
        kernel,
        budget,
    )
    return cast(NmCheckReport, json.loads(report))


def prune(
    path: PathLike,
    out: PathLike | None,
    sparsity: float | None = None,
    scope: Literal["global", "layer"] = "global",
    of_remaining: bool = False,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
    nm: tuple[int, int] | None = None,
    nm_transposed: Sequence[str] | None = None,
    nm_skip_ragged: bool = False,
    keep_zeros: bool = False,
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

    ``nm=(2, 4)`` prunes to N:M instead of a fraction (``soup prune --nm
    2:4``): in every group of M consecutive weights along the input
    dimension the N largest stay (``[out, in]``: along a row; convolutions:
    along the input channels at each output channel and kernel position;
    tensors matching a regex of ``nm_transposed``, stored ``[in, out]``
    like GPT-2's ``Conv1D``: along the first dimension). A tensor whose
    input dimension is not a multiple of M is refused, or left unchanged
    with ``nm_skip_ragged=True``. Zeros are never revived (``keep_zeros``
    is recorded only).
    """
    report = _core.prune(
        _path(path, "prune"),
        None if out is None else os.fspath(out),
        None if sparsity is None else float(sparsity),
        scope,
        of_remaining,
        list(include or []),
        list(exclude or []),
        shard_size,
        force,
        digest,
        budget,
        None if nm is None else (int(nm[0]), int(nm[1])),
        list(nm_transposed or []),
        nm_skip_ragged,
        keep_zeros,
    )
    return cast(PruneReport, json.loads(report))


def inspect(path: PathLike, *, headers_only: bool = False, budget: int | None = None) -> Inspection:
    """Tensors, dtypes, shapes, sparsity and metadata of a checkpoint
    (``soup inspect``); ``headers_only=True`` skips counting zeros."""
    return cast(Inspection, json.loads(_core.inspect(_path(path, "inspect"), not headers_only, budget)))


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
    report = _core.diff(
        _path(a, "diff", "first checkpoint"),
        _path(b, "diff", "second checkpoint"),
        float(atol),
        float(rtol),
        budget,
    )
    return cast(DiffReport, json.loads(report))


def hash(  # noqa: A001 (mirrors `soup hash`)
    path: PathLike, *, digest: Digest = "blake3", budget: int | None = None
) -> HashReport:
    """The content digest of a checkpoint and of each tensor (``soup
    hash``), ``blake3:<hex>`` or ``sha256:<hex>``: a digest of names,
    dtypes, shapes and data, unchanged by metadata, tensor order or
    sharding. It is what outputs record as provenance (``digest`` there is
    the algorithm of the recorded input digests)."""
    return cast(HashReport, json.loads(_core.hash(_path(path, "hash"), digest, budget)))


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
    report = _core.distance(_paths(paths, "distance"), list(include or []), list(exclude or []), budget)
    return cast(DistanceReport, json.loads(report))
