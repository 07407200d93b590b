"""The sparse-model-soups loop over a user's training function, and its
learning-rate scheduler (exported by :mod:`sparse_soups.torch`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ._memory import mask_fingerprints
from .errors import MaskMismatch
from .schedules import PretrainKind, RetrainKind, allr_peak, phase_sparsities, retrain_lr
from .torch import (
    MaskEnforcer,
    _selected,
    greedy_soup,
    model_sparsity,
    prune_model,
    recalibrate_bn,
    uniform_soup,
)


@torch.no_grad()
def param_norm(model: nn.Module) -> float:
    """The L2 norm of all trainable parameters (weights, biases, norm
    scales) together, in double precision: what ALLR compares before and
    after pruning."""
    return math.sqrt(
        sum(float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.requires_grad)
    )


class RetrainLR(torch.optim.lr_scheduler.LRScheduler):
    """A retraining phase's learning rate (:func:`sparse_soups.schedules.retrain_lr`)
    as a PyTorch scheduler: call ``step()`` after every ``optimizer.step()``;
    iteration ``i`` of the phase (counting from 0) then runs at
    ``retrain_lr(i, total, ...)``, the rate the trainer uses. Every
    parameter group gets that rate.

    ``lr`` is the pretraining peak (eta_max); ALLR (the default) also needs
    its ``peak`` (:func:`sparse_soups.schedules.allr_peak`); FT, LRW, SLR
    and CLR need the pretraining schedule (``pretrain_total`` and the
    rest)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total: int,
        *,
        lr: float,
        kind: RetrainKind = "allr",
        peak: float | None = None,
        pretrain_total: int | None = None,
        pretrain_kind: PretrainKind = "cosine",
        pretrain_warmup: int = 0,
    ) -> None:
        self.total = total
        self.options: dict[str, Any] = dict(
            lr=lr,
            kind=kind,
            peak=peak,
            pretrain_total=pretrain_total,
            pretrain_kind=pretrain_kind,
            pretrain_warmup=pretrain_warmup,
        )
        retrain_lr(0, total, **self.options)  # reject bad settings now
        super().__init__(optimizer)

    def rate(self, it: int) -> float:
        """The learning rate of iteration ``it``."""
        return retrain_lr(it, self.total, **self.options)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.rate(self.last_epoch)] * len(self.optimizer.param_groups)


@dataclass
class Candidate:
    """What :func:`sms_phases` gives the training function of one candidate."""

    phase: int
    """Phase, from 1."""
    index: int
    """Candidate index in the phase, from 0 (vary the seed by it)."""
    iterations: int
    """Optimizer steps to take."""
    peak: float
    """The phase's retraining peak (ALLR's, or eta_max for the others)."""
    schedule: dict[str, Any] = field(repr=False, default_factory=dict)
    _model: nn.Module | None = field(repr=False, default=None)

    def prepare(self, optimizer: torch.optim.Optimizer) -> RetrainLR:
        """Attach a :class:`MaskEnforcer` to ``optimizer`` (built over the
        candidate's parameters) and return the phase's learning-rate
        scheduler; call its ``step()`` after every ``optimizer.step()``."""
        assert self._model is not None
        MaskEnforcer(self._model, optimizer, exclude=self.schedule.get("exclude"))
        opts = {k: v for k, v in self.schedule.items() if k != "exclude"}
        return RetrainLR(optimizer, self.iterations, **opts)


@dataclass
class SmsPhase:
    """One finished phase of :func:`sms_phases`."""

    phase: int
    """Phase, from 1."""
    fraction: float
    """The fraction of the remaining prunable weights pruned (q)."""
    sparsity: float
    """Sparsity of the soup over the prunable weights."""
    peak: float
    """The retraining peak learning rate of the phase."""
    candidates: list[nn.Module]
    """The retrained candidates (recalibrated when a loader was given)."""
    soup: nn.Module
    """The soup, recalibrated: the next phase's parent."""
    chosen: list[int]
    """Candidates in the soup (all of them for a uniform soup)."""


