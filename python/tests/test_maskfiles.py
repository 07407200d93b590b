"""Mask files (`soup mask ...`) against numpy: the packed bits are
`np.packbits(w.ravel() != 0, bitorder="little")`, vote/union/intersect are
counts of kept weights, and `torch.nn.utils.prune` checkpoints convert both
ways."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import cli_error


def sparse_state(seed: int, density: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {
        "a.weight": rng.standard_normal((13, 7)).astype(np.float32),
        "b.weight": rng.standard_normal((4, 3, 5)).astype(np.float16),
        "b.bias": rng.standard_normal(9).astype(np.float64),
        "steps": np.array([3], dtype=np.int64),
    }
    for name, w in state.items():
        if w.dtype.kind == "f":
            w[rng.random(w.shape) > density] = 0
    return state


def unpack(path: Path) -> dict[str, np.ndarray]:
    """name -> bool mask of the original shape, from a mask file."""
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        infos = json.loads(meta["mask.tensors"])
        assert meta["mask.format"] == "soup-packed-bits-v1"
        assert meta["mask.bitorder"] == "little"
        out = {}
        for name in f.keys():
            bits = f.get_tensor(name)
            assert bits.dtype == np.uint8 and bits.ndim == 1
            info = infos[name]
            digest = "sha256:" + hashlib.sha256(bits.tobytes()).hexdigest()
            assert info["digest"] == digest
            n = int(np.prod(info["shape"]))
            out[name] = np.unpackbits(bits, count=n, bitorder="little").reshape(info["shape"]) == 1
    return out


def test_extract_is_numpy_packbits_and_32x_smaller(tmp_path, soup):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((256, 257)).astype(np.float32)
    big[rng.random(big.shape) < 0.5] = 0
    state = {**sparse_state(1), "big.weight": big}
    save_file(state, tmp_path / "m.safetensors")
    code, report, err = soup("mask", "extract", tmp_path / "m.safetensors", "-o", tmp_path / "mask.safetensors")
    assert code == 0, err
    masks = unpack(tmp_path / "mask.safetensors")
    floats = {k: v for k, v in state.items() if v.dtype.kind == "f"}
    assert sorted(masks) == sorted(floats)
    for name, w in floats.items():
        np.testing.assert_array_equal(masks[name], w != 0)
        with safe_open(str(tmp_path / "mask.safetensors"), framework="np") as f:
            np.testing.assert_array_equal(
                f.get_tensor(name), np.packbits(w.ravel() != 0, bitorder="little")
            )
    # The digests are check-mask's fingerprints.
    code, check, err = soup("check-mask", tmp_path / "m.safetensors", "--reference", tmp_path / "mask.safetensors")
    assert code == 0, err
    fingerprints = {t["name"]: t["reference_fingerprint"] for t in check["tensors"]}
    for t in report["tensors"]:
        assert t["digest"] == "sha256:" + fingerprints[t["name"]]
    # About 1/32 of the F32 weights.
    size = (tmp_path / "mask.safetensors").stat().st_size
    assert size < big.nbytes / 32 * 1.2 + 4096, size


def test_apply_mask_and_check_mask_accept_mask_files(tmp_path, soup):
    parent = sparse_state(2)
    dense = {k: (v + 1 if v.dtype.kind == "f" else v) for k, v in sparse_state(3, density=1.0).items()}
    save_file(parent, tmp_path / "parent.safetensors")
    save_file(dense, tmp_path / "dense.safetensors")
    assert soup("mask", "extract", tmp_path / "parent.safetensors", "-o", tmp_path / "mask.safetensors")[0] == 0
    code, _, err = soup("apply-mask", tmp_path / "dense.safetensors", "--mask", tmp_path / "mask.safetensors", "-o", tmp_path / "via-file.safetensors")
    assert code == 0, err
    code, _, err = soup("apply-mask", tmp_path / "dense.safetensors", "--mask", tmp_path / "parent.safetensors", "-o", tmp_path / "via-model.safetensors")
    assert code == 0, err
    a = load_file(tmp_path / "via-file.safetensors")
    b = load_file(tmp_path / "via-model.safetensors")
    for name, w in parent.items():
        np.testing.assert_array_equal(a[name], b[name])
        if w.dtype.kind == "f":
            np.testing.assert_array_equal(a[name] != 0, w != 0)
    for ref in ("mask.safetensors", "parent.safetensors"):
        code, check, err = soup("check-mask", tmp_path / "via-file.safetensors", "--reference", tmp_path / ref)
        assert code == 0 and check["identical"], err
        # The dense model differs from the mask: a finding, exit 1.
        code, check, err = soup("check-mask", tmp_path / "dense.safetensors", "--reference", tmp_path / ref)
        assert code == 1 and not check["identical"], err
        assert check["reference"] == str(tmp_path / ref)


@pytest.mark.parametrize("op,k", [("vote", None), ("vote", 1), ("vote", 3), ("union", None), ("intersect", None)])
def test_combinations_against_numpy(tmp_path, soup, op, k):
    states = [sparse_state(10 + i, density=0.6) for i in range(4)]
    paths = []
    for i, s in enumerate(states):
        save_file(s, tmp_path / f"m{i}.safetensors")
        paths.append(tmp_path / f"m{i}.safetensors")
    # Mix models and mask files.
    assert soup("mask", "extract", paths[1], "-o", tmp_path / "m1.mask")[0] == 0
    inputs = [paths[0], tmp_path / "m1.mask", paths[2], paths[3]]
    extra = ["--min-votes", str(k)] if k is not None else []
    code, report, err = soup("mask", op, *inputs, "-o", tmp_path / "out.safetensors", *extra)
    assert code == 0, err
    need = {"union": 1, "intersect": 4}.get(op, k if k is not None else 3)
    assert report["min_votes"] == need
    got = unpack(tmp_path / "out.safetensors")
    for name in got:
        votes = sum((s[name] != 0).astype(int) for s in states)
        np.testing.assert_array_equal(got[name], votes >= need, err_msg=name)


def test_wrong_shape_mask_file_is_one_line_and_writes_nothing(tmp_path, soup):
    save_file(sparse_state(4), tmp_path / "m.safetensors")
    other = sparse_state(4)
    other["a.weight"] = other["a.weight"][:, :6].copy()
    save_file(other, tmp_path / "other.safetensors")
    assert soup("mask", "extract", tmp_path / "other.safetensors", "-o", tmp_path / "mask.safetensors")[0] == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (
        ("apply-mask", tmp_path / "m.safetensors", "--mask", tmp_path / "mask.safetensors", "-o", tmp_path / "out.safetensors"),
        ("mask", "vote", tmp_path / "m.safetensors", tmp_path / "mask.safetensors", tmp_path / "m.safetensors", "-o", tmp_path / "out.safetensors"),
        ("check-mask", tmp_path / "m.safetensors", "--reference", tmp_path / "mask.safetensors"),
    ):
        code, _, err = soup(*args)
        assert code == 2, err
        assert "a.weight" in cli_error(err) and "shape" in cli_error(err)
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_corrupt_mask_file_is_refused(tmp_path, soup):
    save_file(sparse_state(5), tmp_path / "m.safetensors")
    assert soup("mask", "extract", tmp_path / "m.safetensors", "-o", tmp_path / "mask.safetensors")[0] == 0
    with safe_open(str(tmp_path / "mask.safetensors"), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["a.weight"][0] ^= 1
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    code, _, err = soup("apply-mask", tmp_path / "m.safetensors", "--mask", tmp_path / "bad.safetensors", "-o", tmp_path / "out.safetensors")
    assert code == 2 and "digest" in cli_error(err), err
    assert not (tmp_path / "out.safetensors").exists()


def test_torch_prune_round_trip(tmp_path, soup):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as load_torch, save_file as save_torch
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.random_unstructured(model[2], "weight", amount=0.3)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert "0.weight_orig" in state and "0.weight_mask" in state
    save_torch(state, str(tmp_path / "pruned.safetensors"))
    code, report, err = soup("mask", "from-torch-prune", tmp_path / "pruned.safetensors", "-o", tmp_path / "plain.safetensors")
    assert code == 0, err
    plain = load_torch(str(tmp_path / "plain.safetensors"))
    assert sorted(plain) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for i in (0, 2):
        assert torch.equal(plain[f"{i}.weight"], model[i].weight.detach())
    assert [t["zeros"] for t in report["tensors"]] == [
        int((model[i].weight_mask == 0).sum()) for i in (0, 2)
    ]
    # A plain model loads the result.
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    fresh.load_state_dict(plain)

    code, _, err = soup("mask", "to-torch-prune", tmp_path / "plain.safetensors", "-o", tmp_path / "back.safetensors")
    assert code == 0, err
    back = load_torch(str(tmp_path / "back.safetensors"))
    repruned = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    for i in (0, 2):
        prune.identity(repruned[i], "weight")
    repruned.load_state_dict(back)
    repruned(torch.zeros(1, 6))  # the forward pre-hook recomputes `weight`
    for i in (0, 2):
        assert torch.equal(repruned[i].weight, model[i].weight)
        assert torch.equal(back[f"{i}.weight_mask"], (plain[f"{i}.weight"] != 0).float())


def test_torch_prune_bad_inputs(tmp_path, soup):
    w = np.ones((2, 2), dtype=np.float32)
    cases = {
        "lonely": ({"w_orig": w}, "has no `w_mask`"),
        "not01": ({"w_orig": w, "w_mask": w * 2}, "only 0 and 1"),
        "taken": ({"w_orig": w, "w_mask": w, "w": w}, "plain name is taken"),
        "none": ({"w": w}, "no `name_orig`"),
    }
    for name, (state, problem) in cases.items():
        save_file(state, tmp_path / f"{name}.safetensors")
        code, _, err = soup("mask", "from-torch-prune", tmp_path / f"{name}.safetensors", "-o", tmp_path / "out.safetensors")
        assert code == 2 and problem in cli_error(err), (name, err)
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out.safetensors").exists()


def test_python_api_writes_and_combines_mask_files(tmp_path):
    import sparse_soups

    states = [sparse_state(20 + i, density=0.6) for i in range(3)]
    paths = []
    for i, s in enumerate(states):
        save_file(s, tmp_path / f"m{i}.safetensors")
        paths.append(tmp_path / f"m{i}.safetensors")
    report = sparse_soups.mask_extract(paths[0], tmp_path / "m0.mask")
    assert {t["name"] for t in report["tensors"]} == {"a.weight", "b.weight", "b.bias"}
    for name, m in unpack(tmp_path / "m0.mask").items():
        np.testing.assert_array_equal(m, states[0][name] != 0)
    check = sparse_soups.check_mask([paths[0]], reference=tmp_path / "m0.mask")
    assert check["identical"]
    inputs = [tmp_path / "m0.mask", paths[1], paths[2]]
    for how, k, need in (("vote", None, 2), ("vote", 3, 3), ("union", None, 1), ("intersect", None, 3)):
        out = tmp_path / f"{how}-{need}.mask"
        report = sparse_soups.mask_combine(inputs, out, how, k)
        assert report["min_votes"] == need
        for name, m in unpack(out).items():
            votes = sum((s[name] != 0).astype(int) for s in states)
            np.testing.assert_array_equal(m, votes >= need)
    with pytest.raises(sparse_soups.InvalidArgument, match="between 1 and 3 votes"):
        sparse_soups.mask_combine(inputs, tmp_path / "x.mask", "vote", 4)
    with pytest.raises(sparse_soups.InvalidArgument, match="min_votes"):
        sparse_soups.mask_combine(inputs, tmp_path / "x.mask", "union", 1)
    assert not (tmp_path / "x.mask").exists()
