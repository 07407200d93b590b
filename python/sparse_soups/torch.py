"""The sparse-model-soups recipe for any PyTorch training loop.

Pure Python over PyTorch (an optional dependency of the package) and the
in-memory API:

- :class:`MaskEnforcer` keeps pruned weights, and the optimizer state that
  would revive them, at exactly zero while a candidate retrains;
- :func:`recalibrate_bn` recomputes batch-norm statistics, which averaging
  weights invalidates;
- :func:`uniform_soup` and :func:`greedy_soup` average candidates with
  soup-core (the same arithmetic as ``soup merge``), the greedy one with
  the acceptance rule of ``soup merge --greedy``;
- :func:`prune_model` prunes a live ``nn.Module`` by magnitude with
  soup-core, and :func:`model_sparsity` measures its prunable weights;
- :func:`sms_phases` runs the whole loop below around a training
  function, with :class:`RetrainLR`, the retraining learning rate of
  :mod:`sparse_soups.schedules` as a PyTorch scheduler.

One phase of the method, for a model ``parent``::

    prune_model(parent, q, of_remaining=True)
    candidates = []
    for seed in range(m):
        model = copy.deepcopy(parent)
        opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9)
        enforcer = MaskEnforcer(model, opt)   # zeros stay zeros
        train(model, opt, seed)
        candidates.append(model)
    parent.load_state_dict(uniform_soup(candidates))
    recalibrate_bn(parent, train_loader)
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "sparse_soups.torch needs PyTorch, which is not installed: "
        'pip install "sparse-soups[torch]" (or pip install torch)'
    ) from e

from ._memory import merge_state_dicts, prune_with_report
from ._memory import as_state_dict, merge_named, prunable
from ._scores import score_of
from ._types import PruneReport
from .errors import InvalidArgument

__all__ = [
    "MaskEnforcer",
    "recalibrate_bn",
    "uniform_soup",
    "greedy_soup",
    "GreedyTrial",
    "GreedyResult",
    "prune_model",
    "model_sparsity",
    "param_norm",
    "RetrainLR",
    "Candidate",
    "SmsPhase",
    "sms_phases",
]


def _selected(
    model: nn.Module, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[tuple[str, nn.Parameter]]:
    """The parameters soup-core would prune: its own rule (float tensors of
    rank >= 2 named ``*weight``), or those matching an ``include`` regular
    expression, less ``exclude`` matches; soup-core decides."""
    params = list(model.named_parameters())
    chosen = prunable(
        [(name, p.dim(), p.is_floating_point()) for name, p in params], include, exclude
    )
    return [item for item, keep in zip(params, chosen, strict=True) if keep]


@torch.no_grad()
def model_sparsity(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> float:
    """The fraction of exact zeros over the prunable weights of ``model``
    (those :func:`prune_model` and :class:`MaskEnforcer` select, with the
    same ``include``/``exclude`` rules); 0.0 when there are none."""
    chosen = _selected(model, include, exclude)
    total = sum(p.numel() for _, p in chosen)
    zeros = sum(int((p == 0).sum()) for _, p in chosen)
    return zeros / total if total else 0.0


_ENFORCED: weakref.WeakKeyDictionary[torch.optim.Optimizer, MaskEnforcer] = weakref.WeakKeyDictionary()


class MaskEnforcer:
    """Keeps the zeros of a pruned model at exactly zero during training.

    At construction the mask ``w != 0`` of every selected parameter is
    recorded (by default the weights of convolution and linear layers, as
    soup-core prunes them; ``include`` regular expressions replace that
    rule, ``exclude`` ones remove names). After every ``optimizer.step()``
    (through the optimizer's step post-hook) :meth:`apply` sets the pruned
    entries of each such parameter to ``+0.0``, and the same entries of
    every optimizer state tensor of the parameter's shape (SGD's momentum
    buffer, Adam's moments). With momentum, Nesterov momentum or weight
    decay, a pruned weight's gradient is non-zero, so without this the
    step would revive it; with it, each step ends with the zeros exact.

    Call :meth:`remove` to detach the hook, or use the enforcer as a
    context manager (``with MaskEnforcer(model, opt):``), which removes it
    on exit; without an optimizer, call :meth:`apply` yourself.

    Guards: a model with no zeros in the selected weights (an enforcer made
    before pruning) warns; an optimizer that does not hold the model's
    selected parameters (one built before a ``deepcopy``) raises
    ``ValueError``, and so does a second enforcer on an optimizer that
    already has one attached.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.masks: dict[str, tuple[nn.Parameter, torch.Tensor]] = {
            name: (p, p.detach() == 0) for name, p in _selected(model, include, exclude)
        }
        if not any(bool(m.any()) for _, m in self.masks.values()):
            warnings.warn(
                "MaskEnforcer: the model has no zeros to keep in the selected weights "
                "(create the enforcer after pruning)",
                stacklevel=2,
            )
        self._handle = None
        if optimizer is not None:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [n for n, (p, _) in self.masks.items() if p.requires_grad and id(p) not in held]
            if missing:
                raise ValueError(
                    f"MaskEnforcer: the optimizer does not hold the model's parameter(s) "
                    f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: build the "
                    "optimizer from this model's parameters (after any deepcopy)"
                )
            if optimizer in _ENFORCED:
                raise ValueError(
                    "MaskEnforcer: this optimizer already has an enforcer attached; "
                    "call its remove() (or leave its `with` block) first"
                )
            self._handle = optimizer.register_step_post_hook(lambda *_: self.apply())
            _ENFORCED[optimizer] = self
        self.apply()

    def __enter__(self) -> MaskEnforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights and their optimizer state now."""
        state = self.optimizer.state if self.optimizer is not None else {}
        for p, pruned in self.masks.values():
            p.masked_fill_(pruned, 0.0)
            for value in state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.masked_fill_(pruned, 0.0)

    def remove(self) -> None:
        """Stop enforcing after optimizer steps."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            if self.optimizer is not None and _ENFORCED.get(self.optimizer) is self:
                del _ENFORCED[self.optimizer]

    @property
    def sparsity(self) -> float:
        """Fraction of the masked parameters' entries that are pruned."""
        total = sum(m.numel() for _, m in self.masks.values())
        zeros = sum(int(m.sum()) for _, m in self.masks.values())
        return zeros / total if total else 0.0


def _default_input(batch: Any, index: int) -> Any:
    """The input of a batch that is a tensor or a tuple/list whose first
    item is a tensor; a TypeError naming what was found otherwise."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        found = f"a {type(batch).__name__} with keys {list(batch)[:8]}"
    elif isinstance(batch, (tuple, list)):
        first = type(batch[0]).__name__ if batch else "nothing"
        found = f"a {type(batch).__name__} whose first item is {first}"
    else:
        found = f"a {type(batch).__name__}"
    raise TypeError(
        f"recalibrate_bn: batch {index} is {found}; without input_fn a batch must be a "
        "tensor of inputs or a tuple/list (inputs, targets, ...) whose first item is the "
        "input tensor: pass input_fn=lambda batch: ... returning the model's input "
        "(e.g. input_fn=lambda b: b['image'])"
    )


def _to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (also inside tuples, lists and
    dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable[Any],
    fraction: float = 0.2,
    mode: Literal["cumulative", "ema"] = "cumulative",
    *,
    batches: int | None = None,
    input_fn: Callable[[Any], Any] | None = None,
) -> int:
    """Recompute the running statistics of every batch-norm layer.

    Averaged running statistics are not the statistics of averaged
    weights, so a soup (or any model whose weights changed without its
    statistics) needs this. The statistics are reset, then forward passes
    run in training mode with gradients off and dropout disabled over the
    first ``ceil(fraction * len(loader))`` batches (at least one; or
    exactly ``batches``, which a loader without a length needs).
    ``mode="cumulative"`` makes the statistics the
    plain average over those batches of the batch means and (unbiased)
    variances; ``mode="ema"`` uses each layer's own momentum (0.1 by
    default) as the reference SMS code does. A batch is a tensor or a
    tuple/list whose first item is the input tensor; for other batches
    (dicts, custom objects) ``input_fn(batch)`` returns the model's input,
    a tensor or a structure of tensors that is passed as the model's one
    argument. The input's tensors are moved to the model's device. Returns
    the number of batches used. The model's training mode and momenta are
    restored, and so are the statistics if a batch raises.
    """
    if mode not in ("cumulative", "ema"):
        raise ValueError(f"mode must be cumulative or ema, got {mode!r}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches is None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if not hasattr(loader, "__len__"):
            raise TypeError("the loader has no length: pass batches=N instead of a fraction")
        batches = max(1, math.ceil(fraction * len(loader)))  # type: ignore[arg-type]
    if not norms:
        return 0
    was_training = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    # Restored if a batch fails (or Ctrl-C): no half-recalibrated model.
    saved = {m: [b.clone() for b in m.buffers(recurse=False)] for m in norms}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        for m in norms:
            m.reset_running_stats()
            if mode == "cumulative":
                m.momentum = None
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        used = 0
        for batch in loader:
            if used == batches:
                break
            x = input_fn(batch) if input_fn is not None else _default_input(batch, used)
            model(_to_device(x, device))
            used += 1
        return used
    except BaseException:
        for m, buffers in saved.items():
            for b, old in zip(m.buffers(recurse=False), buffers, strict=True):
                b.copy_(old)
        raise
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in was_training.items():
            m.train(training)


# Key prefixes of wrapped models: torch.compile's OptimizedModule and
# DistributedDataParallel / DataParallel (and FSDP-style wrappers).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _unwrapped_module(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and data-parallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
            continue
        return model


def _unwrapped_keys(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``sd`` without a ``_orig_mod.`` or ``module.`` prefix that every key
    carries (repeatedly, for a compiled DDP model)."""
    keys = list(sd)
    stripped = 0
    while keys:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            break
        keys = [k[len(prefix) :] for k in keys]
        stripped += len(prefix)
    if not stripped:
        return sd
    return {k[stripped:]: v for k, v in sd.items()}


