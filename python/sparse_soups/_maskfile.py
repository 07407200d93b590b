"""Mask files and LoRA folding: ``soup mask extract``, ``soup mask
vote|union|intersect`` and ``soup fold-lora`` on files, through soup-core.

A mask file holds, per masked tensor, its mask packed into bits (U8, one bit
per weight, row-major, least significant bit first), read in numpy with
``np.unpackbits(bits, count=n, bitorder="little").reshape(shape)`` (the
shape and dtype are in the metadata under ``mask.tensors``).
:func:`sparse_soups.check_mask` takes one as ``reference``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Literal, TypedDict, cast

from . import _core
from ._files import Digest, PathLike, _path, _paths

__all__ = [
    "MaskFileTensor",
    "MaskFileReport",
    "CombineReport",
    "FoldedTensor",
    "FoldReport",
    "mask_extract",
    "mask_combine",
    "fold_lora",
]


class MaskFileTensor(TypedDict):
    """One mask of a written mask file."""

    name: str
    shape: list[int]
    numel: int
    zeros: int
    digest: str
    """``sha256:<hex>`` of the packed bits (check-mask's fingerprint)."""


class MaskFileReport(TypedDict):
    """What :func:`mask_extract` wrote."""

    inputs: list[str]
    outputs: list[str]
    tensors: list[MaskFileTensor]
    packed_bytes: int
    input_bytes: int


class CombineReport(TypedDict):
    """What :func:`mask_combine` wrote."""

    inputs: list[str]
    outputs: list[str]
    combination: object
    min_votes: int
    """Inputs that had to keep a weight for the result to keep it."""
    tensors: list[MaskFileTensor]
    packed_bytes: int


class FoldedTensor(TypedDict):
    """One folded weight of a :class:`FoldReport`."""

    name: str
    shape: list[int]
    rank: int
    alpha: float
    scale: float
    update_norm: float
    removed_norm: float
    """L2 norm of the update where the base is zero."""
    removed_share: float
    base_zeros: int
    zeros: int


class FoldReport(TypedDict):
    """What :func:`fold_lora` did."""

    base: str
    adapter: str
    outputs: list[str]
    keep_mask: bool
    tensors: list[FoldedTensor]
    update_norm: float
    removed_norm: float
    removed_share: float


def mask_extract(
    path: PathLike,
    out: PathLike,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> MaskFileReport:
    """Write the masks (``w != 0``) of the float tensors of ``path`` as a
    mask file at ``out`` (``soup mask extract``): about 1/32 of an F32
    model."""
    report = _core.mask_extract(
        _path(path, "mask_extract"),
        os.fspath(out),
        list(include or []),
        list(exclude or []),
        force,
        digest,
        budget,
    )
    return cast(MaskFileReport, json.loads(report))


def mask_combine(
    paths: Sequence[PathLike],
    out: PathLike,
    how: Literal["vote", "union", "intersect"] = "vote",
    min_votes: int | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> CombineReport:
    """Combine the masks of models or mask files, in any mix, into a mask
    file (``soup mask vote|union|intersect``): a weight is kept where at
    least ``min_votes`` inputs keep it (a strict majority by default for
    ``"vote"``, one for ``"union"``, all for ``"intersect"``)."""
    report = _core.mask_combine(
        _paths(paths, "mask_combine"),
        os.fspath(out),
        how,
        min_votes,
        list(include or []),
        list(exclude or []),
        force,
        digest,
        budget,
    )
    return cast(CombineReport, json.loads(report))


def fold_lora(
    base: PathLike,
    adapter: PathLike,
    out: PathLike,
    *,
    keep_mask: bool = True,
    shard_size: int | None = None,
    force: bool = False,
    digest: Digest = "blake3",
    budget: int | None = None,
) -> FoldReport:
    """Fold a PEFT LoRA adapter folder (``adapter_config.json`` and
    ``adapter_model.safetensors``) into ``base`` as ``W + s B A``
    (``soup fold-lora``). With ``keep_mask`` (the default) the update is
    applied only where the base is non-zero, so a pruned base keeps its
    exact mask; ``report["removed_share"]`` is the share of the update's L2
    norm that the mask removed."""
    report = _core.fold_lora(
        _path(base, "fold_lora", "base"),
        os.fspath(adapter),
        os.fspath(out),
        keep_mask,
        shard_size,
        force,
        digest,
        budget,
    )
    return cast(FoldReport, json.loads(report))
