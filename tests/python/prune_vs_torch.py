"""Compares `soup prune` with torch.nn.utils.prune on the same weights.

usage: prune_vs_torch.py SOUP WORKDIR

Global scope against prune.global_unstructured(L1Unstructured), layer scope
against prune.l1_unstructured per tensor, and two --of-remaining phases
against two rounds of torch's global pruning (whose PruningContainer prunes
the fraction of the still-unpruned entries). The pruned sets must have the
same size and may differ only among weights whose magnitude equals the
largest magnitude removed: torch.topk breaks such ties in no documented
order, soup removes the one earlier in (tensor order, index) first.
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch.nn.utils import prune

soup, work = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(3)
shapes = {"conv1.weight": (16, 3, 3, 3), "conv2.weight": (32, 16, 3, 3), "fc.weight": (10, 128)}
weights = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in shapes.items()}
# Ties across tensors and a few exact zeros, so the tie-break matters.
weights["conv2.weight"].flat[:40] = weights["conv1.weight"].flat[:40] * np.where(np.arange(40) % 2, -1, 1)
weights["fc.weight"].flat[:5] = 0.0
# A large tie class right at the global 60% threshold: the cut falls inside it.
mags = np.sort(np.concatenate([np.abs(w).ravel() for w in weights.values()]))
weights["fc.weight"].flat[5:400] = mags[int(0.6 * mags.size)]
tensors = dict(weights)
tensors["conv1.bias"] = rng.standard_normal(16).astype(np.float32)
src = os.path.join(work, "dense.safetensors")
save_file(tensors, src)
names = list(shapes)  # safetensors stores tensors sorted by name: the same order


class Holder(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(w.copy()))


def soup_prune(inp, out, *args):
    run = subprocess.run([soup, "prune", inp, "-o", out, "--json", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), load_file(out)


def compare(label, pruned_soup, holders, originals, threshold):
    total_soup = total_torch = 0
    for n in names:
        s = pruned_soup[n] == 0
        t = holders[n].weight_mask.detach().numpy() == 0
        total_soup += int(s.sum())
        total_torch += int(t.sum())
        differ = s != t
        if differ.any():
            mags = np.abs(originals[n][differ])
            assert np.all(mags == np.float32(threshold)), (label, n, mags[:5], threshold)
    assert total_soup == total_torch, (label, total_soup, total_torch)
    return total_soup


# Global, in one step.
report, out = soup_prune(src, os.path.join(work, "global.safetensors"), "--sparsity", "0.6")
holders = {n: Holder(weights[n]) for n in names}
prune.global_unstructured([(holders[n], "weight") for n in names], pruning_method=prune.L1Unstructured, amount=0.6)
n_all = sum(w.size for w in weights.values())
removed = compare("global", out, holders, weights, report["threshold"])
assert removed == round(0.6 * n_all) == report["zeros_after"], (removed, report["zeros_after"])
assert np.array_equal(out["conv1.bias"], tensors["conv1.bias"])

# Layer scope.
report, out = soup_prune(src, os.path.join(work, "layer.safetensors"), "--sparsity", "0.45", "--scope", "layer")
for n in names:
    h = Holder(weights[n])
    prune.l1_unstructured(h, "weight", amount=0.45)
    t = report["tensors"][names.index(n)]
    assert t["name"] == n
    s, m = out[n] == 0, h.weight_mask.numpy() == 0
    assert s.sum() == m.sum() == round(0.45 * weights[n].size), (n, s.sum(), m.sum())
    differ = s != m
    assert np.all(np.abs(weights[n][differ]) == np.float32(t["threshold"])), n

# Two IMP phases of q, of the remaining weights. Torch starts each phase from
# soup's previous output and mask, so a tie broken differently in phase 1
# cannot make phase 2 diverge.
q = 0.5
current = src
for phase in (1, 2):
    before = {n: v for n, v in load_file(current).items() if n in names}
    nxt = os.path.join(work, f"phase{phase}.safetensors")
    report, out = soup_prune(current, nxt, "--sparsity", str(q), "--of-remaining")
    holders = {n: Holder(before[n]) for n in names}
    for n in names:
        prune.custom_from_mask(holders[n], "weight", torch.from_numpy(before[n] != 0))
    prune.global_unstructured([(holders[n], "weight") for n in names], pruning_method=prune.L1Unstructured, amount=q)
    compare(f"phase {phase}", out, holders, before, report["threshold"])
    alive = sum(int((before[n] != 0).sum()) for n in names)
    assert report["removed"] == round(q * alive), (report["removed"], alive)
    current = nxt
print("ok")
