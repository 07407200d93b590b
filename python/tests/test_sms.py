"""The method's loop in the package: model_sparsity, RetrainLR and
sms_phases around a user's training function."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_soups import mask_fingerprints
from sparse_soups.errors import EvaluatorError, MaskMismatch
from sparse_soups.schedules import allr_peak, phase_sparsities, retrain_lr
from sparse_soups.torch import Candidate, RetrainLR, model_sparsity, param_norm, prune_model, sms_phases


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )  # fmt: skip


def batches(n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def weight_masks(model: nn.Module) -> dict:
    sd = model.state_dict()
    return mask_fingerprints({k: sd[k] for k in ("0.weight", "4.weight")})


def test_model_sparsity_counts_the_prunable_weights_only() -> None:
    net = small_net()
    assert model_sparsity(net) == 0.0
    report = prune_model(net, 0.6)
    assert model_sparsity(net) == pytest.approx(report["sparsity_after"], abs=1e-12)
    # Zeros elsewhere (a bias, batch-norm scales) do not count.
    with torch.no_grad():
        net[4].bias.zero_()
        net[1].weight.zero_()
    assert model_sparsity(net) == pytest.approx(report["sparsity_after"], abs=1e-12)
    assert model_sparsity(net, exclude=["^4\\."]) == pytest.approx(
        float((net[0].weight == 0).sum()) / net[0].weight.numel()
    )


def test_retrain_lr_scheduler_sets_the_trainers_rate_at_every_step() -> None:
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = RetrainLR(opt, 25, lr=0.1, peak=0.04)
    seen = []
    for _ in range(25):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [retrain_lr(i, 25, lr=0.1, peak=0.04) for i in range(25)]
    assert seen[2] == pytest.approx(0.04) and seen[0] > 0


def sgd_train(model: nn.Module, c: Candidate, data, prepare: bool = True) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = c.prepare(opt) if prepare else None
    torch.manual_seed(c.index)
    model.train()
    for _, (x, y) in zip(range(c.iterations), data * 10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_sms_phases_prunes_retrains_and_soups_every_phase() -> None:
    data = batches()
    dense = small_net()
    dense_state = copy.deepcopy(dense.state_dict())
    seen: list[tuple[int, int, float]] = []

    def retrain(model: nn.Module, c: Candidate) -> None:
        seen.append((c.phase, c.index, c.peak))
        sgd_train(model, c, data)

    results = []
    for r in sms_phases(dense, retrain, sparsity=0.75, phases=2, candidates=3, iterations=7, lr=0.1,
                        retrain_epochs=0.5, pretrain_epochs=2, recalibrate=data):  # fmt: skip
        results.append(r)
    expect = phase_sparsities(0.75, 2)
    assert [r.phase for r in results] == [1, 2]
    assert [(p, i) for p, i, _ in seen] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    for r, after in zip(results, expect.after, strict=True):
        assert r.fraction == pytest.approx(expect.fraction)
        assert r.sparsity == pytest.approx(after, abs=0.01)
        assert len(r.candidates) == 3 and r.chosen == [0, 1, 2]
        masks = weight_masks(r.soup)
        assert all(weight_masks(c) == masks for c in r.candidates)
        # The soup is the candidates' mean (batch norm recalibrated after).
        w = torch.stack([c[4].weight.detach() for c in r.candidates]).mean(0)
        assert torch.allclose(r.soup[4].weight.detach(), w, atol=1e-6)
    # Phase 1's peak is ALLR's for the dense model pruned by q.
    parent = copy.deepcopy(dense)
    prune_model(parent, expect.fraction, of_remaining=True)
    peak = allr_peak(param_norm(dense), param_norm(parent), expect.fraction, 0.1, 0.5, 2)
    assert results[0].peak == pytest.approx(peak) and seen[0][2] == pytest.approx(peak)
    # The dense model is left as it was.
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in dense_state.items())


def test_sms_phases_refuses_candidates_that_lost_the_mask() -> None:
    data = batches()

    def careless(model: nn.Module, c: Candidate) -> None:
        sgd_train(model, c, data, prepare=False)

    with pytest.raises(MaskMismatch, match="phase 1 candidate 0 lost the pruned parent's mask of 0.weight"):
        next(sms_phases(small_net(), careless, sparsity=0.5, phases=1, candidates=2, iterations=3,
                        lr=0.1, retrain_epochs=1, pretrain_epochs=1))  # fmt: skip


def test_sms_phases_greedy_soup_and_imp() -> None:
    data = batches()
    scores = iter([0.5, 0.9, 0.7, 0.95, 0.1])

    def evaluate(model: nn.Module) -> float:
        return next(scores)

    r = next(sms_phases(small_net(), lambda m, c: sgd_train(m, c, data), sparsity=0.5, phases=1,
                        candidates=3, iterations=3, lr=0.1, retrain_epochs=1, pretrain_epochs=1,
                        soup="greedy", evaluate=evaluate))  # fmt: skip
    # Ranked 1 (0.9), 2 (0.7), 0 (0.5): with 2 the soup scores 0.95 (kept), with 0 0.1.
    assert r.chosen == [1, 2]
    imp = next(sms_phases(small_net(), lambda m, c: sgd_train(m, c, data), sparsity=0.5, phases=1,
                          candidates=1, iterations=3, lr=0.1, retrain_epochs=1, pretrain_epochs=1))  # fmt: skip
    assert len(imp.candidates) == 1 and imp.sparsity == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="greedy soup needs evaluate"):
        next(sms_phases(small_net(), lambda m, c: None, sparsity=0.5, phases=1, candidates=2, iterations=1,
                        lr=0.1, retrain_epochs=1, pretrain_epochs=1, soup="greedy"))  # fmt: skip


@pytest.mark.parametrize("bad", [None, "0.9", float("nan")])
def test_sms_phases_greedy_scores_follow_the_one_rule(bad: object) -> None:
    data = batches()

    def evaluate(model: nn.Module) -> object:
        return bad

    with pytest.raises(EvaluatorError, match="candidate 0"):
        next(sms_phases(small_net(), lambda m, c: sgd_train(m, c, data), sparsity=0.5, phases=1,
                        candidates=2, iterations=2, lr=0.1, retrain_epochs=1, pretrain_epochs=1,
                        soup="greedy", evaluate=evaluate))  # fmt: skip
