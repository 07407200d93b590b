"""Merging state dicts in memory with a base and a method gives the file
merge's bytes and the CLI's; Python holds no safetensors codec and no
prunable rule of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from test_merge_methods import family

import sparse_soups as ss
import sparse_soups._memory as memory
import sparse_soups.torch as sst

METHODS = [
    ("task-arithmetic", dict(scale=0.7)),
    ("ties", dict(density=0.5)),
    ("dare-linear", dict(density=0.6, seed=3, weights=[0.5, 1.0, 0.8])),
    ("dare-ties", dict(density=0.6, seed=5)),
]


def cli_args(kw: dict) -> list[str]:
    args = []
    for key, value in kw.items():
        if key == "weights":
            args += ["--weights", ",".join(str(w) for w in value)]
        else:
            args += [f"--{key}", str(value)]
    return args


def assert_same(mem: dict, path: Path) -> None:
    ref = load_file(str(path))
    assert set(mem) == set(ref)
    for k, v in mem.items():
        assert v.dtype == ref[k].dtype and v.shape == ref[k].shape, k
        assert v.tobytes() == ref[k].tobytes(), k


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("method,kw", METHODS, ids=[m for m, _ in METHODS])
def test_base_merges_in_memory_and_from_files_equal_the_cli(tmp_path, soup, sparse, method, kw):
    base, cands = family(tmp_path, sparse=sparse)
    cli_out = tmp_path / "cli.safetensors"
    code, _, err = soup("merge", "--base", base, *cands, "-o", cli_out, "--method", method,
                        *cli_args(kw))
    assert code == 0, err
    py_out = tmp_path / "py.safetensors"
    report = ss.merge(cands, py_out, base=base, method=method, **kw)
    assert report["method"] == method and report["base"] == str(base)
    assert_same(load_file(str(py_out)), cli_out)
    mem = ss.merge_state_dicts([load_file(str(c)) for c in cands],
                               base=load_file(str(base)), method=method, **kw)
    assert list(mem) == list(load_file(str(base)))
    assert_same(mem, cli_out)
    if sparse:
        b = load_file(str(base))
        assert np.array_equal(mem["fc.weight"] == 0, b["fc.weight"] == 0)


@pytest.mark.parametrize("policy", ["base", "none", "refuse"])
def test_mask_policies_in_memory_equal_the_cli(tmp_path, soup, policy):
    base, cands = family(tmp_path, sparse=True, odd_mask=True)
    cli_out = tmp_path / "cli.safetensors"
    code, _, err = soup("merge", "--base", base, *cands, "-o", cli_out, "--method", "ties",
                        "--density", "0.5", "--mask-policy", policy)
    dicts = [load_file(str(c)) for c in cands]
    kw = dict(base=load_file(str(base)), method="ties", density=0.5, mask_policy=policy)
    if policy == "refuse":
        assert code != 0
        with pytest.raises(ss.MaskMismatch, match="state dict 1"):
            ss.merge_state_dicts(dicts, **kw)
        return
    assert code == 0, err
    assert_same(ss.merge_state_dicts(dicts, **kw), cli_out)


def test_torch_state_dicts_merge_with_a_base(tmp_path):
    base, cands = family(tmp_path, sparse=True)
    as_torch = lambda p: {k: torch.from_numpy(v) for k, v in load_file(str(p)).items()}
    mem = ss.merge_state_dicts([as_torch(c) for c in cands], base=as_torch(base),
                               method="ties", density=0.5)
    ref = ss.merge_state_dicts([load_file(str(c)) for c in cands], base=load_file(str(base)),
                               method="ties", density=0.5)
    assert all(isinstance(v, torch.Tensor) for v in mem.values())
    for k in ref:
        assert mem[k].numpy().tobytes() == ref[k].tobytes(), k


def test_bad_method_parameters_are_invalid_arguments(tmp_path):
    base, cands = family(tmp_path, sparse=True)
    dicts = [load_file(str(c)) for c in cands]
    b = load_file(str(base))
    with pytest.raises(ss.InvalidArgument, match="needs method="):
        ss.merge_state_dicts(dicts, base=b)
    with pytest.raises(ss.InvalidArgument, match="density"):
        ss.merge_state_dicts(dicts, base=b, method="ties")
    with pytest.raises(ss.InvalidArgument, match="takes no seed"):
        ss.merge_state_dicts(dicts, base=b, method="ties", density=0.5, seed=1)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ss.InvalidArgument, match="unknown merge method"):
        ss.merge(cands, out, base=base, method="mean-of-medians")
    assert not out.exists()


def test_python_holds_no_safetensors_codec_and_no_prunable_rule():
    source = Path(memory.__file__).read_text()
    for codec in ("struct", "json.dumps", "np.fromfile", "tempfile"):
        assert codec not in source, codec
    torch_source = Path(sst.__file__).read_text()
    assert 'endswith("weight")' not in torch_source


def test_prunable_names_come_from_soup_core():
    got = memory.prunable([("fc.weight", 2, True), ("fc.bias", 1, True),
                           ("bn.weight", 1, True), ("emb.weight", 2, False)])
    assert got == [True, False, False, False]
    assert memory.prunable([("fc.bias", 1, True)], include=["bias$"]) == [True]
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    assert sst.model_sparsity(model) == 0.0
