"""sparse_soups.torch: mask enforcement, batch-norm recalibration, soups
and pruning of live models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import LEVELS, scripted_scores, write_evaluator

import sparse_soups as ss
from sparse_soups.torch import MaskEnforcer, greedy_soup, prune_model, recalibrate_bn, uniform_soup


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10),
    )


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_mask_enforcer_keeps_pruned_weights_and_state_at_zero(make_opt) -> None:
    model = small_net()
    prune_model(model, 0.6)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    pruned = {n: (p.detach() == 0).clone() for n, p in weights.items()}
    before = {n: p.detach().clone() for n, p in weights.items()}
    opt = make_opt(model.parameters())
    enforcer = MaskEnforcer(model, opt)
    assert set(enforcer.masks) == set(weights)
    assert enforcer.sparsity == pytest.approx(0.6, abs=0.01)
    train_steps(model, opt, 5)
    for n, p in weights.items():
        assert torch.equal(p.detach()[pruned[n]], torch.zeros(int(pruned[n].sum())))
        assert not torch.signbit(p.detach()[pruned[n]]).any(), "pruned weights are +0.0"
        assert not torch.equal(p.detach()[~pruned[n]], before[n][~pruned[n]]), "the rest trains"
        for value in opt.state[p].values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                assert (value[pruned[n]] == 0).all()
    # Without the hook, the same training revives pruned weights: the
    # test above would fail.
    enforcer.remove()
    train_steps(model, opt, 2)
    assert any((p.detach()[pruned[n]] != 0).any() for n, p in weights.items())
    enforcer.apply()
    assert all((p.detach()[pruned[n]] == 0).all() for n, p in weights.items())


def test_mask_enforcer_selection_by_pattern() -> None:
    model = small_net()
    enforcer = MaskEnforcer(model, include=[r"\.bias$"], exclude=[r"^1\."])
    assert set(enforcer.masks) == {"0.bias", "4.bias"}


def recal_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 1, 6, 6, generator=g) * 2 + 1, torch.zeros(8)) for _ in range(10)]


def recal_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Dropout(0.5), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, momentum=0.1))


@pytest.mark.parametrize("mode", ["cumulative", "ema"])
def test_recalibrate_bn_matches_a_direct_computation(mode: str) -> None:
    model = recal_net().eval()
    conv, bn = model[1], model[2]
    bn.running_mean.fill_(5.0)
    data = recal_data()
    used = recalibrate_bn(model, data, fraction=0.25, mode=mode)
    assert used == 3  # ceil(0.25 * 10)
    with torch.no_grad():
        feats = [conv(x) for x, _ in data[:3]]  # dropout must be off
    means = [f.mean((0, 2, 3)) for f in feats]
    variances = [f.var((0, 2, 3), unbiased=True) for f in feats]
    if mode == "cumulative":
        want_mean, want_var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
    else:
        want_mean, want_var = torch.zeros(3), torch.ones(3)
        for m, v in zip(means, variances):
            want_mean = 0.9 * want_mean + 0.1 * m
            want_var = 0.9 * want_var + 0.1 * v
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 3
    assert not model.training and not model[0].training and bn.momentum == 0.1


def test_recalibrate_bn_batches_and_errors() -> None:
    model = recal_net()
    assert recalibrate_bn(model, recal_data(), batches=10) == 10
    assert model.training, "training mode is restored"
    with pytest.raises(ValueError):
        recalibrate_bn(model, recal_data(), mode="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        recalibrate_bn(model, recal_data(), fraction=0.0)
    with pytest.raises(TypeError, match="batches=N"):
        recalibrate_bn(model, iter(recal_data()))
    assert recalibrate_bn(model, iter(recal_data()), batches=2) == 2


def test_uniform_soup_is_soup_merge(tmp_path: Path) -> None:
    parent = small_net()
    prune_model(parent, 0.5)
    models = []
    for seed in range(3):
        m = small_net()
        m.load_state_dict(parent.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=0.05 * (seed + 1), momentum=0.9)
        MaskEnforcer(m, opt)
        train_steps(m, opt, 2)
        models.append(m)
    soup = uniform_soup(models)
    paths = []
    for i, m in enumerate(models):
        paths.append(tmp_path / f"c{i}.safetensors")
        save_file(m.state_dict(), str(paths[-1]))
    ss.merge(paths, tmp_path / "soup.safetensors")
    ref = load_file(str(tmp_path / "soup.safetensors"))
    assert list(soup) == list(parent.state_dict())
    for k, v in soup.items():
        assert torch.equal(v, ref[k]), k
    w = "0.weight"
    assert torch.equal(soup[w] == 0, parent.state_dict()[w] == 0)
    models[0].state_dict()[w].view(-1)[torch.nonzero(soup[w].view(-1) == 0)[0]] = 1.0
    with pytest.raises(ss.MaskMismatch):
        uniform_soup(models)


# ----- greedy soups: the rule of `soup merge --greedy`, on a scripted evaluator -----

def candidate_dicts() -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.full((2, 3), level), "w0": torch.tensor([0.0, level])} for level in LEVELS]


@pytest.mark.parametrize("strict", [False, True])
def test_greedy_soup_follows_soup_merge_greedy(tmp_path: Path, soup, strict: bool) -> None:
    table = scripted_scores()
    evaluator = write_evaluator(tmp_path, table)
    cands = candidate_dicts()

    def evaluate(sd: dict[str, torch.Tensor]) -> float:
        return table[f"{sd['w'].double().mean().item():.6f}"]

    result = greedy_soup(cands, evaluate, strict=strict)
    paths = []
    for i, c in enumerate(cands):
        paths.append(tmp_path / f"c{i}.safetensors")
        save_file(c, str(paths[-1]))
    out = tmp_path / "greedy.safetensors"
    flags = ["--strict"] if strict else []
    code, cli, err = soup(
        "merge", *paths, "-o", out, "--greedy", "--eval-cmd", f"{sys.executable} {evaluator} {{}}", *flags
    )
    assert code == 0, err
    index = {str(p): i for i, p in enumerate(paths)}
    assert result.chosen == [index[p] for p in cli["chosen"]]
    assert [(t.candidate, t.candidate_score, t.score, t.kept) for t in result.trials] == [
        (index[t["candidate"]], t["candidate_score"], t["score"], t["kept"]) for t in cli["trials"]
    ]
    assert result.score == cli["score"]
    ref = load_file(str(out))
    for k in cands[0]:
        assert torch.equal(result.state_dict[k], ref[k]), k
    # Strict: {1, 3} ties and {1, 2, 0} ties: both rejected.
    assert result.chosen == ([1, 2] if strict else [1, 3, 0])


def test_greedy_soup_with_given_scores_never_scores_candidates() -> None:
    seen = []

    def evaluate(sd: dict[str, torch.Tensor]) -> float:
        seen.append(sd["w"].mean().item())
        return 1.0

    result = greedy_soup(candidate_dicts(), evaluate, scores=[0.1, 0.2, 0.3, 0.4])
    assert result.chosen == [3, 2, 1, 0] and len(seen) == 3
    assert torch.equal(result.state_dict["w"], torch.full((2, 3), 3.75))
    with pytest.raises(ValueError):
        greedy_soup(candidate_dicts(), evaluate, scores=[0.1])


def test_prune_model_prunes_in_place_like_prune_state_dict() -> None:
    model = small_net()
    params = list(model.parameters())
    expected = ss.prune_state_dict(model.state_dict(), 0.7, scope="layer")
    report = prune_model(model, 0.7, scope="layer")
    assert list(model.parameters()) == params
    assert {t["name"] for t in report["tensors"]} == {"0.weight", "4.weight"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert float((model[0].weight == 0).float().mean()) == pytest.approx(0.7, abs=0.03)
    assert report["sparsity_after"] == pytest.approx(0.7, abs=0.01)
