"""Type stubs of the compiled module. Each function returns the JSON that
the matching ``soup <command> --json`` prints; use the wrappers in
:mod:`sparse_soups`, which parse it into typed dictionaries."""

from collections.abc import Callable

def merge(
    paths: list[str],
    out: str,
    weights: list[float] | None,
    mask_policy: str,
    int_policy: str,
    dtype: str | None,
    shard_size: int | None,
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Average checkpoints; returns the merge report as JSON."""

def greedy_merge(
    paths: list[str],
    out: str,
    evaluate: Callable[[str], float],
    strict: bool,
    scores: list[float] | None,
    mask_policy: str,
    int_policy: str,
    dtype: str | None,
    shard_size: int | None,
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Greedy soup scored by ``evaluate(path)``; returns the greedy report as JSON."""

def check_mask(
    paths: list[str],
    reference: str | None,
    include: list[str],
    exclude: list[str],
    budget: int | None,
) -> str:
    """Compare masks; returns the mask report as JSON."""

def check_nm(
    paths: list[str],
    n: int,
    m: int,
    include: list[str],
    exclude: list[str],
    transposed: list[str],
    kernel: str | None,
    budget: int | None,
) -> str:
    """Check the N:M pattern; returns the N:M check report as JSON."""

def prune(
    path: str,
    out: str | None,
    sparsity: float | None,
    scope: str,
    of_remaining: bool,
    include: list[str],
    exclude: list[str],
    shard_size: int | None,
    force: bool,
    digest: str,
    budget: int | None,
    nm: tuple[int, int] | None = None,
    nm_transposed: list[str] = ...,
    nm_skip_ragged: bool = False,
    keep_zeros: bool = False,
) -> str:
    """Prune (or plan with ``out=None``); returns the prune report as JSON."""

def inspect(path: str, count_zeros: bool, budget: int | None) -> str:
    """Tensors, totals and metadata as JSON."""

def diff(a: str, b: str, atol: float, rtol: float, budget: int | None) -> str:
    """Compare two checkpoints; returns the diff report as JSON."""

def hash(path: str, digest: str, budget: int | None) -> str:
    """Content digests of a checkpoint as JSON."""

def distance(paths: list[str], include: list[str], exclude: list[str], budget: int | None) -> str:
    """Pairwise distances of checkpoints as JSON."""

def core_version() -> str:
    """The version of the soup-core this module was built from."""

def fold_lora(
    base: str,
    adapter: str,
    out: str,
    keep_mask: bool,
    shard_size: int | None,
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Fold a PEFT LoRA adapter into its base; returns the fold report as JSON."""

def mask_extract(
    path: str,
    out: str,
    include: list[str],
    exclude: list[str],
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Write a model's masks as a mask file; returns the report as JSON."""

def mask_combine(
    paths: list[str],
    out: str,
    how: str,
    min_votes: int | None,
    include: list[str],
    exclude: list[str],
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Combine masks into a mask file; returns the report as JSON."""

# In-memory tensors cross as (name, dtype tag, shape, little-endian bytes).
Tensor = tuple[str, str, list[int], bytes]
OutTensor = tuple[str, str, list[int], bytearray]

def merge_plan(
    paths: list[str],
    out: str,
    base: str | None,
    method: str | None,
    weights: list[float] | None,
    scale: float | None,
    density: float | None,
    seed: int | None,
    mask_policy: str | None,
    int_policy: str,
    dtype: str | None,
    shard_size: int | None,
    force: bool,
    digest: str,
    budget: int | None,
) -> str:
    """Merges checkpoint files (fine-tunes of ``base`` when given) with a
    method of soup-core's registry; returns the merge report as JSON."""

def merge_tensors(
    candidates: list[list[Tensor]],
    labels: list[str],
    base: list[Tensor] | None,
    method: str | None,
    weights: list[float] | None,
    scale: float | None,
    density: float | None,
    seed: int | None,
    mask_policy: str | None,
    int_policy: str,
    dtype: str | None,
    budget: int | None,
) -> tuple[list[OutTensor], str]:
    """Merges state dicts in memory with the file merge's plan and kernels;
    returns the merged tensors and the report as JSON."""

def prune_tensors(
    tensors: list[Tensor],
    sparsity: float | None,
    scope: str,
    of_remaining: bool,
    include: list[str],
    exclude: list[str],
    nm: tuple[int, int] | None = None,
    nm_transposed: list[str] = ...,
    nm_skip_ragged: bool = False,
    budget: int | None = None,
) -> tuple[list[bytearray | None], str]:
    """Prunes float tensors in memory; returns each one's pruned bytes
    (``None`` where not pruned) and the prune report as JSON."""

def write_tensors(path: str, tensors: list[Tensor], metadata: dict[str, str] = ...) -> None:
    """Writes tensors as one safetensors file (name order, atomically)."""

def mask_fingerprints(
    tensors: list[Tensor], label: str, include: list[str], exclude: list[str]
) -> str:
    """The mask report of tensors in memory against themselves, as JSON."""

def prunable(
    entries: list[tuple[str, int, bool]], include: list[str], exclude: list[str]
) -> list[bool]:
    """Whether soup-core prunes each ``(name, rank, is_float)`` entry."""
