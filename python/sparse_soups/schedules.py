"""The sparse-model-soups schedules, as the ``trainer`` computes them.

Pure Python (no PyTorch needed); :class:`sparse_soups.torch.RetrainLR`
wraps :func:`retrain_lr` as a PyTorch learning-rate scheduler.

- :func:`phase_sparsities`: the fraction ``q = 1 - (1 - s)^(1/k)`` of the
  remaining weights each of ``k`` phases prunes, and the sparsity after
  each phase;
- :func:`allr_peak`: ALLR's peak learning rate from how much norm pruning
  removed;
- :func:`retrain_lr`: the learning rate of every iteration of a retraining
  phase under ALLR, LLR, CLR, SLR, LRW or FT;
- :func:`pretrain_lr`: the pretraining schedule those refer to (constant,
  step, linear or cosine after a linear warm-up).

Rounding follows the trainer: ``round(0.1 T)`` rounds halves up (``T = 5``
warms up for one iteration), unlike Python's :func:`round`.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

__all__ = [
    "PhaseSparsities",
    "phase_sparsities",
    "relative_norm_removed",
    "allr_peak",
    "pretrain_lr",
    "retrain_lr",
    "retrain_warmup",
    "iterations",
    "RetrainKind",
    "PretrainKind",
]

RetrainKind = Literal["allr", "llr", "clr", "slr", "lrw", "ft"]
PretrainKind = Literal["constant", "step", "linear", "cosine"]
_RETRAIN = ("allr", "llr", "clr", "slr", "lrw", "ft")
_PRETRAIN = ("constant", "step", "linear", "cosine")


def _round(x: float) -> int:
    """Round half away from zero for x >= 0 (Rust's ``f64::round``)."""
    whole = math.floor(x)
    return whole + 1 if x - whole >= 0.5 else whole


class PhaseSparsities(NamedTuple):
    """What :func:`phase_sparsities` returns."""

    fraction: float
    """``q``: the fraction of the remaining prunable weights each phase removes."""
    after: list[float]
    """The sparsity over the prunable weights after phase 1, 2, ..., k."""


def phase_sparsities(target: float, phases: int) -> PhaseSparsities:
    """Reach ``target`` sparsity in ``phases`` equal phases: each removes
    ``q = 1 - (1 - target)^(1/phases)`` of the remaining weights (prune with
    ``of_remaining=True``), so the sparsity after phase ``p`` is
    ``1 - (1 - q)^p`` and after the last one ``target``."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if phases < 1:
        raise ValueError(f"phases must be at least 1, got {phases}")
    q = 1.0 - (1.0 - target) ** (1.0 / phases)
    return PhaseSparsities(q, [1.0 - (1.0 - q) ** p for p in range(1, phases + 1)])


def relative_norm_removed(norm_before: float, norm_after: float) -> float:
    """``d = sqrt(|before^2 - after^2|) / before``, the share of the
    parameters' L2 norm that pruning removed (0 for a zero norm)."""
    if norm_before == 0.0:
        return 0.0
    return math.sqrt(abs(norm_before**2 - norm_after**2)) / norm_before


def allr_peak(
    norm_before: float,
    norm_after: float,
    fraction: float,
    lr: float,
    retrain_epochs: float,
    pretrain_epochs: float,
) -> float:
    """ALLR's peak learning rate for one phase:
    ``clip(d / sqrt(q) * lr, lo, lr)`` with ``lo = min(retrain_epochs /
    pretrain_epochs, 1) * lr``, where ``d`` is :func:`relative_norm_removed`
    of the parameters' norms (all trainable parameters, weights and
    biases) before and after pruning, ``q`` the ``fraction`` of the
    remaining weights pruned and ``lr`` the pretraining peak (eta_max)."""
    lo = min(retrain_epochs / max(pretrain_epochs, 2.2250738585072014e-308), 1.0) * lr
    if fraction > 0.0:
        raw = relative_norm_removed(norm_before, norm_after) / math.sqrt(fraction) * lr
    else:
        raw = lo
    return min(max(raw, lo), lr)


def pretrain_lr(
    it: int, *, peak: float, total: int, kind: PretrainKind = "cosine", warmup: int = 0
) -> float:
    """The pretraining learning rate of iteration ``it`` (0-based): a linear
    warm-up from 0 over ``warmup`` iterations, then ``kind`` from ``peak``
    (constant; step: /10 at 50% and again at 75%; linear or cosine to 0)."""
    if kind not in _PRETRAIN:
        raise ValueError(f"unknown schedule {kind!r}: expected constant, step, linear or cosine")
    if it < warmup:
        return peak * (it + 1) / warmup
    span = float(max(total - warmup, 1))
    t = min((it - warmup) / span, 1.0)
    if kind == "constant":
        return peak
    if kind == "step":
        done = it / max(total, 1)
        return peak * (0.01 if done >= 0.75 else 0.1 if done >= 0.5 else 1.0)
    if kind == "linear":
        return peak * (1.0 - t)
    return peak * 0.5 * (1.0 + math.cos(math.pi * t))


def retrain_warmup(total: int, kind: RetrainKind = "allr") -> int:
    """Warm-up iterations of a retraining phase of ``total`` iterations:
    ``round(0.1 total)`` (halves up) for SLR, CLR, LLR and ALLR, else 0."""
    return _round(0.1 * total) if kind in ("slr", "clr", "llr", "allr") else 0


def iterations(epochs: float, per_epoch: int) -> int:
    """Optimizer steps of ``epochs`` (fractions allowed) of ``per_epoch``
    batches each, as the trainer counts them: rounded (halves up), at
    least 1."""
    return max(1, _round(epochs * per_epoch))


def retrain_lr(
    it: int,
    total: int,
    *,
    lr: float,
    kind: RetrainKind = "allr",
    peak: float | None = None,
    pretrain_total: int | None = None,
    pretrain_kind: PretrainKind = "cosine",
    pretrain_warmup: int = 0,
) -> float:
    """The learning rate of iteration ``it`` (0-based) of a retraining phase
    of ``total`` iterations.

    ``lr`` is the pretraining peak (eta_max). Schedules with a warm-up
    (SLR, CLR, LLR, ALLR) rise from 0 to their peak along a half cosine over
    :func:`retrain_warmup` iterations; then ALLR and LLR fall linearly to 0
    (ALLR peaks at ``peak``, see :func:`allr_peak`; LLR at ``lr``), CLR
    follows a cosine from ``lr`` to the final pretraining rate, SLR replays
    the whole pretraining schedule compressed (its warm-up replaced by the
    peak). FT keeps the final pretraining rate and LRW replays the last
    ``total`` pretraining rates. FT, LRW, SLR and CLR need the pretraining
    schedule (``pretrain_total`` iterations of ``pretrain_kind`` with
    ``pretrain_warmup``)."""
    if kind not in _RETRAIN:
        raise ValueError(f"unknown retraining schedule {kind!r}: expected allr, llr, clr, slr, lrw or ft")
    if kind == "allr" and peak is None:
        raise ValueError("ALLR needs its peak: see allr_peak")
    if kind in ("ft", "lrw", "slr", "clr") and pretrain_total is None:
        raise ValueError(f"{kind} needs the pretraining schedule: pass pretrain_total")
    p_total = pretrain_total or 0

    def pre(i: int) -> float:
        return pretrain_lr(i, peak=lr, total=p_total, kind=pretrain_kind, warmup=pretrain_warmup)

    total = max(total, 1)
    it = min(it, total - 1)
    warmup = retrain_warmup(total, kind)
    top = peak if kind == "allr" and peak is not None else lr
    if it < warmup:
        return top * 0.5 * (1.0 - math.cos(math.pi * ((it + 1) / warmup)))
    t = (it - warmup) / float(total - warmup)
    final = pre(max(p_total - 1, 0))
    if kind == "ft":
        return final
    if kind == "lrw":
        return pre(max(p_total - total, 0) + it)
    if kind == "slr":
        p = math.floor(t * p_total)
        return lr if p < pretrain_warmup else pre(p)
    if kind == "clr":
        return final + (top - final) * 0.5 * (1.0 + math.cos(math.pi * t))
    return top * (1.0 - t)
