"""The in-memory API: soup-core's merge, prune, mask fingerprints and
safetensors writer over state dicts of tensors or numpy arrays (or
modules, whose ``state_dict()`` is taken).

These functions bind soup-core's in-memory functions (the merge plan over
tensors held in memory, ``prune_tensors``, ``write_tensors``), which run
the code of the file API, so their results are bit for bit those of
:func:`sparse_soups.merge` and :func:`sparse_soups.prune` on the same
tensors saved as safetensors files. Python reads and writes no
safetensors bytes itself. Where data is copied:

- Each tensor's bytes are handed to the extension once (a copy). A
  non-contiguous tensor is made contiguous first, and a tensor on another
  device (a GPU) is copied to the CPU first: both are extra copies.
- The result comes back as new arrays, returned as torch tensors if the
  first input (the base, when given) held torch tensors and as numpy
  arrays otherwise. BF16 results in numpy form are ``uint16`` bit patterns
  (numpy has no bfloat16). Each result tensor is moved to the device of
  the first input's tensor of that name (one more copy for a GPU), so GPU
  state dicts give GPU results.

Errors name the inputs as the caller knows them ("state dict 1", "base",
or the candidate of a soup).

Tensors are taken in the dict's order, which is the storage order that
pruning's tie-break follows (see :func:`sparse_soups.prune`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np

from . import _core
from ._types import PruneReport
from .errors import SoupError

__all__ = ["merge_state_dicts", "prune_state_dict", "mask_fingerprints", "write_tensors"]

StateDict = Mapping[str, Any]
MaskPolicyName = Literal["refuse", "union", "intersect", "base", "none"]
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}

_NUMPY_TO_TAG = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64",
    np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}
_TAG_TO_NUMPY = {tag: dt for dt, tag in _NUMPY_TO_TAG.items()}
_TAG_TO_NUMPY["BF16"] = np.dtype("uint16")


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def _as_array(name: str, value: Any) -> tuple[str, np.ndarray]:
    """The safetensors dtype tag and a contiguous little-endian numpy view
    of ``value`` (a copy only where noted in the module documentation)."""
    if _is_torch(value):
        import torch

        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            return "BF16", t.view(torch.int16).numpy().view(np.uint16)
        value = t.numpy()
    array = np.asarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        # (np.ascontiguousarray would also turn a 0-d array into 1-d.)
        array = array.copy(order="C")
    tag = _NUMPY_TO_TAG.get(array.dtype.newbyteorder("="))
    if tag is None:
        raise TypeError(f"tensor `{name}`: dtype {array.dtype} has no safetensors equivalent")
    return tag, array


def _tensors(state_dict: StateDict, label: str) -> list[tuple[str, str, list[int], bytes]]:
    """``state_dict`` as soup-core's in-memory tensors, in dict order:
    ``(name, dtype tag, shape, little-endian bytes)``; errors name it
    ``label``."""
    out = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"{label}: keys must be strings, got {name!r}")
        try:
            tag, array = _as_array(name, value)
        except TypeError as e:
            raise TypeError(f"{label}: {e}") from None
        out.append((name, tag, list(array.shape), array.tobytes()))
    return out


def _array(tag: str, shape: Sequence[int], data: bytes | bytearray, as_torch: bool) -> Any:
    """A new array (a torch tensor with ``as_torch``) over ``data``."""
    array = np.frombuffer(data, dtype=_TAG_TO_NUMPY[tag]).reshape(shape)
    if not as_torch:
        return array
    import torch

    t = torch.from_numpy(array)
    return t.view(torch.bfloat16) if tag == "BF16" else t


def write_tensors(
    path: str | os.PathLike[str],
    state_dict: StateDict,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a state dict as one safetensors file with soup-core (tensors in
    name order, atomically, ``metadata`` in the header)."""
    label = "the state dict"
    state_dict = as_state_dict(state_dict, label)
    with _in_memory_hints():
        _core.write_tensors(os.fspath(path), _tensors(state_dict, label), dict(metadata or {}))


def _ordered(result: dict[str, Any], like: StateDict) -> dict[str, Any]:
    """``result`` in the key order of ``like``, each torch tensor on the
    device of ``like``'s tensor of the same name."""
    out = {}
    for name, value in like.items():
        r = result[name]
        device = getattr(value, "device", None) if _is_torch(value) else None
        if device is not None and device.type != "cpu" and _is_torch(r):
            r = r.to(device)
        out[name] = r
    return out


def as_state_dict(item: Any, label: str) -> StateDict:
    """``item`` itself if it is a mapping, the ``state_dict()`` of a module,
    and a TypeError naming ``label`` for anything else."""
    if isinstance(item, Mapping):
        return item
    if isinstance(item, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{label} is a path, not a state dict: for files use sparse_soups.merge() "
            "(or prune(), check_mask())"
        )
    state_dict = getattr(item, "state_dict", None)
    if callable(state_dict):
        return state_dict()  # type: ignore[no-any-return]
    raise TypeError(
        f"{label} is a {type(item).__name__}, not a state dict "
        "(a mapping of names to tensors or arrays) or a module"
    )


