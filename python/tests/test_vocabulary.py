"""The package takes soup-core's names and checks: an unknown name, a
mask policy that does not fit, or a selection of nothing is the core's
error, raised as InvalidArgument with the valid choices listed."""

from __future__ import annotations

from pathlib import Path

import pytest

import sparse_soups as ss


def test_an_unknown_mask_policy_lists_every_policy(family, tmp_path: Path) -> None:
    with pytest.raises(ss.InvalidArgument) as e:
        ss.merge([family["c0"], family["c1"]], tmp_path / "m.safetensors", mask_policy="bogus")  # type: ignore[arg-type]
    assert "`bogus` is not a mask policy (refuse, union, intersect, base or none)" in str(e.value)
    assert not (tmp_path / "m.safetensors").exists()


def test_the_base_policy_without_a_base_is_refused(family, tmp_path: Path) -> None:
    with pytest.raises(ss.InvalidArgument, match="needs a base model: use refuse, union"):
        ss.merge([family["c0"], family["c1"]], tmp_path / "m.safetensors", mask_policy="base")  # type: ignore[arg-type]
    assert not (tmp_path / "m.safetensors").exists()


def test_nothing_selected_is_the_cores_error(family) -> None:
    with pytest.raises(ss.InvalidArgument, match="no float tensors selected for comparison"):
        ss.check_mask([family["c0"], family["c1"]], include=["^nothing$"])
    with pytest.raises(ss.InvalidArgument, match="no float tensors selected to measure"):
        ss.distance([family["c0"], family["c1"]], include=["^nothing$"])


def test_an_unknown_digest_and_scope_list_the_valid_ones(family) -> None:
    with pytest.raises(ss.InvalidArgument, match=r"\(blake3 or sha256\)"):
        ss.hash(family["c0"], digest="md5")  # type: ignore[arg-type]
    with pytest.raises(ss.InvalidArgument, match=r"\(global or layer\)"):
        ss.prune(family["c0"], None, sparsity=0.5, scope="row")  # type: ignore[arg-type]