def _state_dict(item: Any, label: str) -> Mapping[str, torch.Tensor]:
    """The state dict of a candidate, as the plain (unwrapped) model has it."""
    if isinstance(item, nn.Module):
        return _unwrapped_module(item).state_dict()
    return _unwrapped_keys(as_state_dict(item, label))


def uniform_soup(
    models_or_state_dicts: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    *,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    int_policy: Literal["equal", "first"] = "equal",
) -> dict[str, torch.Tensor]:
    """The uniform soup (mean of every float tensor) of models or state
    dicts, computed by soup-core exactly as ``soup merge`` computes it: the
    candidates' shared zeros stay exact zeros, and candidates whose masks
    differ raise :class:`~sparse_soups.errors.MaskMismatch` unless
    ``mask_policy`` says how to combine them. Integer buffers (batch
    norm's ``num_batches_tracked``) must be equal unless
    ``int_policy="first"``. Recalibrate batch norm after loading it.

    Models wrapped by ``torch.compile`` or ``DistributedDataParallel`` /
    ``DataParallel`` are unwrapped, and a ``_orig_mod.`` or ``module.``
    prefix that all keys of a state dict share is removed, so the soup
    loads into the plain model. Its tensors are on the first candidate's
    devices. Errors call the inputs "candidate 0", "candidate 1", ..."""
    labels = [f"candidate {i}" for i in range(len(models_or_state_dicts))]
    return merge_named(
        [_state_dict(c, n) for c, n in zip(models_or_state_dicts, labels, strict=True)],
        labels,
        mask_policy=mask_policy,
        int_policy=int_policy,
    )


