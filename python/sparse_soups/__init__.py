"""sparse_soups: sparse model soups for PyTorch users.

Three layers, one engine (soup-core, the Rust library behind the ``soup``
command line):

- the file API, :func:`merge`, :func:`greedy_merge`, :func:`check_mask`, :func:`prune`,
  :func:`inspect`, :func:`diff`, :func:`hash` and :func:`distance`, working on safetensors
  files and sharded folders and returning what ``soup ... --json`` prints;
- the in-memory API, :func:`merge_state_dicts`, :func:`prune_state_dict`
  and :func:`mask_fingerprints`, over state dicts of tensors (CPU or GPU)
  or numpy arrays, bit for bit the file API's results;
- :mod:`sparse_soups.torch` (needs PyTorch): mask enforcement during
  training, batch-norm recalibration, uniform and greedy soups and pruning
  of live models, for writing the sparse-model-soups loop in any training
  code, and :func:`sparse_soups.torch.sms_phases`, the whole loop around
  a training function;
- :mod:`sparse_soups.schedules`: the method's per-phase sparsities and
  retraining learning rates, as the ``trainer`` computes them.

Errors are :class:`SoupError` and its subclasses (see
:mod:`sparse_soups.errors`).
"""

from __future__ import annotations

from . import errors, schedules
from ._core import core_version as _core_version
from ._files import check_mask, diff, distance, greedy_merge, hash, inspect, merge, prune
from ._maskfile import (
    CombineReport,
    FoldReport,
    MaskFileReport,
    fold_lora,
    mask_combine,
    mask_extract,
)
from ._memory import mask_fingerprints, merge_state_dicts, prune_state_dict, write_tensors
from .schedules import phase_sparsities
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
from .errors import (
    BadCheckpoint,
    EvaluatorError,
    IncompatibleCheckpoints,
    InvalidArgument,
    MaskMismatch,
    OutputExists,
    SoupError,
    SoupIOError,
)

__version__ = _core_version()

__all__ = [
    "merge",
    "greedy_merge",
    "check_mask",
    "prune",
    "inspect",
    "diff",
    "hash",
    "distance",
    "fold_lora",
    "mask_extract",
    "mask_combine",
    "merge_state_dicts",
    "prune_state_dict",
    "mask_fingerprints",
    "write_tensors",
    "phase_sparsities",
    "schedules",
    "MergeReport",
    "GreedyReport",
    "MaskReport",
    "NmCheckReport",
    "PruneReport",
    "Inspection",
    "DiffReport",
    "HashReport",
    "DistanceReport",
    "MaskFileReport",
    "CombineReport",
    "FoldReport",
    "errors",
    "SoupError",
    "BadCheckpoint",
    "IncompatibleCheckpoints",
    "MaskMismatch",
    "OutputExists",
    "InvalidArgument",
    "SoupIOError",
    "EvaluatorError",
]
