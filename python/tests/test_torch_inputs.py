"""What PyTorch users pass: modules, compiled and data-parallel models,
batches of any shape, state dicts given to the file API by mistake, and
GPU tensors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sparse_soups as ss
from sparse_soups.torch import greedy_soup, prune_model, recalibrate_bn, uniform_soup


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def pruned_family(n: int = 3) -> list[nn.Module]:
    """``n`` models sharing one mask, with different surviving weights."""
    parent = net(0)
    prune_model(parent, 0.5)
    models = []
    for i in range(n):
        m = copy.deepcopy(parent)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(torch.where(p != 0, 1.0 + 0.1 * (i + 1), 1.0))
        models.append(m)
    return models


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_merge_state_dicts_takes_modules() -> None:
    models = pruned_family()
    from_modules = ss.merge_state_dicts(models)
    assert_same(from_modules, ss.merge_state_dicts([m.state_dict() for m in models]))
    mixed = ss.merge_state_dicts([models[0], models[1].state_dict(), models[2]])
    assert_same(mixed, from_modules)
    with pytest.raises(TypeError, match=r"state dict 1 is a list, not a state dict"):
        ss.merge_state_dicts([models[0], [1, 2]])
    with pytest.raises(TypeError, match=r"state dict 0 is a path.*sparse_soups.merge\(\)"):
        ss.merge_state_dicts(["a.safetensors"])


def test_uniform_soup_of_compiled_models_loads_into_the_plain_model() -> None:
    models = pruned_family()
    plain = uniform_soup(models)
    compiled = [torch.compile(m) for m in models]
    assert next(iter(compiled[0].state_dict())).startswith("_orig_mod.")
    soup = uniform_soup(compiled)
    assert_same(soup, plain)
    net(1).load_state_dict(soup)  # strict: every key of the plain model
    # State dicts of compiled models, and a mix with plain models.
    assert_same(uniform_soup([c.state_dict() for c in compiled]), plain)
    assert_same(uniform_soup([compiled[0], models[1], compiled[2].state_dict()]), plain)


def test_soups_of_data_parallel_models_load_into_the_plain_model() -> None:
    models = pruned_family()
    plain = uniform_soup(models)
    wrapped = [nn.DataParallel(m) for m in models]
    assert next(iter(wrapped[0].state_dict())).startswith("module.")
    assert_same(uniform_soup(wrapped), plain)
    # DDP and FSDP state dicts carry the same `module.` prefix; a compiled
    # DDP model carries both.
    ddp_like = [{f"module.{k}": v for k, v in m.state_dict().items()} for m in models]
    both = [{f"_orig_mod.{k}": v for k, v in sd.items()} for sd in ddp_like]
    assert_same(uniform_soup(ddp_like), plain)
    assert_same(uniform_soup(both), plain)
    result = greedy_soup(both, lambda sd: 1.0)
    assert result.chosen == [0, 1, 2]
    assert_same(result.state_dict, plain)
    net(1).load_state_dict(result.state_dict)


def test_a_plain_model_with_a_child_named_module_keeps_its_keys() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    a, b = Holder(), Holder()
    soup = uniform_soup([a, b], mask_policy="union")
    assert list(soup) == ["module.weight", "module.bias"]
    Holder().load_state_dict(soup)


class Batch:
    def __init__(self, x: torch.Tensor) -> None:
        self.pixels = x
        self.labels = torch.zeros(len(x), dtype=torch.long)


def batches(kind: str) -> list:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(16, 4, generator=g) * 3 + 1 for _ in range(4)]
    if kind == "tuple":
        return [(x, torch.zeros(16)) for x in xs]
    if kind == "dict":
        return [{"image": x, "label": torch.zeros(16)} for x in xs]
    return [Batch(x) for x in xs]


@pytest.mark.parametrize("kind", ["dict", "object"])
def test_recalibrate_bn_with_input_fn_matches_tuple_batches(kind: str) -> None:
    reference = net(0)
    recalibrate_bn(reference, batches("tuple"), fraction=1.0)
    model = net(0)
    pick = (lambda b: b["image"]) if kind == "dict" else (lambda b: b.pixels)
    assert recalibrate_bn(model, batches(kind), fraction=1.0, input_fn=pick) == 4
    assert_same(model.state_dict(), reference.state_dict())
    assert not torch.equal(model[1].running_mean, net(0)[1].running_mean)


def test_recalibrate_bn_input_fn_may_return_a_structure() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, inputs: dict) -> torch.Tensor:
            return self.bn(inputs["a"] + inputs["b"])

    model = TwoInputs()
    loader = [{"a": torch.randn(8, 4), "b": torch.ones(8, 4)} for _ in range(2)]
    assert recalibrate_bn(model, loader, batches=2, input_fn=lambda b: b) == 2
    assert model.bn.num_batches_tracked.item() == 2


@pytest.mark.parametrize("kind", ["dict", "object"])
def test_recalibrate_bn_says_what_it_expected(kind: str) -> None:
    model = net(0)
    recalibrate_bn(model, batches("tuple"), fraction=1.0)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(TypeError) as e:
        recalibrate_bn(model, batches(kind), fraction=1.0)
    message = str(e.value)
    assert "batch 0 is a " + ("dict with keys ['image', 'label']" if kind == "dict" else "Batch") in message
    assert "tuple/list" in message and "input_fn=" in message, message
    assert not model.training
    assert_same(model.state_dict(), before)  # the statistics are restored


def test_file_api_given_a_state_dict_points_to_the_in_memory_function(tmp_path: Path) -> None:
    sd = {"w": np.ones((2, 2), np.float32)}
    out = tmp_path / "o.safetensors"
    cases = [
        (lambda: ss.merge(sd, out), r"merge\(\) takes paths.*paths argument is a state dict.*merge_state_dicts\(\)"),
        (lambda: ss.merge([sd, sd], out), r"item 0 is a state dict.*merge_state_dicts\(\)"),
        (lambda: ss.merge([net(0)], out), r"item 0 is a module.*merge_state_dicts\(\)"),
        (lambda: ss.greedy_merge([sd], out, lambda p: 1.0), r"sparse_soups.torch.greedy_soup\(\)"),
        (lambda: ss.prune(sd, out, 0.5), r"prune\(\) takes paths.*prune_state_dict\(\).*prune_model\(\)"),
        (lambda: ss.prune(net(0), out, 0.5), r"path is a module.*prune_model\(\)"),
        (lambda: ss.check_mask([sd]), r"mask_fingerprints\(\)"),
        (lambda: ss.inspect(sd), r"inspect\(\) takes paths.*save it with safetensors first"),
        (lambda: ss.hash(torch.ones(2)), r"hash\(\) takes paths.*path is a tensor"),
        (lambda: ss.diff(sd, sd), r"first checkpoint is a state dict"),
        (lambda: ss.distance([sd, sd]), r"distance\(\) takes paths"),
    ]
    for call, pattern in cases:
        with pytest.raises(TypeError, match=pattern):
            call()
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_cuda_state_dicts_come_back_on_their_device() -> None:
    models = [m.cuda() for m in pruned_family()]
    cpu = [copy.deepcopy(m).cpu() for m in models]
    merged = ss.merge_state_dicts(models)
    assert all(t.device == models[0][0].weight.device for t in merged.values())
    reference = ss.merge_state_dicts(cpu)
    for k in merged:
        assert torch.equal(merged[k].cpu(), reference[k]), k
    soup = uniform_soup(models)
    assert all(t.is_cuda for t in soup.values())
    greedy = greedy_soup(models, lambda sd: float(sum(t.float().sum() for t in sd.values())))
    assert all(t.is_cuda for t in greedy.state_dict.values())
    pruned = ss.prune_state_dict(models[0].state_dict(), 0.8)
    assert all(t.is_cuda for t in pruned.values())
    # A mixed state dict: each result tensor follows its own input.
    mixed = {"a.weight": torch.randn(4, 4, device="cuda"), "b.weight": torch.randn(4, 4)}
    out = ss.prune_state_dict(mixed, 0.5)
    assert out["a.weight"].is_cuda and not out["b.weight"].is_cuda
    # A live model is pruned in place, on its device.
    report = prune_model(models[1], 0.8)
    assert report["removed"] > 0 and models[1][0].weight.is_cuda
