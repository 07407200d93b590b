"""Typed dictionaries for the reports of the file API.

Each is the JSON object that the matching ``soup <command> --json`` prints,
parsed: the same keys, the same values (paths as the strings given).
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "MergeReport",
    "GreedyTrial",
    "GreedyReport",
    "TensorMask",
    "MaskReport",
    "TensorPrune",
    "PruneReport",
    "TensorSummary",
    "Inspection",
    "TensorDiff",
    "DiffReport",
    "TensorHash",
    "HashReport",
    "DistanceReport",
]


class MergeReport(TypedDict):
    """What :func:`sparse_soups.merge` did."""

    outputs: list[str]
    """Files written."""
    method: str
    """The merge method (``uniform``, ``weighted``, ...)."""
    base: str | None
    """The base model of a task-vector merge."""
    base_digest: str | None
    inputs: list[str]
    input_digest: list[str]
    """Content digest of each input, as :func:`sparse_soups.hash` gives it."""
    weights: list[float]
    """Normalised weights, summing to 1 (task-vector methods: as given)."""
    tensors: int
    averaged: int
    bytes: int
    mask_policy: str
    mask_differences: list[list[Any]]
    """Per tensor whose masks differ: ``[name, [positions per input]]``."""
    task_vectors: list[dict[str, Any]]
    """Under the ``base`` mask policy, per fine-tune: ``input``, ``norm``
    and ``dropped`` (the L2 norm of its task vector where the base is
    zero)."""


class GreedyTrial(TypedDict):
    """One step of a greedy soup."""

    candidate: str
    candidate_score: float
    """The candidate's own score."""
    score: float
    """Score of the soup of the chosen candidates plus this one."""
    kept: bool


class GreedyReport(TypedDict):
    """What :func:`sparse_soups.greedy_merge` did."""

    trials: list[GreedyTrial]
    chosen: list[str]
    """The candidates in the soup, in the order they were added."""
    score: float
    strict: bool
    scores_given: bool
    merge: MergeReport
    """The final merge of the chosen candidates."""


class TensorMask(TypedDict):
    """One tensor of a :class:`MaskReport`."""

    name: str
    shape: list[int]
    numel: int
    zeros: int
    sparsity: float
    differing: int
    differing_per_input: list[int]
    reference_fingerprint: str
    fingerprints: list[str]


class MaskReport(TypedDict):
    """What :func:`sparse_soups.check_mask` found."""

    reference: str
    reference_is_input: bool
    inputs: list[str]
    tensors: list[TensorMask]
    compared: int
    sparsity_of_pruned: float
    pruned_elements: int
    sparsity_of_compared: float
    identical: bool


class KernelCheck(TypedDict):
    """Whether PyTorch's semi-structured kernel takes a tensor."""

    kernel: str
    matrix: list[int] | None
    """The 2-D ``[rows, cols]`` matrix the kernel sees (input dimension last)."""
    problems: list[str]
    passed: bool


class TensorNm(TypedDict):
    """One tensor of an :class:`NmReport`."""

    name: str
    dtype: str
    shape: list[int]
    transposed: bool
    groups: int
    violating: int
    first_violation: int | None
    """Row-major index of the first element of the first violating group."""
    first_violation_at: list[int] | None
    shape_problem: str | None
    kernel: KernelCheck | None
    passed: bool


class NmReport(TypedDict):
    """The N:M check of one checkpoint."""

    path: str
    pattern: str
    kernel: str | None
    tensors: list[TensorNm]
    checked: int
    failing: int
    passed: bool


class NmCheckReport(TypedDict):
    """What :func:`sparse_soups.check_mask` with ``nm=(n, m)`` found."""

    pattern: str
    kernel: str | None
    checkpoints: list[NmReport]
    passed: bool


class TensorPrune(TypedDict):
    """One pruned tensor of a :class:`PruneReport`."""

    name: str
    dtype: str
    shape: list[int]
    numel: int
    zeros_before: int
    zeros_after: int
    removed: int
    sparsity: float
    threshold: float | None
    removed_sum_squares: float
    transposed: bool


class FloatTensorStats(TypedDict):
    """Zeros and sums of squares (f64) of one float tensor of a
    :class:`PruneReport`, before and after."""

    name: str
    numel: int
    zeros_before: int
    zeros_after: int
    sum_squares_before: float
    sum_squares_after: float


class PruneReport(TypedDict):
    """What :func:`sparse_soups.prune` did (or would do)."""

    input: str
    outputs: list[str]
    input_digest: str | None
    sparsity: float
    scope: str
    grouping: str
    """"global", "per-tensor" or "nm"."""
    pattern: str | None
    """The N:M pattern, such as "2:4"."""
    keep_zeros: bool
    skipped: list[str]
    """Tensors left unchanged: input dimension not a multiple of M."""
    of_remaining: bool
    criterion: Any
    """"magnitude", "wanda" or the random criterion with its seed."""
    selected_elements: int
    candidates: int
    target: int
    zeros_before: int
    zeros_after: int
    removed: int
    sparsity_after: float
    float_elements: int
    float_zeros_after: int
    float_sparsity_after: float
    threshold: float | None
    removed_sum_squares: float
    tensors: list[TensorPrune]
    float_tensors: list[FloatTensorStats]


class TensorSummary(TypedDict):
    """One tensor of an :class:`Inspection`."""

    name: str
    dtype: str
    shape: list[int]
    numel: int
    bytes: int
    zeros: int | None
    sparsity: float | None
    file: str


class Inspection(TypedDict):
    """What :func:`sparse_soups.inspect` reads."""

    path: str
    files: list[str]
    tensors: list[TensorSummary]
    numel: int
    bytes: int
    float_zeros: int
    float_numel: int
    metadata: dict[str, str]


class TensorDiff(TypedDict):
    """One common tensor of a :class:`DiffReport`."""

    name: str
    dtype_a: str
    dtype_b: str
    shape_a: list[int]
    shape_b: list[int]
    compared: int
    differing: int
    mask_differences: int | None
    max_abs_diff: float | None
    rel_l2: float | None
    cosine: float | None
    equal: bool
    note: str | None


class DiffReport(TypedDict):
    """What :func:`sparse_soups.diff` found."""

    a: str
    b: str
    atol: float
    rtol: float
    only_in_a: list[str]
    only_in_b: list[str]
    tensors: list[TensorDiff]
    differing_tensors: int
    metadata_differences: list[str]
    equal: bool


class TensorHash(TypedDict):
    """One tensor's content digest."""

    name: str
    digest: str
    """``blake3:<hex>`` or ``sha256:<hex>``."""


class HashReport(TypedDict):
    """A checkpoint's content digest and its tensors' digests."""

    path: str
    digest: str
    tensors: list[TensorHash]


class DistanceReport(TypedDict):
    """The geometry of a set of checkpoints (:func:`sparse_soups.distance`)."""

    inputs: list[str]
    l2: list[list[float]]
    """``l2[i][j]``: the L2 norm of input i minus input j."""
    cosine: list[list[float | None]]
    """``cosine[i][j]``; None where either input is all zeros."""
    to_barycentre: list[float]
    """L2 distance of each input to the mean of all inputs."""
    tensors: int
    elements: int
