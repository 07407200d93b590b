"""Optional: `soup merge --base` against mergekit's own merge of the same
dense inputs (`mergekit-pytorch`, run in this process through its click
entry point, so that mergekit is imported once). The tests skip unless
mergekit is installed in the test environment (`pip install mergekit`).

Compared: task arithmetic (weights, lambda), TIES (trim, sign election,
disjoint mean; densities down to one where mergekit's "keep at least one"
rule decides a small tensor) and DARE-linear / DARE-TIES. DARE's drop is
random in both tools and their random streams differ, so DARE is compared
twice: at density 1 through the plain CLI, and at density < 1 with
mergekit's Bernoulli drop replaced by soup's documented stream
(`dare_keep`), which leaves everything else (the rescaling that keeps each
task vector's L1 norm, the weights, the election, lambda) to mergekit.

Tolerance: float32 tensors agree within rtol 1e-5 / atol 1e-6 (both tools
compute in f32; sums differ in order), float16 tensors (merged by
mergekit in float32 and written as float32) within rtol 2e-3 / atol 2e-3
(soup writes them as float16, one rounding). Elements where TIES's
trim is a free choice (magnitudes equal to the threshold, see
`tied_at_threshold`) are left out of the TIES comparison."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from test_merge_methods import dare_keep, family

torch = pytest.importorskip("torch")
mergekit_raw = pytest.importorskip("mergekit.scripts.merge_raw_pytorch")
sparsify = pytest.importorskip("mergekit.sparsify")


def mergekit(tmp: Path, method: str, base: Path, cands, *, weights, density=None,
             lam=None) -> dict[str, np.ndarray]:
    """mergekit's merge of float copies of `base` and `cands` (mergekit
    merges every tensor, integer ones included, so those stay out)."""
    floats = []
    for path in [base, *cands]:
        copy = tmp / f"mk-{path.name}"
        save_file({k: v for k, v in load_file(str(path)).items() if v.dtype.kind == "f"},
                  str(copy))
        floats.append(copy)
    lines = [f"merge_method: {method}", f"base_model: {floats[0]}", "dtype: float32"]
    if lam is not None:
        lines.append(f"parameters: {{lambda: {lam}}}")
    lines.append("models:")
    for path, w in zip(floats[1:], weights):
        params = f"weight: {w}" + ("" if density is None else f", density: {density}")
        lines += [f"  - model: {path}", f"    parameters: {{{params}}}"]
    config = tmp / f"{method}.yml"
    config.write_text("\n".join(lines) + "\n")
    out = tmp / f"mk-out-{method}"
    shutil.rmtree(out, ignore_errors=True)
    mergekit_raw.main.main([str(config), str(out), "--quiet", "--lazy-unpickle"],
                           standalone_mode=False)
    return load_file(str(out / "model.safetensors"))


def tied_at_threshold(base: Path, cands, density) -> dict[str, np.ndarray]:
    """Per tensor, the elements where TIES's trim is a free choice: a task
    vector's magnitude equals its threshold and more elements than
    mergekit's `max(1, int(density * n))` share or pass it (mergekit keeps
    an arbitrary subset of those, soup all of them). Common in float16
    tensors, where many magnitudes are equal."""
    b = {k: v for k, v in load_file(str(base)).items() if v.dtype.kind == "f"}
    free = {name: np.zeros(v.shape, bool) for name, v in b.items()}
    if density is None or density >= 1:
        return free
    for cand in cands:
        c = load_file(str(cand))
        for name, v in b.items():
            mags = np.abs(c[name].astype(np.float32) - v.astype(np.float32))
            keep = max(1, int(density * mags.size))
            threshold = np.sort(mags.ravel())[::-1][keep - 1]
            if (mags >= threshold).sum() > keep:
                free[name] |= mags == threshold
    return free


def compare(soup_out: Path, want: dict[str, np.ndarray], label: str, free=None):
    got = load_file(str(soup_out))
    assert set(want) <= set(got), label
    for name, w in want.items():
        f16 = got[name].dtype == np.float16
        tol = 2e-3 if f16 else 1e-5
        fixed = ~free[name] if free is not None else np.ones(w.shape, bool)
        assert fixed.mean() > 0.9, (label, name)
        np.testing.assert_allclose(got[name][fixed].astype(np.float64),
                                   w[fixed].astype(np.float64),
                                   rtol=tol, atol=2e-3 if f16 else 1e-6,
                                   err_msg=f"{label} {name}")


CASES = [
    # soup method, soup args, mergekit method, weights, density, lambda
    ("task-arithmetic", ["--weights", "1.0,0.5,-0.25"], "task_arithmetic", [1.0, 0.5, -0.25],
     None, None),
    ("task-arithmetic", ["--scale", "0.7"], "task_arithmetic", [1, 1, 1], None, 0.7),
    ("ties", ["--density", "0.3"], "ties", [1, 1, 1], 0.3, None),
    ("ties", ["--density", "0.5", "--weights", "1,2,0.5", "--scale", "0.8"], "ties", [1, 2, 0.5],
     0.5, 0.8),
    # 0.01 of fc.bias's 64 elements rounds down to none: mergekit keeps one.
    ("ties", ["--density", "0.01"], "ties", [1, 1, 1], 0.01, None),
    ("ties", ["--density", "1"], "ties", [1, 1, 1], 1, None),
    ("dare-linear", ["--density", "1", "--weights", "1,0.5,2"], "dare_linear", [1, 0.5, 2], 1,
     None),
    ("dare-ties", ["--density", "1", "--scale", "0.9"], "dare_ties", [1, 1, 1], 1, 0.9),
]


@pytest.mark.parametrize("method,args,mk_method,weights,density,lam", CASES)
def test_mergekit_agrees_on_dense_inputs(tmp_path, soup, method, args, mk_method, weights,
                                         density, lam):
    base, cands = family(tmp_path, sparse=False, seed=4)
    out = tmp_path / "out.safetensors"
    code, _, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method, *args)
    assert code == 0, err
    want = mergekit(tmp_path, mk_method, base, cands, weights=weights, density=density, lam=lam)
    free = tied_at_threshold(base, cands, density) if method == "ties" else None
    compare(out, want, f"{method} {args}", free)


@pytest.mark.parametrize("method,mk_method,density,seed,weights,lam", [
    ("dare-linear", "dare_linear", 0.4, 3, [1, 0.5, 2], None),
    ("dare-ties", "dare_ties", 0.6, 11, [1, 1, 1], 0.9),
    ("dare-linear", "dare_linear", 0.05, 7, [1, 1, 1], None),
])
def test_mergekit_dare_with_soups_drop(tmp_path, soup, monkeypatch, method, mk_method, density,
                                       seed, weights, lam):
    """DARE below density 1: mergekit's Bernoulli mask is replaced by the
    elements soup keeps (found by the task vector mergekit passes in), so
    the rest of mergekit's DARE decides the numbers."""
    base, cands = family(tmp_path, sparse=False, seed=6)
    b = {k: v for k, v in load_file(str(base)).items() if v.dtype.kind == "f"}
    keeps = {}
    for k, cand in enumerate(cands):
        c = load_file(str(cand))
        for name, v in b.items():
            delta = torch.from_numpy(c[name]).float() - torch.from_numpy(v).float()
            keeps[delta.numpy().tobytes()] = dare_keep(name, k, v.size, density, seed)
    original = sparsify.rescaled_masked_tensor
    used = []

    def soups_drop(tensor, density, rescale_norm=None):
        keep = keeps[tensor.float().numpy().tobytes()]
        used.append(keep)
        mask = torch.from_numpy(keep.reshape(tensor.shape)).to(tensor.dtype)
        return original(tensor, mask, rescale_norm)

    monkeypatch.setattr(sparsify, "bernoulli", soups_drop)
    want = mergekit(tmp_path, mk_method, base, cands, weights=weights, density=density, lam=lam)
    assert len(used) == 3 * len(b)
    out = tmp_path / "out.safetensors"
    args = ["--density", density, "--seed", seed, "--weights", ",".join(map(str, weights))]
    if lam is not None:
        args += ["--scale", lam]
    code, _, err = soup("merge", "--base", base, *cands, "-o", out, "--method", method, *args)
    assert code == 0, err
    compare(out, want, f"{method} density {density}")

