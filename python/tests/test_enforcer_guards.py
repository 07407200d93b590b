"""MaskEnforcer's guards: no zeros to keep, an optimizer over other
parameters, a second enforcer on one optimizer, and the context manager."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from sparse_soups.torch import MaskEnforcer, prune_model


def pruned_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    prune_model(net, 0.5)
    return net


def step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    net(torch.randn(4, 6)).pow(2).sum().backward()
    opt.step()


def test_warns_when_the_model_has_no_zeros() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(6, 8)
    with pytest.warns(UserWarning, match="no zeros to keep.*after pruning"):
        MaskEnforcer(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaskEnforcer(pruned_net())


def test_refuses_an_optimizer_over_other_parameters() -> None:
    net = pruned_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    copied = copy.deepcopy(net)  # the optimizer still holds net's parameters
    with pytest.raises(ValueError, match="does not hold the model's parameter.*0.weight"):
        MaskEnforcer(copied, opt)


def test_refuses_a_second_enforcer_on_one_optimizer() -> None:
    net = pruned_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    first = MaskEnforcer(net, opt)
    with pytest.raises(ValueError, match="already has an enforcer attached"):
        MaskEnforcer(net, opt)
    first.remove()
    MaskEnforcer(net, opt).remove()  # after remove() another may attach


def test_context_manager_removes_the_hook_on_exit() -> None:
    net = pruned_net()
    zeros = net[0].weight.detach() == 0
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    with MaskEnforcer(net, opt) as enforcer:
        assert enforcer.sparsity == pytest.approx(0.5, abs=0.05)
        for _ in range(3):
            step(net, opt)
            assert bool((net[0].weight[zeros] == 0).all())
    step(net, opt)  # no hook: momentum and gradients revive the zeros
    assert bool((net[0].weight[zeros] != 0).any())
    # The optimizer is free again: a new enforcer attaches.
    MaskEnforcer(net, opt).remove()
