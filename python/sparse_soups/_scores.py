"""The one rule for the scores of greedy soups, shared by
:func:`sparse_soups.greedy_merge` and :func:`sparse_soups.torch.greedy_soup`
(and the ``soup`` command line, whose evaluator must print a finite number):
a score is a finite number. ``None``, strings (even ``"0.9"``), NaN and
infinities are refused with an :class:`~sparse_soups.errors.EvaluatorError`
that names what was being scored, before the soup is written."""

from __future__ import annotations

import math
from typing import Any

from .errors import EvaluatorError

__all__ = ["score_of"]


def score_of(value: Any, what: str) -> float:
    """``value`` (returned by ``evaluate`` for ``what``) as a float: any
    object that converts with ``float()`` other than a string (a Python or
    numpy number, a one-element tensor), and finite."""
    score: float | None = None
    if not isinstance(value, (str, bytes, bytearray)) and value is not None:
        try:
            score = float(value)
        except (TypeError, ValueError, RuntimeError):
            score = None
    if score is None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise EvaluatorError(
            f"evaluate returned {shown} ({type(value).__name__}) for {what}: "
            "it must return a number (higher is better)"
        )
    if not math.isfinite(score):
        raise EvaluatorError(
            f"evaluate returned {score} for {what}: scores must be finite numbers"
        )
    return score