def sms_phases(
    model: nn.Module,
    retrain: Callable[[nn.Module, Candidate], object],
    *,
    sparsity: float,
    phases: int,
    candidates: int,
    iterations: int,
    lr: float,
    retrain_epochs: float,
    pretrain_epochs: float,
    schedule: RetrainKind = "allr",
    pretrain_total: int | None = None,
    pretrain_kind: PretrainKind = "cosine",
    pretrain_warmup: int = 0,
    recalibrate: Iterable[Any] | None = None,
    recal_fraction: float = 0.2,
    recal_mode: Literal["cumulative", "ema"] = "cumulative",
    soup: Literal["uniform", "greedy"] = "uniform",
    evaluate: Callable[[nn.Module], float] | None = None,
    strict: bool = False,
    exclude: Sequence[str] | None = None,
) -> Iterator[SmsPhase]:
    """Run the sparse-model-soups phases from the trained dense ``model``
    (left unchanged), yielding each finished phase.

    Each phase: prune a copy of the parent (``model``, then the previous
    soup) by global magnitude, removing the fraction ``q`` of
    :func:`~sparse_soups.schedules.phase_sparsities` of the remaining
    weights; compute the retraining peak (ALLR's from the norm pruning
    removed, see :func:`~sparse_soups.schedules.allr_peak`); for each of
    ``candidates`` copies call ``retrain(copy, candidate)``, which builds
    an optimizer over the copy, calls ``candidate.prepare(optimizer)`` (mask
    enforcement and the learning-rate scheduler) and trains
    ``candidate.iterations`` steps; check that every candidate kept the
    parent's mask (:class:`~sparse_soups.errors.MaskMismatch` otherwise);
    recalibrate each over ``recalibrate`` (a loader, ``recal_fraction`` of
    it, ``recal_mode``); average them (``soup="uniform"``) or choose them
    greedily by ``evaluate(model)`` (``soup="greedy"``, higher is better);
    recalibrate the soup. With ``candidates=1`` this is IMP.

    ``lr`` is the pretraining peak, ``retrain_epochs`` and
    ``pretrain_epochs`` the epochs ALLR's lower bound compares, and the
    ``pretrain_*`` settings the pretraining schedule FT, LRW, SLR and CLR
    need. ``exclude`` regular expressions name weights never pruned.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    if soup == "greedy" and evaluate is None:
        raise ValueError("a greedy soup needs evaluate(model) -> score")
    if soup not in ("uniform", "greedy"):
        raise ValueError(f"soup must be uniform or greedy, got {soup!r}")
    q = phase_sparsities(sparsity, phases).fraction
    options: dict[str, Any] = dict(
        lr=lr,
        kind=schedule,
        pretrain_total=pretrain_total,
        pretrain_kind=pretrain_kind,
        pretrain_warmup=pretrain_warmup,
    )
    retrain_lr(0, iterations, **{**options, "peak": lr})  # reject bad settings now

    def masks_of(m: nn.Module) -> dict[str, Any]:
        return dict(mask_fingerprints({n: p.detach() for n, p in _selected(m, None, exclude)}))

    def finish(m: nn.Module) -> nn.Module:
        if recalibrate is not None:
            recalibrate_bn(m, recalibrate, fraction=recal_fraction, mode=recal_mode)
        return m

    parent = model
    for phase in range(1, phases + 1):
        parent = copy.deepcopy(parent)
        before = param_norm(parent)
        prune_model(parent, q, of_remaining=True, exclude=exclude)
        peak = allr_peak(before, param_norm(parent), q, lr, retrain_epochs, pretrain_epochs)
        if schedule != "allr":
            peak = lr
        masks = masks_of(parent)
        trained = []
        for index in range(candidates):
            cand = copy.deepcopy(parent)
            info = Candidate(phase, index, iterations, peak, {**options, "peak": peak, "exclude": exclude}, cand)
            retrain(cand, info)
            kept = masks_of(cand)
            lost = [name for name in masks if kept.get(name) != masks[name]]
            if lost:
                raise MaskMismatch(
                    f"phase {phase} candidate {index} lost the pruned parent's mask of {lost[0]}: "
                    "call candidate.prepare(optimizer) in the training function"
                )
            trained.append(finish(cand))
        if soup == "uniform":
            chosen = list(range(candidates))
            state = uniform_soup(trained)
        else:
            assert evaluate is not None

            def score(sd: dict[str, torch.Tensor]) -> Any:
                # Unconverted: greedy_soup checks it by the one rule for
                # scores and names the candidate in its error.
                m = copy.deepcopy(parent)
                m.load_state_dict(sd)
                return evaluate(finish(m))

            result = greedy_soup(trained, score, strict=strict)
            chosen, state = result.chosen, result.state_dict
        souped = copy.deepcopy(parent)
        souped.load_state_dict(state)
        finish(souped)
        yield SmsPhase(phase, q, model_sparsity(souped, exclude=exclude), peak, trained, souped, chosen)
        parent = souped
