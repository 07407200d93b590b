"""The in-memory API gives the file API's results bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import model_state
from safetensors.numpy import load_file, save_file
from safetensors.torch import save_file as save_torch

import sparse_soups as ss


def candidates() -> list[dict[str, np.ndarray]]:
    parent = model_state(0)
    parent["conv.weight"][np.abs(parent["conv.weight"]) < 0.8] = 0
    out = []
    for i in range(3):
        rng = np.random.default_rng(10 + i)
        out.append(
            {
                k: (np.where(v != 0, v + rng.standard_normal(v.shape).astype(v.dtype), v).astype(v.dtype) if v.dtype.kind == "f" else v)
                for k, v in parent.items()
            }
        )
    return out


def assert_bits_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


def files(tmp_path: Path, dicts: list[dict]) -> list[Path]:
    paths = []
    for i, sd in enumerate(dicts):
        paths.append(tmp_path / f"in{i}.safetensors")
        ss.write_tensors(paths[-1], sd)
    return paths


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5]])
def test_merge_state_dicts_is_the_file_merge(tmp_path: Path, weights) -> None:
    cands = candidates()
    mem = ss.merge_state_dicts(cands, weights=weights)
    ss.merge(files(tmp_path, cands), tmp_path / "m.safetensors", weights=weights)
    from_file = load_file(str(tmp_path / "m.safetensors"))
    assert_bits_equal(mem, {k: from_file[k] for k in cands[0]})
    # Shared zeros stay exact zeros.
    assert np.array_equal(mem["conv.weight"] == 0, cands[0]["conv.weight"] == 0)


def test_state_dict_files_round_trip_through_safetensors(tmp_path: Path) -> None:
    sd = candidates()[0]
    ss.write_tensors(tmp_path / "a.safetensors", sd)
    assert_bits_equal({k: load_file(str(tmp_path / "a.safetensors"))[k] for k in sd}, sd)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_state_dict_is_the_file_prune(tmp_path: Path, scope: str) -> None:
    sd = candidates()[1]
    mem = ss.prune_state_dict(sd, 0.5, scope=scope, of_remaining=True)
    (src,) = files(tmp_path, [sd])
    ss.prune(src, tmp_path / "p.safetensors", 0.5, scope=scope, of_remaining=True)
    from_file = load_file(str(tmp_path / "p.safetensors"))
    assert_bits_equal(mem, {k: from_file[k] for k in sd})
    assert not np.array_equal(mem["fc.weight"], sd["fc.weight"])


def test_torch_tensors_in_and_out_including_bf16_and_views(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = {
        "l.weight": torch.randn(6, 4).t(),  # not contiguous: copied first
        "m.weight": torch.randn(5, 5, dtype=torch.bfloat16),
        "m.bias": torch.randn(5, dtype=torch.float16),
        "steps": torch.tensor(3),
    }
    pruned = ss.prune_state_dict(a, 0.4)
    assert all(isinstance(v, torch.Tensor) for v in pruned.values())
    assert pruned["m.weight"].dtype == torch.bfloat16 and pruned["steps"].item() == 3
    # The same bits as the file API on the same tensors saved by safetensors.
    save_torch({k: v.contiguous() for k, v in a.items()}, str(tmp_path / "a.safetensors"))
    ss.prune(tmp_path / "a.safetensors", tmp_path / "p.safetensors", 0.4)
    from safetensors.torch import load_file as load_torch

    ref = load_torch(str(tmp_path / "p.safetensors"))
    for k in a:
        assert torch.equal(pruned[k].view(torch.uint8) if pruned[k].dim() else pruned[k], ref[k].view(torch.uint8) if ref[k].dim() else ref[k]), k
    merged = ss.merge_state_dicts([pruned, pruned])
    for k in a:
        assert torch.equal(merged[k], pruned[k]), k


def test_mask_fingerprints_follow_the_mask_only() -> None:
    a = candidates()[0]
    b = {k: v * 3 if v.dtype.kind == "f" else v for k, v in a.items()}
    fa, fb = ss.mask_fingerprints(a), ss.mask_fingerprints(b)
    assert fa == fb and "bn.num_batches_tracked" not in fa
    c = {k: v.copy() for k, v in a.items()}
    c["fc.weight"][0, 0] = 0
    fc = ss.mask_fingerprints(c)
    assert fc["fc.weight"] != fa["fc.weight"] and fc["conv.weight"] == fa["conv.weight"]
    assert set(ss.mask_fingerprints(a, include=["^conv"])) == {"conv.weight", "conv.bias"}


def test_mask_fingerprints_are_check_mask_fingerprints(tmp_path: Path) -> None:
    a = candidates()[0]
    save_file(a, str(tmp_path / "a.safetensors"))
    report = ss.check_mask([tmp_path / "a.safetensors"], tmp_path / "a.safetensors")
    assert ss.mask_fingerprints(a) == {t["name"]: t["fingerprints"][0] for t in report["tensors"]}


def test_in_memory_errors_are_soup_errors() -> None:
    a, b = candidates()[:2]
    b = {k: v.copy() for k, v in b.items()}
    b["conv.weight"][b["conv.weight"] != 0] = 0
    with pytest.raises(ss.MaskMismatch):
        ss.merge_state_dicts([a, b])
    with pytest.raises(ss.InvalidArgument):
        ss.prune_state_dict(a, -0.1)
    with pytest.raises(TypeError, match="complex64"):
        ss.prune_state_dict({"w": np.zeros((2, 2), np.complex64)}, 0.5)