@dataclass
class GreedyTrial:
    """One step of a greedy soup."""

    candidate: int
    """Index of the candidate tried, in the input order."""
    candidate_score: float
    """Its own score."""
    score: float
    """Score of the soup of the chosen candidates plus this one (for the
    first trial, the best candidate alone: its own score)."""
    kept: bool
    """Whether the candidate joined the soup."""


@dataclass
class GreedyResult:
    """The outcome of :func:`greedy_soup`."""

    state_dict: dict[str, torch.Tensor]
    """The uniform soup of the chosen candidates."""
    chosen: list[int]
    """Indices of the chosen candidates, in the order they were added."""
    score: float
    """The soup's score (that of the last kept trial)."""
    trials: list[GreedyTrial] = field(default_factory=list)
    """Every candidate tried, best first: one :class:`GreedyTrial` each."""


def greedy_soup(
    candidates: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    evaluate: Callable[[dict[str, torch.Tensor]], float],
    *,
    strict: bool = False,
    scores: Sequence[float] | None = None,
    mask_policy: Literal["refuse", "union", "intersect"] = "refuse",
    int_policy: Literal["equal", "first"] = "equal",
) -> GreedyResult:
    """The greedy soup, with the acceptance rule of ``soup merge --greedy``.

    Candidates are ranked by their own score (``scores``, or
    ``evaluate(state_dict)`` of each; higher is better; equal scores keep
    the input order). The soup starts from the best; each next candidate
    is kept if the uniform soup of the chosen ones plus it scores at least
    the current score (SMS accepts ties), or more with ``strict=True``
    (the original model soups rule). ``evaluate`` receives a state dict;
    for SMS it should load it, recalibrate batch norm and return the
    validation accuracy. The result is always the averaged soup of the
    chosen candidates, even when only the best one is chosen.

    Scores follow the rule of :func:`sparse_soups.greedy_merge`: a score
    is a finite number (a Python or numpy number or a one-element
    tensor). ``evaluate`` returning ``None``, a string, NaN or an infinity
    raises :class:`~sparse_soups.errors.EvaluatorError` naming the
    candidate or trial soup it was scoring; non-finite ``scores`` raise
    :class:`~sparse_soups.errors.InvalidArgument`. Candidates are
    unwrapped as in :func:`uniform_soup`, and errors call them "candidate
    0", "candidate 1", ... in the input order.
    """
    if not candidates:
        raise InvalidArgument("greedy soup needs at least one candidate")
    labels = [f"candidate {i}" for i in range(len(candidates))]
    dicts = [_state_dict(c, n) for c, n in zip(candidates, labels, strict=True)]
    if scores is None:
        first = [score_of(evaluate(dict(sd)), n) for sd, n in zip(dicts, labels, strict=True)]
    else:
        first = [float(s) for s in scores]
        if len(first) != len(dicts):
            raise InvalidArgument(f"{len(first)} scores given for {len(dicts)} candidates")
        bad = next((s for s in first if not math.isfinite(s)), None)
        if bad is not None:
            raise InvalidArgument(f"scores must be finite, got {bad}")
    order = sorted(range(len(dicts)), key=lambda i: -first[i])

    def soup(indices: list[int]) -> dict[str, torch.Tensor]:
        return merge_named(
            [dicts[i] for i in indices],
            [labels[i] for i in indices],
            mask_policy=mask_policy,
            int_policy=int_policy,
        )

    def described(indices: list[int], c: int) -> str:
        kept = ", ".join(str(i) for i in indices)
        return f"the soup of candidates {kept} with candidate {c}"

    best = order[0]
    chosen = [best]
    current = first[best]
    trials = [GreedyTrial(best, first[best], first[best], True)]
    for c in order[1:]:
        s = score_of(evaluate(soup(chosen + [c])), described(chosen, c))
        kept = s > current if strict else s >= current
        if kept:
            chosen.append(c)
            current = s
        trials.append(GreedyTrial(c, first[c], s, kept))
    return GreedyResult(soup(chosen), chosen, current, trials)


