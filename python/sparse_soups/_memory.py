"""The in-memory API: soup-core's merge, prune and mask fingerprints over
state dicts of tensors or numpy arrays (or modules, whose ``state_dict()``
is taken).

These functions run exactly the code of the file API, so their results are
bit for bit those of :func:`sparse_soups.merge` and
:func:`sparse_soups.prune` on the same tensors saved as safetensors files.
Where data is copied:

- Each input state dict is written once into a temporary safetensors file
  (under ``/dev/shm`` where it exists, so in memory; otherwise the system's
  temporary folder). The bytes are written straight from each tensor's own
  buffer, with no intermediate copy, when the tensor is a contiguous,
  little-endian CPU tensor or numpy array. A non-contiguous tensor is made
  contiguous first, and a tensor on another device (a GPU) is copied to
  the CPU first: both are extra copies.
- The result is read back from the output file into new arrays (one copy),
  returned as torch tensors if the first input held torch tensors and as
  numpy arrays otherwise. BF16 results in numpy form are ``uint16`` bit
  patterns (numpy has no bfloat16). Each result tensor is moved to the
  device of the first input's tensor of that name (one more copy for a
  GPU), so GPU state dicts give GPU results.

Errors name the inputs as the caller knows them ("state dict 1", or the
candidate of a soup), never the temporary files.

Tensors are written in the dict's order, which is the storage order that
pruning's tie-break follows (see :func:`sparse_soups.prune`).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from . import _files
from ._types import PruneReport
from .errors import SoupError

__all__ = ["merge_state_dicts", "prune_state_dict", "mask_fingerprints"]

StateDict = Mapping[str, Any]

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


def _write(path: str, state_dict: StateDict, label: str = "state dict") -> None:
    """Writes ``state_dict`` as a safetensors file, in dict order; errors
    name it ``label``."""
    header: dict[str, Any] = {}
    arrays = []
    offset = 0
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"{label}: keys must be strings, got {name!r}")
        try:
            tag, array = _as_array(name, value)
        except TypeError as e:
            raise TypeError(f"{label}: {e}") from None
        header[name] = {
            "dtype": tag,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in arrays:
            if array.nbytes:
                f.write(memoryview(array.reshape(-1)).cast("B"))


def _read(path: str, as_torch: bool) -> dict[str, Any]:
    """Reads a safetensors file written by soup-core into new arrays."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    out: dict[str, Any] = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = _TAG_TO_NUMPY[entry["dtype"]]
        count = (end - start) // dtype.itemsize
        array = np.fromfile(path, dtype=dtype, count=count, offset=8 + n + start)
        array = array.reshape(entry["shape"])
        if as_torch:
            import torch

            t = torch.from_numpy(array)
            out[name] = t.view(torch.bfloat16) if entry["dtype"] == "BF16" else t
        else:
            out[name] = array
    return out


def _scratch() -> tempfile.TemporaryDirectory[str]:
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="sparse-soups-", dir=where)


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


class _Named:
    """Turns a soup-core error about the temporary files ``names`` (path to
    the caller's name for it) into the same error about those names."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        if isinstance(error, SoupError):
            message = str(error)
            # Longest first: no path is then a prefix of a later one.
            for path in sorted(self.names, key=len, reverse=True):
                message = message.replace(path, self.names[path])
            message = message.replace("see check_mask()", "see mask_fingerprints()")
            raise type(error)(message) from None


def merge_named(
    state_dicts: Sequence[Any],
    names: Sequence[str],
    weights: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    dtype: str | None = None,
    *,
    int_policy: Literal["equal", "first"] = "equal",
) -> dict[str, Any]:
    """:func:`merge_state_dicts` whose errors call input ``i``
    ``names[i]``."""
    if not state_dicts:
        raise ValueError("merge_state_dicts needs at least one state dict")
    dicts = [as_state_dict(sd, name) for sd, name in zip(state_dicts, names, strict=True)]
    as_torch = any(_is_torch(v) for v in dicts[0].values())
    with _scratch() as tmp:
        paths = {}
        for i, (sd, name) in enumerate(zip(dicts, names, strict=True)):
            path = os.path.join(tmp, f"input-{i}.safetensors")
            _write(path, sd, name)
            paths[path] = name
        out = os.path.join(tmp, "merged.safetensors")
        with _Named(paths):
            _files.merge(list(paths), out, weights, mask_policy, dtype, int_policy=int_policy)
        return _ordered(_read(out, as_torch), dicts[0])


def merge_state_dicts(
    state_dicts: Sequence[StateDict | Any],
    weights: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    dtype: str | None = None,
    *,
    int_policy: Literal["equal", "first"] = "equal",
) -> dict[str, Any]:
    """Average state dicts with soup-core's merge (see
    :func:`sparse_soups.merge` for weights and policies); returns a new
    state dict in the first one's key order, its tensors on the first
    one's devices. A module may stand for its ``state_dict()``. Errors call
    the inputs "state dict 0", "state dict 1", ... in the order given."""
    return merge_named(
        state_dicts,
        [f"state dict {i}" for i in range(len(state_dicts))],
        weights,
        mask_policy,
        dtype,
        int_policy=int_policy,
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
    with _scratch() as tmp:
        src = os.path.join(tmp, "input.safetensors")
        out = os.path.join(tmp, "pruned.safetensors")
        _write(src, state_dict, label)
        with _Named({src: label}):
            report = _files.prune(
                src,
                out,
                sparsity,
                scope,
                of_remaining,
                include=include,
                exclude=exclude,
                nm=nm,
                nm_transposed=nm_transposed,
                nm_skip_ragged=nm_skip_ragged,
            )
        return _ordered(_read(out, as_torch), state_dict), report


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
    """Prune a state dict by magnitude with soup-core (the rules of
    :func:`sparse_soups.prune`, ``nm=(2, 4)`` included); returns a new
    state dict, its tensors on the input's devices."""
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
    with _scratch() as tmp:
        src = os.path.join(tmp, "input.safetensors")
        _write(src, state_dict, label)
        with _Named({src: label}):
            report = _files.check_mask([src], reference=src, include=include, exclude=exclude)
    return {t["name"]: t["reference_fingerprint"] for t in report["tensors"]}