class _in_memory_hints:
    """Turns the hint of a mask mismatch, which names the file API's
    ``check_mask()``, into the in-memory API's ``mask_fingerprints()``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        if isinstance(error, SoupError):
            message = str(error).replace("see check_mask()", "see mask_fingerprints()")
            raise type(error)(message) from None


def merge_named(
    state_dicts: Sequence[Any],
    names: Sequence[str],
    weights: Sequence[float] | None = None,
    mask_policy: MaskPolicyName | None = None,
    dtype: str | None = None,
    *,
    int_policy: Literal["equal", "first"] = "equal",
    base: Any = None,
    method: str | None = None,
    scale: float | None = None,
    density: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """:func:`merge_state_dicts` whose errors call input ``i``
    ``names[i]``."""
    if not state_dicts:
        raise ValueError("merge_state_dicts needs at least one state dict")
    dicts = [as_state_dict(sd, name) for sd, name in zip(state_dicts, names, strict=True)]
    base_dict = None if base is None else as_state_dict(base, "base")
    first = dicts[0] if base_dict is None else base_dict
    as_torch = any(_is_torch(v) for v in first.values())
    with _in_memory_hints():
        tensors, _report = _core.merge_tensors(
            [_tensors(sd, name) for sd, name in zip(dicts, names, strict=True)],
            list(names),
            None if base_dict is None else _tensors(base_dict, "base"),
            method,
            None if weights is None else [float(w) for w in weights],
            None if scale is None else float(scale),
            None if density is None else float(density),
            None if seed is None else int(seed),
            mask_policy,
            int_policy,
            dtype,
            None,
        )
    result = {name: _array(tag, shape, data, as_torch) for name, tag, shape, data in tensors}
    return _ordered(result, first)


def merge_state_dicts(
    state_dicts: Sequence[StateDict | Any],
    weights: Sequence[float] | None = None,
    mask_policy: MaskPolicyName | None = None,
    dtype: str | None = None,
    *,
    int_policy: Literal["equal", "first"] = "equal",
    base: StateDict | Any = None,
    method: str | None = None,
    scale: float | None = None,
    density: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Merge state dicts with soup-core's merge, in memory: the plan,
    pre-pass and kernels of :func:`sparse_soups.merge` (see there for
    weights, methods and policies), so the result is bit for bit the file
    merge's. Without ``base`` the state dicts are averaged; with ``base``
    they are fine-tunes of it merged with ``method`` (task-arithmetic,
    ties, dare-linear, dare-ties). Returns a new state dict in the first
    one's key order (the base's when given), its tensors on that one's
    devices. A module may stand for its ``state_dict()``. Errors call the
    inputs "state dict 0", "state dict 1", ... in the order given, and the
    base "base"."""
    return merge_named(
        state_dicts,
        [f"state dict {i}" for i in range(len(state_dicts))],
        weights,
        mask_policy,
        dtype,
        int_policy=int_policy,
        base=base,
        method=method,
        scale=scale,
        density=density,
        seed=seed,
    )


def prune_with_report(
    state_dict: StateDict,
    sparsity: float | None = None,
    scope: Literal["global", "layer"] = "global",
    of_remaining: bool = False,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    label: str = "the state dict",
    nm: tuple[int, int] | None = None,
    nm_transposed: Sequence[str] | None = None,
    nm_skip_ragged: bool = False,
) -> tuple[dict[str, Any], PruneReport]:
    """:func:`prune_state_dict`, also returning soup-core's report; errors
    call the input ``label``."""
    state_dict = as_state_dict(state_dict, label)
    as_torch = any(_is_torch(v) for v in state_dict.values())
    tensors = _tensors(state_dict, label)
    floats = [t for t in tensors if t[1] in _FLOAT_TAGS]
    with _in_memory_hints():
        pruned, report = _core.prune_tensors(
            floats,
            None if sparsity is None else float(sparsity),
            scope,
            of_remaining,
            list(include or []),
            list(exclude or []),
            None if nm is None else (int(nm[0]), int(nm[1])),
            list(nm_transposed or []),
            nm_skip_ragged,
        )
    new = {t[0]: data for t, data in zip(floats, pruned, strict=True) if data is not None}
    result = {
        name: _array(tag, shape, new.get(name) or bytearray(data), as_torch)
        for name, tag, shape, data in tensors
    }
    return _ordered(result, state_dict), cast(PruneReport, json.loads(report))


def prune_state_dict(
    state_dict: StateDict,
    sparsity: float | None = None,
    scope: Literal["global", "layer"] = "global",
    of_remaining: bool = False,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    nm: tuple[int, int] | None = None,
    nm_transposed: Sequence[str] | None = None,
    nm_skip_ragged: bool = False,
) -> dict[str, Any]:
    """Prune a state dict by magnitude with soup-core's in-memory prune (the
    selection of :func:`sparse_soups.prune` on a file holding the tensors
    in dict order, ``nm=(2, 4)`` included); returns a new state dict, its
    tensors on the input's devices."""
    pruned, _ = prune_with_report(
        state_dict,
        sparsity,
        scope,
        of_remaining,
        include=include,
        exclude=exclude,
        nm=nm,
        nm_transposed=nm_transposed,
        nm_skip_ragged=nm_skip_ragged,
    )
    return pruned


def mask_fingerprints(
    state_dict: StateDict,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> dict[str, str]:
    """The mask fingerprint of every float tensor (selected by the
    ``include``/``exclude`` regular expressions), as
    :func:`sparse_soups.check_mask` reports it: two tensors of one name
    share a mask (``w != 0``) exactly when their fingerprints are equal."""
    label = "the state dict"
    state_dict = as_state_dict(state_dict, label)
    report = json.loads(
        _core.mask_fingerprints(
            _tensors(state_dict, label), label, list(include or []), list(exclude or [])
        )
    )
    return {t["name"]: t["reference_fingerprint"] for t in report["tensors"]}


def prunable(
    entries: Sequence[tuple[str, int, bool]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[bool]:
    """Whether soup-core prunes each ``(name, rank, is_float)`` entry: its
    default rule (float tensors of rank >= 2 named ``*weight``), or the
    ``include`` regular expressions, less the ``exclude`` ones."""
    return _core.prunable(
        [(str(n), int(r), bool(f)) for n, r, f in entries],
        list(include or []),
        list(exclude or []),
    )