@torch.no_grad()
def prune_model(
    model: nn.Module,
    sparsity: float | None = None,
    scope: Literal["global", "layer"] = "global",
    of_remaining: bool = False,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    nm: tuple[int, int] | None = None,
    nm_transposed: Sequence[str] | None = None,
    nm_skip_ragged: bool = False,
) -> PruneReport:
    """Prune a live model in place by magnitude with soup-core, by the
    rules of :func:`sparse_soups.prune` (by default the weights of
    convolution and linear layers compete globally; ``of_remaining=True``
    removes the fraction of the still non-zero weights, one IMP phase;
    ``nm=(2, 4)`` prunes every linear and convolution weight to 2:4 along
    its input dimension instead). Returns soup-core's report. The tensors are copied out and back (see
    :mod:`sparse_soups._memory`); parameters keep their identity, so an
    existing optimizer still holds them."""
    live = model.state_dict(keep_vars=False)
    pruned, report = prune_with_report(
        live,
        sparsity,
        scope,
        of_remaining,
        include=include,
        exclude=exclude,
        label="the model",
        nm=nm,
        nm_transposed=nm_transposed,
        nm_skip_ragged=nm_skip_ragged,
    )
    changed = {t["name"] for t in report["tensors"]}
    for name in changed:
        live[name].copy_(pruned[name])
    return report


from ._sms import Candidate, RetrainLR, SmsPhase, param_norm, sms_phases  # noqa: E402
