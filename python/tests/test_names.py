"""Errors of the in-memory functions and the soups name the caller's
inputs ("state dict 1", "candidate 2") and the tensor, never temporary
files; greedy soups take finite numbers as scores and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sparse_soups as ss
from sparse_soups.torch import greedy_soup, uniform_soup

BASE = {
    "w": np.array([[1.0, 0.0], [2.0, 3.0]], np.float32),
    "n": np.array(3, np.int64),
}


def variant(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    sd = {k: v.copy() for k, v in BASE.items()}
    for k, v in changes.items():
        if v is None:
            del sd[k]
        else:
            sd[k] = v
    return sd


# Each bad input, the error class and the tensor the message must name.
BAD = {
    "mask": (variant(w=np.array([[1.0, 1.0], [2.0, 3.0]], np.float32)), ss.MaskMismatch, "`w`"),
    "missing": (variant(n=None), ss.IncompatibleCheckpoints, "`n`"),
    "extra": (variant(x=np.zeros(2, np.float32)), ss.IncompatibleCheckpoints, "`x`"),
    "shape": (variant(w=np.zeros((2, 3), np.float32)), ss.IncompatibleCheckpoints, "`w`"),
    "dtype": (variant(w=BASE["w"].astype(np.float16)), ss.IncompatibleCheckpoints, "`w`"),
    "integer": (variant(n=np.array(4, np.int64)), ss.IncompatibleCheckpoints, "`n`"),
}


def assert_no_temporary_path(message: str) -> None:
    for leak in ("sparse-soups-", ".safetensors", "/dev/shm", "input-"):
        assert leak not in message, message


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_merge_state_dicts_errors_name_the_state_dict_and_tensor(case: str) -> None:
    bad, error, tensor = BAD[case]
    with pytest.raises(error) as e:
        ss.merge_state_dicts([BASE, BASE, bad])
    message = str(e.value)
    assert_no_temporary_path(message)
    assert "state dict 2" in message and tensor in message, message


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_uniform_soup_errors_name_the_candidate(case: str) -> None:
    bad, error, tensor = BAD[case]
    as_torch = {k: torch.from_numpy(v) for k, v in bad.items()}
    base = {k: torch.from_numpy(v) for k, v in BASE.items()}
    with pytest.raises(error) as e:
        uniform_soup([base, as_torch])
    message = str(e.value)
    assert_no_temporary_path(message)
    assert "candidate 1" in message and tensor in message, message


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_greedy_soup_errors_name_the_candidate_by_its_input_index(case: str) -> None:
    # Ranked 0, 2, 1: the first trial soup is of candidates 0 and 2, whose
    # second input is candidate 2 (not "input 1").
    bad, error, tensor = BAD[case]
    scores = [0.9, 0.1, 0.5]
    with pytest.raises(error) as e:
        greedy_soup([BASE, BASE, bad], lambda sd: 1.0, scores=scores)
    message = str(e.value)
    assert_no_temporary_path(message)
    assert "candidate 2" in message and "candidate 1" not in message, message
    assert tensor in message, message


def test_mask_hint_points_to_the_in_memory_function() -> None:
    bad = BAD["mask"][0]
    with pytest.raises(ss.MaskMismatch, match=r"see mask_fingerprints\(\)"):
        ss.merge_state_dicts([BASE, bad])


def test_unwritable_tensor_names_the_state_dict() -> None:
    with pytest.raises(TypeError, match=r"^state dict 1: tensor `c`: dtype complex64"):
        ss.merge_state_dicts([BASE, {"c": np.zeros(2, np.complex64)}])
    with pytest.raises(TypeError, match=r"^the state dict: tensor `c`"):
        ss.prune_state_dict({"c": np.zeros((2, 2), np.complex64)}, 0.5)


BAD_SCORES = [None, "0.9", float("nan"), float("inf"), -float("inf"), torch.zeros(3)]
IDS = ["none", "string", "nan", "inf", "-inf", "3-element-tensor"]


@pytest.mark.parametrize("bad", BAD_SCORES, ids=IDS)
def test_greedy_soup_names_the_candidate_of_a_bad_score(bad: object) -> None:
    calls = []

    def evaluate(sd: dict) -> object:
        calls.append(sd)
        return bad if len(calls) == 2 else 0.5

    with pytest.raises(ss.EvaluatorError, match=r"for candidate 1:") as e:
        greedy_soup([BASE, BASE, BASE], evaluate)
    assert type(bad).__name__ in str(e.value) or "nan" in str(e.value) or "inf" in str(e.value)


@pytest.mark.parametrize("bad", BAD_SCORES, ids=IDS)
def test_greedy_soup_names_the_trial_soup_of_a_bad_score(bad: object) -> None:
    # Candidates score 0.9, 0.1, 0.5 alone; the first trial soup is of
    # candidates 0 and 2.
    own = iter([0.9, 0.1, 0.5])
    with pytest.raises(ss.EvaluatorError, match=r"the soup of candidates 0 with candidate 2"):
        greedy_soup([BASE, BASE, BASE], lambda sd: next(own, bad))


def test_greedy_soup_takes_numpy_and_tensor_scores() -> None:
    scores = iter([np.float32(0.5), torch.tensor(0.7), 1])
    result = greedy_soup([BASE, BASE], lambda sd: next(scores))
    assert result.chosen == [1, 0] and result.score == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_given_scores_must_be_finite_in_both_greedy_soups(family, tmp_path: Path, bad: float) -> None:
    with pytest.raises(ss.InvalidArgument, match="scores must be finite"):
        greedy_soup([BASE, BASE], lambda sd: 1.0, scores=[1.0, bad])
    out = tmp_path / "g.safetensors"
    with pytest.raises(ss.InvalidArgument, match="scores must be finite"):
        ss.greedy_merge([family["c0"], family["c1"]], out, lambda p: 1.0, scores=[1.0, bad])
    assert not out.exists()


@pytest.mark.parametrize("bad", BAD_SCORES, ids=IDS)
@pytest.mark.parametrize("when", ["candidate", "trial"])
def test_greedy_merge_refuses_scores_that_are_not_finite_numbers(
    family, tmp_path: Path, bad: object, when: str
) -> None:
    candidates = [family["c0"], family["c1"]]

    def evaluate(path: str) -> object:
        if when == "candidate" and Path(path) == family["c1"]:
            return bad
        if when == "trial" and Path(path) not in candidates:
            return bad
        return 0.5

    out = tmp_path / "g.safetensors"
    with pytest.raises(ss.EvaluatorError) as e:
        ss.greedy_merge(candidates, out, evaluate)
    message = str(e.value)
    if when == "candidate":
        assert f"for {family['c1']}:" in message, message
    else:
        assert "trial" in message, message
    assert not out.exists() and not list(tmp_path.glob(".soup-greedy-*"))
